//! The connection actor: one two-party RPC connection over any byte stream.
//!
//! The actor owns the sans-IO protocol core (`capnp_actix_proto::captp::Conn`)
//! and bridges it to the runtime: calls the peer makes are delivered to our
//! capabilities like any other call; calls on capabilities imported from the
//! peer (and pipelined calls on our questions to it) come here as messages
//! and go out on the wire. Everything produced while handling one message
//! or one chunk of input is written in one write.

use std::sync::{Arc, Weak};
use std::task::Poll;

use actix::{
    Actor, ActorContext, ActorFuture, ActorFutureExt, AsyncContext, Handler, Message, Recipient,
    SpawnHandle, StreamHandler, WrapFuture,
};
use capnp_actix_proto::captp::{
    CallTarget, Conn, ConnLimits, Event, InCap, InPayload, OutCap, OutContent, OutTarget,
    TableSizes,
};
use capnp_actix_proto::Limits;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::answer::{Answer, AnswerRef, Call, Completer, Outcome};
use crate::cap::{next_id, CapRef, Kind, Node};
use crate::error;
use crate::hook::{send_call, WaitOutcome};
use crate::io::{self, Input};
use crate::payload::{payload_received, Body, Payload};
use crate::registry;

/// The tables' hash maps and sets: their keys are ids (some chosen by the
/// peer), hashed with foldhash's seeded hasher, which costs a fraction of
/// the standard SipHash (that took about 7% of a server's instructions
/// per call).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Finds the bootstrap capability for a service ID (the ID's raw bytes;
/// empty when the peer sent none). The lookup may take time (a restorer
/// loading a saved service); calls the peer pipelines on the bootstrap
/// capability meanwhile wait for it.
pub type BootstrapFn =
    Arc<dyn Fn(&[u8]) -> BoxFuture<'static, Result<CapRef, capnp::Error>> + Send + Sync>;

/// A [`BootstrapFn`] from a lookup that answers at once.
pub fn bootstrap_fn(
    lookup: impl Fn(&[u8]) -> Result<CapRef, capnp::Error> + Send + Sync + 'static,
) -> BootstrapFn {
    Arc::new(move |id: &[u8]| futures::future::ready(lookup(id)).boxed())
}

/// Options of one connection.
#[derive(Clone, Default)]
pub struct ConnectionOptions {
    /// Bounds on the connection's tables.
    pub tables: ConnLimits,
    /// Limits on incoming messages.
    pub reader: Limits,
    /// What the peer gets when it asks for a bootstrap capability.
    pub bootstrap: Option<BootstrapFn>,
    /// Bytes written but not yet taken by the peer that we accept to hold;
    /// beyond, the connection is aborted (a peer that does not read).
    /// `0` means the default, 64 MiB.
    pub max_outgoing_bytes: usize,
    /// Bytes of the peer's calls (their messages) that we hold while they
    /// have not been answered; a call that would go beyond fails at once
    /// with Overloaded (one call is always accepted). `0` means the
    /// default, 64 MiB.
    pub max_held_call_bytes: usize,
    /// When a method serving the peer's call tail-calls a capability of
    /// that same peer, send the tail call with `sendResultsTo.yourself`
    /// and answer with `takeFromOtherQuestion`, so the results go straight
    /// from the callee to the caller. Off by default: the capnp-rpc crate
    /// (0.27) accepts such a call but never runs it (see
    /// tests/tail_calls.rs). Tail calls are zero-copy locally either way.
    pub send_results_to_yourself: bool,
}

/// How long the writer may go on after the connection ended.
const WRITER_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The largest write buffer kept for reuse once written.
const MAX_SPARE_BYTES: usize = 4 << 20;

/// Default of [`ConnectionOptions::max_outgoing_bytes`].
pub const DEFAULT_MAX_OUTGOING_BYTES: usize = 64 << 20;

/// Default of [`ConnectionOptions::max_held_call_bytes`].
pub const DEFAULT_MAX_HELD_CALL_BYTES: usize = 64 << 20;

impl std::fmt::Debug for ConnectionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionOptions")
            .field("tables", &self.tables)
            .field("reader", &self.reader)
            .field("bootstrap", &self.bootstrap.is_some())
            .finish()
    }
}

/// Where a call of ours goes on the wire.
pub(crate) enum RemoteTarget {
    /// A capability the peer exported to us.
    Import(u32),
    /// A field of the answer to one of our questions.
    Answer { answer: Arc<Answer>, path: Vec<u16> },
}

/// What the rest of the runtime tells a connection.
pub(crate) enum ConnMsg {
    Call {
        target: RemoteTarget,
        call: Call,
    },
    /// The node holding an import was dropped.
    Release {
        import: u32,
        node: u64,
    },
    /// The callers gave up on the answer to one of our questions.
    Cancel {
        answer: Weak<Answer>,
    },
    /// Starts the embargo on an import the peer resolved to one of ours
    /// (see `resolve_import`).
    EmbargoImport {
        import: u32,
        resolver: crate::promise::Resolver,
        target: CapRef,
    },
    /// Reflects the peer's disembargo `embargo` now, naming `target` (see
    /// `Event::Loopback`): it goes out after every call this mailbox held
    /// when it was queued.
    Reflect {
        embargo: u32,
        target: OutTarget,
    },
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

/// Asks the peer for its bootstrap capability.
pub(crate) struct BootstrapMsg {
    object_id: Vec<u8>,
    completer: Completer,
}

impl Message for BootstrapMsg {
    type Result = ();
}

/// Ends a connection from this side.
pub(crate) struct Close(capnp::Error);

impl Message for Close {
    type Result = ();
}

impl Handler<Close> for Connection {
    type Result = ();
    fn handle(&mut self, Close(reason): Close, ctx: &mut Self::Context) {
        self.core.abort(reason);
        self.settle(ctx);
    }
}

/// Asks for a connection's table sizes and a dump.
pub struct Inspect;

impl Message for Inspect {
    type Result = (TableSizes, String);
}

/// A handle to a connection actor.
#[derive(Clone)]
pub struct ConnectionHandle {
    addr: actix::Addr<Connection>,
    closed: futures::future::Shared<futures::channel::oneshot::Receiver<capnp::Error>>,
    id: u64,
}

impl std::fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnectionHandle")
    }
}

