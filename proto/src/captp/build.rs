//! Building outgoing messages: the builders (small messages, the scratch
//! segment for calls and returns), writing payloads (content copied or
//! spliced by reference, cap tables), capability descriptors, and the
//! exports and `resolve`s that writing a descriptor entails.

use std::hash::Hash;

use capnp::message::{
    self, Allocator, Builder, HeapAllocator, ReaderOptions, ScratchSpaceHeapAllocator,
};
use capnp::traits::{Imbue, ImbueMut};
use capnp::{any_pointer, Error, Word};

use super::{Conn, OutCap, OutContent, OutTarget};
use crate::exception;
use crate::frame::{self, Kept};
use crate::index_hook::{placeholders, source_indexes};
use crate::rpc_capnp::{
    cap_descriptor, message as rpc_message, message_target, payload, promised_answer, return_,
};

/// What writing a payload (or a resolution's descriptor) produced.
#[derive(Default)]
pub(super) struct Written {
    /// Broken capabilities exported as promises, each with the error its
    /// `resolve` must carry once the message is sent
    /// ([`Conn::send_broken_resolves`]).
    pub(super) broken: Vec<BrokenExport>,
    /// Every export the payload lists (kept with the question as its
    /// param exports, or with the answer until finished).
    pub(super) exports: Vec<u32>,
}

/// A broken capability exported as a promise: its export id and error.
pub(super) struct BrokenExport {
    pub(super) export: u32,
    pub(super) error: Error,
}

/// A payload written into its message, and the content still to splice
/// in behind it when it was not copied.
pub(super) struct WrittenContent<'c> {
    pub(super) written: Written,
    pub(super) spliced: Option<Spliced<'c>>,
}

