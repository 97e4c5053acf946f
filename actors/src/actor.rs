//! Services written as actix actors: the methods of a Cap'n Proto
//! interface implemented on the actor itself, with `&mut self`, its
//! `Context`, and the typed params and results capnpc generates.
//!
//! `capnp-actix-build` (in `build.rs`) generates, next to capnpc's code for
//! each schema file, a module `actors` with one trait per interface (`Echo`
//! for `interface Echo`), one method per capnp method:
//!
//! ```ignore
//! fn ping(&mut self, params: echo::PingParams, results: echo::PingResults,
//!         ctx: &mut Context<Self>) -> Result<Reply<Self>, capnp::Error>
//! ```
//!
//! An actor implements the traits of the interfaces it serves, states them
//! once with [`serve_actor!`](crate::serve_actor) (which implements
//! `Handler<IncomingCall>` for it), and [`Cap::from_actor`](crate::Cap::from_actor)
//! makes the capability, a [`Cap<C>`](crate::Cap) like any other.
//!
//! # How a call runs
//!
//! The call is one message in the actor's mailbox; its method runs inside
//! that message's `handle`, so calls on the capability start in mailbox
//! order (E-order) and see every state change of the calls before them. A
//! method answers with a [`Reply`]:
//!
//! - [`Reply::Done`]: the results are written, the call is answered.
//! - [`Reply::Later`]: an actor future (actix's `ResponseActFuture`) that
//!   finishes the call; it gets `&mut self` and the context back after each
//!   await, for example after calling another capability. Later calls
//!   start meanwhile.
//! - [`Reply::Atomic`]: the same, but the actor handles nothing else until
//!   it is done (actix's `AtomicResponse`): later calls wait for it.
//!
//! An error returned (by `?` on the params, say) fails the call with it.
//! If the caller gives up on the call while a `Later` or `Atomic` future
//! runs, the future is dropped, as a method's future is elsewhere in this
//! runtime (see the crate docs on cancellation).
//!
//! # Panics and supervision
//!
//! A method (or its future) that panics fails its call with an error
//! naming the interface and the method, and the actor is stopped: its
//! state may be half-changed, and the mailbox is the only thing that
//! orders the calls that see it. Started under an actix `Supervisor`, the
//! actor is then restarted: `Supervised::restarting` runs (reset the state
//! there), calls still in the mailbox are served by the restarted actor,
//! and the capability keeps working for its holders; calls whose futures
//! were running when it stopped fail with Disconnected. Without a
//! supervisor the capability is broken from then on. (A panic inside an
//! actix handler does not by itself restart an actor: it would close the
//! mailbox. That is why the panic is caught and turned into a stop.)

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use actix::{Actor, ActorContext, ActorFuture, AsyncContext, Context, ResponseActFuture};
use capnp::any_pointer;
use capnp::capability::{Params, Results};

use crate::call::{Call, Cancelled, Completer, IncomingCall};
use crate::error;
use crate::hook::method_io;
use crate::host::{admit, method_outcome, ResultsSlot};

/// How a method of an actor-served capability answers (see the module
/// docs).
pub enum Reply<A: Actor> {
    /// The results are written: the call is answered now.
    Done,
    /// This actor future finishes the call; later calls start meanwhile.
    Later(ResponseActFuture<A, Result<(), capnp::Error>>),
    /// This actor future finishes the call; the actor handles nothing else
    /// until it is done.
    Atomic(ResponseActFuture<A, Result<(), capnp::Error>>),
}

impl<A: Actor> Reply<A> {
    /// [`Reply::Later`] with `fut` boxed.
    pub fn later<F>(fut: F) -> Self
    where
        F: ActorFuture<A, Output = Result<(), capnp::Error>> + 'static,
    {
        Reply::Later(Box::pin(fut))
    }

