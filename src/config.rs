//! A vat's options: its key file, listen and public addresses, and whether
//! it uses TLS, with the command-line spelling of the reference vats.
//!
//! [`VatConfig`] is a clap [`Args`](clap::Args) struct, so a program adds
//! the vat's options to its own command line by flattening it:
//!
//! ```
//! use capnp_actix::config::VatConfig;
//! use clap::Parser;
//!
//! /// A calculator server.
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     vat: VatConfig,
//!     /// The program's own options sit beside the vat's.
//!     #[arg(long)]
//!     verbose: bool,
//! }
//!
//! let cli = Cli::try_parse_from([
//!     "calc-server",
//!     "--capnp-listen-address",
//!     "tcp:127.0.0.1:7000",
//!     "--capnp-disable-tls",
//! ])?;
//! let uri = cli.vat.sturdy_uri(b"main")?;
//! assert_eq!(uri.to_string(), "capnp://insecure@127.0.0.1:7000/bWFpbg");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use clap::builder::TypedValueParser as _;

use crate::address::Address;
use crate::identity::{KeyError, SecretKey};
use crate::uri::{SturdyUri, VatAuth};

/// The vat's options; also a clap [`Args`](clap::Args) struct that a
/// program's own parser can `#[command(flatten)]`:
///
/// ```
/// use capnp_actix::config::VatConfig;
/// use clap::Parser;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     vat: VatConfig,
/// }
///
/// let cli = Cli::try_parse_from(["server", "--capnp-listen-address", "unix:/tmp/calc.socket"])?;
/// assert!(cli.vat.tls());
/// assert_eq!(cli.vat.public_address(), cli.vat.listen_address.as_ref());
/// # Ok::<(), clap::Error>(())
/// ```
///
/// Or, without a command line:
///
/// ```
/// use capnp_actix::config::VatConfig;
/// use capnp_actix::Address;
///
/// let vat = VatConfig::new()
///     .with_listen_address(Address::parse("tcp:0.0.0.0:7000")?)
///     .with_public_address(Address::parse("tcp:calc.example.com:7000")?);
/// let uri = vat.sturdy_uri(&vat.derived_id("main")?)?;
/// assert!(uri.to_string().starts_with("capnp://sha-256:"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The secret key is loaded (or generated) on the first call that needs
/// it and kept, so a key file is read once and an ephemeral key stays the
/// same for the life of the configuration and its clones.
///
/// The reference vats spelt the four main options without the `capnp-`
/// prefix before capnp-rpc 0.4 (`--secret-key-file`, `--listen-address`,
/// `--public-address`, `--disable-tls`); those spellings are accepted too,
/// so command lines and scripts written for them work unchanged. A program
/// that flattens this struct cannot have options of its own with those
/// names.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct VatConfig {
    /// `--capnp-secret-key-file PATH`: the file holding the vat's secret
    /// key (PEM), created with a new ECDSA P-256 key if missing (see
    /// [`SecretKey::load_or_create`]; an existing RSA key file is used as
    /// it is). An empty string, or no option, means an ephemeral key (new
    /// each run).
    #[arg(
        long = "capnp-secret-key-file",
        alias = "secret-key-file",
        value_name = "PATH",
        // Not `PathBuf`'s own parser, which rejects the empty string.
        value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from),
        help = "File with the vat's secret key (PEM), created if missing; \
                \"\" means an ephemeral key"
    )]
    pub secret_key_file: Option<PathBuf>,

    /// `--capnp-listen-address ADDR`: where to listen, as `tcp:HOST:PORT`,
    /// `tcp:[IPv6]:PORT` or `unix:PATH` (see [`Address`]).
    #[arg(
        long = "capnp-listen-address",
        alias = "listen-address",
        value_name = "ADDR",
        help = "Address to listen on: tcp:HOST:PORT, tcp:[IPv6]:PORT or unix:PATH"
    )]
    pub listen_address: Option<Address>,

    /// `--capnp-public-address ADDR`: the address to put in sturdy URIs,
    /// when peers reach the vat somewhere other than the listen address
    /// (behind NAT, a proxy, a container's port mapping). Defaults to the
    /// listen address.
    #[arg(
        long = "capnp-public-address",
        alias = "public-address",
        value_name = "ADDR",
        help = "Address to put in sturdy refs (default: the listen address)"
    )]
    pub public_address: Option<Address>,

    /// `--capnp-disable-tls`: plain connections, without TLS; sturdy URIs
    /// then say `insecure` instead of naming the key's fingerprint.
    #[arg(
        long = "capnp-disable-tls",
        alias = "disable-tls",
        help = "Use plain connections, without TLS"
    )]
    pub disable_tls: bool,

    /// `--capnp-memory-budget BYTES`: what all the vat's peers together
    /// may make it hold (their calls not answered yet, the results they
    /// have not finished); default 1 GiB. Over it, new calls fail with
    /// Overloaded and the connection holding the most is aborted (see
    /// SECURITY.md).
    #[arg(
        long = "capnp-memory-budget",
        value_name = "BYTES",
        help = "Bytes all peers together may make the vat hold (default 1 GiB)"
    )]
    pub memory_budget: Option<usize>,

    /// Bytes of results each connection keeps for its peer until the peer
    /// finishes them (default 64 MiB); see
    /// `ConnectionOptions::max_retained_result_bytes`.
    #[arg(skip)]
    pub max_retained_result_bytes: Option<usize>,

    /// `--capnp-max-connections N`: connections the vat's listeners keep
    /// open at once (default 1024). One accepted beyond is sent an abort
    /// (Overloaded, naming the limit) and closed; the others go on.
    #[arg(
        long = "capnp-max-connections",
        value_name = "N",
        help = "Connections the vat accepts at once (default 1024)"
    )]
    pub max_connections: Option<usize>,

    /// `--capnp-max-connections-per-peer N`: accepted connections one peer
    /// may hold at once: per client IP address for TCP, and per key
    /// fingerprint once a TLS client is authenticated (default 64). One
    /// beyond is sent an abort (Overloaded, naming the limit) and closed.
    #[arg(
        long = "capnp-max-connections-per-peer",
        value_name = "N",
        help = "Connections one client address or key may hold (default 64)"
    )]
    pub max_connections_per_peer: Option<usize>,

    /// `--capnp-first-message-deadline-ms MS`: an accepted connection that
    /// has not sent one complete message this long after it was accepted
    /// (after its TLS handshake, which has a deadline of its own) is
    /// aborted, naming the deadline (default 10,000 ms; 0: none).
    #[arg(
        long = "capnp-first-message-deadline-ms",
        value_name = "MS",
        help = "Abort an accepted connection silent this long (default 10000; 0: never)"
    )]
    pub first_message_deadline_ms: Option<u64>,

    /// `--capnp-idle-timeout-ms MS`: close a connection that holds nothing
    /// either way and has received nothing this long, with an abort naming
    /// the timeout (default: never).
    #[arg(
        long = "capnp-idle-timeout-ms",
        value_name = "MS",
        help = "Close connections that hold nothing and are silent this long (default: never)"
    )]
    pub idle_timeout_ms: Option<u64>,

    /// `--capnp-heartbeat-ms MS`: dead-peer detection on every connection
    /// of the vat: after MS with nothing from a peer, probe it with a
    /// request every peer answers (a bootstrap); if nothing arrives within
    /// MS more, declare it dead (its capabilities break with Disconnected,
    /// naming the heartbeat). Default: off (TCP keepalive only).
    #[arg(
        long = "capnp-heartbeat-ms",
        value_name = "MS",
        value_parser = clap::value_parser!(u64).range(1..),
        help = "Probe a peer silent this long; declare it dead after as long again (default: off)"
    )]
    pub heartbeat_ms: Option<u64>,

    /// `--capnp-connect-timeout-ms MS`: how long connecting to another vat
    /// may take (dial and TLS handshake, and for
    /// [`Vat::import_checked`](crate::vat::Vat::import_checked) and
    /// reconnecting imports the bootstrap's answer too) before it fails
    /// with Disconnected, naming the address and the deadline (default
    /// [`DEFAULT_CONNECT_TIMEOUT`], 10,000 ms; 0: none).
    #[arg(
        long = "capnp-connect-timeout-ms",
        value_name = "MS",
        help = "Give up connecting to a vat after this long (default 10000; 0: never)"
    )]
    pub connect_timeout_ms: Option<u64>,

    /// `--capnp-arbiters N`: how many arbiters (threads, each with its own
    /// event loop) serve the vat's connections (default: the available
    /// cores). With 1, connections are served on the arbiter that started
    /// the vat, beside its listeners and TLS handshakes; with more, on
    /// arbiters of their own, and accepts, TLS handshakes and the vat's
    /// bookkeeping stay on the arbiter that started it.
    #[arg(
        long = "capnp-arbiters",
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=1024),
        help = "Arbiters (threads) serving connections (default: the available cores)"
    )]
    pub arbiters: Option<u16>,

    /// Keys given to, or loaded for, this configuration.
    #[arg(skip)]
    keys: KeyCache,
}

