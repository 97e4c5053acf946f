//! Tests of the framing: our frames against capnp's own serializer,
//! spliced, inlined and kept content read back as written, and the
//! decoder's limits and errors.

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

/// A return header with a null results content, and the frame with
/// `content` spliced into it, decoded.
fn spliced(content: &Builder<HeapAllocator>) -> message::Reader<WordSegments> {
    use crate::rpc_capnp::{message as rpc_message, return_};
    let mut header = Builder::new(HeapAllocator::new().first_segment_words(64));
    {
        let mut r = header.init_root::<rpc_message::Builder<'_>>().init_return();
        r.set_answer_id(7);
        r.init_results().init_cap_table(0);
    }
    let mut out = Vec::new();
    assert!(encode_spliced(
        &header.get_segments_for_output(),
        &[0, 0, 0],
        &content.get_segments_for_output(),
        &mut out
    ));
    let mut d = FrameDecoder::new(Limits::default());
    d.push(&out);
    let m = d.next_message().unwrap().unwrap();
    assert!(d.next_message().unwrap().is_none());
    {
        let root: rpc_message::Reader<'_> = m.get_root().unwrap();
        let rpc_message::Which::Return(r) = root.which().unwrap() else {
            panic!("not a return")
        };
        let r = r.unwrap();
        assert_eq!(r.get_answer_id(), 7);
        assert!(matches!(r.which(), Ok(return_::Results(_))));
    }
    m
}

/// As `spliced`, with `content` (one segment) inlined instead.
fn inlined(content: &Builder<HeapAllocator>) -> message::Reader<WordSegments> {
    use crate::rpc_capnp::message as rpc_message;
    let mut header = Builder::new(HeapAllocator::new().first_segment_words(64));
    {
        let mut r = header.init_root::<rpc_message::Builder<'_>>().init_return();
        r.set_answer_id(7);
        r.init_results().init_cap_table(0);
    }
    let segments = content.get_segments_for_output();
    let mut out = Vec::new();
    assert!(encode_inlined(
        &header.get_segments_for_output(),
        &[0, 0, 0],
        segments[0],
        &mut out
    ));
    let mut d = FrameDecoder::new(Limits::default());
    d.push(&out);
    let m = d.next_message().unwrap().unwrap();
    assert!(d.next_message().unwrap().is_none());
    assert_eq!(m.into_segments().len(), 1);
    d.push(&out);
    d.next_message().unwrap().unwrap()
}

#[test]
fn inlined_content_reads_back_the_same() {
    use crate::rpc_capnp::{message as rpc_message, return_};
    fn content(m: &message::Reader<WordSegments>) -> capnp::any_pointer::Reader<'_> {
        let root: rpc_message::Reader<'_> = m.get_root().unwrap();
        let Ok(rpc_message::Which::Return(Ok(r))) = root.which() else {
            panic!("not a return")
        };
        assert_eq!(r.get_answer_id(), 7);
        let Ok(return_::Results(Ok(p))) = r.which() else {
            panic!("no results")
        };
        assert_eq!(p.get_cap_table().unwrap().len(), 0);
        p.get_content()
    }
    // A struct with a text.
    for len in [0, 3, 40, 700] {
        let m = sample(len, 1024);
        let got = inlined(&m);
        assert_eq!(spliced_reason(&got).len(), len);
        let e: crate::rpc_capnp::exception::Reader<'_> = content(&got).get_as().unwrap();
        assert_eq!(e.get_reason().unwrap().len(), len);
    }
    // A list at the root; a struct with only data; an empty struct; a
    // null root.
    let mut m = Builder::new(HeapAllocator::new().first_segment_words(8));
    m.set_root(&[1u64, 2, 3, 4][..]).unwrap();
    let got = inlined(&m);
    let list: capnp::primitive_list::Reader<'_, u64> = content(&got).get_as().unwrap();
    assert_eq!(list.iter().collect::<Vec<_>>(), [1, 2, 3, 4]);
    let mut m = Builder::new(HeapAllocator::new().first_segment_words(8));
    m.init_root::<crate::rpc_capnp::finish::Builder<'_>>()
        .set_question_id(42);
    let got = inlined(&m);
    let f: crate::rpc_capnp::finish::Reader<'_> = content(&got).get_as().unwrap();
    assert_eq!(f.get_question_id(), 42);
    let mut m = Builder::new(HeapAllocator::new().first_segment_words(8));
    m.init_root::<crate::rpc_capnp::message::Builder<'_>>();
    let got = inlined(&m);
    let e: crate::rpc_capnp::message::Reader<'_> = content(&got).get_as().unwrap();
    assert!(e.total_size().unwrap().word_count <= 2);
    let mut m = Builder::new(HeapAllocator::new().first_segment_words(8));
    m.init_root::<capnp::any_pointer::Builder<'_>>();
    let got = inlined(&m);
    assert!(content(&got).is_null());
}

