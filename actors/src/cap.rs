//! Capability handles.
//!
//! A [`CapRef`] is the runtime's one handle to a capability: `Send + Sync`,
//! cheap to clone, counted. It names a [`Node`], which is what the
//! capability *is*: a local capability actor, a local promise, a field of an
//! unanswered call (pipelined), a broken capability, or a proxy for a
//! capability made by another runtime (a "foreign" hook). When the last
//! handle goes, the node is dropped, which releases the capability: a local
//! capability's actor then stops once its running calls are done.
//!
//! A local promise's FIFO queue ([`PromiseQueue`]) lives here rather than
//! in `promise.rs`: the node delivers into it, so capability nodes need
//! nothing from the file that makes and resolves promises.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

use actix::Recipient;
use futures::channel::oneshot;
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::answer::AnswerRef;
use crate::call::{Call, IncomingCall};
use crate::error;
use crate::registry;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh capability id.
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A callback run when a capability breaks.
pub(crate) type BrokenWatcher = Box<dyn FnOnce(capnp::Error) + Send>;

/// What a capability is.
pub(crate) enum Kind {
    /// A capability served by an actor (ours, or a user's actor hosting a
    /// service): calls go into its mailbox.
    Local(Recipient<IncomingCall>),
    /// A local promise: calls wait in its FIFO queue until it resolves.
    Promise(PromiseHandle),
    /// A pointer field of an answer that may not have arrived yet.
    Pipelined { answer: Source, path: Vec<u16> },
    /// A capability that fails every call with this error.
    Broken(capnp::Error),
    /// A capability imported from a peer over a connection: calls go to the
    /// connection actor.
    Remote {
        conn: Recipient<crate::call::ConnMsg>,
        conn_id: u64,
        import: u32,
    },
    /// A stateless service with one instance per arbiter: a call goes to
    /// the instance of the calling thread's slot (see `slot.rs`).
    PerArbiter(std::sync::Arc<[Recipient<IncomingCall>]>),
    /// A capability of another runtime (a hook made by the capnp-rpc crate,
    /// say), served through a proxy actor on the thread the hook lives on.
    Foreign {
        proxy: Recipient<IncomingCall>,
        thread: ThreadId,
        key: usize,
    },
    /// A capability that hands its calls on by rules of its own (a
    /// default deadline, a reconnecting import): see `wrap.rs`.
    Wrapped(Arc<dyn crate::wrap::Wrap>),
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Local(_) => "local",
            Kind::PerArbiter(_) => "per-arbiter",
            Kind::Promise(_) => "promise",
            Kind::Pipelined { .. } => "pipelined",
            Kind::Broken(_) => "broken",
            Kind::Foreign { .. } => "foreign",
            Kind::Remote { .. } => "remote",
            Kind::Wrapped(w) => w.name(),
        }
    }
}

/// The queue of a local promise and what it resolved to.
#[derive(Default)]
pub(crate) struct PromiseState {
    queue: VecDeque<Call>,
    pub(crate) target: Option<CapRef>,
    /// Someone is forwarding the queue to `target`: new calls queue too.
    pub(crate) flushing: bool,
}

/// The shared queue of one local promise (see `promise.rs`): held by the
/// promise's node and by its `Resolver`.
#[derive(Default)]
pub(crate) struct PromiseQueue {
    state: Mutex<PromiseState>,
    /// Counts the promise among the runtime's live objects (see
    /// `ActorGuard`), as the actor that used to hold the queue did.
    _guard: registry::ActorGuard,
}

impl PromiseQueue {
    pub(crate) fn lock(&self) -> MutexGuard<'_, PromiseState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forwards queued calls to the target, one at a time, never holding
    /// the lock while delivering (delivering can run arbitrary code, which
    /// may call this promise again: such calls queue behind).
    pub(crate) fn flush(&self) {
        loop {
            let (target, call) = {
                let mut s = self.lock();
                let Some(target) = s.target.clone() else {
                    s.flushing = false;
                    return;
                };
                match s.queue.pop_front() {
                    Some(call) => (target, call),
                    None => {
                        s.flushing = false;
                        return;
                    }
                }
            };
            target.deliver(call);
        }
    }
}

