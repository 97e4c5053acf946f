//! The CapTP state machine of one two-party connection, sans IO.
//!
//! [`Conn`] keeps the four tables of the protocol (questions we asked,
//! answers we owe, capabilities we exported, capabilities we imported) and
//! turns both what the peer sends ([`Conn::receive`]) and what the local
//! runtime asks for (`bootstrap`, `call`, `return_*`, `finish`, `release`)
//! into framed outgoing bytes ([`Conn::take_output`]) and [`Event`]s for
//! the runtime. It never blocks, spawns, reads a clock or touches a socket.
//!
//! It is generic over `L`, the runtime's handle to a local capability
//! (what gets exported), which only needs equality and hashing so that
//! exporting the same capability twice uses one export entry.
//!
//! Every table is bounded ([`ConnLimits`]); a peer that breaks the protocol
//! gets an `abort` with the reason and the connection is over ([`Conn::aborted`]).

use std::collections::VecDeque;
use std::hash::Hash;

use capnp::message::{
    self, Allocator, Builder, HeapAllocator, ReaderOptions, ScratchSpaceHeapAllocator,
};
use capnp::{any_pointer, Error, MessageSize, Word};

use crate::exception;
use crate::frame::{self, FrameDecoder, FrameError, Kept, Output, WordSegments};
use crate::index_hook::{placeholders, source_indexes};
use crate::limits::Limits;
use crate::rpc_capnp::{
    cap_descriptor, message as rpc_message, message_target, payload, promised_answer, return_,
};
use capnp::traits::{Imbue, ImbueMut};

/// The tables' hash maps and sets: their keys are ids (some chosen by the
/// peer), hashed with foldhash's seeded hasher, which costs a fraction of
/// the standard SipHash (that took about 7% of a server's instructions
/// per call).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

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
    /// sent as broken (Overloaded).
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
    /// A promise of ours, not settled yet: exported as `senderPromise`.
    /// The first time it is exported, [`Event::ExportedPromise`] asks the
    /// runtime to report its resolution with [`Conn::resolve_export`].
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
    /// with [`Conn::release_import`]).
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

/// A received payload: the whole received message (owned) plus what each
/// capability index of its content stands for.
pub struct InPayload<L> {
    message: message::Reader<WordSegments>,
    /// The nesting limit the message was received with.
    nesting_limit: i32,
    /// The content's size, measured when the message was parsed (or why
    /// it could not be).
    size: capnp::Result<MessageSize>,
    /// What each capability index of the content stands for.
    pub caps: Vec<InCap<L>>,
}

impl<L> InPayload<L> {
    /// The size of the whole message that carried it, in words.
    pub fn message_words(&self) -> usize {
        self.message.size_in_words()
    }

    /// The content: the params of a call or the results of a return.
    pub fn content(&self) -> capnp::Result<any_pointer::Reader<'_>> {
        content_of(&self.message)
    }

    /// Keeps the received message so that its content can be read where
    /// it lies, instead of being copied out.
    ///
    /// The whole content was traversed once when the message was parsed
    /// (its size, as `target_size` counts it, after everything else the
    /// parse read), against the traversal budget the message was received
    /// with, so a message whose pointers share subtrees cannot amplify
    /// beyond that budget; the size is returned (or the error that
    /// traversal met). After that check the content reader has no
    /// traversal limit: a full read of it costs at most that size, as a
    /// full read of a copy would. The nesting limit stays.
    pub fn into_in_place(self) -> capnp::Result<(InContent, Vec<InCap<L>>, MessageSize)> {
        let InPayload {
            message,
            caps,
            nesting_limit,
            size,
        } = self;
        let size = size?;
        let mut options = ReaderOptions::new();
        options
            .traversal_limit_in_words(None)
            .nesting_limit(nesting_limit);
        let message = message::Reader::new(message.into_segments(), options);
        Ok((InContent { message }, caps, size))
    }
}

/// A received call or return kept whole, its payload content read in
/// place (see [`InPayload::into_in_place`]). It may be shared between
/// threads.
pub struct InContent {
    message: message::Reader<WordSegments>,
}

impl InContent {
    /// The content: the params of a call or the results of a return. Its
    /// capability pointers index the payload's cap table.
    pub fn content(&self) -> capnp::Result<any_pointer::Reader<'_>> {
        content_of(&self.message)
    }

    /// The size of the whole message, in words.
    pub fn message_words(&self) -> usize {
        self.message.size_in_words()
    }
}

fn content_of(message: &message::Reader<WordSegments>) -> capnp::Result<any_pointer::Reader<'_>> {
    let m: rpc_message::Reader<'_> = message.get_root()?;
    match m.which() {
        Ok(rpc_message::Call(c)) => Ok(c?.get_params()?.get_content()),
        Ok(rpc_message::Return(r)) => match r?.which() {
            Ok(return_::Results(p)) => Ok(p?.get_content()),
            _ => Err(Error::failed("return carries no results".into())),
        },
        _ => Err(Error::failed("message carries no payload".into())),
    }
}

/// What the runtime must act on.
pub enum Event<L> {
    /// The peer asks for a bootstrap capability: answer with
    /// [`Conn::return_results`] (one capability at the root) or
    /// [`Conn::return_error`].
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
    },
    /// One of our questions was answered by a tail call: its results are
    /// those of `answer`, a call the peer made on us asking us to keep its
    /// results. The question is finished.
    ReturnTakeFrom {
        /// Our question.
        question: u32,
        /// Our answer whose results it takes.
        answer: u32,
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
    /// call [`Conn::disembargo_reply`].
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
    },
    /// A promise of ours was exported for the first time (as
    /// `senderPromise`): when it settles, call [`Conn::resolve_export`]
    /// so that the peer can shorten its path.
    ExportedPromise {
        /// The export.
        export: u32,
        /// The promise.
        cap: L,
    },
    /// The connection is over: the peer aborted, or we did.
    Aborted(Error),
}

struct Question {
    returned: bool,
    /// Sent with `sendResultsTo.yourself` (our tail call): the peer keeps
    /// the results for a `takeFromOtherQuestion` of ours; the question
    /// stays pipelinable after its return, until we finish it.
    yourself: bool,
    /// We sent `finish` (cancelled it) before the return.
    finished: bool,
    /// Exports listed in the params (released if the peer says
    /// `releaseParamCaps`, or does not implement the call).
    param_exports: Vec<u32>,
}

struct Answer {
    returned: bool,
    /// The caller asked us to keep the results (`sendResultsTo.yourself`).
    results_to_yourself: bool,
    /// The caller promised not to pipeline on the results
    /// (`noPromisePipelining`): a return without capabilities can say
    /// `noFinishNeeded` and forget the answer at once.
    no_pipelining: bool,
    finished: bool,
    /// Exports listed in the results we sent (released on
    /// `releaseResultCaps`).
    result_exports: Vec<u32>,
}

struct Export<L> {
    /// `None` for a broken capability sent as a promise.
    cap: Option<L>,
    refs: u32,
    /// Exported as a promise that has not been resolved yet.
    unresolved_promise: bool,
    /// Exported as a promise (resolved or not).
    promise: bool,
    /// For a broken capability (`cap` is `None`): its error.
    error: Option<Error>,
}

struct Import {
    refs: u32,
    promise: bool,
    resolved: bool,
}

/// Table of entries with small reusable ids (lowest free first).
struct Slots<T> {
    items: Vec<Option<T>>,
    /// Free ids, lowest first.
    free: std::collections::BinaryHeap<std::cmp::Reverse<u32>>,
    len: usize,
}

impl<T> Slots<T> {
    fn new() -> Self {
        Slots {
            items: Vec::new(),
            free: std::collections::BinaryHeap::new(),
            len: 0,
        }
    }
    fn insert(&mut self, t: T) -> u32 {
        self.len += 1;
        match self.free.pop() {
            Some(std::cmp::Reverse(id)) => {
                if let Some(slot) = self.items.get_mut(id as usize) {
                    *slot = Some(t);
                }
                id
            }
            None => {
                self.items.push(Some(t));
                (self.items.len() - 1) as u32
            }
        }
    }
    fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.items.get_mut(id as usize).and_then(Option::as_mut)
    }
    fn get(&self, id: u32) -> Option<&T> {
        self.items.get(id as usize).and_then(Option::as_ref)
    }
    fn remove(&mut self, id: u32) -> Option<T> {
        let t = self.items.get_mut(id as usize)?.take()?;
        self.len -= 1;
        self.free.push(std::cmp::Reverse(id));
        Some(t)
    }
    fn len(&self) -> usize {
        self.len
    }
    fn drain(&mut self) -> Vec<T> {
        self.free.clear();
        self.len = 0;
        self.items.drain(..).flatten().collect()
    }
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

/// One side of a two-party connection; see the module docs.
pub struct Conn<L> {
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
    /// Our embargoes awaiting their loopback. Ids are not reused soon (a
    /// counter, skipping live ones): the runtime may still be holding
    /// calls under an id the core has just seen lifted.
    embargoes: HashSet<u32>,
    next_embargo: u32,
    events: VecDeque<Event<L>>,
    aborted: Option<Error>,
    /// The first segment of calls and returns being built (see
    /// [`payload_message`]): all zero between uses.
    scratch: Vec<Word>,
}

