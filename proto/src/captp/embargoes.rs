//! The embargo table: our embargoes, each from the disembargo we send
//! (`senderLoopback`) until the peer reflects it (`receiverLoopback`),
//! with what the runtime keeps waiting on it. It is the one place that
//! knows which embargoes are live. (Spec: `Disembargo` in `rpc.capnp`,
//! and its discussion of embargoes and the "Tribble 4-way race".)
//!
//! # What an embargo is for
//!
//! It keeps E-order when something the peer hosts turns out to be a
//! capability that is not the peer's (one of ours, or one on another
//! connection): calls already made on it travel through the peer and come
//! back to it, and calls now made directly must not overtake them. So we
//! send a disembargo along the old path; the peer reflects it behind
//! those calls; once it is back, they are through, and calls held in the
//! meantime may go.
//!
//! # When we start one
//!
//! The runtime decides, the core keeps the record:
//! - a question returns ([`Event::Return`](super::Event::Return), or
//!   [`Event::ReturnTakeFrom`](super::Event::ReturnTakeFrom)) and a field
//!   that calls were pipelined on over the wire (the core hands the list
//!   over with the return, see `questions.rs`) is not the peer's:
//!   [`Conn::disembargo_request`], while handling the return, so that the
//!   disembargo precedes the question's finish;
//! - an import the peer resolves ([`Event::Resolve`](super::Event::Resolve))
//!   to a capability that is not the peer's, after calls of ours went to
//!   it: [`Conn::disembargo_request_import`].
//!
//! # What it holds, and when it lifts
//!
//! Each live embargo keeps the runtime's `E`, opaque to the core: in the
//! actor runtime, the calls made on an embargoed field meanwhile, or the
//! resolver of the local promise that stands in for an embargoed import.
//! The peer's reflection lifts it:
//! [`Event::EmbargoLifted`](super::Event::EmbargoLifted) hands `E` back, and
//! the runtime lets what it holds go. If the connection ends first, each
//! comes back in [`Event::EmbargoBroken`](super::Event::EmbargoBroken) right
//! after [`Event::Aborted`](super::Event::Aborted), to be failed. A
//! reflection for an id that is not live is a protocol error.
//!
//! # The answer's view (actor runtime)
//!
//! The actor runtime's answers (`actors/src/answer.rs`) keep two fields
//! beside this table, because calls on an answer's fields are routed by
//! whichever thread makes them, under the answer's own lock, without a
//! round trip to the connection that owns this table:
//! - `embargoed`: the fields of this answer under a live embargo here. It
//!   is the per-answer fast-path view of this table (set when the runtime
//!   starts a field embargo, cleared when it lifts or breaks): a call on
//!   such a field goes to the connection, which holds it in the embargo's
//!   `E`, rather than straight to the field. It cannot be derived from this
//!   table cheaply: the table lives inside the connection actor, and
//!   asking it would cost a message per call.
//! - `routed`: per field, how many calls are in the connection's mailbox
//!   on their way to it. Not embargo state: it keeps a later call from
//!   overtaking them once the answer is known locally, before any embargo
//!   exists (the connection decides about one only when the return comes).
//!
//! This file also answers the peer's disembargoes
//! ([`Event::Loopback`](super::Event::Loopback), then [`Conn::disembargo_reply`]).

use std::hash::Hash;

use super::build::{small_message, write_target};
use super::{Conn, HashMap, OutTarget};
use crate::rpc_capnp::message as rpc_message;

/// Our embargoes awaiting their loopback, each with what the runtime keeps
/// waiting on it. Ids are not reused soon (a counter, skipping live ones),
/// so that a late or repeated reflection is not taken for a newer embargo.
pub(super) struct Embargoes<E> {
    live: HashMap<u32, E>,
    next: u32,
}

impl<E> Default for Embargoes<E> {
    fn default() -> Self {
        Embargoes {
            live: HashMap::default(),
            next: 0,
        }
    }
}

impl<E> Embargoes<E> {
    /// A fresh embargo id, now live, keeping `waiting`.
    fn start(&mut self, waiting: E) -> u32 {
        let mut id = self.next;
        while self.live.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next = id.wrapping_add(1);
        self.live.insert(id, waiting);
        id
    }

