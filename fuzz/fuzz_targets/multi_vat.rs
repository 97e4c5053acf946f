//! The multi-vat RPC simulation driven by the fuzzer's bytes: two or three
//! vats joined by in-memory wires, each byte string read as a list of
//! steps (see `tests/sim/ops.rs`), checked against the shadow reference
//! graph (see `tests/sim/driver.rs`). The driver is the one
//! `tests/simulation.rs` runs, included by path.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/sim/mod.rs"]
#[allow(dead_code, unused_imports)]
mod sim;

/// Longer inputs are cut: a run's cost grows with its steps, and the
/// interesting interleavings are short.
const MAX_STEPS: usize = 600;

fuzz_target!(|data: &[u8]| {
    let mut scenario = sim::ops::from_bytes(data);
    scenario.ops.truncate(MAX_STEPS);
    let cfg = sim::driver::Config::default();
    if let Err(f) = sim::driver::run(&scenario, &cfg) {
        if let Some(test) = sim::known_bug(&f.message) {
            if std::env::var_os("SIM_STOP_ON_KNOWN_BUGS").is_none() {
                // Pinned by a regression test already; keep looking.
                let _ = test;
                return;
            }
        }
        panic!(
            "{f}\n{}",
            sim::script::AsFile {
                scenario: &scenario,
                seed: None
            }
        );
    }
});