/// The promise's side of the queue.
pub(crate) struct PromiseHandle {
    queue: Arc<PromiseQueue>,
}

impl PromiseHandle {
    pub(crate) fn new(queue: Arc<PromiseQueue>) -> Self {
        PromiseHandle { queue }
    }

    pub(crate) fn deliver(&self, call: Call) {
        let mut s = self.queue.lock();
        match (&s.target, s.flushing) {
            (Some(t), false) => {
                let t = t.clone();
                drop(s);
                t.deliver(call);
            }
            _ => s.queue.push_back(call),
        }
    }
}

/// The answer a pipelined capability is a field of. The capability lets
/// go of it once the field has resolved for good and calls on it can go
/// straight to what it became (see `Answer::release_resolved_fields`): otherwise
/// results holding fields of each other's answers would keep each other
/// alive for ever.
pub(crate) struct Source(Mutex<Option<AnswerRef>>);

impl Source {
    pub(crate) fn new(answer: AnswerRef) -> Self {
        Source(Mutex::new(Some(answer)))
    }

    fn lock(&self) -> MutexGuard<'_, Option<AnswerRef>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A counted reference to the answer, unless let go.
    pub(crate) fn get(&self) -> Option<AnswerRef> {
        self.lock().clone()
    }

    /// The shared answer, without counting as interest in it.
    pub(crate) fn shared(&self) -> Option<Arc<crate::answer::Answer>> {
        self.lock().as_ref().map(|a| a.shared().clone())
    }

    /// True if this is a field of `answer` (and has not let go of it).
    pub(crate) fn is(&self, answer: &Arc<crate::answer::Answer>) -> bool {
        self.lock()
            .as_ref()
            .is_some_and(|a| Arc::ptr_eq(a.shared(), answer))
    }

    /// Lets go of the answer.
    pub(crate) fn release(&self) {
        let answer = self.lock().take();
        // Dropped outside our lock: it may cancel the call.
        drop(answer);
    }
}

/// How a promise-like node (local promise or pipelined field) resolves.
#[derive(Default)]
pub(crate) struct Resolvable {
    state: Mutex<ResolvableState>,
    /// For an import: a call has been sent to it (or is on its way to the
    /// connection), or pipelined on a field that turned out to be it. Only
    /// then does a resolve to something of ours need an embargo: otherwise
    /// no call of ours can be on its way back through the peer.
    called: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct ResolvableState {
    target: Option<CapRef>,
    watchers: Vec<BrokenWatcher>,
    waiters: Vec<oneshot::Sender<()>>,
}

impl Resolvable {
    fn lock(&self) -> MutexGuard<'_, ResolvableState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn mark_called(&self) {
        self.called.store(true, Ordering::Relaxed);
    }

    pub(crate) fn was_called(&self) -> bool {
        self.called.load(Ordering::Relaxed)
    }

    pub(crate) fn target(&self) -> Option<CapRef> {
        self.lock().target.clone()
    }