#[test]
fn inlining_refuses_what_it_cannot_do() {
    use crate::rpc_capnp::message as rpc_message;
    let content = sample(3, 1024);
    let segments = content.get_segments_for_output();
    let mut header = Builder::new(HeapAllocator::new().first_segment_words(64));
    {
        let r = header.init_root::<rpc_message::Builder<'_>>().init_return();
        r.init_results().init_cap_table(0);
    }
    let mut out = Vec::new();
    // Not a null pointer at the path (the cap table), or no pointer.
    assert!(!encode_inlined(
        &header.get_segments_for_output(),
        &[0, 0, 1],
        segments[0],
        &mut out
    ));
    assert!(!encode_inlined(
        &header.get_segments_for_output(),
        &[0, 0, 5],
        segments[0],
        &mut out
    ));
    // A far root pointer.
    let mut far = segments[0].to_vec();
    far[0] = 2;
    assert!(!encode_inlined(
        &header.get_segments_for_output(),
        &[0, 0, 0],
        &far,
        &mut out
    ));
    assert!(out.is_empty());
}

fn spliced_reason(m: &message::Reader<WordSegments>) -> String {
    use crate::rpc_capnp::{message as rpc_message, return_};
    let root: rpc_message::Reader<'_> = m.get_root().unwrap();
    let Ok(rpc_message::Which::Return(Ok(r))) = root.which() else {
        panic!("not a return")
    };
    let Ok(return_::Results(Ok(p))) = r.which() else {
        panic!("no results")
    };
    let e: crate::rpc_capnp::exception::Reader<'_> = p.get_content().get_as().unwrap();
    e.get_reason().unwrap().to_string().unwrap()
}

#[test]
fn spliced_content_reads_back_whatever_its_segments() {
    // Root in the first segment, text in another (far pointer within
    // the content); root struct in a second segment (the root pointer
    // itself is far); everything in one segment.
    for (len, words) in [(5000, 4), (300, 1), (40, 1024)] {
        let m = sample(len, words);
        let got = spliced(&m);
        assert_eq!(spliced_reason(&got).len(), len);
        assert_eq!(
            got.into_segments().len(),
            m.get_segments_for_output().len() + 1
        );
    }
    // A list at the root.
    let mut m = Builder::new(HeapAllocator::new().first_segment_words(2));
    m.set_root(&[1u64, 2, 3, 4][..]).unwrap();
    let got = spliced(&m);
    let root: crate::rpc_capnp::message::Reader<'_> = got.get_root().unwrap();
    let Ok(crate::rpc_capnp::message::Which::Return(Ok(r))) = root.which() else {
        panic!()
    };
    let Ok(crate::rpc_capnp::return_::Results(Ok(p))) = r.which() else {
        panic!()
    };
    let list: capnp::primitive_list::Reader<'_, u64> = p.get_content().get_as().unwrap();
    assert_eq!(list.iter().collect::<Vec<_>>(), [1, 2, 3, 4]);
}

