//! Capability actors: an actor that serves calls on one capability.
//!
//! A [`CapActor`] hosts a [`Host`]: a capnpc-generated server
//! (`server::ServerHost`) or a foreign hook (`hook::ForeignHost`). Calls
//! arrive in its mailbox in the order they were sent; each is started at
//! once (its method body runs until it first awaits) and then runs
//! alongside the others, so a slow call does not hold up a fast one.
//! Running calls are driven by one `FuturesUnordered` that a single actor
//! future polls: method bodies start in mailbox order.
//!
//! Streaming calls (`-> stream` methods of generated servers) are the
//! exception, as the protocol requires: while one runs, the calls that
//! arrive after it (of any method) wait in the actor, in order, and start
//! when it ends; so a stream's writes run one after another and the call
//! ending the stream starts after the last write. A streaming call that
//! fails breaks the capability: that call's error fails every later call
//! (as in the reference implementations). A cancelled one does not.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};

use actix::{Actor, ActorFuture, AsyncContext, Handler};
use capnp::capability::Promise;
use futures::future::{select, Either, LocalBoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tracing::Instrument;

use crate::call::{Call, Completer, IncomingCall};
use crate::error;
use crate::payload::Payload;
use crate::registry;

impl IncomingCall {
    /// The interface the call is for.
    pub fn interface_id(&self) -> u64 {
        self.call.interface_id
    }

    /// The method the call is for.
    pub fn method_id(&self) -> u16 {
        self.call.method_id
    }

    /// Passes this call on to `target`, as if the caller had made it there:
    /// its reply (and any call pipelined on it) goes straight back to the
    /// caller. For wrappers that serve some methods and delegate the rest.
    pub fn forward(self, target: &crate::CapRef) {
        target.deliver(self.call);
    }

    /// Fails this call with `error` without running anything (for example
    /// `capnp::Error::unimplemented` for an interface the actor does not
    /// serve).
    pub fn fail(self, error: capnp::Error) {
        self.call.fail(error);
    }
}

/// What a capability actor serves.
pub(crate) trait Host: Unpin + 'static {
    /// Starts a call: runs what must run now and returns the rest.
    fn dispatch(&self, call: Call) -> CallBody;
}

/// Where a method of a generated server leaves its results (its `Results`
/// put them there when dropped; see `hook::LocalResults`).
pub(crate) type ResultsSlot = Rc<RefCell<Option<Payload>>>;

/// A started call, as the host produced it.
pub(crate) enum CallBody {
    /// A method of a generated server: its promise, where its results land
    /// when the method drops them, and whether it is a streaming method.
    Server(Promise<(), capnp::Error>, ResultsSlot, Completer, bool),
    /// Something that completes the call by itself.
    Done(LocalBoxFuture<'static, ()>),
}

/// Admits `call` to be served by capability `cap_id`: `None` if it is not a
/// call to serve (a disembargo marker, dropped here so that its connection
/// reflects it after the calls before it) or if nobody waits for it any
/// more (failed as cancelled, it never starts). Otherwise the call is
/// marked started and comes back with the tracing span its body runs in.
pub(crate) fn admit(call: Call, cap_id: u64) -> Option<(Call, tracing::Span)> {
    if call.marker.is_some() {
        return None;
    }
    if call.completer.is_cancelled() {
        call.fail(error::cancelled());
        return None;
    }
    call.completer.mark_started();
    let span = tracing::debug_span!(
        "call",
        cap = cap_id,
        interface = %format_args!("{:#018x}", call.interface_id),
        method = call.method_id
    );
    Some((call, span))
}

/// What a method that returned `returned` answers: the results it left in
/// `slot`, or its error (capnpc's nameless Unimplemented given the names).
pub(crate) fn method_outcome(
    returned: Result<(), capnp::Error>,
    slot: &ResultsSlot,
    interface_id: u64,
    method_id: u16,
) -> Result<Payload, capnp::Error> {
    match returned {
        Ok(()) => slot
            .borrow_mut()
            .take()
            .ok_or_else(|| error::internal("method finished while still holding its Results")),
        Err(e) => Err(error::name_unimplemented(e, interface_id, method_id)),
    }
}

/// How a started call ended, for the actor that ran it.
pub(crate) enum Ended {
    /// An ordinary call.
    Call,
    /// A streaming call, with its error if it failed (not if cancelled).
    Stream(Option<capnp::Error>),
}

/// A started call: its body, and whether it is a streaming call.
pub(crate) struct Started {
    pub(crate) body: LocalBoxFuture<'static, Ended>,
    pub(crate) streaming: bool,
}

/// Starts `call` on `host`: `None` if it was cancelled before it started.
pub(crate) fn start_call<H: Host + ?Sized>(host: &H, cap_id: u64, call: Call) -> Option<Started> {
    let (call, span) = admit(call, cap_id)?;
    let (interface_id, method_id) = (call.interface_id, call.method_id);
    let body = span.in_scope(|| host.dispatch(call));
    Some(match body {
        CallBody::Done(f) => Started {
            body: f.map(|()| Ended::Call).instrument(span).boxed_local(),
            streaming: false,
        },
        CallBody::Server(promise, slot, completer, streaming) => Started {
            body: async move {
                let cancelled = completer.cancelled();
                let body = AssertUnwindSafe(promise).catch_unwind();
                let (outcome, breaks) = match select(body, cancelled).await {
                    Either::Left((Ok(returned), _)) => {
                        let outcome = method_outcome(returned, &slot, interface_id, method_id);
                        let breaks = outcome.as_ref().err().cloned();
                        (outcome, breaks)
                    }
                    Either::Left((Err(panic), _)) => {
                        let e = error::panicked(panic.as_ref());
                        (Err(e.clone()), Some(e))
                    }
                    // The method's future is dropped here: that is the cancellation.
                    Either::Right(((), _)) => (Err(error::cancelled()), None),
                };
                completer.finish(outcome);
                if streaming {
                    Ended::Stream(breaks)
                } else {
                    Ended::Call
                }
            }
            .instrument(span)
            .boxed_local(),
            streaming,
        },
    })
}

/// The actor of one capability; see the module docs.
pub(crate) struct CapActor<H: Host> {
    host: H,
    id: u64,
    running: FuturesUnordered<LocalBoxFuture<'static, Ended>>,
    driving: bool,
    /// A streaming call is running: later calls wait in `held`.
    streaming: bool,
    held: VecDeque<Call>,
    /// The error of the streaming call that failed, failing every later call.
    broken: Option<capnp::Error>,
    /// Last: see `ActorGuard`.
    _guard: registry::ActorGuard,
}

impl<H: Host> CapActor<H> {
    pub(crate) fn new(host: H, id: u64) -> Self {
        CapActor {
            host,
            id,
            running: FuturesUnordered::new(),
            driving: false,
            streaming: false,
            held: VecDeque::new(),
            broken: None,
            _guard: registry::ActorGuard::new(),
        }
    }

