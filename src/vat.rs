//! Serving capabilities on, and connecting to, network addresses.
//!
//! This is the insecure (no TLS) part of a vat: a listener that serves
//! bootstrap capabilities by service ID to every connection, and
//! [`connect`] / [`import`] for the client side. TLS identities, the
//! restorer and the vat supervisor build on it.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use capnp_actix_actors::connection::{start_connection, ConnectionHandle, ConnectionOptions};
use capnp_actix_actors::CapRef;

use crate::address::Address;
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
    let services = Arc::new(services);
    let options = move || ConnectionOptions {
        bootstrap: Some({
            let s = services.clone();
            capnp_actix_actors::connection::bootstrap_fn(move |id: &[u8]| s.lookup(id))
        }),
        ..Default::default()
    };
    match address {
        Address::Tcp { host, port } => {
            let listener = tokio::net::TcpListener::bind((host.as_str(), *port))
                .await
                .map_err(|e| with_context(e, address))?;
            let local = listener.local_addr()?;
            let task = actix_rt::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((s, peer)) => {
                            let _ = s.set_nodelay(true);
                            tracing::debug!(%peer, "accepted connection");
                            start_connection(s, options());
                        }
                        Err(e) => {
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
            });
            Ok(Listening {
                address: Address::Tcp {
                    host: host.clone(),
                    port: local.port(),
                },
                task,
            })
        }
        Address::Unix(path) => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                let _ = std::fs::remove_file(path);
            }
            let listener =
                tokio::net::UnixListener::bind(path).map_err(|e| with_context(e, address))?;
            let task = actix_rt::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((s, _)) => {
                            start_connection(s, options());
                        }
                        Err(e) => {
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
            });
            Ok(Listening {
                address: address.clone(),
                task,
            })
        }
    }
}

fn with_context(e: io::Error, address: &Address) -> io::Error {
    io::Error::new(e.kind(), format!("{address}: {e}"))
}

/// Opens a connection to `address` (no TLS), on the current arbiter.
pub async fn connect(address: &Address) -> io::Result<ConnectionHandle> {
    match address {
        Address::Tcp { host, port } => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|e| with_context(e, address))?;
            s.set_nodelay(true)?;
            Ok(start_connection(s, ConnectionOptions::default()))
        }
        Address::Unix(path) => {
            let s = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| with_context(e, address))?;
            Ok(start_connection(s, ConnectionOptions::default()))
        }
    }
}

/// Connects to the vat a sturdy URI names and returns the service's
/// capability (usable at once; calls on it are pipelined).
pub async fn import(uri: &SturdyUri) -> Result<CapRef, capnp::Error> {
    if let VatAuth::Sha256(_) = uri.auth {
        return Err(capnp::Error::unimplemented(format!(
            "{uri}: TLS vats are not supported yet; use an insecure@ URI"
        )));
    }
    let conn = connect(&uri.address)
        .await
        .map_err(|e| capnp::Error::disconnected(e.to_string()))?;
    Ok(conn.bootstrap(&uri.service_id))
}