impl ConnectionHandle {
    /// The peer's bootstrap capability for `service_id` (empty: the
    /// default service). Usable at once: calls made on it are pipelined.
    pub fn bootstrap(&self, service_id: &[u8]) -> CapRef {
        let (answer, completer) = Answer::open();
        if let Some(a) = completer.answer() {
            a.set_remote(self.addr.clone().recipient(), u64::MAX);
        }
        self.addr.do_send(BootstrapMsg {
            object_id: service_id.to_vec(),
            completer,
        });
        answer.pipelined_cap(Vec::new())
    }

    /// The sizes of the connection's tables and a dump of them (for tests
    /// and debugging). `None` once the connection has ended.
    pub async fn inspect(&self) -> Option<(TableSizes, String)> {
        self.addr.send(Inspect).await.ok()
    }

    /// Ends the connection: the peer gets an `abort` with `reason`, and
    /// every capability imported over it breaks.
    pub fn close(&self, reason: &str) {
        self.addr
            .do_send(Close(capnp::Error::disconnected(reason.to_string())));
    }

    /// True while the connection actor runs.
    pub fn is_open(&self) -> bool {
        self.addr.connected()
    }

    /// Resolves when the connection has ended, with the reason.
    pub fn closed(&self) -> impl std::future::Future<Output = capnp::Error> + Send + 'static {
        let closed = self.closed.clone();
        async move {
            closed
                .await
                .unwrap_or_else(|_| capnp::Error::disconnected("connection closed".into()))
        }
    }

    /// The connection's identifier, unique within the process.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// Starts a connection actor on the current arbiter for `stream`.
pub fn start_connection<S>(stream: S, options: ConnectionOptions) -> ConnectionHandle
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (read, write) = tokio::io::split(stream);
    let max_outgoing = match options.max_outgoing_bytes {
        0 => DEFAULT_MAX_OUTGOING_BYTES,
        n => n,
    };
    let max_held = match options.max_held_call_bytes {
        0 => DEFAULT_MAX_HELD_CALL_BYTES,
        n => n,
    };
    let (closed_tx, closed_rx) = futures::channel::oneshot::channel();
    let id = next_id();
    let addr = Connection::create(move |ctx| {
        ctx.add_stream(io::FrameReader::new(read, options.reader));
        ctx.spawn(Flush);
        Connection {
            id,
            closed: Some(closed_tx),
            core: Conn::new(options.tables, options.reader),
            writer: Some(io::Writer::new(Box::new(write))),
            flush: None,
            max_outgoing,
            held: HashMap::default(),
            held_bytes: 0,
            max_held,
            results_to_yourself: options.send_results_to_yourself,
            bootstrap: options.bootstrap,
            me: ctx.address().recipient(),
            questions: HashMap::default(),
            question_of: HashMap::default(),
            answers: HashMap::default(),
            imports: HashMap::default(),
            pipelined: HashMap::default(),
            embargoes: HashMap::default(),
            tail_calls: HashSet::default(),
            _guard: registry::ActorGuard::new(),
        }
    });
    ConnectionHandle {
        addr,
        closed: closed_rx.shared(),
        id,
    }
}

/// The connection's writing: polled in every turn of the actor, it writes
/// what the turn produced (see [`Connection::flush_output`]).
struct Flush;

impl ActorFuture<Connection> for Flush {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        act: &mut Connection,
        ctx: &mut actix::Context<Connection>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        if !act.flush.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            act.flush = Some(cx.waker().clone());
        }
        act.flush_output(ctx, cx)
    }
}

/// See the module docs.
pub struct Connection {
    id: u64,
    core: Conn<CapRef>,
    /// Writes what the core produces, at the end of each turn of the
    /// actor ([`Flush`]); handed to a task of its own when the connection
    /// ends ([`Connection::release_writer`]).
    writer: Option<io::Writer>,
    /// Wakes the actor for [`Flush`] to write new output.
    flush: Option<std::task::Waker>,
    max_outgoing: usize,
    /// Sizes of the peer's calls not answered yet, and their sum.
    held: HashMap<u32, usize>,
    held_bytes: usize,
    max_held: usize,
    /// See [`ConnectionOptions::send_results_to_yourself`].
    results_to_yourself: bool,
    bootstrap: Option<BootstrapFn>,
    me: Recipient<ConnMsg>,
    /// Our questions: who waits for the answer.
    questions: HashMap<u32, (Completer, Option<Arc<Answer>>)>,
    /// Question id by answer identity.
    question_of: HashMap<usize, u32>,
    /// The peer's questions: our answers, and the future sending each return.
    answers: HashMap<u32, (AnswerRef, Option<SpawnHandle>)>,
    /// Imports and the node that holds each.
    imports: HashMap<u32, (Weak<Node>, u64)>,
    /// Fields of each outstanding question that calls were pipelined on.
    pipelined: HashMap<u32, Vec<Vec<u16>>>,
    /// Our embargoes, by id.
    embargoes: HashMap<u32, Embargo>,
    /// Our questions sent as tail calls (`sendResultsTo.yourself`).
    tail_calls: HashSet<u32>,
    /// Told why the connection ended, when it does.
    closed: Option<futures::channel::oneshot::Sender<capnp::Error>>,
    /// Last: see `ActorGuard`.
    _guard: registry::ActorGuard,
}

