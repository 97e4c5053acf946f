//! The table and parse limits of SECURITY.md ("Limits and their
//! defaults"), each driven over by a scripted peer against one core, with
//! small configured limits where the limit is configurable: the outcome
//! the table documents is asserted (Overloaded for our own call, an abort
//! for the peer's excess, a null capability for our exports).
//!
//! The import-count overflow row is tested inside the crate
//! (`captp::imports::tests`): reaching 2^32 references through the wire
//! takes 2^32 descriptors.

mod harness;

use std::collections::VecDeque;

use capnp::message::{Builder, HeapAllocator};
use capnp::ErrorKind;
use capnp_actix_proto::captp::{Conn, ConnLimits, Event, OutCap, OutContent, OutTarget};
use capnp_actix_proto::content::cap_root_message;
use capnp_actix_proto::rpc_capnp::message;
use capnp_actix_proto::Limits;
use harness::{frame, summary, with_caps, Local, Pair, Side};

fn side(limits: ConnLimits) -> Side {
    Side {
        conn: Conn::new(limits, Limits::default()),
        sent: VecDeque::new(),
    }
}

/// A vat core that answered a scripted peer's bootstrap (question 0) with
/// local object 1, exported as id 0.
fn bootstrapped_vat(limits: ConnLimits) -> Conn<Local> {
    let mut vat = Conn::new(limits, Limits::default());
    let mut m = Builder::new_default();
    m.init_root::<message::Builder<'_>>()
        .init_bootstrap()
        .set_question_id(0);
    vat.receive(&frame(&m));
    let Some(Event::Bootstrap { answer: 0, .. }) = vat.next_event() else {
        panic!("no bootstrap")
    };
    vat.return_results(
        0,
        OutContent::Reader(cap_root_message().get_root_as_reader().unwrap()),
        &[OutCap::Local(1)],
    );
    let out = vat.take_output();
    assert_eq!(summary(&out), "return:a0:results [sender-hosted:0]");
    vat
}

/// A call from the scripted peer: question `question`, on the vat's
/// export 0, or pipelined on answer 0 through `transform` no-op steps when
/// `transform` is given; its params carry `caps` descriptors, all `none`.
fn call(question: u32, transform: Option<u32>, caps: u32) -> Builder<HeapAllocator> {
    let mut m = Builder::new_default();
    {
        let mut c = m.init_root::<message::Builder<'_>>().init_call();
        c.set_question_id(question);
        c.set_interface_id(1);
        match transform {
            None => c.reborrow().init_target().set_imported_cap(0),
            Some(n) => {
                let mut pa = c.reborrow().init_target().init_promised_answer();
                pa.set_question_id(0);
                let mut ops = pa.init_transform(n);
                for i in 0..n {
                    ops.reborrow().get(i).set_noop(());
                }
            }
        }
        let mut params = c.init_params();
        let mut table = params.reborrow().init_cap_table(caps);
        for i in 0..caps {
            table.reborrow().get(i).set_none(());
        }
        params.init_content().set_as("params").unwrap();
    }
    m
}

/// The vat took the call: it reached the runtime and nothing was aborted.
fn accepted(vat: &mut Conn<Local>) {
    assert!(vat.aborted().is_none(), "aborted: {:?}", vat.aborted());
    assert!(
        matches!(vat.next_event(), Some(Event::Call { .. })),
        "the call reaches the runtime"
    );
}

/// The vat aborted, with an error of `kind` whose reason contains `needle`,
/// and wrote an abort for the peer.
fn aborted(vat: &mut Conn<Local>, kind: ErrorKind, needle: &str) {
    let e = vat.aborted().expect("the connection is aborted").clone();
    assert_eq!(e.kind, kind, "{e}");
    assert!(e.extra.contains(needle), "{e}");
    let out = vat.take_output();
    let told = summary(&out);
    assert!(
        told.starts_with("abort(") && told.contains(needle),
        "the peer is told: {told}"
    );
}

