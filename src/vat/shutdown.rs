//! Stopping a vat: at once ([`Vat::stop`]) or gracefully
//! ([`Vat::shutdown`]).
//!
//! A graceful shutdown goes in three steps, run by the supervisor:
//! 1. **Stop listening** at once; connections accepted meanwhile, or whose
//!    TLS handshake ends after this, are closed unserved.
//! 2. **Drain**: every connection (accepted or opened by us) answers the
//!    peer's new calls and bootstraps at once with Disconnected, "the vat
//!    is shutting down"; the calls it made before go on, and so does
//!    everything they need (our calls to other vats, callbacks we call).
//!    This lasts until no connection has a call of its peer's running, or
//!    until the grace period has passed.
//! 3. **Close**: the supervisor stops; every connection sends its peer an
//!    `abort` (Disconnected, "the vat is shutting down"), which is written
//!    and flushed before the stream is closed, and calls still running
//!    are cancelled. The vat is done once every connection has written
//!    its last bytes; then its own arbiters stop.
//!
//! [`Vat::stop`] is step 3 alone (with "the vat has stopped"). Both are
//! messages to the supervisor, so they work from any thread, and both
//! end in the same place: [`Vat::shutdown`] returns when it is reached,
//! whoever started the stop.

use std::time::Duration;

use actix::prelude::*;
use capnp_actix_actors::connection::ConnectionHandle;
use tokio::time::Instant;

use super::{Vat, VatSupervisor};
use crate::listener::StopListening;

/// Why a vat shutting down refuses calls and closes its connections.
pub const SHUTTING_DOWN: &str = "the vat is shutting down";

/// Why a stopped vat closed its connections.
const STOPPED: &str = "the vat has stopped";

/// How long a stopped vat's connections get to write their aborts before
/// the vat's own arbiters stop.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How often a draining vat asks its connections whether calls still run.
const DRAIN_POLL: Duration = Duration::from_millis(10);

impl Vat {
    /// Stops the vat at once: stops listening and closes every connection
    /// (each peer gets an abort, "the vat has stopped"); calls running for
    /// peers are cancelled. Returns without waiting; see
    /// [`Vat::shutdown`] for the graceful form, which can also be awaited
    /// after this to know when the connections are gone.
    pub fn stop(&self) {
        self.shared.supervisor.do_send(StopVat);
    }

    /// Shuts the vat down gracefully (see the `shutdown` module docs):
    /// stops listening at once; lets the calls peers have running finish,
    /// for at most `grace`, while their new calls fail with Disconnected,
    /// "the vat is shutting down"; then closes every connection with an
    /// abort giving that reason, cancelling what still runs. Returns once
    /// every connection has ended and written its last bytes, and the
    /// vat's own arbiters have stopped.
    ///
    /// Idempotent, and callable from any thread: a second call (or one
    /// after [`Vat::stop`]) waits for the same end.
    ///
    /// ```no_run
    /// # async fn f(vat: capnp_actix::vat::Vat) {
    /// // On SIGINT or SIGTERM, give running calls 5 s.
    /// capnp_actix::vat::shutdown_signal().await;
    /// vat.shutdown(std::time::Duration::from_secs(5)).await;
    /// # }
    /// ```
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.supervisor.do_send(Shutdown { grace });
        // The sender goes when the vat is done (or dropped with it).
        let _ = self.shared.finished.clone().await;
    }

    /// Resolves once the vat has stopped (by [`Vat::stop`],
    /// [`Vat::shutdown`], or its actix System stopping) and every
    /// connection has written its last bytes.
    pub async fn stopped(&self) {
        let _ = self.shared.finished.clone().await;
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or, on Unix, SIGTERM: what a
/// server awaits before [`Vat::shutdown`]. The handlers are installed when
/// this is called, not when the future is first polled: call it before
/// announcing that the server is up, so that a signal sent right after
/// the announcement is not missed (and does not kill the process). Needs
/// a tokio runtime (an actix System has one). If the handlers cannot be
/// installed, the error is logged and the future never resolves.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let interrupt = installed(tokio::signal::unix::SignalKind::interrupt(), "SIGINT");
    let terminate = installed(tokio::signal::unix::SignalKind::terminate(), "SIGTERM");
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let (interrupt, terminate) = (wait(interrupt), wait(terminate));
        futures::pin_mut!(interrupt, terminate);
        futures::future::select(interrupt, terminate).await;
    }
}

