//! Malformed input over real sockets (issue 5, item 3).
//!
//! A vat (TLS off, Unix socket in a temporary directory) serves the echo
//! service under the empty ID and `main`; a well-behaved client vat stays
//! connected throughout and pings between cases; a raw peer writes crafted
//! bytes. After each case:
//! - the raw peer got an `abort` whose reason is non-empty and names the
//!   problem, then the end of the stream (the raw peer only ever closes
//!   its sending side, so the vat can always still write); or, for input
//!   the protocol tolerates (a pointer the call's parameters cannot be
//!   read through, an unknown message kind, a `resolve` of an import the
//!   vat does not know), the connection stays usable; a stream that ends
//!   inside a frame only has to end the connection (the abort it should
//!   also get is pinned by an ignored test: a bug);
//! - nothing panicked (a panic hook counts panics process-wide);
//! - the good client's ping works;
//! - `vat.connections()` lists only the good client's connection.
//!
//! `cases_repeated_200_times_return_to_baseline` runs every case over and
//! over and checks that live capabilities and actors come back to what the
//! good client alone holds, and that the RSS grew by less than
//! [`RSS_BOUND`] after a warm-up round.
//!
//! The tests of this file run one at a time (they count panics
//! process-wide); the memory test runs in a process of its own.

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;
mod hostile;

use std::time::{Duration, Instant};

use capnp::message::{AllocationStrategy, Builder, HeapAllocator};
use capnp_actix::connection::{bootstrap_fn, start_connection, ConnectionOptions};
use capnp_actix::proto::Limits;
use capnp_actix::schemas::echo_api_capnp::echo;
use capnp_actix::Cap;
use hostile::*;

/// How much the RSS may grow over 200 rounds of hostile cases, measured
/// after a warm-up round. Measured on a 2-core machine (debug profile):
/// +0.01 to +0.07 MiB over the 200 rounds in 6 runs. 1 MiB is 5 KiB per
/// round: a case that leaves 5 KiB behind (a connection's tables or
/// buffers outliving it) fails this.
const RSS_BOUND: u64 = 1 << 20;

/// Rounds (single case runs) of the memory test.
const ROUNDS: usize = 200;

#[derive(Debug, Clone, Copy)]
enum Case {
    // Framing.
    TruncatedBodyThenEof,
    TruncatedHeaderThenEof,
    StreamStopsMidFrame,
    SegmentShorterThanContent,
    Segments512,
    SegmentsU32Max,
    Segments511Empty,
    FrameOverLimit,
    SegmentsSumOverLimit,
    MultiSegmentPingWorks,
    // Pointers.
    RootPointerOutOfBounds,
    FarPointerToMissingSegment,
    ParamsPointerOutOfBounds,
    PointerAmplification,
    NestingBeyondTheLimit,
    // IDs.
    ReturnForUnknownQuestion,
    FinishForUnknownAnswer,
    CallToUnknownExport,
    ReleaseOfUnknownImport,
    CallOnUnknownAnswer,
    DescriptorNamesUnknownExport,
    QuestionIdReused,
    DoubleReturn,
    ReleaseMoreThanExported,
    DisembargoOnNonPromise,
    DisembargoForUnknownEmbargo,
    ResolveOfSettledImport,
    ResolveTwice,
    ResolveOfNeverExportedImport,
    FinishTwiceBeforeReturn,
    FinishTwiceAfterReturn,
    UnknownKindIsUnimplemented,
    PeerAborts,
    // Noise.
    Random(u64),
}

const ALL: &[Case] = &[
    Case::TruncatedBodyThenEof,
    Case::TruncatedHeaderThenEof,
    Case::StreamStopsMidFrame,
    Case::SegmentShorterThanContent,
    Case::Segments512,
    Case::SegmentsU32Max,
    Case::Segments511Empty,
    Case::FrameOverLimit,
    Case::SegmentsSumOverLimit,
    Case::MultiSegmentPingWorks,
    Case::RootPointerOutOfBounds,
    Case::FarPointerToMissingSegment,
    Case::ParamsPointerOutOfBounds,
    Case::PointerAmplification,
    Case::NestingBeyondTheLimit,
    Case::ReturnForUnknownQuestion,
    Case::FinishForUnknownAnswer,
    Case::CallToUnknownExport,
    Case::ReleaseOfUnknownImport,
    Case::CallOnUnknownAnswer,
    Case::DescriptorNamesUnknownExport,
    Case::QuestionIdReused,
    Case::DoubleReturn,
    Case::ReleaseMoreThanExported,
    Case::DisembargoOnNonPromise,
    Case::DisembargoForUnknownEmbargo,
    Case::ResolveOfSettledImport,
    Case::ResolveTwice,
    Case::ResolveOfNeverExportedImport,
    Case::FinishTwiceBeforeReturn,
    Case::FinishTwiceAfterReturn,
    Case::UnknownKindIsUnimplemented,
    Case::PeerAborts,
    Case::Random(1),
    Case::Random(2),
    Case::Random(3),
    Case::Random(4),
    Case::Random(5),
    Case::Random(6),
];