impl Actor for Connection {
    type Context = actix::Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.release_writer();
        if let Some(tx) = self.closed.take() {
            let reason = self
                .core
                .aborted()
                .cloned()
                .unwrap_or_else(|| capnp::Error::disconnected("connection closed".into()));
            let _ = tx.send(reason);
        }
    }
}

fn key(a: &Arc<Answer>) -> usize {
    Arc::as_ptr(a) as usize
}

/// What field `path` of an answered question is.
fn field_of(answer: &Arc<Answer>, path: &[u16]) -> CapRef {
    answer
        .field_now(path)
        .unwrap_or_else(|| CapRef::broken(error::internal("pipelined call on an unknown question")))
}

/// An embargo of ours, lifted when the peer reflects its disembargo.
enum Embargo {
    /// Calls on one field of an answered question, held.
    Field {
        answer: Arc<Answer>,
        path: Vec<u16>,
        held: Vec<Call>,
    },
    /// An import the peer resolved to one of our capabilities: calls on it
    /// wait in a local promise, resolved to `target` once the calls made
    /// before the resolution have come back through the peer.
    Import {
        resolver: crate::promise::Resolver,
        target: CapRef,
    },
}

impl Connection {
    /// Handles the core's events; what the core produced is written at
    /// the end of the actor's turn ([`Flush`]), so that everything
    /// produced while handling one batch of input goes out in one write.
    fn settle(&mut self, ctx: &mut actix::Context<Self>) {
        while let Some(event) = self.core.next_event() {
            self.on_event(event, ctx);
        }
        if self.core.aborted().is_some() {
            self.release_writer();
            ctx.stop();
        } else if self.core.has_output() {
            if let Some(flush) = &self.flush {
                flush.wake_by_ref();
            }
        }
    }