/// What writing a payload produced: broken exports that need a
/// `resolve`, and every export the payload lists.
type Written = (Vec<(u32, Error)>, Vec<u32>);

fn protocol_error(reason: impl Into<String>) -> Error {
    Error::failed(format!("protocol error: {}", reason.into()))
}

impl<L: Clone + Eq + Hash> Conn<L> {
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
            embargoes: HashSet::default(),
            next_embargo: 0,
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
    /// sent with [`Conn::call_kept`] and [`Conn::return_kept`] not copied
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
    pub fn next_event(&mut self) -> Option<Event<L>> {
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
        let mut m = small_message();
        exception::write(
            &reason,
            m.init_root::<rpc_message::Builder<'_>>().init_abort(),
        );
        self.send(&m);
        self.disconnected(reason);
    }

    /// The transport is gone (or we aborted): forget every table and
    /// report [`Event::Aborted`] once.
    pub fn disconnected(&mut self, reason: Error) {
        if self.aborted.is_some() {
            return;
        }
        self.questions.drain();
        self.answers.clear();
        self.exports.drain();
        self.export_ids.clear();
        self.imports.clear();
        self.embargoes.clear();
        self.deferred_finish.clear();
        self.aborted = Some(reason.clone());
        self.events.push_back(Event::Aborted(reason));
    }

    // ---- what the runtime asks for -------------------------------------

    fn new_question(&mut self) -> Result<u32, Error> {
        if let Some(e) = &self.aborted {
            return Err(e.clone());
        }
        if self.questions.len() >= self.limits.max_questions {
            return Err(Error::overloaded(format!(
                "too many outstanding questions on this connection (limit {})",
                self.limits.max_questions
            )));
        }
        Ok(self.questions.insert(Question {
            returned: false,
            yourself: false,
            finished: false,
            param_exports: Vec::new(),
        }))
    }

    /// Asks for the peer's bootstrap capability, with a service ID (none
    /// is sent when it is empty). Returns the question id.
    pub fn bootstrap(&mut self, object_id: &[u8]) -> Result<u32, Error> {
        let q = self.new_question()?;
        let mut m = small_message();
        {
            let mut b = m.init_root::<rpc_message::Builder<'_>>().init_bootstrap();
            b.set_question_id(q);
            if !object_id.is_empty() {
                // The ID travels as Text holding its raw bytes.
                let t = b
                    .init_deprecated_object_id()
                    .initn_as::<capnp::text::Builder<'_>>(object_id.len() as u32);
                t.as_bytes_mut().copy_from_slice(object_id);
            }
        }
        self.send(&m);
        Ok(q)
    }

    /// Sends a call. `content` is the params content, whose capability
    /// pointers index `caps`. Returns the question id.
    pub fn call(
        &mut self,
        target: &OutTarget,
        interface_id: u64,
        method_id: u16,
        content: any_pointer::Reader<'_>,
        caps: &[OutCap<L>],
    ) -> Result<u32, Error> {
        self.send_call(
            target,
            interface_id,
            method_id,
            Content::Reader(content),
            caps,
            false,
        )
    }

    /// Sends a call whose params content is the root of the message with
    /// these segments (a message built by this process), as
    /// [`Conn::call`] does. When the content carries no capability, its
    /// segments go out as they are, behind the call's own segment (see
    /// [`frame::encode_spliced`]), instead of being copied into the call.
    pub fn call_message(
        &mut self,
        target: &OutTarget,
        interface_id: u64,
        method_id: u16,
        segments: &[&[u8]],
        caps: &[OutCap<L>],
    ) -> Result<u32, Error> {
        self.send_call(
            target,
            interface_id,
            method_id,
            Content::Message(segments, None),
            caps,
            false,
        )
    }

    /// As [`Conn::call_message`], for the message `kept`: spliced content
    /// is not copied into the output, which keeps `kept` until it is
    /// written (see [`Conn::take_output_pieces`]).
    pub fn call_kept(
        &mut self,
        target: &OutTarget,
        interface_id: u64,
        method_id: u16,
        kept: Kept,
        caps: &[OutCap<L>],
    ) -> Result<u32, Error> {
        let segments = kept_segments(&kept);
        self.send_call(
            target,
            interface_id,
            method_id,
            Content::Message(segments.as_slice(), Some(&kept)),
            caps,
            false,
        )
    }

