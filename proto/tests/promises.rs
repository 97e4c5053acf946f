//! SCENARIOS.md, promises and resolution, at the protocol level: promises
//! exported as `senderPromise`, their `resolve`, releases racing with
//! resolutions, and the embargo a resolution back to the receiver needs.
//! Two cores joined by in-memory queues, one message at a time, every
//! message and every event checked, every test ending with all tables
//! empty on both sides.
//!
//! B plays the server: its bootstrap capability is its local object 1, and
//! its promises are numbered from 10. A plays the client; its objects are
//! numbered below 10.

mod harness;

use capnp::message::Builder;
use capnp::Error;
use capnp_actix_proto::captp::{CallTarget, Event, InCap, OutCap, OutContent, OutTarget};
use capnp_actix_proto::content::cap_root_message;
use capnp_actix_proto::rpc_capnp::message;
use harness::{frame, plain, with_caps, Pair, Side};

/// A capability of an event, in a word: `import:2`, `promise-import:1`,
/// `local:5`, `answer:0[1]`, `none`.
fn in_cap(c: &InCap<u32>) -> String {
    match c {
        InCap::Import { id, promise: false } => format!("import:{id}"),
        InCap::Import { id, promise: true } => format!("promise-import:{id}"),
        InCap::Local(l) => format!("local:{l}"),
        InCap::Answer { answer, path } => format!("answer:{answer}{path:?}"),
        InCap::Broken(e) => format!("broken({e})"),
        InCap::None => "none".into(),
    }
}

/// An event, in a word: `exported-promise:1=10`, `resolve:1->import:2`,
/// `resolve:1->error(Failed: it broke)`, `loopback:e0->local:10`, ...
fn describe(e: &Event<u32>) -> String {
    let target = |t: &CallTarget<u32>| match t {
        CallTarget::Local(l) => format!("local:{l}"),
        CallTarget::Answer { answer, path } => format!("answer:{answer}{path:?}"),
    };
    match e {
        Event::Bootstrap { answer, .. } => format!("bootstrap:a{answer}"),
        Event::Call {
            answer, target: t, ..
        } => format!("call:a{answer}->{}", target(t)),
        Event::CallFailed { answer, error } => format!("call-failed:a{answer}({})", error.extra),
        Event::Cancel { answer, .. } => format!("cancel:a{answer}"),
        Event::Finished { answer } => format!("finished:a{answer}"),
        Event::Return {
            question,
            result: Ok(p),
            ..
        } => {
            let caps: Vec<String> = p.caps.iter().map(in_cap).collect();
            format!("return:q{question}{caps:?}")
        }
        Event::Return {
            question,
            result: Err(e),
            ..
        } => format!("return:q{question}:error({:?}: {})", e.kind, e.extra),
        Event::ReturnTakeFrom {
            question, answer, ..
        } => format!("return:q{question}<-a{answer}"),
        Event::ResultsSentElsewhere { question } => {
            format!("return:q{question}:results-sent-elsewhere")
        }
        Event::Resolve { import, to: Ok(c) } => format!("resolve:{import}->{}", in_cap(c)),
        Event::Resolve { import, to: Err(e) } => {
            format!("resolve:{import}->error({:?}: {})", e.kind, e.extra)
        }
        Event::Loopback { embargo, target: t } => format!("loopback:e{embargo}->{}", target(t)),
        Event::EmbargoLifted { embargo, .. } => format!("embargo-lifted:{embargo}"),
        Event::EmbargoBroken { embargo, .. } => format!("embargo-broken:{embargo}"),
        Event::ExportedPromise { export, cap } => format!("exported-promise:{export}={cap}"),
        Event::Aborted(e) => format!("aborted({})", e.extra),
    }
}

/// The events a side has to act on, in words.
fn events(s: &mut Side) -> Vec<String> {
    s.events().iter().map(describe).collect()
}

