//! The actor runtime of capnp-actix.
//!
//! Every local capability is an actix actor with its own mailbox; calls on
//! one capability are delivered in the order they were sent (E-order). The
//! typed client and server code that `capnpc` generates runs on this
//! runtime: [`Cap::client`] gives a generated client (`echo::Client`) whose
//! requests travel through our hooks, and [`Cap::new`] hosts a generated
//! server implementation in a capability actor.
//!
//! Most users depend on the `capnp-actix` crate, which re-exports this one
//! and documents the whole library in its tutorial.
//!
//! # Handles and threads
//!
//! [`Cap`] is `Send + Sync`: it may be moved to another arbiter, thread or
//! actix-web worker and called there ([`Cap::client`] builds the generated
//! client on the calling thread). Generated clients themselves are `!Send`,
//! as capnp's hook types are, and so are the futures of their calls: on
//! another arbiter, start them with `arbiter.spawn_fn(move || {
//! actix::spawn(async move { cap.client()... }) })` rather than
//! `arbiter.spawn`, which wants a `Send` future.
//!
//! # Release
//!
//! A capability lives while any handle refers to it (a `Cap`, a generated
//! client, an entry in a message's cap table). When the last one is
//! dropped, its actor stops once its running calls are done and the server
//! value is dropped: the server's `Drop` is its release hook. [`debug`]
//! lists what is still alive.
//!
//! # Cancellation
//!
//! Dropping a call's promise (and its pipeline) before the method starts
//! means the method never starts. Dropping it while the method runs drops
//! the method's future at its next await point, unless the method wrapped
//! its work in [`shield`], which lets it run to completion. (The reference
//! implementations never cancel a running method; we do by default so that
//! abandoned work stops.)
//!
//! # Errors
//!
//! Errors are [`capnp::Error`]: one type with the protocol's kinds
//! (`Failed`, `Overloaded`, `Disconnected`, `Unimplemented`) and a reason.
//! A method that panics fails that call with `Failed`; the capability goes
//! on serving. (A service written as an actor, [`actor`], is stopped as
//! well, so that a supervisor restarts it with fresh state.)
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod actor;
mod answer;
pub mod arbiters;
mod call;
mod cap;
pub mod connection;
pub mod deadline;
pub mod error;
mod handle;
mod hook;
mod host;
mod io;
pub mod memory;
pub mod metrics;
mod payload;
mod promise;
mod registry;
mod server;
mod shield;
mod slot;
pub mod stream;
pub mod switch;
pub mod system;
mod wrap;

/// The actix version this runtime is built on, for generated code and for
/// users who want no version of their own to match.
pub use actix;
/// The capnp version this runtime is built on, for generated code and for
/// users who want no version of their own to match.
pub use capnp;

pub use actor::Reply;
pub use call::IncomingCall;
pub use cap::{CapRef, WeakCapRef};
pub use deadline::{deadline, DeadlineExt};
pub use handle::{new_client, Cap};
pub use promise::Resolver;
pub use shield::{shield, Shield};

/// What is alive: capabilities with their reference counts, and actors.
pub mod debug {
    pub use crate::registry::{assert_all_released, report, wait_all_released, LiveCap, Report};
}