    /// [`Reply::Atomic`] with `fut` boxed.
    pub fn atomic<F>(fut: F) -> Self
    where
        F: ActorFuture<A, Output = Result<(), capnp::Error>> + 'static,
    {
        Reply::Atomic(Box::pin(fut))
    }
}

impl<A: Actor> std::fmt::Debug for Reply<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reply::Done => "Reply::Done",
            Reply::Later(_) => "Reply::Later(..)",
            Reply::Atomic(_) => "Reply::Atomic(..)",
        })
    }
}

/// Runs method `method_id` of one interface on the actor, with untyped
/// params and results (generated code makes them typed).
pub type Dispatch<A> = fn(
    &mut A,
    u16,
    Params<any_pointer::Owned>,
    Results<any_pointer::Owned>,
    &mut Context<A>,
) -> Result<Reply<A>, capnp::Error>;

/// One interface as actor `A` serves it: its name, its methods' names by
/// ordinal, and how to run them. Generated code makes these; the runtime
/// looks one up by interface ID for each call.
pub struct Route<A: Actor<Context = Context<A>>> {
    interface: &'static str,
    methods: &'static [&'static str],
    dispatch: Dispatch<A>,
}

impl<A: Actor<Context = Context<A>>> Route<A> {
    /// The route of interface `interface`, whose method `@n` is named
    /// `methods[n]`.
    pub fn new(
        interface: &'static str,
        methods: &'static [&'static str],
        dispatch: Dispatch<A>,
    ) -> Self {
        Route {
            interface,
            methods,
            dispatch,
        }
    }

    /// The interface's name, as the schema spells it.
    pub fn interface(&self) -> &'static str {
        self.interface
    }

    /// The name of method `@method_id`, if the interface has one.
    pub fn method(&self, method_id: u16) -> Option<&'static str> {
        self.methods.get(usize::from(method_id)).copied()
    }
}

/// The error of a method an actor does not implement (the generated
/// traits' default bodies).
pub fn unimplemented(interface: &str, method: &str) -> capnp::Error {
    capnp::Error::unimplemented(format!(
        "method {interface}.{method} is not implemented by this actor"
    ))
}

/// The error for a method number the interface does not have.
pub fn no_such_method(interface: &str, method_id: u16) -> capnp::Error {
    capnp::Error::unimplemented(format!("interface {interface} has no method @{method_id}"))
}

/// Names a call for its errors.
#[derive(Clone, Copy)]
struct Names {
    interface_id: u64,
    method_id: u16,
    interface: &'static str,
    method: &'static str,
}

impl IncomingCall {
    /// Serves this call on `actor` through `route`, the route of the call's
    /// interface (`None`: the actor does not serve it, and the call fails
    /// with Unimplemented). [`serve_actor!`](crate::serve_actor) writes the
    /// handler that calls this; write one by hand for a generic actor or to
    /// do something before each call:
    ///
    /// ```ignore
    /// fn handle(&mut self, call: IncomingCall, ctx: &mut Context<Self>) {
    ///     let route = <Self as actors::Echo>::__capnp_actix_route(call.interface_id());
    ///     call.serve_actor(self, ctx, route);
    /// }
    /// ```
    pub fn serve_actor<A>(self, actor: &mut A, ctx: &mut Context<A>, route: Option<Route<A>>)
    where
        A: Actor<Context = Context<A>>,
    {
        let Some((call, span)) = admit(self.call, 0) else {
            return;
        };
        let _entered = span.enter();
        let Call {
            interface_id,
            method_id,
            params,
            completer,
            ..
        } = call;
        let Some(route) = route else {
            completer.complete(Err(capnp::Error::unimplemented(format!(
                "interface {interface_id:#018x} is not served by this actor"
            ))));
            return;
        };
        let Some(method) = route.method(method_id) else {
            completer.complete(Err(no_such_method(route.interface, method_id)));
            return;
        };
        let names = Names {
            interface_id,
            method_id,
            interface: route.interface,
            method,
        };
        let (params, results, slot) = method_io(params, &completer);
        let dispatch = route.dispatch;
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
            dispatch(actor, method_id, params, results, ctx)
        }));
        match ran {
            Ok(Ok(Reply::Done)) => {
                completer.finish(method_outcome(Ok(()), &slot, interface_id, method_id))
            }
            Ok(Ok(Reply::Later(body))) => {
                ctx.spawn(Finish::new(body, slot, completer, names));
            }
            Ok(Ok(Reply::Atomic(body))) => ctx.wait(Finish::new(body, slot, completer, names)),
            Ok(Err(e)) => completer.finish(method_outcome(Err(e), &slot, interface_id, method_id)),
            Err(panic) => {
                completer.complete(Err(error::actor_method_panicked(
                    names.interface,
                    names.method,
                    panic.as_ref(),
                )));
                ctx.stop();
            }
        }
    }
}

