//! Two `Conn`s joined by in-memory queues, stepped one message at a time.

use capnp::message::{Builder, HeapAllocator};
use capnp_actix_proto::captp::{
    CallTarget, Conn, ConnLimits, Event, InCap, OutCap, OutContent, OutTarget,
};
use capnp_actix_proto::frame::FrameDecoder;
use capnp_actix_proto::rpc_capnp::message;
use capnp_actix_proto::Limits;

/// A local capability is just a number in these tests.
type Local = u32;

fn conn() -> Conn<Local> {
    Conn::new(ConnLimits::default(), Limits::default())
}

/// Summaries of the frames in `bytes`, such as `call:q0`.
fn summaries(bytes: &[u8]) -> Vec<String> {
    let mut d = FrameDecoder::new(Limits::default());
    d.push(bytes);
    let mut out = Vec::new();
    while let Some(m) = d.next_message().unwrap() {
        let root: message::Reader<'_> = m.get_root().unwrap();
        out.push(match root.which().unwrap() {
            message::Bootstrap(b) => format!("bootstrap:q{}", b.unwrap().get_question_id()),
            message::Call(c) => format!("call:q{}", c.unwrap().get_question_id()),
            message::Return(r) => format!("return:a{}", r.unwrap().get_answer_id()),
            message::Finish(f) => format!("finish:q{}", f.unwrap().get_question_id()),
            message::Release(r) => {
                let r = r.unwrap();
                format!("release:{}x{}", r.get_id(), r.get_reference_count())
            }
            message::Resolve(r) => format!("resolve:{}", r.unwrap().get_promise_id()),
            message::Abort(_) => "abort".into(),
            message::Unimplemented(_) => "unimplemented".into(),
            message::Disembargo(_) => "disembargo".into(),
            _ => "other".into(),
        });
    }
    out
}

/// Moves what `from` wrote to `to`, returning the summaries.
fn deliver(from: &mut Conn<Local>, to: &mut Conn<Local>) -> Vec<String> {
    let bytes = from.take_output();
    let s = summaries(&bytes);
    to.receive(&bytes);
    s
}

fn empty_content() -> Builder<HeapAllocator> {
    let mut m = Builder::new_default();
    m.init_root::<capnp::any_pointer::Builder<'_>>();
    m
}

#[test]
fn bootstrap_call_return_release_leaves_every_table_empty() {
    let (mut a, mut b) = (conn(), conn());
    let q = a.bootstrap(b"main").unwrap();
    assert_eq!(deliver(&mut a, &mut b), ["bootstrap:q0"]);
    let Some(Event::Bootstrap { answer, object_id }) = b.next_event() else {
        panic!()
    };
    assert_eq!((answer, object_id.as_slice()), (q, &b"main"[..]));

    // B answers with its capability 7 at the root.
    let content = capnp_actix_proto::content::cap_root_message();
    b.return_results(
        answer,
        OutContent::Reader(content.get_root_as_reader().unwrap()),
        &[OutCap::Local(7)],
    );
    assert_eq!(deliver(&mut b, &mut a), ["return:a0"]);
    let Some(Event::Return {
        question, result, ..
    }) = a.next_event()
    else {
        panic!()
    };
    assert_eq!(question, q);
    let caps = result.unwrap().caps;
    let import = match caps.as_slice() {
        [InCap::Import { id, promise: false }] => *id,
        other => panic!("{other:?}"),
    };
    // A finished the question on its own when the return arrived.
    assert_eq!(deliver(&mut a, &mut b), ["finish:q0"]);
    assert!(matches!(
        b.next_event(),
        Some(Event::Finished { answer: 0 })
    ));
    assert!(b.next_event().is_none());

    // A calls the import; B sees a call on its capability 7.
    let params = empty_content();
    let q2 = a
        .call(
            &OutTarget::Import(import),
            0x1234,
            3,
            OutContent::Reader(params.get_root_as_reader().unwrap()),
            &[],
        )
        .unwrap();
    assert_eq!(deliver(&mut a, &mut b), ["call:q0"]);
    let Some(Event::Call {
        answer,
        target: CallTarget::Local(7),
        interface_id: 0x1234,
        method_id: 3,
        ..
    }) = b.next_event()
    else {
        panic!()
    };
    b.return_results(
        answer,
        OutContent::Reader(empty_content().get_root_as_reader().unwrap()),
        &[],
    );
    assert_eq!(deliver(&mut b, &mut a), ["return:a0"]);
    assert!(
        matches!(a.next_event(), Some(Event::Return { question, result: Ok(_), .. }) if question == q2)
    );
    assert_eq!(deliver(&mut a, &mut b), ["finish:q0"]);
    assert!(matches!(
        b.next_event(),
        Some(Event::Finished { answer: 0 })
    ));

    a.release_import(import);
    assert_eq!(deliver(&mut a, &mut b), ["release:0x1"]);
    assert!(a.table_sizes().is_empty(), "{}", a.dump());
    assert!(b.table_sizes().is_empty(), "{}", b.dump());
    assert!(a.next_event().is_none() && b.next_event().is_none());
}

#[test]
fn a_second_return_for_one_question_aborts_with_a_reason() {
    let (mut a, mut b) = (conn(), conn());
    a.bootstrap(b"").unwrap();
    deliver(&mut a, &mut b);
    let Some(Event::Bootstrap { answer, .. }) = b.next_event() else {
        panic!()
    };
    b.return_error(answer, capnp::Error::failed("no".into()));
    let first = b.take_output();
    a.receive(&first);
    assert!(matches!(
        a.next_event(),
        Some(Event::Return { result: Err(_), .. })
    ));
    a.take_output();
    a.receive(&first); // the same return again
    let Some(Event::Aborted(e)) = a.next_event() else {
        panic!()
    };
    assert!(
        e.to_string().contains("return for unknown question 0"),
        "{e}"
    );
    assert_eq!(summaries(&a.take_output()), ["abort"]);
    assert!(a.table_sizes().is_empty());
}

#[test]
fn unknown_message_kinds_are_echoed_as_unimplemented() {
    let (mut a, mut b) = (conn(), conn());
    let mut m = Builder::new_default();
    m.init_root::<message::Builder<'_>>()
        .init_provide()
        .set_question_id(5);
    let mut bytes = Vec::new();
    capnp::serialize::write_message(&mut bytes, &m).unwrap();
    b.receive(&bytes);
    assert_eq!(deliver(&mut b, &mut a), ["unimplemented"]);
    assert!(b.aborted().is_none());
}
