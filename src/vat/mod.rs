//! Vats: a supervisor actor per vat owns its identity, listeners,
//! connections and restorer.
//!
//! [`Vat::start`] loads the vat's key (see [`VatConfig`]), binds its listen
//! address and starts the supervisor. The supervisor:
//! - runs each listener under an actix supervisor (out of descriptors, it
//!   keeps its socket and retries accept after a backoff; any other accept
//!   error releases the socket and the listener binds again after a
//!   backoff);
//! - admits every accepted connection against the vat's connection limits
//!   (in all, per client address, per client key) and gives it a deadline
//!   for its first message (see `accept.rs`);
//! - runs the TLS handshake of every connection (in both directions) and
//!   keys connections by the peer's fingerprint: parallel imports of one
//!   vat share one connection, and when two vats connect to each other at
//!   the same moment both keep the connection opened by the vat with the
//!   greater fingerprint and close the other once nothing uses it;
//! - answers every peer's bootstrap with its [`Restorer`].
//!
//! [`Vat::import`] turns a sturdy URI into a capability; a URI naming this
//! vat gives the local object itself.
//!
//! [`Vat::builder`] starts a vat serving named services in one call and
//! gives their sturdy URIs (`builder.rs`); [`Vat::shutdown`] stops it
//! gracefully and [`Vat::stop`] at once (`shutdown.rs`).
//!
//! The free functions [`serve`], [`connect`] and [`import`] are the
//! insecure building blocks without a supervisor (`insecure.rs`).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use capnp_actix_actors::arbiters::Arbiters;
use capnp_actix_actors::connection::Heartbeat;
use capnp_actix_actors::connection::{
    BootstrapFn, ConnectionHandle, ConnectionOptions, VatBudget, DEFAULT_VAT_BUDGET_BYTES,
};
use capnp_actix_actors::{system, Cap, CapRef};
use capnp_actix_proto::captp::TableSizes;
use futures::channel::oneshot;
use futures::FutureExt;

use crate::address::Address;
use crate::config::{ConfigError, VatConfig};
use crate::identity::{Fingerprint, SecretKey};
use crate::listener::ListenerActor;
use crate::net::{self, Movable};
use crate::restorer::Restorer;
use crate::tls;
use crate::uri::{SturdyUri, VatAuth};

mod accept;
mod builder;
mod insecure;
mod resilient;
mod shutdown;

use accept::{Governor, DEFAULT_FIRST_MESSAGE_DEADLINE};
pub use builder::{ServiceUris, Serving, VatBuilder};
pub use insecure::{connect, import, serve, Listening, Services};
pub use resilient::{ConnectionState, ReconnectPolicy, Reconnecting};
pub use shutdown::{shutdown_signal, SHUTTING_DOWN};

/// How long a peer may take over the TLS handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
static NEXT_ANONYMOUS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// How often a connection replaced by a crossed one is checked for use.
const RETIRE_CHECK: Duration = Duration::from_millis(200);

/// Why a vat could not start.
#[derive(Debug, thiserror::Error)]
pub enum VatError {
    /// The configuration (key file, addresses) is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound, or TLS not set up.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The services given to [`Vat::builder`] are inconsistent (a name
    /// served twice, a default naming no service); the message says which.
    #[error("{0}")]
    Services(String),
    /// No actix System runs the calling thread (see
    /// `capnp_actix_actors::system`); the message says how to start one.
    #[error("{0}")]
    NoSystem(String),
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TLS peer, known by its key's fingerprint.
    Vat(Fingerprint),
    /// A vat we reached without TLS, known by its address.
    Insecure(Address),
    /// A client that connected to us without TLS.
    Anonymous(u64),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Vat(fp) => write!(f, "sha-256:{fp}"),
            Peer::Insecure(a) => write!(f, "insecure@{a}"),
            Peer::Anonymous(id) => write!(f, "anonymous client #{id}"),
        }
    }
}

