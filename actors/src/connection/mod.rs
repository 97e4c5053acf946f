//! The connection actor: one two-party RPC connection over any byte stream.
//!
//! The actor owns the sans-IO protocol core (`capnp_actix_proto::captp::Conn`)
//! and bridges it to the runtime: calls the peer makes are delivered to our
//! capabilities like any other call; calls on capabilities imported from the
//! peer (and pipelined calls on our questions to it) come here as messages
//! and go out on the wire. Everything produced while handling one message
//! or one chunk of input is written in one write.
//!
//! This file holds the actor, its handle, its options and the messages it
//! answers for its owner (bootstrap, close, inspect). The rest:
//! - `events.rs`: what the core reports (the peer's messages), one method
//!   per kind of event;
//! - `outgoing.rs`: what the rest of the runtime asks (`ConnMsg`, defined
//!   in `call.rs` so that capability nodes need not import this actor);
//! - `deferred.rs`: the steps the actor sends itself through its own
//!   mailbox (reflecting a disembargo, starting an import's embargo);
//! - `writer.rs`: writing the core's output, once per turn;
//! - `tables.rs`: the actor's own tables beside the core's, and what it
//!   keeps in the core's embargo table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Handler, Message, Recipient, StreamHandler};
use capnp_actix_proto::captp::{Conn, ConnLimits, TableSizes};
use capnp_actix_proto::Limits;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::answer::Answer;
use crate::call::{Completer, ConnMsg};
use crate::cap::{next_id, CapRef};
use crate::error;
use crate::io::{self, Input};
use crate::metrics;
use crate::registry;

mod budget;
mod deferred;
mod drain;
mod events;
mod outgoing;
mod tables;
mod timers;
mod writer;

pub use budget::{
    Reservation, VatBudget, DEFAULT_MAX_RETAINED_RESULT_BYTES, DEFAULT_VAT_BUDGET_BYTES,
};
use tables::{Embargo, HashMap, ImportEntry, PeerAnswer, Question};
pub use timers::Heartbeat;
use writer::Flush;

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
    /// Close the connection (gracefully: what is queued is written, then
    /// the stream is shut) once it has asked for a bootstrap capability
    /// and nothing refers to it any more: no question of ours is
    /// outstanding, no capability of the peer's is held here, and the peer
    /// holds none of ours and has no call pending with us. For a
    /// connection opened just to import one capability
    /// (`capnp_actix::vat::import`), which nobody else could close. Off by
    /// default: a vat's connections are closed by the vat.
    pub close_when_unused: bool,
    /// Bytes of results we returned that the peer has not finished yet
    /// (they are kept until its `finish`); a return that would go beyond
    /// aborts the connection, naming this budget (one answer is always
    /// kept). `0` means the default, 64 MiB.
    pub max_retained_result_bytes: usize,
    /// The vat-wide budget this connection's holdings (calls not answered,
    /// results not finished) count against, shared with the vat's other
    /// connections; see [`VatBudget`].
    pub budget: Option<Arc<VatBudget>>,
    /// If the peer has not delivered one complete message this long after
    /// the connection started, abort it, naming the deadline. For
    /// connections a listener accepted (a peer that opens sockets and
    /// says nothing holds a descriptor each); `None`: no deadline.
    pub first_message_deadline: Option<Duration>,
    /// Close a connection that holds nothing either way (every table
    /// empty, no call pending) and has received nothing for this long,
    /// with an abort naming the timeout. `None` (the default): never.
    pub idle_timeout: Option<Duration>,
    /// Dead-peer detection: after `interval` with nothing from the peer,
    /// probe it with an ordinary request every peer answers (a bootstrap);
    /// declare it dead (Disconnected, naming the heartbeat) if nothing
    /// arrives within `timeout`. `None` (the default): no heartbeat, only
    /// TCP keepalive.
    pub heartbeat: Option<Heartbeat>,
    /// Held by the connection until it has ended and finished writing
    /// (its last bytes flushed, or its writer's grace spent), then
    /// dropped: a guard whose `Drop` tells its owner the connection is
    /// done (see [`Arbiters`](crate::arbiters::Arbiters)).
    pub held_until_finished: Option<Arc<dyn std::any::Any + Send + Sync>>,
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
            .field("max_retained_result_bytes", &self.max_retained_result_bytes)
            .field("budget", &self.budget)
            .field("first_message_deadline", &self.first_message_deadline)
            .field("idle_timeout", &self.idle_timeout)
            .field("heartbeat", &self.heartbeat)
            .field("held_until_finished", &self.held_until_finished.is_some())
            .finish()
    }
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
        self.handle_core_events(ctx);
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

    /// Ends the connection with `error`: the peer gets an `abort` carrying
    /// its kind and reason (a connection refused for a limit gets
    /// Overloaded naming the limit).
    pub fn abort(&self, error: capnp::Error) {
        self.addr.do_send(Close(error));
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

    /// Starts draining the connection (before a graceful close): from
    /// now on the peer's new calls and bootstraps fail at once with
    /// `error`, while the calls it made before go on, and so does
    /// everything else (our calls to the peer, returns, releases). See
    /// [`ConnectionHandle::running_calls`] for when they are done.
    pub fn drain(&self, error: capnp::Error) {
        self.addr.do_send(drain::Drain(error));
    }

    /// How many of the peer's calls (and bootstraps) are running here,
    /// not answered yet; `None` once the connection has ended.
    pub async fn running_calls(&self) -> Option<usize> {
        self.addr.send(drain::RunningCalls).await.ok()
    }
}