/// A bootstraps B, whose bootstrap capability is B's object 1 (export 0);
/// returns A's import of it. The bootstrap question is finished.
fn bootstrapped(p: &mut Pair) -> u32 {
    p.a.conn.bootstrap(b"").unwrap();
    assert_eq!(p.a_to_b(), "bootstrap:q0");
    assert_eq!(events(&mut p.b), ["bootstrap:a0"]);
    p.b.conn.return_results(
        0,
        OutContent::Reader(cap_root_message().get_root_as_reader().unwrap()),
        &[OutCap::Local(1)],
    );
    assert_eq!(p.b_to_a(), "return:a0:results [sender-hosted:0]");
    assert_eq!(events(&mut p.a), ["return:q0[\"import:0\"]"]);
    assert_eq!(p.a_to_b(), "finish:q0");
    assert_eq!(events(&mut p.b), ["finished:a0"]);
    0
}

/// One call from A on B's bootstrap capability and B's return, delivered.
struct Exchange {
    /// A's question (B's answer).
    question: u32,
    /// Summary of the call.
    call: String,
    /// Summary of the return.
    ret: String,
    /// The capabilities B received, in words.
    params: Vec<String>,
    /// The capabilities A received, in words.
    results: Vec<String>,
}

/// A calls `boot` passing `args`; B answers with `results`; the call and
/// the return are delivered, A's finish is not (it is A's next message).
/// B's events after its `Event::Call` (such as `ExportedPromise`) are left
/// for the test.
fn exchange_unfinished(
    p: &mut Pair,
    boot: u32,
    args: &[OutCap<u32>],
    results: &[OutCap<u32>],
) -> Exchange {
    let question =
        p.a.conn
            .call(
                &OutTarget::Import(boot),
                0x5eed,
                0,
                OutContent::Reader(with_caps(args.len() as u32).get_root_as_reader().unwrap()),
                args,
            )
            .unwrap();
    let call = p.a_to_b();
    let Some(Event::Call {
        answer,
        target: CallTarget::Local(1),
        params,
        ..
    }) = p.b.conn.next_event()
    else {
        panic!("B got no call on its bootstrap capability")
    };
    assert_eq!(answer, question);
    let params = params.caps.iter().map(in_cap).collect();
    p.b.conn.return_results(
        answer,
        OutContent::Reader(
            with_caps(results.len() as u32)
                .get_root_as_reader()
                .unwrap(),
        ),
        results,
    );
    let ret = p.b_to_a();
    let Some(Event::Return {
        question: returned,
        result: Ok(payload),
        ..
    }) = p.a.conn.next_event()
    else {
        panic!("A got no results")
    };
    assert_eq!(returned, question);
    let results = payload.caps.iter().map(in_cap).collect();
    Exchange {
        question,
        call,
        ret,
        params,
        results,
    }
}

/// [`exchange_unfinished`], then A's finish, delivered.
fn exchange(p: &mut Pair, boot: u32, args: &[OutCap<u32>], results: &[OutCap<u32>]) -> Exchange {
    let x = exchange_unfinished(p, boot, args, results);
    assert_eq!(p.a_to_b(), format!("finish:q{}", x.question));
    x
}

/// Nothing is waiting to go out from `s`.
fn sends_nothing(s: &mut Side) {
    s.collect_sent_for_test();
    assert!(
        s.sent.is_empty(),
        "sent {:?}",
        s.sent
            .iter()
            .map(|f| harness::detail(f))
            .collect::<Vec<_>>()
    );
}

/// A hand-built `resolve` of `promise` to an exception.
fn resolve_to_error(promise: u32) -> Builder<capnp::message::HeapAllocator> {
    let mut m = Builder::new_default();
    {
        let mut r = m.init_root::<message::Builder<'_>>().init_resolve();
        r.set_promise_id(promise);
        r.init_exception().set_reason("again");
    }
    m
}