    /// Records the resolution (once) and runs what waited for it.
    pub(crate) fn resolve(&self, target: CapRef) {
        let (watchers, waiters) = {
            let mut s = self.lock();
            if s.target.is_some() {
                return;
            }
            s.target = Some(target.clone());
            (
                std::mem::take(&mut s.watchers),
                std::mem::take(&mut s.waiters),
            )
        };
        for w in watchers {
            target.on_broken_boxed(w);
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}

/// The shared part of a capability; see the module docs.
pub(crate) struct Node {
    pub(crate) id: u64,
    scope: usize,
    pub(crate) kind: Kind,
    /// For promise-like nodes: the resolution and who waits for it.
    pub(crate) resolvable: Option<Resolvable>,
    /// The flow control of streaming calls made on this capability, from
    /// the first one on (`stream.rs`).
    stream: std::sync::OnceLock<Arc<crate::stream::Flow>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Kind::Remote { conn, import, .. } = &self.kind {
            conn.do_send(crate::call::ConnMsg::Release {
                import: *import,
                node: self.id,
            });
        }
        registry::remove_cap(self.scope, self.id);
        tracing::trace!(
            cap = self.id,
            kind = self.kind.name(),
            "capability released"
        );
    }
}

/// A handle to a capability; see the module docs.
#[derive(Clone)]
pub struct CapRef {
    pub(crate) node: Arc<Node>,
}

impl std::fmt::Debug for CapRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cap#{}({})", self.node.id, self.node.kind.name())
    }
}

impl PartialEq for CapRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.node, &other.node)
    }
}
impl Eq for CapRef {}

impl std::hash::Hash for CapRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.node) as usize).hash(state)
    }
}

/// A handle that does not keep its capability alive; see
/// [`CapRef::downgrade`].
#[derive(Clone, Debug)]
pub struct WeakCapRef {
    node: std::sync::Weak<Node>,
}

impl WeakCapRef {
    /// The capability, if some [`CapRef`] still holds it.
    pub fn upgrade(&self) -> Option<CapRef> {
        self.node.upgrade().map(|node| CapRef { node })
    }
}

impl CapRef {
    pub(crate) fn from_kind(kind: Kind) -> Self {
        Self::from_kind_id(kind, next_id())
    }

    pub(crate) fn from_kind_id(kind: Kind, id: u64) -> Self {
        // Promise-like nodes can be resolved; imports are resolved only when
        // the peer resolves them (path shortening) or they break (their connection ends, or the peer resolves
        // them to an error).
        let resolvable = matches!(
            kind,
            Kind::Promise(_) | Kind::Pipelined { .. } | Kind::Remote { .. }
        )
        .then(Resolvable::default);
        let scope = registry::current_scope();
        let name = kind.name();
        let node = Arc::new(Node {
            id,
            scope,
            kind,
            resolvable,
            stream: std::sync::OnceLock::new(),
        });
        let weak: std::sync::Weak<Node> = Arc::downgrade(&node);
        registry::add_cap(scope, id, weak, name);
        CapRef { node }
    }

    /// A capability that fails every call with `error`.
    pub fn broken(error: capnp::Error) -> Self {
        Self::from_kind(Kind::Broken(error))
    }

    /// The capability's identifier, unique within the process.
    pub fn id(&self) -> u64 {
        self.node.id
    }

