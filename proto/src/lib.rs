//! The sans-IO core of capnp-actix: what the Cap'n Proto RPC protocol says,
//! with no actix, no sockets, no clocks and no randomness.
//!
//! This crate depends on nothing but `capnp` and the generated schemas, so
//! the compiler enforces the layering: the actor runtime
//! (`capnp-actix-actors`) and the network layer build on it, never the
//! other way round. Everything here is deterministic, so that tests (and
//! the fuzzer) can drive it step by step.
//!
//! What is here now:
//! - [`frame`]: the standard stream framing (segment table, then segments),
//!   decoded incrementally from whatever bytes arrive, under [`Limits`];
//! - [`exception`]: errors to and from the wire's `Exception`;
//! - [`limits`]: reader limits with the C++ implementation's defaults.
//!
//! The CapTP state machine (question, answer, import, export and embargo
//! tables) joins them with the two-party network.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod exception;
pub mod frame;
pub mod limits;

pub use capnp_actix_schemas::{persistent_capnp, rpc_capnp, rpc_twoparty_capnp};
pub use frame::{FrameDecoder, FrameError, WordSegments};
pub use limits::Limits;
