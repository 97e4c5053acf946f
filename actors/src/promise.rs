//! Local promises: capabilities that will be resolved later.
//!
//! Calls made on a promise wait in its FIFO queue and are forwarded, in
//! order, once the promise resolves. After that, calls go straight to the
//! resolution, with no extra hop: a peer that learnt of the resolution
//! (our `resolve`) may send later calls to the resolution directly, and
//! those must not overtake calls still on their way through the promise.
//! While the queue is being flushed, new calls join its end, so nothing
//! overtakes a queued call either.
//!
//! This file makes promises and decides how they resolve ([`Resolver`]);
//! the queue itself (`cap::PromiseQueue`) is part of the capability node,
//! which delivers into it.

use std::sync::{Arc, Weak};

use crate::cap::{CapRef, Kind, Node, PromiseHandle, PromiseQueue};
use crate::error;

/// Creates a local promise and the resolver that resolves it.
pub(crate) fn new_promise() -> (CapRef, Resolver) {
    let queue = Arc::new(PromiseQueue::default());
    let cap = CapRef::from_kind(Kind::Promise(PromiseHandle::new(queue.clone())));
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
    queue: Option<Arc<PromiseQueue>>,
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
