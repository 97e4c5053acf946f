//! Serving named services in one call: [`Vat::builder`] starts a vat from
//! a [`VatConfig`], serves the capabilities given to it under their names,
//! and returns the vat with each service's sturdy URI.
//!
//! ```no_run
//! # use capnp_actix::{Cap, VatConfig, vat::Vat};
//! # use capnp_actix::schemas::echo_api_capnp::echo;
//! # async fn f(config: VatConfig, echo: Cap<echo::Client>) -> Result<(), capnp_actix::vat::VatError> {
//! let (vat, uris) = Vat::builder(&config).serve("echo", echo).start().await?;
//! println!("echo service at {}", uris["echo"]);
//! capnp_actix::vat::shutdown_signal().await;
//! vat.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! # Service IDs
//!
//! - **With TLS**, a named service's ID is derived from the vat's secret
//!   key and the name ([`SecretKey::derived_id`], what the reference's
//!   `Capnp_rpc_unix.Vat_config.derived_id config name` gives): a secret
//!   that stays the same as long as the key file does, so the URI
//!   survives restarts and equals the one a reference vat with the same
//!   key file prints.
//! - **Without TLS**, the ID is the name's bytes (`main` is `bWFpbg` in a
//!   URI). On a plain connection the ID crosses the network in clear and
//!   nothing proves which vat answers, so a derived secret would protect
//!   little, and plain names keep URIs stable without a key file and
//!   readable by people and other implementations. The reference derives
//!   IDs here too (from a key it keeps even without TLS);
//!   [`VatBuilder::derive_ids_without_tls`] does the same.
//! - [`VatBuilder::serve_public`] serves under the name's bytes in every
//!   case (a public ID, for interoperation), and
//!   [`VatBuilder::default_without_tls`] also offers a service under the
//!   empty ID when TLS is off: what clients that send no ID get (pycapnp,
//!   the C++ `EzRpcClient`).

use std::collections::HashMap;
use std::sync::Arc;

use capnp::capability::{FromClientHook, FromServer};
use capnp_actix_actors::arbiters::Arbiters;
use capnp_actix_actors::{Cap, CapRef};
use futures::future::BoxFuture;

use super::{UriMaker, Vat, VatError};
use crate::config::{ConfigError, VatConfig};
use crate::identity::SecretKey;
use crate::restorer::{Loader, Table};
use crate::uri::SturdyUri;

/// What [`VatBuilder::serve_with`] runs once the vat's address is bound.
type Setup = Box<dyn FnOnce(&mut Serving)>;

/// Starts a vat that serves named services: see the module docs and
/// [`Vat::builder`]. Nothing happens until [`VatBuilder::start`].
pub struct VatBuilder {
    config: VatConfig,
    setups: Vec<Setup>,
    loader: Option<Box<dyn Loader>>,
    default_without_tls: Option<String>,
    derive_without_tls: bool,
}

impl std::fmt::Debug for VatBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VatBuilder")
            .field("config", &self.config)
            .field("setups", &self.setups.len())
            .field("loader", &self.loader.is_some())
            .field("default_without_tls", &self.default_without_tls)
            .field("derive_without_tls", &self.derive_without_tls)
            .finish()
    }
}

impl Vat {
    /// A vat that serves named services, started in one call (see the
    /// `builder` module docs for the service IDs):
    ///
    /// ```no_run
    /// # use capnp_actix::{Cap, VatConfig, vat::Vat};
    /// # use capnp_actix::schemas::echo_api_capnp::echo;
    /// # async fn f(config: VatConfig, echo: Cap<echo::Client>) -> Result<(), capnp_actix::vat::VatError> {
    /// let (vat, uris) = Vat::builder(&config)
    ///     .serve("main", echo)
    ///     .default_without_tls("main")
    ///     .start()
    ///     .await?;
    /// println!("running at {}", uris["main"]);
    /// # Ok(()) }
    /// ```
    pub fn builder(config: &VatConfig) -> VatBuilder {
        VatBuilder {
            config: config.clone(),
            setups: Vec::new(),
            loader: None,
            default_without_tls: None,
            derive_without_tls: false,
        }
    }
}

impl VatBuilder {
    /// Serves `cap` under the service ID of `name` (derived from the key
    /// with TLS, the name's bytes without; see the module docs).
    pub fn serve(self, name: &str, cap: impl Into<CapRef>) -> Self {
        let (name, cap) = (name.to_string(), cap.into());
        self.serve_with(move |s| {
            s.serve(&name, cap);
        })
    }