    /// Queues the core's output and writes what the stream takes now.
    fn flush_output(
        &mut self,
        ctx: &mut actix::Context<Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Poll::Ready(());
        };
        if self.core.has_output() {
            let out = self.core.take_output_pieces();
            if writer.queued() + out.len() > self.max_outgoing && self.core.aborted().is_none() {
                // Only the abort itself goes out.
                drop(out);
                self.core.abort(capnp::Error::overloaded(format!(
                    "the peer is not reading: more than {} bytes wait to be written",
                    self.max_outgoing
                )));
                self.settle(ctx);
                return Poll::Ready(());
            }
            writer.push(out);
        }
        let core = &mut self.core;
        let written = writer.poll_write(cx, |buffer| {
            if buffer.capacity() <= MAX_SPARE_BYTES {
                core.recycle_output(buffer);
            }
        });
        match written {
            Poll::Ready(Err(e)) => {
                self.writer = None;
                self.core.disconnected(capnp::Error::disconnected(format!(
                    "connection write failed: {e}"
                )));
                self.settle(ctx);
                Poll::Ready(())
            }
            _ => Poll::Pending,
        }
    }

    /// Hands the writer, with what is left to write (the abort, if any),
    /// to a task of its own that has a moment to finish and shut the
    /// stream down (so that a peer that does not read cannot hold the
    /// socket and its bytes).
    fn release_writer(&mut self) {
        if let Some(mut writer) = self.writer.take() {
            writer.push(self.core.take_output_pieces());
            actix_rt::spawn(async move {
                let _ = tokio::time::timeout(WRITER_GRACE, writer.finish()).await;
            });
        }
    }

    fn on_event(&mut self, event: Event<CapRef>, ctx: &mut actix::Context<Self>) {
        match event {
            Event::Bootstrap { answer, object_id } => {
                let mut found = match &self.bootstrap {
                    Some(b) => b(&object_id),
                    None => futures::future::ready(Err(capnp::Error::failed(
                        "this vat offers no bootstrap capability".into(),
                    )))
                    .boxed(),
                };
                // The answer is kept like any other, so that calls the peer
                // pipelines on it reach the capability (or get the error).
                let (answer_ref, completer) = Answer::open();
                let complete = move |found: Result<CapRef, capnp::Error>| match found {
                    Ok(cap) => completer.complete_payload(Payload::built(
                        capnp_actix_proto::content::cap_root_message(),
                        vec![Some(cap)],
                    )),
                    Err(e) => completer.complete(Err(e)),
                };
                match (&mut found).now_or_never() {
                    Some(found) => {
                        complete(found);
                        let outcome = answer_ref.shared().resolution_now();
                        self.answers.insert(answer, (answer_ref, None));
                        if let Some(o) = outcome {
                            self.send_return(answer, o);
                        }
                    }
                    None => {
                        // Dropped with the connection (or on the peer's
                        // finish): the lookup itself may go on elsewhere.
                        let handle = ctx.spawn(actix::fut::wrap_future(found).map(
                            move |found, act: &mut Self, ctx| {
                                complete(found);
                                let outcome = act.answers.get_mut(&answer).and_then(|entry| {
                                    entry.1 = None;
                                    entry.0.shared().resolution_now()
                                });
                                if let Some(o) = outcome {
                                    act.send_return(answer, o);
                                }
                                act.settle(ctx);
                            },
                        ));
                        self.answers.insert(answer, (answer_ref, Some(handle)));
                    }
                }
            }
            Event::Call {
                answer,
                target,
                interface_id,
                method_id,
                params,
            } => {
                let target = match target {
                    CallTarget::Local(c) => c,
                    CallTarget::Answer { answer: a, path } => match self.answers.get(&a) {
                        Some((r, _)) => r.pipelined_cap(path),
                        None => CapRef::broken(error::internal("pipelined on a forgotten answer")),
                    },
                };
                let bytes = params.message_words().saturating_mul(8);
                if !self.held.is_empty() && self.held_bytes.saturating_add(bytes) > self.max_held {
                    drop(params);
                    return self.fail_answer(
                        answer,
                        capnp::Error::overloaded(format!(
                            "too many bytes of calls waiting for an answer on this connection \
                             (at most {})",
                            self.max_held
                        )),
                    );
                }
                let payload = match self.in_payload(params) {
                    Ok(p) => p,
                    Err(e) => return self.fail_answer(answer, e),
                };
                self.held.insert(answer, bytes);
                self.held_bytes += bytes;
                let answer_ref = send_call(&target, interface_id, method_id, payload);
                if self.results_to_yourself {
                    answer_ref
                        .shared()
                        .set_origin(self.me.clone(), self.id, answer);
                }
                let waiter = WaitOutcome {
                    answer: answer_ref.clone(),
                };
                let handle = ctx.spawn(waiter.into_actor(self).map(move |outcome, act, ctx| {
                    if let Some(entry) = act.answers.get_mut(&answer) {
                        entry.1 = None;
                    }
                    act.send_return(answer, outcome);
                    act.settle(ctx);
                }));
                self.answers.insert(answer, (answer_ref, Some(handle)));
            }
            Event::Cancel {
                answer,
                not_before_start,
            } => {
                let waiting = self
                    .answers
                    .get(&answer)
                    .filter(|_| not_before_start)
                    .map(|(r, _)| r.shared().when_started());
                match waiting {
                    // Let it start first (an older peer may count on its
                    // delivery), then cancel what is still running.
                    Some(started) => {
                        ctx.spawn(actix::fut::wrap_future(started).map(
                            move |(), act: &mut Self, ctx| {
                                act.cancel_answer(answer, ctx);
                                act.settle(ctx);
                            },
                        ));
                    }
                    None => self.cancel_answer(answer, ctx),
                }
            }
            // The core has answered it already.
            Event::CallFailed { answer, error } => self.keep_failed(answer, error),
            Event::Finished { answer } => {
                self.unhold(answer);
                // (A handle left means the answer was given by a tail call
                // and its own outcome never came: stop waiting for it.)
                if let Some((r, h)) = self.answers.remove(&answer) {
                    r.shared().clear_origin();
                    if let Some(h) = h {
                        ctx.cancel_future(h);
                    }
                }
            }
            Event::Return { question, .. } if self.tail_calls.contains(&question) => {
                // `resultsSentElsewhere` for our tail call: the peer keeps the
                // results for its own question; calls pipelined on ours go
                // on to it until we finish.
            }
            Event::Return { question, result } => {
                let pipelined = self.pipelined.remove(&question).unwrap_or_default();
                if let Some((completer, a)) = self.questions.remove(&question) {
                    if let Some(a) = &a {
                        self.question_of.remove(&key(a));
                    }
                    // Which capabilities the peer named as ours (an export of
                    // ours, or a field of one of our answers); only asked
                    // about fields calls were pipelined on.
                    let ours: Vec<bool> = match &result {
                        Ok(p) if !pipelined.is_empty() => p
                            .caps
                            .iter()
                            .map(|c| matches!(c, InCap::Local(_) | InCap::Answer { .. }))
                            .collect(),
                        _ => Vec::new(),
                    };
                    match result.and_then(|p| self.in_payload(p)) {
                        Ok(p) => {
                            if let Some(a) = &a {
                                self.embargo_local_fields(question, a, &p, pipelined, &ours);
                            }
                            completer.complete_payload(p)
                        }
                        Err(e) => completer.complete(Err(e)),
                    }
                }
            }
            Event::ReturnTakeFrom { question, answer } => {
                // A tail call the peer made on our behalf: our question's
                // answer is that of a call it made on us (which we kept).
                let pipelined = self.pipelined.remove(&question).unwrap_or_default();
                if let Some((completer, a)) = self.questions.remove(&question) {
                    if let Some(a) = &a {
                        self.question_of.remove(&key(a));
                    }
                    match (self.answers.get(&answer).map(|(r, _)| r.clone()), a) {
                        (Some(source), Some(a)) => {
                            // Every field calls were pipelined on over the
                            // wire is now one of ours: those calls come back
                            // through the peer, so later ones wait for them.
                            for path in pipelined {
                                self.embargo_field(question, &a, path);
                            }
                            a.forward_to(source);
                            drop(completer);
                        }
                        (Some(source), None) => {
                            ctx.spawn(
                                WaitOutcome { answer: source }
                                    .into_actor(self)
                                    .map(move |outcome, _, _| completer.complete(outcome)),
                            );
                        }
                        (None, _) => {
                            completer.complete(Err(error::internal("tail call source forgotten")))
                        }
                    }
                }
            }
            Event::EmbargoLifted { embargo } => match self.embargoes.remove(&embargo) {
                Some(Embargo::Field { answer, path, held }) => {
                    let target = field_of(&answer, &path);
                    for call in held {
                        target.deliver(call);
                    }
                    answer.lift_embargo(&path);
                }
                Some(Embargo::Import { resolver, target }) => resolver.resolve_to(target),
                None => {}
            },
            Event::Resolve { import, to } => match to {
                Ok(c) => self.resolve_import(import, c),
                // An error needs no embargo: the import is broken from now on.
                Err(e) => self.break_import(import, e),
            },
            Event::Loopback { embargo, target } => {
                let resolved = match &target {
                    CallTarget::Answer { answer, path } => self
                        .answers
                        .get(answer)
                        .and_then(|(r, _)| r.shared().field_now(path)),
                    CallTarget::Local(c) => Some(c.clone()),
                };
                // The peer's own capability, or a field of one of our
                // questions to the peer, somewhere along the chain of
                // resolutions (not necessarily at its end: what the peer
                // embargoed is the step it knows of).
                let back_to_sender = resolved
                    .as_ref()
                    .is_some_and(|c| self.leads_back_to_peer(c));
                if !back_to_sender {
                    // It did when the peer sent it (a question of ours it
                    // named has returned since, or a promise resolved):
                    // every call the peer sent that way before has been
                    // handed on by now, so reflect it after them, through
                    // our own mailbox.
                    tracing::debug!(
                        conn = self.id,
                        embargo,
                        "disembargo target no longer leads back to the peer; reflected at once"
                    );
                    let target = self.reflection_target(&target);
                    self.me.do_send(ConnMsg::Reflect { embargo, target });
                    return;
                }
                // Reflect it along the path calls on the target take
                // (through any queue on our side), so that it goes out
                // after every call the peer sent before it. If the path
                // no longer ends at the peer when the marker gets there
                // (the field it went through has been answered since with
                // something else, say), the marker is dropped there, after
                // the calls before it: then reflect it from here.
                let (mark, completer) = Answer::open();
                let reply = self.reflection_target(&target);
                ctx.spawn(WaitOutcome { answer: mark }.into_actor(self).map(
                    move |outcome, act, _| {
                        if outcome.is_err() {
                            act.core.disembargo_reply_to(embargo, &reply);
                        }
                    },
                ));
                let marker = Call {
                    interface_id: 0,
                    method_id: 0,
                    params: Payload::empty(),
                    completer,
                    marker: Some((self.id, embargo)),
                };
                match target {
                    CallTarget::Answer { answer, path } => {
                        if let Some((r, _)) = self.answers.get(&answer) {
                            r.deliver_pipelined(&path, marker);
                        }
                    }
                    CallTarget::Local(c) => c.deliver(marker),
                }
            }
            Event::ExportedPromise { export, cap } => {
                let settled = cap.settled_weak();
                let promise = cap.downgrade();
                drop(cap);
                ctx.spawn(
                    actix::fut::wrap_future(settled).map(move |end, act: &mut Self, ctx| {
                        // Released before it settled: the core sends nothing.
                        let to = match end {
                            Some(end) => match act.out_cap(Some(&end)) {
                                OutCap::Promise(_) => OutCap::Broken(error::internal(
                                    "a settled promise is still a promise",
                                )),
                                to => to,
                            },
                            None => return,
                        };
                        // The export id may name another promise by now.
                        if let Some(promise) = promise.upgrade() {
                            act.core.resolve_export(export, &promise, to);
                        }
                        act.settle(ctx);
                    }),
                );
            }
            Event::Aborted(e) => {
                tracing::debug!(conn = self.id, "connection ended: {e}");
                for (_, (c, _)) in self.questions.drain() {
                    c.complete(Err(e.clone()));
                }
                self.question_of.clear();
                self.held.clear();
                self.held_bytes = 0;
                for (_, (_, h)) in self.answers.drain() {
                    if let Some(h) = h {
                        ctx.cancel_future(h);
                    }
                }
                for id in self.imports.keys().copied().collect::<Vec<_>>() {
                    self.break_import(id, e.clone());
                }
                self.imports.clear();
                self.pipelined.clear();
                self.tail_calls.clear();
                for (_, emb) in self.embargoes.drain() {
                    match emb {
                        Embargo::Field { held, answer, path } => {
                            for call in held {
                                call.fail(e.clone());
                            }
                            // Nothing is kept in order any more.
                            answer.lift_embargo(&path);
                        }
                        Embargo::Import { resolver, .. } => resolver.reject(e.clone()),
                    }
                }
            }
        }
    }

    /// After a return: a field that calls were pipelined on over the wire
    /// and that turns out not to be the peer's (one of our own objects, or
    /// one on another connection) gets an embargo, so that calls made on it
    /// from now on wait for those still coming back through the peer.
    fn embargo_local_fields(
        &mut self,
        question: u32,
        answer: &Arc<Answer>,
        results: &Payload,
        pipelined: Vec<Vec<u16>>,
        ours: &[bool],
    ) {
        for path in pipelined {
            // Judged as the peer named it: one of its capabilities means
            // the calls pipelined on it stay with the peer (if the peer
            // later resolves it to one of ours, the import's own embargo
            // takes care of them); one of ours (an export, or one of our
            // answers), even if it has resolved back to the peer since,
            // means they come back through us.
            // (A field of one of our answers that is answered already is
            // what it resolved to, which may be the peer's: judged by the
            // descriptor.)
            let field = results.cap_at(&path);
            let named_ours = results
                .caps
                .iter()
                .zip(ours)
                .any(|(c, &o)| o && c.as_ref() == Some(&field));
            let theirs = !named_ours
                && matches!(field.kind(), Kind::Remote { conn_id, .. } if *conn_id == self.id);
            if theirs {
                if let Some(settle) = &field.node.settle {
                    settle.mark_called();
                }
            }
            if theirs || matches!(field.shortened().kind(), Kind::Broken(_)) {
                continue;
            }
            self.embargo_field(question, answer, path);
        }
    }

    /// Puts field `path` of our answered question under an embargo: asks
    /// the peer to reflect a disembargo along the path the calls pipelined
    /// on it took, and holds calls made on it until the reflection comes.
    fn embargo_field(&mut self, question: u32, answer: &Arc<Answer>, path: Vec<u16>) {
        if let Some(id) = self.core.disembargo_request(question, &path) {
            answer.embargo(&path);
            self.embargoes.insert(
                id,
                Embargo::Field {
                    answer: answer.clone(),
                    path,
                    held: Vec::new(),
                },
            );
        }
    }

    /// What a disembargo reflected from here names: what the peer's
    /// disembargo named (a receiverLoopback's target is not read, its id
    /// is).
    fn reflection_target(&self, target: &CallTarget<CapRef>) -> OutTarget {
        match target {
            CallTarget::Answer { answer, path } => OutTarget::Answer {
                question: *answer,
                path: path.clone(),
            },
            CallTarget::Local(c) => OutTarget::Import(self.core.export_id(c).unwrap_or(0)),
        }
    }

    /// The peer resolved one of its promises we import (path shortening).
    /// To another of its capabilities: calls go there directly from now on
    /// (they stay on this connection, behind the earlier ones). To one of
    /// ours (or anything that goes through us, even if it leads back to the
    /// peer: the Tribble race of rpc.capnp): calls made before are still
    /// coming back through the peer, so later ones wait in a local promise
    /// until a disembargo has made the round trip.
    fn resolve_import(&mut self, import: u32, to: InCap<CapRef>) {
        let through_us = !matches!(to, InCap::Import { .. });
        let Some(target) = self.in_cap(to) else {
            return self.break_import(
                import,
                capnp::Error::failed("the peer resolved a promise to nothing".into()),
            );
        };
        let Some(node) = self.imports.get(&import).and_then(|(w, _)| w.upgrade()) else {
            // Released already: nobody can call it any more.
            return;
        };
        let Some(settle) = node.settle.as_ref() else {
            return;
        };
        if target.node.settle.is_some() && Arc::ptr_eq(&target.node, &node) {
            return;
        }
        if !through_us && settle.was_called() {
            // Calls sent to this import are on their way to what it became:
            // if that later resolves to one of ours, they count.
            if let Some(t) = &target.node.settle {
                t.mark_called();
            }
        }
        if !through_us || matches!(target.kind(), Kind::Broken(_)) || !settle.was_called() {
            // No embargo: the path stays on this connection, or the import
            // is broken, or no call of ours went to it over the wire (so
            // none can be on its way back through the peer).
            return settle.settle(target);
        }
        // Calls on the import wait from now on; the disembargo itself goes
        // out through our own mailbox, behind any call we are still
        // forwarding to this import from the same read (calls the peer sent
        // us for it), so that it follows them on the wire.
        let (promise, resolver) = crate::promise::new_promise();
        settle.settle(promise);
        self.me.do_send(ConnMsg::EmbargoImport {
            import,
            resolver,
            target,
        });
    }

    /// Breaks the node of an import (its watchers fire, calls fail).
    fn break_import(&mut self, import: u32, e: capnp::Error) {
        let node = self.imports.get(&import).and_then(|(w, _)| w.upgrade());
        if let Some(settle) = node.as_ref().and_then(|n| n.settle.as_ref()) {
            settle.settle(CapRef::broken(e));
        }
    }

    /// Answers the peer's call `answer` with `error` before it ran (see
    /// [`Connection::keep_failed`]).
    fn fail_answer(&mut self, answer: u32, error: capnp::Error) {
        self.keep_failed(answer, error.clone());
        self.core.return_error(answer, error);
    }

    /// Keeps `error` as the outcome of the peer's call `answer`, which
    /// failed before it ran, like any answer's until the peer finishes it:
    /// the peer may still name the answer. A call pipelined on it, or a
    /// field of it passed back as `receiverAnswer`, is then a broken
    /// capability with this error; a peer that asked for
    /// `sendResultsTo.yourself` takes it from there
    /// (`takeFromOtherQuestion`).
    fn keep_failed(&mut self, answer: u32, error: capnp::Error) {
        let (kept, completer) = Answer::open();
        completer.complete(Err(error));
        self.answers.insert(answer, (kept, None));
    }

    /// Sends the return for one of the peer's questions.
    /// The peer no longer wants an answer: stop waiting for it (its call
    /// is cancelled unless something else holds it) and say `canceled`.
    fn cancel_answer(&mut self, answer: u32, ctx: &mut actix::Context<Self>) {
        self.unhold(answer);
        if let Some((r, h)) = self.answers.remove(&answer) {
            r.shared().clear_origin();
            if let Some(h) = h {
                ctx.cancel_future(h);
            }
            drop(r);
        }
        self.core.return_canceled(answer);
    }

    /// True if `cap`, or what it resolves to step by step, is a capability
    /// of the peer on this connection (an import, or a field of one of our
    /// questions to it).
    fn leads_back_to_peer(&self, cap: &CapRef) -> bool {
        let mut cur = cap.clone();
        for _ in 0..64 {
            match cur.kind() {
                Kind::Remote { conn_id, .. } if *conn_id == self.id => return true,
                Kind::Pipelined { answer, .. }
                    if answer
                        .shared()
                        .is_some_and(|a| self.question_of.contains_key(&key(&a))) =>
                {
                    return true
                }
                _ => {}
            }
            match cur.resolved() {
                Some(next) => cur = next,
                None => return false,
            }
        }
        false
    }

    /// A call of the peer's is answered (or cancelled): its bytes no
    /// longer count against the budget.
    fn unhold(&mut self, answer: u32) {
        if let Some(bytes) = self.held.remove(&answer) {
            self.held_bytes = self.held_bytes.saturating_sub(bytes);
        }
    }

    fn send_return(&mut self, answer: u32, outcome: Outcome) {
        self.unhold(answer);
        match outcome {
            Ok(frozen) => {
                // A field under an embargo goes out as the promise of it.
                let held = match self.answers.get(&answer) {
                    Some((r, _)) => r.embargoed_fields(),
                    None => Vec::new(),
                };
                let caps: Vec<OutCap<CapRef>> = frozen
                    .caps
                    .iter()
                    .map(|c| {
                        let promise = c
                            .as_ref()
                            .and_then(|c| held.iter().find(|(end, _)| end == c));
                        match promise {
                            Some((_, p)) => self.out_cap(Some(p)),
                            None => self.out_cap(c.as_ref()),
                        }
                    })
                    .collect();
                if let Some(kept) = frozen.kept() {
                    return self
                        .core
                        .return_results(answer, OutContent::Kept(kept), &caps);
                }
                match frozen.raw_root() {
                    Ok(root) => self.core.return_results(answer, root, &caps),
                    Err(e) => self.core.return_error(answer, e),
                }
            }
            Err(e) => self.core.return_error(answer, e),
        }
    }

    /// How a capability of a payload we send is described to the peer.
    fn out_cap(&self, cap: Option<&CapRef>) -> OutCap<CapRef> {
        let Some(cap) = cap else {
            return OutCap::None;
        };
        let end = cap.shortened();
        match end.kind() {
            Kind::Remote {
                conn_id, import, ..
            } if *conn_id == self.id => OutCap::Import(*import),
            Kind::Pipelined { answer, path } => {
                match answer.shared().and_then(|a| self.question_of.get(&key(&a))) {
                    Some(&question) => OutCap::Answer {
                        question,
                        path: path.clone(),
                    },
                    // Not settled yet: the peer learns what it becomes from a
                    // `resolve`, and can then shorten its path.
                    None => OutCap::Promise(end),
                }
            }
            Kind::Broken(e) => OutCap::Broken(e.clone()),
            Kind::Promise(_) => OutCap::Promise(end),
            _ => OutCap::Local(cap.clone()),
        }
    }

    /// Our handle for a capability of a payload the peer sent.
    fn in_cap(&mut self, cap: InCap<CapRef>) -> Option<CapRef> {
        match cap {
            InCap::None => None,
            InCap::Broken(e) => Some(CapRef::broken(e)),
            InCap::Local(c) => Some(c),
            // The core has checked that the answer is live; every live
            // answer is here, failed ones too (see `keep_failed`). Should one
            // be missing all the same, the slot is a broken capability, not
            // a null one, which would make the whole message unreadable.
            InCap::Answer { answer, path } => Some(match self.answers.get(&answer) {
                Some((r, _)) => r.pipelined_cap(path),
                None => CapRef::broken(error::internal("a capability names a forgotten answer")),
            }),
            InCap::Import { id, .. } => {
                if let Some(node) = self.imports.get(&id).and_then(|(w, _)| w.upgrade()) {
                    return Some(CapRef { node });
                }
                // New, or its node is going away (its release will find the
                // new node in charge and do nothing): the new node now holds
                // every reference counted so far.
                let cap = CapRef::from_kind(Kind::Remote {
                    conn: self.me.clone(),
                    conn_id: self.id,
                    import: id,
                });
                self.imports
                    .insert(id, (Arc::downgrade(&cap.node), cap.id()));
                Some(cap)
            }
        }
    }

    fn in_payload(&mut self, p: InPayload<CapRef>) -> Result<Payload, capnp::Error> {
        let caps: Vec<Option<CapRef>> =
            p.caps.clone().into_iter().map(|c| self.in_cap(c)).collect();
        let (content, _, size) = p.into_in_place()?;
        payload_received(content, caps, size)
    }

    fn send_call(&mut self, target: RemoteTarget, call: Call) {
        let out_target = match target {
            RemoteTarget::Import(id) => OutTarget::Import(id),
            RemoteTarget::Answer { answer, path } => match self.question_of.get(&key(&answer)) {
                Some(&question) if call.marker.is_some() => OutTarget::Answer { question, path },
                Some(&question) => {
                    self.pipelined
                        .entry(question)
                        .or_default()
                        .retain(|p| *p != path);
                    self.pipelined
                        .entry(question)
                        .or_default()
                        .push(path.clone());
                    OutTarget::Answer { question, path }
                }
                None => {
                    if let Some(e) = self.embargoes.values_mut().find_map(|e| match e {
                        Embargo::Field {
                            answer: a,
                            path: p,
                            held,
                        } if Arc::ptr_eq(a, &answer) && *p == path => Some(held),
                        _ => None,
                    }) {
                        // Held until the calls sent before the return are through.
                        e.push(call);
                        return;
                    }
                    // Not a question (any more): the call is served here,
                    // so its own answer is not a question either.
                    if let Some(a) = call.completer.answer() {
                        a.clear_remote();
                    }
                    return match answer.field_now(&path) {
                        // The return has arrived: the field is known here.
                        Some(target) => self.deliver_now(target, call),
                        // A call that was served here after all (see above)
                        // and has not answered yet: wait with the others.
                        None => {
                            answer.clear_remote();
                            answer.deliver_pipelined(&path, call)
                        }
                    };
                }
            },
        };
        if let Some((conn_id, embargo)) = call.marker {
            // A disembargo marker has come through every earlier call on
            // its target, which is our peer's: reflect it there.
            // (From another connection, the marker is dropped: the calls
            // before it are queued here, and its own connection reflects it.)
            if conn_id == self.id {
                self.core.disembargo_reply_to(embargo, &out_target);
                call.completer.complete_payload(Payload::empty());
            }
            return;
        }
        let Call {
            interface_id,
            method_id,
            params,
            completer,
            ..
        } = call;
        if completer.is_cancelled() {
            return completer.complete(Err(error::cancelled()));
        }
        // Going out on the wire counts as started.
        completer.mark_started();
        let caps: Vec<OutCap<CapRef>> = params
            .caps
            .iter()
            .map(|c| self.out_cap(c.as_ref()))
            .collect();
        let sent = match params.body {
            // Kept until written, when its content is spliced.
            Body::Built(m) => self.core.call(
                &out_target,
                interface_id,
                method_id,
                OutContent::Kept(Arc::new(m)),
                &caps,
            ),
            body @ Body::Received(_) => body.root().and_then(|root| {
                self.core
                    .call(&out_target, interface_id, method_id, root, &caps)
            }),
        };
        match sent {
            Ok(q) => self.register_question(q, completer),
            Err(e) => completer.complete(Err(e)),
        }
    }

    /// Delivers a call whose target we just learnt, in this turn. A target
    /// that is one of the peer's capabilities on this connection is sent
    /// at once rather than through our own mailbox again: calls pipelined
    /// on this call's answer may already be behind it in the mailbox, and
    /// they must find it asked (so that they go out as promised-answer
    /// calls, not wait for its return).
    fn deliver_now(&mut self, target: CapRef, call: Call) {
        if let Kind::Remote {
            conn_id, import, ..
        } = target.kind()
        {
            if *conn_id == self.id && target.resolved().is_none() {
                if let (Some(settle), None) = (&target.node.settle, call.marker) {
                    settle.mark_called();
                }
                return self.send_call(RemoteTarget::Import(*import), call);
            }
        }
        target.deliver(call)
    }

    /// See [`ConnMsg::TailCall`]. If the answer is no longer pending (the
    /// peer cancelled it), the call goes out as an ordinary one.
    fn send_tail_call(&mut self, answer: u32, import: u32, call: Call) {
        let Call {
            interface_id,
            method_id,
            params,
            completer,
            ..
        } = call;
        completer.mark_started();
        let caps: Vec<OutCap<CapRef>> = params
            .caps
            .iter()
            .map(|c| self.out_cap(c.as_ref()))
            .collect();
        let target = OutTarget::Import(import);
        let sent = params.raw_root().and_then(|root| {
            match self
                .core
                .tail_call(answer, &target, interface_id, method_id, root, &caps)
            {
                Ok(q) => Ok((q, true)),
                Err(_) => self
                    .core
                    .call(&target, interface_id, method_id, root, &caps)
                    .map(|q| (q, false)),
            }
        });
        match sent {
            Ok((q, yourself)) => {
                if yourself {
                    self.tail_calls.insert(q);
                }
                self.register_question(q, completer)
            }
            Err(e) => completer.complete(Err(e)),
        }
    }

    fn register_question(&mut self, q: u32, completer: Completer) {
        let answer = completer.answer().cloned();
        if let Some(a) = &answer {
            a.set_remote(self.me.clone(), self.id);
            self.question_of.insert(key(a), q);
        }
        self.questions.insert(q, (completer, answer));
    }
}

