//! SCENARIOS.md, at the protocol level: two cores joined by in-memory
//! queues, one message at a time, each message's kind and target checked,
//! every test ending with all tables empty on both sides.
//!
//! The runtime's part (which local object a call reaches, when a handle is
//! dropped) is played by the test itself, so these pin what goes on the
//! wire. The same scenarios with real capabilities run over sockets in the
//! root crate's tests.

mod harness;

use capnp::message::Builder;
use capnp_actix_proto::captp::{CallTarget, Event, InCap, OutCap, OutContent, OutTarget};
use capnp_actix_proto::content::cap_root_message;
use capnp_actix_proto::rpc_capnp::message;
use harness::{frame, plain, with_caps, Pair};

/// A bootstraps B, whose bootstrap capability is local object 1; returns
/// A's import id for it.
fn bootstrapped(p: &mut Pair) -> u32 {
    p.a.conn.bootstrap(b"").unwrap();
    assert_eq!(p.a_to_b(), "bootstrap:q0");
    let Some(Event::Bootstrap { answer, .. }) = p.b.conn.next_event() else {
        panic!("no bootstrap")
    };
    p.b.conn.return_results(
        answer,
        OutContent::Reader(cap_root_message().get_root_as_reader().unwrap()),
        &[OutCap::Local(1)],
    );
    assert_eq!(p.b_to_a(), "return:a0:results [sender-hosted:0]");
    let Some(Event::Return {
        result: Ok(payload),
        ..
    }) = p.a.conn.next_event()
    else {
        panic!("no return")
    };
    let [InCap::Import { id, promise: false }] = payload.caps.as_slice() else {
        panic!("{:?}", payload.caps)
    };
    assert_eq!(p.a_to_b(), "finish:q0");
    assert!(matches!(
        p.b.conn.next_event(),
        Some(Event::Finished { answer: 0 })
    ));
    *id
}

/// B answers its next event (a call) with `content` and `caps`.
fn b_returns(
    p: &mut Pair,
    content: &Builder<capnp::message::HeapAllocator>,
    caps: &[OutCap<u32>],
) -> u32 {
    let Some(Event::Call { answer, .. }) = p.b.conn.next_event() else {
        panic!("no call")
    };
    p.b.conn.return_results(
        answer,
        OutContent::Reader(content.get_root_as_reader().unwrap()),
        caps,
    );
    answer
}

#[test]
fn scenario_03_bootstrap_then_a_call_then_the_return_with_the_right_payload() {
    let mut p = Pair::new();
    let import = bootstrapped(&mut p);
    p.a.conn
        .call(
            &OutTarget::Import(import),
            0xabcd,
            2,
            OutContent::Reader(plain().get_root_as_reader().unwrap()),
            &[],
        )
        .unwrap();
    assert_eq!(p.a_to_b(), "call:q0->import:0");
    let Some(Event::Call {
        answer,
        target: CallTarget::Local(1),
        interface_id: 0xabcd,
        method_id: 2,
        ..
    }) = p.b.conn.next_event()
    else {
        panic!()
    };
    let mut reply = Builder::new_default();
    reply
        .init_root::<capnp::any_pointer::Builder<'_>>()
        .set_as("echo:foo")
        .unwrap();
    p.b.conn.return_results(
        answer,
        OutContent::Reader(reply.get_root_as_reader().unwrap()),
        &[],
    );
    assert_eq!(p.b_to_a(), "return:a0:results");
    let Some(Event::Return {
        result: Ok(payload),
        ..
    }) = p.a.conn.next_event()
    else {
        panic!()
    };
    assert_eq!(
        payload
            .content()
            .unwrap()
            .get_as::<capnp::text::Reader<'_>>()
            .unwrap(),
        "echo:foo"
    );
    assert_eq!(p.a_to_b(), "finish:q0");
    p.b.events();
    p.a.conn.release_import(import);
    assert_eq!(p.a_to_b(), "release:0x1");
    p.assert_finished();
}