    fn send_call(
        &mut self,
        target: &OutTarget,
        interface_id: u64,
        method_id: u16,
        content: Content<'_>,
        caps: &[OutCap<L>],
        yourself: bool,
    ) -> Result<u32, Error> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let sent = self.send_call_in(
            &mut scratch,
            target,
            interface_id,
            method_id,
            content,
            caps,
            yourself,
        );
        self.scratch = scratch;
        sent
    }

    /// [`Conn::send_call`], building the call in `scratch`.
    #[allow(clippy::too_many_arguments)]
    fn send_call_in(
        &mut self,
        scratch: &mut Vec<Word>,
        target: &OutTarget,
        interface_id: u64,
        method_id: u16,
        content: Content<'_>,
        caps: &[OutCap<L>],
        yourself: bool,
    ) -> Result<u32, Error> {
        if let OutTarget::Answer { question, .. } = target {
            if self
                .questions
                .get(*question)
                .is_none_or(|q| q.finished || (q.returned && !q.yourself))
            {
                return Err(Error::failed(format!(
                    "question {question} is no longer pipelinable"
                )));
            }
        }
        let q = self.new_question()?;
        // The common case, small content built here without capabilities
        // and a plain target: the header written directly, the content
        // inlined behind it (what the general path below sends, byte for
        // byte). Nothing to export: no resolves, no param exports.
        if let (Content::Message([one], _), []) = (&content, caps) {
            if !splice_worthwhile(&[one]) {
                if let Some((words, len)) =
                    call_header(q, interface_id, method_id, target, yourself)
                {
                    let header = words_to_bytes(&words);
                    let header = &header[..len * 8];
                    if frame::encode_inlined(&[header], CALL_CONTENT, one, self.out.bytes_mut()) {
                        return Ok(q);
                    }
                }
            }
        }
        let mut m = payload_message(&content, caps.len(), scratch);
        let mut c = m.init_root::<rpc_message::Builder<'_>>().init_call();
        c.set_question_id(q);
        c.set_interface_id(interface_id);
        c.set_method_id(method_id);
        write_target(target, c.reborrow().init_target());
        if yourself {
            c.reborrow().init_send_results_to().set_yourself(());
        } else {
            c.reborrow().init_send_results_to().set_caller(());
        }
        let resolves = self.write_content(c.init_params(), &content, caps);
        let resolves = match resolves {
            Ok(((r, exports), spliced)) => {
                if let Err(e) = self.send_content(&mut m, call_params, CALL_CONTENT, spliced) {
                    self.questions.remove(q);
                    return Err(e);
                }
                if let Some(question) = self.questions.get_mut(q) {
                    question.param_exports = exports;
                }
                r
            }
            Err(e) => {
                self.questions.remove(q);
                return Err(e);
            }
        };
        self.send_broken_resolves(resolves);
        Ok(q)
    }

    /// Makes a tail call on behalf of `answer` (a call the peer made on
    /// us): sends the call with `sendResultsTo.yourself`, then answers
    /// `answer` with `takeFromOtherQuestion`, so that the results go
    /// straight from the callee to the peer's own question. Returns the
    /// question id; it stays pipelinable after its `resultsSentElsewhere`
    /// return, until [`Conn::finish`]. Fails (send an ordinary call then)
    /// if `answer` is not pending, or if its own caller asked us to keep
    /// its results (`sendResultsTo.yourself`): they must come back to us.
    pub fn tail_call(
        &mut self,
        answer: u32,
        target: &OutTarget,
        interface_id: u64,
        method_id: u16,
        content: any_pointer::Reader<'_>,
        caps: &[OutCap<L>],
    ) -> Result<u32, Error> {
        if !self.answer_pending(answer) {
            return Err(Error::failed(format!("answer {answer} is not pending")));
        }
        if self
            .answers
            .get(&answer)
            .is_some_and(|a| a.results_to_yourself)
        {
            // Its caller asked us to keep its results (to take them from
            // another question): they must come back to us, so this tail
            // call goes out as an ordinary call.
            return Err(Error::failed(format!(
                "answer {answer} keeps its results for the peer"
            )));
        }
        let q = self.send_call(
            target,
            interface_id,
            method_id,
            Content::Reader(content),
            caps,
            true,
        )?;
        if let Some(question) = self.questions.get_mut(q) {
            question.yourself = true;
        }
        self.send_bare_return(answer, |mut r| r.set_take_from_other_question(q));
        Ok(q)
    }

    /// We no longer want the answer to `question` (sent after its return,
    /// or to cancel it). The question id is freed once returned.
    pub fn finish(&mut self, question: u32) {
        if self.aborted.is_some() {
            return;
        }
        let returned = match self.questions.get_mut(question) {
            Some(q) if q.finished => return,
            Some(q) => {
                q.finished = true;
                q.returned
            }
            None => return,
        };
        // releaseResultCaps false; we never count on a cancelled call
        // having been delivered (requireEarlyCancellationWorkaround false).
        self.out
            .bytes_mut()
            .extend_from_slice(&finish_frame(question));
        if returned {
            self.questions.remove(question);
        }
    }

    /// Releases every reference we hold on an import.
    pub fn release_import(&mut self, import: u32) {
        if self.aborted.is_some() {
            return;
        }
        let Some(count) = self.imports.remove(&import).map(|i| i.refs) else {
            return;
        };
        let mut m = small_message();
        {
            let mut r = m.init_root::<rpc_message::Builder<'_>>().init_release();
            r.set_id(import);
            r.set_reference_count(count);
        }
        self.send(&m);
    }

    /// Answers `answer` with results.
    pub fn return_results(
        &mut self,
        answer: u32,
        content: any_pointer::Reader<'_>,
        caps: &[OutCap<L>],
    ) {
        self.send_return(answer, Content::Reader(content), caps)
    }

    /// Answers `answer` with results whose content is the root of the
    /// message with these segments (a message built by this process); see
    /// [`Conn::call_message`].
    pub fn return_message(&mut self, answer: u32, segments: &[&[u8]], caps: &[OutCap<L>]) {
        self.send_return(answer, Content::Message(segments, None), caps)
    }

    /// As [`Conn::return_message`], for the message `kept` (see
    /// [`Conn::call_kept`]).
    pub fn return_kept(&mut self, answer: u32, kept: Kept, caps: &[OutCap<L>]) {
        let segments = kept_segments(&kept);
        self.send_return(
            answer,
            Content::Message(segments.as_slice(), Some(&kept)),
            caps,
        )
    }

    fn send_return(&mut self, answer: u32, content: Content<'_>, caps: &[OutCap<L>]) {
        if !self.answer_pending(answer) {
            return;
        }
        if self.kept_for_tail_call(answer) {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        self.send_return_in(&mut scratch, answer, content, caps);
        self.scratch = scratch;
    }

    /// [`Conn::send_return`], building the return in `scratch`.
    fn send_return_in(
        &mut self,
        scratch: &mut Vec<Word>,
        answer: u32,
        content: Content<'_>,
        caps: &[OutCap<L>],
    ) {
        // As in `send_call_in`: small content built here, no capabilities.
        if let (Content::Message([one], _), []) = (&content, caps) {
            if !splice_worthwhile(&[one]) {
                let forget = self.no_finish_needed(answer);
                let words = return_header(answer, forget);
                let header = words_to_bytes(&words);
                let header = &header[..words.len() * 8];
                if frame::encode_inlined(&[header], RETURN_CONTENT, one, self.out.bytes_mut()) {
                    self.answered(answer, Vec::new());
                    if forget {
                        self.forget_answer(answer);
                    }
                    return;
                }
            }
        }
        let mut m = payload_message(&content, caps.len(), scratch);
        let mut r = m.init_root::<rpc_message::Builder<'_>>().init_return();
        r.set_answer_id(answer);
        r.set_release_param_caps(false);
        let written = self.write_content(r.reborrow().init_results(), &content, caps);
        match written {
            Ok(((resolves, exports), spliced)) => {
                let forget = exports.is_empty() && self.no_finish_needed(answer);
                if forget {
                    r.set_no_finish_needed(true);
                }
                if let Err(e) = self.send_content(&mut m, return_results, RETURN_CONTENT, spliced) {
                    return self.return_error(answer, e);
                }
                self.send_broken_resolves(resolves);
                self.answered(answer, exports);
                if forget {
                    self.forget_answer(answer);
                }
            }
            Err(e) => self.return_error(answer, e),
        }
    }

    /// Answers `answer` with an error.
    pub fn return_error(&mut self, answer: u32, error: Error) {
        if self.answer_pending(answer) && !self.kept_for_tail_call(answer) {
            self.send_bare_return(answer, |r| exception::write(&error, r.init_exception()));
        }
    }

    /// Answers `answer` as cancelled (after [`Event::Cancel`]).
    pub fn return_canceled(&mut self, answer: u32) {
        if self.answer_pending(answer) {
            self.send_bare_return(answer, |mut r| r.set_canceled(()));
        }
    }

    /// Sends a return without results (`fill` sets which kind) and records
    /// the answer as returned.
    fn send_bare_return(&mut self, answer: u32, fill: impl FnOnce(return_::Builder<'_>)) {
        let mut m = small_message();
        {
            let mut r = m.init_root::<rpc_message::Builder<'_>>().init_return();
            r.set_answer_id(answer);
            r.set_release_param_caps(false);
            fill(r);
        }
        self.send(&m);
        self.answered(answer, Vec::new());
    }

    /// Starts an embargo on field `path` of a question that has just
    /// returned with a capability that is not the peer's: calls pipelined
    /// on that field before the return are still on their way back through
    /// the peer, and later calls must wait for them. Sends a disembargo to
    /// the peer, who reflects it once those calls are through; then
    /// [`Event::EmbargoLifted`] reports it. Call while handling the
    /// [`Event::Return`] (before the question's finish is written).
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
    /// promise before the `resolve` are still on their way back through
    /// the peer. Like [`Conn::disembargo_request`], [`Event::EmbargoLifted`]
    /// reports the reflection.
    pub fn disembargo_request_import(&mut self, import: u32) -> Option<u32> {
        self.disembargo_to(&OutTarget::Import(import))
    }

    fn disembargo_to(&mut self, target: &OutTarget) -> Option<u32> {
        if self.aborted.is_some() {
            return None;
        }
        let mut id = self.next_embargo;
        while self.embargoes.contains(&id) {
            id = id.wrapping_add(1);
        }
        self.next_embargo = id.wrapping_add(1);
        self.embargoes.insert(id);
        let mut m = small_message();
        {
            let mut d = m.init_root::<rpc_message::Builder<'_>>().init_disembargo();
            write_target(target, d.reborrow().init_target());
            d.init_context().set_sender_loopback(id);
        }
        self.send(&m);
        Some(id)
    }

    /// Reflects a disembargo ([`Event::Loopback`]) back to the peer, on the
    /// import the target turned out to be.
    pub fn disembargo_reply(&mut self, embargo: u32, import: u32) {
        self.disembargo_reply_to(embargo, &OutTarget::Import(import));
    }

    /// The export id of `cap`, if it is exported.
    pub fn export_id(&self, cap: &L) -> Option<u32> {
        self.export_ids.get(cap).copied()
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

    /// For a call whose caller asked us to keep the results: the runtime
    /// keeps them (for the peer's `takeFromOtherQuestion`); the peer gets
    /// `resultsSentElsewhere`.
    fn kept_for_tail_call(&mut self, answer: u32) -> bool {
        if !self
            .answers
            .get(&answer)
            .is_some_and(|a| a.results_to_yourself)
        {
            return false;
        }
        self.send_bare_return(answer, |mut r| r.set_results_sent_elsewhere(()));
        true
    }

    /// True if the caller of `answer` promised not to pipeline on it, so
    /// that a return without capabilities can say `noFinishNeeded`.
    fn no_finish_needed(&self, answer: u32) -> bool {
        self.answers
            .get(&answer)
            .is_some_and(|a| a.no_pipelining && !a.results_to_yourself && !a.finished)
    }

    /// The answer was returned with `noFinishNeeded`: no finish will come.
    fn forget_answer(&mut self, answer: u32) {
        if self.answers.remove(&answer).is_some() {
            self.events.push_back(Event::Finished { answer });
        }
    }

    fn answer_pending(&self, answer: u32) -> bool {
        self.aborted.is_none() && self.answers.get(&answer).is_some_and(|a| !a.returned)
    }

    fn answered(&mut self, answer: u32, exports: Vec<u32>) {
        let finished = match self.answers.get_mut(&answer) {
            Some(a) => {
                a.returned = true;
                a.result_exports = exports;
                a.finished
            }
            None => false,
        };
        if finished {
            self.answers.remove(&answer);
            self.events.push_back(Event::Finished { answer });
        }
    }

    /// Writes a payload into `p` as [`Conn::write_payload_into`] does,
    /// except that content given as a message's segments, with no
    /// capability, is not copied: the payload gets an empty cap table and
    /// a null content for now, and the segments to splice in behind it are
    /// returned, for [`Conn::send_content`].
    fn write_content<'c>(
        &mut self,
        p: payload::Builder<'_>,
        content: &Content<'c>,
        caps: &[OutCap<L>],
    ) -> Result<(Written, Option<Spliced<'c>>), Error> {
        match *content {
            Content::Message(segments, kept) if caps.is_empty() && by_reference(segments) => {
                p.init_cap_table(0);
                Ok(((Vec::new(), Vec::new()), Some((segments, kept))))
            }
            Content::Message(segments, _) => {
                let message = message::Reader::new(
                    message::SegmentArray::new(segments),
                    *ReaderOptions::new().traversal_limit_in_words(None),
                );
                let root = message.get_root()?;
                Ok((self.write_payload_into(p, root, caps)?, None))
            }
            Content::Reader(root) => Ok((self.write_payload_into(p, root, caps)?, None)),
        }
    }

    /// Sends `m`, with the content segments `spliced` (if any) behind it
    /// (or, for one small segment, in the same segment: see
    /// [`frame::encode_inlined`]),
    /// reached from the pointer at `path` in `m` (see
    /// [`frame::encode_spliced`]). Should they not fit (a header of more
    /// than one segment), the content is copied into `m` after all.
    fn send_content<A: Allocator, F>(
        &mut self,
        m: &mut Builder<A>,
        nav: F,
        path: &[u16],
        spliced: Option<Spliced<'_>>,
    ) -> Result<(), Error>
    where
        F: for<'x> Fn(&'x mut Builder<A>) -> capnp::Result<payload::Builder<'x>>,
    {
        let Some((content, kept)) = spliced else {
            self.send(m);
            return Ok(());
        };
        let header = m.get_segments_for_output();
        let done = match (kept, content) {
            (_, [one]) if !splice_worthwhile(content) => {
                frame::encode_inlined(&header, path, one, self.out.bytes_mut())
            }
            (Some(kept), _) => frame::encode_spliced_kept(&header, path, kept, &mut self.out),
            (None, _) => frame::encode_spliced(&header, path, content, self.out.bytes_mut()),
        };
        if done {
            return Ok(());
        }
        let message = message::Reader::new(
            message::SegmentArray::new(content),
            *ReaderOptions::new().traversal_limit_in_words(None),
        );
        self.write_payload(m, nav, message.get_root()?, &[])?;
        self.send(m);
        Ok(())
    }

    /// Writes a payload into `m` (reached through `nav`): copies `content`
    /// (whose capability pointers index `caps`), then writes the cap table
    /// in the copy's order. Returns the exports of broken capabilities that
    /// need a `resolve`, and the exports the payload lists.
    fn write_payload<A: Allocator, F>(
        &mut self,
        m: &mut Builder<A>,
        nav: F,
        content: any_pointer::Reader<'_>,
        caps: &[OutCap<L>],
    ) -> Result<Written, Error>
    where
        F: for<'x> Fn(&'x mut Builder<A>) -> capnp::Result<payload::Builder<'x>>,
    {
        self.write_payload_into(nav(m)?, content, caps)
    }

    /// As [`Conn::write_payload`], into the payload `p`.
    fn write_payload_into(
        &mut self,
        mut p: payload::Builder<'_>,
        content: any_pointer::Reader<'_>,
        caps: &[OutCap<L>],
    ) -> Result<Written, Error> {
        let sources = placeholders(caps.len());
        let mut copied = Vec::new();
        {
            // Readers are covariant in their lifetime: shorten it to the
            // placeholders' so it can be imbued with them.
            let mut src: any_pointer::Reader<'_> = content;
            src.imbue(&sources);
            let mut dst = p.reborrow().init_content();
            dst.imbue_mut(&mut copied);
            dst.set_as(src)?;
        }
        let order = source_indexes(&copied);
        drop(copied);
        let mut table = p.init_cap_table(order.len() as u32);
        let mut resolves = Vec::new();
        let mut exports = Vec::new();
        for (i, src) in order.into_iter().enumerate() {
            let d = table.reborrow().get(i as u32);
            let cap = caps.get(src).unwrap_or(&OutCap::None);
            self.write_descriptor(d, cap, &mut resolves, &mut exports);
        }
        Ok((resolves, exports))
    }

    /// Describes one capability of an outgoing payload (or resolution).
    fn write_descriptor(
        &mut self,
        mut d: cap_descriptor::Builder<'_>,
        cap: &OutCap<L>,
        resolves: &mut Vec<(u32, Error)>,
        exports: &mut Vec<u32>,
    ) {
        match cap {
            OutCap::None => d.set_none(()),
            OutCap::Local(l) | OutCap::Promise(l) => {
                let promise = matches!(cap, OutCap::Promise(_));
                match self.export(l.clone(), promise) {
                    Some((id, as_promise)) => {
                        exports.push(id);
                        if as_promise {
                            d.set_sender_promise(id)
                        } else {
                            d.set_sender_hosted(id)
                        }
                    }
                    None => {
                        let e = Error::overloaded(
                            "too many capabilities exported on this connection".into(),
                        );
                        self.write_broken(d, e, resolves, exports)
                    }
                }
            }
            OutCap::Broken(e) => self.write_broken(d, e.clone(), resolves, exports),
            OutCap::Import(id) => d.set_receiver_hosted(*id),
            OutCap::Answer { question, path } => {
                let mut pa = d.init_receiver_answer();
                pa.set_question_id(*question);
                write_path(path, pa);
            }
        }
    }

    /// Tells the peer what `promise`, which we exported as `export`
    /// ([`Event::ExportedPromise`]), has become. Nothing is sent if the
    /// peer has released it meanwhile (even if the export id now names
    /// another promise), or if it was resolved already.
    pub fn resolve_export(&mut self, export: u32, promise: &L, to: OutCap<L>) {
        if self.aborted.is_some() {
            return;
        }
        match self.exports.get_mut(export) {
            Some(e) if e.unresolved_promise && e.cap.as_ref() == Some(promise) => {
                e.unresolved_promise = false
            }
            _ => return,
        }
        let mut resolves = Vec::new();
        let mut exports = Vec::new();
        let mut m = small_message();
        {
            let mut r = m.init_root::<rpc_message::Builder<'_>>().init_resolve();
            r.set_promise_id(export);
            match &to {
                OutCap::Broken(e) => exception::write(e, r.init_exception()),
                cap => self.write_descriptor(r.init_cap(), cap, &mut resolves, &mut exports),
            }
        }
        self.send(&m);
        self.send_broken_resolves(resolves);
    }

    /// A broken capability is exported as a promise (a fresh export entry
    /// with nothing behind it) and resolved to its error right after.
    fn write_broken(
        &mut self,
        mut d: cap_descriptor::Builder<'_>,
        e: Error,
        resolves: &mut Vec<(u32, Error)>,
        exports: &mut Vec<u32>,
    ) {
        // The entry holds no capability, so it is not in `export_ids`.
        if self.exports.len() >= self.limits.max_exports {
            d.set_none(());
            return;
        }
        let id = self.exports.insert(Export {
            cap: None,
            refs: 1,
            unresolved_promise: false,
            promise: true,
            error: Some(e.clone()),
        });
        d.set_sender_promise(id);
        resolves.push((id, e));
        exports.push(id);
    }

    fn send_broken_resolves(&mut self, resolves: Vec<(u32, Error)>) {
        for (id, e) in resolves {
            let mut m = small_message();
            {
                let mut r = m.init_root::<rpc_message::Builder<'_>>().init_resolve();
                r.set_promise_id(id);
                exception::write(&e, r.init_exception());
            }
            self.send(&m);
        }
    }

    /// The export of `cap` (a new entry, or one more reference to the
    /// existing one), and whether it is described as a promise.
    fn export(&mut self, cap: L, promise: bool) -> Option<(u32, bool)> {
        if let Some(&id) = self.export_ids.get(&cap) {
            if let Some(e) = self.exports.get_mut(id) {
                // Saturating: past u32::MAX the extra references are
                // simply never released by the peer's count (harmless).
                e.refs = e.refs.saturating_add(1);
                return Some((id, e.unresolved_promise));
            }
        }
        if self.exports.len() >= self.limits.max_exports {
            return None;
        }
        let id = self.exports.insert(Export {
            cap: Some(cap.clone()),
            refs: 1,
            unresolved_promise: promise,
            promise,
            error: None,
        });
        self.export_ids.insert(cap.clone(), id);
        if promise {
            self.events
                .push_back(Event::ExportedPromise { export: id, cap });
        }
        Some((id, promise))
    }

    // ---- what the peer sends ---------------------------------------------

    /// Feeds bytes received from the peer. Complete messages are handled at
    /// once; their effects are in [`Conn::next_event`] and
    /// [`Conn::take_output`].
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.aborted.is_some() {
            return;
        }
        self.decoder.push(bytes);
        loop {
            if self.aborted.is_some() {
                return;
            }
            match self.decoder.next_message() {
                Ok(Some(m)) => self.handle(m),
                Ok(None) => return,
                Err(e) => return self.abort(protocol_error(e.to_string())),
            }
        }
    }

    /// The peer closed its side of the stream.
    pub fn receive_end(&mut self) {
        match self.decoder.finish() {
            Ok(()) => self.receive_closed(),
            Err(e) => self.receive_invalid(e),
        }
    }

    /// For a runtime that decodes frames itself (with a [`FrameDecoder`]
    /// made with the limits given to [`Conn::new`], handing each message
    /// to [`Conn::handle`]): the stream of frames is invalid (or was cut
    /// inside a frame). Aborts, telling the peer why.
    pub fn receive_invalid(&mut self, e: FrameError) {
        // The peer may only have closed its sending side: tell it why
        // its last frame was not used.
        self.abort(protocol_error(e.to_string()))
    }

    /// For a runtime that decodes frames itself: the peer closed its side
    /// of the stream after whole frames.
    pub fn receive_closed(&mut self) {
        self.disconnected(Error::disconnected("the peer closed the connection".into()))
    }

    /// Handles one decoded message.
    pub fn handle(&mut self, msg: message::Reader<WordSegments>) {
        if self.aborted.is_some() {
            return;
        }
        let parsed = match parse(&msg) {
            Ok(p) => p,
            Err(e) => return self.abort(protocol_error(format!("malformed message: {e}"))),
        };
        if let Err(e) = self.act(parsed, msg) {
            self.abort(e);
        }
    }

    fn act(&mut self, parsed: Parsed, msg: message::Reader<WordSegments>) -> Result<(), Error> {
        match parsed {
            Parsed::Unknown => {
                let root: rpc_message::Reader<'_> = msg.get_root()?;
                let mut m = small_message();
                m.init_root::<rpc_message::Builder<'_>>()
                    .set_unimplemented(root)?;
                self.send(&m);
            }
            Parsed::Abort(e) => self.disconnected(e),
            Parsed::Unimplemented(inner) => self.on_unimplemented(inner)?,
            Parsed::Bootstrap {
                question,
                object_id,
            } => {
                self.new_answer(question)?;
                self.events.push_back(Event::Bootstrap {
                    answer: question,
                    object_id,
                });
            }
            Parsed::Call {
                question,
                target,
                interface_id,
                method_id,
                caps,
                to,
                no_pipelining,
                size,
            } => {
                self.new_answer(question)?;
                if let Some(a) = self.answers.get_mut(&question) {
                    a.no_pipelining = no_pipelining;
                }
                let caps = self.import_caps(caps)?;
                let target = match target {
                    RawTarget::Import(id) => match self.exports.get(id) {
                        Some(Export { cap: Some(l), .. }) => CallTarget::Local(l.clone()),
                        Some(Export { cap: None, .. }) => {
                            self.drop_in_caps(&caps);
                            if let (ResultsTo::Yourself, Some(a)) =
                                (&to, self.answers.get_mut(&question))
                            {
                                // The caller will take this outcome from
                                // another question: the return says
                                // `resultsSentElsewhere`.
                                a.results_to_yourself = true;
                            }
                            self.fail_call(
                                question,
                                Error::failed("call on a broken capability".into()),
                            );
                            return Ok(());
                        }
                        None => return Err(protocol_error(format!("call on unknown export {id}"))),
                    },
                    RawTarget::Answer(a, path) => {
                        if !self.answers.contains_key(&a) {
                            return Err(protocol_error(format!(
                                "call pipelined on unknown answer {a}"
                            )));
                        }
                        CallTarget::Answer { answer: a, path }
                    }
                };
                match to {
                    ResultsTo::Caller => {}
                    ResultsTo::Yourself => {
                        if let Some(a) = self.answers.get_mut(&question) {
                            a.results_to_yourself = true;
                        }
                    }
                    ResultsTo::ThirdParty => {
                        self.drop_in_caps(&caps);
                        self.fail_call(
                            question,
                            Error::unimplemented("three-party handoff is not supported yet".into()),
                        );
                        return Ok(());
                    }
                }
                self.events.push_back(Event::Call {
                    answer: question,
                    target,
                    interface_id,
                    method_id,
                    params: InPayload {
                        message: msg,
                        caps,
                        nesting_limit: self.nesting_limit,
                        size,
                    },
                });
            }
            Parsed::Return {
                answer,
                release_params,
                no_finish_needed,
                result,
            } => {
                let q = match self.questions.get_mut(answer) {
                    Some(q) if !q.returned => q,
                    _ => {
                        return Err(protocol_error(format!(
                            "return for unknown question {answer}"
                        )))
                    }
                };
                q.returned = true;
                let already_finished = q.finished;
                let yourself = q.yourself;
                let params = std::mem::take(&mut q.param_exports);
                if release_params {
                    for id in params {
                        self.release_export(id, 1)?;
                    }
                }
                let result = match result {
                    RawReturn::Results(caps, size) => {
                        let caps = self.import_caps(caps)?;
                        Ok(InPayload {
                            message: msg,
                            caps,
                            nesting_limit: self.nesting_limit,
                            size,
                        })
                    }
                    RawReturn::Error(e) => Err(e),
                    RawReturn::TakeFrom(other) => {
                        if !self
                            .answers
                            .get(&other)
                            .is_some_and(|a| a.results_to_yourself)
                        {
                            return Err(protocol_error(format!(
                                "takeFromOtherQuestion names {other}, which is not a call whose results we keep"
                            )));
                        }
                        if no_finish_needed || already_finished {
                            self.questions.remove(answer);
                        } else {
                            self.deferred_finish.push(answer);
                        }
                        self.events.push_back(Event::ReturnTakeFrom {
                            question: answer,
                            answer: other,
                        });
                        return Ok(());
                    }
                };
                if no_finish_needed || already_finished {
                    self.questions.remove(answer);
                } else if !yourself {
                    self.deferred_finish.push(answer);
                }
                self.events.push_back(Event::Return {
                    question: answer,
                    result,
                });
            }
            Parsed::Finish {
                question,
                release_results,
                not_before_start,
            } => {
                let Some(a) = self.answers.get_mut(&question) else {
                    return Err(protocol_error(format!(
                        "finish for unknown question {question}"
                    )));
                };
                if a.finished {
                    return Err(protocol_error(format!(
                        "finish sent twice for question {question}"
                    )));
                }
                a.finished = true;
                let returned = a.returned;
                let results = std::mem::take(&mut a.result_exports);
                if release_results {
                    for id in results {
                        self.release_export(id, 1)?;
                    }
                }
                if returned {
                    self.answers.remove(&question);
                    self.events.push_back(Event::Finished { answer: question });
                } else {
                    self.events.push_back(Event::Cancel {
                        answer: question,
                        not_before_start,
                    });
                }
            }
            Parsed::Resolve { promise, to } => {
                let known = match self.imports.get_mut(&promise) {
                    Some(i) if !i.promise || i.resolved => {
                        return Err(protocol_error(format!(
                            "resolve of settled import {promise}"
                        )));
                    }
                    Some(i) => {
                        i.resolved = true;
                        true
                    }
                    None => false,
                };
                let to = match to {
                    Ok(d) => Ok(self.import_cap(d)?),
                    Err(e) => Err(e),
                };
                if known {
                    self.events.push_back(Event::Resolve {
                        import: promise,
                        to,
                    });
                } else if let Ok(c) = to {
                    // We released that promise already: drop what it became.
                    self.drop_in_caps(&[c]);
                }
            }
            Parsed::Release { id, count } => self.release_export(id, count)?,
            Parsed::Disembargo { target, context } => match context {
                RawEmbargo::SenderLoopback(embargo) => match target {
                    RawTarget::Answer(a, path) if self.answers.contains_key(&a) => {
                        self.events.push_back(Event::Loopback {
                            embargo,
                            target: CallTarget::Answer { answer: a, path },
                        });
                    }
                    RawTarget::Answer(a, _) => {
                        return Err(protocol_error(format!("disembargo on unknown answer {a}")));
                    }
                    RawTarget::Import(id) => match self.exports.get(id) {
                        // A promise we exported and resolved: the runtime
                        // checks that it leads back to the peer.
                        Some(Export {
                            cap: Some(l),
                            unresolved_promise: false,
                            promise: true,
                            ..
                        }) => {
                            self.events.push_back(Event::Loopback {
                                embargo,
                                target: CallTarget::Local(l.clone()),
                            });
                        }
                        _ => {
                            return Err(protocol_error(format!(
                                "disembargo on export {id}, which is not a resolved promise"
                            )));
                        }
                    },
                },
                RawEmbargo::ReceiverLoopback(e) => {
                    if !self.embargoes.remove(&e) {
                        return Err(protocol_error(format!(
                            "disembargo for unknown embargo {e}"
                        )));
                    }
                    self.events.push_back(Event::EmbargoLifted { embargo: e });
                }
                RawEmbargo::Other => {
                    let root: rpc_message::Reader<'_> = msg.get_root()?;
                    let mut m = small_message();
                    m.init_root::<rpc_message::Builder<'_>>()
                        .set_unimplemented(root)?;
                    self.send(&m);
                }
            },
        }
        Ok(())
    }

    /// Answers the peer's call `answer` with `error` at once, and tells
    /// the runtime ([`Event::CallFailed`]), which keeps the outcome while
    /// the answer id is live: without it, a `receiverAnswer` or a call
    /// naming the answer would find nothing there.
    fn fail_call(&mut self, answer: u32, error: Error) {
        self.return_error(answer, error.clone());
        self.events.push_back(Event::CallFailed { answer, error });
    }

    fn new_answer(&mut self, id: u32) -> Result<(), Error> {
        if self.answers.contains_key(&id) {
            return Err(protocol_error(format!(
                "question id {id} is already in use"
            )));
        }
        if self.answers.len() >= self.limits.max_answers {
            return Err(Error::overloaded(format!(
                "peer has more than {} calls outstanding on this connection",
                self.limits.max_answers
            )));
        }
        self.answers.insert(
            id,
            Answer {
                returned: false,
                results_to_yourself: false,
                no_pipelining: false,
                finished: false,
                result_exports: Vec::new(),
            },
        );
        Ok(())
    }

    fn release_export(&mut self, id: u32, count: u32) -> Result<(), Error> {
        let Some(e) = self.exports.get_mut(id) else {
            return Err(protocol_error(format!("release of unknown export {id}")));
        };
        if e.refs < count {
            return Err(protocol_error(format!(
                "release of {count} references to export {id}, which has {}",
                e.refs
            )));
        }
        e.refs -= count;
        if e.refs == 0 {
            if let Some(Export { cap: Some(l), .. }) = self.exports.remove(id) {
                self.export_ids.remove(&l);
            }
        }
        Ok(())
    }

    fn import_caps(&mut self, raw: Vec<RawCap>) -> Result<Vec<InCap<L>>, Error> {
        raw.into_iter().map(|d| self.import_cap(d)).collect()
    }

    fn import_cap(&mut self, d: RawCap) -> Result<InCap<L>, Error> {
        Ok(match d {
            RawCap::None => InCap::None,
            RawCap::Sender(id, promise) => {
                let at_limit = self.imports.len() >= self.limits.max_imports;
                match self.imports.get_mut(&id) {
                    Some(i) => {
                        i.refs = i.refs.checked_add(1).ok_or_else(|| {
                            protocol_error(format!("import {id} received more than 2^32 times"))
                        })?
                    }
                    None if at_limit => {
                        return Err(Error::overloaded(format!(
                            "peer exported more than {} capabilities on this connection",
                            self.limits.max_imports
                        )))
                    }
                    None => {
                        self.imports.insert(
                            id,
                            Import {
                                refs: 1,
                                promise,
                                resolved: false,
                            },
                        );
                    }
                }
                InCap::Import { id, promise }
            }
            RawCap::Receiver(id) => match self.exports.get(id) {
                Some(Export { cap: Some(l), .. }) => InCap::Local(l.clone()),
                Some(Export {
                    cap: None, error, ..
                }) => InCap::Broken(error.clone().unwrap_or_else(|| {
                    Error::failed("a broken capability sent back to its sender".into())
                })),
                None => {
                    return Err(protocol_error(format!(
                        "descriptor names unknown export {id}"
                    )))
                }
            },
            RawCap::Answer(a, path) => {
                if !self.answers.contains_key(&a) {
                    return Err(protocol_error(format!(
                        "descriptor names unknown answer {a}"
                    )));
                }
                InCap::Answer { answer: a, path }
            }
        })
    }

    /// Gives back one reference per import in `caps` (a payload that will
    /// not be delivered).
    fn drop_in_caps(&mut self, caps: &[InCap<L>]) {
        for c in caps {
            if let InCap::Import { id, .. } = c {
                let gone = match self.imports.get_mut(id) {
                    Some(i) => {
                        i.refs -= 1;
                        i.refs == 0
                    }
                    None => false,
                };
                if gone {
                    self.imports.remove(id);
                }
                let mut m = small_message();
                {
                    let mut r = m.init_root::<rpc_message::Builder<'_>>().init_release();
                    r.set_id(*id);
                    r.set_reference_count(1);
                }
                self.send(&m);
            }
        }
    }

    fn on_unimplemented(&mut self, inner: RawUnimplemented) -> Result<(), Error> {
        match inner {
            RawUnimplemented::Resolve(id) => {
                // A level-0 peer: it will never use the promise.
                if self.exports.get(id).is_some() {
                    self.release_export(id, 1)?;
                }
            }
            RawUnimplemented::Question(q) => {
                let Some(question) = self.questions.remove(q) else {
                    return Err(protocol_error(format!(
                        "unimplemented for unknown question {q}"
                    )));
                };
                for id in question.param_exports {
                    let _ = self.release_export(id, 1);
                }
                self.events.push_back(Event::Return {
                    question: q,
                    result: Err(Error::unimplemented(
                        "the peer does not implement this message".into(),
                    )),
                });
            }
            RawUnimplemented::Other => {
                return Err(protocol_error(
                    "peer did not understand a message it must handle",
                ));
            }
        }
        Ok(())
    }
}

