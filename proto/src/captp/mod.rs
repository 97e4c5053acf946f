//! The CapTP state machine of one two-party connection, sans IO.
//!
//! [`Conn`] keeps the tables of the protocol (questions we asked, answers
//! we owe, capabilities we exported and imported, embargoes awaiting
//! their loopback) and turns both what the peer sends and what the local
//! runtime asks for into framed outgoing bytes and [`Event`]s for the
//! runtime. It never blocks, spawns, reads a clock or touches a socket.
//!
//! It is generic over `L`, the runtime's handle to a local capability
//! (what gets exported), which only needs equality and hashing so that
//! exporting the same capability twice uses one export entry; and over
//! `E`, what the runtime keeps waiting on each of our embargoes (held
//! calls, say), opaque to the core, which keeps it in its embargo table
//! and hands it back when the embargo lifts or the connection ends (see
//! `embargoes.rs`).
//!
//! Every table is bounded ([`ConnLimits`]); a peer that breaks the
//! protocol gets an `abort` with the reason, and the connection is over
//! ([`Conn::aborted`]).
//!
//! # Calling protocol
//!
//! [`Conn`]'s methods come in four groups:
//!
//! - **Input** (`receive.rs`): [`Conn::receive`] with the bytes read from
//!   the transport, and [`Conn::receive_end`] when it closes; or, for a
//!   runtime that decodes frames itself, [`Conn::handle`] per message and
//!   [`Conn::receive_invalid`] / [`Conn::receive_closed`]. Each message
//!   is handled at once, by one `on_*` method per message kind.
//! - **Events** (`event.rs`): after input, drain [`Conn::next_event`] and
//!   act on each [`Event`]: answer calls, deliver returns, lift
//!   embargoes.
//! - **Output API** (`send.rs`, `embargoes.rs`, `exports.rs`,
//!   `imports.rs`): what the runtime asks to send, while handling events
//!   or on its own: [`Conn::bootstrap`], [`Conn::call`],
//!   [`Conn::tail_call`], [`Conn::finish`], [`Conn::return_results`] (its
//!   content in any form of [`OutContent`]), [`Conn::return_error`],
//!   [`Conn::return_canceled`], [`Conn::release_import`],
//!   [`Conn::resolve_export`], the `disembargo_*` methods, and
//!   [`Conn::abort`] / [`Conn::disconnected`].
//!   [`Conn::sends_results_elsewhere`] (before a finish) and
//!   [`Conn::embargoes_waiting_mut`] read what the core keeps for the
//!   runtime.
//! - **Output** (this file): [`Conn::take_output`] (or
//!   [`Conn::take_output_pieces`]) once the batch of input and the
//!   runtime's reactions to it are done, so that one batch leads to one
//!   write; [`Conn::recycle_output`] to hand the written buffer back.
//!   Getters: [`Conn::has_output`], [`Conn::aborted`],
//!   [`Conn::table_sizes`], [`Conn::dump`], [`Conn::export_id`].
//!
//! The order matters in one place: the finish of a returned question is
//! written by `take_output*`, after whatever the runtime sent while
//! handling [`Event::Return`], so that a disembargo
//! ([`Conn::disembargo_request`]) goes out before it.
//!
//! # Where each rule lives
//!
//! - `types.rs`, `content.rs`, `event.rs`: the public types.
//! - `slots.rs`, `questions.rs`, `answers.rs`, `exports.rs`, `imports.rs`,
//!   `embargoes.rs`: one file per table, its entries and the rules that
//!   add, count and remove them.
//! - `receive.rs`: acting on each incoming message; `parse.rs`: reading
//!   it first, whole.
//! - `send.rs`: the outgoing API; `build.rs`: building the messages
//!   (payloads, descriptors, splicing); `headers.rs`: the headers written
//!   by hand for the most frequent messages.

use std::collections::VecDeque;
use std::hash::Hash;

use capnp::message::{Allocator, Builder};
use capnp::{Error, Word};

use crate::frame::{self, FrameDecoder, Output};
use crate::limits::Limits;

/// The tables' hash maps: their keys are ids (some chosen by the
/// peer), hashed with foldhash's seeded hasher, which costs a fraction of
/// the standard SipHash (that took about 7% of a server's instructions
/// per call).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use answers::Answer;
use embargoes::Embargoes;
use exports::Export;
use imports::Import;
use questions::Question;
use slots::Slots;

mod answers;
mod build;
mod content;
mod embargoes;
mod event;
mod exports;
mod headers;
mod imports;
mod parse;
mod questions;
mod receive;
mod send;
mod slots;
mod types;

pub use build::abort_message;
pub use content::{InContent, InPayload, OutContent};
pub use event::Event;
pub use types::{CallTarget, ConnLimits, InCap, OutCap, OutTarget, TableSizes};

/// One side of a two-party connection; see the module docs.
pub struct Conn<L, E = ()> {
    limits: ConnLimits,
    questions: Slots<Question>,
    answers: HashMap<u32, Answer>,
    exports: Slots<Export<L>>,
    export_ids: HashMap<L, u32>,
    imports: HashMap<u32, Import>,
    decoder: FrameDecoder,
    /// The nesting limit of incoming messages.
    nesting_limit: i32,
    out: Output,
    /// Finishes for returned questions, sent after whatever the runtime
    /// writes while handling the return (a disembargo must precede them).
    deferred_finish: Vec<u32>,
    /// Our embargoes awaiting their loopback, each with what the runtime
    /// keeps waiting on it.
    embargoes: Embargoes<E>,
    events: VecDeque<Event<L, E>>,
    aborted: Option<Error>,
    /// The first segment of calls and returns being built (see
    /// [`payload_message`]): all zero between uses.
    scratch: Vec<Word>,
}