/// Drives a method's actor future and answers the call when it ends: with
/// its results, its error, a panic (which also stops the actor), or a
/// cancellation (the future is dropped).
struct Finish<A: Actor> {
    body: ResponseActFuture<A, Result<(), capnp::Error>>,
    slot: ResultsSlot,
    /// Taken when the call is answered.
    completer: Option<Completer>,
    cancelled: Cancelled,
    names: Names,
}

impl<A: Actor> Finish<A> {
    fn new(
        body: ResponseActFuture<A, Result<(), capnp::Error>>,
        slot: ResultsSlot,
        completer: Completer,
        names: Names,
    ) -> Self {
        Finish {
            body,
            slot,
            cancelled: completer.cancelled(),
            completer: Some(completer),
            names,
        }
    }
}

impl<A> ActorFuture<A> for Finish<A>
where
    A: Actor<Context = Context<A>>,
{
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut Context<A>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        let Names {
            interface_id,
            method_id,
            interface,
            method,
        } = this.names;
        let polled =
            std::panic::catch_unwind(AssertUnwindSafe(|| this.body.as_mut().poll(act, ctx, cx)));
        let outcome = match polled {
            Ok(Poll::Ready(returned)) => {
                method_outcome(returned, &this.slot, interface_id, method_id)
            }
            Ok(Poll::Pending) => match Pin::new(&mut this.cancelled).poll(cx) {
                Poll::Pending => return Poll::Pending,
                // Returning drops the body: that is the cancellation.
                Poll::Ready(()) => Err(error::cancelled()),
            },
            Err(panic) => {
                ctx.stop();
                Err(error::actor_method_panicked(
                    interface,
                    method,
                    panic.as_ref(),
                ))
            }
        };
        if let Some(completer) = this.completer.take() {
            completer.finish(outcome);
        }
        Poll::Ready(())
    }
}

/// Implements `Handler<IncomingCall>` for an actor that serves the listed
/// interfaces through their generated actor traits, and may then be made
/// into a capability with [`Cap::from_actor`](crate::Cap::from_actor):
///
/// ```ignore
/// capnp_actix::serve_actor!(Counter: echo_capnp::actors::Echo, echo_capnp::actors::Callback);
/// ```
///
/// A call on an interface not listed fails with Unimplemented. The actor's
/// context must be `actix::Context<Self>`. For a generic actor, write the
/// handler by hand (see [`IncomingCall::serve_actor`]).
#[macro_export]
macro_rules! serve_actor {
    ($actor:ty : $($interface:path),+ $(,)?) => {
        impl $crate::actix::Handler<$crate::IncomingCall> for $actor {
            type Result = ();

            fn handle(
                &mut self,
                call: $crate::IncomingCall,
                ctx: &mut $crate::actix::Context<Self>,
            ) {
                let interface_id = call.interface_id();
                let route = ::core::option::Option::None
                    $(.or_else(|| <$actor as $interface>::__capnp_actix_route(interface_id)))+;
                call.serve_actor(self, ctx, route);
            }
        }
    };
}