// ---- parsing: everything read from the message before acting on it ------

enum RawTarget {
    Import(u32),
    Answer(u32, Vec<u16>),
}

enum RawCap {
    None,
    Sender(u32, bool),
    Receiver(u32),
    Answer(u32, Vec<u16>),
}

enum RawReturn {
    /// The cap table, and the content's size (see [`InPayload::size`]).
    Results(Vec<RawCap>, capnp::Result<MessageSize>),
    Error(Error),
    TakeFrom(u32),
}

/// Where the results of a call the peer makes should go.
#[derive(PartialEq, Eq)]
enum ResultsTo {
    Caller,
    /// Keep them: the peer will name this call in a `takeFromOtherQuestion`
    /// (a tail call it made on our behalf).
    Yourself,
    ThirdParty,
}

enum RawEmbargo {
    SenderLoopback(u32),
    ReceiverLoopback(u32),
    Other,
}

enum RawUnimplemented {
    Resolve(u32),
    Question(u32),
    Other,
}

enum Parsed {
    Unknown,
    Abort(Error),
    Unimplemented(RawUnimplemented),
    Bootstrap {
        question: u32,
        object_id: Vec<u8>,
    },
    Call {
        question: u32,
        target: RawTarget,
        interface_id: u64,
        method_id: u16,
        caps: Vec<RawCap>,
        to: ResultsTo,
        no_pipelining: bool,
        /// The params content's size (see [`InPayload::size`]).
        size: capnp::Result<MessageSize>,
    },
    Return {
        answer: u32,
        release_params: bool,
        no_finish_needed: bool,
        result: RawReturn,
    },
    Finish {
        question: u32,
        release_results: bool,
        not_before_start: bool,
    },
    Resolve {
        promise: u32,
        to: Result<RawCap, Error>,
    },
    Release {
        id: u32,
        count: u32,
    },
    Disembargo {
        target: RawTarget,
        context: RawEmbargo,
    },
}