/// One connection of a vat, as [`Vat::connections`] reports it.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer.
    pub peer: Peer,
    /// True if this vat opened the connection.
    pub initiated_by_us: bool,
    /// True if the connection was replaced by a crossed one and will be
    /// closed once nothing uses it.
    pub retiring: bool,
    /// Its table sizes.
    pub tables: TableSizes,
    /// A dump of its tables.
    pub dump: String,
}

/// What the supervisor knows of the vat, shared with its handles.
struct VatShared {
    supervisor: Addr<VatSupervisor>,
    fingerprint: Option<Fingerprint>,
    public: Option<Address>,
    restorer: Arc<dyn Restorer>,
    arbiters: Arc<Arbiters>,
    /// Resolves (its sender dropped) once the vat has stopped and its
    /// connections have written their last bytes.
    finished: futures::future::Shared<oneshot::Receiver<()>>,
    /// See `VatConfig::connect_timeout_ms`.
    connect_timeout: Option<Duration>,
}

/// A running vat: a handle to its supervisor actor. `Clone + Send + Sync`.
#[derive(Clone)]
pub struct Vat {
    shared: Arc<VatShared>,
}

impl std::fmt::Debug for Vat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vat")
            .field("fingerprint", &self.shared.fingerprint)
            .field("address", &self.shared.public)
            .finish()
    }
}

/// Makes the sturdy URIs of one vat's services.
#[derive(Debug, Clone)]
pub struct UriMaker {
    auth: VatAuth,
    address: Option<Address>,
    arbiters: Arc<Arbiters>,
}

impl UriMaker {
    /// The arbiters that will serve the vat's connections, for services
    /// with one instance on each ([`Cap::per_arbiter`]).
    pub fn arbiters(&self) -> &Arc<Arbiters> {
        &self.arbiters
    }

    /// The URI of service `service_id`. A vat without an address (a
    /// client-only vat) makes URIs with the placeholder address
    /// `unix:/nonexistent`, which no one can connect to.
    pub fn sturdy_uri(&self, service_id: &[u8]) -> SturdyUri {
        SturdyUri {
            auth: self.auth.clone(),
            address: self
                .address
                .clone()
                .unwrap_or_else(|| Address::Unix("/nonexistent".into())),
            service_id: service_id.to_vec(),
        }
    }
}

/// A restorer that knows no services (client-only vats).
struct NoServices;

impl Restorer for NoServices {
    fn restore(
        &self,
        _id: &[u8],
    ) -> futures::future::BoxFuture<'static, Result<CapRef, capnp::Error>> {
        futures::future::ready(Err(crate::restorer::unknown_service())).boxed()
    }
}

impl Vat {
    /// Starts a vat on the current arbiter: loads (or creates) its key,
    /// binds its listen address if it has one, and serves `restorer`'s
    /// services to every peer.
    pub async fn start(config: &VatConfig, restorer: impl Restorer) -> Result<Vat, VatError> {
        Self::start_with(config, |_| restorer).await
    }

