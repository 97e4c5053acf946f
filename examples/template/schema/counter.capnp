# The template's schema: make your own file ID with `capnp id`.
@0x96e5310f388a1da9;

interface Counter {
  # A running total.

  add @0 (amount :Int64) -> (total :Int64);
  # Adds `amount`; returns the new total.

  addFrom @1 (other :Counter) -> (total :Int64);
  # Adds the total of another counter (asked with `add(0)`).
}
