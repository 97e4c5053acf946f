//! Local promises: capabilities that will be resolved later.
//!
//! Calls made on a promise wait in its FIFO queue and are forwarded, in
//! order, once the promise resolves. After that, calls go straight to the
//! resolution, with no extra hop: a peer that learnt of the resolution
//! (our `resolve`) may send later calls to the resolution directly, and
//! those must not overtake calls still on their way through the promise.
//! While the queue is being flushed, new calls join its end, so nothing
//! overtakes a queued call either.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::call::Call;
use crate::cap::{CapRef, Kind, Node};
use crate::error;
use crate::registry;

#[derive(Default)]
struct PromiseState {
    queue: VecDeque<Call>,
    target: Option<CapRef>,
    /// Someone is forwarding the queue to `target`: new calls queue too.
    flushing: bool,
}

/// The shared queue of one promise.
#[derive(Default)]
struct Queue {
    state: Mutex<PromiseState>,
    /// Counts the promise among the runtime's live objects (see
    /// `ActorGuard`), as the actor that used to hold the queue did.
    _guard: registry::ActorGuard,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, PromiseState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forwards queued calls to the target, one at a time, never holding
    /// the lock while delivering (delivering can run arbitrary code, which
    /// may call this promise again: such calls queue behind).
    fn flush(&self) {
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
    queue: Arc<Queue>,
}

impl PromiseHandle {
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

/// Creates a local promise and the resolver that resolves it.
pub(crate) fn new_promise() -> (CapRef, Resolver) {
    let queue = Arc::new(Queue::default());
    let cap = CapRef::from_kind(Kind::Promise(PromiseHandle {
        queue: queue.clone(),
    }));
    let resolver = Resolver {
        node: Arc::downgrade(&cap.node),
        queue: Some(queue),
    };
    (cap, resolver)
}

/// Resolves a local promise made with [`crate::Cap::promise`]. Dropping it
/// unresolved breaks the promise.
pub struct Resolver {
    node: Weak<Node>,
    queue: Option<Arc<Queue>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("pending", &self.queue.is_some())
            .finish()
    }
}

impl Resolver {
    /// Resolves the promise to `target`. Resolving a promise to itself,
    /// directly or through other promises, breaks it with a cycle error.
    pub fn resolve_to(mut self, target: CapRef) {
        self.flush_and_resolve(target);
    }

    /// Breaks the promise with `error`.
    pub fn reject(mut self, error: capnp::Error) {
        self.flush_and_resolve(CapRef::broken(error));
    }

    fn flush_and_resolve(&mut self, target: CapRef) {
        let Some(queue) = self.queue.take() else {
            return;
        };
        let target = match self.node.upgrade() {
            Some(node) => {
                let me = CapRef { node };
                if me.would_cycle(&target) {
                    CapRef::broken(error::cycle())
                } else {
                    target
                }
            }
            // Released before it resolved: only queued calls care now.
            None => target,
        };
        {
            let mut s = queue.lock();
            if s.target.is_some() {
                return;
            }
            s.target = Some(target.clone());
            s.flushing = true;
        }
        // The queued calls go first, then the node says it is resolved (so
        // that nothing following the resolution overtakes them).
        queue.flush();
        if let Some(node) = self.node.upgrade() {
            if let Some(s) = &node.resolvable {
                s.resolve(target);
            }
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        if self.queue.is_some() {
            self.flush_and_resolve(CapRef::broken(error::unresolved_promise()));
        }
    }
}
