//! Answers: the results of one call, once known, and the calls pipelined
//! on it until then.
//!
//! Every call carries a [`Completer`] for its [`Answer`] (see `call.rs`). The caller holds
//! [`AnswerRef`]s: one for the response promise, one for the pipeline, one
//! per pipelined capability. When the last of them goes before the answer
//! is complete, the call is cancelled.
//!
//! Pipelined calls on an unanswered call wait in a FIFO queue owned by the
//! answer. That queue is an actor ([`AnswerActor`]), started the first time
//! a pipelined call finds the answer pending; from then on every pipelined
//! call on this answer goes through its mailbox, which keeps them in the
//! order they were made, before and after the answer arrives (E-order),
//! until the queue has delivered every call it took after the answer was
//! known: then it retires, and calls go to the fields directly. If the
//! call goes to a peer meanwhile (it waited in a local promise that
//! resolved to the peer's capability), the queued calls follow it over the
//! wire at once. A call whose pipeline is never used starts no actor: an
//! actor per call would double the cost of a plain call.
//!
//! A pipelined capability holds its answer until it has resolved and no
//! call on it can be overtaken any more; then it lets go, so that results
//! holding fields of each other's answers do not keep each other alive.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use actix::{Actor, ActorContext, Addr, AsyncContext, Handler, Message, Recipient};

use crate::call::{Call, Completer};
use crate::cap::{CapRef, Kind, Node, Source};
use crate::error;
use crate::payload::{Frozen, Payload};
use crate::registry;

/// What a call produces: its frozen results, or an error.
pub(crate) type Outcome = Result<Arc<Frozen>, capnp::Error>;

/// The connection an answer's call went to (see `AnswerState::remote`).
#[derive(Clone)]
struct SentTo {
    conn: Recipient<crate::call::ConnMsg>,
    conn_id: u64,
}

/// The peer's call an answer answers (see `AnswerState::origin`).
#[derive(Clone)]
pub(crate) struct Origin {
    /// The connection the call came on, and its id.
    pub(crate) conn: Recipient<crate::call::ConnMsg>,
    pub(crate) conn_id: u64,
    /// Our answer id for the call on that connection.
    pub(crate) answer_id: u32,
}

/// What pipelined calls on an answer go to.
#[derive(Clone)]
pub(crate) enum Resolution {
    /// The answer's (early or final) results, or its error.
    Results(Outcome),
    /// Another answer's: the call made a tail call, and its answer is that
    /// call's answer.
    Forward(AnswerRef),
}

/// An answer: the results of one call, once known, and the queue of calls
/// pipelined on it.
pub(crate) struct Answer {
    state: Mutex<AnswerState>,
}

#[derive(Default)]
struct AnswerState {
    outcome: Option<Outcome>,
    /// Early pipeline results (`set_pipeline`), before the outcome.
    pipeline: Option<Arc<Frozen>>,
    /// Tasks waiting for the outcome (usually one: the caller; a tail
    /// call's forwarding adds another).
    result_wakers: Vec<Waker>,
    cancel_waker: Option<Waker>,
    /// Live `AnswerRef`s.
    interest: usize,
    forwarder: Option<Addr<AnswerActor>>,
    /// Calls sent to `forwarder` that it has not delivered yet: when none
    /// are left once it knows the resolution, it retires, and calls go to
    /// the fields directly again.
    queued: usize,
    /// Pipelined capabilities made so far, by path, so that asking twice for
    /// one field gives one capability.
    pipelined: Vec<(Vec<u16>, Weak<Node>)>,
    /// For a question to a peer: the connection and the question id, so
    /// that pipelined calls go over the wire at once.
    remote: Option<SentTo>,
    /// Run when the last caller reference goes before the outcome.
    on_cancel: Option<Box<dyn FnOnce() + Send>>,
    /// Fields under a network embargo: calls on them keep going through
    /// the connection, which holds them until the embargo lifts. The
    /// per-answer view, read under this lock by any caller, of the
    /// connection core's embargo table (`proto/src/captp/embargoes.rs`).
    embargoed: Vec<Vec<u16>>,
    /// Per field, the calls sent through the connection's mailbox that it
    /// has not handled yet: while there are any, later calls follow them
    /// through the mailbox, even once the answer is known here, so that
    /// none overtakes them; after that, calls go to the field directly.
    routed: Vec<(Vec<u16>, usize)>,
    /// The call made a tail call: its answer is this one's.
    forward: Option<AnswerRef>,
    /// For a call a peer made on us: the connection, its id and our answer
    /// id, so that a tail call to that same peer can go out with
    /// `sendResultsTo.yourself`.
    origin: Option<Origin>,
    /// The call has started (or is over).
    started: bool,
    start_waiters: Vec<futures::channel::oneshot::Sender<()>>,
}