    /// Like [`Vat::start`], for a restorer that needs the vat's sturdy
    /// URIs (a [`Table`](crate::restorer::Table)): `make` gets a
    /// [`UriMaker`] once the address is bound and the key loaded.
    ///
    /// ```no_run
    /// # async fn f(config: capnp_actix::VatConfig) -> Result<(), capnp_actix::vat::VatError> {
    /// use capnp_actix::restorer::Table;
    /// let vat = capnp_actix::vat::Vat::start_with(&config, |uris| {
    ///     Table::new(move |id| uris.sturdy_uri(id))
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_with<R: Restorer>(
        config: &VatConfig,
        make: impl FnOnce(UriMaker) -> R,
    ) -> Result<Vat, VatError> {
        system::check("starting a vat").map_err(VatError::NoSystem)?;
        let key = if config.tls() {
            Some(config.secret_key()?)
        } else {
            None
        };
        let fingerprint = key.as_ref().map(SecretKey::fingerprint);
        let acceptor = key.as_ref().map(tls::Acceptor::new).transpose()?;
        let bound = match &config.listen_address {
            Some(address) => {
                let socket = net::Listener::bind(address).await?;
                let local = socket.local_address(address)?;
                Some((local, socket))
            }
            None => None,
        };
        let public = match (config.public_address.clone(), &bound) {
            (Some(p), _) => Some(p),
            (None, Some((local, _))) => Some(local.clone()),
            (None, None) => None,
        };
        // Arbiters of its own need an actix System; without one (a bare
        // `LocalSet`), everything runs on this thread.
        let arbiters = Arc::new(match actix::System::try_current() {
            Some(_) => Arbiters::current_or_start(config.arbiter_count()),
            None => Arbiters::current(),
        });
        let uris = UriMaker {
            auth: match fingerprint {
                Some(fp) => VatAuth::Sha256(fp.0),
                None => VatAuth::Insecure,
            },
            address: public.clone(),
            arbiters: arbiters.clone(),
        };
        let restorer: Arc<dyn Restorer> = Arc::new(make(uris));
        let bootstrap: BootstrapFn = {
            let restorer = restorer.clone();
            Arc::new(move |id: &[u8]| restorer.restore(id))
        };
        let budget = VatBudget::new(config.memory_budget.unwrap_or(DEFAULT_VAT_BUDGET_BYTES));
        let max_retained_result_bytes = config.max_retained_result_bytes.unwrap_or(0);
        let governor = Governor::new(config);
        let first_message_deadline = match config.first_message_deadline_ms {
            None => Some(DEFAULT_FIRST_MESSAGE_DEADLINE),
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
        };
        let idle_timeout = config
            .idle_timeout_ms
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        let heartbeat = config.heartbeat();
        let serving = arbiters.clone();
        let connect_timeout = config.connect_timeout();
        let (finished_tx, finished) = oneshot::channel();
        let make_supervisor = move |ctx: &mut Context<VatSupervisor>| {
            let listeners = bound
                .into_iter()
                .map(|(local, socket)| {
                    tracing::info!(address = %local, tls = fingerprint.is_some(), "vat listening");
                    ListenerActor::start(local, socket, ctx.address().recipient())
                })
                .collect();
            VatSupervisor {
                key,
                fingerprint,
                acceptor,
                bootstrap,
                listeners,
                peers: HashMap::new(),
                anonymous: HashMap::new(),
                budget,
                max_retained_result_bytes,
                governor,
                first_message_deadline,
                idle_timeout,
                heartbeat,
                arbiters: serving,
                connect_timeout,
                shutting_down: false,
                finished: Some(finished_tx),
            }
        };
        let supervisor =
            system::spawn_checked("starting a vat", || VatSupervisor::create(make_supervisor));
        Ok(Vat {
            shared: Arc::new(VatShared {
                supervisor,
                fingerprint,
                public,
                restorer,
                arbiters,
                finished: finished.shared(),
                connect_timeout,
            }),
        })
    }

    /// A vat that only connects to others (it listens nowhere and serves
    /// nothing). With TLS on, it still has a key: the one configured, or an
    /// ephemeral one.
    pub async fn client(config: &VatConfig) -> Result<Vat, VatError> {
        let mut config = config.clone();
        config.listen_address = None;
        config.public_address = None;
        Self::start(&config, NoServices).await
    }