/// The words of all the segments of a frame.
fn frame_words(frame: &[u8]) -> usize {
    let count = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize + 1;
    let table = (4 + 4 * count + 7) & !7;
    (frame.len() - table) / 8
}

/// A single-segment frame with its root pointer replaced by `root`.
fn with_root_pointer(frame: &[u8], root: u64) -> Vec<u8> {
    assert_eq!(frame[..4], [0, 0, 0, 0], "a single-segment frame");
    let mut out = frame.to_vec();
    out[8..16].copy_from_slice(&root.to_le_bytes());
    out
}

/// Sends a stream that ends inside a frame (we close our sending side)
/// and checks that the connection ends. `strict`: the vat must say why
/// with an abort naming the unfinished frame (see
/// `a_stream_ending_inside_a_frame_gets_an_abort_naming_it`); otherwise an
/// abort, if any, must name it.
async fn ends_inside_a_frame(p: &mut RawPeer, bytes: &[u8], strict: bool) {
    let _ = p.send(bytes).await;
    p.close_write().await;
    if strict {
        p.expect_abort(&["inside a frame"]).await;
        return;
    }
    for m in p.drain().await {
        if let In::Abort { reason } = m {
            assert!(reason.contains("inside a frame"), "{reason}");
        }
    }
}

impl Case {
    async fn run(self, env: &EchoVat, strict: bool) {
        let mut p = env.raw().await;
        match self {
            Case::TruncatedBodyThenEof => {
                let mut bytes = header(&[10]);
                bytes.extend_from_slice(&[0x5a; 24]);
                ends_inside_a_frame(&mut p, &bytes, strict).await;
            }
            Case::TruncatedHeaderThenEof => {
                // Three segments announced; the stream ends in the table.
                ends_inside_a_frame(&mut p, &[2, 0, 0, 0, 1, 0], strict).await;
            }
            Case::StreamStopsMidFrame => {
                let e = p.bootstrap(0, "main").await;
                assert_eq!(p.ping(1, &Target::Import(e), "x").await, "echo:x");
                let next = ping_call(2, &Target::Import(e), "half of me");
                ends_inside_a_frame(&mut p, &next[..next.len() / 2], strict).await;
            }
            Case::SegmentShorterThanContent => {
                // The segment table says 1 word; the message needs more.
                let full = bootstrap(0, "main");
                let mut bytes = header(&[1]);
                bytes.extend_from_slice(&full[8..16]);
                let _ = p.send(&bytes).await;
                p.expect_abort(&["malformed message", "out-of-bounds"])
                    .await;
            }
            Case::Segments512 => {
                let _ = p.send(&header(&[0; 512])).await;
                p.expect_abort(&["512 segments", "fewer than 512"]).await;
            }
            Case::SegmentsU32Max => {
                let _ = p.send(&u32::MAX.to_le_bytes()).await;
                p.expect_abort(&["4294967296 segments"]).await;
            }
            Case::Segments511Empty => {
                // The most segments allowed, all empty: no root to read.
                let _ = p.send(&header(&[0; 511])).await;
                p.expect_abort(&["malformed message"]).await;
            }
            Case::FrameOverLimit => {
                // Only the segment table: refused before any body arrives.
                let _ = p.send(&header(&[DEFAULT_MAX_WORDS + 1])).await;
                p.expect_abort(&["8388609 words", "limit of 8388608"]).await;
            }
            Case::SegmentsSumOverLimit => {
                let half = DEFAULT_MAX_WORDS / 2;
                let _ = p.send(&header(&[half + 1, half])).await;
                p.expect_abort(&["8388609 words", "limit of 8388608"]).await;
            }
            Case::MultiSegmentPingWorks => {
                // Many tiny segments joined by far pointers are valid.
                let e = p.bootstrap(0, "").await;
                let mut m = Builder::new(
                    HeapAllocator::new()
                        .first_segment_words(1)
                        .allocation_strategy(AllocationStrategy::FixedSize),
                );
                {
                    let root: capnp_actix::schemas::rpc_capnp::message::Builder<'_> = m.init_root();
                    let mut c = root.init_call();
                    c.set_question_id(1);
                    c.reborrow().init_target().set_imported_cap(e);
                    c.set_interface_id(ECHO);
                    c.set_method_id(0);
                    let mut params = c.init_params();
                    params.reborrow().init_cap_table(0);
                    params
                        .init_content()
                        .init_as::<echo::ping_params::Builder<'_>>()
                        .set_msg("in pieces");
                }
                let segments = m.get_segments_for_output().len();
                assert!(segments > 5, "{segments} segments");
                p.send(&frame(&m)).await.expect("send");
                match p.expect().await {
                    In::Return {
                        answer: 1,
                        ret: Ret::Results { text: Some(t), .. },
                    } => assert_eq!(t, "echo:in pieces"),
                    other => panic!("expected the ping's return, got {other:?}"),
                }
                p.close_write().await;
                p.expect_eof().await;
            }
            Case::RootPointerOutOfBounds => {
                // A struct pointer a million words past the segment.
                let bad = with_root_pointer(&bootstrap(0, "main"), (1_000_000u64 << 2) | (1 << 32));
                let _ = p.send(&bad).await;
                p.expect_abort(&["malformed message", "out-of-bounds"])
                    .await;
            }
            Case::FarPointerToMissingSegment => {
                // A far pointer into segment 7 of a 1-segment message.
                let bad = with_root_pointer(&bootstrap(0, "main"), 2 | (7u64 << 32));
                let _ = p.send(&bad).await;
                p.expect_abort(&["malformed message"]).await;
            }
            Case::ParamsPointerOutOfBounds => {
                // The ping's text is the last object of the segment: cut
                // it off, and its pointer points past the end. The call
                // fails (its parameters cannot be read); the connection
                // stays up.
                let e = p.bootstrap(0, "").await;
                let full = ping_call(1, &Target::Import(e), "fifteen letters");
                let words = u32::from_le_bytes([full[4], full[5], full[6], full[7]]);
                let mut bad = header(&[words - 2]);
                bad.extend_from_slice(&full[8..full.len() - 16]);
                p.send(&bad).await.expect("send");
                match p.expect().await {
                    In::Return {
                        answer: 1,
                        ret: Ret::Exception { reason },
                    } => assert!(reason.contains("out-of-bounds"), "{reason}"),
                    other => panic!("expected the call to fail, got {other:?}"),
                }
                assert_eq!(p.ping(2, &Target::Import(e), "still").await, "echo:still");
                p.close_write().await;
                p.drain().await;
            }
            Case::PointerAmplification => {
                // 8,000 pointers to one 1,000-word list: a 9,000-word
                // message that reads as 8 million words. The traversal
                // budget stops the copy of the parameters; the call fails
                // and the connection stays up.
                let e = p.bootstrap(0, "").await;
                let call = amplified_call(1, e, 8000, 8000);
                assert!(call.len() < 80 * 1024, "{} bytes", call.len());
                p.send(&call).await.expect("send");
                match p.expect().await {
                    In::Return {
                        answer: 1,
                        ret: Ret::Exception { reason },
                    } => assert!(reason.contains("Read limit exceeded"), "{reason}"),
                    other => panic!("expected the call to fail, got {other:?}"),
                }
                assert_eq!(p.ping(2, &Target::Import(e), "still").await, "echo:still");
                p.close_write().await;
                p.drain().await;
            }
            Case::NestingBeyondTheLimit => {
                // Parameters nested 65 structs deep (the nesting limit is
                // 64): their size cannot be read, so the call fails; the
                // message itself is well formed and the connection stays.
                let e = p.bootstrap(0, "").await;
                p.send(&nested_call(1, e, 65)).await.expect("send");
                match p.expect().await {
                    In::Return {
                        answer: 1,
                        ret: Ret::Exception { reason },
                    } => assert!(reason.contains("nested"), "{reason}"),
                    other => panic!("expected the call to fail, got {other:?}"),
                }
                // 60 deep is within the limit (the call's own structs add
                // a few levels): read, and refused by the echo service
                // for its content only.
                p.send(&nested_call(2, e, 60)).await.expect("send");
                match p.expect().await {
                    In::Return { answer: 2, ret } => {
                        if let Ret::Exception { reason } = &ret {
                            assert!(!reason.contains("nested"), "{reason}")
                        }
                    }
                    other => panic!("expected a return, got {other:?}"),
                }
                assert_eq!(p.ping(3, &Target::Import(e), "still").await, "echo:still");
                p.close_write().await;
                p.drain().await;
            }
            Case::ReturnForUnknownQuestion => {
                let _ = p.send(&return_empty(77)).await;
                p.expect_abort(&["return for unknown question 77"]).await;
            }
            Case::FinishForUnknownAnswer => {
                let _ = p.send(&finish(55)).await;
                p.expect_abort(&["finish for unknown question 55"]).await;
            }
            Case::CallToUnknownExport => {
                let _ = p.send(&ping_call(0, &Target::Import(99), "?")).await;
                p.expect_abort(&["call on unknown export 99"]).await;
            }
            Case::ReleaseOfUnknownImport => {
                let _ = p.send(&release(99, 1)).await;
                p.expect_abort(&["release of unknown export 99"]).await;
            }
            Case::CallOnUnknownAnswer => {
                let _ = p
                    .send(&ping_call(0, &Target::Answer(42, vec![]), "?"))
                    .await;
                p.expect_abort(&["unknown answer 42"]).await;
            }
            Case::DescriptorNamesUnknownExport => {
                let e = p.bootstrap(0, "").await;
                let call = heartbeat_call(1, &Target::Import(e), "hb", Desc::ReceiverHosted(99));
                let _ = p.send(&call).await;
                p.expect_abort(&["descriptor names unknown export 99"])
                    .await;
            }
            Case::QuestionIdReused => {
                let _ = p.send(&cat(bootstrap(0, ""), bootstrap(0, ""))).await;
                p.expect_abort(&["question id 0 is already in use"]).await;
            }
            Case::DoubleReturn => {
                let q = heartbeat_started(&mut p, Desc::SenderHosted(0)).await;
                let _ = p.send(&cat(return_empty(q), return_empty(q))).await;
                p.expect_abort(&[&format!("return for unknown question {q}")])
                    .await;
            }
            Case::ReleaseMoreThanExported => {
                let e = p.bootstrap(0, "").await;
                let _ = p.send(&release(e, 2)).await;
                p.expect_abort(&[&format!(
                    "release of 2 references to export {e}, which has 1"
                )])
                .await;
            }
            Case::DisembargoOnNonPromise => {
                let e = p.bootstrap(0, "").await;
                let _ = p.send(&disembargo(&Target::Import(e), 1, true)).await;
                p.expect_abort(&[&format!(
                    "disembargo on export {e}, which is not a resolved promise"
                )])
                .await;
            }
            Case::DisembargoForUnknownEmbargo => {
                let e = p.bootstrap(0, "").await;
                let _ = p.send(&disembargo(&Target::Import(e), 5, false)).await;
                p.expect_abort(&["disembargo for unknown embargo 5"]).await;
            }
            Case::ResolveOfSettledImport => {
                // Our export 0 is a plain capability (senderHosted): it
                // cannot be resolved.
                heartbeat_started(&mut p, Desc::SenderHosted(0)).await;
                let _ = p.send(&resolve(0, Desc::SenderHosted(1))).await;
                p.expect_abort(&["resolve of settled import 0"]).await;
            }
            Case::ResolveTwice => {
                let e = p.bootstrap(0, "").await;
                let mut bytes = heartbeat_call(1, &Target::Import(e), "hb", Desc::SenderPromise(0));
                bytes.extend(resolve(0, Desc::SenderHosted(1)));
                bytes.extend(resolve(0, Desc::SenderHosted(2)));
                let _ = p.send(&bytes).await;
                p.expect_abort(&["resolve of settled import 0"]).await;
            }
            Case::ResolveOfNeverExportedImport => {
                // Tolerated by design: the vat cannot tell a promise it
                // never imported from one it has released already (a
                // resolve may cross our release), so, like the C++ vat,
                // it drops what the promise resolved to (releasing it)
                // and goes on.
                let _ = p.send(&resolve(42, Desc::SenderHosted(7))).await;
                match p.expect().await {
                    In::Release { id: 7, count: 1 } => {}
                    other => panic!("expected the release of 7, got {other:?}"),
                }
                let e = p.bootstrap(0, "").await;
                assert_eq!(p.ping(1, &Target::Import(e), "on").await, "echo:on");
                p.close_write().await;
                p.expect_eof().await;
            }
            Case::FinishTwiceBeforeReturn => {
                // The heartbeat waits for our callback, which we never
                // answer: the call is still running when both finishes
                // arrive.
                heartbeat_started(&mut p, Desc::SenderHosted(0)).await;
                let _ = p.send(&cat(finish(1), finish(1))).await;
                p.expect_abort(&["finish sent twice for question 1"]).await;
            }
            Case::FinishTwiceAfterReturn => {
                p.bootstrap(0, "").await;
                let _ = p.send(&cat(finish(0), finish(0))).await;
                p.expect_abort(&["finish for unknown question 0"]).await;
            }
            Case::UnknownKindIsUnimplemented => {
                // `provide` (level 3) is echoed back in `unimplemented`,
                // and the connection stays up.
                let provide = build(|m| {
                    let mut pr = m.init_provide();
                    pr.set_question_id(9);
                    pr.init_target().set_imported_cap(0);
                });
                p.send(&provide).await.expect("send");
                assert!(matches!(p.expect().await, In::Unimplemented));
                let e = p.bootstrap(0, "").await;
                assert_eq!(p.ping(1, &Target::Import(e), "up").await, "echo:up");
                p.close_write().await;
                p.expect_eof().await;
            }
            Case::PeerAborts => {
                let e = p.bootstrap(0, "").await;
                // A call still running (waiting for our callback) when we
                // abort: it is cancelled with the connection.
                p.send(&heartbeat_call(
                    1,
                    &Target::Import(e),
                    "hb",
                    Desc::SenderHosted(0),
                ))
                .await
                .expect("send");
                let _ = p.send(&abort("the raw peer gives up")).await;
                p.close_write().await;
                p.drain().await;
            }
            Case::Random(seed) => random_case(&mut p, seed).await,
        }
    }
}

