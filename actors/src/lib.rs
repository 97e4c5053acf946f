//! The actor runtime of capnp-actix.
//!
//! Every local capability is an actix actor with its own mailbox; calls on
//! one capability are delivered in the order they were sent (E-order). The
//! typed client and server code that `capnpc` generates runs on this
//! runtime: [`Cap::client`] gives a generated client (`echo::Client`) whose
//! requests travel through our hooks, and [`Cap::new`] hosts a generated
//! server implementation in a capability actor.
//!
//! Most users depend on the `capnp-actix` crate, which re-exports this one
//! and documents the whole library in its tutorial.
//!
//! # Handles and threads
//!
//! [`Cap`] is `Send + Sync`: it may be moved to another arbiter, thread or
//! actix-web worker and called there ([`Cap::client`] builds the generated
//! client on the calling thread). Generated clients themselves are `!Send`,
//! as capnp's hook types are, and so are the futures of their calls: on
//! another arbiter, start them with `arbiter.spawn_fn(move || {
//! actix::spawn(async move { cap.client()... }) })` rather than
//! `arbiter.spawn`, which wants a `Send` future.
//!
//! # Release
//!
//! A capability lives while any handle refers to it (a `Cap`, a generated
//! client, an entry in a message's cap table). When the last one is
//! dropped, its actor stops once its running calls are done and the server
//! value is dropped: the server's `Drop` is its release hook. [`debug`]
//! lists what is still alive.
//!
//! # Cancellation
//!
//! Dropping a call's promise (and its pipeline) before the method starts
//! means the method never starts. Dropping it while the method runs drops
//! the method's future at its next await point, unless the method wrapped
//! its work in [`shield`], which lets it run to completion. (The reference
//! implementations never cancel a running method; we do by default so that
//! abandoned work stops.)
//!
//! # Errors
//!
//! Errors are [`capnp::Error`]: one type with the protocol's kinds
//! (`Failed`, `Overloaded`, `Disconnected`, `Unimplemented`) and a reason.
//! A method that panics fails that call with `Failed`; the capability goes
//! on serving.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod answer;
mod cap;
pub mod connection;
pub mod error;
mod foreign;
mod hook;
mod host;
mod io;
mod payload;
mod promise;
mod registry;

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, ArbiterHandle, Handler};
use capnp::capability::{FromClientHook, FromServer};

pub use cap::{CapRef, WeakCapRef};
pub use host::IncomingCall;
pub use promise::Resolver;

/// What is alive: capabilities with their reference counts, and actors.
pub mod debug {
    pub use crate::registry::{assert_all_released, report, settle, LiveCap, Report};
}

/// A capability of interface `C` (a generated client type such as
/// `echo::Client`): `Send + Sync`, cloned cheaply, released when the last
/// handle goes.
pub struct Cap<C = capnp::capability::Client> {
    raw: CapRef,
    marker: PhantomData<fn() -> C>,
}

impl<C> Clone for Cap<C> {
    fn clone(&self) -> Self {
        Cap {
            raw: self.raw.clone(),
            marker: PhantomData,
        }
    }
}

impl<C> std::fmt::Debug for Cap<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.raw.fmt(f)
    }
}

impl<C> PartialEq for Cap<C> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}
impl<C> Eq for Cap<C> {}

impl<C> Cap<C> {
    fn wrap(raw: CapRef) -> Self {
        Cap {
            raw,
            marker: PhantomData,
        }
    }

    /// A typed handle for an untyped capability.
    pub fn from_raw(raw: CapRef) -> Self {
        Cap::wrap(raw)
    }

    /// The untyped handle.
    pub fn raw(&self) -> &CapRef {
        &self.raw
    }

    /// The same capability, seen as interface `D`. Calls on a method the
    /// capability does not implement fail with Unimplemented.
    pub fn cast<D>(self) -> Cap<D> {
        Cap::wrap(self.raw)
    }

    /// The capability's identifier, unique within the process.
    pub fn id(&self) -> u64 {
        self.raw.id()
    }

    /// How many handles refer to this capability.
    pub fn ref_count(&self) -> usize {
        self.raw.ref_count()
    }

    /// A capability that fails every call with `error`.
    pub fn broken(error: capnp::Error) -> Self {
        Cap::wrap(CapRef::broken(error))
    }

    /// A local promise for a capability, and the [`Resolver`] that settles
    /// it. Calls made on the promise wait, in order, until it resolves.
    /// Must be called inside an actix system.
    pub fn promise() -> (Self, Resolver) {
        let (raw, resolver) = promise::new_promise();
        (Cap::wrap(raw), resolver)
    }