    /// The peer reflected embargo `id`: what waited on it, or `None` if it
    /// was not live.
    pub(super) fn lift(&mut self, id: u32) -> Option<E> {
        self.live.remove(&id)
    }

    pub(super) fn len(&self) -> usize {
        self.live.len()
    }

    /// The connection is over: no embargo will be reflected. Every live
    /// one, in id order.
    pub(super) fn drain(&mut self) -> Vec<(u32, E)> {
        let mut all: Vec<(u32, E)> = self.live.drain().collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all
    }
}

impl<L: Clone + Eq + Hash, E> Conn<L, E> {
    /// Starts an embargo on field `path` of a question that has just
    /// returned with a capability that is not the peer's: calls pipelined
    /// on that field before the return are still on their way back through
    /// the peer, and later calls must wait for them. Sends a disembargo to
    /// the peer, who reflects it once those calls are through; then
    /// [`Event::EmbargoLifted`](super::Event::EmbargoLifted) hands
    /// `waiting` back. Call while handling the
    /// [`Event::Return`](super::Event::Return) (before the question's
    /// finish is written). Returns the embargo id, or `waiting` back if no
    /// embargo is needed (the question was finished before its return) or
    /// possible (the connection is over).
    pub fn disembargo_request(
        &mut self,
        question: u32,
        path: &[u16],
        waiting: E,
    ) -> Result<u32, E> {
        // A question we finished before its return is gone on the peer's
        // side: nothing to embargo there.
        if self.questions.get(question).is_none_or(|q| q.finished) {
            return Err(waiting);
        }
        self.disembargo_to(
            &OutTarget::Answer {
                question,
                path: path.to_vec(),
            },
            waiting,
        )
    }

    /// Starts an embargo on an import the peer has just resolved to a
    /// capability that is not the peer's (one of ours): calls made on the
    /// promise before the `resolve` are still on their way back through the
    /// peer. Like [`Conn::disembargo_request`],
    /// [`Event::EmbargoLifted`](super::Event::EmbargoLifted) reports the
    /// reflection with `waiting`, which comes back at once if the
    /// connection is over.
    pub fn disembargo_request_import(&mut self, import: u32, waiting: E) -> Result<u32, E> {
        self.disembargo_to(&OutTarget::Import(import), waiting)
    }

    /// What waits on each live embargo, by id (for a runtime that adds to
    /// it, as calls on an embargoed field arrive).
    pub fn embargoes_waiting_mut(&mut self) -> impl Iterator<Item = (u32, &mut E)> {
        self.embargoes.live.iter_mut().map(|(id, e)| (*id, e))
    }

    fn disembargo_to(&mut self, target: &OutTarget, waiting: E) -> Result<u32, E> {
        if self.aborted.is_some() {
            return Err(waiting);
        }
        let id = self.embargoes.start(waiting);
        let mut m = small_message();
        {
            let mut d = m.init_root::<rpc_message::Builder<'_>>().init_disembargo();
            write_target(target, d.reborrow().init_target());
            d.init_context().set_sender_loopback(id);
        }
        self.send(&m);
        Ok(id)
    }

    /// Reflects a disembargo ([`Event::Loopback`](super::Event::Loopback)) back to the peer, on the
    /// import the target turned out to be.
    pub fn disembargo_reply(&mut self, embargo: u32, import: u32) {
        self.disembargo_reply_to(embargo, &OutTarget::Import(import));
    }

    /// [`Conn::disembargo_reply`] when the target turned out to be a field
    /// of one of our questions to the peer (a promised answer), or an
    /// import.
    pub fn disembargo_reply_to(&mut self, embargo: u32, target: &OutTarget) {
        if self.aborted.is_some() {
            return;
        }
        let mut m = small_message();
        {
            let mut d = m.init_root::<rpc_message::Builder<'_>>().init_disembargo();
            write_target(target, d.reborrow().init_target());
            d.init_context().set_receiver_loopback(embargo);
        }
        self.send(&m);
    }
}
