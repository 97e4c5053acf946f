//! Local promises: capabilities that will be resolved later.
//!
//! Calls made on a promise queue in its actor's mailbox and are forwarded,
//! in order, once the promise resolves; later calls keep going through the
//! actor, so that none can overtake those queued before the resolution.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use actix::{Actor, Addr, Handler, Message};

use crate::answer::Call;
use crate::cap::{CapRef, Kind, Node};
use crate::error;
use crate::registry;

/// The promise's side of the actor.
pub(crate) struct PromiseHandle {
    actor: Addr<PromiseActor>,
}

impl PromiseHandle {
    pub(crate) fn deliver(&self, call: Call) {
        self.actor.do_send(PromiseMsg::Call(call));
    }
}

/// Creates a local promise and the resolver that settles it.
pub(crate) fn new_promise() -> (CapRef, Resolver) {
    let actor = PromiseActor::default().start();
    let cap = CapRef::from_kind(Kind::Promise(PromiseHandle {
        actor: actor.clone(),
    }));
    let resolver = Resolver {
        node: Arc::downgrade(&cap.node),
        actor: Some(actor),
    };
    (cap, resolver)
}

/// Settles a local promise made with [`crate::Cap::promise`]. Dropping it
/// unresolved breaks the promise.
pub struct Resolver {
    node: Weak<Node>,
    actor: Option<Addr<PromiseActor>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("pending", &self.actor.is_some())
            .finish()
    }
}

impl Resolver {
    /// Resolves the promise to `target`. Resolving a promise to itself,
    /// directly or through other promises, breaks it with a cycle error.
    pub fn resolve_to(mut self, target: CapRef) {
        self.settle(target);
    }

    /// Breaks the promise with `error`.
    pub fn reject(mut self, error: capnp::Error) {
        self.settle(CapRef::broken(error));
    }

    fn settle(&mut self, target: CapRef) {
        let Some(actor) = self.actor.take() else {
            return;
        };
        let target = match self.node.upgrade() {
            Some(node) => {
                let me = CapRef { node };
                let target = if me.would_cycle(&target) {
                    CapRef::broken(error::cycle())
                } else {
                    target
                };
                if let Some(s) = &me.node.settle {
                    s.settle(target.clone());
                }
                target
            }
            // Released before it resolved: only queued calls care now.
            None => target,
        };
        actor.do_send(PromiseMsg::Resolve(target));
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        if self.actor.is_some() {
            self.settle(CapRef::broken(error::unresolved_promise()));
        }
    }
}

/// Queues calls until the promise resolves, then forwards them in order.
#[derive(Default)]
pub(crate) struct PromiseActor {
    queue: VecDeque<Call>,
    target: Option<CapRef>,
    /// Last: see `ActorGuard`.
    _guard: registry::ActorGuard,
}

impl Actor for PromiseActor {
    type Context = actix::Context<Self>;
}

pub(crate) enum PromiseMsg {
    Call(Call),
    Resolve(CapRef),
}

impl Message for PromiseMsg {
    type Result = ();
}

impl Handler<PromiseMsg> for PromiseActor {
    type Result = ();
    fn handle(&mut self, msg: PromiseMsg, _: &mut Self::Context) {
        match msg {
            PromiseMsg::Call(call) => match &self.target {
                Some(t) => t.deliver(call),
                None => self.queue.push_back(call),
            },
            PromiseMsg::Resolve(target) => {
                if self.target.is_some() {
                    return;
                }
                while let Some(call) = self.queue.pop_front() {
                    target.deliver(call);
                }
                self.target = Some(target);
            }
        }
    }
}
