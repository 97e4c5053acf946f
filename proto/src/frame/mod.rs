//! The standard stream framing, decoded from whatever bytes arrive.
//!
//! A frame is: a little-endian u32 holding the segment count minus one; a
//! u32 size in words per segment; padding to a multiple of 8 bytes; then
//! the segments. [`FrameDecoder`] takes bytes in any chunks, checks the
//! segment table against [`Limits`] before buffering a body, and yields
//! each complete message. [`encode`] writes one.

use std::collections::VecDeque;
use std::sync::Arc;

use capnp::message::{self, ReaderSegments};
use capnp::Word;

use crate::limits::Limits;

/// Why a stream of frames was rejected. Each is fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The segment table announced too many segments.
    TooManySegments {
        /// Segments announced.
        count: u64,
        /// The limit (frames must have fewer).
        max: usize,
    },
    /// The segments add up to more words than allowed.
    TooLarge {
        /// Words announced.
        words: u64,
        /// The limit.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    Truncated {
        /// Bytes of the unfinished frame that had arrived.
        have: usize,
    },
    /// The stream starts with a TLS record (a handshake or an alert), not
    /// a frame: one side speaks TLS and the other does not.
    Tls,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooManySegments { count, max } => {
                write!(
                    f,
                    "frame has {count} segments; fewer than {max} are allowed"
                )
            }
            FrameError::TooLarge { words, max } => {
                write!(f, "frame of {words} words exceeds the limit of {max} words")
            }
            FrameError::Truncated { have } => {
                write!(
                    f,
                    "stream ended inside a frame ({have} bytes of it received)"
                )
            }
            FrameError::Tls => write!(
                f,
                "the peer speaks TLS (its first bytes are a TLS record, not a Cap'n Proto \
                 frame): connect to a TLS vat with its capnp://sha-256:...@ URI, or turn TLS \
                 on for this vat"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for capnp::Error {
    fn from(e: FrameError) -> Self {
        capnp::Error::failed(e.to_string())
    }
}

/// Segments stored back to back in one buffer: the owned form of a
/// received (or copied) message.
pub struct WordSegments {
    storage: Storage,
    /// Where each segment ends.
    ends: Ends,
}

/// Where each segment of a [`WordSegments`] ends, in words from the
/// buffer's start (each starts where the one before it ends, the first at
/// 0). A frame of one segment, the usual case, needs no allocation.
enum Ends {
    One(usize),
    Many(Vec<usize>),
}

impl Ends {
    #[inline]
    fn len(&self) -> usize {
        match self {
            Ends::One(_) => 1,
            Ends::Many(v) => v.len(),
        }
    }

    /// Segment `idx`'s start and end.
    #[inline]
    fn bounds(&self, idx: usize) -> Option<(usize, usize)> {
        match self {
            Ends::One(end) => (idx == 0).then_some((0, *end)),
            Ends::Many(v) => {
                let end = *v.get(idx)?;
                let start = if idx == 0 { 0 } else { v[idx - 1] };
                Some((start, end))
            }
        }
    }
}

/// The buffer of a [`WordSegments`].
enum Storage {
    Words(Vec<Word>),
    /// Bytes read straight into their place; only ever made with a start
    /// aligned to a word (see [`WordSegments::from_bytes`]).
    Bytes(Vec<u8>),
}

impl WordSegments {
    /// Segments copied from `segments` (each a multiple of 8 bytes long;
    /// a trailing partial word is dropped).
    pub fn copy_of(segments: &[&[u8]]) -> Self {
        let total: usize = segments.iter().map(|s| s.len() / 8).sum();
        // Filled word by word rather than zeroed and then overwritten.
        let mut words = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(segments.len());
        for seg in segments {
            words.extend(seg.chunks_exact(8).map(word_of));
            ends.push(words.len());
        }
        WordSegments {
            storage: Storage::Words(words),
            ends: Ends::Many(ends),
        }
    }

    /// Segments whose bytes are `bytes` (each ending within it where
    /// `ends` says), kept where they are if the buffer starts on a word
    /// boundary (capnp reads words in place), copied into words otherwise.
    fn from_bytes(bytes: Vec<u8>, ends: Ends) -> Self {
        let storage = if bytes.as_ptr().align_offset(8) == 0 && !bytes.is_empty() {
            Storage::Bytes(bytes)
        } else {
            Storage::Words(bytes.chunks_exact(8).map(word_of).collect())
        };
        WordSegments { storage, ends }
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Words(w) => Word::words_to_bytes(w),
            Storage::Bytes(b) => b,
        }
    }
}