#[test]
fn scenario_01_a_local_capability_sent_out_and_back_is_the_original() {
    let mut p = Pair::new();
    let import = bootstrapped(&mut p);
    p.a.conn
        .call(
            &OutTarget::Import(import),
            1,
            0,
            OutContent::Reader(with_caps(1).get_root_as_reader().unwrap()),
            &[OutCap::Local(7)],
        )
        .unwrap();
    assert_eq!(p.a_to_b(), "call:q0->import:0 [sender-hosted:0]");
    let Some(Event::Call { answer, params, .. }) = p.b.conn.next_event() else {
        panic!()
    };
    let [InCap::Import { id: theirs, .. }] = params.caps.as_slice() else {
        panic!()
    };
    // B echoes it back: a receiver-hosted descriptor, A sees its object 7.
    let theirs = *theirs;
    p.b.conn.return_results(
        answer,
        OutContent::Reader(cap_root_message().get_root_as_reader().unwrap()),
        &[OutCap::Import(theirs)],
    );
    assert_eq!(p.b_to_a(), "return:a0:results [receiver-hosted:0]");
    let Some(Event::Return {
        result: Ok(payload),
        ..
    }) = p.a.conn.next_event()
    else {
        panic!()
    };
    assert!(matches!(payload.caps.as_slice(), [InCap::Local(7)]));
    assert_eq!(p.a_to_b(), "finish:q0");
    p.b.events();
    // Releases flow both ways.
    p.b.conn.release_import(theirs);
    assert_eq!(p.b_to_a(), "release:0x1");
    p.a.conn.release_import(import);
    assert_eq!(p.a_to_b(), "release:0x1");
    p.assert_finished();
}

#[test]
fn scenario_04_the_same_capability_twice_in_one_call_is_one_export_counted_twice() {
    let mut p = Pair::new();
    let import = bootstrapped(&mut p);
    let caps = [OutCap::Local(7), OutCap::Local(7)];
    p.a.conn
        .call(
            &OutTarget::Import(import),
            1,
            0,
            OutContent::Reader(with_caps(2).get_root_as_reader().unwrap()),
            &caps,
        )
        .unwrap();
    assert_eq!(
        p.a_to_b(),
        "call:q0->import:0 [sender-hosted:0, sender-hosted:0]"
    );
    assert_eq!(p.a.conn.table_sizes().exports, 1);
    let Some(Event::Call { answer, params, .. }) = p.b.conn.next_event() else {
        panic!()
    };
    assert!(matches!(
        params.caps.as_slice(),
        [InCap::Import { id: 0, .. }, InCap::Import { id: 0, .. }]
    ));
    p.b.conn.return_results(
        answer,
        OutContent::Reader(plain().get_root_as_reader().unwrap()),
        &[],
    );
    assert_eq!(p.b_to_a(), "return:a0:results");
    p.a.events();
    assert_eq!(p.a_to_b(), "finish:q0");
    p.b.events();
    p.b.conn.release_import(0);
    assert_eq!(p.b_to_a(), "release:0x2");
    p.a.conn.release_import(import);
    assert_eq!(p.a_to_b(), "release:0x1");
    p.assert_finished();
}

#[test]
fn scenario_05_exporting_one_capability_across_calls_uses_one_entry() {
    let mut p = Pair::new();
    let import = bootstrapped(&mut p);
    for q in 0..2 {
        p.a.conn
            .call(
                &OutTarget::Import(import),
                1,
                0,
                OutContent::Reader(with_caps(1).get_root_as_reader().unwrap()),
                &[OutCap::Local(7)],
            )
            .unwrap();
        assert_eq!(p.a_to_b(), format!("call:q{q}->import:0 [sender-hosted:0]"));
    }
    assert_eq!(p.a.conn.table_sizes().exports, 1);
    for _ in 0..2 {
        b_returns(&mut p, &plain(), &[]);
    }
    p.flush();
    p.a.events();
    p.b.events();
    p.b.conn.release_import(0);
    assert_eq!(p.b_to_a(), "release:0x2");
    p.a.conn.release_import(import);
    p.flush();
    p.assert_finished();
}

#[test]
fn scenario_08_a_pipelined_call_is_sent_to_a_promised_answer() {
    let mut p = Pair::new();
    p.a.conn.bootstrap(b"").unwrap();
    // Before the bootstrap returns, call its result.
    p.a.conn
        .call(
            &OutTarget::Answer {
                question: 0,
                path: vec![],
            },
            1,
            0,
            OutContent::Reader(plain().get_root_as_reader().unwrap()),
            &[],
        )
        .unwrap();
    assert_eq!(p.a_to_b(), "bootstrap:q0");
    assert_eq!(p.a_to_b(), "call:q1->answer:0[]");
    let Some(Event::Bootstrap { answer: 0, .. }) = p.b.conn.next_event() else {
        panic!()
    };
    let Some(Event::Call {
        answer: 1,
        target: CallTarget::Answer { answer: 0, path },
        ..
    }) = p.b.conn.next_event()
    else {
        panic!()
    };
    assert!(path.is_empty());
    p.b.conn.return_results(
        0,
        OutContent::Reader(cap_root_message().get_root_as_reader().unwrap()),
        &[OutCap::Local(1)],
    );
    p.b.conn.return_results(
        1,
        OutContent::Reader(plain().get_root_as_reader().unwrap()),
        &[],
    );
    assert_eq!(
        p.flush(),
        [
            "B return:a0:results [sender-hosted:0]",
            "A finish:q0",
            "B return:a1:results",
            "A finish:q1"
        ]
    );
    p.a.events();
    p.b.events();
    p.a.conn.release_import(0);
    p.flush();
    p.assert_finished();
}