impl AnswerState {
    /// What pipelined calls are resolved against.
    fn resolution(&self) -> Option<Resolution> {
        match (&self.pipeline, &self.forward, &self.outcome) {
            (Some(p), _, _) => Some(Resolution::Results(Ok(p.clone()))),
            (None, Some(f), _) => Some(Resolution::Forward(f.clone())),
            (None, None, Some(o)) => Some(Resolution::Results(o.clone())),
            (None, None, None) => None,
        }
    }
}

impl Answer {
    /// A new answer: the caller's first reference, and the callee's completer.
    pub(crate) fn open() -> (AnswerRef, Completer) {
        let answer = Arc::new(Answer {
            state: Mutex::new(AnswerState {
                interest: 1,
                ..Default::default()
            }),
        });
        (
            AnswerRef {
                answer: answer.clone(),
            },
            Completer::new(answer),
        )
    }

    fn lock(&self) -> MutexGuard<'_, AnswerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ready once nobody wants the answer any more (see
    /// [`Completer::cancelled`]); until then `cx` is woken when that happens.
    pub(crate) fn poll_unwanted(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if s.interest == 0 {
            Poll::Ready(())
        } else {
            s.cancel_waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        let s = self.lock();
        s.interest == 0 && s.outcome.is_none()
    }

    pub(crate) fn mark_started(&self) {
        let waiters = {
            let mut s = self.lock();
            s.started = true;
            std::mem::take(&mut s.start_waiters)
        };
        for w in waiters {
            let _ = w.send(());
        }
    }

    /// Resolves once the call has started or is over.
    pub(crate) fn when_started(&self) -> impl Future<Output = ()> + Send + 'static {
        let rx = {
            let mut s = self.lock();
            if s.started || s.outcome.is_some() {
                None
            } else {
                let (tx, rx) = futures::channel::oneshot::channel();
                s.start_waiters.push(tx);
                Some(rx)
            }
        };
        async move {
            if let Some(rx) = rx {
                let _ = rx.await;
            }
        }
    }

    pub(crate) fn complete(&self, outcome: Outcome) {
        let s = self.lock();
        if s.forward.is_some() {
            // The tail call's answer completes it.
            return;
        }
        self.set_outcome(s, outcome);
    }

    fn set_outcome(&self, mut s: MutexGuard<'_, AnswerState>, outcome: Outcome) {
        if s.outcome.is_some() {
            return;
        }
        s.outcome = Some(outcome);
        s.started = true;
        for w in std::mem::take(&mut s.start_waiters) {
            let _ = w.send(());
        }
        for w in std::mem::take(&mut s.result_wakers) {
            w.wake();
        }
        let fields = !s.pipelined.is_empty();
        if s.pipeline.is_none() && s.forward.is_none() {
            self.publish(s);
        } else {
            drop(s);
        }
        if fields {
            self.release_resolved_fields(self.lock());
        }
    }