impl WordSegments {
    /// The segments, in order.
    pub fn segments(&self) -> Vec<&[u8]> {
        (0..self.ends.len() as u32)
            .filter_map(|i| self.get_segment(i))
            .collect()
    }
}

// Inlined into capnp's readers, which ask for a segment at every pointer
// they follow.
impl ReaderSegments for WordSegments {
    #[inline]
    fn get_segment(&self, idx: u32) -> Option<&[u8]> {
        let (a, b) = self.ends.bounds(idx as usize)?;
        self.bytes().get(a * 8..b * 8)
    }
    #[inline]
    fn len(&self) -> usize {
        self.ends.len()
    }
}

/// Words a received message may have read, per word it contains.
pub const TRAVERSALS_PER_WORD: usize = 8;
/// Words a received message may have read beyond that (for tiny messages).
pub const TRAVERSAL_SLACK_WORDS: usize = 8192;

/// Incremental decoder of frames; see the module docs.
///
/// Each frame's body is copied once, from the bytes pushed straight into
/// the buffer of the message it becomes; or, through
/// [`FrameDecoder::body_buffer`], read into that buffer by the caller.
pub struct FrameDecoder {
    limits: Limits,
    /// Bytes of the segment table of the frame being received.
    head: Vec<u8>,
    /// The body of the frame being received, once its table is known.
    body: Option<Body>,
    /// Complete messages not yet taken.
    ready: VecDeque<message::Reader<WordSegments>>,
    /// Why the stream is invalid, reported after the messages before it.
    error: Option<FrameError>,
    /// A frame's segment table has been read: the stream is framed.
    framed: bool,
}

/// A frame body being received.
struct Body {
    /// Bytes of its segment table (counted by [`FrameDecoder::buffered`]).
    head_len: usize,
    /// The body's bytes so far. Its capacity grows with what arrives
    /// (see [`grow_body`]), never from the size the segment table claims.
    bytes: Vec<u8>,
    /// Bytes the body has in all.
    total: usize,
    ends: Ends,
}

impl Body {
    /// Bytes of the frame received so far.
    fn received(&self) -> usize {
        self.head_len + self.bytes.len()
    }

    /// Takes what `bytes` holds of the body; returns the bytes used.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = (self.total - self.bytes.len()).min(bytes.len());
        grow_body(&mut self.bytes, self.total, n);
        self.bytes.extend_from_slice(&bytes[..n]);
        n
    }
}