#[test]
fn scenario_09_a_field_of_a_remote_promise_sent_back_is_a_receiver_answer() {
    let mut p = Pair::new();
    let import = bootstrapped(&mut p);
    p.a.conn
        .call(
            &OutTarget::Import(import),
            1,
            0,
            OutContent::Reader(plain().get_root_as_reader().unwrap()),
            &[],
        )
        .unwrap();
    // Send field [0] of that unanswered question back to B.
    p.a.conn
        .call(
            &OutTarget::Import(import),
            1,
            1,
            OutContent::Reader(with_caps(1).get_root_as_reader().unwrap()),
            &[OutCap::Answer {
                question: 0,
                path: vec![0],
            }],
        )
        .unwrap();
    assert_eq!(p.a_to_b(), "call:q0->import:0");
    assert_eq!(p.a_to_b(), "call:q1->import:0 [receiver-answer:0]");
    let _first = p.b.conn.next_event();
    let Some(Event::Call { params, .. }) = p.b.conn.next_event() else {
        panic!()
    };
    let [InCap::Answer { answer: 0, path }] = params.caps.as_slice() else {
        panic!("{:?}", params.caps)
    };
    assert_eq!(path, &[0]);
    p.b.conn.return_results(
        0,
        OutContent::Reader(plain().get_root_as_reader().unwrap()),
        &[],
    );
    p.b.conn.return_results(
        1,
        OutContent::Reader(plain().get_root_as_reader().unwrap()),
        &[],
    );
    p.flush();
    p.a.events();
    p.b.events();
    p.a.conn.release_import(import);
    p.flush();
    p.assert_finished();
}

#[test]
fn scenario_36_a_broken_capability_travels_as_a_promise_then_a_resolve_to_the_error() {
    let mut p = Pair::new();
    let import = bootstrapped(&mut p);
    let broken = OutCap::Broken(capnp::Error::failed("it broke".into()));
    p.a.conn
        .call(
            &OutTarget::Import(import),
            1,
            0,
            OutContent::Reader(with_caps(1).get_root_as_reader().unwrap()),
            &[broken],
        )
        .unwrap();
    assert_eq!(p.a_to_b(), "call:q0->import:0 [sender-promise:0]");
    assert_eq!(p.a_to_b(), "resolve:0:exception");
    let Some(Event::Call { answer, params, .. }) = p.b.conn.next_event() else {
        panic!()
    };
    assert!(matches!(
        params.caps.as_slice(),
        [InCap::Import {
            id: 0,
            promise: true
        }]
    ));
    let Some(Event::Resolve {
        import: 0,
        to: Err(e),
    }) = p.b.conn.next_event()
    else {
        panic!()
    };
    assert!(e.to_string().contains("it broke"));
    p.b.conn.return_results(
        answer,
        OutContent::Reader(plain().get_root_as_reader().unwrap()),
        &[],
    );
    p.b.conn.release_import(0);
    p.flush();
    p.a.events();
    p.b.events();
    p.a.conn.release_import(import);
    p.flush();
    p.assert_finished();
}

#[test]
fn scenario_44_dropping_a_question_before_its_return_sends_finish_and_gets_canceled() {
    let mut p = Pair::new();
    let import = bootstrapped(&mut p);
    let q =
        p.a.conn
            .call(
                &OutTarget::Import(import),
                1,
                0,
                OutContent::Reader(plain().get_root_as_reader().unwrap()),
                &[],
            )
            .unwrap();
    assert_eq!(p.a_to_b(), "call:q0->import:0");
    p.a.conn.finish(q);
    assert_eq!(p.a_to_b(), "finish:q0");
    let Some(Event::Call { answer, .. }) = p.b.conn.next_event() else {
        panic!()
    };
    let Some(Event::Cancel {
        answer: cancelled, ..
    }) = p.b.conn.next_event()
    else {
        panic!()
    };
    assert_eq!(answer, cancelled);
    p.b.conn.return_canceled(answer);
    assert_eq!(p.b_to_a(), "return:a0:canceled");
    let Some(Event::Return { result: Err(_), .. }) = p.a.conn.next_event() else {
        panic!()
    };
    // No second finish: the question is gone.
    p.b.events();
    p.a.conn.release_import(import);
    assert_eq!(p.flush(), ["A release:0x1"]);
    p.assert_finished();
}

