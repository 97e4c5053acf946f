//! Two `Conn`s joined by in-memory queues, delivering one message at a time
//! and summarising each (`call:q0->import:3`, `return:a0`, ...).
#![allow(dead_code)]

use std::collections::VecDeque;

use capnp::message::{Builder, HeapAllocator};
use capnp_actix_proto::captp::{Conn, ConnLimits, Event};
use capnp_actix_proto::frame::FrameDecoder;
use capnp_actix_proto::rpc_capnp::{cap_descriptor, message, message_target, payload};
use capnp_actix_proto::Limits;

/// A local capability is a number in these tests.
pub type Local = u32;

/// One side: its core and the frames it has sent, not yet delivered.
pub struct Side {
    pub conn: Conn<Local>,
    pub sent: VecDeque<Vec<u8>>,
}

impl Side {
    fn new() -> Self {
        Side {
            conn: Conn::new(ConnLimits::default(), Limits::default()),
            sent: VecDeque::new(),
        }
    }

    /// Moves what the core wrote into the queue, one frame per entry.
    fn collect(&mut self) {
        let bytes = self.conn.take_output();
        let mut d = FrameDecoder::new(Limits::default());
        d.push(&bytes);
        let mut at = 0;
        while let Some(m) = d.next_message().unwrap() {
            let size = frame_size(&bytes[at..]);
            self.sent.push_back(bytes[at..at + size].to_vec());
            at += size;
            drop(m);
        }
    }

    /// Moves what the core wrote into `sent` without delivering it.
    pub fn collect_sent_for_test(&mut self) {
        self.collect();
    }

    pub fn events(&mut self) -> Vec<Event<Local>> {
        std::iter::from_fn(|| self.conn.next_event()).collect()
    }
}

fn frame_size(b: &[u8]) -> usize {
    let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize + 1;
    let header = (4 + 4 * n + 7) & !7;
    let words: usize = (0..n)
        .map(|i| {
            u32::from_le_bytes([b[4 + 4 * i], b[5 + 4 * i], b[6 + 4 * i], b[7 + 4 * i]]) as usize
        })
        .sum();
    header + words * 8
}

/// The pair: `a` usually plays the client.
pub struct Pair {
    pub a: Side,
    pub b: Side,
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

impl Pair {
    pub fn new() -> Self {
        Pair {
            a: Side::new(),
            b: Side::new(),
        }
    }

    /// Delivers the next message A sent to B; returns its summary.
    pub fn a_to_b(&mut self) -> String {
        self.a.collect();
        let f = self.a.sent.pop_front().expect("A sent nothing");
        let s = summary(&f);
        self.b.conn.receive(&f);
        s
    }

    /// Delivers the next message B sent to A; returns its summary.
    pub fn b_to_a(&mut self) -> String {
        self.b.collect();
        let f = self.b.sent.pop_front().expect("B sent nothing");
        let s = summary(&f);
        self.a.conn.receive(&f);
        s
    }

    /// Delivers everything both ways until quiet; returns the summaries.
    pub fn flush(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            self.a.collect();
            self.b.collect();
            if self.a.sent.is_empty() && self.b.sent.is_empty() {
                return out;
            }
            if !self.a.sent.is_empty() {
                out.push(format!("A {}", self.a_to_b()));
            }
            if !self.b.sent.is_empty() {
                out.push(format!("B {}", self.b_to_a()));
            }
        }
    }

    /// Every table on both sides is empty and nothing is left to deliver.
    pub fn assert_finished(&mut self) {
        self.a.collect();
        self.b.collect();
        assert!(
            self.a.sent.is_empty(),
            "A still sends {:?}",
            self.a.sent.iter().map(|f| summary(f)).collect::<Vec<_>>()
        );
        assert!(
            self.b.sent.is_empty(),
            "B still sends {:?}",
            self.b.sent.iter().map(|f| summary(f)).collect::<Vec<_>>()
        );
        assert!(
            self.a.conn.table_sizes().is_empty(),
            "A: {}",
            self.a.conn.dump()
        );
        assert!(
            self.b.conn.table_sizes().is_empty(),
            "B: {}",
            self.b.conn.dump()
        );
    }
}