    /// Lets the resolved pipelined capabilities of this answer go of it
    /// where calls on them may now go straight to what their field became:
    /// the call is over, no queue holds calls pipelined on it, and no call
    /// on that field is still routed through a connection or held by an
    /// embargo. (Until then calls on such a capability must follow the
    /// earlier ones, which only this answer knows about.)
    fn release_resolved_fields(&self, s: MutexGuard<'_, AnswerState>) {
        if s.outcome.is_none() || s.forwarder.is_some() || s.pipelined.is_empty() {
            return;
        }
        let connected = s.remote.as_ref().is_some_and(|r| r.conn.connected());
        let nodes: Vec<Arc<Node>> = s
            .pipelined
            .iter()
            .filter(|(p, _)| {
                !connected || !(s.embargoed.contains(p) || s.routed.iter().any(|(r, _)| r == p))
            })
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        drop(s);
        for node in nodes {
            let resolved = node
                .resolvable
                .as_ref()
                .is_some_and(|s| s.target().is_some());
            if let (Kind::Pipelined { answer, .. }, true) = (&node.kind, resolved) {
                answer.release();
            }
        }
    }

    /// The call made a tail call whose answer is `to`: calls pipelined on
    /// this answer go to `to`'s fields from now on, and this answer's
    /// outcome is `to`'s (whatever the call itself returns is ignored).
    /// Nothing is copied.
    pub(crate) fn forward_to(self: &Arc<Self>, to: AnswerRef) {
        self.forward_within(to, None)
    }

    /// Like [`Answer::forward_to`], with a deadline: if `to` has no outcome
    /// after `after`, this answer fails with `expired` instead. Calls
    /// pipelined on this answer still go to `to`'s fields, and `to` stays
    /// wanted while this answer is: once the caller lets go of it, `to`
    /// is released, which cancels its call (a `finish` to a peer).
    pub(crate) fn forward_until(
        self: &Arc<Self>,
        to: AnswerRef,
        after: std::time::Duration,
        expired: capnp::Error,
    ) {
        self.forward_within(to, Some((after, expired)))
    }

    /// [`Answer::forward_to`], with an optional deadline and its error.
    fn forward_within(
        self: &Arc<Self>,
        to: AnswerRef,
        deadline: Option<(std::time::Duration, capnp::Error)>,
    ) {
        {
            let mut s = self.lock();
            if s.outcome.is_some() || s.pipeline.is_some() || s.forward.is_some() {
                return;
            }
            s.forward = Some(to.clone());
            self.publish(s);
        }
        // Waits without counting as interest in `to`: only this answer's
        // `forward` does, so that `to` is released (and, for a tail call to
        // a peer, finished) when this answer goes.
        let me = Arc::downgrade(self);
        let to = to.answer.clone();
        actix_rt::spawn(async move {
            let outcome = std::future::poll_fn(|cx| to.poll_outcome(cx));
            let outcome = match deadline {
                None => outcome.await,
                Some((after, expired)) => tokio::time::timeout(after, outcome)
                    .await
                    .unwrap_or(Err(expired)),
            };
            if let Some(me) = me.upgrade() {
                let s = me.lock();
                me.set_outcome(s, outcome);
            }
        });
    }