/// A call to `echo.ping` on export `target` whose parameters are a list of
/// `n` pointers that all point to one list of `bytes` bytes.
fn amplified_call(question: u32, target: u32, n: u32, bytes: u32) -> Vec<u8> {
    let mut m = Builder::new(HeapAllocator::new().first_segment_words(bytes / 8 + n + 64));
    {
        let root: capnp_actix::schemas::rpc_capnp::message::Builder<'_> = m.init_root();
        let mut c = root.init_call();
        c.set_question_id(question);
        c.reborrow().init_target().set_imported_cap(target);
        c.set_interface_id(ECHO);
        c.set_method_id(0);
        let mut params = c.init_params();
        params.reborrow().init_cap_table(0);
        let mut list = params
            .init_content()
            .initn_as::<capnp::list_list::Builder<'_, capnp::primitive_list::Owned<u8>>>(n);
        let mut data = list.reborrow().init(0, bytes);
        for i in 0..bytes {
            data.set(i, i as u8);
        }
    }
    let segments = m.get_segments_for_output();
    assert_eq!(segments.len(), 1, "one segment");
    let mut words: Vec<u64> = segments[0]
        .chunks(8)
        .map(|w| u64::from_le_bytes(w.try_into().expect("a word")))
        .collect();
    // Element 0: a list pointer to `bytes` bytes (element size code 2).
    let first = words
        .iter()
        .position(|&w| w & 3 == 1 && w >> 32 == u64::from(bytes) << 3 | 2)
        .expect("the pointer to the byte list");
    let offset = (words[first] as u32 as i32) >> 2;
    for i in 1..n as usize {
        assert_eq!(words[first + i], 0, "element {i} is null");
        let o = offset - i as i32;
        words[first + i] = (words[first] & !0xffff_ffff) | u64::from(((o << 2) | 1) as u32);
    }
    let mut out = header(&[words.len() as u32]);
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// A call to `echo.ping` on export `target` whose parameters are a chain
/// of `depth` structs, each with one pointer to the next.
fn nested_call(question: u32, target: u32, depth: usize) -> Vec<u8> {
    // Each word is a struct pointer to the word after it (offset 0, no
    // data, one pointer); the last is null.
    let mut bytes = Vec::new();
    for _ in 0..depth {
        bytes.extend_from_slice(&(1u64 << 48).to_le_bytes());
    }
    bytes.extend_from_slice(&0u64.to_le_bytes());
    let mut options = capnp::message::ReaderOptions::new();
    options.nesting_limit(1000);
    let segments: &[&[u8]] = &[&bytes];
    let chain = capnp::message::Reader::new(capnp::message::SegmentArray::new(segments), options);
    let chain: capnp::any_pointer::Reader<'_> = chain.get_root().expect("the chain");
    build(|m| {
        let mut c = m.init_call();
        c.set_question_id(question);
        c.reborrow().init_target().set_imported_cap(target);
        c.set_interface_id(ECHO);
        c.set_method_id(0);
        let mut params = c.init_params();
        params.reborrow().init_cap_table(0);
        params.init_content().set_as(chain).expect("copy the chain");
    })
}

/// Bootstraps (question 0) and calls `heartbeat` (question 1) with our
/// export 0 as the callback; returns the question of the vat's first
/// `log` call on it, which we leave unanswered.
async fn heartbeat_started(p: &mut RawPeer, callback: Desc) -> u32 {
    let e = p.bootstrap(0, "").await;
    p.send(&heartbeat_call(1, &Target::Import(e), "hb", callback))
        .await
        .expect("send");
    loop {
        if let In::Call {
            question,
            target: Some(0),
            interface_id: CALLBACK,
            method_id: 0,
            ..
        } = p.expect().await
        {
            return question;
        }
    }
}

/// Seeded noise, three kinds: bytes at random; a valid segment table over
/// random words; a valid bootstrap and a ping pipelined on it, with a few
/// bits flipped. We close our side afterwards; the vat may answer what it
/// understood, must end the connection, and if it aborts, gives a reason.
/// `HOSTILE_VERBOSE=1` prints what each seed did.
async fn random_case(p: &mut RawPeer, seed: u64) {
    let mut rng = Rng::new(seed);
    let bytes = match seed % 3 {
        0 => {
            let n = 1 + rng.below(4096) as usize;
            rng.bytes(n)
        }
        1 => {
            let words = 1 + rng.below(64) as u32;
            let mut b = header(&[words]);
            b.extend(rng.bytes(words as usize * 8));
            b
        }
        _ => {
            let mut b = cat(
                bootstrap(0, ""),
                ping_call(1, &Target::Answer(0, vec![]), "flipped"),
            );
            for _ in 0..1 + rng.below(3) {
                let bit = rng.below(b.len() as u64 * 8) as usize;
                b[bit / 8] ^= 1 << (bit % 8);
            }
            b
        }
    };
    let _ = p.send(&bytes).await;
    p.close_write().await;
    let seen = p.drain().await;
    let mut outcome = format!("closed after {} messages, no abort", seen.len());
    for (i, m) in seen.iter().enumerate() {
        if let In::Abort { reason } = m {
            assert!(!reason.is_empty(), "seed {seed}: an abort without a reason");
            assert_eq!(i + 1, seen.len(), "seed {seed}: messages after the abort");
            outcome = format!("abort after {i} messages: {reason}");
        }
    }
    if verbose() {
        eprintln!("random seed {seed} ({} bytes): {outcome}", bytes.len());
    }
}

/// Whether to print what each random case did (`HOSTILE_VERBOSE=1`).
fn verbose() -> bool {
    std::env::var_os("HOSTILE_VERBOSE").is_some()
}

/// Runs one case and checks what every case must leave behind.
async fn check_case(env: &mut EchoVat, case: Case, strict: bool) {
    let before = panics();
    case.run(env, strict).await;
    env.ping_good().await;
    env.only_good_left().await;
    assert_eq!(panics(), before, "{case:?}: something panicked");
}

fn one_case(case: Case) {
    one_case_with(case, false)
}

fn one_case_with(case: Case, strict: bool) {
    let _serial = serial();
    run(Duration::from_secs(60), async move {
        let mut env = EchoVat::start("hostile").await;
        check_case(&mut env, case, strict).await;
        env.stop().await;
    });
}

macro_rules! case_tests {
    ($($name:ident => $case:expr;)*) => {
        $(
            #[test]
            fn $name() {
                one_case($case);
            }
        )*
    };
}

case_tests! {
    truncated_body_then_end_of_stream => Case::TruncatedBodyThenEof;
    truncated_segment_table_then_end_of_stream => Case::TruncatedHeaderThenEof;
    valid_stream_that_stops_mid_frame => Case::StreamStopsMidFrame;
    segment_shorter_than_its_content => Case::SegmentShorterThanContent;
    segment_count_512 => Case::Segments512;
    segment_count_u32_max => Case::SegmentsU32Max;
    segment_count_511_all_empty => Case::Segments511Empty;
    frame_beyond_the_size_limit => Case::FrameOverLimit;
    segments_adding_up_beyond_the_size_limit => Case::SegmentsSumOverLimit;
    many_small_segments_are_fine => Case::MultiSegmentPingWorks;
    root_pointer_out_of_bounds => Case::RootPointerOutOfBounds;
    far_pointer_to_a_missing_segment => Case::FarPointerToMissingSegment;
    params_pointer_out_of_bounds_fails_the_call_only => Case::ParamsPointerOutOfBounds;
    pointer_amplification_fails_the_call_only => Case::PointerAmplification;
    nesting_beyond_the_limit_fails_the_call_only => Case::NestingBeyondTheLimit;
    return_for_an_unknown_question => Case::ReturnForUnknownQuestion;
    finish_for_an_unknown_answer => Case::FinishForUnknownAnswer;
    call_to_an_unknown_export => Case::CallToUnknownExport;
    release_of_an_unknown_import => Case::ReleaseOfUnknownImport;
    call_pipelined_on_an_unknown_answer => Case::CallOnUnknownAnswer;
    descriptor_naming_an_unknown_export => Case::DescriptorNamesUnknownExport;
    question_id_reused_while_in_use => Case::QuestionIdReused;
    second_return_for_one_question => Case::DoubleReturn;
    release_of_more_references_than_exported => Case::ReleaseMoreThanExported;
    disembargo_on_a_non_promise => Case::DisembargoOnNonPromise;
    disembargo_reply_for_an_unknown_embargo => Case::DisembargoForUnknownEmbargo;
    resolve_of_a_settled_import => Case::ResolveOfSettledImport;
    resolve_of_a_promise_twice => Case::ResolveTwice;
    resolve_of_a_never_exported_import_is_tolerated => Case::ResolveOfNeverExportedImport;
    finish_twice_before_the_return => Case::FinishTwiceBeforeReturn;
    finish_twice_after_the_return => Case::FinishTwiceAfterReturn;
    unknown_message_kind_is_echoed_as_unimplemented => Case::UnknownKindIsUnimplemented;
    peer_abort_ends_only_that_connection => Case::PeerAborts;
}

#[test]
fn random_bytes_seeded() {
    let _serial = serial();
    run(Duration::from_secs(60), async move {
        let mut env = EchoVat::start("hostile-random").await;
        for seed in 1..=24 {
            check_case(&mut env, Case::Random(seed), false).await;
        }
        env.stop().await;
    });
}

/// A peer that half-closes inside a frame can still read; the vat should
/// say why it ends the connection, as it does for every other framing
/// error (and as the C++ vat does: its abort carries "Premature EOF").
#[test]
fn a_stream_ending_inside_a_frame_gets_an_abort_naming_it() {
    for case in [
        Case::TruncatedBodyThenEof,
        Case::TruncatedHeaderThenEof,
        Case::StreamStopsMidFrame,
    ] {
        one_case_with(case, true);
    }
}

/// A connection with small reader limits (there is no knob on `Vat`):
/// a real frame beyond `max_frame_words`, and one with too many segments.
#[test]
fn frames_beyond_small_reader_limits() {
    let _serial = serial();
    run(Duration::from_secs(60), async move {
        let before = panics();
        let service: Cap<echo::Client> = Cap::new(echo_service::EchoService::new(
            Duration::from_millis(1),
            echo_service::Sink::Memory(Default::default()),
        ));
        let start = |limits: Limits| {
            let (ours, theirs) = tokio::net::UnixStream::pair().expect("socket pair");
            let raw = service.raw().clone();
            let conn = start_connection(
                ours,
                ConnectionOptions {
                    reader: limits,
                    bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(raw.clone()))),
                    ..Default::default()
                },
            );
            (conn, RawPeer::from_stream(theirs))
        };
        let small = Limits {
            max_frame_words: 1024,
            max_segments: 4,
            ..Limits::default()
        };

        // Within the limits, calls work; a 2,000-word ping is refused.
        let (conn, mut p) = start(small);
        let e = p.bootstrap(0, "").await;
        assert_eq!(p.ping(1, &Target::Import(e), "small").await, "echo:small");
        let big = ping_call(2, &Target::Import(e), &"x".repeat(2000 * 8));
        let words = frame_words(&big);
        assert!(words > 2000, "{words}");
        let _ = p.send(&big).await;
        let reason = p
            .expect_abort(&[&format!("{words} words"), "limit of 1024 words"])
            .await;
        tokio::time::timeout(STEP, conn.closed())
            .await
            .expect("the connection ends");
        assert!(!conn.is_open());
        eprintln!("frame over a 1024-word limit: {reason}");

        // Four segments where fewer than four are allowed.
        let (conn, mut p) = start(small);
        let mut m = Builder::new(
            HeapAllocator::new()
                .first_segment_words(1)
                .allocation_strategy(AllocationStrategy::FixedSize),
        );
        {
            let root: capnp_actix::schemas::rpc_capnp::message::Builder<'_> = m.init_root();
            let mut b = root.init_bootstrap();
            b.set_question_id(0);
            b.init_deprecated_object_id()
                .set_as::<capnp::text::Owned>("main")
                .expect("set text");
        }
        let segments = m.get_segments_for_output().len();
        assert!(segments >= 4, "{segments} segments");
        let _ = p.send(&frame(&m)).await;
        p.expect_abort(&[&format!("{segments} segments"), "fewer than 4"])
            .await;
        tokio::time::timeout(STEP, conn.closed())
            .await
            .expect("the connection ends");

        assert_eq!(panics(), before, "something panicked");
        drop(service);
        capnp_actix::debug::wait_all_released(Duration::from_secs(5))
            .await
            .unwrap_or_else(|r| panic!("still alive:\n{r}"));
    });
}