/// How long connecting to another vat may take by default (see
/// [`VatConfig::connect_timeout_ms`]).
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the configuration could not give a key, an ID or a sturdy URI.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The secret key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A sturdy URI was asked for, but the vat has no address.
    #[error(
        "no --capnp-listen-address or --capnp-public-address: \
         the vat has no address to put in sturdy URIs"
    )]
    NoAddress,
}

impl VatConfig {
    /// No options: an ephemeral key, TLS on, no address.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use (or create) the key in this file; an empty path means an
    /// ephemeral key. Replaces any key given with
    /// [`VatConfig::with_secret_key`].
    pub fn with_secret_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.secret_key_file = Some(path.into());
        self.keys.given = None;
        self
    }

    /// Use this key; it takes precedence over any key file.
    pub fn with_secret_key(mut self, key: SecretKey) -> Self {
        self.keys.given = Some(key);
        self
    }

    /// Listen on this address (and, unless a public address is set, put it
    /// in sturdy URIs).
    pub fn with_listen_address(mut self, address: Address) -> Self {
        self.listen_address = Some(address);
        self
    }

    /// Put this address in sturdy URIs instead of the listen address.
    pub fn with_public_address(mut self, address: Address) -> Self {
        self.public_address = Some(address);
        self
    }

    /// Turn TLS on (the default) or off.
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.disable_tls = !tls;
        self
    }

    /// What all the vat's peers together may make it hold, in bytes (see
    /// [`VatConfig::memory_budget`]).
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = Some(bytes);
        self
    }

    /// Bytes of results each connection keeps for its peer until the peer
    /// finishes them (see [`VatConfig::max_retained_result_bytes`]).
    pub fn with_max_retained_result_bytes(mut self, bytes: usize) -> Self {
        self.max_retained_result_bytes = Some(bytes);
        self
    }

    /// At most `n` accepted connections at once (see
    /// [`VatConfig::max_connections`]).
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// At most `n` accepted connections at once per client address or key
    /// (see [`VatConfig::max_connections_per_peer`]).
    pub fn with_max_connections_per_peer(mut self, n: usize) -> Self {
        self.max_connections_per_peer = Some(n);
        self
    }

    /// The deadline for an accepted connection's first message; `None`:
    /// none (see [`VatConfig::first_message_deadline_ms`]).
    pub fn with_first_message_deadline(mut self, deadline: Option<std::time::Duration>) -> Self {
        self.first_message_deadline_ms = Some(deadline.map_or(0, |d| d.as_millis() as u64));
        self
    }

    /// Close connections that hold nothing and are silent this long;
    /// `None`: never (see [`VatConfig::idle_timeout_ms`]).
    pub fn with_idle_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.idle_timeout_ms = timeout.map(|d| d.as_millis() as u64);
        self
    }

    /// Probe silent peers after `interval`, and declare them dead after as
    /// long again (see [`VatConfig::heartbeat_ms`]); `None`: off.
    pub fn with_heartbeat(mut self, interval: Option<std::time::Duration>) -> Self {
        self.heartbeat_ms = interval.map(|d| (d.as_millis() as u64).max(1));
        self
    }

    /// The heartbeat [`VatConfig::heartbeat_ms`] asks for.
    pub fn heartbeat(&self) -> Option<capnp_actix_actors::connection::Heartbeat> {
        self.heartbeat_ms.map(|ms| {
            let d = std::time::Duration::from_millis(ms);
            capnp_actix_actors::connection::Heartbeat {
                interval: d,
                timeout: d,
            }
        })
    }

    /// The connect deadline; `None`: none (see
    /// [`VatConfig::connect_timeout_ms`]).
    pub fn with_connect_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.connect_timeout_ms = Some(timeout.map_or(0, |d| d.as_millis() as u64));
        self
    }

    /// The connect deadline in force (see
    /// [`VatConfig::connect_timeout_ms`]): `None` if disabled.
    pub fn connect_timeout(&self) -> Option<std::time::Duration> {
        match self.connect_timeout_ms {
            None => Some(DEFAULT_CONNECT_TIMEOUT),
            Some(0) => None,
            Some(ms) => Some(std::time::Duration::from_millis(ms)),
        }
    }

    /// Serve connections on `n` arbiters (see [`VatConfig::arbiters`]).
    pub fn with_arbiters(mut self, n: u16) -> Self {
        self.arbiters = Some(n.max(1));
        self
    }

    /// How many arbiters serve connections: [`VatConfig::arbiters`], or
    /// the available cores.
    pub fn arbiter_count(&self) -> usize {
        match self.arbiters {
            Some(n) => usize::from(n.max(1)),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// The vat's secret key: the one given with
    /// [`VatConfig::with_secret_key`]; else the one in the key file, created
    /// there if missing; else (no file, or an empty path) an ephemeral one.
    /// Loaded on the first call and kept, so later calls (also on clones)
    /// return the same key without reading the file again.
    pub fn secret_key(&self) -> Result<SecretKey, ConfigError> {
        if let Some(key) = &self.keys.given {
            return Ok(key.clone());
        }
        let file = self.key_file();
        // Held while loading so that concurrent first calls load once.
        let mut loaded = self
            .keys
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(LoadedKey { key, .. }) = loaded.iter().find(|l| l.file.as_deref() == file) {
            return Ok(key.clone());
        }
        let key = match file {
            Some(path) => SecretKey::load_or_create(path)?,
            None => SecretKey::try_ephemeral()?,
        };
        loaded.push(LoadedKey {
            file: file.map(Path::to_path_buf),
            key: key.clone(),
        });
        Ok(key)
    }

    /// Whether connections use TLS (unless `--capnp-disable-tls`).
    pub fn tls(&self) -> bool {
        !self.disable_tls
    }

    /// The address for sturdy URIs: the public address, else the listen
    /// address.
    pub fn public_address(&self) -> Option<&Address> {
        self.public_address
            .as_ref()
            .or(self.listen_address.as_ref())
    }

    /// How clients authenticate this vat: `insecure` without TLS, else the
    /// SHA-256 fingerprint of the secret key (loading it if need be).
    pub fn auth(&self) -> Result<VatAuth, ConfigError> {
        if !self.tls() {
            return Ok(VatAuth::Insecure);
        }
        Ok(self.secret_key()?.fingerprint().into())
    }

    /// The service ID derived from the secret key and `name` (see
    /// [`SecretKey::derived_id`]): stable as long as the key file is.
    pub fn derived_id(&self, name: &str) -> Result<Vec<u8>, ConfigError> {
        Ok(self.secret_key()?.derived_id(name.as_bytes()))
    }

    /// The sturdy URI for a service on this vat: its authentication, its
    /// public address and the service ID.
    pub fn sturdy_uri(&self, service_id: &[u8]) -> Result<SturdyUri, ConfigError> {
        let address = self.public_address().ok_or(ConfigError::NoAddress)?.clone();
        Ok(SturdyUri {
            auth: self.auth()?,
            address,
            service_id: service_id.to_vec(),
        })
    }

    /// The key file to use; `None` for an ephemeral key.
    fn key_file(&self) -> Option<&Path> {
        self.secret_key_file
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
    }
}

/// Keys for a [`VatConfig`]: one given explicitly, and those loaded so far,
/// by key file (`None` for the ephemeral key). Clones share what is loaded,
/// so each source is loaded once even if a clone changes the key file.
#[derive(Clone, Default)]
struct KeyCache {
    given: Option<SecretKey>,
    loaded: Arc<Mutex<Vec<LoadedKey>>>,
}

/// A key and the file it came from.
struct LoadedKey {
    /// The key file (`None`: the ephemeral key).
    file: Option<PathBuf>,
    key: SecretKey,
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("KeyCache")
            .field("given", &self.given)
            .field("loaded", &loaded.iter().map(|l| &l.key).collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn defaults_are_tls_with_an_ephemeral_key_and_no_address() {
        let vat = VatConfig::new();
        assert!(vat.tls());
        assert_eq!(vat.public_address(), None);
        let key = vat.secret_key().unwrap();
        // Kept: the same ephemeral key every time, also on clones.
        assert_eq!(vat.secret_key().unwrap().fingerprint(), key.fingerprint());
        assert_eq!(
            vat.clone().secret_key().unwrap().fingerprint(),
            key.fingerprint()
        );
        assert_eq!(vat.auth().unwrap(), VatAuth::Sha256(key.fingerprint().0));
        assert!(matches!(
            vat.sturdy_uri(b"main"),
            Err(ConfigError::NoAddress)
        ));
    }

    #[test]
    fn builders_set_addresses_tls_and_key() {
        let key = SecretKey::ephemeral();
        let vat = VatConfig::new()
            .with_listen_address(tcp("tcp:0.0.0.0:7000"))
            .with_tls(false)
            .with_secret_key(key.clone());
        assert_eq!(vat.public_address(), Some(&tcp("tcp:0.0.0.0:7000")));
        assert_eq!(vat.auth().unwrap(), VatAuth::Insecure);
        assert_eq!(vat.derived_id("x").unwrap(), key.derived_id(b"x"));
        let vat = vat
            .with_public_address(tcp("tcp:example.com:1"))
            .with_tls(true);
        assert_eq!(vat.public_address(), Some(&tcp("tcp:example.com:1")));
        assert_eq!(vat.auth().unwrap(), key.fingerprint().into());
        // A key file set later replaces the given key; "" is ephemeral.
        let vat = vat.with_secret_key_file("");
        assert_ne!(vat.secret_key().unwrap().fingerprint(), key.fingerprint());
    }

    #[test]
    fn changing_the_key_file_on_a_clone_does_not_disturb_the_original() {
        let a = VatConfig::new();
        let ephemeral = a.secret_key().unwrap().fingerprint();
        let mut b = a.clone();
        b.secret_key_file = Some("/nonexistent-dir-for-capnp-actix/k.pem".into());
        assert!(b.secret_key().is_err());
        assert_eq!(a.secret_key().unwrap().fingerprint(), ephemeral);
    }

    #[test]
    fn no_address_error_names_the_options() {
        let e = ConfigError::NoAddress.to_string();
        assert!(e.contains("--capnp-listen-address"), "{e}");
        assert!(e.contains("--capnp-public-address"), "{e}");
    }
}
