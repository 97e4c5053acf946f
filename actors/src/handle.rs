//! [`Cap<C>`]: the typed, `Send + Sync` handle users hold, and how one is
//! made (hosting a generated server, a user's actor, a promise) and turned
//! into the generated client that runs on the calling thread.

use std::future::Future;
use std::marker::PhantomData;
use std::rc::Rc;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, ArbiterHandle, Handler};
use capnp::capability::{FromClientHook, FromServer};

use crate::call::IncomingCall;
use crate::cap::{self, CapRef};
use crate::hook;
use crate::host;
use crate::promise::{self, Resolver};
use crate::server;

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

    /// A local promise for a capability, and the [`Resolver`] that resolves
    /// it. Calls made on the promise wait, in order, until it resolves.
    /// Must be called inside an actix system.
    pub fn promise() -> (Self, Resolver) {
        let (raw, resolver) = promise::new_promise();
        (Cap::wrap(raw), resolver)
    }

    /// Resolves with `Ok` once the capability is resolved to a working one,
    /// with the error if it is or becomes broken.
    pub fn when_resolved(&self) -> impl Future<Output = Result<(), capnp::Error>> + Send + 'static {
        self.raw.when_resolved()
    }

    /// Runs `watcher` when the capability breaks (at once if broken).
    /// Does not keep the capability alive; see [`CapRef::on_broken`].
    pub fn on_broken(&self, watcher: impl FnOnce(capnp::Error) + Send + 'static) {
        self.raw.on_broken(watcher)
    }

    /// The same capability, every call on which (made through this handle,
    /// its clones or its `.client()`) fails with
    /// [`deadline::expired`](crate::deadline::expired) (Overloaded) if no
    /// answer came within `after`; the call is cancelled (a `finish` to a
    /// peer) once its caller lets go of its promise and pipeline. A new
    /// handle: calls made through `self` have no deadline. See
    /// [`crate::deadline`].
    pub fn with_deadline(&self, after: std::time::Duration) -> Self {
        Cap::wrap(crate::wrap::with_deadline(self.raw.clone(), after))
    }

    /// A capability served by a user's own actor: each call arrives as an
    /// [`IncomingCall`] message. An actor implementing generated actor
    /// traits and [`serve_actor!`](crate::serve_actor) runs the typed
    /// method at once (see [`crate::actor`]); a hand-written handler may
    /// answer with [`IncomingCall::serve`] (or [`IncomingCall::fail`]). The
    /// actor decides its own lifetime. Each call makes a new capability:
    /// keep the `Cap` and clone it to hand out one identity.
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
    ///
    /// # Panics
    ///
    /// Outside an actix system, with a message saying how to start one
    /// (see [`crate::system`]).
    pub fn new<S>(server: S) -> Self
    where
        C: FromServer<S>,
    {
        let dispatch = C::from_server(Rc::new(server));
        Cap::wrap(crate::system::spawn_checked(
            "Cap::new (hosting a capability)",
            || host::spawn_host(server::ServerHost(dispatch)),
        ))
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
            host::CapActor::new(server::ServerHost(C::from_server(Rc::new(make()))), id)
        });
        Cap::wrap(CapRef::from_kind_id(cap::Kind::Local(addr.recipient()), id))
    }

    /// A stateless service with one instance on each of `arbiters`, each
    /// built there by `make`: a call goes to the instance on the arbiter
    /// that makes it (the connection's, for a peer's call), so it never
    /// crosses to another thread; a thread that is not one of `arbiters`
    /// gets one instance, chosen once. Calls from one caller therefore
    /// reach one instance, in order; state is per instance, so keep
    /// shared state elsewhere (behind a lock, or in a capability of its
    /// own). One capability: one identity whichever instance serves.
    pub fn per_arbiter<S, F>(arbiters: &crate::arbiters::Arbiters, make: F) -> Self
    where
        C: FromServer<S>,
        F: Fn() -> S + Clone + Send + 'static,
    {
        let id = cap::next_id();
        let instances: Vec<_> = arbiters
            .handles()
            .map(|arbiter| {
                let make = make.clone();
                let host = move || {
                    host::CapActor::new(server::ServerHost(C::from_server(Rc::new(make()))), id)
                };
                match arbiter {
                    Some(arbiter) => host::CapActor::start_in_arbiter(arbiter, move |_| host()),
                    None => host().start(),
                }
                .recipient()
            })
            .collect();
        Cap::wrap(CapRef::from_kind_id(
            cap::Kind::PerArbiter(instances.into()),
            id,
        ))
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