    /// True if `cap` is a field of this very answer; gives its path.
    pub(crate) fn path_on_self<'c>(self: &Arc<Self>, cap: &'c CapRef) -> Option<&'c [u16]> {
        match cap.kind() {
            Kind::Pipelined { answer, path } if answer.is(self) => Some(path),
            _ => None,
        }
    }

    /// A result may contain a capability pipelined on this very answer: a
    /// field that resolves to another field of the same results (fine: it
    /// is replaced by that field's capability) or, following such links, to
    /// itself (a cycle: it becomes a broken capability). Either way no
    /// reference loop is kept between the answer and its own fields.
    pub(crate) fn break_self_references(self: &Arc<Self>, payload: &mut Payload) {
        let on_self = |c: &Option<CapRef>| {
            c.as_ref()
                .and_then(|c| self.path_on_self(c))
                .map(<[u16]>::to_vec)
        };
        if !payload.caps.iter().any(|c| on_self(c).is_some()) {
            return;
        }
        let mut replaced = payload.caps.clone();
        for (slot, new) in payload.caps.iter().zip(replaced.iter_mut()) {
            let mut cur = slot.clone();
            let mut seen: Vec<Vec<u16>> = Vec::new();
            while let Some(path) = on_self(&cur) {
                if seen.contains(&path) || seen.len() >= 64 {
                    cur = Some(CapRef::broken(error::cycle()));
                    break;
                }
                cur = Some(payload.cap_at(&path));
                seen.push(path);
            }
            *new = cur;
        }
        payload.caps = replaced;
    }

    /// Makes this the answer to a call sent to a peer on connection
    /// `conn_id`: pipelined calls go over the wire at once, and the
    /// connection hears when the callers give up.
    pub(crate) fn set_remote(
        self: &Arc<Self>,
        conn: Recipient<crate::call::ConnMsg>,
        conn_id: u64,
    ) {
        let mut s = self.lock();
        if s.on_cancel.is_some() && s.remote.as_ref().is_some_and(|r| r.conn_id == conn_id) {
            // Set already (a call to an import sets it when delivered, and
            // again when it goes out): the same, without cloning the
            // recipient twice and boxing a closure again.
            return;
        }
        let weak = Arc::downgrade(self);
        let notify = conn.clone();
        s.remote = Some(SentTo { conn, conn_id });
        s.on_cancel = Some(Box::new(move || {
            notify.do_send(crate::call::ConnMsg::Cancel { answer: weak });
        }));
        // Calls already queued here (the call waited in a local promise,
        // which resolved to the peer's capability) follow it over the wire
        // now rather than wait for its return.
        let forwarder = s.forwarder.clone();
        drop(s);
        if let Some(f) = forwarder {
            f.do_send(GoRemote);
        }
    }

    /// Sends a call on field `path` through the connection this answer's
    /// call went to, if it must: the answer is not known here yet, or
    /// earlier calls on that field are still in the connection's mailbox or
    /// held by an embargo there. Otherwise (or with no live connection)
    /// gives the call back, to be delivered here.
    fn route(self: &Arc<Self>, path: &[u16], call: Call, unresolved: bool) -> Option<Call> {
        let s = self.lock();
        let Some(SentTo { conn, conn_id }) = s.remote.clone().filter(|r| r.conn.connected()) else {
            return Some(call);
        };
        let follow =
            s.embargoed.iter().any(|p| p == path) || s.routed.iter().any(|(p, _)| p == path);
        if !(unresolved || follow) {
            return Some(call);
        }
        self.send_routed(s, conn, conn_id, path, call);
        None
    }

    /// Sends a call on field `path` through the connection's mailbox,
    /// counted in `routed`.
    fn send_routed(
        self: &Arc<Self>,
        mut s: MutexGuard<'_, AnswerState>,
        conn: Recipient<crate::call::ConnMsg>,
        conn_id: u64,
        path: &[u16],
        call: Call,
    ) {
        // From now on every call on this field goes through the
        // connection's mailbox, even once the answer is known here: this
        // one may still be in that mailbox when the return arrives, and a
        // later call delivered directly would overtake it.
        match s.routed.iter_mut().find(|(p, _)| p == path) {
            Some((_, n)) => *n += 1,
            None => s.routed.push((path.to_vec(), 1)),
        }
        drop(s);
        // The call's own answer is remote too from now on, so that calls
        // pipelined on *its* fields go out at once as well.
        if let Some(a) = call.completer.answer() {
            a.set_remote(conn.clone(), conn_id);
        }
        // Promise pipelining over the wire: the connection sends it as a
        // call on a promised answer (or, if the return has arrived
        // meanwhile, to what the field became).
        conn.do_send(crate::call::ConnMsg::Call {
            target: crate::call::RemoteTarget::Answer {
                answer: self.clone(),
                path: path.to_vec(),
            },
            call,
        });
    }

    /// The outcome, when it is there (waiting does not count as interest).
    pub(crate) fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut s = self.lock();
        match &s.outcome {
            Some(o) => Poll::Ready(o.clone()),
            None => {
                if !s.result_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    // Bounded: one entry per distinct waiting task.
                    s.result_wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// No longer the answer to a question on a connection (the call went
    /// to a local target after all).
    pub(crate) fn clear_remote(&self) {
        let mut s = self.lock();
        s.remote = None;
        s.on_cancel = None;
    }

    /// Delivers a call made on a pipelined field of this answer.
    pub(crate) fn deliver_pipelined(self: &Arc<Self>, path: &[u16], call: Call) {
        if call
            .completer
            .answer()
            .is_some_and(|a| Arc::ptr_eq(a, self))
        {
            // A call whose own answer it would have to wait for.
            call.fail(error::cycle());
            return;
        }
        // Never send while holding the lock: a message that cannot be
        // delivered is dropped at once, and dropping a call can drop an
        // `AnswerRef` to this very answer (its `depends_on`).
        let mut s = self.lock();
        if let Some(f) = s.forwarder.clone() {
            s.queued += 1;
            drop(s);
            f.do_send(Forward(path.to_vec(), call));
            return;
        }
        // A connection that has ended keeps nothing in order any more.
        let connected = s.remote.as_ref().is_some_and(|r| r.conn.connected());
        let embargoed = connected
            && (s.embargoed.iter().any(|p| p == path)
                || s.routed.iter().any(|(p, n)| p == path && *n > 0));
        if let (Some(resolution), false) = (s.resolution(), embargoed) {
            // Nothing was ever queued on this answer, so delivering directly
            // cannot overtake an earlier pipelined call.
            drop(s);
            resolve_path(&resolution, path).deliver(call);
            return;
        }
        if let Some(SentTo { conn, conn_id }) = s.remote.clone() {
            return self.send_routed(s, conn, conn_id, path, call);
        }
        // (Resolved already, if this path was routed through a connection
        // that no longer serves it: the new queue must know.)
        let resolution = s.resolution();
        let forwarder = AnswerActor {
            answer: Arc::downgrade(self),
            ..Default::default()
        }
        .start();
        s.forwarder = Some(forwarder.clone());
        s.queued += 1;
        drop(s);
        if let Some(r) = resolution {
            forwarder.do_send(Resolved(r));
        }
        forwarder.do_send(Forward(path.to_vec(), call));
    }

    /// Records that this answers call `answer_id` of the peer on
    /// connection `conn_id` (see `origin`).
    pub(crate) fn set_origin(
        &self,
        conn: Recipient<crate::call::ConnMsg>,
        conn_id: u64,
        answer_id: u32,
    ) {
        self.lock().origin = Some(Origin {
            conn,
            conn_id,
            answer_id,
        });
    }

    /// The peer's call this answered is over (cancelled or finished): its
    /// id may be reused, so a late tail call must not name it.
    pub(crate) fn clear_origin(&self) {
        self.lock().origin = None;
    }

    /// See `origin`.
    pub(crate) fn origin(&self) -> Option<Origin> {
        self.lock().origin.clone()
    }

    /// The connection has handled a call routed through its mailbox on
    /// field `path` (see `routed`).
    pub(crate) fn routed_done(&self, path: &[u16]) {
        let mut s = self.lock();
        if let Some(i) = s.routed.iter().position(|(p, _)| p == path) {
            s.routed[i].1 -= 1;
            if s.routed[i].1 == 0 {
                s.routed.swap_remove(i);
                self.release_resolved_fields(s);
            }
        }
    }

    /// Lifts the embargo on field `path` (its held calls are delivered),
    /// and resolves the pipelined capability of that field, which waited
    /// for the embargo (see `publish`).
    pub(crate) fn lift_embargo(&self, path: &[u16]) {
        let mut s = self.lock();
        s.embargoed.retain(|p| p != path);
        let Some(resolution) = s.resolution() else {
            return;
        };
        let nodes: Vec<Arc<Node>> = s
            .pipelined
            .iter()
            .filter(|(p, _)| p == path)
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        drop(s);
        for node in nodes {
            resolve_field(CapRef { node }, &resolution, path);
        }
        self.release_resolved_fields(self.lock());
    }

    /// Puts field `path` under an embargo (see `embargoed`).
    pub(crate) fn embargo(&self, path: &[u16]) {
        let mut s = self.lock();
        if !s.embargoed.iter().any(|p| p == path) {
            s.embargoed.push(path.to_vec());
        }
    }

    /// The capability at `path` of the resolution so far (results, early
    /// pipeline, or the answer a tail call forwarded to), if any.
    pub(crate) fn field_now(&self, path: &[u16]) -> Option<CapRef> {
        let r = self.lock().resolution()?;
        Some(resolve_path(&r, path))
    }

    /// The resolution so far (results or early pipeline), if any.
    pub(crate) fn resolution_now(&self) -> Option<Outcome> {
        match self.lock().resolution()? {
            Resolution::Results(o) => Some(o),
            Resolution::Forward(f) => f.shared().resolution_now(),
        }
    }

    /// Early resolution of pipelined calls (`Results::set_pipeline`).
    pub(crate) fn set_pipeline(self: &Arc<Self>, mut payload: Payload) {
        self.break_self_references(&mut payload);
        let frozen = payload.freeze();
        let mut s = self.lock();
        if s.pipeline.is_some() || s.outcome.is_some() {
            return;
        }
        s.pipeline = Some(frozen);
        self.publish(s);
    }

    /// Hands the resolution to the queue and resolves pipelined
    /// capabilities. (Once a queue exists every pipelined call goes through
    /// it, so sending after the lock is released lets nothing slip past:
    /// calls that reach the queue first wait there for the resolution.)
    ///
    /// A field under a network embargo stays unresolved until the embargo
    /// lifts: until then it must not be seen as what it became (by a
    /// promise we exported that resolved to it, whose `resolve` would let
    /// the peer call the end directly, or by a payload naming it), since
    /// calls made on it earlier are still held.
    fn publish(&self, s: MutexGuard<'_, AnswerState>) {
        let Some(resolution) = s.resolution() else {
            return;
        };
        let forwarder = s.forwarder.clone();
        let nodes: Vec<(Vec<u16>, Arc<Node>)> = s
            .pipelined
            .iter()
            .filter(|(p, _)| !s.embargoed.contains(p))
            .filter_map(|(p, w)| w.upgrade().map(|n| (p.clone(), n)))
            .collect();
        drop(s);
        if let Some(f) = forwarder {
            f.do_send(Resolved(resolution.clone()));
        }
        for (path, node) in nodes {
            resolve_field(CapRef { node }, &resolution, &path);
        }
    }
}

/// Resolves the pipelined capability `me` of field `path` to what the field
/// became.
fn resolve_field(me: CapRef, resolution: &Resolution, path: &[u16]) {
    let target = resolve_path(resolution, path);
    let target = if me.would_cycle(&target) {
        // A field resolved to itself.
        CapRef::broken(error::cycle())
    } else {
        target
    };
    if let Some(resolvable) = &me.node.resolvable {
        resolvable.resolve(target);
    }
}

fn resolve_path(resolution: &Resolution, path: &[u16]) -> CapRef {
    match resolution {
        Resolution::Results(Ok(frozen)) => frozen.cap_at(path),
        Resolution::Results(Err(e)) => CapRef::broken(e.clone()),
        Resolution::Forward(to) => to.pipelined_cap(path.to_vec()),
    }
}

/// Longest chain of tail calls followed (see `AnswerRef::embargoed_fields`).
const MAX_FORWARDS: usize = 64;

/// A caller's counted reference to an answer; see the module docs.
pub(crate) struct AnswerRef {
    answer: Arc<Answer>,
}

impl Clone for AnswerRef {
    fn clone(&self) -> Self {
        self.answer.lock().interest += 1;
        AnswerRef {
            answer: self.answer.clone(),
        }
    }
}

impl Drop for AnswerRef {
    fn drop(&mut self) {
        let mut s = self.answer.lock();
        s.interest = s.interest.saturating_sub(1);
        if s.interest == 0 {
            if let Some(w) = s.cancel_waker.take() {
                w.wake();
            }
            let hook = if s.outcome.is_none() {
                s.on_cancel.take()
            } else {
                None
            };
            drop(s);
            if let Some(h) = hook {
                h();
            }
        }
    }
}

impl AnswerRef {
    /// The outcome, when it is there.
    pub(crate) fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        self.answer.poll_outcome(cx)
    }

    /// The capability at `path` in the results, the same one each time.
    pub(crate) fn pipelined_cap(&self, path: Vec<u16>) -> CapRef {
        let mut s = self.answer.lock();
        s.pipelined.retain(|(_, w)| w.strong_count() > 0);
        if let Some(node) = s
            .pipelined
            .iter()
            .find(|(p, _)| *p == path)
            .and_then(|(_, w)| w.upgrade())
        {
            return CapRef { node };
        }
        // Already answered, and no queue still holds calls pipelined on it
        // (a call made now must not overtake them): no need for a promise.
        if let (Some(resolution), false, true) = (
            s.resolution(),
            s.embargoed.contains(&path),
            s.forwarder.is_none(),
        ) {
            drop(s);
            return resolve_path(&resolution, &path);
        }
        drop(s);
        let cap = CapRef::from_kind(Kind::Pipelined {
            answer: Source::new(self.clone()),
            path: path.clone(),
        });
        let mut s = self.answer.lock();
        match s.resolution().filter(|_| !s.embargoed.contains(&path)) {
            // Resolved while we built the node: resolve it now.
            Some(resolution) => {
                drop(s);
                if let Some(resolvable) = &cap.node.resolvable {
                    resolvable.resolve(resolve_path(&resolution, &path));
                }
            }
            None => s.pipelined.push((path, Arc::downgrade(&cap.node))),
        }
        cap
    }

    /// The fields of this answer (or of the answer it forwards to) under a
    /// network embargo, each as (what the field is, the pipelined
    /// capability that stays unresolved until the embargo lifts). Calls made
    /// on such a field before are still on their way back to what it is,
    /// so whoever learns of the field now must get the promise, not the
    /// end: a return naming the end would let its receiver call it
    /// directly and overtake them.
    pub(crate) fn embargoed_fields(&self) -> Vec<(CapRef, CapRef)> {
        let mut forwarded: Option<AnswerRef> = None;
        for _ in 0..MAX_FORWARDS {
            let cur = forwarded.as_ref().unwrap_or(self);
            let s = cur.answer.lock();
            if let Some(to) = s.forward.clone() {
                drop(s);
                forwarded = Some(to);
                continue;
            }
            // (Every return asks: usually there is nothing to copy.)
            if s.embargoed.is_empty() {
                return Vec::new();
            }
            let (paths, resolution) = (s.embargoed.clone(), s.resolution());
            drop(s);
            let Some(resolution) = resolution else {
                return Vec::new();
            };
            return paths
                .into_iter()
                .map(|path| (resolve_path(&resolution, &path), cur.pipelined_cap(path)))
                .collect();
        }
        Vec::new()
    }

    /// The shared answer.
    pub(crate) fn shared(&self) -> &Arc<Answer> {
        &self.answer
    }

    /// Delivers a call made on a pipelined field of this answer.
    pub(crate) fn deliver_pipelined(&self, path: &[u16], call: Call) {
        self.answer.deliver_pipelined(path, call)
    }
}

