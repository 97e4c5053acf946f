//! The listener actor: accepts connections on one address and hands each
//! to the vat supervisor.
//!
//! When accept fails for want of resources (out of file descriptors,
//! EMFILE or ENFILE; out of buffers or memory, ENOBUFS or ENOMEM), the
//! listening socket is kept and accept is tried again after a pause that
//! doubles while it goes on failing (10 ms up to 1 s): the connections
//! waiting in the backlog are accepted once descriptors are free again,
//! and the address is never unbound.
//!
//! It runs under an actix [`Supervisor`](actix::Supervisor): any other
//! accept error stops it, the socket is released, and the supervisor
//! restarts it, which binds the address again after a delay that doubles
//! with each consecutive failure (50 ms up to 5 s).

use std::time::Duration;

use actix::prelude::*;

use crate::address::Address;
use crate::net::{self, Stream};

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(10);
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// True for an accept error that says the process or the system is out of
/// a resource (descriptors, buffers, memory): it passes, the socket is fine.
fn exhausted(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accepts the next connection, waiting out resource exhaustion (see the
/// module docs) on the same socket.
async fn accept_next(
    socket: &net::Listener,
    address: &Address,
) -> std::io::Result<(Stream, String)> {
    let mut pause = FIRST_ACCEPT_PAUSE;
    loop {
        match socket.accept().await {
            Err(e) if exhausted(&e) => {
                if pause == FIRST_ACCEPT_PAUSE {
                    tracing::warn!(%address, "accept failed: {e}; keeping the socket, retrying");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_ACCEPT_PAUSE);
            }
            other => return other,
        }
    }
}

/// A connection accepted by a listener.
pub(crate) struct Accepted {
    pub stream: Stream,
    pub peer: String,
}

impl Message for Accepted {
    type Result = ();
}

/// Stops a listener for good.
pub(crate) struct StopListening;

impl Message for StopListening {
    type Result = ();
}

pub(crate) struct ListenerActor {
    address: Address,
    socket: Option<net::Listener>,
    to: Recipient<Accepted>,
    /// Consecutive failures (accept or bind) since the last success.
    failures: u32,
    done: bool,
}

impl ListenerActor {
    /// Starts a supervised listener on an already bound socket.
    pub fn start(address: Address, socket: net::Listener, to: Recipient<Accepted>) -> Addr<Self> {
        actix::Supervisor::start(move |_| ListenerActor {
            address,
            socket: Some(socket),
            to,
            failures: 0,
            done: false,
        })
    }

    fn backoff(&self) -> Duration {
        let factor = 1u32 << self.failures.saturating_sub(1).min(10);
        (FIRST_BACKOFF * factor).min(MAX_BACKOFF)
    }

    fn accept_loop(&mut self, socket: net::Listener, ctx: &mut Context<Self>) {
        let address = self.address.clone();
        let stream = futures::stream::unfold(socket, move |socket| {
            let address = address.clone();
            async move {
                let next = accept_next(&socket, &address).await;
                Some((next, socket))
            }
        });
        ctx.add_stream(stream);
    }
}

impl Actor for ListenerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.done {
            ctx.stop();
            return;
        }
        if let Some(socket) = self.socket.take() {
            self.accept_loop(socket, ctx);
            return;
        }
        // A restart: bind again, after the backoff.
        let delay = self.backoff();
        let address = self.address.clone();
        ctx.wait(
            actix::fut::wrap_future(async move {
                tokio::time::sleep(delay).await;
                net::Listener::bind(&address).await
            })
            .map(|bound, act: &mut Self, ctx| match bound {
                Ok(socket) => {
                    tracing::info!(address = %act.address, "listening again");
                    act.accept_loop(socket, ctx);
                }
                Err(e) => {
                    act.failures += 1;
                    tracing::warn!(address = %act.address, "cannot listen: {e}; retrying");
                    ctx.stop();
                }
            }),
        );
    }
}

impl Supervised for ListenerActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // The old socket went with the old context's stream; make sure
        // nothing of it is left before binding again.
        self.socket = None;
    }
}

impl StreamHandler<std::io::Result<(Stream, String)>> for ListenerActor {
    fn handle(&mut self, item: std::io::Result<(Stream, String)>, ctx: &mut Context<Self>) {
        match item {
            Ok((stream, peer)) => {
                self.failures = 0;
                tracing::debug!(%peer, address = %self.address, "accepted a connection");
                self.to.do_send(Accepted { stream, peer });
            }
            Err(e) => {
                self.failures += 1;
                tracing::warn!(address = %self.address, "accept failed: {e}; restarting the listener");
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Makes a listener behave as after an accept error (for tests of the
/// restart path).
pub(crate) struct FailAccept;

impl Message for FailAccept {
    type Result = ();
}

impl Handler<FailAccept> for ListenerActor {
    type Result = ();
    fn handle(&mut self, _: FailAccept, ctx: &mut Context<Self>) {
        self.failures += 1;
        tracing::warn!(address = %self.address, "accept failed (simulated); restarting the listener");
        ctx.stop();
    }
}

impl Handler<StopListening> for ListenerActor {
    type Result = ();
    fn handle(&mut self, _: StopListening, ctx: &mut Context<Self>) {
        self.done = true;
        ctx.stop();
    }
}