#[test]
fn scenario_48_level_0_peer_release_flags_and_unimplemented_replies() {
    // releaseResultCaps on finish: B drops the caps it returned.
    let mut p = Pair::new();
    p.a.conn.bootstrap(b"").unwrap();
    p.a_to_b();
    p.b.events();
    p.b.conn.return_results(
        0,
        OutContent::Reader(cap_root_message().get_root_as_reader().unwrap()),
        &[OutCap::Local(1)],
    );
    p.b.collect_sent_for_test();
    let mut fin = Builder::new_default();
    {
        let mut f = fin.init_root::<message::Builder<'_>>().init_finish();
        f.set_question_id(0);
        f.set_release_result_caps(true);
    }
    p.b.conn.receive(&frame(&fin));
    assert!(p.b.conn.table_sizes().is_empty(), "{}", p.b.conn.dump());

    // Unimplemented in reply to our bootstrap and call: the questions fail,
    // the params' exports are released.
    let mut p = Pair::new();
    p.a.conn.bootstrap(b"").unwrap();
    p.a.conn
        .call(
            &OutTarget::Answer {
                question: 0,
                path: vec![],
            },
            1,
            0,
            OutContent::Reader(with_caps(1).get_root_as_reader().unwrap()),
            &[OutCap::Local(3)],
        )
        .unwrap();
    p.a.collect_sent_for_test();
    for q in [0, 1] {
        let mut m = Builder::new_default();
        {
            let u = m.init_root::<message::Builder<'_>>().init_unimplemented();
            if q == 0 {
                u.init_bootstrap().set_question_id(0);
            } else {
                let mut c = u.init_call();
                c.set_question_id(1);
                c.init_target().set_imported_cap(0);
            }
        }
        p.a.conn.receive(&frame(&m));
    }
    let events = p.a.events();
    assert_eq!(events.len(), 2);
    for e in events {
        let Event::Return { result: Err(e), .. } = e else {
            panic!()
        };
        assert_eq!(e.kind, capnp::ErrorKind::Unimplemented);
    }
    assert!(p.a.conn.table_sizes().is_empty(), "{}", p.a.conn.dump());
    assert!(p.a.conn.aborted().is_none());
}

/// Feeds B a hand-built message and checks that it aborts with `reason`.
fn aborts(p: &mut Pair, m: Builder<capnp::message::HeapAllocator>, reason: &str) {
    p.b.conn.receive(&frame(&m));
    let e =
        p.b.conn
            .aborted()
            .unwrap_or_else(|| panic!("no abort for {reason}"))
            .to_string();
    assert!(e.contains(reason), "{e}");
    p.b.collect_sent_for_test();
    let last =
        p.b.sent
            .back()
            .map(|f| harness::summary(f))
            .unwrap_or_default();
    assert!(
        last.starts_with("abort(") && last.contains(reason),
        "{last}"
    );
    assert!(p.b.conn.table_sizes().is_empty());
}