/// The FIFO queue of calls pipelined on one answer; see the module docs.
#[derive(Default)]
pub(crate) struct AnswerActor {
    queue: VecDeque<(Vec<u16>, Call)>,
    resolution: Option<Resolution>,
    /// Targets already looked up, by path.
    targets: Vec<(Vec<u16>, CapRef)>,
    /// The answer whose queue this is (see `AnswerState::queued`).
    answer: Weak<Answer>,
    /// The answer's call has gone to a peer: calls go after it through
    /// the connection instead of waiting here (see `GoRemote`).
    remote: bool,
    /// Last: see `ActorGuard`.
    _guard: registry::ActorGuard,
}

impl AnswerActor {
    /// `n` calls have been delivered: once none is left to deliver (and
    /// the resolution is known, so none can be queued here any more), the
    /// queue retires and calls on the answer's fields go to them directly,
    /// which cannot overtake anything now.
    fn delivered(&mut self, n: usize, ctx: &mut actix::Context<Self>) {
        let Some(answer) = self.answer.upgrade() else {
            return;
        };
        let mut s = answer.lock();
        s.queued = s.queued.saturating_sub(n);
        if s.queued > 0 || s.forwarder.as_ref() != Some(&ctx.address()) {
            return;
        }
        s.forwarder = None;
        ctx.stop();
        answer.release_resolved_fields(s);
    }