    /// The fingerprint of this vat's key (`None` without TLS).
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.shared.fingerprint
    }

    /// The address put in this vat's sturdy URIs: the public address, or
    /// the listen address as bound (with the port chosen, for port 0).
    pub fn address(&self) -> Option<&Address> {
        self.shared.public.as_ref()
    }

    /// The arbiters serving this vat's connections (see
    /// [`VatConfig::arbiters`]): for services with one instance on each
    /// ([`Cap::per_arbiter`]), and their loads.
    pub fn arbiters(&self) -> &Arc<Arbiters> {
        &self.shared.arbiters
    }

    /// The sturdy URI of service `service_id` on this vat.
    pub fn sturdy_uri(&self, service_id: &[u8]) -> Result<SturdyUri, ConfigError> {
        let address = self.shared.public.clone().ok_or(ConfigError::NoAddress)?;
        Ok(SturdyUri {
            auth: self.auth(),
            address,
            service_id: service_id.to_vec(),
        })
    }

    fn auth(&self) -> VatAuth {
        match self.shared.fingerprint {
            Some(fp) => VatAuth::Sha256(fp.0),
            None => VatAuth::Insecure,
        }
    }

    /// True if `uri` names this vat.
    pub fn is_self(&self, uri: &SturdyUri) -> bool {
        match (&uri.auth, self.shared.fingerprint) {
            (VatAuth::Sha256(fp), Some(ours)) => fp == &ours.0,
            (VatAuth::Insecure, None) => self.shared.public.as_ref() == Some(&uri.address),
            _ => false,
        }
    }

    /// The service a sturdy URI names. A URI of this vat gives the local
    /// object itself; otherwise the vat connects (or reuses its connection
    /// to that vat) and asks for the service. The capability is usable at
    /// once: calls made on it are pipelined behind the bootstrap.
    pub async fn import(&self, uri: &SturdyUri) -> Result<CapRef, capnp::Error> {
        if self.is_self(uri) {
            return self.shared.restorer.restore(&uri.service_id).await;
        }
        let conn = self.connection_to(uri).await?;
        Ok(conn.bootstrap(&uri.service_id))
    }

    /// [`Vat::import`] as a typed capability.
    pub async fn import_as<C>(&self, uri: &SturdyUri) -> Result<Cap<C>, capnp::Error> {
        self.import(uri).await.map(Cap::from_raw)
    }

    /// The connection to the vat `uri` names, opened if needed.
    pub async fn connection_to(&self, uri: &SturdyUri) -> Result<ConnectionHandle, capnp::Error> {
        let peer = match &uri.auth {
            VatAuth::Sha256(fp) => Peer::Vat(Fingerprint(*fp)),
            VatAuth::Insecure => Peer::Insecure(uri.address.clone()),
        };
        let (reply, answer) = oneshot::channel();
        self.shared.supervisor.do_send(Connect {
            peer,
            address: uri.address.clone(),
            reply,
        });
        answer
            .await
            .unwrap_or_else(|_| Err(capnp::Error::disconnected("the vat has stopped".into())))
    }

    /// Every connection with its peer and tables.
    pub async fn connections(&self) -> Vec<ConnectionInfo> {
        let Ok(list) = self.shared.supervisor.send(ListConnections).await else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(list.len());
        for listed in list {
            if let Some((tables, dump)) = listed.conn.inspect().await {
                out.push(ConnectionInfo {
                    peer: listed.peer,
                    initiated_by_us: listed.initiated_by_us,
                    retiring: listed.retiring,
                    tables,
                    dump,
                });
            }
        }
        out
    }

    /// A dump of every connection's tables, for debugging.
    pub async fn dump(&self) -> String {
        let mut s = String::new();
        for c in self.connections().await {
            s.push_str(&format!(
                "connection to {} ({}{}):\n{}\n",
                c.peer,
                if c.initiated_by_us { "ours" } else { "theirs" },
                if c.retiring { ", retiring" } else { "" },
                c.dump
            ));
        }
        s
    }

    /// Makes every listener of this vat fail as on an accept error, so
    /// that its supervisor releases the socket and binds it again (for
    /// tests of that path).
    #[doc(hidden)]
    pub fn fail_listeners_for_test(&self) {
        self.shared.supervisor.do_send(FailListeners);
    }
}

/// A connection to a known peer, or the attempt to open one.
#[derive(Default)]
struct PeerEntry {
    current: Option<PeerConnection>,
    /// Imports waiting for our connect to finish.
    waiting: Vec<oneshot::Sender<Result<ConnectionHandle, capnp::Error>>>,
    connecting: bool,
    /// Connections replaced by a crossed one, closed once unused.
    retired: Vec<PeerConnection>,
}

/// One connection to a peer, and which side opened it (what decides
/// which of two crossed connections stays).
#[derive(Clone)]
struct PeerConnection {
    conn: ConnectionHandle,
    initiated_by_us: bool,
}

/// A connection as [`ListConnections`] reports it.
struct ListedConnection {
    peer: Peer,
    initiated_by_us: bool,
    retiring: bool,
    conn: ConnectionHandle,
}

