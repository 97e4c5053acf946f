//! Which instance of a per-arbiter service a thread's calls go to (see
//! `arbiters.rs`). A leaf.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

thread_local! {
    /// This thread's slot: its index in the pool for a pool's arbiter,
    /// else a number taken once from [`NEXT_SLOT`].
    static SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Slots handed to threads that are not a pool's arbiters.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// Makes `index` this thread's slot (an arbiter of a pool, at its start).
pub(crate) fn set(index: usize) {
    SLOT.with(|slot| slot.set(Some(index)));
}

/// This thread's slot: which instance of a per-arbiter service its calls
/// go to, modulo the number of instances.
pub(crate) fn current() -> usize {
    SLOT.with(|slot| match slot.get() {
        Some(s) => s,
        None => {
            let s = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
            slot.set(Some(s));
            s
        }
    })
}