/// Longest promised-answer transform accepted.
const MAX_PATH: u32 = 64;

fn parse_path(pa: promised_answer::Reader<'_>) -> capnp::Result<(u32, Vec<u16>)> {
    let ops = pa.get_transform()?;
    if ops.len() > MAX_PATH {
        return Err(Error::failed(format!("transform of {} ops", ops.len())));
    }
    let mut path = Vec::with_capacity(ops.len() as usize);
    for op in ops.iter() {
        match op.which()? {
            promised_answer::op::Noop(()) => {}
            promised_answer::op::GetPointerField(f) => path.push(f),
        }
    }
    Ok((pa.get_question_id(), path))
}

fn parse_target(t: message_target::Reader<'_>) -> capnp::Result<RawTarget> {
    Ok(match t.which()? {
        message_target::ImportedCap(id) => RawTarget::Import(id),
        message_target::PromisedAnswer(pa) => {
            let (q, path) = parse_path(pa?)?;
            RawTarget::Answer(q, path)
        }
    })
}

fn parse_cap(d: cap_descriptor::Reader<'_>) -> capnp::Result<RawCap> {
    Ok(match d.which()? {
        cap_descriptor::None(()) => RawCap::None,
        cap_descriptor::SenderHosted(id) => RawCap::Sender(id, false),
        cap_descriptor::SenderPromise(id) => RawCap::Sender(id, true),
        cap_descriptor::ReceiverHosted(id) => RawCap::Receiver(id),
        cap_descriptor::ReceiverAnswer(pa) => {
            let (q, path) = parse_path(pa?)?;
            RawCap::Answer(q, path)
        }
        // Without three-party handoff, the vine is the capability.
        cap_descriptor::ThirdPartyHosted(t) => RawCap::Sender(t?.get_vine_id(), false),
    })
}

