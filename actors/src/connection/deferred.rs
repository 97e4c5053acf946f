//! The steps a connection sends itself through its own mailbox, so that
//! they happen after every message the mailbox already holds: reflecting a
//! peer's disembargo whose path no longer leads back to the peer, and
//! starting the embargo on an import the peer resolved to one of ours.
//!
//! Only the connection sends these: they are private to `connection/`
//! (what the rest of the runtime sends is `call::ConnMsg`). Both message
//! types reach the actor through the same mailbox, in the order they were
//! sent.

use actix::{Handler, Message};
use capnp_actix_proto::captp::OutTarget;

use super::tables::Embargo;
use super::Connection;
use crate::cap::CapRef;
use crate::promise::Resolver;

/// A step the connection deferred to its own mailbox.
pub(super) enum Deferred {
    /// Starts the embargo on an import the peer resolved to one of ours
    /// (see `resolve_import`).
    EmbargoImport {
        import: u32,
        resolver: Resolver,
        target: CapRef,
    },
    /// Reflects the peer's disembargo `embargo` now, naming `target` (see
    /// `Event::Loopback`): it goes out after every call this mailbox held
    /// when it was queued.
    Reflect { embargo: u32, target: OutTarget },
}

impl Message for Deferred {
    type Result = ();
}

impl Handler<Deferred> for Connection {
    type Result = ();
    fn handle(&mut self, msg: Deferred, ctx: &mut Self::Context) {
        match msg {
            Deferred::Reflect { embargo, target } => {
                self.core.disembargo_reply_to(embargo, &target)
            }
            Deferred::EmbargoImport {
                import,
                resolver,
                target,
            } => {
                let waiting = Embargo::Import { resolver, target };
                if let Err(Embargo::Import { resolver, target }) =
                    self.core.disembargo_request_import(import, waiting)
                {
                    match self.core.aborted() {
                        // The connection ended first: embargoes break with it.
                        Some(e) => resolver.reject(e.clone()),
                        None => resolver.resolve_to(target),
                    }
                }
            }
        }
        self.handle_core_events(ctx);
    }
}