impl<L: Clone + Eq + Hash, E> Conn<L, E> {
    /// Writes a payload into `p` as [`Conn::write_payload_into`] does,
    /// except that content given as a message's segments, with no
    /// capability, is not copied: the payload gets an empty cap table and
    /// a null content for now, and the segments to splice in behind it are
    /// returned, for [`Conn::send_content`].
    pub(super) fn write_content<'c>(
        &mut self,
        p: payload::Builder<'_>,
        content: &ContentRef<'c>,
        caps: &[OutCap<L>],
    ) -> Result<WrittenContent<'c>, Error> {
        match *content {
            ContentRef::Message(segments, kept) if caps.is_empty() && by_reference(segments) => {
                p.init_cap_table(0);
                Ok(WrittenContent {
                    written: Written::default(),
                    spliced: Some(Spliced { segments, kept }),
                })
            }
            ContentRef::Message(segments, _) => {
                let message = message::Reader::new(
                    message::SegmentArray::new(segments),
                    *ReaderOptions::new().traversal_limit_in_words(None),
                );
                let root = message.get_root()?;
                Ok(WrittenContent {
                    written: self.write_payload_into(p, root, caps)?,
                    spliced: None,
                })
            }
            ContentRef::Reader(root) => Ok(WrittenContent {
                written: self.write_payload_into(p, root, caps)?,
                spliced: None,
            }),
        }
    }

    /// Sends `m`, with the content segments `spliced` (if any) behind it
    /// (or, for one small segment, in the same segment: see
    /// [`frame::encode_inlined`]),
    /// reached from the pointer at `path` in `m` (see
    /// [`frame::encode_spliced`]). Should they not fit (a header of more
    /// than one segment), the content is copied into `m` after all.
    pub(super) fn send_content<A: Allocator, F>(
        &mut self,
        m: &mut Builder<A>,
        nav: F,
        path: &[u16],
        spliced: Option<Spliced<'_>>,
    ) -> Result<(), Error>
    where
        F: for<'x> Fn(&'x mut Builder<A>) -> capnp::Result<payload::Builder<'x>>,
    {
        let Some(Spliced {
            segments: content,
            kept,
        }) = spliced
        else {
            self.send(m);
            return Ok(());
        };
        let header = m.get_segments_for_output();
        let done = match (kept, content) {
            (_, [one]) if !splice_worthwhile(content) => {
                frame::encode_inlined(&header, path, one, self.out.bytes_mut())
            }
            (Some(kept), _) => frame::encode_spliced_kept(&header, path, kept, &mut self.out),
            (None, _) => frame::encode_spliced(&header, path, content, self.out.bytes_mut()),
        };
        if done {
            return Ok(());
        }
        let message = message::Reader::new(
            message::SegmentArray::new(content),
            *ReaderOptions::new().traversal_limit_in_words(None),
        );
        self.write_payload(m, nav, message.get_root()?, &[])?;
        self.send(m);
        Ok(())
    }

    /// Writes a payload into `m` (reached through `nav`): copies `content`
    /// (whose capability pointers index `caps`), then writes the cap table
    /// in the copy's order. Returns the exports of broken capabilities that
    /// need a `resolve`, and the exports the payload lists.
    pub(super) fn write_payload<A: Allocator, F>(
        &mut self,
        m: &mut Builder<A>,
        nav: F,
        content: any_pointer::Reader<'_>,
        caps: &[OutCap<L>],
    ) -> Result<Written, Error>
    where
        F: for<'x> Fn(&'x mut Builder<A>) -> capnp::Result<payload::Builder<'x>>,
    {
        self.write_payload_into(nav(m)?, content, caps)
    }

    /// As [`Conn::write_payload`], into the payload `p`.
    pub(super) fn write_payload_into(
        &mut self,
        mut p: payload::Builder<'_>,
        content: any_pointer::Reader<'_>,
        caps: &[OutCap<L>],
    ) -> Result<Written, Error> {
        let sources = placeholders(caps.len());
        let mut copied = Vec::new();
        {
            // Readers are covariant in their lifetime: shorten it to the
            // placeholders' so it can be imbued with them.
            let mut src: any_pointer::Reader<'_> = content;
            src.imbue(&sources);
            let mut dst = p.reborrow().init_content();
            dst.imbue_mut(&mut copied);
            dst.set_as(src)?;
        }
        let order = source_indexes(&copied);
        drop(copied);
        let mut table = p.init_cap_table(order.len() as u32);
        let mut written = Written::default();
        for (i, src) in order.into_iter().enumerate() {
            let d = table.reborrow().get(i as u32);
            let cap = caps.get(src).unwrap_or(&OutCap::None);
            self.write_descriptor(d, cap, &mut written);
        }
        Ok(written)
    }

    /// Describes one capability of an outgoing payload (or resolution).
    pub(super) fn write_descriptor(
        &mut self,
        mut d: cap_descriptor::Builder<'_>,
        cap: &OutCap<L>,
        written: &mut Written,
    ) {
        match cap {
            OutCap::None => d.set_none(()),
            OutCap::Local(l) | OutCap::Promise(l) => {
                let promise = matches!(cap, OutCap::Promise(_));
                match self.export(l.clone(), promise) {
                    Some((id, as_promise)) => {
                        written.exports.push(id);
                        if as_promise {
                            d.set_sender_promise(id)
                        } else {
                            d.set_sender_hosted(id)
                        }
                    }
                    None => {
                        let e = Error::overloaded(
                            "too many capabilities exported on this connection".into(),
                        );
                        self.write_broken(d, e, written)
                    }
                }
            }
            OutCap::Broken(e) => self.write_broken(d, e.clone(), written),
            OutCap::Import(id) => d.set_receiver_hosted(*id),
            OutCap::Answer { question, path } => {
                let mut pa = d.init_receiver_answer();
                pa.set_question_id(*question);
                write_path(path, pa);
            }
        }
    }

    /// Sends the `resolve` of each broken capability a payload exported
    /// (after the payload itself).
    pub(super) fn send_broken_resolves(&mut self, broken: Vec<BrokenExport>) {
        for BrokenExport { export, error } in broken {
            let mut m = small_message();
            {
                let mut r = m.init_root::<rpc_message::Builder<'_>>().init_resolve();
                r.set_promise_id(export);
                exception::write(&error, r.init_exception());
            }
            self.send(&m);
        }
    }
}

