//! Accepting connections, governed: every connection a listener accepts
//! is admitted against the vat's limits (connections in all, and per peer:
//! per client IP address for TCP, per key fingerprint once a TLS client is
//! authenticated) before it is served. One over a limit is not served: it
//! gets an abort (Overloaded, naming the limit) and is closed; the other
//! connections are not touched. An admitted connection gives its place
//! back when it ends (see `Closed`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use actix::prelude::*;

use super::{AsyncStream, Established, Peer, VatSupervisor, HANDSHAKE_TIMEOUT, NEXT_ANONYMOUS};
use crate::config::VatConfig;
use crate::identity::Fingerprint;
use crate::listener::Accepted;

/// Default of `VatConfig::max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Default of `VatConfig::max_connections_per_peer`.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 64;

/// Default of `VatConfig::first_message_deadline_ms`.
pub const DEFAULT_FIRST_MESSAGE_DEADLINE: Duration = Duration::from_secs(10);

/// TLS connections refused over a limit whose handshake (needed to tell
/// the client why) may run at once; beyond, one is closed without a word.
const MAX_REFUSING: usize = 64;

/// Who a per-peer limit counts.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum PeerKey {
    Ip(IpAddr),
    Key(Fingerprint),
}

/// Counts the accepted connections against the limits.
pub(super) struct Governor {
    max: usize,
    max_per_peer: usize,
    total: usize,
    per_peer: HashMap<PeerKey, usize>,
    /// What each admission counts against.
    tickets: HashMap<u64, Vec<PeerKey>>,
    next_ticket: u64,
    /// TLS handshakes of refused connections running now.
    refusing: usize,
}

impl Governor {
    pub(super) fn new(config: &VatConfig) -> Self {
        Governor {
            max: config.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_per_peer: config
                .max_connections_per_peer
                .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_PEER),
            total: 0,
            per_peer: HashMap::new(),
            tickets: HashMap::new(),
            next_ticket: 0,
            refusing: 0,
        }
    }

    /// Admits a connection from `ip` (`None`: a Unix socket peer, counted
    /// in the vat's total only): its ticket, or why it is refused.
    fn admit(&mut self, ip: Option<IpAddr>) -> Result<u64, String> {
        if self.total >= self.max {
            return Err(format!(
                "too many connections: the vat serves at most {} at once \
                 (--capnp-max-connections)",
                self.max
            ));
        }
        let keys: Vec<PeerKey> = ip.map(PeerKey::Ip).into_iter().collect();
        self.check_peer(&keys, "client address")?;
        self.count(&keys);
        self.total += 1;
        self.next_ticket += 1;
        self.tickets.insert(self.next_ticket, keys);
        Ok(self.next_ticket)
    }

    /// Counts an authenticated client's key against the per-peer limit
    /// too; over it, the admission is given back.
    fn add_key(&mut self, ticket: u64, fingerprint: Fingerprint) -> Result<u64, String> {
        let key = [PeerKey::Key(fingerprint)];
        if let Err(reason) = self.check_peer(&key, "client key") {
            self.release(ticket);
            return Err(reason);
        }
        self.count(&key);
        if let Some(keys) = self.tickets.get_mut(&ticket) {
            keys.push(key[0]);
        }
        Ok(ticket)
    }

    fn check_peer(&self, keys: &[PeerKey], what: &str) -> Result<(), String> {
        for key in keys {
            if self.per_peer.get(key).copied().unwrap_or(0) >= self.max_per_peer {
                return Err(format!(
                    "too many connections from this peer: at most {} per {what} \
                     (--capnp-max-connections-per-peer)",
                    self.max_per_peer
                ));
            }
        }
        Ok(())
    }

    fn count(&mut self, keys: &[PeerKey]) {
        for key in keys {
            *self.per_peer.entry(*key).or_default() += 1;
        }
    }

    /// Gives an admission back (the connection ended, or its handshake
    /// failed).
    pub(super) fn release(&mut self, ticket: u64) {
        let Some(keys) = self.tickets.remove(&ticket) else {
            return;
        };
        self.total -= 1;
        for key in keys {
            if let Some(n) = self.per_peer.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.per_peer.remove(&key);
                }
            }
        }
    }
}

/// What a TLS handshake in progress counts against the vat's memory
/// budget: rustls' buffers for a record each way and its handshake state.
const HANDSHAKE_BYTES: usize = 64 << 10;

/// How long a refused connection is given to take its abort and close.
const REFUSAL_GRACE: Duration = Duration::from_secs(2);

