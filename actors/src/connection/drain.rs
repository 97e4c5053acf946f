//! Draining a connection before it is closed (a vat shutting down
//! gracefully): from [`Drain`] on, the peer's new calls and bootstraps
//! fail at once with the error given, while the calls it made before go on
//! to their end and everything else keeps working (our calls to the peer,
//! returns, finishes, releases). The owner polls [`RunningCalls`] until
//! the calls it let run are answered, then closes the connection.

use actix::{Handler, Message};

use super::Connection;

/// From now on, answer the peer's new calls and bootstraps with this
/// error (see the module docs).
pub(crate) struct Drain(pub(crate) capnp::Error);

impl Message for Drain {
    type Result = ();
}

impl Handler<Drain> for Connection {
    type Result = ();
    fn handle(&mut self, Drain(error): Drain, _: &mut Self::Context) {
        self.draining = Some(error);
    }
}

/// How many of the peer's calls (and bootstraps) are running here, not
/// answered yet.
pub(crate) struct RunningCalls;

impl Message for RunningCalls {
    type Result = usize;
}

impl Handler<RunningCalls> for Connection {
    type Result = usize;
    fn handle(&mut self, _: RunningCalls, _: &mut Self::Context) -> usize {
        self.answers
            .values()
            .filter(|entry| entry.sending.is_some())
            .count()
    }
}

impl Connection {
    /// The error a new call or bootstrap of the peer's gets at once while
    /// the connection drains.
    pub(super) fn refused(&self) -> Option<capnp::Error> {
        self.draining.clone()
    }
}