    /// Sends on a call taken from the queue or the mailbox, in order:
    /// through the connection if it must follow earlier calls there (or
    /// the answer is not known yet and the call went to a peer), else to
    /// its field; with neither possible yet, back to the queue.
    fn send_on(&mut self, path: Vec<u16>, call: Call) -> bool {
        let unresolved = self.resolution.is_none();
        let call = match self.answer.upgrade() {
            Some(answer) if self.remote || !unresolved => {
                match answer.route(&path, call, unresolved) {
                    None => return true,
                    Some(call) => call,
                }
            }
            _ => call,
        };
        if unresolved {
            // Not a question any more (or its connection is gone): the
            // call waits for the answer here after all.
            self.remote = false;
            self.queue.push_back((path, call));
            return false;
        }
        self.target(&path).deliver(call);
        true
    }

    fn target(&mut self, path: &[u16]) -> CapRef {
        if let Some((_, t)) = self.targets.iter().find(|(p, _)| p == path) {
            return t.clone();
        }
        let t = match &self.resolution {
            Some(r) => resolve_path(r, path),
            None => CapRef::broken(error::internal(
                "pipeline target looked up before resolution",
            )),
        };
        self.targets.push((path.to_vec(), t.clone()));
        t
    }
}

impl Actor for AnswerActor {
    type Context = actix::Context<Self>;
}