#[test]
fn scenario_29_a_resolve_for_a_released_promise_releases_the_new_target() {
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    let x = exchange(&mut p, boot, &[], &[OutCap::Promise(10)]);
    assert_eq!(x.call, "call:q0->import:0");
    assert_eq!(x.ret, "return:a0:results [sender-promise:1]");
    assert_eq!(x.results, ["promise-import:1"]);
    assert_eq!(events(&mut p.b), ["exported-promise:1=10", "finished:a0"]);

    // A is done with the promise while B resolves it to a new capability
    // of its own: the release and the resolve cross.
    p.a.conn.release_import(1);
    p.b.conn.resolve_export(1, &10, OutCap::Local(20));
    assert_eq!(p.b_to_a_detail(), "resolve:1->sender-hosted:2");
    assert!(
        events(&mut p.a).is_empty(),
        "no resolve for a released import"
    );
    assert_eq!(p.a.conn.table_sizes().imports, 1, "{}", p.a.conn.dump());
    assert_eq!(p.a_to_b(), "release:1x1");
    // The reference B counted on its new export comes back.
    assert_eq!(p.a_to_b(), "release:2x1");
    assert_eq!(p.b.conn.table_sizes().exports, 1, "{}", p.b.conn.dump());
    assert!(events(&mut p.b).is_empty());

    p.a.conn.release_import(boot);
    assert_eq!(p.a_to_b(), "release:0x1");
    p.assert_finished();
}

#[test]
fn scenario_29_a_late_resolve_to_a_capability_still_imported_gives_back_one_reference() {
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    let x = exchange(&mut p, boot, &[], &[OutCap::Promise(10)]);
    assert_eq!(x.ret, "return:a0:results [sender-promise:1]");
    assert_eq!(events(&mut p.b), ["exported-promise:1=10", "finished:a0"]);

    // The promise becomes B's bootstrap object, which A still holds.
    p.a.conn.release_import(1);
    p.b.conn.resolve_export(1, &10, OutCap::Local(1));
    assert_eq!(p.b_to_a_detail(), "resolve:1->sender-hosted:0");
    assert!(events(&mut p.a).is_empty());
    assert_eq!(p.a_to_b(), "release:1x1");
    assert_eq!(p.a_to_b(), "release:0x1");
    // A's own reference to the bootstrap object is untouched.
    assert_eq!(p.a.conn.table_sizes().imports, 1, "{}", p.a.conn.dump());
    assert_eq!(p.b.conn.table_sizes().exports, 1, "{}", p.b.conn.dump());

    p.a.conn.release_import(boot);
    assert_eq!(p.a_to_b(), "release:0x1");
    p.assert_finished();
}

#[test]
fn scenario_30_a_promise_released_before_it_resolves_gets_no_resolve() {
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    let x = exchange(&mut p, boot, &[], &[OutCap::Promise(10)]);
    assert_eq!(x.ret, "return:a0:results [sender-promise:1]");
    assert_eq!(events(&mut p.b), ["exported-promise:1=10", "finished:a0"]);

    p.a.conn.release_import(1);
    assert_eq!(p.a_to_b(), "release:1x1");
    assert_eq!(p.b.conn.table_sizes().exports, 1, "{}", p.b.conn.dump());

    // The promise settles afterwards: nothing goes out, and its
    // resolution is not exported either.
    p.b.conn.resolve_export(1, &10, OutCap::Local(20));
    sends_nothing(&mut p.b);
    assert_eq!(p.b.conn.table_sizes().exports, 1, "{}", p.b.conn.dump());
    // Not even once it breaks.
    p.b.conn
        .resolve_export(1, &10, OutCap::Broken(Error::failed("late".into())));
    sends_nothing(&mut p.b);
    assert!(events(&mut p.a).is_empty() && events(&mut p.b).is_empty());

    p.a.conn.release_import(boot);
    assert_eq!(p.a_to_b(), "release:0x1");
    p.assert_finished();
}