/// Every case, 200 runs in all, against one vat: live capabilities and
/// actors come back to what the good client alone holds, and the RSS grows
/// by less than [`RSS_BOUND`] after a warm-up round.
#[test]
fn cases_repeated_200_times_return_to_baseline() {
    isolated("cases_repeated_200_times_return_to_baseline", || {
        run(Duration::from_secs(120), memory_rounds())
    });
}

async fn memory_rounds() {
    {
        let mut env = EchoVat::start("hostile-memory").await;
        // Warm-up: every case once (allocator pools, lazy statics).
        for &case in ALL {
            check_case(&mut env, case, false).await;
        }
        let baseline = settled_report(None).await;
        let rss_before = rss();
        let started = Instant::now();
        for round in 0..ROUNDS {
            let case = match ALL[round % ALL.len()] {
                // Fresh noise each time round.
                Case::Random(s) => Case::Random(s + 100 * (round / ALL.len()) as u64),
                c => c,
            };
            check_case(&mut env, case, false).await;
        }
        let elapsed = started.elapsed();
        let after = settled_report(Some(&baseline)).await;
        let rss_after = rss();
        let grown = rss_after.saturating_sub(rss_before);
        eprintln!(
            "{ROUNDS} hostile rounds in {elapsed:?}; live caps {} -> {}, actors {} -> {}; \
             RSS {:.1} MiB -> {:.1} MiB (+{:.2} MiB, bound {} MiB)",
            baseline.caps.len(),
            after.caps.len(),
            baseline.actors,
            after.actors,
            mib(rss_before),
            mib(rss_after),
            mib(grown),
            RSS_BOUND >> 20
        );
        assert!(
            grown < RSS_BOUND,
            "RSS grew by {:.2} MiB over {ROUNDS} rounds (bound {} MiB)",
            mib(grown),
            RSS_BOUND >> 20
        );
        env.stop().await;
    }
}

/// The debug report once it has stopped changing; with `baseline`, waits
/// (up to [`STEP`]) until it is no larger than that and fails otherwise.
async fn settled_report(
    baseline: Option<&capnp_actix::debug::Report>,
) -> capnp_actix::debug::Report {
    let deadline = Instant::now() + STEP;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = capnp_actix::debug::report();
        match baseline {
            None => return r,
            Some(b) if r.caps.len() <= b.caps.len() && r.actors <= b.actors => return r,
            Some(b) if Instant::now() > deadline => {
                panic!("live capabilities or actors grew:\nbaseline: {b}\nnow: {r}")
            }
            Some(_) => {}
        }
    }
}