#[test]
fn protocol_errors_abort_with_a_reason_and_empty_the_tables() {
    // A return for a question never asked.
    let mut m = Builder::new_default();
    m.init_root::<message::Builder<'_>>()
        .init_return()
        .set_answer_id(9);
    aborts(&mut Pair::new(), m, "return for unknown question 9");

    // A finish sent twice.
    let mut p = Pair::new();
    bootstrapped(&mut p);
    let mut m = Builder::new_default();
    m.init_root::<message::Builder<'_>>()
        .init_finish()
        .set_question_id(0);
    aborts(&mut p, m, "finish for unknown question 0");

    // Releasing more references than were exported.
    let mut p = Pair::new();
    bootstrapped(&mut p);
    let mut m = Builder::new_default();
    {
        let mut r = m.init_root::<message::Builder<'_>>().init_release();
        r.set_id(0);
        r.set_reference_count(2);
    }
    aborts(
        &mut p,
        m,
        "release of 2 references to export 0, which has 1",
    );

    // A call on an export that does not exist.
    let mut m = Builder::new_default();
    {
        let mut c = m.init_root::<message::Builder<'_>>().init_call();
        c.set_question_id(0);
        c.init_target().set_imported_cap(42);
    }
    aborts(&mut Pair::new(), m, "call on unknown export 42");

    // A disembargo on something that is not a promise.
    let mut p = Pair::new();
    bootstrapped(&mut p);
    let mut m = Builder::new_default();
    {
        let mut d = m.init_root::<message::Builder<'_>>().init_disembargo();
        d.reborrow().init_target().set_imported_cap(0);
        d.init_context().set_sender_loopback(1);
    }
    aborts(&mut p, m, "not a resolved promise");

    // The same question id used twice.
    let mut p = Pair::new();
    p.a.conn.bootstrap(b"").unwrap();
    p.a.collect_sent_for_test();
    let again = p.a.sent.pop_front().unwrap();
    p.b.conn.receive(&again);
    p.b.conn.receive(&again);
    assert!(p
        .b
        .conn
        .aborted()
        .unwrap()
        .to_string()
        .contains("question id 0 is already in use"));

    // A resolve for an import that is not a promise.
    let mut p = Pair::new();
    bootstrapped(&mut p);
    let mut m = Builder::new_default();
    {
        let mut r = m.init_root::<message::Builder<'_>>().init_resolve();
        r.set_promise_id(0);
        r.init_exception().set_reason("x");
    }
    p.a.conn.receive(&frame(&m));
    assert!(p
        .a
        .conn
        .aborted()
        .unwrap()
        .to_string()
        .contains("resolve of settled import 0"));
}

#[test]
fn an_abort_from_the_peer_ends_the_connection_and_empties_the_tables() {
    let mut p = Pair::new();
    bootstrapped(&mut p);
    p.b.conn.abort(capnp::Error::failed("going away".into()));
    p.b_to_a();
    let Some(Event::Aborted(e)) = p.a.conn.next_event() else {
        panic!()
    };
    assert!(e.to_string().contains("going away"));
    assert!(p.a.conn.table_sizes().is_empty() && p.b.conn.table_sizes().is_empty());
}

/// A passes its capability 5 to B in a call (B's answer `ordinary`), and B
/// asks A a question on it (`b_q`, delivered). Returns (import of B's
/// bootstrap at A, ordinary, b_q).
fn b_asks_a(p: &mut Pair) -> (u32, u32, u32) {
    let import = bootstrapped(p);
    p.a.conn
        .call(
            &OutTarget::Import(import),
            1,
            0,
            OutContent::Reader(with_caps(1).get_root_as_reader().unwrap()),
            &[OutCap::Local(5)],
        )
        .unwrap();
    p.a_to_b();
    let Some(Event::Call {
        answer: ordinary,
        params,
        ..
    }) = p.b.conn.next_event()
    else {
        panic!()
    };
    let [InCap::Import { id: five, .. }] = params.caps.as_slice() else {
        panic!()
    };
    let b_q =
        p.b.conn
            .call(
                &OutTarget::Import(*five),
                2,
                0,
                OutContent::Reader(plain().get_root_as_reader().unwrap()),
                &[],
            )
            .unwrap();
    assert_eq!(p.b_to_a(), format!("call:q{b_q}->import:0"));
    (import, ordinary, b_q)
}

#[test]
fn scenario_22_a_tail_call_sent_back_to_us_keeps_its_results_for_take_from_other_question() {
    // B asks A a question on A's capability 5, which A passed to B.
    let mut p = Pair::new();
    let (import, _, b_q) = b_asks_a(&mut p);
    let Some(Event::Call { .. }) = p.a.conn.next_event() else {
        panic!()
    };

    // A answers B's question by a tail call to B's own bootstrap object:
    // the call asks B to keep its results (sendResultsTo.yourself) ...
    let mut m = Builder::new_default();
    {
        let mut c = m.init_root::<message::Builder<'_>>().init_call();
        c.set_question_id(99);
        c.set_interface_id(3);
        c.reborrow().init_target().set_imported_cap(import);
        c.reborrow().init_send_results_to().set_yourself(());
        c.init_params().init_content().set_as("tail").unwrap();
    }
    p.b.conn.receive(&frame(&m));
    let Some(Event::Call {
        answer: 99,
        target: CallTarget::Local(1),
        ..
    }) = p.b.conn.next_event()
    else {
        panic!()
    };
    p.b.conn.return_results(
        99,
        OutContent::Reader(plain().get_root_as_reader().unwrap()),
        &[],
    );
    p.b.collect_sent_for_test();
    let sent = harness::summary(&p.b.sent.pop_back().unwrap());
    assert_eq!(sent, "return:a99:other", "results sent elsewhere, not to A");

    // ... and A's return for B's question says: take them from 99.
    let mut m = Builder::new_default();
    {
        let mut r = m.init_root::<message::Builder<'_>>().init_return();
        r.set_answer_id(b_q);
        r.set_take_from_other_question(99);
    }
    p.b.conn.receive(&frame(&m));
    let Some(Event::ReturnTakeFrom {
        question,
        answer: 99,
        ..
    }) = p.b.conn.next_event()
    else {
        panic!()
    };
    assert_eq!(question, b_q);
    assert!(p.b.conn.aborted().is_none());
}

