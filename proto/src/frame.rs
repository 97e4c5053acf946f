//! The standard stream framing, decoded from whatever bytes arrive.
//!
//! A frame is: a little-endian u32 holding the segment count minus one; a
//! u32 size in words per segment; padding to a multiple of 8 bytes; then
//! the segments. [`FrameDecoder`] takes bytes in any chunks, checks the
//! segment table against [`Limits`] before buffering a body, and yields
//! each complete message. [`encode`] writes one.

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
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for capnp::Error {
    fn from(e: FrameError) -> Self {
        capnp::Error::failed(e.to_string())
    }
}

/// Segments stored back to back in one word buffer: the owned form of a
/// received (or frozen) message.
pub struct WordSegments {
    words: Vec<Word>,
    bounds: Vec<(usize, usize)>,
}

impl WordSegments {
    /// Segments copied from `segments` (each a multiple of 8 bytes long;
    /// a trailing partial word is dropped).
    pub fn copy_of(segments: &[&[u8]]) -> Self {
        let total: usize = segments.iter().map(|s| s.len() / 8).sum();
        let mut words = Word::allocate_zeroed_vec(total);
        let mut bounds = Vec::with_capacity(segments.len());
        let mut at = 0;
        for seg in segments {
            let n = seg.len() / 8;
            Word::words_to_bytes_mut(&mut words[at..at + n]).copy_from_slice(&seg[..n * 8]);
            bounds.push((at, at + n));
            at += n;
        }
        WordSegments { words, bounds }
    }
}

impl ReaderSegments for WordSegments {
    fn get_segment(&self, idx: u32) -> Option<&[u8]> {
        let (a, b) = *self.bounds.get(idx as usize)?;
        self.words.get(a..b).map(Word::words_to_bytes)
    }
    fn len(&self) -> usize {
        self.bounds.len()
    }
}

/// Words a received message may have read, per word it contains.
pub const TRAVERSALS_PER_WORD: usize = 8;
/// Words a received message may have read beyond that (for tiny messages).
pub const TRAVERSAL_SLACK_WORDS: usize = 8192;

/// Incremental decoder of frames; see the module docs.
pub struct FrameDecoder {
    limits: Limits,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        FrameDecoder {
            limits,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or
    /// the reason the stream is invalid.
    pub fn next_message(&mut self) -> Result<Option<message::Reader<WordSegments>>, FrameError> {
        let data = &self.buf[self.start..];
        let Some(first) = read_u32(data, 0) else {
            return Ok(None);
        };
        let count = u64::from(first) + 1;
        if count >= self.limits.max_segments as u64 {
            return Err(FrameError::TooManySegments {
                count,
                max: self.limits.max_segments,
            });
        }
        let count = count as usize;
        // 4 bytes of count, 4 per segment size, padded to 8.
        let header = (4 + 4 * count + 7) & !7;
        if data.len() < header {
            return Ok(None);
        }
        let mut total: u64 = 0;
        for i in 0..count {
            total += u64::from(read_u32(data, 4 + 4 * i).unwrap_or(0));
        }
        if total > self.limits.max_frame_words as u64 {
            return Err(FrameError::TooLarge {
                words: total,
                max: self.limits.max_frame_words,
            });
        }
        let body = total as usize * 8;
        if data.len() < header + body {
            return Ok(None);
        }
        let mut words = Word::allocate_zeroed_vec(total as usize);
        Word::words_to_bytes_mut(&mut words).copy_from_slice(&data[header..header + body]);
        let mut bounds = Vec::with_capacity(count);
        let mut at = 0;
        for i in 0..count {
            let n = read_u32(data, 4 + 4 * i).unwrap_or(0) as usize;
            bounds.push((at, at + n));
            at += n;
        }
        self.start += header + body;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // Each message may be traversed a few times over (parsed, copied
        // once), never more: a small message whose pointers all share one
        // subtree cannot make us read (or copy) far more than it weighs.
        let mut options = self.limits.reader_options();
        let budget = (total as usize)
            .saturating_mul(TRAVERSALS_PER_WORD)
            .saturating_add(TRAVERSAL_SLACK_WORDS)
            .min(self.limits.traversal_limit_words);
        options.traversal_limit_in_words(Some(budget));
        Ok(Some(message::Reader::new(
            WordSegments { words, bounds },
            options,
        )))
    }

    /// Called at end of stream: an error if a frame was left unfinished.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            have => Err(FrameError::Truncated { have }),
        }
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
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
mod tests {
    use super::*;
    use capnp::message::{Builder, HeapAllocator};