    /// Serves a stateless service with one instance on each of the vat's
    /// arbiters ([`Cap::per_arbiter`]), each made by `make` on its
    /// arbiter, under the service ID of `name`. `C` is the generated
    /// client type, which the server alone does not determine:
    /// `.serve_per_arbiter::<echo::Client, _, _>("echo", || Echo)`.
    pub fn serve_per_arbiter<C, S, F>(self, name: &str, make: F) -> Self
    where
        C: FromClientHook + FromServer<S> + 'static,
        F: Fn() -> S + Clone + Send + 'static,
    {
        let name = name.to_string();
        self.serve_with(move |s| {
            let cap: Cap<C> = Cap::per_arbiter(s.arbiters(), make);
            s.serve(&name, cap);
        })
    }

    /// Serves `cap` under `id`'s bytes as they are, with or without TLS: a
    /// public ID that anyone who can reach the vat may use (for peers that
    /// ask for a fixed ID; `""` is what clients that send none ask for).
    pub fn serve_public(self, id: &str, cap: impl Into<CapRef>) -> Self {
        let (id, cap) = (id.to_string(), cap.into());
        self.serve_with(move |s| {
            s.serve_public(&id, cap);
        })
    }

    /// Runs `setup` once the vat's address is bound and its key loaded,
    /// before it serves anyone: for services that need their own sturdy
    /// URI or another's ([`Serving::uri`]), the vat's arbiters, or that
    /// serve several names at once. Setups run in the order given, mixed
    /// with the other `serve` calls.
    pub fn serve_with(mut self, setup: impl FnOnce(&mut Serving) + 'static) -> Self {
        self.setups.push(Box::new(setup));
        self
    }

    /// Without TLS, also serves service `name` under the empty ID: what a
    /// peer's bootstrap without an ID gets (pycapnp's and the C++
    /// `EzRpcClient`'s). The empty ID is no secret: anyone who can reach
    /// the vat gets the service. With TLS this does nothing: a TLS vat's
    /// services are reached by their derived IDs only. `name` must be
    /// served by this builder ([`VatBuilder::start`] fails otherwise).
    pub fn default_without_tls(mut self, name: &str) -> Self {
        self.default_without_tls = Some(name.to_string());
        self
    }

    /// Derives the IDs of named services from the key without TLS too, as
    /// the reference vats do (see the module docs). Without a key file the
    /// key is ephemeral, and the URIs change at each start.
    pub fn derive_ids_without_tls(mut self) -> Self {
        self.derive_without_tls = true;
        self
    }

    /// Restores the service IDs the builder does not serve through
    /// `loader` (saved services: see [`Table::with_loader`]).
    pub fn loader(mut self, loader: impl Loader) -> Self {
        self.loader = Some(Box::new(loader));
        self
    }

    /// Starts the vat (see [`Vat::start_with`]): loads its key, binds its
    /// listen address, runs the setups and serves the services. Gives the
    /// vat and each service's sturdy URI, by name.
    ///
    /// Fails if the configuration has no address for sturdy URIs, the key
    /// or the address is unusable, or the services are inconsistent (a
    /// name served twice, [`VatBuilder::default_without_tls`] naming a
    /// service not served); the vat is stopped again in the last case.
    pub async fn start(self) -> Result<(Vat, ServiceUris), VatError> {
        let VatBuilder {
            config,
            setups,
            loader,
            default_without_tls,
            derive_without_tls,
        } = self;
        if config.public_address().is_none() {
            return Err(ConfigError::NoAddress.into());
        }
        let tls = config.tls();
        let key = if tls || derive_without_tls {
            Some(config.secret_key()?)
        } else {
            None
        };
        let mut outcome = None;
        let vat = Vat::start_with(&config, |uris| {
            let make_uri = {
                let uris = uris.clone();
                move |id: &[u8]| uris.sturdy_uri(id)
            };
            let table = match loader {
                Some(loader) => Table::with_loader(make_uri, BoxedLoader(loader)),
                None => Table::new(make_uri),
            };
            let mut serving = Serving {
                key,
                uris,
                table: table.clone(),
                served: ServiceUris::default(),
                caps: HashMap::new(),
                problems: Vec::new(),
            };
            for setup in setups {
                setup(&mut serving);
            }
            if let Some(name) = default_without_tls.filter(|_| !tls) {
                serving.serve_default(&name);
            }
            outcome = Some((serving.served, serving.problems));
            table
        })
        .await?;
        let (uris, problems) = outcome.unwrap_or_default();
        if !problems.is_empty() {
            vat.stop();
            return Err(VatError::Services(problems.join("; ")));
        }
        Ok((vat, uris))
    }
}