/// Starts a connection actor on the current arbiter for `stream`.
pub fn start_connection<S>(stream: S, options: ConnectionOptions) -> ConnectionHandle
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    crate::system::require("start_connection");
    let (closed_tx, closed_rx) = futures::channel::oneshot::channel();
    let id = next_id();
    let addr = Connection::create(move |ctx| Connection::new(ctx, id, stream, options, closed_tx));
    ConnectionHandle {
        addr,
        closed: closed_rx.shared(),
        id,
    }
}

/// Starts a connection actor on `arbiter` (another thread) for the
/// stream `open` gives there. `open` runs on that arbiter first, so a
/// socket taken off the reactor of the thread that accepted it can be
/// registered with the arbiter's own; if it fails, the connection ends at
/// once with its error.
pub fn start_connection_on<S, F>(
    arbiter: &actix::ArbiterHandle,
    open: F,
    options: ConnectionOptions,
) -> ConnectionHandle
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    F: FnOnce() -> std::io::Result<S> + Send + 'static,
{
    let (closed_tx, closed_rx) = futures::channel::oneshot::channel();
    let id = next_id();
    let addr = Connection::start_in_arbiter(arbiter, move |ctx| match open() {
        Ok(stream) => Connection::new(ctx, id, stream, options, closed_tx),
        Err(e) => {
            tracing::warn!("a connection could not move to its arbiter: {e}");
            // A stream that ends at once: the connection closes as on EOF.
            let (stream, _) = tokio::io::duplex(1);
            Connection::new(ctx, id, stream, options, closed_tx)
        }
    });
    ConnectionHandle {
        addr,
        closed: closed_rx.shared(),
        id,
    }
}

impl Connection {
    /// The actor for `stream`, registered with `ctx` (its reader, its
    /// writer's flushes and its timers).
    fn new<S>(
        ctx: &mut actix::Context<Self>,
        id: u64,
        stream: S,
        options: ConnectionOptions,
        closed: futures::channel::oneshot::Sender<capnp::Error>,
    ) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        let or_default = |n: usize, default: usize| if n == 0 { default } else { n };
        metrics::connection_opened();
        let (hand_back, leftover) = futures::channel::oneshot::channel();
        ctx.add_stream(io::FrameReader::new(read, options.reader, hand_back));
        ctx.spawn(Flush);
        timers::start(
            ctx,
            options.first_message_deadline,
            options.idle_timeout,
            options.heartbeat,
        );
        Connection {
            id,
            closed: Some(closed),
            core: Conn::new(options.tables, options.reader),
            writer: Some(io::Writer::new(Box::new(write))),
            flush: None,
            max_outgoing: or_default(options.max_outgoing_bytes, DEFAULT_MAX_OUTGOING_BYTES),
            held: HashMap::default(),
            held_bytes: 0,
            retained_answers: 0,
            retained_bytes: 0,
            max_retained: or_default(
                options.max_retained_result_bytes,
                DEFAULT_MAX_RETAINED_RESULT_BYTES,
            ),
            budget: options.budget,
            shed: ctx.address().recipient(),
            reported: 0,
            queued_out: 0,
            reported_tables: TableSizes::default(),
            max_held: or_default(options.max_held_call_bytes, DEFAULT_MAX_HELD_CALL_BYTES),
            results_to_yourself: options.send_results_to_yourself,
            bootstrap: options.bootstrap,
            close_when_unused: options.close_when_unused,
            used: false,
            me: ctx.address().recipient(),
            deferred: ctx.address().recipient(),
            embargo_starts: Default::default(),
            questions: HashMap::default(),
            question_of: HashMap::default(),
            answers: HashMap::default(),
            imports: HashMap::default(),
            draining: None,
            received_any: false,
            last_input: Instant::now(),
            probe: timers::Probe::default(),
            held_until_finished: options.held_until_finished,
            leftover: Some(leftover),
            _guard: registry::ActorGuard::new(),
        }
    }
}