#[test]
fn scenario_30_a_released_promise_whose_export_id_is_reused_gets_no_resolve() {
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    let x = exchange(&mut p, boot, &[], &[OutCap::Promise(10)]);
    assert_eq!(x.ret, "return:a0:results [sender-promise:1]");
    assert_eq!(events(&mut p.b), ["exported-promise:1=10", "finished:a0"]);
    p.a.conn.release_import(1);
    assert_eq!(p.a_to_b(), "release:1x1");

    // Another promise of B's takes the freed export id.
    let y = exchange(&mut p, boot, &[], &[OutCap::Promise(11)]);
    assert_eq!(y.ret, "return:a0:results [sender-promise:1]");
    assert_eq!(events(&mut p.b), ["exported-promise:1=11", "finished:a0"]);

    // Promise 10 settles: the runtime reports it with the export id that
    // its `ExportedPromise` event gave, and the promise. A released that
    // promise, so nothing may go out; promise 11 has not resolved.
    p.b.conn.resolve_export(1, &10, OutCap::Local(20));
    sends_nothing(&mut p.b);

    // Promise 11 settles.
    p.b.conn.resolve_export(1, &11, OutCap::Local(21));
    assert_eq!(p.b_to_a_detail(), "resolve:1->sender-hosted:2");
    assert_eq!(events(&mut p.a), ["resolve:1->import:2"]);
    p.a.conn.release_import(1);
    p.a.conn.release_import(2);
    p.a.conn.release_import(boot);
    assert_eq!(p.a_to_b(), "release:1x1");
    assert_eq!(p.a_to_b(), "release:2x1");
    assert_eq!(p.a_to_b(), "release:0x1");
    p.assert_finished();
}

#[test]
fn scenario_31_a_promise_resolved_to_a_new_export_adds_the_import_first() {
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    // A passes its object 5; B answers with its promise P (object 10).
    let x = exchange(&mut p, boot, &[OutCap::Local(5)], &[OutCap::Promise(10)]);
    assert_eq!(x.call, "call:q0->import:0 [sender-hosted:0]");
    assert_eq!(x.params, ["import:0"]);
    assert_eq!(x.ret, "return:a0:results [sender-promise:1]");
    assert_eq!(x.results, ["promise-import:1"]);
    assert_eq!(events(&mut p.b), ["exported-promise:1=10", "finished:a0"]);

    // P resolves to another promise of B's, X (object 11), never sent
    // before: the resolve exports it.
    p.b.conn.resolve_export(1, &10, OutCap::Promise(11));
    assert_eq!(events(&mut p.b), ["exported-promise:2=11"]);
    assert_eq!(p.b_to_a_detail(), "resolve:1->sender-promise:2");
    // A has imported X by the time it hears of the resolution.
    assert_eq!(p.a.conn.table_sizes().imports, 3, "{}", p.a.conn.dump());
    assert_eq!(events(&mut p.a), ["resolve:1->promise-import:2"]);
    p.a.conn.release_import(1);
    assert_eq!(p.a_to_b(), "release:1x1");

    // X resolves to A's own object 5: A embargoes on the import the
    // resolve created, and B accepts it (a resolved promise of B's).
    p.b.conn.resolve_export(2, &11, OutCap::Import(0));
    assert_eq!(p.b_to_a_detail(), "resolve:2->receiver-hosted:0");
    assert_eq!(events(&mut p.a), ["resolve:2->local:5"]);
    assert_eq!(p.a.conn.disembargo_request_import(2, ()), Ok(0));
    assert_eq!(p.a_to_b_detail(), "disembargo->import:2:sender-loopback:0");
    assert!(p.b.conn.aborted().is_none());
    assert_eq!(events(&mut p.b), ["loopback:e0->local:11"]);
    // X leads to B's import 0 of A's object 5: reflected on it.
    p.b.conn.disembargo_reply(0, 0);
    assert_eq!(
        p.b_to_a_detail(),
        "disembargo->import:0:receiver-loopback:0"
    );
    assert_eq!(events(&mut p.a), ["embargo-lifted:0"]);

    p.a.conn.release_import(2);
    assert_eq!(p.a_to_b(), "release:2x1");
    p.b.conn.release_import(0);
    assert_eq!(p.b_to_a(), "release:0x1");
    p.a.conn.release_import(boot);
    assert_eq!(p.a_to_b(), "release:0x1");
    p.assert_finished();
}

