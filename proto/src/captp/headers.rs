//! Wire headers written by hand for the most frequent messages (`finish`,
//! and calls and returns with small content and no capabilities), byte
//! for byte what capnp's builder gives (checked by the tests below), to
//! skip building a message for them.

use super::OutTarget;

/// The frame of a `finish` for `question` with `releaseResultCaps` and
/// `requireEarlyCancellationWorkaround` false, as capnp would build and
/// frame it (one per call: written directly instead of built with a
/// `message::Builder`, which allocates twice).
pub(super) fn finish_frame(question: u32) -> [u8; 40] {
    let mut f = [0u8; 40];
    // Segment table: one segment (count - 1 = 0) of 4 words.
    f[4] = 4;
    // Word 0: root struct pointer, offset 0, 1 data word, 1 pointer.
    f[8 + 4] = 1;
    f[8 + 6] = 1;
    // Word 1: Message's data, its union discriminant: finish (@4).
    f[16] = 4;
    // Word 2: Message's pointer: the Finish struct, offset 0, 1 data word.
    f[24 + 4] = 1;
    // Word 3: Finish's data: questionId, then the two booleans, whose
    // default is true (stored XORed with it: false is 1).
    f[32..36].copy_from_slice(&question.to_le_bytes());
    f[36] = 0b11;
    f
}

/// A struct pointer word: `offset` words from the word after it, with
/// `data` words and `pointers` pointers.
pub(super) const fn struct_pointer(offset: u32, data: u16, pointers: u16) -> u64 {
    ((offset as u64) << 2) | ((data as u64) << 32) | ((pointers as u64) << 48)
}

/// A list pointer to the word after it (offset 0), of composite elements
/// taking no words: an empty struct list, its tag word next.
pub(super) const EMPTY_STRUCT_LIST: u64 = 1 | (7 << 32);

/// The header of a return with results, as `send_return_in` builds it
/// (releaseParamCaps false, an empty cap table) with a null content
/// pointer (word 6), for content inlined behind it.
pub(super) fn return_header(answer: u32, no_finish_needed: bool) -> [u64; 9] {
    [
        // Message, its union: return (@3), its pointer.
        struct_pointer(0, 1, 1),
        3,
        struct_pointer(0, 2, 1),
        // Return: answerId, releaseParamCaps (default true: false is 1),
        // noFinishNeeded, union: results (0).
        u64::from(answer) | (1 << 32) | (u64::from(no_finish_needed) << 33),
        0,
        struct_pointer(0, 0, 2),
        // Payload: content, capTable (an empty list of CapDescriptor).
        0,
        EMPTY_STRUCT_LIST,
        struct_pointer(0, 1, 1),
    ]
}

/// The header of a call with a null params content and an empty cap
/// table, as `send_call_in` builds it, for a target that is an import or a
/// question without a path (other targets: `None`), and its length in
/// words (the content pointer is the third word from the end).
pub(super) fn call_header(
    question: u32,
    interface_id: u64,
    method_id: u16,
    target: &OutTarget,
    yourself: bool,
) -> Option<([u64; 17], usize)> {
    let mut w = [0u64; 17];
    // Message, its union: call (@2), its pointer.
    w[0] = struct_pointer(0, 1, 1);
    w[1] = 2;
    w[2] = struct_pointer(0, 3, 3);
    // Call: questionId, methodId, sendResultsTo (caller 0, yourself 1);
    // interfaceId; flags (all false); target (at word 9), params (after
    // the target), sendResultsTo.thirdParty (null).
    w[3] = u64::from(question) | (u64::from(method_id) << 32) | (u64::from(yourself) << 48);
    w[4] = interface_id;
    w[6] = struct_pointer(2, 1, 1);
    let payload = match target {
        OutTarget::Import(id) => {
            // MessageTarget: importedCap (union 0).
            w[9] = u64::from(*id);
            11
        }
        OutTarget::Answer { question, path } if path.is_empty() => {
            // MessageTarget: promisedAnswer (union 1), its pointer;
            // PromisedAnswer: questionId, transform (an empty list of Op).
            w[9] = 1 << 32;
            w[10] = struct_pointer(0, 1, 1);
            w[11] = u64::from(*question);
            w[12] = EMPTY_STRUCT_LIST;
            w[13] = struct_pointer(0, 1, 0);
            14
        }
        OutTarget::Answer { .. } => return None,
    };
    // Params: content, capTable.
    w[7] = struct_pointer(payload as u32 - 8, 0, 2);
    w[payload + 1] = EMPTY_STRUCT_LIST;
    w[payload + 2] = struct_pointer(0, 1, 1);
    Some((w, payload + 3))
}