    /// How many handles refer to this capability.
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.node)
    }

    /// A weak handle: it does not keep the capability alive, and gives it
    /// back while some other handle does (caches of restored services).
    pub fn downgrade(&self) -> WeakCapRef {
        WeakCapRef {
            node: Arc::downgrade(&self.node),
        }
    }

    pub(crate) fn kind(&self) -> &Kind {
        &self.node.kind
    }

    /// The flow control of streaming calls on this capability (made with
    /// the default [`WindowConfig`](crate::stream::WindowConfig) by the
    /// first streaming call, unless [`CapRef::set_stream_window`] came
    /// first).
    pub(crate) fn stream_flow(&self) -> &Arc<crate::stream::Flow> {
        self.node
            .stream
            .get_or_init(|| crate::stream::Flow::new(Default::default()))
    }

    /// The error that failed a stream of calls on this capability, if one
    /// did: every later call fails with it.
    pub(crate) fn stream_failure(&self) -> Option<capnp::Error> {
        self.node.stream.get().and_then(|flow| flow.failure())
    }

    /// Sets the window of streaming calls (`-> stream` methods) made on
    /// this capability, through any of its handles. It must come before the
    /// first streaming call: afterwards the stream's own window stays, and
    /// this returns `false`.
    pub fn set_stream_window(&self, config: crate::stream::WindowConfig) -> bool {
        self.node
            .stream
            .set(crate::stream::Flow::new(config))
            .is_ok()
    }

    /// The window of the streaming calls made on this capability, in bytes
    /// (`None` before the first one).
    pub fn stream_window(&self) -> Option<usize> {
        self.node.stream.get().map(|flow| flow.window())
    }

    /// True for a capability that is not resolved yet (a local promise or a
    /// pipelined field, unresolved or resolved).
    pub fn is_promise(&self) -> bool {
        matches!(self.kind(), Kind::Promise(_) | Kind::Pipelined { .. })
    }

    /// The error, if this capability is broken (following resolved promises).
    pub fn broken_error(&self) -> Option<capnp::Error> {
        match self.shortened().kind() {
            Kind::Broken(e) => Some(e.clone()),
            Kind::Wrapped(w) => w.broken_error(),
            _ => None,
        }
    }

    /// What this capability resolved to, one step, if it is a resolved promise.
    pub(crate) fn resolved(&self) -> Option<CapRef> {
        self.node.resolvable.as_ref().and_then(Resolvable::target)
    }

    /// The end of the chain of resolutions known so far (bounded, so that a
    /// cycle that slipped through cannot hang the caller).
    pub(crate) fn shortened(&self) -> CapRef {
        let mut cur = self.clone();
        for _ in 0..MAX_CHAIN {
            match cur.resolved() {
                Some(next) => cur = next,
                None => break,
            }
        }
        cur
    }

    /// True if resolving `self` to `target` would make a cycle.
    pub(crate) fn would_cycle(&self, target: &CapRef) -> bool {
        let mut cur = target.clone();
        for _ in 0..MAX_CHAIN {
            if &cur == self {
                return true;
            }
            match cur.resolved() {
                Some(next) => cur = next,
                None => return false,
            }
        }
        true
    }

    /// Sends a call to this capability. Never blocks; the call's answer
    /// is completed with an error if the capability cannot take it.
    pub(crate) fn deliver(&self, call: Call) {
        match self.kind() {
            Kind::Local(r) | Kind::Foreign { proxy: r, .. } => {
                // If the actor has stopped, the message is dropped and the
                // call's `Drop` fails its answer with Disconnected.
                r.do_send(IncomingCall { call });
            }
            Kind::PerArbiter(instances) => {
                let slot = crate::slot::current() % instances.len();
                instances[slot].do_send(IncomingCall { call });
            }
            Kind::Promise(p) => p.deliver(call),
            Kind::Remote {
                conn,
                conn_id,
                import,
            } => {
                // A disembargo's marker reflects onto this very import, even
                // if it has resolved since: the peer's embargo names it.
                let marker_here = matches!(call.marker, Some(m) if m.conn_id == *conn_id);
                if let (Some(next), false) = (self.resolved(), marker_here) {
                    return next.deliver(call);
                }
                if let Some(a) = call.completer.answer() {
                    a.set_remote(conn.clone(), *conn_id);
                }
                if let (Some(resolvable), None) = (&self.node.resolvable, call.marker) {
                    resolvable.mark_called();
                }
                conn.do_send(crate::call::ConnMsg::Call {
                    target: crate::call::RemoteTarget::Import(*import),
                    call,
                })
            }
            Kind::Pipelined { answer, path } => match answer.get() {
                Some(answer) => {
                    let mut call = call;
                    call.completer.depend_on(&answer);
                    answer.deliver_pipelined(path, call)
                }
                // Let go of its answer once resolved with nothing in flight:
                // calls go straight to what the field became.
                None => match self.resolved() {
                    Some(target) => target.deliver(call),
                    None => call.fail(error::internal("pipelined field let go unsettled")),
                },
            },
            Kind::Broken(e) => call.fail(e.clone()),
            Kind::Wrapped(w) => w.deliver(call),
        }
    }

    /// Waits until this promise-like capability has resolved all the way
    /// (through chains of promises) without keeping it alive: gives the
    /// end it resolved to, or `None` if it was released first.
    pub(crate) fn resolved_end_weak(&self) -> BoxFuture<'static, Option<CapRef>> {
        let mut cur = Some(self.clone());
        async move {
            for _ in 0..MAX_CHAIN {
                let now = cur.take()?;
                let rx = {
                    let Some(resolvable) = now.node.resolvable.as_ref() else {
                        return Some(now);
                    };
                    if let Kind::Remote { .. } = now.kind() {
                        // An import is resolved, unless it has resolved (or
                        // broken) since; then follow that, which may be an
                        // embargo's promise still to resolve.
                        match resolvable.target() {
                            None => return Some(now),
                            Some(t) => {
                                cur = Some(t);
                                continue;
                            }
                        }
                    }
                    let mut s = resolvable.lock();
                    match &s.target {
                        Some(t) => {
                            let t = t.clone();
                            drop(s);
                            cur = Some(t);
                            continue;
                        }
                        None => {
                            let (tx, rx) = oneshot::channel();
                            s.waiters.push(tx);
                            rx
                        }
                    }
                };
                let weak = now.downgrade();
                drop(now);
                let _ = rx.await;
                cur = Some(weak.upgrade()?);
            }
            Some(CapRef::broken(error::cycle()))
        }
        .boxed()
    }

    /// Waits until this capability is resolved: `Ok` for a working
    /// capability, `Err` for a broken one. Follows promise chains.
    pub fn when_resolved(&self) -> BoxFuture<'static, Result<(), capnp::Error>> {
        let this = self.clone();
        async move {
            let mut cur = this;
            for _ in 0..MAX_CHAIN {
                match cur.kind() {
                    Kind::Broken(e) => return Err(e.clone()),
                    Kind::Wrapped(w) => return w.when_resolved().await,
                    _ => {}
                }
                let Some(resolvable) = cur.node.resolvable.as_ref() else {
                    return Ok(());
                };
                if let (Kind::Remote { .. }, None) = (cur.kind(), resolvable.target()) {
                    // A working import is resolved.
                    return Ok(());
                }
                let rx = {
                    let mut s = resolvable.lock();
                    match &s.target {
                        Some(t) => {
                            let t = t.clone();
                            drop(s);
                            cur = t;
                            continue;
                        }
                        None => {
                            let (tx, rx) = oneshot::channel();
                            s.waiters.push(tx);
                            rx
                        }
                    }
                };
                // The promise is kept alive by `cur` while we wait.
                let _ = rx.await;
            }
            Err(error::cycle())
        }
        .boxed()
    }

    /// Runs `watcher` if this capability breaks; at once if it is broken
    /// already. Follows promise chains. The watcher does not keep the
    /// capability alive: if the capability is released first, the watcher
    /// is dropped without running.
    pub fn on_broken(&self, watcher: impl FnOnce(capnp::Error) + Send + 'static) {
        self.on_broken_boxed(Box::new(watcher))
    }

    pub(crate) fn on_broken_boxed(&self, watcher: BrokenWatcher) {
        match self.kind() {
            Kind::Broken(e) => watcher(e.clone()),
            Kind::Wrapped(w) => w.on_broken(watcher),
            _ => {
                if let Some(resolvable) = &self.node.resolvable {
                    let mut s = resolvable.lock();
                    match &s.target {
                        Some(t) => {
                            let t = t.clone();
                            drop(s);
                            t.on_broken_boxed(watcher);
                        }
                        None => s.watchers.push(watcher),
                    }
                }
                // Resolved working capabilities of this runtime never break
                // (connection imports, which can, arrive with the network).
            }
        }
    }
}

/// Longest chain of promise resolutions followed before giving up with a
/// cycle error.
pub(crate) const MAX_CHAIN: usize = 10_000;