struct Forward(Vec<u16>, Call);
impl Message for Forward {
    type Result = ();
}

struct Resolved(Resolution);
impl Message for Resolved {
    type Result = ();
}

impl Handler<Forward> for AnswerActor {
    type Result = ();
    fn handle(&mut self, Forward(path, call): Forward, ctx: &mut Self::Context) {
        if !self.queue.is_empty() {
            // Behind calls still waiting for the answer.
            self.queue.push_back((path, call));
        } else if self.send_on(path, call) {
            self.delivered(1, ctx);
        }
    }
}

impl AnswerActor {
    /// Sends on the queued calls, in order, as far as they can go now.
    fn drain(&mut self, ctx: &mut actix::Context<Self>) {
        let mut n = 0;
        let queue = std::mem::take(&mut self.queue);
        let mut rest = queue.into_iter();
        for (path, call) in rest.by_ref() {
            if !self.send_on(path, call) {
                break;
            }
            n += 1;
        }
        // (If one went back to the queue, the rest wait behind it.)
        self.queue.extend(rest);
        self.delivered(n, ctx);
    }
}

/// The answer's call has gone to a peer (see `Answer::set_remote`).
struct GoRemote;
impl Message for GoRemote {
    type Result = ();
}

impl Handler<GoRemote> for AnswerActor {
    type Result = ();
    fn handle(&mut self, _: GoRemote, ctx: &mut Self::Context) {
        if self.resolution.is_none() {
            self.remote = true;
            self.drain(ctx);
        }
    }
}

impl Handler<Resolved> for AnswerActor {
    type Result = ();
    fn handle(&mut self, Resolved(outcome): Resolved, ctx: &mut Self::Context) {
        if self.resolution.is_some() {
            return;
        }
        self.resolution = Some(outcome);
        self.drain(ctx);
    }
}
