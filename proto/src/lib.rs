//! The sans-IO core of capnp-actix: what the Cap'n Proto RPC protocol says,
//! with no actix, no sockets, no clocks and no randomness.
//!
//! This crate depends on nothing but `capnp`, the generated schemas and a
//! hasher (`foldhash`), so the compiler enforces the layering: the actor runtime
//! (`capnp-actix-actors`) and the network layer build on it, never the
//! other way round. Everything here is deterministic, so that tests (and
//! the fuzzer) can drive it step by step.
//!
//! The modules:
//! - [`captp`]: the CapTP state machine of one two-party connection
//!   ([`captp::Conn`]): the question, answer, export, import and embargo
//!   tables, handling of each incoming message, and building of each
//!   outgoing one. Its module docs say in which order a runtime calls it
//!   and which file decides which protocol rule;
//! - [`frame`]: the standard stream framing (segment table, then segments),
//!   decoded incrementally from whatever bytes arrive, under [`Limits`],
//!   and encoded with content spliced or inlined rather than copied;
//! - [`exception`]: errors to and from the wire's `Exception`;
//! - [`limits`]: reader limits with the C++ implementation's defaults;
//! - [`content`]: ready-made payload contents (a bootstrap answer's).
//!
//! The actor runtime turns [`captp::Event`]s into work for capability
//! actors and hands the bytes of [`captp::Conn::take_output`] to the
//! network layer.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod captp;
pub mod exception;
pub mod frame;
mod index_hook;
pub mod limits;

pub use capnp_actix_schemas::{persistent_capnp, rpc_capnp, rpc_twoparty_capnp};
pub use frame::{FrameDecoder, FrameError, WordSegments};
pub use limits::Limits;

/// Ready-made payload contents.
pub mod content {
    use capnp::message::{Builder, HeapAllocator};

    /// A message whose root is a capability pointer to cap index 0: the
    /// content of a bootstrap answer.
    pub fn cap_root_message() -> Builder<HeapAllocator> {
        let mut m = Builder::new_default();
        let mut table = Vec::new();
        {
            let mut root: capnp::any_pointer::Builder<'_> = m.init_root();
            capnp::traits::ImbueMut::imbue_mut(&mut root, &mut table);
            if let Some(Some(h)) = crate::index_hook::placeholders(1).pop() {
                root.set_as_capability(h);
            }
        }
        m
    }

    /// A message whose root is a struct with `n` pointer fields, field i
    /// holding capability i (for tests of payloads with several caps).
    pub fn caps_message(n: u32) -> Builder<HeapAllocator> {
        let mut m = Builder::new_default();
        let mut table = Vec::new();
        {
            let mut root: capnp::any_pointer::Builder<'_> = m.init_root();
            capnp::traits::ImbueMut::imbue_mut(&mut root, &mut table);
            let mut list = root.initn_as::<capnp::any_pointer_list::Builder<'_>>(n);
            for (i, h) in crate::index_hook::placeholders(n as usize)
                .into_iter()
                .enumerate()
            {
                if let Some(h) = h {
                    list.reborrow().get(i as u32).set_as_capability(h);
                }
            }
        }
        m
    }
}