    /// Starts `call` (or fails it, once a stream broke the capability).
    fn start(&mut self, call: Call, ctx: &mut actix::Context<Self>) {
        if let (Some(e), None) = (&self.broken, &call.marker) {
            call.fail(e.clone());
            return;
        }
        let Some(started) = start_call(&self.host, self.id, call) else {
            return;
        };
        let mut body = started.body;
        if let Some(ended) = poll_once(&mut body) {
            self.ended(ended);
            return;
        }
        self.streaming = started.streaming;
        self.running.push(body);
        if !self.driving {
            self.driving = true;
            ctx.spawn(Driver);
        }
    }

    /// Notes how a call ended; the calls held behind a streaming call start.
    fn ended(&mut self, ended: Ended) {
        if let Ended::Stream(error) = ended {
            self.streaming = false;
            if self.broken.is_none() {
                self.broken = error;
            }
        }
    }

    /// Starts the calls held behind a streaming call that ended, up to the
    /// next streaming call.
    fn release_held(&mut self, ctx: &mut actix::Context<Self>) {
        while !self.streaming {
            let Some(call) = self.held.pop_front() else {
                break;
            };
            self.start(call, ctx);
        }
    }
}

impl<H: Host> Actor for CapActor<H> {
    type Context = actix::Context<Self>;
}

impl<H: Host> Handler<IncomingCall> for CapActor<H> {
    type Result = ();
    fn handle(&mut self, msg: IncomingCall, ctx: &mut Self::Context) {
        if self.streaming {
            self.held.push_back(msg.call);
        } else {
            self.start(msg.call, ctx);
        }
    }
}

/// Polls a capability actor's running calls until none is left.
struct Driver;

impl<H: Host> ActorFuture<CapActor<H>> for Driver {
    type Output = ();
    fn poll(
        self: Pin<&mut Self>,
        act: &mut CapActor<H>,
        ctx: &mut actix::Context<CapActor<H>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<()> {
        loop {
            match act.running.poll_next_unpin(cx) {
                Poll::Ready(Some(ended)) => {
                    act.ended(ended);
                    act.release_held(ctx);
                }
                Poll::Ready(None) => {
                    act.driving = false;
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Starts an actor for `host` on the current arbiter and returns the
/// capability that names it.
pub(crate) fn spawn_host<H: Host>(host: H) -> crate::cap::CapRef {
    let id = crate::cap::next_id();
    spawn_host_with(host, id, crate::cap::Kind::Local)
}

/// Like [`spawn_host`], with the id chosen and the kind built by the caller.
pub(crate) fn spawn_host_with<H: Host>(
    host: H,
    id: u64,
    kind: impl FnOnce(actix::Recipient<IncomingCall>) -> crate::cap::Kind,
) -> crate::cap::CapRef {
    let addr = CapActor::new(host, id).start();
    crate::cap::CapRef::from_kind_id(kind(addr.recipient()), id)
}

/// Polls a freshly started call once, so that its body starts now: its
/// end, if it ended already.
pub(crate) fn poll_once<T>(fut: &mut LocalBoxFuture<'static, T>) -> Option<T> {
    let waker = futures::task::noop_waker();
    let mut cx = TaskContext::from_waker(&waker);
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(t) => Some(t),
        Poll::Pending => None,
    }
}