#[test]
fn scenario_32_finishing_a_question_releases_several_imports_with_resolves_interleaved() {
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    let x = exchange_unfinished(
        &mut p,
        boot,
        &[],
        &[OutCap::Promise(10), OutCap::Promise(11), OutCap::Local(12)],
    );
    assert_eq!(
        x.ret,
        "return:a0:results [sender-promise:1, sender-promise:2, sender-hosted:3]"
    );
    assert_eq!(
        x.results,
        ["promise-import:1", "promise-import:2", "import:3"]
    );
    assert_eq!(
        events(&mut p.b),
        ["exported-promise:1=10", "exported-promise:2=11"]
    );

    // The first promise resolves to the third result before A's finish.
    p.b.conn.resolve_export(1, &10, OutCap::Local(12));
    assert_eq!(p.b_to_a_detail(), "resolve:1->sender-hosted:3");
    assert_eq!(events(&mut p.a), ["resolve:1->import:3"]);

    // A is done with the question: it finishes it and releases every
    // import the results (and the resolution) gave it ...
    p.a.conn.release_import(1);
    p.a.conn.release_import(2);
    p.a.conn.release_import(3);
    // ... while the second promise resolves to a new export.
    p.b.conn.resolve_export(2, &11, OutCap::Local(13));
    assert_eq!(p.a_to_b(), "release:1x1");
    assert_eq!(p.a_to_b(), "release:2x1");
    assert_eq!(p.a_to_b(), "release:3x2");
    assert_eq!(p.a_to_b(), "finish:q0");
    assert_eq!(events(&mut p.b), ["finished:a0"]);
    assert_eq!(p.b_to_a_detail(), "resolve:2->sender-hosted:4");
    assert!(events(&mut p.a).is_empty());
    assert_eq!(p.a_to_b(), "release:4x1");
    assert_eq!(p.b.conn.table_sizes().exports, 1, "{}", p.b.conn.dump());

    p.a.conn.release_import(boot);
    assert_eq!(p.a_to_b(), "release:0x1");
    p.assert_finished();
}

#[test]
fn scenario_32_resolves_arriving_after_the_finish_still_reach_the_results_imports() {
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    let x = exchange_unfinished(
        &mut p,
        boot,
        &[],
        &[OutCap::Promise(10), OutCap::Promise(11)],
    );
    assert_eq!(
        x.ret,
        "return:a0:results [sender-promise:1, sender-promise:2]"
    );
    assert_eq!(
        events(&mut p.b),
        ["exported-promise:1=10", "exported-promise:2=11"]
    );
    // Both promises resolve, one to an error, while the finish travels.
    p.b.conn.resolve_export(1, &10, OutCap::Local(12));
    p.b.conn
        .resolve_export(2, &11, OutCap::Broken(Error::failed("no".into())));
    assert_eq!(p.a_to_b(), "finish:q0");
    assert_eq!(events(&mut p.b), ["finished:a0"]);
    assert_eq!(p.b_to_a_detail(), "resolve:1->sender-hosted:3");
    assert_eq!(p.b_to_a_detail(), "resolve:2->exception(no)");
    assert_eq!(
        events(&mut p.a),
        ["resolve:1->import:3", "resolve:2->error(Failed: no)"]
    );
    for import in [1, 2, 3] {
        p.a.conn.release_import(import);
    }
    assert_eq!(p.a_to_b(), "release:1x1");
    assert_eq!(p.a_to_b(), "release:2x1");
    assert_eq!(p.a_to_b(), "release:3x1");

    p.a.conn.release_import(boot);
    assert_eq!(p.a_to_b(), "release:0x1");
    p.assert_finished();
}