/// Longest cap table accepted in one payload.
const MAX_CAP_TABLE: u32 = 16_384;

fn parse_caps(p: payload::Reader<'_>) -> capnp::Result<Vec<RawCap>> {
    let table = p.get_cap_table()?;
    if table.len() > MAX_CAP_TABLE {
        return Err(Error::failed(format!(
            "cap table of {} entries (at most {MAX_CAP_TABLE})",
            table.len()
        )));
    }
    table.iter().map(parse_cap).collect()
}

fn parse(msg: &message::Reader<WordSegments>) -> capnp::Result<Parsed> {
    let root: rpc_message::Reader<'_> = msg.get_root()?;
    let which = match root.which() {
        Ok(w) => w,
        Err(_) => return Ok(Parsed::Unknown),
    };
    Ok(match which {
        rpc_message::Unimplemented(m) => {
            let m = m?;
            Parsed::Unimplemented(match m.which() {
                Ok(rpc_message::Resolve(r)) => RawUnimplemented::Resolve(r?.get_promise_id()),
                Ok(rpc_message::Bootstrap(b)) => RawUnimplemented::Question(b?.get_question_id()),
                Ok(rpc_message::Call(c)) => RawUnimplemented::Question(c?.get_question_id()),
                _ => RawUnimplemented::Other,
            })
        }
        rpc_message::Abort(e) => Parsed::Abort(exception::read(e?)),
        rpc_message::Bootstrap(b) => {
            let b = b?;
            let id = b.get_deprecated_object_id();
            let object_id = if id.is_null() {
                Vec::new()
            } else {
                id.get_as::<capnp::text::Reader<'_>>()?.as_bytes().to_vec()
            };
            Parsed::Bootstrap {
                question: b.get_question_id(),
                object_id,
            }
        }
        rpc_message::Call(c) => {
            let c = c?;
            use crate::rpc_capnp::call::send_results_to;
            let to = match c.get_send_results_to().which()? {
                send_results_to::Caller(()) => ResultsTo::Caller,
                send_results_to::Yourself(()) => ResultsTo::Yourself,
                send_results_to::ThirdParty(_) => ResultsTo::ThirdParty,
            };
            let params = c.get_params()?;
            Parsed::Call {
                question: c.get_question_id(),
                target: parse_target(c.get_target()?)?,
                interface_id: c.get_interface_id(),
                method_id: c.get_method_id(),
                caps: parse_caps(params)?,
                to,
                no_pipelining: c.get_no_promise_pipelining(),
                // Last, after everything else read.
                size: params.get_content().target_size(),
            }
        }
        rpc_message::Return(r) => {
            let r = r?;
            let result = match r.which()? {
                return_::Results(p) => {
                    let p = p?;
                    // The content's size last, after everything else read.
                    RawReturn::Results(parse_caps(p)?, p.get_content().target_size())
                }
                return_::Exception(e) => RawReturn::Error(exception::read(e?)),
                return_::Canceled(()) => RawReturn::Error(Error::failed("call canceled".into())),
                return_::ResultsSentElsewhere(()) => {
                    RawReturn::Error(Error::failed("results were sent elsewhere".into()))
                }
                return_::TakeFromOtherQuestion(a) => RawReturn::TakeFrom(a),
                return_::AcceptFromThirdParty(_) => RawReturn::Error(Error::unimplemented(
                    "three-party handoff is not supported yet".into(),
                )),
            };
            Parsed::Return {
                answer: r.get_answer_id(),
                release_params: r.get_release_param_caps(),
                no_finish_needed: r.get_no_finish_needed(),
                result,
            }
        }
        rpc_message::Finish(f) => {
            let f = f?;
            Parsed::Finish {
                question: f.get_question_id(),
                release_results: f.get_release_result_caps(),
                not_before_start: f.get_require_early_cancellation_workaround(),
            }
        }
        rpc_message::Resolve(r) => {
            let r = r?;
            Parsed::Resolve {
                promise: r.get_promise_id(),
                to: match r.which()? {
                    crate::rpc_capnp::resolve::Cap(d) => Ok(parse_cap(d?)?),
                    crate::rpc_capnp::resolve::Exception(e) => Err(exception::read(e?)),
                },
            }
        }
        rpc_message::Release(r) => {
            let r = r?;
            Parsed::Release {
                id: r.get_id(),
                count: r.get_reference_count(),
            }
        }
        rpc_message::Disembargo(d) => {
            let d = d?;
            use crate::rpc_capnp::disembargo::context;
            Parsed::Disembargo {
                target: parse_target(d.get_target()?)?,
                context: match d.get_context().which()? {
                    context::SenderLoopback(e) => RawEmbargo::SenderLoopback(e),
                    context::ReceiverLoopback(e) => RawEmbargo::ReceiverLoopback(e),
                    _ => RawEmbargo::Other,
                },
            }
        }
        rpc_message::ObsoleteSave(_)
        | rpc_message::ObsoleteDelete(_)
        | rpc_message::Provide(_)
        | rpc_message::Accept(_)
        | rpc_message::Join(_) => Parsed::Unknown,
    })
}

