//! Hosting capnpc-generated servers: [`ServerHost`] runs a generated
//! `ServerDispatch` in a capability actor, with our `Params`/`Results` hooks,
//! and [`IncomingCall::serve`] serves one call with a server value from a
//! user's own actor.
//!
//! It lives apart from `host.rs` (the capability actor itself) because it
//! needs the hook bridge, which needs the actor for foreign hooks' proxies.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use capnp::capability::Server;
use futures::FutureExt;

use crate::call::{Call, IncomingCall};
use crate::error;
use crate::hook::method_io;
use crate::host::{poll_once, start_call, CallBody, Host};

impl IncomingCall {
    /// Serves this call with `server`, a value implementing a generated
    /// `Server` trait (for example `echo::Server`), typically built from the
    /// hosting actor's state. The method starts now, in mailbox order, and
    /// runs on this thread; its reply goes back to the caller.
    ///
    /// ```ignore
    /// fn handle(&mut self, call: IncomingCall, ctx: &mut Context<Self>) {
    ///     self.calls += 1;
    ///     call.serve::<echo::Client, _>(EchoView { calls: self.calls, owner: ctx.address() });
    /// }
    /// ```
    pub fn serve<C, S>(self, server: S)
    where
        C: capnp::capability::FromServer<S>,
    {
        let dispatch = C::from_server(Rc::new(server));
        if let Some(started) = start_call(&ServerHost(dispatch), 0, self.call) {
            // Start the body now (so calls start in mailbox order), then let
            // it finish on its own. (The actor serving calls this way orders
            // its streaming calls itself.)
            let mut body = started.body;
            if poll_once(&mut body).is_none() {
                actix_rt::spawn(body);
            }
        }
    }
}

/// Hosts a capnpc-generated `ServerDispatch`.
pub(crate) struct ServerHost<D>(pub(crate) D);

// The dispatch value is never pinned (calls clone it), so the host may move.
impl<D> Unpin for ServerHost<D> {}

impl<D: Server + Clone + 'static> Host for ServerHost<D> {
    fn dispatch(&self, call: Call) -> CallBody {
        let Call {
            interface_id,
            method_id,
            params,
            completer,
            ..
        } = call;
        let (params, results, slot) = method_io(params, &completer);
        let server = self.0.clone();
        let dispatched = std::panic::catch_unwind(AssertUnwindSafe(move || {
            server.dispatch_call(interface_id, method_id, params, results)
        }));
        match dispatched {
            Ok(d) => CallBody::Server(d.promise, slot, completer, d.is_streaming),
            Err(panic) => {
                completer.complete(Err(error::panicked(panic.as_ref())));
                CallBody::Done(futures::future::ready(()).boxed_local())
            }
        }
    }
}