/// The segments of a message.
pub(super) type Segments<'a> = &'a [&'a [u8]];

/// An `Abort` message carrying `reason`: what [`Conn::abort`] sends, and
/// what a runtime sends a peer it refuses before any connection exists.
pub fn abort_message(reason: &Error) -> Builder<HeapAllocator> {
    let mut m = small_message();
    exception::write(
        reason,
        m.init_root::<rpc_message::Builder<'_>>().init_abort(),
    );
    m
}

/// A builder for a message without payload (finish, release, a bare
/// return, ...): capnp's default first segment of 1024 words would be
/// zeroed in full for a message of a few words.
pub(super) fn small_message() -> Builder<HeapAllocator> {
    Builder::new(HeapAllocator::new().first_segment_words(SMALL_MESSAGE_WORDS))
}

/// First segment of [`small_message`]s; larger ones grow more segments.
pub(super) const SMALL_MESSAGE_WORDS: u32 = 32;

/// [`OutContent`] as the builders take it: borrowed, a kept message
/// seen as its segments.
pub(super) enum ContentRef<'a> {
    /// A reader: the content is copied into the call or return.
    Reader(any_pointer::Reader<'a>),
    /// The segments of a message (built here) whose root is the content,
    /// and the message itself when it may be kept until written.
    Message(&'a [&'a [u8]], Option<&'a Kept>),
}

impl OutContent<'_> {
    /// Hands the content to `send` as the builders take it.
    #[inline]
    pub(super) fn with_parts<R>(self, send: impl FnOnce(ContentRef<'_>) -> R) -> R {
        match self {
            OutContent::Reader(root) => send(ContentRef::Reader(root)),
            OutContent::Segments(segments) => send(ContentRef::Message(segments, None)),
            OutContent::Kept(kept) => {
                let segments = kept_segments(&kept);
                send(ContentRef::Message(segments.as_slice(), Some(&kept)))
            }
        }
    }
}

/// Content to splice into a frame.
pub(super) struct Spliced<'a> {
    /// Its segments.
    pub(super) segments: Segments<'a>,
    /// Its message, when kept until written (see
    /// [`frame::encode_spliced_kept`]).
    pub(super) kept: Option<&'a Kept>,
}

/// The segments of a kept message.
fn kept_segments(kept: &Kept) -> KeptSegments<'_> {
    if kept.len() == 1 {
        if let Some(s) = kept.get_segment(0) {
            return KeptSegments::One([s]);
        }
    }
    KeptSegments::Many(
        (0..kept.len() as u32)
            .map_while(|i| kept.get_segment(i))
            .collect(),
    )
}