/// Tells the peer why it is not served (an abort, Overloaded, with
/// `reason`) and closes the connection. The abort is written and the
/// sending side shut before the peer's input is read and thrown away
/// until its end (within [`REFUSAL_GRACE`]): closing with input unread
/// would reset the connection, and the peer could lose the abort.
fn refuse(mut stream: impl AsyncStream + 'static, peer: &str, reason: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tracing::warn!(%peer, "connection refused: {reason}");
    let frame = abort_frame(&capnp::Error::overloaded(reason));
    actix_rt::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_GRACE, async move {
            if stream.write_all(&frame).await.is_err() || stream.shutdown().await.is_err() {
                return;
            }
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}

/// An `Abort` message carrying `error`, framed.
fn abort_frame(error: &capnp::Error) -> Vec<u8> {
    capnp::serialize::write_message_to_words(&capnp_actix_proto::captp::abort_message(error))
}

impl Handler<Accepted> for VatSupervisor {
    type Result = ();
    fn handle(&mut self, msg: Accepted, ctx: &mut Context<Self>) {
        let Accepted { stream, peer } = msg;
        if self.shutting_down {
            tracing::debug!(%peer, "connection closed unserved: the vat is shutting down");
            return;
        }
        let ip = peer.parse::<SocketAddr>().ok().map(|a| a.ip());
        // New peers would only add to what an exhausted budget cannot hold.
        let admitted = match self.budget.exhausted_reason() {
            Some(reason) => Err(format!(
                "{reason}: no new connections until it has room (--capnp-memory-budget)"
            )),
            None => self.governor.admit(ip),
        };
        match (self.acceptor.clone(), admitted) {
            (None, Ok(ticket)) => {
                let id = NEXT_ANONYMOUS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let who = Peer::Anonymous(id);
                let conn = self.run(stream, &who, Some(ticket), ctx);
                ctx.notify(Established {
                    peer: who,
                    conn,
                    initiated_by_us: false,
                });
            }
            (None, Err(reason)) => refuse(stream, &peer, reason),
            (Some(acceptor), admitted) => {
                if admitted.is_err() {
                    if self.governor.refusing >= MAX_REFUSING {
                        tracing::warn!(%peer, "connection dropped: too many refused at once");
                        return;
                    }
                    self.governor.refusing += 1;
                }
                let reservation = self.budget.reserve(HANDSHAKE_BYTES);
                ctx.spawn(
                    actix::fut::wrap_future(async move {
                        let done =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                        drop(reservation);
                        done
                    })
                    .map(move |result, act: &mut Self, ctx| {
                        act.handshaken(result, admitted, peer, ctx)
                    }),
                );
            }
        }
    }
}

/// What a TLS handshake with a client gives.
type Handshake = Result<
    std::io::Result<(crate::tls::ServerStream<crate::net::Stream>, Fingerprint)>,
    tokio::time::error::Elapsed,
>;

impl VatSupervisor {
    /// A TLS handshake with an accepted client ended: serve the client if
    /// it was admitted and its key is within the per-peer limit, else tell
    /// it why not.
    fn handshaken(
        &mut self,
        result: Handshake,
        admitted: Result<u64, String>,
        peer: String,
        ctx: &mut Context<Self>,
    ) {
        if admitted.is_err() {
            self.governor.refusing -= 1;
        }
        let (tls, fingerprint) = match result {
            Ok(Ok(done)) => done,
            failed => {
                if let Ok(ticket) = admitted {
                    self.governor.release(ticket);
                }
                match failed {
                    Ok(Err(e)) => tracing::warn!(%peer, "TLS handshake with a client failed: {e}"),
                    _ => tracing::warn!(%peer, "TLS handshake with a client timed out"),
                }
                return;
            }
        };
        let who = Peer::Vat(fingerprint);
        if self.shutting_down {
            if let Ok(ticket) = admitted {
                self.governor.release(ticket);
            }
            tracing::debug!(%peer, "connection closed unserved: the vat is shutting down");
            return;
        }
        match admitted.and_then(|ticket| self.governor.add_key(ticket, fingerprint)) {
            Ok(ticket) => {
                tracing::debug!(%peer, client = %who, "TLS connection accepted");
                let conn = self.run(tls, &who, Some(ticket), ctx);
                ctx.notify(Established {
                    peer: who,
                    conn,
                    initiated_by_us: false,
                });
            }
            Err(reason) => refuse(tls, &format!("{peer} ({who})"), reason),
        }
    }
}