/// See the module docs.
pub struct VatSupervisor {
    key: Option<SecretKey>,
    fingerprint: Option<Fingerprint>,
    acceptor: Option<tls::Acceptor>,
    bootstrap: BootstrapFn,
    listeners: Vec<Addr<ListenerActor>>,
    peers: HashMap<Peer, PeerEntry>,
    anonymous: HashMap<u64, ConnectionHandle>,
    /// What all the vat's peers together may make it hold.
    budget: Arc<VatBudget>,
    max_retained_result_bytes: usize,
    /// Counts accepted connections against the vat's limits.
    governor: Governor,
    /// For accepted connections: see
    /// `ConnectionOptions::first_message_deadline`.
    first_message_deadline: Option<Duration>,
    /// See `ConnectionOptions::idle_timeout`.
    idle_timeout: Option<Duration>,
    /// See `ConnectionOptions::heartbeat`.
    heartbeat: Option<Heartbeat>,
    /// Where connections are served.
    arbiters: Arc<Arbiters>,
    /// How long opening a connection may take (dial and TLS handshake).
    connect_timeout: Option<Duration>,
    /// True once a graceful shutdown has started (see `shutdown.rs`).
    shutting_down: bool,
    /// Dropped once the vat is done (see `VatShared::finished`).
    finished: Option<oneshot::Sender<()>>,
}

struct Connect {
    peer: Peer,
    address: Address,
    reply: oneshot::Sender<Result<ConnectionHandle, capnp::Error>>,
}

impl Message for Connect {
    type Result = ();
}

/// A connection whose handshake finished.
struct Established {
    peer: Peer,
    conn: ConnectionHandle,
    initiated_by_us: bool,
}

impl Message for Established {
    type Result = ();
}

struct ConnectFailed {
    peer: Peer,
    error: capnp::Error,
}

impl Message for ConnectFailed {
    type Result = ();
}

struct Closed {
    peer: Peer,
    conn_id: u64,
    /// The admission of an accepted connection, given back.
    ticket: Option<u64>,
}

impl Message for Closed {
    type Result = ();
}

struct ListConnections;

impl Message for ListConnections {
    type Result = Vec<ListedConnection>;
}

struct FailListeners;

impl Message for FailListeners {
    type Result = ();
}

impl Handler<FailListeners> for VatSupervisor {
    type Result = ();
    fn handle(&mut self, _: FailListeners, _: &mut Context<Self>) {
        for l in &self.listeners {
            l.do_send(crate::listener::FailAccept);
        }
    }
}

impl VatSupervisor {
    /// The options of a connection; `ticket` is the admission of an
    /// accepted one (`None`: one we opened).
    fn options(&self, ticket: Option<u64>) -> ConnectionOptions {
        ConnectionOptions {
            bootstrap: Some(self.bootstrap.clone()),
            budget: Some(self.budget.clone()),
            max_retained_result_bytes: self.max_retained_result_bytes,
            first_message_deadline: ticket.and(self.first_message_deadline),
            idle_timeout: self.idle_timeout,
            heartbeat: self.heartbeat,
            ..Default::default()
        }
    }

    /// Starts the connection actor and watches for its end; `ticket` is
    /// the admission of an accepted connection, given back at its end.
    fn run(
        &mut self,
        mut stream: impl Movable,
        peer: &Peer,
        ticket: Option<u64>,
        ctx: &mut Context<Self>,
    ) -> ConnectionHandle {
        let open = move || stream.reattach().map(|()| stream);
        let (conn, arbiter) = self.arbiters.start_connection(open, self.options(ticket));
        tracing::debug!(%peer, arbiter, "connection placed");
        if self.shutting_down {
            conn.drain(shutdown::shutting_down());
        }
        let closed = conn.closed();
        let (peer, conn_id) = (peer.clone(), conn.id());
        ctx.spawn(actix::fut::wrap_future(closed).map(
            move |reason, _, ctx: &mut Context<Self>| {
                tracing::debug!(%peer, "connection ended: {reason}");
                ctx.notify(Closed {
                    peer,
                    conn_id,
                    ticket,
                });
            },
        ));
        conn
    }