/// The segments of a kept message: one, the usual case, without
/// allocating.
pub(super) enum KeptSegments<'a> {
    One([&'a [u8]; 1]),
    Many(Vec<&'a [u8]>),
}

impl<'a> KeptSegments<'a> {
    pub(super) fn as_slice(&self) -> &[&'a [u8]] {
        match self {
            KeptSegments::One(s) => s,
            KeptSegments::Many(v) => v,
        }
    }
}

/// Content smaller than this (in words) is copied into its call or
/// return: the copy is cheap, and the message stays one segment.
pub(super) const SPLICE_MIN_WORDS: usize = 1024;

/// Room kept in the header segment of a spliced message, beyond
/// [`PAYLOAD_HEADER_WORDS`], for a long promised-answer path.
pub(super) const SPLICED_HEADER_WORDS: u64 = 96;

/// True if content with these segments (and no capabilities) goes into
/// the frame as it is, spliced or inlined, rather than through a capnp
/// copy.
pub(super) fn by_reference(segments: &[&[u8]]) -> bool {
    segments.len() == 1 || splice_worthwhile(segments)
}

/// True if content with these segments is better spliced than copied.
pub(super) fn splice_worthwhile(segments: &[&[u8]]) -> bool {
    frame::spliceable(segments)
        && segments.iter().map(|s| s.len() / 8).sum::<usize>() >= SPLICE_MIN_WORDS
}

/// Pointer fields from a call message's root to its params content.
pub(super) const CALL_CONTENT: &[u16] = &[0, 1, 0];
/// Pointer fields from a return message's root to its results content.
pub(super) const RETURN_CONTENT: &[u16] = &[0, 0, 0];

/// Words of a call or return message besides its content, with room for
/// a target or path and the cap table's list pointer.
pub(super) const PAYLOAD_HEADER_WORDS: u64 = 32;

/// A builder for a call or return whose first segment is large enough
/// for the whole message, so that the content is copied once into one
/// segment (capnp's default of 1024 words is zeroed in full, and a
/// large content would go to a second, freshly allocated segment). Up to
/// [`SCRATCH_MAX_WORDS`], that segment is the start of `scratch` (grown
/// as needed, zero between uses: the builder zeroes what it used when
/// dropped), so that a call or return allocates no segment; larger ones
/// get a segment allocated for them.
pub(super) fn payload_message<'s>(
    content: &ContentRef<'_>,
    caps: usize,
    scratch: &'s mut Vec<Word>,
) -> Builder<ScratchSpaceHeapAllocator<'s>> {
    let content_words = match content {
        // (A content that cannot be measured fails when copied.)
        ContentRef::Reader(r) => r.target_size().map_or(0, |s| s.word_count),
        // Only the header: the content goes behind it.
        ContentRef::Message(segments, _) if caps == 0 && by_reference(segments) => {
            SPLICED_HEADER_WORDS
        }
        ContentRef::Message(segments, _) => segments.iter().map(|s| s.len() as u64 / 8).sum(),
    };
    // A descriptor is at most 2 words plus a promised answer's path.
    let words = PAYLOAD_HEADER_WORDS
        .saturating_add(content_words)
        .saturating_add(4 * caps as u64)
        .min(1 << 24) as usize;
    let first = if words <= SCRATCH_MAX_WORDS {
        if scratch.len() < words {
            scratch.resize(words, capnp::word(0, 0, 0, 0, 0, 0, 0, 0));
        }
        words
    } else {
        0
    };
    Builder::new(
        ScratchSpaceHeapAllocator::new(Word::words_to_bytes_mut(&mut scratch[..first]))
            .second_segment_words(words as u32),
    )
}

/// Largest call or return (in words) built in a connection's scratch
/// segment; the scratch never grows beyond it.
pub(super) const SCRATCH_MAX_WORDS: usize = 4096;

pub(super) fn call_params<A: Allocator>(m: &mut Builder<A>) -> capnp::Result<payload::Builder<'_>> {
    match m.get_root::<rpc_message::Builder<'_>>()?.which()? {
        rpc_message::Call(c) => c?.get_params(),
        _ => Err(Error::failed("not a call".into())),
    }
}

pub(super) fn return_results<A: Allocator>(
    m: &mut Builder<A>,
) -> capnp::Result<payload::Builder<'_>> {
    match m.get_root::<rpc_message::Builder<'_>>()?.which()? {
        rpc_message::Return(r) => match r?.which()? {
            return_::Results(p) => p,
            _ => Err(Error::failed("not results".into())),
        },
        _ => Err(Error::failed("not a return".into())),
    }
}

pub(super) fn write_target(target: &OutTarget, mut t: message_target::Builder<'_>) {
    match target {
        OutTarget::Import(id) => t.set_imported_cap(*id),
        OutTarget::Answer { question, path } => {
            let mut pa = t.init_promised_answer();
            pa.set_question_id(*question);
            write_path(path, pa);
        }
    }
}

pub(super) fn write_path(path: &[u16], pa: promised_answer::Builder<'_>) {
    let mut ops = pa.init_transform(path.len() as u32);
    for (i, f) in path.iter().enumerate() {
        ops.reborrow().get(i as u32).set_get_pointer_field(*f);
    }
}