#[test]
fn scenario_35_a_promise_that_breaks_later_is_resolved_to_the_exception() {
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    let x = exchange(&mut p, boot, &[], &[OutCap::Promise(10)]);
    assert_eq!(x.ret, "return:a0:results [sender-promise:1]");
    // A sees a promise first ...
    assert_eq!(x.results, ["promise-import:1"]);
    assert_eq!(events(&mut p.b), ["exported-promise:1=10", "finished:a0"]);

    // ... then the error, with its kind.
    p.b.conn.resolve_export(
        1,
        &10,
        OutCap::Broken(Error::disconnected("the backend went away".into())),
    );
    assert_eq!(
        p.b_to_a_detail(),
        "resolve:1->exception(the backend went away)"
    );
    assert_eq!(
        events(&mut p.a),
        ["resolve:1->error(Disconnected: the backend went away)"]
    );
    // Resolved once only.
    p.b.conn.resolve_export(1, &10, OutCap::Local(20));
    sends_nothing(&mut p.b);

    p.a.conn.release_import(1);
    assert_eq!(p.a_to_b(), "release:1x1");
    p.a.conn.release_import(boot);
    assert_eq!(p.a_to_b(), "release:0x1");
    p.assert_finished();
}

#[test]
fn scenario_15_a_promise_resolved_to_the_receivers_own_object_is_embargoed_until_the_loopback() {
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    // A passes its object 5; B answers with its promise P (object 10).
    let x = exchange(&mut p, boot, &[OutCap::Local(5)], &[OutCap::Promise(10)]);
    assert_eq!(x.call, "call:q0->import:0 [sender-hosted:0]");
    assert_eq!(x.ret, "return:a0:results [sender-promise:1]");
    assert_eq!(x.results, ["promise-import:1"]);
    assert_eq!(events(&mut p.b), ["exported-promise:1=10", "finished:a0"]);

    // M1: A calls P before it resolves.
    p.a.conn
        .call(
            &OutTarget::Import(1),
            0x5eed,
            1,
            OutContent::Reader(plain().get_root_as_reader().unwrap()),
            &[],
        )
        .unwrap();
    assert_eq!(p.a_to_b(), "call:q0->import:1");
    assert_eq!(events(&mut p.b), ["call:a0->local:10"]);

    // P settles on A's object 5 (B's import 0): B forwards M1 there and
    // tells A with a receiver-hosted resolution.
    p.b.conn
        .call(
            &OutTarget::Import(0),
            0x5eed,
            1,
            OutContent::Reader(plain().get_root_as_reader().unwrap()),
            &[],
        )
        .unwrap();
    p.b.conn.resolve_export(1, &10, OutCap::Import(0));
    assert_eq!(p.b_to_a(), "call:q0->import:0");
    assert_eq!(events(&mut p.a), ["call:a0->local:5"]);
    assert_eq!(p.b_to_a_detail(), "resolve:1->receiver-hosted:0");
    assert_eq!(events(&mut p.a), ["resolve:1->local:5"]);

    // A embargoes P: later calls wait for the loopback, which B sends
    // once M1 is through (it is: M1 went out before).
    assert_eq!(p.a.conn.disembargo_request_import(1, ()), Ok(0));
    assert_eq!(p.a.conn.table_sizes().embargoes, 1);
    assert_eq!(p.a_to_b_detail(), "disembargo->import:1:sender-loopback:0");
    assert_eq!(events(&mut p.b), ["loopback:e0->local:10"]);
    p.b.conn.disembargo_reply(0, 0);
    assert_eq!(
        p.b_to_a_detail(),
        "disembargo->import:0:receiver-loopback:0"
    );
    assert_eq!(events(&mut p.a), ["embargo-lifted:0"]);
    assert_eq!(p.a.conn.table_sizes().embargoes, 0);

    // M1 is answered along the path it took.
    p.a.conn.return_results(
        0,
        OutContent::Reader(plain().get_root_as_reader().unwrap()),
        &[],
    );
    assert_eq!(p.a_to_b(), "return:a0:results");
    assert_eq!(events(&mut p.b), ["return:q0[]"]);
    p.b.conn.return_results(
        0,
        OutContent::Reader(plain().get_root_as_reader().unwrap()),
        &[],
    );
    assert_eq!(p.b_to_a(), "return:a0:results");
    assert_eq!(events(&mut p.a), ["return:q0[]"]);
    assert_eq!(p.b_to_a(), "finish:q0");
    assert_eq!(events(&mut p.a), ["finished:a0"]);
    assert_eq!(p.a_to_b(), "finish:q0");
    assert_eq!(events(&mut p.b), ["finished:a0"]);

    p.a.conn.release_import(1);
    assert_eq!(p.a_to_b(), "release:1x1");
    p.b.conn.release_import(0);
    assert_eq!(p.b_to_a(), "release:0x1");
    p.a.conn.release_import(boot);
    assert_eq!(p.a_to_b(), "release:0x1");
    p.assert_finished();
}

