//! Giving memory back to the operating system after load.
//!
//! A vat under load allocates a lot at once (results kept for peers that
//! have not finished them, large messages); once the load is gone, the
//! allocator keeps the freed memory for later, and the process's resident
//! size stays at its peak. glibc's allocator in particular keeps freed
//! memory at the top of its heaps and in its arenas unless asked to give
//! it back (`malloc_trim`).
//!
//! The strategy (a library does not choose the process's allocator):
//! when what a vat holds for its peers falls by [`TRIM_STEP`] or more
//! from its peak ([`VatBudget`](crate::connection::VatBudget)), the
//! runtime asks the allocator, a moment later and on a thread of its own
//! (trimming walks the heaps), to return its free memory. Elsewhere than
//! on glibc, this does nothing: allocators such as jemalloc and mimalloc
//! return memory by themselves, and an application may install one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How much what a vat holds must fall from its peak before the runtime
/// asks the allocator to give memory back.
pub const TRIM_STEP: usize = 16 << 20;

/// How long after the fall the allocator is asked: the memory is freed
/// as the connection's tables are dropped, just after its holdings are
/// reported.
const TRIM_DELAY: Duration = Duration::from_millis(50);

/// A trim is on its way.
static TRIMMING: AtomicBool = AtomicBool::new(false);

/// Asks the allocator, a moment from now and on a thread of its own, to
/// give its free memory back to the operating system (one request at a
/// time; a request made while one is on its way is merged into it).
pub fn release_free_memory_soon() {
    if TRIMMING.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("capnp-actix-trim".into())
        .spawn(|| {
            std::thread::sleep(TRIM_DELAY);
            TRIMMING.store(false, Ordering::Release);
            release_free_memory();
        });
    if spawned.is_err() {
        TRIMMING.store(false, Ordering::Release);
    }
}

/// Asks the allocator to give its free memory back to the operating
/// system, now, on this thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: `malloc_trim` has no preconditions: it only walks glibc's
    // own free lists (under their locks) and returns unused pages; it
    // touches no memory the program owns. Tested by
    // `tests/budgets.rs::memory_held_for_a_peer_is_returned_when_it_leaves`.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Asks the allocator to give its free memory back to the operating
/// system (nothing to do with this allocator).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}
