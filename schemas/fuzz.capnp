# The object of capnp-actix's RPC simulation (tests/simulation.rs and the
# fuzz targets): every call names the reference it was sent on and its
# place in that reference's order, so the receiving object can check that
# it was the one meant and that calls arrive in the order sent.

@0x88d53846da48f169;

interface Fuzz {
  # `ref` identifies the sender's reference (unique in the simulation),
  # `seq` counts the calls sent on it; `caps` are capabilities passed along.
  call @0 (ref :UInt64, seq :UInt64, caps :List(Fuzz)) -> (caps :List(Fuzz));
}