#[test]
fn exporting_the_same_promise_twice_before_it_resolves_uses_one_entry_counted_twice() {
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    let x = exchange(&mut p, boot, &[], &[OutCap::Promise(10)]);
    assert_eq!(x.ret, "return:a0:results [sender-promise:1]");
    assert_eq!(events(&mut p.b), ["exported-promise:1=10", "finished:a0"]);
    let y = exchange(&mut p, boot, &[], &[OutCap::Promise(10)]);
    assert_eq!(y.ret, "return:a0:results [sender-promise:1]");
    assert_eq!(events(&mut p.b), ["finished:a0"]);
    let z = exchange(
        &mut p,
        boot,
        &[],
        &[OutCap::Promise(10), OutCap::Promise(10)],
    );
    assert_eq!(
        z.ret,
        "return:a0:results [sender-promise:1, sender-promise:1]"
    );
    assert_eq!(z.results, ["promise-import:1", "promise-import:1"]);
    // One entry, one event (the first exchange's).
    assert_eq!(events(&mut p.b), ["finished:a0"]);
    assert_eq!(p.b.conn.table_sizes().exports, 2, "{}", p.b.conn.dump());
    assert!(
        p.b.conn.dump().contains("export 1 refs=4"),
        "{}",
        p.b.conn.dump()
    );
    assert!(
        p.a.conn.dump().contains("import 1 refs=4"),
        "{}",
        p.a.conn.dump()
    );

    p.b.conn.resolve_export(1, &10, OutCap::Local(20));
    assert_eq!(p.b_to_a_detail(), "resolve:1->sender-hosted:2");
    assert_eq!(events(&mut p.a), ["resolve:1->import:2"]);
    p.a.conn.release_import(1);
    assert_eq!(p.a_to_b(), "release:1x4");
    p.a.conn.release_import(2);
    assert_eq!(p.a_to_b(), "release:2x1");
    p.a.conn.release_import(boot);
    assert_eq!(p.a_to_b(), "release:0x1");
    p.assert_finished();
}

/// `s` aborted with a reason containing `reason`, and sent the abort.
fn aborted(s: &mut Side, reason: &str) {
    let e = s
        .conn
        .aborted()
        .unwrap_or_else(|| panic!("no abort for {reason}"))
        .to_string();
    assert!(e.contains(reason), "{e}");
    let mut evs = events(s);
    // (What waited on a live embargo of ours comes back after the abort.)
    while evs.last().is_some_and(|l| l.starts_with("embargo-broken:")) {
        evs.pop();
    }
    assert!(
        evs.last()
            .is_some_and(|l| l.starts_with("aborted(") && l.contains(reason)),
        "{evs:?}"
    );
    assert!(s.conn.table_sizes().is_empty(), "{}", s.conn.dump());
}

