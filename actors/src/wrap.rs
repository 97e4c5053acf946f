//! Capabilities that hand their calls on by rules of their own
//! (`Kind::Wrapped` in `cap.rs`): the [`Wrap`] trait, and its simplest
//! kind, a capability whose calls all get a deadline
//! ([`crate::Cap::with_deadline`]). The reconnecting capability is the
//! other kind (`switch.rs`).
//!
//! A wrapper is a local capability: sent to a peer, it is exported like
//! any capability of ours, and the peer's calls on it get its rules too.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::answer::Answer;
use crate::call::Call;
use crate::cap::{BrokenWatcher, CapRef, Kind};
use crate::deadline;

/// What a wrapping capability does with calls, and how it resolves and
/// breaks.
pub(crate) trait Wrap: Send + Sync {
    /// Its kind, for the debug report.
    fn name(&self) -> &'static str;
    /// Takes a call made on it (never blocks).
    fn deliver(&self, call: Call);
    /// The error, if it is broken for good.
    fn broken_error(&self) -> Option<capnp::Error>;
    /// Runs `watcher` when it breaks for good.
    fn on_broken(&self, watcher: BrokenWatcher);
    /// `Ok` once it works, `Err` if it is broken for good.
    fn when_resolved(&self) -> BoxFuture<'static, Result<(), capnp::Error>>;
}

/// `target`, every call on which fails with the deadline error once
/// `after` has passed without an answer (see [`crate::Cap::with_deadline`]).
pub(crate) fn with_deadline(target: CapRef, after: Duration) -> CapRef {
    CapRef::from_kind(Kind::Wrapped(Arc::new(DeadlineCap { target, after })))
}

/// See [`with_deadline`].
struct DeadlineCap {
    target: CapRef,
    after: Duration,
}

impl Wrap for DeadlineCap {
    fn name(&self) -> &'static str {
        "deadline"
    }

    fn deliver(&self, call: Call) {
        if call.marker.is_some() {
            // A disembargo's marker follows the calls, untouched.
            return self.target.deliver(call);
        }
        let Call {
            interface_id,
            method_id,
            params,
            completer,
            marker,
        } = call;
        let (caller, depends_on) = completer.detach();
        let Some(caller) = caller else {
            return;
        };
        // The call goes on with an answer of its own, which the caller's
        // answer forwards to (pipelined calls included) until the deadline.
        let (inner, mut inner_completer) = Answer::open();
        if let Some(d) = &depends_on {
            inner_completer.depend_on(d);
        }
        caller.forward_until(inner, self.after, deadline::expired(self.after));
        self.target.deliver(Call {
            interface_id,
            method_id,
            params,
            completer: inner_completer,
            marker,
        });
    }

    fn broken_error(&self) -> Option<capnp::Error> {
        self.target.broken_error()
    }

    fn on_broken(&self, watcher: BrokenWatcher) {
        self.target.on_broken_boxed(watcher)
    }

    fn when_resolved(&self) -> BoxFuture<'static, Result<(), capnp::Error>> {
        self.target.when_resolved()
    }
}