#[test]
fn splicing_refuses_what_it_cannot_do() {
    let content = sample(10, 64);
    let segs = content.get_segments_for_output();
    let header = sample(10, 64);
    let mut out = Vec::new();
    // The pointer at the path is not null (it is the reason text).
    assert!(!encode_spliced(
        &header.get_segments_for_output(),
        &[0],
        &segs,
        &mut out
    ));
    // No such pointer field.
    assert!(!encode_spliced(
        &header.get_segments_for_output(),
        &[5],
        &segs,
        &mut out
    ));
    // A header of two segments.
    let big = sample(5000, 4);
    assert!(!encode_spliced(
        &big.get_segments_for_output(),
        &[],
        &segs,
        &mut out
    ));
    assert!(!spliceable(&[]));
    assert!(out.is_empty());
}

#[test]
fn encoded_len_is_the_length_encode_writes() {
    for (len, words) in [(3, 1024), (5000, 4), (0, 1)] {
        let m = sample(len, words);
        let segs = m.get_segments_for_output();
        assert_eq!(encoded_len(&segs), frame_of(&m).len());
    }
    assert_eq!(encoded_len(&[]), 8);
}

#[test]
fn copied_segments_read_back_the_same() {
    let m = sample(5000, 4);
    let segs = m.get_segments_for_output();
    assert!(segs.len() > 1);
    let copy = WordSegments::copy_of(&segs);
    assert_eq!(copy.len(), segs.len());
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(copy.get_segment(i as u32), Some(*s));
    }
    assert_eq!(
        reason(&message::Reader::new(copy, Default::default())),
        5000
    );
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
fn bodies_read_straight_into_their_buffers_decode_the_same() {
    let a = sample(3, 1024);
    let b = sample(20_000, 4);
    let c = sample(7, 1024);
    let mut bytes = frame_of(&a);
    let b_at = bytes.len();
    bytes.extend(frame_of(&b));
    bytes.extend(frame_of(&c));
    let mut d = FrameDecoder::new(Limits::default());
    // The first frame and the table and a bit of the second's body.
    let mut at = b_at + 40;
    d.push(&bytes[..at]);
    let mut got = Vec::new();
    while let Some(m) = d.next_message().unwrap() {
        got.push(reason(&m));
    }
    assert_eq!(got, [3]);
    // The rest of the body, in steps, as reads of at most `missing`.
    while let Some((body, missing)) = d.body_buffer(1000) {
        let n = missing.min(4321);
        body.extend_from_slice(&bytes[at..at + n]);
        at += n;
        d.body_appended();
    }
    d.push(&bytes[at..]);
    while let Some(m) = d.next_message().unwrap() {
        got.push(reason(&m));
    }
    assert_eq!(got, [3, 20_000, 7]);
    assert!(d.body_buffer(0).is_none());
    d.finish().unwrap();
    // Bytes appended beyond the body are decoded as what follows.
    let mut d = FrameDecoder::new(Limits::default());
    d.push(&bytes[b_at..b_at + 40]);
    let (body, _) = d.body_buffer(1).unwrap();
    body.extend_from_slice(&bytes[b_at + 40..]);
    d.body_appended();
    let mut got = Vec::new();
    while let Some(m) = d.next_message().unwrap() {
        got.push(reason(&m));
    }
    assert_eq!(got, [20_000, 7]);
}

