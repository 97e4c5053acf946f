//! The insecure building blocks without a supervisor: [`serve`] a set of
//! [`Services`] on an address, [`connect`] to one, [`import`] an
//! `insecure@` sturdy URI. No TLS, no connection limits, no graceful
//! shutdown: for tests, tools and peers on a trusted link.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use capnp_actix_actors::connection::{start_connection, ConnectionHandle, ConnectionOptions};
use capnp_actix_actors::{system, CapRef};

use crate::address::Address;
use crate::config::DEFAULT_CONNECT_TIMEOUT;
use crate::net;
use crate::uri::{SturdyUri, VatAuth};

/// Bootstrap capabilities by service ID.
#[derive(Clone, Default)]
pub struct Services {
    by_id: HashMap<Vec<u8>, CapRef>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("count", &self.by_id.len())
            .finish()
    }
}

impl Services {
    /// No services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers `cap` under `id` (raw bytes; empty for clients that cannot
    /// send an ID, such as pycapnp and the C++ EzRpc client).
    pub fn add(&mut self, id: impl Into<Vec<u8>>, cap: impl Into<CapRef>) -> &mut Self {
        self.by_id.insert(id.into(), cap.into());
        self
    }

    fn lookup(&self, id: &[u8]) -> Result<CapRef, capnp::Error> {
        self.by_id
            .get(id)
            .cloned()
            .ok_or_else(|| capnp::Error::failed("Unknown persistent service ID".into()))
    }
}

/// A running listener.
#[derive(Debug)]
pub struct Listening {
    address: Address,
    task: actix_rt::task::JoinHandle<()>,
}

impl Listening {
    /// The address actually bound (with the port chosen, for port 0).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The insecure sturdy URI of a service on this listener.
    pub fn uri(&self, service_id: &[u8]) -> SturdyUri {
        SturdyUri {
            auth: VatAuth::Insecure,
            address: self.address.clone(),
            service_id: service_id.to_vec(),
        }
    }

    /// Stops accepting connections (existing ones go on).
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Listens on `address` and serves `services` to every connection, on the
/// current arbiter. TCP connections get TCP_NODELAY. A stale Unix socket
/// file at the path is replaced.
pub async fn serve(address: &Address, services: Services) -> io::Result<Listening> {
    system::check("vat::serve").map_err(io::Error::other)?;
    let services = Arc::new(services);
    let socket = net::Listener::bind(address).await?;
    let local = socket.local_address(address)?;
    let task = actix_rt::spawn(async move {
        loop {
            match socket.accept().await {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "accepted connection");
                    let s = services.clone();
                    start_connection(
                        stream,
                        ConnectionOptions {
                            bootstrap: Some(capnp_actix_actors::connection::bootstrap_fn(
                                move |id: &[u8]| s.lookup(id),
                            )),
                            ..Default::default()
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(Listening {
        address: local,
        task,
    })
}

/// Dials `address`, giving up after [`DEFAULT_CONNECT_TIMEOUT`] with an
/// error naming the address and the deadline.
async fn dial(address: &Address) -> io::Result<net::Stream> {
    tokio::time::timeout(DEFAULT_CONNECT_TIMEOUT, net::dial(address))
        .await
        .unwrap_or_else(|_| Err(super::connect_timed_out(address, DEFAULT_CONNECT_TIMEOUT)))
}

/// Opens a connection to `address` (no TLS), on the current arbiter,
/// within [`DEFAULT_CONNECT_TIMEOUT`].
pub async fn connect(address: &Address) -> io::Result<ConnectionHandle> {
    system::check("vat::connect").map_err(io::Error::other)?;
    let stream = dial(address).await?;
    Ok(start_connection(stream, ConnectionOptions::default()))
}

/// Connects to the vat an `insecure@` sturdy URI names and returns the
/// service's capability (usable at once; calls on it are pipelined). A
/// `sha-256` URI (a TLS vat) needs a TLS identity of our own: use
/// [`Vat::import`], which has one; here it fails with Unimplemented.
///
/// The connection is this capability's own: it closes once the capability,
/// and every capability that came through it, is released.
pub async fn import(uri: &SturdyUri) -> Result<CapRef, capnp::Error> {
    system::check_capnp("vat::import")?;
    if let VatAuth::Sha256(_) = uri.auth {
        return Err(capnp::Error::unimplemented(format!(
            "{uri}: a sha-256 URI names a TLS vat, and this function has no TLS identity to connect with; import it through a `Vat` (`Vat::import`)"
        )));
    }
    let stream = dial(&uri.address)
        .await
        .map_err(|e| capnp::Error::disconnected(e.to_string()))?;
    let options = ConnectionOptions {
        close_when_unused: true,
        ..ConnectionOptions::default()
    };
    Ok(start_connection(stream, options).bootstrap(&uri.service_id))
}