/// The frame of a `finish` for `question` with `releaseResultCaps` and
/// `requireEarlyCancellationWorkaround` false, as capnp would build and
/// frame it (one per call: written directly instead of built with a
/// `message::Builder`, which allocates twice).
fn finish_frame(question: u32) -> [u8; 40] {
    let mut f = [0u8; 40];
    // Segment table: one segment (count - 1 = 0) of 4 words.
    f[4] = 4;
    // Word 0: root struct pointer, offset 0, 1 data word, 1 pointer.
    f[8 + 4] = 1;
    f[8 + 6] = 1;
    // Word 1: Message's data, its union discriminant: finish (@4).
    f[16] = 4;
    // Word 2: Message's pointer: the Finish struct, offset 0, 1 data word.
    f[24 + 4] = 1;
    // Word 3: Finish's data: questionId, then the two booleans, whose
    // default is true (stored XORed with it: false is 1).
    f[32..36].copy_from_slice(&question.to_le_bytes());
    f[36] = 0b11;
    f
}

/// A struct pointer word: `offset` words from the word after it, with
/// `data` words and `pointers` pointers.
const fn struct_pointer(offset: u32, data: u16, pointers: u16) -> u64 {
    ((offset as u64) << 2) | ((data as u64) << 32) | ((pointers as u64) << 48)
}

/// A list pointer to the word after it (offset 0), of composite elements
/// taking no words: an empty struct list, its tag word next.
const EMPTY_STRUCT_LIST: u64 = 1 | (7 << 32);

/// The header of a return with results, as `send_return_in` builds it
/// (releaseParamCaps false, an empty cap table) with a null content
/// pointer (word 6), for content inlined behind it.
fn return_header(answer: u32, no_finish_needed: bool) -> [u64; 9] {
    [
        // Message, its union: return (@3), its pointer.
        struct_pointer(0, 1, 1),
        3,
        struct_pointer(0, 2, 1),
        // Return: answerId, releaseParamCaps (default true: false is 1),
        // noFinishNeeded, union: results (0).
        u64::from(answer) | (1 << 32) | (u64::from(no_finish_needed) << 33),
        0,
        struct_pointer(0, 0, 2),
        // Payload: content, capTable (an empty list of CapDescriptor).
        0,
        EMPTY_STRUCT_LIST,
        struct_pointer(0, 1, 1),
    ]
}

/// The header of a call with a null params content and an empty cap
/// table, as `send_call_in` builds it, for a target that is an import or a
/// question without a path (other targets: `None`), and its length in
/// words (the content pointer is the third word from the end).
fn call_header(
    question: u32,
    interface_id: u64,
    method_id: u16,
    target: &OutTarget,
    yourself: bool,
) -> Option<([u64; 17], usize)> {
    let mut w = [0u64; 17];
    // Message, its union: call (@2), its pointer.
    w[0] = struct_pointer(0, 1, 1);
    w[1] = 2;
    w[2] = struct_pointer(0, 3, 3);
    // Call: questionId, methodId, sendResultsTo (caller 0, yourself 1);
    // interfaceId; flags (all false); target (at word 9), params (after
    // the target), sendResultsTo.thirdParty (null).
    w[3] = u64::from(question) | (u64::from(method_id) << 32) | (u64::from(yourself) << 48);
    w[4] = interface_id;
    w[6] = struct_pointer(2, 1, 1);
    let payload = match target {
        OutTarget::Import(id) => {
            // MessageTarget: importedCap (union 0).
            w[9] = u64::from(*id);
            11
        }
        OutTarget::Answer { question, path } if path.is_empty() => {
            // MessageTarget: promisedAnswer (union 1), its pointer;
            // PromisedAnswer: questionId, transform (an empty list of Op).
            w[9] = 1 << 32;
            w[10] = struct_pointer(0, 1, 1);
            w[11] = u64::from(*question);
            w[12] = EMPTY_STRUCT_LIST;
            w[13] = struct_pointer(0, 1, 0);
            14
        }
        OutTarget::Answer { .. } => return None,
    };
    // Params: content, capTable.
    w[7] = struct_pointer(payload as u32 - 8, 0, 2);
    w[payload + 1] = EMPTY_STRUCT_LIST;
    w[payload + 2] = struct_pointer(0, 1, 1);
    Some((w, payload + 3))
}

/// The bytes of a header of at most 17 words (see [`call_header`]).
type HeaderBytes = [u8; 17 * 8];

/// Words as the bytes of a segment, in a buffer on the stack (words
/// beyond 17 are dropped: no header is that long).
fn words_to_bytes(words: &[u64]) -> HeaderBytes {
    let mut bytes = [0; 17 * 8];
    for (b, w) in bytes.chunks_exact_mut(8).zip(words) {
        b.copy_from_slice(&w.to_le_bytes());
    }
    bytes
}

/// The segments of a message.
type Segments<'a> = &'a [&'a [u8]];

/// A builder for a message without payload (finish, release, a bare
/// return, ...): capnp's default first segment of 1024 words would be
/// zeroed in full for a message of a few words.
fn small_message() -> Builder<HeapAllocator> {
    Builder::new(HeapAllocator::new().first_segment_words(SMALL_MESSAGE_WORDS))
}

/// First segment of [`small_message`]s; larger ones grow more segments.
const SMALL_MESSAGE_WORDS: u32 = 32;

/// What the content of an outgoing payload is given as.
enum Content<'a> {
    /// A reader: the content is copied into the call or return.
    Reader(any_pointer::Reader<'a>),
    /// The segments of a message (built here) whose root is the content,
    /// and the message itself when it may be kept until written.
    Message(&'a [&'a [u8]], Option<&'a Kept>),
}

/// Content to splice into a frame: its segments, and its message when
/// kept (see [`frame::encode_spliced_kept`]).
type Spliced<'a> = (Segments<'a>, Option<&'a Kept>);

/// The segments of a kept message.
fn kept_segments(kept: &Kept) -> KeptSegments<'_> {
    if kept.len() == 1 {
        if let Some(s) = kept.get_segment(0) {
            return KeptSegments::One([s]);
        }
    }
    KeptSegments::Many(
        (0..kept.len() as u32)
            .map_while(|i| kept.get_segment(i))
            .collect(),
    )
}

