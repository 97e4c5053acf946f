//! Call deadlines: how long a caller waits for an answer.
//!
//! - **One call**: [`deadline`] (or [`DeadlineExt::deadline`]) wraps the
//!   call's promise; when the deadline passes first, the promise is
//!   dropped, which cancels the call (a `finish` goes to the peer, and
//!   the peer's method is dropped at its next await point, unless it is
//!   [shielded](crate::shield)), and the caller gets the [`expired`] error.
//!   A call still wanted through its pipeline (a capability taken from
//!   `pipeline`) is cancelled once that goes too.
//! - **Every call on a capability**: [`Cap::with_deadline`](crate::Cap::with_deadline)
//!   gives a handle whose calls (from `.client()` too, and the peer's,
//!   if the handle is passed on) all fail with [`expired`] after the
//!   deadline; the call itself is cancelled once the caller drops its
//!   promise and pipeline, as for one call.
//!
//! The error is **Overloaded** ("deadline of 2s passed before the call
//! returned"): the capability may well be fine, the answer was just not
//! there in time, and Overloaded is the kind that says "try again later"
//! (it is also what the C++ library's `kj::Timer::timeoutAfter` raises).
//! Disconnected would tell the caller to throw the capability away and
//! import it again, which a slow answer does not call for. The C++
//! library and the capnp-rpc crate have no per-call deadline of their
//! own: callers there race the promise against a timer, as [`deadline`]
//! does.

use std::future::Future;
use std::time::Duration;

/// What a call whose deadline passed fails with (Overloaded; see the
/// module docs). Tell it from other errors with [`is_expired`].
pub fn expired(after: Duration) -> capnp::Error {
    capnp::Error::overloaded(format!(
        "{EXPIRED_PREFIX}{after:?} passed before the call returned"
    ))
}

/// The start of every [`expired`] message.
const EXPIRED_PREFIX: &str = "deadline of ";

/// True for the error a call fails with when its deadline passes.
pub fn is_expired(e: &capnp::Error) -> bool {
    e.kind == capnp::ErrorKind::Overloaded && e.extra.starts_with(EXPIRED_PREFIX)
}

/// Waits for `call` (a call's promise, or any future giving a capnp
/// result) for at most `after`; then drops it, which cancels the call,
/// and fails with [`expired`].
///
/// ```no_run
/// # async fn f(echo: capnp_actix_actors::capnp::capability::Client) -> Result<(), capnp::Error> {
/// # use std::time::Duration;
/// # let request = echo.new_call::<capnp::any_pointer::Owned, capnp::any_pointer::Owned>(0, 0, None);
/// let response = capnp_actix_actors::deadline(Duration::from_secs(2), request.send().promise).await?;
/// # Ok(()) }
/// ```
pub async fn deadline<T>(
    after: Duration,
    call: impl Future<Output = Result<T, capnp::Error>>,
) -> Result<T, capnp::Error> {
    tokio::time::timeout(after, call)
        .await
        .unwrap_or_else(|_| Err(expired(after)))
}

/// [`deadline`] as a method of any future giving a capnp result:
/// `request.send().promise.deadline(Duration::from_secs(2)).await`.
pub trait DeadlineExt<T>: Future<Output = Result<T, capnp::Error>> + Sized {
    /// See [`deadline`].
    fn deadline(self, after: Duration) -> impl Future<Output = Result<T, capnp::Error>> {
        deadline(after, self)
    }
}

impl<T, F: Future<Output = Result<T, capnp::Error>>> DeadlineExt<T> for F {}