/// The `sendResultsTo` of a call frame, or the `takeFromOtherQuestion` of
/// a return frame, spelled out.
fn tail_detail(f: &[u8]) -> String {
    use capnp_actix_proto::rpc_capnp::{call, return_};
    let mut d = capnp_actix_proto::frame::FrameDecoder::new(Default::default());
    d.push(f);
    let m = d.next_message().unwrap().unwrap();
    let root: message::Reader<'_> = m.get_root().unwrap();
    match root.which().unwrap() {
        message::Call(c) => match c.unwrap().get_send_results_to().which().unwrap() {
            call::send_results_to::Caller(()) => "results-to-caller".into(),
            call::send_results_to::Yourself(()) => "results-to-yourself".into(),
            _ => "results-elsewhere".into(),
        },
        message::Return(r) => match r.unwrap().which().unwrap() {
            return_::TakeFromOtherQuestion(q) => format!("take-from:q{q}"),
            return_::ResultsSentElsewhere(()) => "results-sent-elsewhere".into(),
            _ => "other-return".into(),
        },
        _ => "other".into(),
    }
}

#[test]
fn scenario_22_our_tail_call_goes_out_as_send_results_to_yourself_then_take_from_other_question() {
    // B asks A a question on A's capability 5; A's method answers it with
    // a tail call to B's bootstrap object.
    let mut p = Pair::new();
    let (import, _, b_q) = b_asks_a(&mut p);
    let Some(Event::Call { answer, .. }) = p.a.conn.next_event() else {
        panic!()
    };
    assert_eq!(answer, b_q);
    let q =
        p.a.conn
            .tail_call(
                answer,
                &OutTarget::Import(import),
                3,
                0,
                OutContent::Reader(plain().get_root_as_reader().unwrap()),
                &[],
            )
            .unwrap();
    p.a.collect_sent_for_test();
    assert_eq!(tail_detail(&p.a.sent[0]), "results-to-yourself");
    assert_eq!(tail_detail(&p.a.sent[1]), format!("take-from:q{q}"));
    assert_eq!(p.a_to_b(), format!("call:q{q}->import:0"));
    assert_eq!(p.a_to_b(), format!("return:a{b_q}:other"));
    // B keeps the call's results for its own question.
    let Some(Event::Call { answer: kept, .. }) = p.b.conn.next_event() else {
        panic!()
    };
    let Some(Event::ReturnTakeFrom {
        question, answer, ..
    }) = p.b.conn.next_event()
    else {
        panic!()
    };
    assert_eq!((question, answer), (b_q, kept));
    p.b.conn.return_results(
        kept,
        OutContent::Reader(plain().get_root_as_reader().unwrap()),
        &[],
    );
    p.b.collect_sent_for_test();
    let ret =
        p.b.sent
            .iter()
            .find(|f| tail_detail(f) == "results-sent-elsewhere");
    assert!(ret.is_some(), "B says the results went elsewhere");
    p.flush();
    // A's runtime hears that the results went elsewhere, not of a return
    // to complete; the core still knows the question as a tail call.
    let ended: Vec<u32> = std::iter::from_fn(|| p.a.conn.next_event())
        .filter_map(|e| match e {
            Event::ResultsSentElsewhere { question } => Some(question),
            Event::Return { .. } | Event::ReturnTakeFrom { .. } => panic!("a return for A"),
            _ => None,
        })
        .collect();
    assert_eq!(ended, [q]);
    assert!(p.a.conn.sends_results_elsewhere(q));
    // A's tail-call question stays pipelinable (calls made on A's answer
    // before B saw the take-from go there) until A finishes it.
    assert!(p
        .a
        .conn
        .call(
            &OutTarget::Answer {
                question: q,
                path: vec![0],
            },
            4,
            0,
            OutContent::Reader(plain().get_root_as_reader().unwrap()),
            &[],
        )
        .is_ok());
    assert!(p.a.conn.aborted().is_none() && p.b.conn.aborted().is_none());
    p.a.conn.finish(q);
    assert!(!p.a.conn.sends_results_elsewhere(q));
    p.flush();
    assert!(p.a.conn.aborted().is_none() && p.b.conn.aborted().is_none());
}

