//! Raw bytes into one connection's protocol core (framing, decoding,
//! CapTP), with a stand-in runtime answering what the bytes ask for. The
//! first byte sets limits, local questions and how the rest is cut into
//! reads; see `tests/sim/raw.rs`, which `tests/simulation.rs` also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/sim/raw.rs"]
mod raw;

fuzz_target!(|data: &[u8]| {
    raw::feed(data);
});
