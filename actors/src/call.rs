//! A call on its way to the capability that serves it ([`Call`]), the
//! callee's side of its answer ([`Completer`]), and the messages that bring
//! calls to the actors that take them: [`IncomingCall`] to a capability
//! actor, [`ConnMsg`] to a connection (calls on the peer's capabilities and
//! on our questions' fields, tail calls, and the releases and cancellations
//! that nodes and answers send it).
//!
//! `ConnMsg` lives here, not in its own file nor in `connection/`: it
//! carries `Call`s and answers, and capability nodes (`cap.rs`), answers
//! (`answer.rs`) and methods (`hook.rs`) send it, so it belongs with the
//! call itself; this keeps the files that refer to each other down to the
//! capability-node core (`cap`, `answer`, `call`, `payload`) and keeps the
//! connection actor out of it.
//!
//! Calls travel by value from the caller through promises, pipelines and
//! connections to the actor that serves them; the completer travels with
//! the call, so whoever ends up serving it completes the caller's answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use actix::Message;

use crate::answer::{Answer, AnswerRef, Outcome};
use crate::error;
use crate::payload::Payload;

/// A call on its way to the capability that serves it.
pub(crate) struct Call {
    pub(crate) interface_id: u64,
    pub(crate) method_id: u16,
    pub(crate) params: Payload,
    pub(crate) completer: Completer,
    /// Not a call but a disembargo's loopback marker: it travels the path calls on the target take, so that
    /// the connection reflects the disembargo only once every earlier call
    /// has gone out. Capabilities that serve calls drop it.
    pub(crate) marker: Option<Marker>,
}

/// A disembargo's loopback marker (see [`Call::marker`]): the peer's
/// disembargo `embargo`, to be reflected by connection `conn_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) conn_id: u64,
    pub(crate) embargo: u32,
}

impl Call {
    /// Fails the call without running it. Dropping the call also releases
    /// the capabilities passed in its parameters.
    pub(crate) fn fail(self, e: capnp::Error) {
        self.completer.complete(Err(e));
    }
}

/// The callee's side of an answer. Dropping it without completing fails the
/// answer with Disconnected (the call was lost: its target stopped).
pub(crate) struct Completer {
    answer: Option<Arc<Answer>>,
    /// For a call pipelined on another answer: keeps that answer wanted
    /// until this call is answered, so that a caller who lets go of the
    /// first call while its pipelined call runs does not cancel the call
    /// the pipelined one depends on.
    depends_on: Option<AnswerRef>,
}

impl Completer {
    /// The completer of a new answer.
    pub(crate) fn new(answer: Arc<Answer>) -> Self {
        Completer {
            answer: Some(answer),
            depends_on: None,
        }
    }

    pub(crate) fn answer(&self) -> Option<&Arc<Answer>> {
        self.answer.as_ref()
    }

    pub(crate) fn complete(mut self, outcome: Outcome) {
        if let Some(a) = self.answer.take() {
            a.complete(outcome);
        }
    }

    /// Takes the answer and what it depends on out of this completer,
    /// which then completes nothing when dropped: for a capability that
    /// hands the call on with an answer of its own (`wrap.rs`).
    pub(crate) fn detach(mut self) -> (Option<Arc<Answer>>, Option<AnswerRef>) {
        (self.answer.take(), self.depends_on.take())
    }

    /// See `depends_on`.
    pub(crate) fn depend_on(&mut self, answer: &AnswerRef) {
        if self.depends_on.is_none() {
            self.depends_on = Some(answer.clone());
        }
    }

    /// Completes the answer with these results.
    pub(crate) fn complete_payload(self, mut payload: Payload) {
        if let Some(a) = &self.answer {
            a.break_self_references(&mut payload);
        }
        self.complete(Ok(payload.freeze()));
    }

    /// Completes the answer with a method's outcome: its results or its
    /// error.
    pub(crate) fn finish(self, outcome: Result<Payload, capnp::Error>) {
        match outcome {
            Ok(payload) => self.complete_payload(payload),
            Err(e) => self.complete(Err(e)),
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.answer.as_ref().is_none_or(|a| a.is_cancelled())
    }

    /// Records that the call has started (its method runs, or it went out
    /// on the wire): a peer's cancellation may now take effect.
    pub(crate) fn mark_started(&self) {
        if let Some(a) = &self.answer {
            a.mark_started();
        }
    }

    /// Resolves when nobody wants the answer any more.
    pub(crate) fn cancelled(&self) -> Cancelled {
        Cancelled {
            answer: self.answer.clone(),
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if let Some(a) = self.answer.take() {
            a.complete(Err(error::lost_call()));
        }
    }
}

/// Resolves when an answer is no longer wanted (see [`Completer::cancelled`]).
pub(crate) struct Cancelled {
    answer: Option<Arc<Answer>>,
}

impl Future for Cancelled {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &self.answer {
            Some(a) => a.poll_unwanted(cx),
            None => Poll::Ready(()),
        }
    }
}

/// A call delivered to the actor that serves a capability.
///
/// This is the message a user's own actor receives when it hosts a service
/// ([`crate::Cap::from_actor`]); it answers with [`IncomingCall::serve`].
pub struct IncomingCall {
    pub(crate) call: Call,
}

impl Message for IncomingCall {
    type Result = ();
}

impl std::fmt::Debug for IncomingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IncomingCall({:#018x}.{})",
            self.call.interface_id, self.call.method_id
        )
    }
}

/// Where a call of ours goes on the wire.
pub(crate) enum RemoteTarget {
    /// A capability the peer exported to us.
    Import(u32),
    /// A field of the answer to one of our questions.
    Answer { answer: Arc<Answer>, path: Vec<u16> },
}

/// What capability nodes, answers and methods tell a connection (the
/// connection actor, `connection/`, handles it).
pub(crate) enum ConnMsg {
    /// A call on the peer's capability `target`.
    Call { target: RemoteTarget, call: Call },
    /// The node holding an import was dropped.
    Release { import: u32, node: u64 },
    /// The callers gave up on the answer to one of our questions.
    Cancel { answer: Weak<Answer> },
    /// A method serving the peer's call `answer` tail-calls the peer's
    /// capability `import`: send it with `sendResultsTo.yourself` and
    /// answer with `takeFromOtherQuestion`.
    TailCall {
        answer: u32,
        import: u32,
        call: Call,
    },
}

impl Message for ConnMsg {
    type Result = ();
}