    /// The connection to keep of two to one peer: the one opened by the
    /// vat with the greater fingerprint. True if that is ours.
    fn ours_wins(&self, peer: &Peer) -> bool {
        match (peer, self.fingerprint) {
            (Peer::Vat(theirs), Some(ours)) => ours > *theirs,
            _ => true,
        }
    }

    fn retire(conn: ConnectionHandle, ctx: &mut Context<Self>) {
        // Close it once neither side has anything on it; the peer makes the
        // same choice of connection, so it stops using it too.
        ctx.spawn(actix::fut::wrap_future(async move {
            let mut idle_checks = 0;
            while conn.is_open() {
                tokio::time::sleep(RETIRE_CHECK).await;
                match conn.inspect().await {
                    Some((t, _))
                        if t.questions + t.answers + t.exports + t.imports + t.embargoes == 0 =>
                    {
                        idle_checks += 1;
                        if idle_checks >= 2 {
                            conn.close("replaced by a crossed connection");
                        }
                    }
                    Some(_) => idle_checks = 0,
                    None => break,
                }
            }
        }));
    }
}

impl Handler<Connect> for VatSupervisor {
    type Result = ();
    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) {
        let entry = self.peers.entry(msg.peer.clone()).or_default();
        if let Some(PeerConnection { conn, .. }) = &entry.current {
            if conn.is_open() {
                let _ = msg.reply.send(Ok(conn.clone()));
                return;
            }
            // Gone (its end is being reported): a new connection waits for
            // nothing of it.
            entry.current = None;
        }
        entry.waiting.push(msg.reply);
        if entry.connecting {
            return;
        }
        entry.connecting = true;
        let key = self.key.clone();
        let connect_timeout = self.connect_timeout;
        let (peer, address) = (msg.peer, msg.address);
        let expected = match &peer {
            Peer::Vat(fp) => Some(*fp),
            _ => None,
        };
        ctx.spawn(
            actix::fut::wrap_future(async move {
                // Every error of the dial and the handshake names the address.
                let Some(limit) = connect_timeout else {
                    return open_stream(address, expected, key).await;
                };
                let shown = address.clone();
                tokio::time::timeout(limit, open_stream(address, expected, key))
                    .await
                    .unwrap_or_else(|_| Err(connect_timed_out(&shown, limit)))
            })
            .map(move |result, act: &mut Self, ctx| match result {
                Ok(stream) => {
                    let conn = act.run(stream, &peer, None, ctx);
                    ctx.notify(Established {
                        peer,
                        conn,
                        initiated_by_us: true,
                    });
                }
                Err(e) => {
                    let error = if e.kind() == io::ErrorKind::PermissionDenied {
                        capnp::Error::failed(e.to_string())
                    } else {
                        capnp::Error::disconnected(e.to_string())
                    };
                    ctx.notify(ConnectFailed { peer, error });
                }
            }),
        );
    }
}

/// Dials `address` and, for a TLS peer (`expected` is its fingerprint),
/// runs the handshake. Every error starts with `connecting to ADDRESS:`.
async fn open_stream(
    address: Address,
    expected: Option<Fingerprint>,
    key: Option<SecretKey>,
) -> io::Result<Box<dyn Movable>> {
    // `dial` names the address in its own errors.
    let stream = net::dial(&address).await?;
    secure(stream, expected, key)
        .await
        .map_err(|e| net::connecting_to(e, &address))
}

/// The error of a connect that took longer than `limit`.
fn connect_timed_out(address: &Address, limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("connecting to {address}: no connection within the connect deadline of {limit:?}"),
    )
}

/// The TLS handshake with the peer whose key has fingerprint `expected`;
/// the plain stream when no key is expected.
async fn secure(
    stream: net::Stream,
    expected: Option<Fingerprint>,
    key: Option<SecretKey>,
) -> io::Result<Box<dyn Movable>> {
    match (expected, key) {
        (Some(fp), Some(key)) => {
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls::connect(stream, &key, fp))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok(Box::new(tls))
        }
        (Some(_), None) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a TLS sturdy ref needs a vat with TLS enabled",
        )),
        (None, _) => Ok(Box::new(stream)),
    }
}