/// B got a bad message: it aborts with `reason`; the abort reaches A,
/// which ends too; both sides' tables are empty.
fn b_aborts(p: &mut Pair, reason: &str) {
    aborted(&mut p.b, reason);
    let sent = p.b_to_a();
    assert!(
        sent.starts_with("abort(protocol error: ") && sent.contains(reason),
        "{sent}"
    );
    aborted(&mut p.a, reason);
    p.assert_finished();
}

/// A got a bad message: it aborts with `reason`; the abort reaches B.
fn a_aborts(p: &mut Pair, reason: &str) {
    aborted(&mut p.a, reason);
    let sent = p.a_to_b();
    assert!(
        sent.starts_with("abort(protocol error: ") && sent.contains(reason),
        "{sent}"
    );
    aborted(&mut p.b, reason);
    p.assert_finished();
}

#[test]
fn promise_protocol_errors_abort_with_a_reason_and_empty_the_tables() {
    // A disembargo on an export that is not a promise.
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    assert_eq!(p.a.conn.disembargo_request_import(boot, ()), Ok(0));
    assert_eq!(p.a_to_b_detail(), "disembargo->import:0:sender-loopback:0");
    b_aborts(
        &mut p,
        "disembargo on export 0, which is not a resolved promise",
    );

    // A disembargo on a promise export that has not resolved.
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    let x = exchange(&mut p, boot, &[], &[OutCap::Promise(10)]);
    assert_eq!(x.ret, "return:a0:results [sender-promise:1]");
    assert_eq!(events(&mut p.b), ["exported-promise:1=10", "finished:a0"]);
    assert_eq!(p.a.conn.disembargo_request_import(1, ()), Ok(0));
    assert_eq!(p.a_to_b_detail(), "disembargo->import:1:sender-loopback:0");
    b_aborts(
        &mut p,
        "disembargo on export 1, which is not a resolved promise",
    );

    // A resolve of an import that is not a promise.
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    p.a.conn.receive(&frame(&resolve_to_error(boot)));
    a_aborts(&mut p, "resolve of settled import 0");

    // A second resolve of the same import (B itself sends only one).
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    let x = exchange(&mut p, boot, &[], &[OutCap::Promise(10)]);
    assert_eq!(x.ret, "return:a0:results [sender-promise:1]");
    assert_eq!(events(&mut p.b), ["exported-promise:1=10", "finished:a0"]);
    p.b.conn.resolve_export(1, &10, OutCap::Local(20));
    assert_eq!(p.b_to_a_detail(), "resolve:1->sender-hosted:2");
    assert_eq!(events(&mut p.a), ["resolve:1->import:2"]);
    p.b.conn.resolve_export(1, &10, OutCap::Local(21));
    sends_nothing(&mut p.b);
    p.a.conn.receive(&frame(&resolve_to_error(1)));
    a_aborts(&mut p, "resolve of settled import 1");

    // A resolve naming, as the receiver's, a capability it never exported.
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    let x = exchange(&mut p, boot, &[], &[OutCap::Promise(10)]);
    assert_eq!(x.ret, "return:a0:results [sender-promise:1]");
    assert_eq!(events(&mut p.b), ["exported-promise:1=10", "finished:a0"]);
    let mut m = Builder::new_default();
    {
        let mut r = m.init_root::<message::Builder<'_>>().init_resolve();
        r.set_promise_id(1);
        r.init_cap().set_receiver_hosted(9);
    }
    p.a.conn.receive(&frame(&m));
    a_aborts(&mut p, "descriptor names unknown export 9");

    // A reflected disembargo for an embargo never started.
    let mut p = Pair::new();
    let boot = bootstrapped(&mut p);
    let mut m = Builder::new_default();
    {
        let mut d = m.init_root::<message::Builder<'_>>().init_disembargo();
        d.reborrow().init_target().set_imported_cap(boot);
        d.init_context().set_receiver_loopback(3);
    }
    p.a.conn.receive(&frame(&m));
    a_aborts(&mut p, "disembargo for unknown embargo 3");
}