fn word_of(b: &[u8]) -> Word {
    capnp::word(b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7])
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        FrameDecoder {
            limits,
            head: Vec::new(),
            body: None,
            ready: VecDeque::new(),
            error: None,
            framed: false,
        }
    }

    /// Takes received bytes, decoding every frame they complete.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.error.is_none() {
            if let Some(body) = &mut self.body {
                let used = body.fill(bytes);
                bytes = &bytes[used..];
                if body.bytes.len() == body.total {
                    if let Some(body) = self.body.take() {
                        self.finish_body(body);
                    }
                }
                continue;
            }
            // The segment table: its first word, then the rest of it.
            let need = match self.table_len() {
                Some(need) => need,
                None => return,
            };
            let n = (need - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            match self.table_len() {
                None => return,
                Some(need) if self.head.len() == need && need > 4 => self.start_body(),
                Some(_) => {}
            }
        }
    }

    /// Bytes of the segment table of the frame being received (4 until its
    /// first word is known), or `None` after recording that the frame has
    /// too many segments.
    fn table_len(&mut self) -> Option<usize> {
        let Some(first) = read_u32(&self.head, 0) else {
            return Some(4);
        };
        let count = u64::from(first) + 1;
        if count >= self.limits.max_segments as u64 {
            self.error = Some(if !self.framed && is_tls_record(&self.head) {
                FrameError::Tls
            } else {
                FrameError::TooManySegments {
                    count,
                    max: self.limits.max_segments,
                }
            });
            return None;
        }
        // 4 bytes of count, 4 per segment size, padded to 8.
        Some((4 + 4 * count as usize + 7) & !7)
    }

    /// The segment table is complete: checks it and starts the body.
    fn start_body(&mut self) {
        self.framed = true;
        let count = (self.head.len() - 4) / 4;
        let count = read_u32(&self.head, 0).map_or(count, |c| c as usize + 1);
        let size = |i: usize| u64::from(read_u32(&self.head, 4 + 4 * i).unwrap_or(0));
        let total: u64 = (0..count).map(size).sum();
        if total > self.limits.max_frame_words as u64 {
            self.error = Some(FrameError::TooLarge {
                words: total,
                max: self.limits.max_frame_words,
            });
            return;
        }
        // Each end is at most `total` (checked above).
        let ends = if count == 1 {
            Ends::One(total as usize)
        } else {
            let mut at = 0;
            Ends::Many(
                (0..count)
                    .map(|i| {
                        at += size(i) as usize;
                        at
                    })
                    .collect(),
            )
        };
        // At most `max_frame_words` words (checked above).
        let len = (total as usize).saturating_mul(8);
        let body = Body {
            head_len: self.head.len(),
            bytes: Vec::with_capacity(len.min(FIRST_BODY_BYTES)),
            total: len,
            ends,
        };
        self.head.clear();
        if body.total == 0 {
            self.finish_body(body);
        } else {
            self.body = Some(body);
        }
    }

    fn finish_body(&mut self, body: Body) {
        let total = body.total / 8;
        // Each message may be traversed a few times over (parsed, checked
        // or copied once), never more: a small message whose pointers all
        // share one subtree cannot make us read (or copy) far more than it
        // weighs.
        let mut options = self.limits.reader_options();
        let budget = total
            .saturating_mul(TRAVERSALS_PER_WORD)
            .saturating_add(TRAVERSAL_SLACK_WORDS)
            .min(self.limits.traversal_limit_words);
        options.traversal_limit_in_words(Some(budget));
        self.ready.push_back(message::Reader::new(
            WordSegments::from_bytes(body.bytes, body.ends),
            options,
        ));
    }

    /// While a frame's body is being received and at least `min` of its
    /// bytes are still missing: the buffer the body goes into, and how
    /// many bytes it misses. Append at most that many (as a read from a
    /// socket straight into the buffer does, saving the copy from a read
    /// buffer), then call [`FrameDecoder::body_appended`]. The buffer
    /// has room for at least part of what is missing: it grows as the
    /// body arrives, to at most twice what arrived (a peer that announces
    /// a large frame and sends it slowly does not make us hold the size
    /// it announced); a read fills that room.
    pub fn body_buffer(&mut self, min: usize) -> Option<(&mut Vec<u8>, usize)> {
        if self.error.is_some() {
            return None;
        }
        let body = self.body.as_mut()?;
        let missing = body.total - body.bytes.len();
        if missing < min.max(1) {
            return None;
        }
        grow_body(&mut body.bytes, body.total, missing.min(FIRST_BODY_BYTES));
        Some((&mut body.bytes, missing))
    }

    /// Takes note of bytes appended to the buffer of
    /// [`FrameDecoder::body_buffer`]: decodes the frame if it is complete.
    /// (Bytes appended beyond the body are decoded as what follows it.)
    pub fn body_appended(&mut self) {
        let Some(body) = &mut self.body else {
            return;
        };
        if body.bytes.len() < body.total {
            return;
        }
        let extra = body.bytes.split_off(body.total);
        if let Some(body) = self.body.take() {
            self.finish_body(body);
        }
        if !extra.is_empty() {
            self.push(&extra);
        }
    }

    /// Bytes received but not yet decoded (of an unfinished frame).
    pub fn buffered(&self) -> usize {
        match &self.body {
            Some(b) => b.received(),
            None => self.head.len(),
        }
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or
    /// the reason the stream is invalid (once the messages before the
    /// invalid frame have been taken).
    pub fn next_message(&mut self) -> Result<Option<message::Reader<WordSegments>>, FrameError> {
        if let Some(m) = self.ready.pop_front() {
            return Ok(Some(m));
        }
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(None),
        }
    }

    /// Called at end of stream: an error if a frame was left unfinished.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            have => Err(FrameError::Truncated { have }),
        }
    }
}

/// The most a frame's body gets before any of it has arrived: a frame of
/// up to this size (a 64 KiB payload and its headers) is received into
/// one allocation; a larger one grows as it arrives.
const FIRST_BODY_BYTES: usize = 128 << 10;

/// Makes room in `bytes` (a body of `total` bytes) for `more` bytes:
/// at least doubling, so that a large body is copied a bounded number of
/// times as it grows, but never beyond `total` nor beyond twice what has
/// arrived plus `more`.
fn grow_body(bytes: &mut Vec<u8>, total: usize, more: usize) {
    let need = bytes.len() + more;
    if need > bytes.capacity() {
        let target = need.max(bytes.len().saturating_mul(2)).min(total);
        bytes.reserve_exact(target.saturating_sub(bytes.len()));
    }
}