/// A boxed [`Loader`], for [`Table::with_loader`].
struct BoxedLoader(Box<dyn Loader>);

impl Loader for BoxedLoader {
    fn load(
        &self,
        uri: SturdyUri,
        digest: [u8; 32],
    ) -> BoxFuture<'static, Result<CapRef, capnp::Error>> {
        self.0.load(uri, digest)
    }
}

/// The vat being set up, as [`VatBuilder::serve_with`] sees it: its
/// URIs, arbiters and table of services.
pub struct Serving {
    /// The key IDs are derived from (`None`: IDs are the names' bytes).
    key: Option<SecretKey>,
    uris: UriMaker,
    table: Table,
    served: ServiceUris,
    caps: HashMap<String, CapRef>,
    problems: Vec<String>,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("served", &self.served)
            .finish()
    }
}

impl Serving {
    /// The service ID of `name` on this vat: derived from the key, or the
    /// name's bytes (see the module docs).
    pub fn id(&self, name: &str) -> Vec<u8> {
        match &self.key {
            Some(key) => key.derived_id(name.as_bytes()),
            None => name.as_bytes().to_vec(),
        }
    }

    /// The sturdy URI service `name` has (or will have) on this vat.
    pub fn uri(&self, name: &str) -> SturdyUri {
        self.uris.sturdy_uri(&self.id(name))
    }

    /// Serves `cap` under the ID of `name` and gives its URI.
    pub fn serve(&mut self, name: &str, cap: impl Into<CapRef>) -> SturdyUri {
        let id = self.id(name);
        self.add(name, id, cap.into())
    }

    /// Serves `cap` under `id`'s bytes as they are (see
    /// [`VatBuilder::serve_public`]) and gives its URI.
    pub fn serve_public(&mut self, id: &str, cap: impl Into<CapRef>) -> SturdyUri {
        self.add(id, id.as_bytes().to_vec(), cap.into())
    }

    /// Makes the sturdy URIs of this vat's services (for services made
    /// later, such as saved ones).
    pub fn uri_maker(&self) -> &UriMaker {
        &self.uris
    }

    /// The arbiters that will serve the vat's connections, for services
    /// with one instance on each ([`Cap::per_arbiter`]).
    pub fn arbiters(&self) -> &Arc<Arbiters> {
        self.uris.arbiters()
    }

    /// The vat's table of services (its restorer): keep a clone to add or
    /// remove services while the vat runs.
    pub fn table(&self) -> &Table {
        &self.table
    }

    fn add(&mut self, name: &str, id: Vec<u8>, cap: CapRef) -> SturdyUri {
        let uri = self.uris.sturdy_uri(&id);
        if self.caps.contains_key(name) {
            self.problems.push(format!(
                "service {name:?} is served twice; each name gives one service ID"
            ));
            return uri;
        }
        self.table.add(&id, cap.clone());
        self.caps.insert(name.to_string(), cap);
        self.served.by_name.push((name.to_string(), uri.clone()));
        uri
    }

    /// [`VatBuilder::default_without_tls`]: service `name` under the empty
    /// ID too.
    fn serve_default(&mut self, name: &str) {
        match self.caps.get(name).cloned() {
            Some(cap) => {
                self.serve_public("", cap);
            }
            None => self.problems.push(format!(
                "default_without_tls({name:?}) names no service this builder serves"
            )),
        }
    }
}

/// The sturdy URIs of the services a [`VatBuilder`] started, by name
/// (in the order they were served). Indexing with a name not served
/// panics, naming it and those served; [`ServiceUris::get`] does not.
#[derive(Debug, Clone, Default)]
pub struct ServiceUris {
    by_name: Vec<(String, SturdyUri)>,
}

impl ServiceUris {
    /// The URI of service `name`, if it was served.
    pub fn get(&self, name: &str) -> Option<&SturdyUri> {
        self.by_name.iter().find(|(n, _)| n == name).map(|(_, u)| u)
    }

    /// Every service's name and URI, in the order they were served.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SturdyUri)> {
        self.by_name.iter().map(|(n, u)| (n.as_str(), u))
    }

    /// How many services were served.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True if none was.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl std::ops::Index<&str> for ServiceUris {
    type Output = SturdyUri;
    fn index(&self, name: &str) -> &SturdyUri {
        match self.get(name) {
            Some(uri) => uri,
            None => {
                let served: Vec<&str> = self.by_name.iter().map(|(n, _)| n.as_str()).collect();
                panic!("no service named {name:?} was served (served: {served:?})")
            }
        }
    }
}
