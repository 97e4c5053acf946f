//! The public vocabulary of the core: how capabilities are described
//! going out ([`OutCap`]) and coming in ([`InCap`]), what a call targets
//! on either side ([`CallTarget`], [`OutTarget`]), the bounds on the
//! tables ([`ConnLimits`]) and their sizes ([`TableSizes`]).

use capnp::Error;

/// Bounds on the tables of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Questions we may have outstanding; a call beyond fails with Overloaded.
    pub max_questions: usize,
    /// Calls the peer may have outstanding on us at once (answers not yet
    /// finished); a peer that goes beyond is aborted with Overloaded: it is
    /// flooding us, and refusing calls one by one would still cost a table
    /// entry each until their finish.
    pub max_answers: usize,
    /// Distinct capabilities exported to the peer; beyond, the capability is
    /// sent as a null one (`none`): a broken promise would need an entry
    /// too.
    pub max_exports: usize,
    /// Distinct capabilities imported from the peer; beyond, abort.
    pub max_imports: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_questions: 65_536,
            max_answers: 65_536,
            max_exports: 65_536,
            max_imports: 65_536,
        }
    }
}

/// How a capability in an outgoing payload is described to the peer.
#[derive(Debug, Clone)]
pub enum OutCap<L> {
    /// A capability of ours: exported (`senderHosted`).
    Local(L),
    /// A promise of ours, not settled yet: exported as `senderPromise`. The
    /// first time it is exported,
    /// [`Event::ExportedPromise`](super::Event::ExportedPromise) asks the
    /// runtime to report its resolution with
    /// [`Conn::resolve_export`](super::Conn::resolve_export).
    Promise(L),
    /// A capability the peer exported to us (`receiverHosted`).
    Import(u32),
    /// A field of one of our questions to the peer (`receiverAnswer`).
    Answer {
        /// Our question.
        question: u32,
        /// Pointer fields from the results' root.
        path: Vec<u16>,
    },
    /// A broken capability: sent as a promise, resolved at once to the error.
    Broken(Error),
    /// No capability.
    None,
}

/// What a capability in an incoming payload is, for the runtime.
#[derive(Debug, Clone)]
pub enum InCap<L> {
    /// A capability the peer exports to us (counted: release it once
    /// with [`Conn::release_import`](super::Conn::release_import)).
    Import {
        /// Its import id.
        id: u32,
        /// Whether it is a promise that may be resolved later.
        promise: bool,
    },
    /// One of our own capabilities, coming back.
    Local(L),
    /// A field of one of our answers (a call the peer made on us).
    Answer {
        /// Our answer id (the peer's question id).
        answer: u32,
        /// Pointer fields from the results' root.
        path: Vec<u16>,
    },
    /// A broken capability of ours (sent as a promise resolved to this
    /// error), coming back.
    Broken(Error),
    /// No capability.
    None,
}

/// The target of a call the peer made on us.
#[derive(Debug, Clone)]
pub enum CallTarget<L> {
    /// One of our exported capabilities.
    Local(L),
    /// A field of one of our answers (promise pipelining).
    Answer {
        /// Our answer id.
        answer: u32,
        /// Pointer fields from the results' root.
        path: Vec<u16>,
    },
}

/// Where a call of ours goes.
#[derive(Debug, Clone)]
pub enum OutTarget {
    /// A capability the peer exported to us.
    Import(u32),
    /// A field of one of our questions (promise pipelining).
    Answer {
        /// Our question.
        question: u32,
        /// Pointer fields from the results' root.
        path: Vec<u16>,
    },
}

/// Sizes of a connection's tables, for tests and debug dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableSizes {
    /// Our outstanding questions.
    pub questions: usize,
    /// Answers we owe or keep.
    pub answers: usize,
    /// Capabilities we export.
    pub exports: usize,
    /// Capabilities we import.
    pub imports: usize,
    /// Our embargoes awaiting their loopback.
    pub embargoes: usize,
}

impl TableSizes {
    /// True when every table is empty.
    pub fn is_empty(&self) -> bool {
        *self == TableSizes::default()
    }
}