    fn sample(text_len: usize, first_words: u32) -> Builder<HeapAllocator> {
        let mut m = Builder::new(HeapAllocator::new().first_segment_words(first_words));
        let mut r = m.init_root::<crate::rpc_capnp::exception::Builder<'_>>();
        r.set_reason("x".repeat(text_len).as_str());
        m
    }

    fn frame_of(m: &Builder<HeapAllocator>) -> Vec<u8> {
        let segs = m.get_segments_for_output();
        let mut out = Vec::new();
        encode(&segs, &mut out);
        out
    }

    fn reason(r: &message::Reader<WordSegments>) -> usize {
        let e: crate::rpc_capnp::exception::Reader<'_> = r.get_root().unwrap();
        e.get_reason().unwrap().len()
    }

    #[test]
    fn our_frames_match_capnp_serialize_byte_for_byte() {
        for (len, words) in [(3, 1024), (5000, 4)] {
            let m = sample(len, words);
            let mut theirs = Vec::new();
            capnp::serialize::write_message(&mut theirs, &m).unwrap();
            assert_eq!(frame_of(&m), theirs);
        }
    }

    #[test]
    fn decodes_single_and_multi_segment_frames_fed_one_byte_at_a_time() {
        let a = sample(3, 1024);
        let b = sample(5000, 4);
        assert!(b.get_segments_for_output().len() > 1);
        let mut bytes = frame_of(&a);
        bytes.extend(frame_of(&b));
        let mut d = FrameDecoder::new(Limits::default());
        let mut got = Vec::new();
        for byte in bytes {
            d.push(&[byte]);
            while let Some(m) = d.next_message().unwrap() {
                got.push(reason(&m));
            }
        }
        assert_eq!(got, [3, 5000]);
        d.finish().unwrap();
    }

    #[test]
    fn rejects_too_many_segments_before_reading_the_table() {
        let mut d = FrameDecoder::new(Limits::default());
        d.push(&511u32.to_le_bytes()); // 512 segments
        assert_eq!(
            d.next_message().err(),
            Some(FrameError::TooManySegments {
                count: 512,
                max: 512
            })
        );
        let mut d = FrameDecoder::new(Limits::default());
        d.push(&u32::MAX.to_le_bytes());
        assert!(matches!(
            d.next_message(),
            Err(FrameError::TooManySegments { .. })
        ));
    }

    #[test]
    fn rejects_frames_larger_than_the_limit_without_buffering_them() {
        let limits = Limits {
            max_frame_words: 100,
            ..Limits::default()
        };
        let mut d = FrameDecoder::new(limits);
        let mut header = 0u32.to_le_bytes().to_vec();
        header.extend(101u32.to_le_bytes());
        d.push(&header);
        assert_eq!(
            d.next_message().err(),
            Some(FrameError::TooLarge {
                words: 101,
                max: 100
            })
        );
    }

    #[test]
    fn a_stream_that_stops_mid_frame_is_reported() {
        let bytes = frame_of(&sample(40, 1024));
        let mut d = FrameDecoder::new(Limits::default());
        d.push(&bytes[..bytes.len() - 3]);
        assert!(d.next_message().unwrap().is_none());
        assert!(matches!(d.finish(), Err(FrameError::Truncated { .. })));
    }

    #[test]
    fn a_pointer_out_of_bounds_is_an_error_when_read_not_a_panic() {
        // One segment of one word: a struct pointer claiming a far offset.
        let mut bytes = 0u32.to_le_bytes().to_vec();
        bytes.extend(1u32.to_le_bytes());
        bytes.extend(0x0000_0001_7fff_fff0u64.to_le_bytes());
        let mut d = FrameDecoder::new(Limits::default());
        d.push(&bytes);
        let m = d.next_message().unwrap().unwrap();
        let root: capnp::Result<crate::rpc_capnp::message::Reader<'_>> = m.get_root();
        assert!(root.is_err());
    }
}
