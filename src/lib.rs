//! Cap'n Proto RPC for Rust, as an actix actor runtime.
//!
//! capnp-actix runs the typed client and server code that `capnpc`
//! generates from your `.capnp` schemas. Every capability is an actix actor
//! with its own mailbox, so calls on one capability arrive in the order
//! they were sent (E-order) and a slow method does not hold up the others.
//! Capability handles ([`Cap`]) are `Send + Sync`: keep them in actix-web
//! state, move them between arbiters, call them from any thread.
//!
//! Start with the [`tutorial`]. The crates behind this one:
//! - `capnp-actix-proto`: the sans-IO protocol core (no actix, no sockets);
//! - `capnp-actix-actors`: the actor runtime, re-exported here;
//! - `capnp-actix-schemas`: the wire schemas and the tutorial's schemas,
//!   with their generated code (re-exported as [`schemas`]).
//!
//! What is here: in-process capabilities, pipelining, promises and
//! cancellation; two-party RPC (Level 2) over TCP and Unix sockets,
//! interoperating with the C++, Python and Rust (capnp-rpc) vats; TLS vat
//! identities, sturdy URIs, restorers and persistence ([`vat`],
//! [`restorer`], [`persist`]). ARCHITECTURE.md in the repository maps the
//! layers and the life of a call; the project's issues list what is open.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use capnp_actix_actors::*;
pub use capnp_actix_proto as proto;
pub use capnp_actix_schemas as schemas;

/// Errors: one type with the protocol's kinds and a reason.
pub use capnp::{Error, ErrorKind};

pub mod address;
pub mod config;
pub mod identity;
mod listener;
pub mod net;
pub mod persist;
pub mod restorer;
pub mod store;
pub mod tls;
pub mod tutorial;
pub mod uri;
pub mod vat;

pub use address::Address;
pub use config::{ConfigError, VatConfig};
pub use identity::{Fingerprint, KeyError, SecretKey};
pub use restorer::Restorer;
pub use store::FileStore;
pub use uri::{SturdyUri, VatAuth};