/// True if `head` starts as a TLS record does: a content type (change
/// cipher spec, alert, handshake, application data), then version 3.x.
/// (As a segment count it is far over any limit, so no valid frame is
/// taken for one.)
fn is_tls_record(head: &[u8]) -> bool {
    matches!(head, [0x14..=0x17, 0x03, 0x00..=0x04, ..])
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Segments beyond which a message is not spliced (peers limit the
/// segments of a frame, 512 by default).
const MAX_SPLICED_SEGMENTS: usize = 32;

/// True if the message with these segments (built by this process, its
/// root at the start of the first) can be spliced by [`encode_spliced`].
pub fn spliceable(segments: &[&[u8]]) -> bool {
    (1..=MAX_SPLICED_SEGMENTS).contains(&segments.len())
        && segments[0].len() >= 8
        && segments
            .iter()
            .all(|s| s.len() % 8 == 0 && s.len() / 8 < 1 << 29)
}

fn word_at(bytes: &[u8], index: usize) -> Option<u64> {
    let b = bytes.get(index * 8..index * 8 + 8)?;
    let mut w = [0; 8];
    w.copy_from_slice(b);
    Some(u64::from_le_bytes(w))
}

/// The index of the pointer reached from the root pointer of a
/// one-segment message by following struct pointers, taking pointer field
/// `path[i]` of the `i`th struct; `None` if the way is not made of
/// in-segment struct pointers.
fn pointer_index(segment: &[u8], path: &[u16]) -> Option<usize> {
    let mut at = 0usize;
    for &field in path {
        let w = word_at(segment, at)?;
        if w & 3 != 0 {
            return None;
        }
        let offset = i64::from((w as u32 as i32) >> 2);
        let start = usize::try_from(at as i64 + 1 + offset).ok()?;
        let data = ((w >> 32) & 0xffff) as usize;
        let pointers = (w >> 48) as usize;
        if usize::from(field) >= pointers {
            return None;
        }
        at = start + data + usize::from(field);
    }
    word_at(segment, at).map(|_| at)
}

/// Appends one frame made of two messages built by this process: `header`
/// (one segment), whose pointer at `path` (see `pointer_index`) is null,
/// and `content`, whose root becomes what that pointer points to. The
/// content's segments are written as they are, first (so that the segment
/// numbers in its far pointers stay right), the header last; the frame's
/// root pointer (the first word of the content's first segment, where its
/// root pointer was) becomes a far pointer to the header's root pointer,
/// and the pointer at `path` becomes the content's root pointer, turned
/// into a far pointer through a two-word landing pad appended to the
/// header when it pointed within the first segment.
///
/// Returns false, writing nothing, if the header is not one segment, the
/// path does not lead to a null pointer, or the content is not
/// [`spliceable`].
pub fn encode_spliced(
    header: &[&[u8]],
    path: &[u16],
    content: &[&[u8]],
    out: &mut Vec<u8>,
) -> bool {
    let content_len: usize = content.iter().map(|s| s.len()).sum();
    splice(header, path, content, out, content_len, |out| {
        out.extend_from_slice(&content[0][8..]);
        for s in &content[1..] {
            out.extend_from_slice(s);
        }
    })
}

/// Appends the frame of one segment: `header` (one segment, built by
/// this process), whose pointer at `path` (see `pointer_index`) is null,
/// followed by the words of `content` after its root pointer; the pointer
/// at `path` becomes the content's root pointer, its offset moved by
/// where the content now lies. `content` is the one segment of a message
/// built by this process, its root pointer first: such a message has no
/// far pointers, and its other pointers are relative to where they are,
/// so they stay right. What [`encode_spliced`] does for large content,
/// without the far pointers and the extra segments: small content is
/// copied word for word instead of through a capnp copy.
///
/// Returns false, writing nothing, if the header is not one segment, the
/// path does not lead to a null pointer, the content's root is a far
/// pointer or points outside it, or the message would be too large.
pub fn encode_inlined(header: &[&[u8]], path: &[u16], content: &[u8], out: &mut Vec<u8>) -> bool {
    let [head] = header else {
        return false;
    };
    if !head.len().is_multiple_of(8) || !content.len().is_multiple_of(8) || content.is_empty() {
        return false;
    }
    let head_words = head.len() / 8;
    let content_words = content.len() / 8;
    // The content's root pointer is not copied.
    let total = head_words + content_words - 1;
    if total >= 1 << 29 {
        return false;
    }
    let Some(slot) = pointer_index(head, path) else {
        return false;
    };
    if word_at(head, slot) != Some(0) {
        return false;
    }
    let root = word_at(content, 0).unwrap_or(0);
    let slot_word = match root & 3 {
        _ if root == 0 => 0,
        // A capability: its index, as it is.
        3 => root,
        // Far: not what a one-segment message built here has.
        2 => return false,
        // A struct or list: content word `target` is now at
        // `head_words + target - 1` (for a zero-sized object pointing at
        // the root pointer itself, the header's last word: nothing is read
        // there).
        _ => {
            let offset = i64::from((root as u32 as i32) >> 2);
            let target = 1 + offset;
            if target < 0 || target as usize > content_words {
                return false;
            }
            let moved = head_words as i64 + target - 1 - (slot as i64 + 1);
            (root & !0xffff_fffc) | u64::from((moved as i32 as u32) << 2)
        }
    };
    out.reserve(8 + total * 8);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&head[..slot * 8]);
    out.extend_from_slice(&slot_word.to_le_bytes());
    out.extend_from_slice(&head[slot * 8 + 8..]);
    out.extend_from_slice(&content[8..]);
    true
}

/// As [`encode_spliced`] with the segments of `kept` as the content, into
/// `out`; the content's larger segments are not copied: `out` keeps
/// `kept` and writes them from where they are (see [`Output::pieces`]).
pub fn encode_spliced_kept(header: &[&[u8]], path: &[u16], kept: &Kept, out: &mut Output) -> bool {
    let content: Vec<&[u8]> = (0..kept.len() as u32)
        .map_while(|i| kept.get_segment(i))
        .collect();
    if content.len() != kept.len() {
        return false;
    }
    let Output { bytes, inserts } = out;
    splice(header, path, &content, bytes, 0, |bytes| {
        for (i, seg) in content.iter().enumerate() {
            // The first word of the first segment is the frame's root,
            // written already.
            let from = if i == 0 { 8 } else { 0 };
            let len = seg.len() - from;
            if len < MIN_KEPT_BYTES {
                bytes.extend_from_slice(&seg[from..]);
            } else {
                inserts.push(Insert {
                    at: bytes.len(),
                    kept: kept.clone(),
                    segment: i as u32,
                    from,
                    len,
                });
            }
        }
    })
}

/// Segments shorter than this are copied into the output rather than
/// written from where they are: a separate piece costs more than the copy.
const MIN_KEPT_BYTES: usize = 4096;

/// What [`encode_spliced`] and [`encode_spliced_kept`] share: checks,
/// then writes the frame into `out`, the content after the frame's root
/// word through `content_body` (which appends `content_len` bytes to
/// `out`, or fewer if it puts them elsewhere).
fn splice(
    header: &[&[u8]],
    path: &[u16],
    content: &[&[u8]],
    out: &mut Vec<u8>,
    content_len: usize,
    content_body: impl FnOnce(&mut Vec<u8>),
) -> bool {
    let [head] = header else {
        return false;
    };
    if !spliceable(content) || head.len() % 8 != 0 || head.len() / 8 >= 1 << 29 {
        return false;
    }
    let Some(slot) = pointer_index(head, path) else {
        return false;
    };
    if word_at(head, slot) != Some(0) {
        return false;
    }
    let n = content.len() as u64;
    let head_words = (head.len() / 8) as u64;
    let root = word_at(content[0], 0).unwrap_or(0);
    let mut pad: Vec<u64> = Vec::new();
    let slot_word = match root & 3 {
        // Null, far (segment numbers are kept) or a capability: as it is.
        _ if root == 0 => 0,
        2 | 3 => root,
        // A struct or list in the first segment: a double-far pointer to a
        // landing pad in the header segment, which points at the object
        // and describes it.
        _ => {
            let offset = i64::from((root as u32 as i32) >> 2);
            let target = 1 + offset;
            if target < 0 || target as usize >= content[0].len() / 8 {
                return false;
            }
            pad.push(2 | ((target as u64) << 3));
            pad.push(root & !0xffff_fffc);
            2 | 4 | (head_words << 3) | (n << 32)
        }
    };
    // The frame's root: a far pointer to the header's root pointer.
    let frame_root = 2 | (n << 32);
    let tail_len = head.len() + pad.len() * 8;
    let count = content.len() + 1;
    out.reserve((4 + 4 * count).div_ceil(8) * 8 + 8 + content_len + tail_len);
    out.extend_from_slice(&((count - 1) as u32).to_le_bytes());
    for s in content {
        out.extend_from_slice(&((s.len() / 8) as u32).to_le_bytes());
    }
    out.extend_from_slice(&((tail_len / 8) as u32).to_le_bytes());
    if count.is_multiple_of(2) {
        out.extend_from_slice(&[0; 4]);
    }
    out.extend_from_slice(&frame_root.to_le_bytes());
    content_body(out);
    out.extend_from_slice(&head[..slot * 8]);
    out.extend_from_slice(&slot_word.to_le_bytes());
    out.extend_from_slice(&head[slot * 8 + 8..]);
    for w in pad {
        out.extend_from_slice(&w.to_le_bytes());
    }
    true
}

/// The segments of a message, kept alive until the frame that carries
/// them is written (see [`encode_spliced_kept`]).
pub type Kept = Arc<dyn ReaderSegments + Send + Sync>;

/// Framed bytes to write: bytes of our own, and between them segments of
/// kept messages, written from where they are instead of copied.
#[derive(Default)]
pub struct Output {
    bytes: Vec<u8>,
    /// In the order of their places in `bytes`.
    inserts: Vec<Insert>,
}

/// Bytes `from..from + len` of segment `segment` of `kept`, written
/// before byte `at` of an [`Output`]'s own bytes.
struct Insert {
    at: usize,
    kept: Kept,
    segment: u32,
    from: usize,
    len: usize,
}

impl Output {
    /// Output that starts in `bytes` (cleared first; for reusing a buffer).
    pub fn with_buffer(mut bytes: Vec<u8>) -> Self {
        bytes.clear();
        Output {
            bytes,
            inserts: Vec::new(),
        }
    }

    /// True if there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.inserts.is_empty()
    }

    /// Bytes to write in all.
    pub fn len(&self) -> usize {
        self.bytes.len() + self.inserts.iter().map(|i| i.len).sum::<usize>()
    }

    /// Capacity of the buffer of own bytes.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// The buffer of own bytes (to append frames to).
    pub fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// The bytes to write, in order, as pieces (none empty).
    pub fn pieces(&self) -> Vec<&[u8]> {
        let mut pieces = Vec::with_capacity(2 * self.inserts.len() + 1);
        let mut at = 0;
        for i in &self.inserts {
            if i.at > at {
                pieces.push(&self.bytes[at..i.at]);
            }
            at = i.at;
            // A kept message's segments do not change: this is the range
            // checked when the insert was made.
            if let Some(seg) = i.kept.get_segment(i.segment) {
                pieces.push(seg.get(i.from..i.from + i.len).unwrap_or(&[]));
            }
        }
        if self.bytes.len() > at {
            pieces.push(&self.bytes[at..]);
        }
        pieces.retain(|p| !p.is_empty());
        pieces
    }

    /// Everything in one buffer (kept segments copied in); its own buffer
    /// when nothing is kept.
    pub fn into_bytes(self) -> Vec<u8> {
        if self.inserts.is_empty() {
            return self.bytes;
        }
        let mut all = Vec::with_capacity(self.len());
        for p in self.pieces() {
            all.extend_from_slice(p);
        }
        all
    }

    /// Appends `other` (its bytes and kept segments) behind this output.
    pub fn append(&mut self, other: Output) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.inserts
            .extend(other.inserts.into_iter().map(|i| Insert {
                at: base + i.at,
                ..i
            }));
    }

    /// Takes the buffer of own bytes, leaving this output empty of them
    /// (for reusing the buffer once everything is written).
    pub fn into_buffer(self) -> Vec<u8> {
        self.bytes
    }
}

/// Bytes of the frame of a message with these segments.
pub fn encoded_len(segments: &[&[u8]]) -> usize {
    let count = segments.len().max(1);
    let table = (4 + 4 * count + 7) & !7;
    table + segments.iter().map(|s| s.len()).sum::<usize>()
}

/// Appends the frame of a message with these segments to `out`.
pub fn encode(segments: &[&[u8]], out: &mut Vec<u8>) {
    let count = segments.len().max(1);
    out.extend_from_slice(&((count - 1) as u32).to_le_bytes());
    if segments.is_empty() {
        out.extend_from_slice(&0u32.to_le_bytes());
    }
    for s in segments {
        out.extend_from_slice(&((s.len() / 8) as u32).to_le_bytes());
    }
    if count.is_multiple_of(2) {
        out.extend_from_slice(&[0; 4]);
    }
    for s in segments {
        out.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests;