/// See the module docs.
pub struct Connection {
    id: u64,
    /// The protocol core; each of our embargoes keeps an [`Embargo`] there
    /// (what it holds back until the peer reflects its disembargo).
    core: Conn<CapRef, Embargo>,
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
    /// How many of our answers keep results the peer has not finished,
    /// and their sum (each size is on its `PeerAnswer`; see `budget.rs`).
    retained_answers: usize,
    retained_bytes: usize,
    max_retained: usize,
    budget: Option<Arc<VatBudget>>,
    shed: Recipient<budget::ShedLoad>,
    /// What was last reported to `budget`.
    reported: usize,
    /// Bytes written and not taken by the peer yet (see `budget.rs`).
    queued_out: usize,
    /// The table sizes last reported to the metrics.
    reported_tables: TableSizes,
    max_held: usize,
    /// See [`ConnectionOptions::send_results_to_yourself`].
    results_to_yourself: bool,
    bootstrap: Option<BootstrapFn>,
    /// See [`ConnectionOptions::close_when_unused`]; `used` turns true
    /// with our first bootstrap.
    close_when_unused: bool,
    used: bool,
    /// Our own mailbox, as capability nodes and answers send to it.
    me: Recipient<ConnMsg>,
    /// Our own mailbox, for the steps we defer behind what it holds.
    deferred: Recipient<deferred::Deferred>,
    /// Embargoes on imports queued to start through `deferred`.
    embargo_starts: deferred::ImportEmbargoStarts,
    /// Our questions: who waits for the answer.
    questions: HashMap<u32, Question>,
    /// Question id by answer identity.
    question_of: HashMap<usize, u32>,
    /// The peer's questions: our answers, and the future sending each return.
    answers: HashMap<u32, PeerAnswer>,
    /// Imports and the node that holds each.
    imports: HashMap<u32, ImportEntry>,
    /// Set by [`ConnectionHandle::drain`]: what the peer's new calls get.
    draining: Option<capnp::Error>,
    /// Told why the connection ended, when it does.
    closed: Option<futures::channel::oneshot::Sender<capnp::Error>>,
    /// True once the peer delivered a complete message (see
    /// [`ConnectionOptions::first_message_deadline`]).
    received_any: bool,
    /// When the peer last delivered a message (see
    /// [`ConnectionOptions::idle_timeout`]).
    last_input: Instant,
    /// The heartbeat's probe (see `timers.rs`).
    probe: timers::Probe,
    /// See [`ConnectionOptions::held_until_finished`]; handed to the
    /// writer's last task when the connection ends.
    held_until_finished: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// The reading half, once the reader is dropped: the writer's last
    /// task drains it (see `io::Writer::finish`).
    leftover: Option<futures::channel::oneshot::Receiver<io::Leftover>>,
    /// Last: see `ActorGuard`.
    _guard: registry::ActorGuard,
}

impl Actor for Connection {
    type Context = actix::Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.release_writer();
        if let Some(budget) = &self.budget {
            budget.remove(self.id);
        }
        let reason = self
            .core
            .aborted()
            .cloned()
            .unwrap_or_else(|| capnp::Error::disconnected("connection closed".into()));
        metrics::tables(&self.reported_tables, &TableSizes::default());
        metrics::connection_closed(&reason);
        if let Some(tx) = self.closed.take() {
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

/// Why the connection ended, when reading from it failed. A stream that
/// ends without its TLS `close_notify` (the peer was killed, or its host
/// went away) is said in those words, not with the TLS library's text
/// (which links to its manual).
fn read_failed(e: &std::io::Error) -> capnp::Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return capnp::Error::disconnected(
            "the peer closed the connection without ending it cleanly (killed, or its host \
             went away)"
                .into(),
        );
    }
    capnp::Error::disconnected(format!("connection read failed: {e}"))
}

impl StreamHandler<Input> for Connection {
    fn handle(&mut self, item: Input, ctx: &mut Self::Context) {
        match item {
            Input::Messages(messages) => {
                self.received_any |= !messages.is_empty();
                self.last_input = Instant::now();
                for m in messages {
                    self.core.handle(m);
                }
            }
            Input::Invalid(e) => self.core.receive_invalid(e),
            Input::Failed(e) => self.core.disconnected(read_failed(&e)),
        }
        self.handle_core_events(ctx);
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.core.receive_closed();
        self.handle_core_events(ctx);
    }
}

impl Handler<BootstrapMsg> for Connection {
    type Result = ();
    fn handle(&mut self, msg: BootstrapMsg, ctx: &mut Self::Context) {
        self.used = true;
        match self.core.bootstrap(&msg.object_id) {
            Ok(q) => self.register_question(q, msg.completer),
            Err(e) => msg.completer.complete(Err(e)),
        }
        self.handle_core_events(ctx);
    }
}

impl Handler<Inspect> for Connection {
    type Result = actix::MessageResult<Inspect>;
    fn handle(&mut self, _: Inspect, _: &mut Self::Context) -> Self::Result {
        actix::MessageResult((self.core.table_sizes(), self.core.dump()))
    }
}
