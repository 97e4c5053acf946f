//! The embargo table: disembargoes we sent (`senderLoopback`) whose
//! reflection (`receiverLoopback`) has not come back yet.
//!
//! An embargo keeps E-order when a promise the peer hosts (an import or
//! a field of a question) turns out to be a capability that is not the
//! peer's: calls already made on the promise travel through the peer
//! and must arrive before calls now made directly. We send a disembargo
//! along the old path; the peer reflects it after those calls, and
//! [`Event::EmbargoLifted`](super::Event::EmbargoLifted) tells the runtime that held calls may go.
//! The core keeps only which embargo ids are live; the runtime holds the
//! calls. This file also answers the peer's disembargoes
//! ([`Event::Loopback`](super::Event::Loopback), then [`Conn::disembargo_reply`]).

use std::hash::Hash;

use super::build::{small_message, write_target};
use super::{Conn, HashSet, OutTarget};
use crate::rpc_capnp::message as rpc_message;

/// Our embargoes awaiting their loopback. Ids are not reused soon (a
/// counter, skipping live ones): the runtime may still be holding calls
/// under an id the core has just seen lifted.
#[derive(Default)]
pub(super) struct Embargoes {
    live: HashSet<u32>,
    next: u32,
}

impl Embargoes {
    /// A fresh embargo id, now live.
    fn start(&mut self) -> u32 {
        let mut id = self.next;
        while self.live.contains(&id) {
            id = id.wrapping_add(1);
        }
        self.next = id.wrapping_add(1);
        self.live.insert(id);
        id
    }

    /// The peer reflected embargo `id`: false if it was not live.
    pub(super) fn lift(&mut self, id: u32) -> bool {
        self.live.remove(&id)
    }

    pub(super) fn len(&self) -> usize {
        self.live.len()
    }

    /// The connection is over: no embargo will be reflected.
    pub(super) fn clear(&mut self) {
        self.live.clear();
    }
}

impl<L: Clone + Eq + Hash> Conn<L> {
    /// Starts an embargo on field `path` of a question that has just
    /// returned with a capability that is not the peer's: calls pipelined
    /// on that field before the return are still on their way back through
    /// the peer, and later calls must wait for them. Sends a disembargo to
    /// the peer, who reflects it once those calls are through; then
    /// [`Event::EmbargoLifted`](super::Event::EmbargoLifted) reports it. Call while handling the
    /// [`Event::Return`](super::Event::Return) (before the question's finish is written).
    pub fn disembargo_request(&mut self, question: u32, path: &[u16]) -> Option<u32> {
        // A question we finished before its return is gone on the peer's
        // side: nothing to embargo there.
        if self.questions.get(question).is_none_or(|q| q.finished) {
            return None;
        }
        self.disembargo_to(&OutTarget::Answer {
            question,
            path: path.to_vec(),
        })
    }

    /// Starts an embargo on an import the peer has just resolved to a
    /// capability that is not the peer's (one of ours): calls made on the
    /// promise before the `resolve` are still on their way back through the
    /// peer. Like [`Conn::disembargo_request`],
    /// [`Event::EmbargoLifted`](super::Event::EmbargoLifted) reports the
    /// reflection.
    pub fn disembargo_request_import(&mut self, import: u32) -> Option<u32> {
        self.disembargo_to(&OutTarget::Import(import))
    }

    fn disembargo_to(&mut self, target: &OutTarget) -> Option<u32> {
        if self.aborted.is_some() {
            return None;
        }
        let id = self.embargoes.start();
        let mut m = small_message();
        {
            let mut d = m.init_root::<rpc_message::Builder<'_>>().init_disembargo();
            write_target(target, d.reborrow().init_target());
            d.init_context().set_sender_loopback(id);
        }
        self.send(&m);
        Some(id)
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