#[test]
fn questions_beyond_max_questions_fail_with_overloaded() {
    let mut client: Conn<Local> = Conn::new(
        ConnLimits {
            max_questions: 2,
            ..ConnLimits::default()
        },
        Limits::default(),
    );
    client.bootstrap(b"").unwrap();
    let q = client.bootstrap(b"").unwrap();
    let target = OutTarget::Answer {
        question: q,
        path: vec![],
    };
    let content = with_caps(0);
    let e = client
        .call(
            &target,
            1,
            0,
            OutContent::Reader(content.get_root_as_reader().unwrap()),
            &[],
        )
        .expect_err("a third question");
    assert_eq!(e.kind, ErrorKind::Overloaded, "{e}");
    assert!(e.extra.contains("limit 2"), "{e}");
    // Only our call failed: the connection goes on.
    assert!(client.aborted().is_none());
    assert_eq!(client.table_sizes().questions, 2);
}

#[test]
fn answers_beyond_max_answers_abort() {
    let mut vat = bootstrapped_vat(ConnLimits {
        max_answers: 3,
        ..ConnLimits::default()
    });
    // The bootstrap's answer is the first of three.
    vat.receive(&frame(&call(1, None, 0)));
    accepted(&mut vat);
    vat.receive(&frame(&call(2, None, 0)));
    accepted(&mut vat);
    vat.receive(&frame(&call(3, None, 0)));
    aborted(
        &mut vat,
        ErrorKind::Overloaded,
        "more than 3 calls outstanding",
    );
}

#[test]
fn exports_beyond_max_exports_are_sent_as_null_capabilities() {
    let mut p = Pair {
        a: side(ConnLimits {
            max_exports: 1,
            ..ConnLimits::default()
        }),
        b: side(ConnLimits::default()),
    };
    let q = p.a.conn.bootstrap(b"").unwrap();
    assert_eq!(p.a_to_b(), "bootstrap:q0");
    let content = with_caps(2);
    p.a.conn
        .call(
            &OutTarget::Answer {
                question: q,
                path: vec![],
            },
            1,
            0,
            OutContent::Reader(content.get_root_as_reader().unwrap()),
            &[OutCap::Local(10), OutCap::Local(11)],
        )
        .unwrap();
    // The table is full, even for a broken promise (which would need an
    // entry of its own): the second capability goes as a null one, which
    // fails any call made on it; nothing else is sent.
    assert_eq!(p.a_to_b(), "call:q1->answer:0[] [sender-hosted:0, none]");
    p.a.collect_sent_for_test();
    assert!(p.a.sent.is_empty(), "no resolve follows");
    assert!(p.a.conn.aborted().is_none());
    assert_eq!(p.a.conn.table_sizes().exports, 1);
}

#[test]
fn imports_beyond_max_imports_abort() {
    let mut p = Pair {
        a: side(ConnLimits::default()),
        b: side(ConnLimits {
            max_imports: 1,
            ..ConnLimits::default()
        }),
    };
    let q = p.a.conn.bootstrap(b"").unwrap();
    assert_eq!(p.a_to_b(), "bootstrap:q0");
    let content = with_caps(2);
    p.a.conn
        .call(
            &OutTarget::Answer {
                question: q,
                path: vec![],
            },
            1,
            0,
            OutContent::Reader(content.get_root_as_reader().unwrap()),
            &[OutCap::Local(10), OutCap::Local(11)],
        )
        .unwrap();
    assert_eq!(
        p.a_to_b(),
        "call:q1->answer:0[] [sender-hosted:0, sender-hosted:1]"
    );
    assert!(matches!(
        p.b.conn.next_event(),
        Some(Event::Bootstrap { .. })
    ));
    aborted(
        &mut p.b.conn,
        ErrorKind::Overloaded,
        "more than 1 capabilities",
    );
}

#[test]
fn cap_tables_beyond_16384_entries_abort() {
    let mut vat = bootstrapped_vat(ConnLimits::default());
    vat.receive(&frame(&call(1, None, 16_384)));
    accepted(&mut vat);
    vat.receive(&frame(&call(2, None, 16_385)));
    aborted(&mut vat, ErrorKind::Failed, "cap table of 16385 entries");
}

#[test]
fn promised_answer_paths_beyond_64_steps_abort() {
    let mut vat = bootstrapped_vat(ConnLimits::default());
    vat.receive(&frame(&call(1, Some(64), 0)));
    assert!(vat.aborted().is_none(), "{:?}", vat.aborted());
    let Some(Event::Call { params, .. }) = vat.next_event() else {
        panic!("the call on a 64-step path reaches the runtime")
    };
    assert!(params.caps.is_empty());
    vat.receive(&frame(&call(2, Some(65), 0)));
    aborted(&mut vat, ErrorKind::Failed, "transform of 65 ops");
}