fn target(t: message_target::Reader<'_>) -> String {
    match t.which().unwrap() {
        message_target::ImportedCap(id) => format!("import:{id}"),
        message_target::PromisedAnswer(p) => {
            let p = p.unwrap();
            let path: Vec<String> = p
                .get_transform()
                .unwrap()
                .iter()
                .filter_map(|op| match op.which().unwrap() {
                    capnp_actix_proto::rpc_capnp::promised_answer::op::GetPointerField(f) => {
                        Some(f.to_string())
                    }
                    _ => None,
                })
                .collect();
            format!("answer:{}[{}]", p.get_question_id(), path.join("."))
        }
    }
}

fn caps(p: payload::Reader<'_>) -> String {
    let t: Vec<String> = p
        .get_cap_table()
        .unwrap()
        .iter()
        .map(|d| match d.which().unwrap() {
            cap_descriptor::None(()) => "none".into(),
            cap_descriptor::SenderHosted(i) => format!("sender-hosted:{i}"),
            cap_descriptor::SenderPromise(i) => format!("sender-promise:{i}"),
            cap_descriptor::ReceiverHosted(i) => format!("receiver-hosted:{i}"),
            cap_descriptor::ReceiverAnswer(pa) => {
                format!("receiver-answer:{}", pa.unwrap().get_question_id())
            }
            cap_descriptor::ThirdPartyHosted(_) => "third-party".into(),
        })
        .collect();
    if t.is_empty() {
        String::new()
    } else {
        format!(" [{}]", t.join(", "))
    }
}

/// A one-line summary of a frame.
pub fn summary(frame: &[u8]) -> String {
    let mut d = FrameDecoder::new(Limits::default());
    d.push(frame);
    let m = d.next_message().unwrap().unwrap();
    let root: message::Reader<'_> = m.get_root().unwrap();
    match root.which() {
        Err(_) => "unknown".into(),
        Ok(w) => match w {
            message::Bootstrap(b) => format!("bootstrap:q{}", b.unwrap().get_question_id()),
            message::Call(c) => {
                let c = c.unwrap();
                format!(
                    "call:q{}->{}{}",
                    c.get_question_id(),
                    target(c.get_target().unwrap()),
                    caps(c.get_params().unwrap())
                )
            }
            message::Return(r) => {
                let r = r.unwrap();
                let what = match r.which().unwrap() {
                    capnp_actix_proto::rpc_capnp::return_::Results(p) => {
                        format!("results{}", caps(p.unwrap()))
                    }
                    capnp_actix_proto::rpc_capnp::return_::Exception(e) => {
                        format!(
                            "exception({})",
                            e.unwrap().get_reason().unwrap().to_str().unwrap()
                        )
                    }
                    capnp_actix_proto::rpc_capnp::return_::Canceled(()) => "canceled".into(),
                    _ => "other".into(),
                };
                format!("return:a{}:{}", r.get_answer_id(), what)
            }
            message::Finish(f) => {
                let f = f.unwrap();
                format!(
                    "finish:q{}{}",
                    f.get_question_id(),
                    if f.get_release_result_caps() {
                        "+release"
                    } else {
                        ""
                    }
                )
            }
            message::Release(r) => {
                let r = r.unwrap();
                format!("release:{}x{}", r.get_id(), r.get_reference_count())
            }
            message::Resolve(r) => {
                let r = r.unwrap();
                match r.which().unwrap() {
                    capnp_actix_proto::rpc_capnp::resolve::Exception(_) => {
                        format!("resolve:{}:exception", r.get_promise_id())
                    }
                    capnp_actix_proto::rpc_capnp::resolve::Cap(_) => {
                        format!("resolve:{}:cap", r.get_promise_id())
                    }
                }
            }
            message::Abort(e) => format!(
                "abort({})",
                e.unwrap().get_reason().unwrap().to_str().unwrap()
            ),
            message::Unimplemented(_) => "unimplemented".into(),
            message::Disembargo(d) => {
                format!("disembargo->{}", target(d.unwrap().get_target().unwrap()))
            }
            _ => "other".into(),
        },
    }
}

