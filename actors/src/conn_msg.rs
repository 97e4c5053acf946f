//! The messages a connection actor accepts from the rest of the runtime:
//! calls on the peer's capabilities, releases of imports, cancellations of
//! our questions, and the steps of an embargo.
//!
//! They live apart from the actor (`connection/`) so that capability nodes
//! and answers, which send them, do not depend on the actor itself.

use std::sync::{Arc, Weak};

use actix::Message;
use capnp_actix_proto::captp::OutTarget;

use crate::answer::Answer;
use crate::call::Call;
use crate::cap::CapRef;
use crate::promise::Resolver;

/// Where a call of ours goes on the wire.
pub(crate) enum RemoteTarget {
    /// A capability the peer exported to us.
    Import(u32),
    /// A field of the answer to one of our questions.
    Answer { answer: Arc<Answer>, path: Vec<u16> },
}

/// What the rest of the runtime tells a connection.
pub(crate) enum ConnMsg {
    /// A call on the peer's capability `target`.
    Call { target: RemoteTarget, call: Call },
    /// The node holding an import was dropped.
    Release { import: u32, node: u64 },
    /// The callers gave up on the answer to one of our questions.
    Cancel { answer: Weak<Answer> },
    /// Starts the embargo on an import the peer resolved to one of ours
    /// (see `resolve_import`).
    EmbargoImport {
        import: u32,
        resolver: Resolver,
        target: CapRef,
    },
    /// Reflects the peer's disembargo `embargo` now, naming `target` (see
    /// `Event::Loopback`): it goes out after every call this mailbox held
    /// when it was queued.
    Reflect { embargo: u32, target: OutTarget },
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