/// The segments of a kept message: one, the usual case, without
/// allocating.
enum KeptSegments<'a> {
    One([&'a [u8]; 1]),
    Many(Vec<&'a [u8]>),
}

impl<'a> KeptSegments<'a> {
    fn as_slice(&self) -> &[&'a [u8]] {
        match self {
            KeptSegments::One(s) => s,
            KeptSegments::Many(v) => v,
        }
    }
}

/// Content smaller than this (in words) is copied into its call or
/// return: the copy is cheap, and the message stays one segment.
const SPLICE_MIN_WORDS: usize = 1024;

/// Room kept in the header segment of a spliced message, beyond
/// [`PAYLOAD_HEADER_WORDS`], for a long promised-answer path.
const SPLICED_HEADER_WORDS: u64 = 96;

/// True if content with these segments (and no capabilities) goes into
/// the frame as it is, spliced or inlined, rather than through a capnp
/// copy.
fn by_reference(segments: &[&[u8]]) -> bool {
    segments.len() == 1 || splice_worthwhile(segments)
}

/// True if content with these segments is better spliced than copied.
fn splice_worthwhile(segments: &[&[u8]]) -> bool {
    frame::spliceable(segments)
        && segments.iter().map(|s| s.len() / 8).sum::<usize>() >= SPLICE_MIN_WORDS
}

/// Pointer fields from a call message's root to its params content.
const CALL_CONTENT: &[u16] = &[0, 1, 0];
/// Pointer fields from a return message's root to its results content.
const RETURN_CONTENT: &[u16] = &[0, 0, 0];

/// Words of a call or return message besides its content, with room for
/// a target or path and the cap table's list pointer.
const PAYLOAD_HEADER_WORDS: u64 = 32;

/// A builder for a call or return whose first segment is large enough
/// for the whole message, so that the content is copied once into one
/// segment (capnp's default of 1024 words is zeroed in full, and a
/// large content would go to a second, freshly allocated segment). Up to
/// [`SCRATCH_MAX_WORDS`], that segment is the start of `scratch` (grown
/// as needed, zero between uses: the builder zeroes what it used when
/// dropped), so that a call or return allocates no segment; larger ones
/// get a segment allocated for them.
fn payload_message<'s>(
    content: &Content<'_>,
    caps: usize,
    scratch: &'s mut Vec<Word>,
) -> Builder<ScratchSpaceHeapAllocator<'s>> {
    let content_words = match content {
        // (A content that cannot be measured fails when copied.)
        Content::Reader(r) => r.target_size().map_or(0, |s| s.word_count),
        // Only the header: the content goes behind it.
        Content::Message(segments, _) if caps == 0 && by_reference(segments) => {
            SPLICED_HEADER_WORDS
        }
        Content::Message(segments, _) => segments.iter().map(|s| s.len() as u64 / 8).sum(),
    };
    // A descriptor is at most 2 words plus a promised answer's path.
    let words = PAYLOAD_HEADER_WORDS
        .saturating_add(content_words)
        .saturating_add(4 * caps as u64)
        .min(1 << 24) as usize;
    let first = if words <= SCRATCH_MAX_WORDS {
        if scratch.len() < words {
            scratch.resize(words, capnp::word(0, 0, 0, 0, 0, 0, 0, 0));
        }
        words
    } else {
        0
    };
    Builder::new(
        ScratchSpaceHeapAllocator::new(Word::words_to_bytes_mut(&mut scratch[..first]))
            .second_segment_words(words as u32),
    )
}

/// Largest call or return (in words) built in a connection's scratch
/// segment; the scratch never grows beyond it.
const SCRATCH_MAX_WORDS: usize = 4096;

fn call_params<A: Allocator>(m: &mut Builder<A>) -> capnp::Result<payload::Builder<'_>> {
    match m.get_root::<rpc_message::Builder<'_>>()?.which()? {
        rpc_message::Call(c) => c?.get_params(),
        _ => Err(Error::failed("not a call".into())),
    }
}

fn return_results<A: Allocator>(m: &mut Builder<A>) -> capnp::Result<payload::Builder<'_>> {
    match m.get_root::<rpc_message::Builder<'_>>()?.which()? {
        rpc_message::Return(r) => match r?.which()? {
            return_::Results(p) => p,
            _ => Err(Error::failed("not results".into())),
        },
        _ => Err(Error::failed("not a return".into())),
    }
}

fn write_target(target: &OutTarget, mut t: message_target::Builder<'_>) {
    match target {
        OutTarget::Import(id) => t.set_imported_cap(*id),
        OutTarget::Answer { question, path } => {
            let mut pa = t.init_promised_answer();
            pa.set_question_id(*question);
            write_path(path, pa);
        }
    }
}

fn write_path(path: &[u16], pa: promised_answer::Builder<'_>) {
    let mut ops = pa.init_transform(path.len() as u32);
    for (i, f) in path.iter().enumerate() {
        ops.reborrow().get(i as u32).set_get_pointer_field(*f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_frames_match_what_capnp_builds() {
        for question in [0, 1, 255, 0x1234_5678, u32::MAX] {
            let mut m = small_message();
            {
                let mut f = m.init_root::<rpc_message::Builder<'_>>().init_finish();
                f.set_question_id(question);
                f.set_release_result_caps(false);
                f.set_require_early_cancellation_workaround(false);
            }
            let mut built = Vec::new();
            frame::encode(&m.get_segments_for_output(), &mut built);
            assert_eq!(finish_frame(question).as_slice(), built.as_slice());
        }
    }
}

#[cfg(test)]
mod header_tests {
    use super::*;

    /// Small content: a struct with a text, built here.
    fn content() -> Builder<HeapAllocator> {
        let mut m = Builder::new(HeapAllocator::new().first_segment_words(64));
        m.init_root::<crate::rpc_capnp::exception::Builder<'_>>()
            .set_reason("forty-two");
        m
    }

    /// The frame capnp's builder gives, with the content inlined.
    fn built<F>(path: &[u16], build: F) -> Vec<u8>
    where
        F: FnOnce(rpc_message::Builder<'_>),
    {
        let mut m = small_message();
        build(m.init_root());
        let c = content();
        let mut out = Vec::new();
        assert!(frame::encode_inlined(
            &m.get_segments_for_output(),
            path,
            c.get_segments_for_output()[0],
            &mut out
        ));
        out
    }

    fn direct(words: &[u64], path: &[u16]) -> Vec<u8> {
        let header = words_to_bytes(words);
        let c = content();
        let mut out = Vec::new();
        assert!(frame::encode_inlined(
            &[&header[..words.len() * 8]],
            path,
            c.get_segments_for_output()[0],
            &mut out
        ));
        out
    }

    #[test]
    fn return_headers_match_what_capnp_builds() {
        for (answer, forget) in [
            (0, false),
            (1, true),
            (0xdead_beef, false),
            (u32::MAX, true),
        ] {
            let theirs = built(RETURN_CONTENT, |m| {
                let mut r = m.init_return();
                r.set_answer_id(answer);
                r.set_release_param_caps(false);
                r.reborrow().init_results().init_cap_table(0);
                if forget {
                    r.set_no_finish_needed(true);
                }
            });
            assert_eq!(
                direct(&return_header(answer, forget), RETURN_CONTENT),
                theirs
            );
        }
    }

    #[test]
    fn call_headers_match_what_capnp_builds() {
        let targets = [
            OutTarget::Import(0),
            OutTarget::Import(77),
            OutTarget::Answer {
                question: 0,
                path: Vec::new(),
            },
            OutTarget::Answer {
                question: 123_456,
                path: Vec::new(),
            },
        ];
        for target in &targets {
            for yourself in [false, true] {
                let (q, iid, mid) = (9, 0x8f0e_1234_5678_9abc, 3);
                let theirs = built(CALL_CONTENT, |m| {
                    let mut c = m.init_call();
                    c.set_question_id(q);
                    c.set_interface_id(iid);
                    c.set_method_id(mid);
                    write_target(target, c.reborrow().init_target());
                    if yourself {
                        c.reborrow().init_send_results_to().set_yourself(());
                    } else {
                        c.reborrow().init_send_results_to().set_caller(());
                    }
                    c.init_params().init_cap_table(0);
                });
                let (words, len) = call_header(q, iid, mid, target, yourself).unwrap();
                assert_eq!(direct(&words[..len], CALL_CONTENT), theirs);
            }
        }
        let deep = OutTarget::Answer {
            question: 1,
            path: vec![0],
        };
        assert!(call_header(1, 2, 3, &deep, false).is_none());
    }
}
