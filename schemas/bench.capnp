# Micro-benchmark service.

@0xbca698f7f4df88d9;

# Round-trip targets for benchmarks.
interface Bench {
  ping @0 (n :UInt64) -> (n :UInt64);  # our benches return n + 1; clients accept n too
  echoBytes @1 (data :Data) -> (data :Data);  # returns data
}