#[test]
fn kept_content_is_written_from_where_it_is() {
    use crate::rpc_capnp::message as rpc_message;
    let content = sample(20_000, 4);
    let mut header = Builder::new(HeapAllocator::new().first_segment_words(64));
    {
        let mut r = header.init_root::<rpc_message::Builder<'_>>().init_return();
        r.set_answer_id(7);
        r.init_results().init_cap_table(0);
    }
    let header_segments = header.get_segments_for_output();
    let mut copied = Vec::new();
    let content_segments = content.get_segments_for_output();
    assert!(encode_spliced(
        &header_segments,
        &[0, 0, 0],
        &content_segments,
        &mut copied
    ));
    let kept: Kept = Arc::new(sample(20_000, 4));
    let mut out = Output::default();
    out.bytes_mut().extend_from_slice(b"before..");
    assert!(encode_spliced_kept(
        &header_segments,
        &[0, 0, 0],
        &kept,
        &mut out
    ));
    out.bytes_mut().extend_from_slice(b"after...");
    assert!(out.pieces().len() > 1);
    assert_eq!(out.len(), copied.len() + 16);
    let mut expected = b"before..".to_vec();
    expected.extend_from_slice(&copied);
    expected.extend_from_slice(b"after...");
    assert_eq!(out.pieces().concat(), expected);
    assert_eq!(out.into_bytes(), expected);
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

#[test]
fn a_frame_announced_large_is_allocated_as_it_arrives() {
    let mut d = FrameDecoder::new(Limits::default());
    // One segment of 8 Mi - 1 words (64 MiB) announced, 1,000 bytes sent.
    let words: u32 = (8 << 20) - 1;
    let mut head = vec![0u8; 8];
    head[4..8].copy_from_slice(&words.to_le_bytes());
    d.push(&head);
    d.push(&[0u8; 1000]);
    let (buf, missing) = d.body_buffer(1).expect("the body is being received");
    assert_eq!(missing, words as usize * 8 - 1000);
    assert!(
        buf.capacity() <= 1000 + FIRST_BODY_BYTES,
        "{} bytes held for 1,000 received",
        buf.capacity()
    );
    // Read straight into the buffer, 4 KiB at a time, up to 1 MiB: what is
    // held grows with what arrived, at most twice it and a first step.
    for _ in 0..(1 << 20) / 4096 {
        let (buf, _) = d.body_buffer(1).expect("still receiving");
        buf.extend_from_slice(&[0u8; 4096]);
        d.body_appended();
    }
    let (buf, _) = d.body_buffer(1).expect("still receiving");
    assert!(buf.len() >= 1 << 20);
    assert!(
        buf.capacity() <= 2 * buf.len() + FIRST_BODY_BYTES,
        "{} bytes held for {} received",
        buf.capacity(),
        buf.len()
    );
    assert!(d.next_message().expect("no error").is_none());
}

#[test]
fn a_body_that_grows_as_it_arrives_decodes_whole() {
    // A message larger than the first allocation, pushed in pieces.
    let m = sample(300 << 10, 16);
    let bytes = frame_of(&m);
    let mut d = FrameDecoder::new(Limits::default());
    for piece in bytes.chunks(7919) {
        d.push(piece);
    }
    let got = d.next_message().expect("no error").expect("a message");
    let r = got
        .get_root::<crate::rpc_capnp::exception::Reader<'_>>()
        .expect("root");
    assert_eq!(r.get_reason().unwrap().len(), 300 << 10);
}

#[test]
fn a_stream_that_starts_with_tls_is_named_as_such() {
    // A TLS alert (what a TLS server sends a plain client), and the start
    // of a ClientHello (what a TLS client sends a plain server).
    for start in [
        &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32][..],
        &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc][..],
    ] {
        let mut d = FrameDecoder::new(Limits::default());
        d.push(start);
        let Err(e) = d.next_message() else {
            panic!("a TLS record read as a frame");
        };
        assert_eq!(e, FrameError::Tls);
        assert!(e.to_string().contains("speaks TLS"), "{e}");
    }
    // After a valid frame, the same bytes are just a bad segment count.
    let mut d = FrameDecoder::new(Limits::default());
    d.push(&frame_of(&sample(10, 64)));
    d.push(&[0x15, 0x03, 0x03, 0x00]);
    assert!(d.next_message().expect("the frame").is_some());
    assert!(matches!(
        d.next_message(),
        Err(FrameError::TooManySegments { .. })
    ));
}
