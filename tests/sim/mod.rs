//! The RPC simulation: several vats in one process, joined by in-memory
//! wires, driven step by step against a shadow model of who refers to
//! what. Shared by `tests/simulation.rs` (seeded, bounded) and the fuzz
//! targets in `fuzz/` (which include these files by path).
#![allow(dead_code)]

pub mod describe;
pub mod driver;
pub mod model;
pub mod ops;
pub mod raw;
pub mod routes;
pub mod script;
pub mod spread;
pub mod triggers;
pub mod wire;

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

/// Bugs found and not fixed yet, by a phrase of their failure and the
/// regression (a file of `tests/sim/regressions/`, listed in
/// `tests/simulation.rs` with `#[ignore]`) that pins each. The seeded
/// runs skip seeds that fail this way, so that they go on looking for
/// other bugs; so does the fuzz target unless `SIM_STOP_ON_KNOWN_BUGS` is
/// set. Remove an entry (and its regression's `#[ignore]`) when the bug is
/// fixed.
/// An entry looks like
/// `("E-order", "calls_sent_before_and_after_a_resolve_keep_their_order")`.
/// Empty: every bug the simulation has found so far is fixed.
pub const KNOWN_BUGS: &[(&str, &str)] = &[];

/// The regression test of the known bug a failure message shows, if any.
pub fn known_bug(message: &str) -> Option<&'static str> {
    let first = message.lines().next().unwrap_or("");
    KNOWN_BUGS
        .iter()
        .find(|(phrase, _)| first.contains(phrase))
        .map(|(_, test)| *test)
}

/// Where the panics of other threads of a run go (its arbiters'; see
/// [`forward_panics`]).
pub type PanicSink = Arc<Mutex<Option<String>>>;

thread_local! {
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    static FORWARD: RefCell<Option<PanicSink>> = const { RefCell::new(None) };
}

/// Sends the panics of this thread (once [`install_panic_hook`] runs) to
/// `sink` rather than to this thread's [`take_panic`]: for an arbiter of
/// a run, whose driver runs on another thread.
pub fn forward_panics(sink: PanicSink) {
    FORWARD.with(|f| *f.borrow_mut() = Some(sink));
}

/// Takes the first panic `sink` received, if any.
pub fn take_forwarded(sink: &PanicSink) -> Option<String> {
    sink.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Makes panics on this thread visible to [`take_panic`] (the runtime
/// catches panics in tasks; the driver still wants to know). Keeps the
/// previous hook running.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let forward = FORWARD
                .try_with(|f| f.try_borrow().ok().and_then(|f| f.clone()))
                .ok()
                .flatten();
            if let Some(sink) = forward {
                let mut first = sink.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| info.to_string());
                drop(first);
                previous(info);
                return;
            }
            let _ = PANIC.try_with(|p| {
                if let Ok(mut p) = p.try_borrow_mut() {
                    p.get_or_insert_with(|| info.to_string());
                }
            });
            previous(info);
        }));
    });
}

/// The first panic seen on this thread since the last call, if any.
pub fn take_panic() -> Option<String> {
    PANIC.try_with(|p| p.borrow_mut().take()).ok().flatten()
}