fn protocol_error(reason: impl Into<String>) -> Error {
    Error::failed(format!("protocol error: {}", reason.into()))
}

impl<L: Clone + Eq + Hash, E> Conn<L, E> {
    /// A connection with these limits on its tables.
    pub fn new(limits: ConnLimits, reader: Limits) -> Self {
        Conn {
            limits,
            decoder: FrameDecoder::new(reader),
            nesting_limit: reader.nesting_limit,
            questions: Slots::new(),
            answers: HashMap::default(),
            exports: Slots::new(),
            export_ids: HashMap::default(),
            imports: HashMap::default(),
            out: Output::default(),
            deferred_finish: Vec::new(),
            embargoes: Embargoes::default(),
            events: VecDeque::new(),
            aborted: None,
            scratch: Vec::new(),
        }
    }

    /// Framed bytes to write to the peer (everything produced so far, so
    /// that one batch of input leads to one write).
    pub fn take_output(&mut self) -> Vec<u8> {
        self.take_output_pieces().into_bytes()
    }

    /// As [`Conn::take_output`], with the content of calls and returns
    /// sent as [`OutContent::Kept`] not copied
    /// into the output but written from the kept messages (see
    /// [`frame::Output::pieces`]).
    pub fn take_output_pieces(&mut self) -> Output {
        for q in std::mem::take(&mut self.deferred_finish) {
            self.finish(q);
        }
        std::mem::take(&mut self.out)
    }

    /// Hands back a buffer that [`Conn::take_output`] returned, once its
    /// bytes are written: the next output goes into it (it is cleared
    /// first), so that large buffers are not freed and allocated again for
    /// every message.
    pub fn recycle_output(&mut self, buffer: Vec<u8>) {
        if self.out.is_empty() && buffer.capacity() > self.out.capacity() {
            self.out = Output::with_buffer(buffer);
        }
    }

    /// True if there are bytes to write.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || !self.deferred_finish.is_empty()
    }

    /// The next event for the runtime.
    pub fn next_event(&mut self) -> Option<Event<L, E>> {
        self.events.pop_front()
    }

    /// Why the connection is over, if it is.
    pub fn aborted(&self) -> Option<&Error> {
        self.aborted.as_ref()
    }

    /// Sizes of the tables.
    pub fn table_sizes(&self) -> TableSizes {
        TableSizes {
            questions: self.questions.len(),
            answers: self.answers.len(),
            exports: self.exports.len(),
            imports: self.imports.len(),
            embargoes: self.embargoes.len(),
        }
    }

    /// A human-readable dump of the tables.
    pub fn dump(&self) -> String {
        let mut s = format!("{:?}\n", self.table_sizes());
        let mut ex: Vec<_> = self
            .exports
            .items
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i, e.refs)))
            .collect();
        ex.sort();
        for (i, refs) in ex {
            s.push_str(&format!("  export {i} refs={refs}\n"));
        }
        let mut im: Vec<_> = self.imports.iter().collect();
        im.sort_by_key(|(i, _)| **i);
        for (i, imp) in im {
            s.push_str(&format!("  import {i} refs={}\n", imp.refs));
        }
        let mut an: Vec<_> = self.answers.iter().collect();
        an.sort_by_key(|(i, _)| **i);
        for (i, a) in an {
            s.push_str(&format!(
                "  answer {i} returned={} finished={}\n",
                a.returned, a.finished
            ));
        }
        s
    }

    fn send<A: Allocator>(&mut self, m: &Builder<A>) {
        let segments = m.get_segments_for_output();
        let out = self.out.bytes_mut();
        out.reserve(frame::encoded_len(&segments));
        frame::encode(&segments, out);
    }

    /// Ends the connection: sends `abort` with `reason`, forgets every
    /// table (handles of exported capabilities are dropped), and reports
    /// [`Event::Aborted`]. Further input is ignored.
    pub fn abort(&mut self, reason: Error) {
        if self.aborted.is_some() {
            return;
        }
        self.send(&abort_message(&reason));
        self.disconnected(reason);
    }

    /// The transport is gone (or we aborted): forget every table and
    /// report [`Event::Aborted`] once, followed by one
    /// [`Event::EmbargoBroken`] per embargo still live (in id order), so
    /// that the runtime can fail what waits on it.
    pub fn disconnected(&mut self, reason: Error) {
        if self.aborted.is_some() {
            return;
        }
        self.questions.drain();
        self.answers.clear();
        self.exports.drain();
        self.export_ids.clear();
        self.imports.clear();
        self.deferred_finish.clear();
        self.aborted = Some(reason.clone());
        self.events.push_back(Event::Aborted(reason));
        for (embargo, waiting) in self.embargoes.drain() {
            self.events
                .push_back(Event::EmbargoBroken { embargo, waiting });
        }
    }
}
