//! Whether the calling thread can run the runtime: a clear error, instead
//! of tokio's "`spawn_local` called from outside of a `task::LocalSet`",
//! for code run outside an actix `System` (under `#[tokio::main]`, on a
//! plain thread).
//!
//! Every capability, answer and connection is an actix actor, and actix
//! starts actors with `tokio::task::spawn_local`, which needs a
//! `LocalSet` on the thread: an actix `System` (or arbiter) provides one.
//! So does any tokio `LocalSet`: the threads of the capnp-rpc crate run
//! ours there when capabilities cross between the two runtimes (see
//! `hook.rs`), without a `System`. What can be told without trying:
//!
//! - an actix `System` is current: fine;
//! - no tokio runtime at all (a plain thread): certainly wrong;
//! - tokio's multi-thread runtime without a `System` (`#[tokio::main]`):
//!   taken as wrong (a `LocalSet` run inside it would do, but a program
//!   that uses this runtime starts an actix `System`);
//! - tokio's current-thread runtime without a `System`: a `LocalSet` may
//!   run (capnp-rpc's threads, `LocalSet::block_on`) or not
//!   (`#[tokio::test]`); tokio has no way to ask. [`spawn_checked`] then
//!   tries, and turns tokio's panic into this module's message.
//!
//! The entry points users reach first check: [`crate::Cap::new`] (and
//! [`crate::new_client`]) and `start_connection` panic with the message,
//! as they return no `Result`; the vat's `start`, `serve`, `connect` and
//! `import` return it as an error.

use std::panic::{self, AssertUnwindSafe};

use tokio::runtime::{Handle, RuntimeFlavor};

/// How to start what is missing, the end of every message here.
const HOW: &str = "Run it inside one: `actix::System::new().block_on(async { ... })`, or \
                   `#[actix::main]` on `main` (`#[actix::test]` on tests) instead of \
                   `#[tokio::main]` (`#[tokio::test]`)";

/// What tokio's `spawn_local` panics with outside a `LocalSet`.
const TOKIO_OUTSIDE_LOCAL_SET: &str = "`spawn_local` called from outside of a `task::LocalSet`";

/// `Err` with a message saying that `what` needs an actix System, why this
/// thread has none, and how to start one, when the thread certainly
/// cannot run the runtime; `Ok` otherwise (see the module docs for the
/// case that cannot be told in advance).
///
/// ```
/// let e = capnp_actix_actors::system::check("starting a vat").unwrap_err();
/// assert!(e.contains("starting a vat needs an actix System"), "{e}");
/// assert!(e.contains("actix::System::new().block_on"), "{e}");
/// actix::System::new().block_on(async {
///     assert!(capnp_actix_actors::system::check("starting a vat").is_ok());
/// });
/// ```
pub fn check(what: &str) -> Result<(), String> {
    if actix::System::try_current().is_some() {
        return Ok(());
    }
    match Handle::try_current() {
        Err(_) => Err(message(
            what,
            "no async runtime at all is running on this thread",
        )),
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => Err(message(
            what,
            "this thread runs tokio's multi-thread runtime (as `#[tokio::main]` starts) \
             without one",
        )),
        Ok(_) => Ok(()),
    }
}

/// Panics with [`check`]'s message if this thread certainly cannot run
/// the runtime.
///
/// # Panics
///
/// As said.
pub fn require(what: &str) {
    if let Err(e) = check(what) {
        panic!("{e}");
    }
}

/// [`check`] as a `capnp::Error` (Failed), for entry points that return
/// one.
pub fn check_capnp(what: &str) -> Result<(), capnp::Error> {
    check(what).map_err(capnp::Error::failed)
}

/// Runs `spawn` (which starts actors on this thread), panicking with a
/// message that says what is missing and how to start it where the thread
/// cannot run actors, rather than with tokio's. With an actix System
/// current, it only runs `spawn`.
///
/// # Panics
///
/// If [`check`] fails, or if tokio refuses the spawn for want of a
/// `LocalSet`; any other panic of `spawn` goes on unchanged.
pub fn spawn_checked<T>(what: &str, spawn: impl FnOnce() -> T) -> T {
    if actix::System::try_current().is_some() {
        return spawn();
    }
    require(what);
    // A current-thread runtime without a System: fine inside a LocalSet.
    // Tokio prints its own panic message before this one.
    match panic::catch_unwind(AssertUnwindSafe(spawn)) {
        Ok(value) => value,
        Err(payload) if panic_text(&*payload).contains(TOKIO_OUTSIDE_LOCAL_SET) => panic!(
            "{}",
            message(
                what,
                "this thread runs tokio's current-thread runtime (as `#[tokio::test]` \
                 starts) without one, or any `LocalSet`",
            )
        ),
        Err(payload) => panic::resume_unwind(payload),
    }
}

fn message(what: &str, why: &str) -> String {
    format!("{what} needs an actix System, and {why}. {HOW}.")
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panic_message(f: impl FnOnce() + Send + 'static) -> String {
        let payload = std::thread::spawn(move || panic::catch_unwind(AssertUnwindSafe(f)))
            .join()
            .unwrap()
            .expect_err("it panics");
        panic_text(&*payload).to_string()
    }

    /// A runtime as `#[tokio::test]` makes.
    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn a_plain_thread_is_told_to_start_an_actix_system() {
        let e = check("starting X").unwrap_err();
        assert!(e.starts_with("starting X needs an actix System"), "{e}");
        assert!(e.contains("no async runtime"), "{e}");
        assert!(e.contains("#[actix::main]"), "{e}");
        let e = panic_message(|| spawn_checked("starting X", || ()));
        assert!(e.contains("no async runtime"), "{e}");
    }

    #[test]
    fn a_current_thread_runtime_without_a_local_set_gets_the_message_not_tokio_s() {
        let e = panic_message(|| {
            current_thread().block_on(async {
                // Cannot be told in advance.
                assert!(check("starting X").is_ok());
                spawn_checked("starting X", || {
                    tokio::task::spawn_local(async {});
                })
            })
        });
        assert!(e.starts_with("starting X needs an actix System"), "{e}");
        assert!(e.contains("`#[tokio::test]`"), "{e}");
    }

    #[test]
    fn a_local_set_without_a_system_is_let_through() {
        // The capnp-rpc crate's threads: a current-thread runtime and a
        // LocalSet, no actix System.
        let spawned = tokio::task::LocalSet::new().block_on(&current_thread(), async {
            spawn_checked("starting X", || tokio::task::spawn_local(async { 7 }))
                .await
                .unwrap()
        });
        assert_eq!(spawned, 7);
    }

    #[test]
    fn other_panics_go_on_unchanged() {
        let e = panic_message(|| {
            current_thread()
                .block_on(async { spawn_checked("starting X", || panic!("something else")) })
        });
        assert_eq!(e, "something else");
    }
}