#[test]
fn take_from_other_question_naming_a_call_whose_results_we_did_not_keep_aborts() {
    let mut p = Pair::new();
    let (_, ordinary, b_q) = b_asks_a(&mut p);
    let mut m = Builder::new_default();
    {
        let mut r = m.init_root::<message::Builder<'_>>().init_return();
        r.set_answer_id(b_q);
        r.set_take_from_other_question(ordinary);
    }
    p.b.conn.receive(&frame(&m));
    let e = p.b.conn.aborted().expect("abort").to_string();
    assert!(e.contains("not a call whose results we keep"), "{e}");
    assert!(p.b.conn.table_sizes().is_empty());
}

/// A tiny message whose pointers all share one subtree, `levels` deep:
/// read naively it is 2^levels nodes.
fn shared_chain(tag: u16, levels: u64) -> Vec<u8> {
    let ptr = |offset: u64| (offset << 2) | (2u64 << 48);
    let mut words: Vec<u64> = vec![
        1u64 << 32 | 1u64 << 48, // root: struct at +0, 1 data word, 1 pointer
        u64::from(tag),          // the union discriminant
        ptr(0),                  // pointer 0 -> first node right after
    ];
    for level in 0..levels {
        if level + 1 == levels {
            words.extend([0, 0]);
        } else {
            words.extend([ptr(1), ptr(0)]);
        }
    }
    let mut frame = 0u32.to_le_bytes().to_vec();
    frame.extend((words.len() as u32).to_le_bytes());
    for w in words {
        frame.extend(w.to_le_bytes());
    }
    frame
}

#[test]
fn a_small_message_with_shared_pointers_cannot_make_us_write_much() {
    // An unknown message kind is echoed back as `unimplemented`: the echo
    // must not expand the shared subtree (2^20 nodes from 330 bytes).
    let mut p = Pair::new();
    p.b.conn.receive(&shared_chain(0xffff, 20));
    let out = p.b.conn.take_output();
    assert!(
        out.len() < 64 * 1024,
        "{} bytes written for a 330-byte message",
        out.len()
    );
    assert!(
        p.b.conn.aborted().is_some(),
        "an over-budget message ends the connection"
    );
}

/// A call whose caller promised not to pipeline (`noPromisePipelining`):
/// a return without capabilities says `noFinishNeeded` and the answer is
/// forgotten at once; the caller sends no finish. With capabilities in the
/// results, the finish is still needed (the caller must release them).
#[test]
fn a_call_without_pipelining_is_answered_with_no_finish_needed() {
    use capnp_actix_proto::rpc_capnp::return_;
    let mut p = Pair::new();
    let import = bootstrapped(&mut p);
    for (question, caps) in [(7u32, vec![]), (8, vec![OutCap::Local(3)])] {
        let mut m = Builder::new_default();
        {
            let mut c = m.init_root::<message::Builder<'_>>().init_call();
            c.set_question_id(question);
            c.set_interface_id(1);
            c.set_no_promise_pipelining(true);
            c.reborrow().init_target().set_imported_cap(import);
            c.init_params().init_content().set_as("x").unwrap();
        }
        p.b.conn.receive(&frame(&m));
        let Some(Event::Call { answer, .. }) = p.b.conn.next_event() else {
            panic!()
        };
        let content = if caps.is_empty() {
            plain()
        } else {
            with_caps(1)
        };
        p.b.conn.return_results(
            answer,
            OutContent::Reader(content.get_root_as_reader().unwrap()),
            &caps,
        );
        p.b.collect_sent_for_test();
        let f = p.b.sent.pop_back().unwrap();
        let mut d = capnp_actix_proto::frame::FrameDecoder::new(Default::default());
        d.push(&f);
        let msg = d.next_message().unwrap().unwrap();
        let root: message::Reader<'_> = msg.get_root().unwrap();
        let message::Return(r) = root.which().unwrap() else {
            panic!()
        };
        let r = r.unwrap();
        assert!(matches!(r.which().unwrap(), return_::Results(_)));
        assert_eq!(
            r.get_no_finish_needed(),
            caps.is_empty(),
            "question {question}"
        );
        if caps.is_empty() {
            assert!(matches!(
                p.b.conn.next_event(),
                Some(Event::Finished { answer: 7 })
            ));
        }
    }
    // Without capabilities: forgotten at once; with: kept until a finish.
    assert_eq!(p.b.conn.table_sizes().answers, 1);
    assert!(p.b.conn.aborted().is_none());
}