/// What a connection actor can run over.
trait AsyncStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> AsyncStream for T {}

impl Handler<ConnectFailed> for VatSupervisor {
    type Result = ();
    fn handle(&mut self, msg: ConnectFailed, _: &mut Context<Self>) {
        if let Some(entry) = self.peers.get_mut(&msg.peer) {
            entry.connecting = false;
            tracing::warn!(peer = %msg.peer, "connect failed: {}", msg.error);
            for w in entry.waiting.drain(..) {
                let _ = w.send(Err(msg.error.clone()));
            }
            if entry.current.is_none() && entry.retired.is_empty() {
                self.peers.remove(&msg.peer);
            }
        }
    }
}

impl Handler<Established> for VatSupervisor {
    type Result = ();
    fn handle(&mut self, msg: Established, ctx: &mut Context<Self>) {
        if let Peer::Anonymous(id) = msg.peer {
            self.anonymous.insert(id, msg.conn);
            return;
        }
        let ours_wins = self.ours_wins(&msg.peer);
        let entry = self.peers.entry(msg.peer.clone()).or_default();
        if msg.initiated_by_us {
            entry.connecting = false;
        }
        let keep_new = match &entry.current {
            Some(PeerConnection {
                conn: old,
                initiated_by_us: old_ours,
            }) if old.is_open() => {
                // Crossed connections: keep the one opened by the vat with
                // the greater fingerprint.
                let new_wins = msg.initiated_by_us == ours_wins;
                let old_wins = *old_ours == ours_wins;
                // Two of the same kind: the peer opened a new one because
                // it thinks the old one is gone.
                let keep_new = new_wins || !old_wins;
                tracing::debug!(peer = %msg.peer, keep_new, "crossed connections");
                keep_new
            }
            _ => true,
        };
        let new = PeerConnection {
            conn: msg.conn,
            initiated_by_us: msg.initiated_by_us,
        };
        let retired = if keep_new {
            let old = entry.current.replace(new);
            old.filter(|c| c.conn.is_open())
        } else {
            Some(new)
        };
        if let Some(retired) = retired {
            let conn = retired.conn.clone();
            entry.retired.push(retired);
            Self::retire(conn, ctx);
        }
        if let Some(PeerConnection { conn, .. }) = &entry.current {
            for w in entry.waiting.drain(..) {
                let _ = w.send(Ok(conn.clone()));
            }
        }
    }
}

impl Handler<Closed> for VatSupervisor {
    type Result = ();
    fn handle(&mut self, msg: Closed, _: &mut Context<Self>) {
        if let Some(ticket) = msg.ticket {
            self.governor.release(ticket);
        }
        if let Peer::Anonymous(id) = msg.peer {
            self.anonymous.remove(&id);
            return;
        }
        if let Some(entry) = self.peers.get_mut(&msg.peer) {
            if entry
                .current
                .as_ref()
                .is_some_and(|c| c.conn.id() == msg.conn_id)
            {
                entry.current = None;
            }
            entry.retired.retain(|c| c.conn.id() != msg.conn_id);
            if entry.current.is_none() && entry.retired.is_empty() && !entry.connecting {
                self.peers.remove(&msg.peer);
            }
        }
    }
}

impl Handler<ListConnections> for VatSupervisor {
    type Result = MessageResult<ListConnections>;
    fn handle(&mut self, _: ListConnections, _: &mut Context<Self>) -> Self::Result {
        let mut out = Vec::new();
        for (peer, entry) in &self.peers {
            let current = entry.current.iter().map(|c| (c, false));
            let retired = entry.retired.iter().map(|c| (c, true));
            for (c, retiring) in current.chain(retired) {
                out.push(ListedConnection {
                    peer: peer.clone(),
                    initiated_by_us: c.initiated_by_us,
                    retiring,
                    conn: c.conn.clone(),
                });
            }
        }
        for (id, c) in &self.anonymous {
            out.push(ListedConnection {
                peer: Peer::Anonymous(*id),
                initiated_by_us: false,
                retiring: false,
                conn: c.clone(),
            });
        }
        MessageResult(out)
    }
}