impl StreamHandler<Input> for Connection {
    fn handle(&mut self, item: Input, ctx: &mut Self::Context) {
        match item {
            Input::Messages(messages) => {
                for m in messages {
                    self.core.handle(m);
                }
            }
            Input::Invalid(e) => self.core.receive_invalid(e),
            Input::Failed(e) => self.core.disconnected(capnp::Error::disconnected(format!(
                "connection read failed: {e}"
            ))),
        }
        self.settle(ctx);
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.core.receive_closed();
        self.settle(ctx);
    }
}

impl Handler<ConnMsg> for Connection {
    type Result = ();
    fn handle(&mut self, msg: ConnMsg, ctx: &mut Self::Context) {
        match msg {
            ConnMsg::Call { target, call } => {
                let routed = match &target {
                    RemoteTarget::Answer { answer, path } => Some((answer.clone(), path.clone())),
                    RemoteTarget::Import(_) => None,
                };
                self.send_call(target, call);
                if let Some((answer, path)) = routed {
                    answer.routed_done(&path);
                }
            }
            ConnMsg::Reflect { embargo, target } => self.core.disembargo_reply_to(embargo, &target),
            ConnMsg::Release { import, node } => {
                if self.imports.get(&import).is_some_and(|(_, n)| *n == node) {
                    self.imports.remove(&import);
                    self.core.release_import(import);
                }
            }
            ConnMsg::Cancel { answer } => {
                if let Some(a) = answer.upgrade() {
                    if let Some(&q) = self.question_of.get(&key(&a)) {
                        self.core.finish(q);
                        if self.tail_calls.remove(&q) {
                            self.question_of.remove(&key(&a));
                            self.pipelined.remove(&q);
                            drop(self.questions.remove(&q));
                        }
                    }
                }
            }
            ConnMsg::TailCall {
                answer,
                import,
                call,
            } => self.send_tail_call(answer, import, call),
            ConnMsg::EmbargoImport {
                import,
                resolver,
                target,
            } => match (
                self.core.aborted().cloned(),
                self.core.disembargo_request_import(import),
            ) {
                // The connection ended first: embargoes break with it.
                (Some(e), _) => resolver.reject(e),
                (None, Some(id)) => {
                    self.embargoes
                        .insert(id, Embargo::Import { resolver, target });
                }
                (None, None) => resolver.resolve_to(target),
            },
        }
        self.settle(ctx);
    }
}

impl Handler<BootstrapMsg> for Connection {
    type Result = ();
    fn handle(&mut self, msg: BootstrapMsg, ctx: &mut Self::Context) {
        match self.core.bootstrap(&msg.object_id) {
            Ok(q) => self.register_question(q, msg.completer),
            Err(e) => msg.completer.complete(Err(e)),
        }
        self.settle(ctx);
    }
}

impl Handler<Inspect> for Connection {
    type Result = actix::MessageResult<Inspect>;
    fn handle(&mut self, _: Inspect, _: &mut Self::Context) -> Self::Result {
        actix::MessageResult((self.core.table_sizes(), self.core.dump()))
    }
}
