//! The connection actor's own tables, beside the protocol core's: who
//! waits for each of our questions, what serves each of the peer's, which
//! node holds each import; and [`Embargo`], what the actor keeps in the
//! core's embargo table (see `proto/src/captp/embargoes.rs`).
//!
//! The core's tables say what the protocol knows (ids, reference counts,
//! what was sent); these say where each id meets the runtime (a completer,
//! an answer, a capability node, calls held back).

use std::sync::{Arc, Weak};

use actix::SpawnHandle;

use crate::answer::{Answer, AnswerRef};
use crate::call::{Call, Completer};
use crate::cap::{CapRef, Node};
use crate::promise::Resolver;

/// The tables' hash maps: their keys are ids (some chosen by the
/// peer), hashed with foldhash's seeded hasher, which costs a fraction of
/// the standard SipHash (that took about 7% of a server's instructions
/// per call).
pub(super) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// One of our questions to the peer: who waits for its answer.
pub(super) struct Question {
    /// Completes the caller's answer when the return comes.
    pub(super) completer: Completer,
    /// The caller's answer, when it has one (calls pipelined on it are
    /// routed to this question while it is outstanding).
    pub(super) answer: Option<Arc<Answer>>,
}

/// One of the peer's questions to us: the answer that serves it.
pub(super) struct PeerAnswer {
    /// The answer of the call we made for the peer (kept until the peer
    /// finishes, so that it can pipeline on it and name its fields).
    pub(super) answer: AnswerRef,
    /// The future that sends the return once the answer completes, while
    /// it waits (cancelled if the peer cancels or the connection ends).
    pub(super) sending: Option<SpawnHandle>,
    /// When the call arrived (for `capnp_call_duration_seconds`).
    pub(super) arrived: std::time::Instant,
    /// Bytes of the results returned and kept until the peer finishes
    /// the call (0 before the return; see `budget.rs`).
    pub(super) retained: usize,
}

/// One capability the peer exported to us.
pub(super) struct ImportEntry {
    /// The node that holds the import (not kept alive by this table).
    pub(super) node: Weak<Node>,
    /// That node's id: a release from an older node of the same import
    /// is ignored.
    pub(super) node_id: u64,
}

/// What one of our embargoes holds back, kept in the core's embargo table
/// and handed back when the peer reflects its disembargo
/// (`Event::EmbargoLifted`) or the connection ends
/// (`Event::EmbargoBroken`).
pub(super) enum Embargo {
    /// Calls on one field of an answered question, held.
    Field {
        answer: Arc<Answer>,
        path: Vec<u16>,
        held: Vec<Call>,
    },
    /// An import the peer resolved to one of our capabilities: calls on it
    /// wait in a local promise, resolved to `target` once the calls made
    /// before the resolution have come back through the peer.
    Import { resolver: Resolver, target: CapRef },
}
