//! Messages in flight between capabilities: a capnp message plus its table of
//! capabilities, in a form that may cross a mailbox.
//!
//! What needs the capabilities as hooks (reading a payload's root, the
//! capability at a pipeline path, copying a reader into a payload) is in
//! `hook.rs`, which turns cap tables into hook tables.

use std::sync::Arc;

use capnp::any_pointer;
use capnp::message::{self, HeapAllocator, ReaderSegments};
use capnp::private::capability::ClientHook;
use capnp::traits::Imbue;
use capnp_actix_proto::captp::InContent;
use capnp_actix_proto::frame::Kept;

use crate::cap::CapRef;

/// A cap table that may cross threads: one entry per capability pointer of
/// the message (`None` for a slot that was cleared).
pub(crate) type SendCapTable = Vec<Option<CapRef>>;

/// The `!Send` form of a cap table that capnp's readers and builders use.
pub(crate) type HookTable = Vec<Option<Box<dyn ClientHook>>>;

/// The message of a payload.
pub(crate) enum Body {
    /// Built in this process; the content is at the root.
    Built(message::Builder<HeapAllocator>),
    /// Received from a peer and read where it lies (a call's params or a
    /// return's results, inside the rpc message that carried them).
    Received(InContent),
}

impl Body {
    /// The content, with capability pointers as bare indexes.
    pub(crate) fn root(&self) -> capnp::Result<any_pointer::Reader<'_>> {
        match self {
            Body::Built(m) => m.get_root_as_reader(),
            Body::Received(m) => m.content(),
        }
    }
}

/// Parameters or results under construction or in transit: an owned
/// message (Send) and its capabilities. Moving it between actors copies
/// nothing.
pub(crate) struct Payload {
    pub(crate) body: Body,
    pub(crate) caps: SendCapTable,
}

impl Payload {
    /// A payload built in this process.
    pub(crate) fn built(message: message::Builder<HeapAllocator>, caps: SendCapTable) -> Self {
        Payload {
            body: Body::Built(message),
            caps,
        }
    }

    /// A payload with an empty root.
    pub(crate) fn empty() -> Self {
        let mut message = message::Builder::new(HeapAllocator::new().first_segment_words(1));
        message.init_root::<any_pointer::Builder<'_>>();
        Payload::built(message, Vec::new())
    }

    /// The root pointer, with capability pointers as bare indexes.
    pub(crate) fn raw_root(&self) -> capnp::Result<any_pointer::Reader<'_>> {
        self.body.root()
    }

    /// Freezes a finished payload into the shareable form used for answers.
    /// Nothing is copied: a built message is kept as it is (a
    /// `message::Builder<HeapAllocator>` is `Sync` and can be read through
    /// a shared reference), a received one too.
    pub(crate) fn freeze(self) -> Arc<Frozen> {
        Arc::new(Frozen {
            message: match self.body {
                Body::Built(m) => FrozenBody::Built(m),
                Body::Received(m) => FrozenBody::Received(m),
            },
            caps: self.caps,
        })
    }
}

enum FrozenBody {
    /// Built here; read through `get_root_as_reader` (our own data: no
    /// traversal limit, as for a copy).
    Built(message::Builder<HeapAllocator>),
    Received(InContent),
}

/// A finished message that many readers on many threads may share: the
/// results of a call, read by the caller and by pipelined calls.
///
/// Results built here are shared in the builder that built them (nothing
/// can write to it any more: it is only reachable through `&`); results
/// received from a peer are shared as they arrived.
pub(crate) struct Frozen {
    message: FrozenBody,
    pub(crate) caps: SendCapTable,
}

impl Frozen {
    /// The root pointer, with capability pointers as bare indexes into
    /// `caps` (for code that renumbers them, such as a connection).
    pub(crate) fn raw_root(&self) -> capnp::Result<any_pointer::Reader<'_>> {
        match &self.message {
            FrozenBody::Built(m) => m.get_root_as_reader(),
            FrozenBody::Received(m) => m.content(),
        }
    }

    /// The message whose root is the content, when the results were built
    /// here (for sending its segments as they are; see
    /// `Conn::return_results` with `OutContent::Kept`).
    /// The size of the message, in bytes: what keeping these results
    /// costs.
    pub(crate) fn size_bytes(&self) -> usize {
        let words = match &self.message {
            FrozenBody::Built(m) => m.size_in_words(),
            FrozenBody::Received(m) => m.message_words(),
        };
        words.saturating_mul(8)
    }

    pub(crate) fn kept(self: &Arc<Self>) -> Option<Kept> {
        match &self.message {
            FrozenBody::Built(_) => Some(self.clone()),
            FrozenBody::Received(_) => None,
        }
    }

    /// The root pointer, imbued with the given hook table.
    pub(crate) fn root<'a>(
        &'a self,
        table: &'a HookTable,
    ) -> capnp::Result<any_pointer::Reader<'a>> {
        let mut root: any_pointer::Reader<'a> = self.raw_root()?;
        root.imbue(table);
        Ok(root)
    }
}

/// The segments of the message built here whose root is the content
/// (none for received results).
impl ReaderSegments for Frozen {
    fn get_segment(&self, idx: u32) -> Option<&[u8]> {
        match &self.message {
            FrozenBody::Built(m) => m.get_segment(idx),
            FrozenBody::Received(_) => None,
        }
    }
    fn len(&self) -> usize {
        match &self.message {
            FrozenBody::Built(m) => ReaderSegments::len(m),
            FrozenBody::Received(_) => 0,
        }
    }
}
