//! [`Event`]: what the core asks the runtime to act on, one per thing
//! the peer did that the runtime must know about.

use capnp::Error;

use super::{CallTarget, InCap, InPayload};

/// What the runtime must act on. `E` is what the runtime keeps waiting on
/// each of our embargoes (see [`Conn::disembargo_request`](super::Conn::disembargo_request)).
pub enum Event<L, E = ()> {
    /// The peer asks for a bootstrap capability: answer with
    /// [`Conn::return_results`](super::Conn::return_results) (one capability at the root) or
    /// [`Conn::return_error`](super::Conn::return_error).
    Bootstrap {
        /// Our answer id.
        answer: u32,
        /// The service ID the peer sent (empty when it sent none).
        object_id: Vec<u8>,
    },
    /// The peer calls one of our capabilities: answer with `return_*`.
    Call {
        /// Our answer id.
        answer: u32,
        /// What is called.
        target: CallTarget<L>,
        /// Interface id.
        interface_id: u64,
        /// Method ordinal.
        method_id: u16,
        /// The parameters.
        params: InPayload<L>,
    },
    /// The core has answered a call of the peer's with `error` before the
    /// call reached the runtime (a call on a broken capability of ours, or
    /// one asking for three-party handoff). Nothing is left to send, but
    /// keep `error` as the outcome of `answer` until [`Event::Finished`],
    /// as for any answer: the peer may still name it. A call pipelined on
    /// it fails with this error; a field of it passed back
    /// (`receiverAnswer`) is a broken capability with this error; a peer
    /// that asked us to keep the results (`sendResultsTo.yourself`) takes
    /// them from another question (`takeFromOtherQuestion`).
    CallFailed {
        /// Our answer id.
        answer: u32,
        /// The call's outcome.
        error: Error,
    },
    /// The peer no longer wants an answer it has not had yet: cancel it
    /// (and still answer; the reply will say `canceled`).
    Cancel {
        /// Our answer id.
        answer: u32,
        /// The peer set `requireEarlyCancellationWorkaround` (older
        /// implementations do, by default): the call must not be cancelled
        /// before it has started, because the peer may count on its having
        /// been delivered.
        not_before_start: bool,
    },
    /// The peer is done with an answer we already gave: forget it (no
    /// more calls will be pipelined on it).
    Finished {
        /// Our answer id.
        answer: u32,
    },
    /// One of our questions was answered. The question is finished.
    Return {
        /// Our question.
        question: u32,
        /// The results, or why there are none.
        result: Result<InPayload<L>, Error>,
        /// The fields of the question that calls were pipelined on over
        /// the wire, most recently used last (empty, unallocated, when
        /// none was): a field among them that turns out not to be the
        /// peer's needs an embargo ([`Conn::disembargo_request`](super::Conn::disembargo_request)).
        pipelined: Vec<Vec<u16>>,
    },
    /// One of our questions was answered by a tail call: its results are
    /// those of `answer`, a call the peer made on us asking us to keep its
    /// results. The question is finished.
    ReturnTakeFrom {
        /// Our question.
        question: u32,
        /// Our answer whose results it takes.
        answer: u32,
        /// As for [`Event::Return`]: every one of these fields is now one
        /// of ours, reached through the peer by the calls pipelined on it.
        pipelined: Vec<Vec<u16>>,
    },
    /// One of our tail calls ([`Conn::tail_call`](super::Conn::tail_call))
    /// has returned (`resultsSentElsewhere`): the peer keeps the results
    /// for its own question. Ours stays pipelinable until we finish it
    /// (unless the peer said no finish is needed, see
    /// [`Conn::sends_results_elsewhere`](super::Conn::sends_results_elsewhere)).
    ResultsSentElsewhere {
        /// Our question.
        question: u32,
    },
    /// A promise the peer exported to us has resolved.
    Resolve {
        /// The import.
        import: u32,
        /// What it resolved to.
        to: Result<InCap<L>, Error>,
    },
    /// The peer asks us to reflect a disembargo: find what `target`
    /// refers to on our side (it must be a capability of the peer) and
    /// call [`Conn::disembargo_reply`](super::Conn::disembargo_reply).
    Loopback {
        /// The peer's embargo id.
        embargo: u32,
        /// What it targets.
        target: CallTarget<L>,
    },
    /// The peer reflected one of our embargoes: calls held by it may go.
    EmbargoLifted {
        /// Our embargo id.
        embargo: u32,
        /// What the runtime gave when it started the embargo.
        waiting: E,
    },
    /// The connection ended (just after [`Event::Aborted`]) with this
    /// embargo of ours still live: what waits on it will not go.
    EmbargoBroken {
        /// Our embargo id.
        embargo: u32,
        /// What the runtime gave when it started the embargo.
        waiting: E,
    },
    /// A promise of ours was exported for the first time (as `senderPromise`):
    /// when it settles, call
    /// [`Conn::resolve_export`](super::Conn::resolve_export) so that the peer
    /// can shorten its path.
    ExportedPromise {
        /// The export.
        export: u32,
        /// The promise.
        cap: L,
    },
    /// The connection is over: the peer aborted, or we did.
    Aborted(Error),
}