/// A content with no capabilities.
pub fn plain() -> Builder<HeapAllocator> {
    let mut m = Builder::new_default();
    m.init_root::<capnp_actix_proto::rpc_capnp::exception::Builder<'_>>()
        .set_reason("plain");
    m
}

/// A content whose capability pointers are `n` entries of a list (struct
/// list of payloads would do; we use a list of AnyPointer via `Payload`
/// structs): entry i holds capability i.
pub fn with_caps(n: u32) -> Builder<HeapAllocator> {
    capnp_actix_proto::content::caps_message(n)
}

/// Frames a raw RPC message built by a test (for hostile-input tests).
pub fn frame(m: &Builder<HeapAllocator>) -> Vec<u8> {
    let mut out = Vec::new();
    capnp_actix_proto::frame::encode(&m.get_segments_for_output(), &mut out);
    out
}

/// One capability descriptor, spelled as in [`summary`]'s cap tables.
fn descriptor(d: cap_descriptor::Reader<'_>) -> String {
    match d.which().unwrap() {
        cap_descriptor::None(()) => "none".into(),
        cap_descriptor::SenderHosted(i) => format!("sender-hosted:{i}"),
        cap_descriptor::SenderPromise(i) => format!("sender-promise:{i}"),
        cap_descriptor::ReceiverHosted(i) => format!("receiver-hosted:{i}"),
        cap_descriptor::ReceiverAnswer(pa) => {
            format!("receiver-answer:{}", pa.unwrap().get_question_id())
        }
        cap_descriptor::ThirdPartyHosted(_) => "third-party".into(),
    }
}

/// Like [`summary`], with what a `resolve` carries and a `disembargo`'s
/// context spelled out: `resolve:1->receiver-hosted:0`,
/// `resolve:1->exception(it broke)`, `disembargo->import:1:sender-loopback:0`,
/// `disembargo->import:0:receiver-loopback:0`. Other kinds read as in
/// [`summary`].
pub fn detail(frame: &[u8]) -> String {
    use capnp_actix_proto::rpc_capnp::{disembargo, resolve};
    let mut d = FrameDecoder::new(Limits::default());
    d.push(frame);
    let m = d.next_message().unwrap().unwrap();
    let root: message::Reader<'_> = m.get_root().unwrap();
    match root.which() {
        Ok(message::Resolve(r)) => {
            let r = r.unwrap();
            let to = match r.which().unwrap() {
                resolve::Cap(c) => descriptor(c.unwrap()),
                resolve::Exception(e) => format!(
                    "exception({})",
                    e.unwrap().get_reason().unwrap().to_str().unwrap()
                ),
            };
            format!("resolve:{}->{to}", r.get_promise_id())
        }
        Ok(message::Disembargo(dis)) => {
            let dis = dis.unwrap();
            let context = match dis.get_context().which().unwrap() {
                disembargo::context::SenderLoopback(e) => format!("sender-loopback:{e}"),
                disembargo::context::ReceiverLoopback(e) => format!("receiver-loopback:{e}"),
                disembargo::context::Accept(()) => "accept".into(),
                disembargo::context::Provide(q) => format!("provide:{q}"),
            };
            format!(
                "disembargo->{}:{context}",
                target(dis.get_target().unwrap())
            )
        }
        _ => summary(frame),
    }
}

impl Pair {
    /// Delivers the next message A sent to B; returns its [`detail`].
    pub fn a_to_b_detail(&mut self) -> String {
        self.a.collect();
        let f = self.a.sent.pop_front().expect("A sent nothing");
        let s = detail(&f);
        self.b.conn.receive(&f);
        s
    }

    /// Delivers the next message B sent to A; returns its [`detail`].
    pub fn b_to_a_detail(&mut self) -> String {
        self.b.collect();
        let f = self.b.sent.pop_front().expect("B sent nothing");
        let s = detail(&f);
        self.a.conn.receive(&f);
        s
    }
}