/// The bytes of a header of at most 17 words (see [`call_header`]).
pub(super) type HeaderBytes = [u8; 17 * 8];

/// Words as the bytes of a segment, in a buffer on the stack (words
/// beyond 17 are dropped: no header is that long).
pub(super) fn words_to_bytes(words: &[u64]) -> HeaderBytes {
    let mut bytes = [0; 17 * 8];
    for (b, w) in bytes.chunks_exact_mut(8).zip(words) {
        b.copy_from_slice(&w.to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use capnp::message::{Builder, HeapAllocator};

    use super::*;
    use crate::captp::build::{small_message, write_target, CALL_CONTENT, RETURN_CONTENT};
    use crate::frame;
    use crate::rpc_capnp::message as rpc_message;

    #[test]
    fn finish_frames_match_what_capnp_builds() {
        for question in [0, 1, 255, 0x1234_5678, u32::MAX] {
            let mut m = small_message();
            {
                let mut f = m.init_root::<rpc_message::Builder<'_>>().init_finish();
                f.set_question_id(question);
                f.set_release_result_caps(false);
                f.set_require_early_cancellation_workaround(false);
            }
            let mut built = Vec::new();
            frame::encode(&m.get_segments_for_output(), &mut built);
            assert_eq!(finish_frame(question).as_slice(), built.as_slice());
        }
    }

    /// Small content: a struct with a text, built here.
    fn content() -> Builder<HeapAllocator> {
        let mut m = Builder::new(HeapAllocator::new().first_segment_words(64));
        m.init_root::<crate::rpc_capnp::exception::Builder<'_>>()
            .set_reason("forty-two");
        m
    }

    /// The frame capnp's builder gives, with the content inlined.
    fn built<F>(path: &[u16], build: F) -> Vec<u8>
    where
        F: FnOnce(rpc_message::Builder<'_>),
    {
        let mut m = small_message();
        build(m.init_root());
        let c = content();
        let mut out = Vec::new();
        assert!(frame::encode_inlined(
            &m.get_segments_for_output(),
            path,
            c.get_segments_for_output()[0],
            &mut out
        ));
        out
    }

    fn direct(words: &[u64], path: &[u16]) -> Vec<u8> {
        let header = words_to_bytes(words);
        let c = content();
        let mut out = Vec::new();
        assert!(frame::encode_inlined(
            &[&header[..words.len() * 8]],
            path,
            c.get_segments_for_output()[0],
            &mut out
        ));
        out
    }

    #[test]
    fn return_headers_match_what_capnp_builds() {
        for (answer, forget) in [
            (0, false),
            (1, true),
            (0xdead_beef, false),
            (u32::MAX, true),
        ] {
            let theirs = built(RETURN_CONTENT, |m| {
                let mut r = m.init_return();
                r.set_answer_id(answer);
                r.set_release_param_caps(false);
                r.reborrow().init_results().init_cap_table(0);
                if forget {
                    r.set_no_finish_needed(true);
                }
            });
            assert_eq!(
                direct(&return_header(answer, forget), RETURN_CONTENT),
                theirs
            );
        }
    }

    #[test]
    fn call_headers_match_what_capnp_builds() {
        let targets = [
            OutTarget::Import(0),
            OutTarget::Import(77),
            OutTarget::Answer {
                question: 0,
                path: Vec::new(),
            },
            OutTarget::Answer {
                question: 123_456,
                path: Vec::new(),
            },
        ];
        for target in &targets {
            for yourself in [false, true] {
                let (q, iid, mid) = (9, 0x8f0e_1234_5678_9abc, 3);
                let theirs = built(CALL_CONTENT, |m| {
                    let mut c = m.init_call();
                    c.set_question_id(q);
                    c.set_interface_id(iid);
                    c.set_method_id(mid);
                    write_target(target, c.reborrow().init_target());
                    if yourself {
                        c.reborrow().init_send_results_to().set_yourself(());
                    } else {
                        c.reborrow().init_send_results_to().set_caller(());
                    }
                    c.init_params().init_cap_table(0);
                });
                let (words, len) = call_header(q, iid, mid, target, yourself).unwrap();
                assert_eq!(direct(&words[..len], CALL_CONTENT), theirs);
            }
        }
        let deep = OutTarget::Answer {
            question: 1,
            path: vec![0],
        };
        assert!(call_header(1, 2, 3, &deep, false).is_none());
    }
}