/// The handler of signal `kind`, or `None` (logged) if it cannot be
/// installed.
fn installed(
    kind: tokio::signal::unix::SignalKind,
    name: &str,
) -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind)
        .map_err(|e| tracing::error!("cannot listen for {name}: {e}"))
        .ok()
}

/// Stops the supervisor at once.
pub(super) struct StopVat;

impl Message for StopVat {
    type Result = ();
}

impl Handler<StopVat> for VatSupervisor {
    type Result = ();
    fn handle(&mut self, _: StopVat, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Starts a graceful shutdown (ignored if one is under way).
struct Shutdown {
    grace: Duration,
}

impl Message for Shutdown {
    type Result = ();
}

/// The error the peers' new calls get while the vat drains.
pub(super) fn shutting_down() -> capnp::Error {
    capnp::Error::disconnected(SHUTTING_DOWN.into())
}

impl Handler<Shutdown> for VatSupervisor {
    type Result = ();
    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        tracing::info!(grace = ?msg.grace, "vat shutting down");
        for l in self.listeners.drain(..) {
            l.do_send(StopListening);
        }
        let conns = self.all_connections();
        for c in &conns {
            c.drain(shutting_down());
        }
        let deadline = Instant::now() + msg.grace;
        ctx.spawn(actix::fut::wrap_future(calls_done(conns, deadline)).map(
            |done, _, ctx: &mut Context<Self>| {
                if !done {
                    tracing::warn!(
                        "calls still running at the end of the grace period are cut off"
                    );
                }
                ctx.stop();
            },
        ));
    }
}

/// Waits until none of `conns` has a call of its peer's running, or
/// `deadline` has passed; true in the first case.
async fn calls_done(conns: Vec<ConnectionHandle>, deadline: Instant) -> bool {
    loop {
        let mut running = 0;
        for c in &conns {
            running += c.running_calls().await.unwrap_or(0);
        }
        if running == 0 {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep_until((now + DRAIN_POLL).min(deadline)).await;
    }
}

impl VatSupervisor {
    /// Every connection the vat has: to known peers (current and
    /// retiring) and anonymous clients.
    fn all_connections(&self) -> Vec<ConnectionHandle> {
        let peers = self
            .peers
            .values()
            .flat_map(|entry| entry.current.iter().chain(&entry.retired))
            .map(|c| c.conn.clone());
        peers.chain(self.anonymous.values().cloned()).collect()
    }
}

impl Actor for VatSupervisor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        let reason = if self.shutting_down {
            SHUTTING_DOWN
        } else {
            STOPPED
        };
        for l in self.listeners.drain(..) {
            l.do_send(StopListening);
        }
        for (_, entry) in self.peers.drain() {
            for c in entry.current.into_iter().chain(entry.retired) {
                c.conn.close(reason);
            }
            for w in entry.waiting {
                let _ = w.send(Err(capnp::Error::disconnected(reason.into())));
            }
        }
        for (_, c) in self.anonymous.drain() {
            c.close(reason);
        }
        let arbiters = self.arbiters.clone();
        let finished = self.finished.take();
        if std::thread::panicking() {
            // Unwinding from a failed start (no runtime to spawn on, as
            // under `#[tokio::test]`): there is nothing to wait for.
            return;
        }
        actix_rt::spawn(async move {
            if !arbiters.wait_idle(STOP_GRACE).await {
                tracing::warn!(
                    "connections of the stopped vat still writing after {STOP_GRACE:?}: \
                     their arbiters stop anyway"
                );
            }
            if arbiters.owns_threads() {
                arbiters.stop();
            }
            drop(finished);
        });
    }
}