/// A call on a capability B exported broken (a promise whose `resolve` to
/// the exception A has not read yet) is answered by B's core at once with
/// an exception, and B's runtime is told (`CallFailed`) so that it keeps
/// the error while the answer id is live. A second call passing a field of
/// the first back (`receiverAnswer`) then reaches B's runtime naming that
/// field, for the runtime to give as a broken capability with the error;
/// it does not abort, and A's finishes empty the tables.
#[test]
fn a_call_on_a_broken_export_is_answered_at_once_and_its_answer_stays_nameable() {
    let mut p = Pair::new();
    let import = bootstrapped(&mut p);
    p.a.conn
        .call(
            &OutTarget::Import(import),
            1,
            0,
            OutContent::Reader(plain().get_root_as_reader().unwrap()),
            &[],
        )
        .unwrap();
    assert_eq!(p.a_to_b(), "call:q0->import:0");
    let broken = OutCap::Broken(capnp::Error::failed("it broke".into()));
    b_returns(&mut p, &with_caps(1), &[broken]);
    assert_eq!(p.b_to_a(), "return:a0:results [sender-promise:1]");
    let Some(Event::Return {
        result: Ok(payload),
        ..
    }) = p.a.conn.next_event()
    else {
        panic!("no results")
    };
    let [InCap::Import {
        id: broken,
        promise: true,
    }] = payload.caps.as_slice()
    else {
        panic!("{:?}", payload.caps)
    };
    let broken = *broken;
    drop(payload);
    assert_eq!(p.a_to_b(), "finish:q0");
    assert!(matches!(
        p.b.conn.next_event(),
        Some(Event::Finished { answer: 0 })
    ));

    // Before the resolve arrives, A calls the broken capability, then
    // passes field [0] of that call's results to B's bootstrap object.
    let failed =
        p.a.conn
            .call(
                &OutTarget::Import(broken),
                1,
                0,
                OutContent::Reader(plain().get_root_as_reader().unwrap()),
                &[],
            )
            .unwrap();
    p.a.conn
        .call(
            &OutTarget::Import(import),
            1,
            1,
            OutContent::Reader(with_caps(1).get_root_as_reader().unwrap()),
            &[OutCap::Answer {
                question: failed,
                path: vec![0],
            }],
        )
        .unwrap();
    assert_eq!(p.a_to_b(), "call:q0->import:1");
    let Some(Event::CallFailed { answer: 0, error }) = p.b.conn.next_event() else {
        panic!("B's runtime is not told of the failed call")
    };
    assert!(error.to_string().contains("call on a broken capability"));
    assert_eq!(p.a_to_b(), "call:q1->import:0 [receiver-answer:0]");
    let Some(Event::Call {
        answer: 1,
        target: CallTarget::Local(1),
        params,
        ..
    }) = p.b.conn.next_event()
    else {
        panic!("the call carrying the field does not reach B's runtime")
    };
    let [InCap::Answer { answer: 0, path }] = params.caps.as_slice() else {
        panic!("{:?}", params.caps)
    };
    assert_eq!(path, &[0]);
    drop(params);
    // The failed answer is kept until A's finish.
    assert_eq!(p.b.conn.table_sizes().answers, 2);
    p.b.conn.return_results(
        1,
        OutContent::Reader(plain().get_root_as_reader().unwrap()),
        &[],
    );
    assert_eq!(
        p.flush(),
        [
            "B resolve:1:exception",
            "B return:a0:exception(call on a broken capability)",
            "A finish:q0",
            "B return:a1:results",
            "A finish:q1",
        ]
    );
    let finished: Vec<_> =
        p.b.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Finished { answer } => Some(answer),
                _ => None,
            })
            .collect();
    assert_eq!(finished, [0, 1]);
    assert!(p.b.conn.aborted().is_none());
    p.a.events();
    p.a.conn.release_import(broken);
    p.a.conn.release_import(import);
    p.flush();
    p.assert_finished();
}
