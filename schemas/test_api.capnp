@0xc5e1a3b7d9f20486;
# Interfaces used by capnp-actix's own tests of the runtime and protocol.

interface Probe {
  # Records the calls it receives, in arrival order.
  call @0 (seq :UInt64) -> (seq :UInt64);
}

struct Pair {
  # Two capabilities at different pointer indexes of one struct.
  first @0 :Probe;
  second @1 :Probe;
}

interface Maker {
  # Returns two capabilities; a test decides what they are.
  pair @0 () -> (pair :Pair);
  # Returns the probe it is given, after the test releases it.
  hold @1 (probe :Probe) -> (probe :Probe);
}

interface Tally extends(Probe) {
  # A probe that also counts the calls it received: for the tests of actor
  # traits of interfaces that extend others.
  count @0 () -> (calls :UInt64);
}
