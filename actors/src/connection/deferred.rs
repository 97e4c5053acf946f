//! The steps a connection sends itself through its own mailbox, so that
//! they happen after every message the mailbox already holds: reflecting a
//! peer's disembargo whose path no longer leads back to the peer, and
//! starting the embargo on an import the peer resolved to one of ours.
//!
//! Only the connection sends these: they are private to `connection/`
//! (what the rest of the runtime sends is `call::ConnMsg`). Both message
//! types reach the actor through the same mailbox, in the order they were
//! sent.
//!
//! A message still in the mailbox when the actor stops is dropped unread
//! (the peer's abort read in the same turn, say). So what a step must not
//! lose waits in the actor, not in the message: the resolver of an import
//! whose embargo is to start ([`ImportEmbargoStart`]), which the end of
//! the connection breaks with its error (`on_aborted`).

use std::collections::VecDeque;

use actix::{Handler, Message};
use capnp_actix_proto::captp::OutTarget;

use super::tables::Embargo;
use super::Connection;
use crate::cap::CapRef;
use crate::promise::Resolver;

/// An import's embargo queued to start (`resolve_import`): the local
/// promise its calls wait in, and what it becomes once the embargo lifts.
pub(super) struct ImportEmbargoStart {
    pub(super) import: u32,
    pub(super) resolver: Resolver,
    pub(super) target: CapRef,
}

/// The embargoes queued to start, oldest first: one a
/// [`Deferred::EmbargoImport`] in the mailbox.
pub(super) type ImportEmbargoStarts = VecDeque<ImportEmbargoStart>;

/// A step the connection deferred to its own mailbox.
pub(super) enum Deferred {
    /// Starts the oldest embargo of `Connection::embargo_starts`, on an
    /// import the peer resolved to one of ours (see `resolve_import`).
    EmbargoImport,
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
            Deferred::EmbargoImport => {
                // None: the connection ended and broke it already.
                let Some(ImportEmbargoStart {
                    import,
                    resolver,
                    target,
                }) = self.embargo_starts.pop_front()
                else {
                    return;
                };
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