    /// Settles with `Ok` once the capability is resolved to a working one,
    /// with the error if it is or becomes broken.
    pub fn when_resolved(&self) -> impl Future<Output = Result<(), capnp::Error>> + Send + 'static {
        self.raw.when_resolved()
    }

    /// Runs `watcher` when the capability breaks (at once if broken).
    /// Does not keep the capability alive; see [`CapRef::on_broken`].
    pub fn on_broken(&self, watcher: impl FnOnce(capnp::Error) + Send + 'static) {
        self.raw.on_broken(watcher)
    }

    /// A capability served by a user's own actor: each call arrives as an
    /// [`IncomingCall`] message, which the actor answers with
    /// [`IncomingCall::serve`] (or [`IncomingCall::fail`]), with full access
    /// to its state and context. The actor decides its own lifetime. Each
    /// call makes a new capability: keep the `Cap` and clone it to hand out
    /// one identity.
    pub fn from_actor<A>(addr: Addr<A>) -> Self
    where
        A: Actor + Handler<IncomingCall>,
        A::Context: ToEnvelope<A, IncomingCall>,
    {
        Cap::wrap(CapRef::from_kind(cap::Kind::Local(addr.recipient())))
    }
}

impl<C: FromClientHook> Cap<C> {
    /// Hosts `server` (an implementation of the generated `Server` trait of
    /// `C`'s interface) in a new capability actor on the current arbiter.
    /// Must be called inside an actix system.
    pub fn new<S>(server: S) -> Self
    where
        C: FromServer<S>,
    {
        let dispatch = C::from_server(Rc::new(server));
        Cap::wrap(host::spawn_host(host::ServerHost(dispatch)))
    }

    /// Hosts a server built by `make` on another arbiter (the server value
    /// itself need not be `Send`: it is built and lives there).
    pub fn new_on<S, F>(arbiter: &ArbiterHandle, make: F) -> Self
    where
        C: FromServer<S>,
        F: FnOnce() -> S + Send + 'static,
    {
        let id = cap::next_id();
        let addr = host::CapActor::start_in_arbiter(arbiter, move |_| {
            host::CapActor::new(host::ServerHost(C::from_server(Rc::new(make()))), id)
        });
        Cap::wrap(CapRef::from_kind_id(cap::Kind::Local(addr.recipient()), id))
    }

    /// The generated client for this capability, usable on this thread.
    pub fn client(&self) -> C {
        C::new(hook::to_hook(&self.raw))
    }

    /// The capability behind a generated client. A client made by this
    /// runtime gives back its own capability (identity is kept); a client
    /// of another runtime (the capnp-rpc crate's `new_client`, say) gets a
    /// proxy that serves it on this thread.
    pub fn from_client(client: &C) -> Self {
        Cap::wrap(hook::to_cap(client.as_client_hook().add_ref()))
    }
}

impl<C> From<Cap<C>> for CapRef {
    fn from(c: Cap<C>) -> Self {
        c.raw
    }
}

impl<C> From<&Cap<C>> for CapRef {
    fn from(c: &Cap<C>) -> Self {
        c.raw.clone()
    }
}

/// Hosts `server` in a new capability actor and returns its generated
/// client: the counterpart of `capnp_rpc::new_client`.
pub fn new_client<C, S>(server: S) -> C
where
    C: FromServer<S>,
{
    Cap::<C>::new(server).client()
}

/// Makes a method body immune to cancellation: if the caller gives up, the
/// body still runs to completion (on the current thread) instead of being
/// dropped. Must be polled inside an actix system.
pub fn shield<F>(body: F) -> Shield<F>
where
    F: Future + 'static,
{
    Shield {
        body: Some(Box::pin(body)),
    }
}

/// See [`shield`].
pub struct Shield<F: Future + 'static> {
    body: Option<Pin<Box<F>>>,
}

impl<F: Future + 'static> Future for Shield<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.body.as_mut() {
            Some(b) => {
                let r = b.as_mut().poll(cx);
                if r.is_ready() {
                    self.body = None;
                }
                r
            }
            None => Poll::Pending,
        }
    }
}

impl<F: Future + 'static> Drop for Shield<F> {
    fn drop(&mut self) {
        if let Some(body) = self.body.take() {
            actix_rt::spawn(async move {
                let _ = body.await;
            });
        }
    }
}
