//! The scenarios of SCENARIOS.md that apply inside one vat (7 and 37-47),
//! in their local form, plus the runtime's own promises (E-order, handles
//! that cross threads, foreign hooks, release, panics). Each test ends by
//! asserting that no capability and no runtime actor is left.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use capnp::capability::FromClientHook;
use capnp_actix::debug::assert_all_released;
use capnp_actix::schemas::test_api_capnp::{maker, probe};
use capnp_actix::{Cap, CapRef};
use futures::channel::oneshot;
use futures::future::join_all;
use support::*;

fn failed(reason: &str) -> capnp::Error {
    capnp::Error::failed(reason.into())
}

fn is_cycle(e: &capnp::Error) -> bool {
    e.to_string().contains("cycle")
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(5), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: hung"),
    }
}

#[actix::test]
async fn scenario_07_asking_twice_for_a_field_gives_the_same_object() {
    let log = Log::default();
    {
        let (m, tx) = maker_with_pair();
        let maker: Cap<maker::Client> = Cap::new(m);
        let pending = maker.client().pair_request().send();
        let a = Cap::<probe::Client>::from_client(&pending.pipeline.get_pair().get_first());
        let b = Cap::<probe::Client>::from_client(&pending.pipeline.get_pair().get_first());
        assert_eq!(
            a, b,
            "the same field of one promised answer must be one capability"
        );
        let other = Cap::<probe::Client>::from_client(&pending.pipeline.get_pair().get_second());
        assert_ne!(a, other);
        tx.send((Probe::cap(&log), Probe::cap(&log))).ok().unwrap();
        assert_eq!(call(&a.client(), 1).await.unwrap(), 1);
        pending.promise.await.unwrap();
        // Asked again after the answer: still reaches the same probe.
        let c = Cap::<probe::Client>::from_client(&b.client());
        assert_eq!(c, a);
    }
    assert_all_released().await;
    assert_eq!(log.released(), 2);
}

#[actix::test]
async fn scenario_37_waiting_for_resolution_and_when_broken_watchers() {
    let log = Log::default();
    {
        // Success on resolve.
        let (p, r) = Cap::<probe::Client>::promise();
        let waiting = p.when_resolved();
        r.resolve_to(Probe::cap(&log).raw().clone());
        within("when_resolved", waiting).await.unwrap();

        // The error on break.
        let (p, r) = Cap::<probe::Client>::promise();
        let waiting = p.when_resolved();
        r.reject(failed("gone"));
        let e = within("when_resolved", waiting).await.unwrap_err();
        assert!(e.to_string().contains("gone"), "{e}");

        // A watcher follows a chain of promises.
        let (p1, r1) = Cap::<probe::Client>::promise();
        let (p2, r2) = Cap::<probe::Client>::promise();
        let (tx, rx) = oneshot::channel();
        p1.on_broken(move |e| {
            let _ = tx.send(e.to_string());
        });
        r1.resolve_to(p2.raw().clone());
        r2.reject(failed("chain broke"));
        assert!(within("watcher", rx).await.unwrap().contains("chain broke"));
        drop((p1, p2));

        // At once on an already broken capability.
        let (tx, mut rx) = oneshot::channel();
        Cap::<probe::Client>::broken(failed("already")).on_broken(move |e| {
            let _ = tx.send(e.to_string());
        });
        assert!(rx.try_recv().unwrap().unwrap().contains("already"));

        // Never for a capability released first.
        let (p, r) = Cap::<probe::Client>::promise();
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = fired.clone();
        p.on_broken(move |_| f.store(true, Ordering::SeqCst));
        drop(p);
        r.reject(failed("too late"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !fired.load(Ordering::SeqCst),
            "watcher fired for a released capability"
        );
    }
    assert_all_released().await;
    assert_eq!(log.released(), 1);
}

#[actix::test]
async fn scenario_38_promise_cycle_fails_calls_with_a_cycle_error() {
    {
        let (p1, r1) = Cap::<probe::Client>::promise();
        let (p2, r2) = Cap::<probe::Client>::promise();
        let early = {
            let c = p1.client();
            async move { call(&c, 1).await }
        };
        r1.resolve_to(p2.raw().clone());
        r2.resolve_to(p1.raw().clone());
        let e = within("queued call", early).await.unwrap_err();
        assert!(is_cycle(&e), "{e}");
        let e = within("later call", call(&p1.client(), 2))
            .await
            .unwrap_err();
        assert!(is_cycle(&e), "{e}");
        let e = p2.when_resolved().await.unwrap_err();
        assert!(is_cycle(&e), "{e}");
    }
    assert_all_released().await;
}

#[actix::test]
async fn scenario_39_field_resolved_to_itself_is_broken_and_promise_to_itself_is_a_cycle() {
    let log = Log::default();
    {
        let (m, tx) = maker_with_pair();
        let maker: Cap<maker::Client> = Cap::new(m);
        let pending = maker.client().pair_request().send();
        let first = Cap::<probe::Client>::from_client(&pending.pipeline.get_pair().get_first());
        // The method returns the field itself as the field's value.
        tx.send((first.clone(), Probe::cap(&log))).ok().unwrap();
        let e = within("call on self field", call(&first.client(), 1))
            .await
            .unwrap_err();
        assert!(is_cycle(&e), "{e}");
        let response = pending.promise.await.unwrap();
        let from_response = response
            .get()
            .unwrap()
            .get_pair()
            .unwrap()
            .get_first()
            .unwrap();
        let e = call(&from_response, 2).await.unwrap_err();
        assert!(is_cycle(&e), "{e}");
        // The other field is unaffected.
        let second = response
            .get()
            .unwrap()
            .get_pair()
            .unwrap()
            .get_second()
            .unwrap();
        assert_eq!(call(&second, 3).await.unwrap(), 3);

        // A promise resolved to itself.
        let (p, r) = Cap::<probe::Client>::promise();
        r.resolve_to(p.raw().clone());
        assert!(is_cycle(&p.when_resolved().await.unwrap_err()));
    }
    assert_all_released().await;
    assert_eq!(log.calls(), [3]);
}

#[actix::test]
async fn scenario_40_field_resolving_to_another_field_is_not_a_cycle() {
    let log = Log::default();
    {
        let (m, tx) = maker_with_pair();
        let maker: Cap<maker::Client> = Cap::new(m);
        let pending = maker.client().pair_request().send();
        let first = Cap::<probe::Client>::from_client(&pending.pipeline.get_pair().get_first());
        let second = Cap::<probe::Client>::from_client(&pending.pipeline.get_pair().get_second());
        let queued = {
            let c = first.client();
            async move { call(&c, 1).await }
        };
        // first := the second field; second := a real probe.
        tx.send((second.clone(), Probe::cap(&log))).ok().unwrap();
        assert_eq!(within("queued", queued).await.unwrap(), 1);
        assert_eq!(call(&first.client(), 2).await.unwrap(), 2);
        let response = pending.promise.await.unwrap();
        let f = response
            .get()
            .unwrap()
            .get_pair()
            .unwrap()
            .get_first()
            .unwrap();
        assert_eq!(call(&f, 3).await.unwrap(), 3);
        assert_eq!(log.calls(), [1, 2, 3]);
    }
    assert_all_released().await;
    assert_eq!(log.released(), 1);
}

#[actix::test]
async fn scenario_41_reference_counts_stay_right_when_loops_are_broken() {
    let log = Log::default();
    {
        let probe = Probe::cap(&log);
        assert_eq!(probe.ref_count(), 1);
        let (p1, r1) = Cap::<probe::Client>::promise();
        let (p2, r2) = Cap::<probe::Client>::promise();
        r1.resolve_to(p2.raw().clone());
        r2.resolve_to(p1.raw().clone()); // broken: cycle
        let (p3, r3) = Cap::<probe::Client>::promise();
        r3.resolve_to(probe.raw().clone());
        // The promise refers to its resolution (its record and its actor).
        assert_eq!(probe.ref_count(), 3);
        assert!(is_cycle(&p1.when_resolved().await.unwrap_err()));
        assert_eq!(call(&p3.client(), 7).await.unwrap(), 7);
        drop((p1, p2, p3));
        within("promise releases its target", async {
            while probe.ref_count() != 1 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        let live = capnp_actix::debug::report();
        assert!(
            live.caps.iter().any(|c| c.id == probe.id() && c.refs == 1),
            "{live}"
        );
    }
    assert_all_released().await;
    assert_eq!(log.released(), 1);
}

#[actix::test]
async fn scenario_42_a_blocker_that_depends_on_itself_neither_crashes_nor_hangs() {
    let log = Log::default();
    {
        // A promise resolved to a field of a call that waits in the promise.
        let maker: Cap<maker::Client> = Cap::new(Maker::default());
        let (p, r) = Cap::<maker::Client>::promise();
        let mut req = p.client().hold_request();
        req.get().set_probe(Probe::cap(&log).client());
        let pending = req.send();
        let field = Cap::<maker::Client>::from_client(&pending.pipeline.get_probe().cast_to());
        r.resolve_to(field.raw().clone());
        let e = within("self-blocked call", pending.promise)
            .await
            .err()
            .unwrap();
        assert!(is_cycle(&e), "{e}");
        let e = within("later call", p.client().hold_request().send().promise)
            .await
            .err()
            .unwrap();
        assert!(is_cycle(&e), "{e}");
        drop(maker);
    }
    {
        // A method that tail-calls a field of its own answer.
        struct TailSelf(std::cell::RefCell<Option<oneshot::Receiver<Cap<maker::Client>>>>);
        impl maker::Server for TailSelf {
            async fn hold(
                self: std::rc::Rc<Self>,
                _: maker::HoldParams,
                results: maker::HoldResults,
            ) -> Result<(), capnp::Error> {
                let rx = self.0.borrow_mut().take().unwrap();
                let own_field = rx.await.unwrap();
                let req = own_field.client().hold_request();
                results.hook.tail_call(req.hook).await
            }
        }
        let (tx, rx) = oneshot::channel();
        let cap: Cap<maker::Client> = Cap::new(TailSelf(std::cell::RefCell::new(Some(rx))));
        let pending = cap.client().hold_request().send();
        let own = Cap::<maker::Client>::from_client(&pending.pipeline.get_probe().cast_to());
        tx.send(own).ok().unwrap();
        let e = within("tail call on own answer", pending.promise)
            .await
            .err()
            .unwrap();
        assert!(is_cycle(&e), "{e}");
    }
    assert_all_released().await;
}

#[actix::test]
async fn scenario_43_dropping_a_question_while_holding_a_pipelined_field_does_not_cancel_it() {
    let log = Log::default();
    {
        let (m, tx) = maker_with_pair();
        let finished = m.finished.clone();
        let dropped = m.dropped.clone();
        let maker: Cap<maker::Client> = Cap::new(m);
        let pending = maker.client().pair_request().send();
        let first = Cap::<probe::Client>::from_client(&pending.pipeline.get_pair().get_first());
        drop(pending);
        tokio::task::yield_now().await;
        tx.send((Probe::cap(&log), Probe::cap(&log))).ok().unwrap();
        assert_eq!(
            within("pipelined", call(&first.client(), 5)).await.unwrap(),
            5
        );
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the call must have run to its end"
        );
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
    }
    assert_all_released().await;
    assert_eq!(log.released(), 2);
}

#[actix::test]
async fn scenario_44_dropping_a_question_before_its_return_cancels_and_releases() {
    let log = Log::default();
    let (m, tx) = maker_with_pair();
    let dropped = m.dropped.clone();
    let finished = m.finished.clone();
    {
        let early = Probe::cap(&log);
        let m = Maker {
            early: Some((early.clone(), early)),
            ..m
        };
        let maker: Cap<maker::Client> = Cap::new(m);
        let pending = maker.client().pair_request().send();
        tokio::task::yield_now().await; // the method starts and waits
        drop(pending);
        within("cancellation", async {
            while dropped.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
    assert!(
        tx.send((Probe::cap(&log), Probe::cap(&log))).is_err(),
        "the method's future must be gone"
    );
    assert_all_released().await;
    assert_eq!(finished.load(Ordering::SeqCst), 0);
    // The probe it would have returned (already in its results) is released.
    assert_eq!(log.released(), 3);
}

#[actix::test]
async fn scenario_45_dropping_a_question_after_its_return_releases_returned_caps() {
    let log = Log::default();
    {
        let (m, tx) = maker_with_pair();
        let maker: Cap<maker::Client> = Cap::new(m);
        tx.send((Probe::cap(&log), Probe::cap(&log))).ok().unwrap();
        let response = maker.client().pair_request().send().promise.await.unwrap();
        let first = response
            .get()
            .unwrap()
            .get_pair()
            .unwrap()
            .get_first()
            .unwrap();
        assert_eq!(call(&first, 1).await.unwrap(), 1);
        drop(first);
        drop(response);
        within("returned probes released with the response", async {
            while log.released() != 2 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert_eq!(maker.ref_count(), 1, "the service itself is still held");
    }
    assert_all_released().await;
}

#[actix::test]
async fn scenario_46_a_slow_call_does_not_hold_up_a_fast_one() {
    let log = Log::default();
    {
        let probe = Probe::new(&log);
        let (open, gate) = oneshot::channel();
        probe.gates.borrow_mut().push((1, gate));
        let cap: Cap<probe::Client> = Cap::new(probe);
        let client = cap.client();
        let slow = {
            let c = client.clone();
            tokio::task::spawn_local(async move { call(&c, 1).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(
            within("fast call behind a slow one", call(&client, 2))
                .await
                .unwrap(),
            2
        );
        assert!(!slow.is_finished());
        open.send(()).unwrap();
        assert_eq!(slow.await.unwrap().unwrap(), 1);
        assert_eq!(log.calls(), [1, 2]);
    }
    assert_all_released().await;
}

#[actix::test]
async fn scenario_47_cancelling_a_call_while_another_completes_drops_only_that_method() {
    let log = Log::default();
    {
        let (m, _tx) = maker_with_pair();
        let dropped = m.dropped.clone();
        let maker: Cap<maker::Client> = Cap::new(m);
        let blocked = maker.client().pair_request().send();
        let mut hold = maker.client().hold_request();
        hold.get().set_probe(Probe::cap(&log).client());
        let other = hold.send();
        tokio::task::yield_now().await;
        drop(blocked);
        let r = within("other call", other.promise).await.unwrap();
        assert_eq!(
            call(&r.get().unwrap().get_probe().unwrap(), 9)
                .await
                .unwrap(),
            9
        );
        within("cancel", async {
            while dropped.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
    {
        // A method that opted out with `shield` runs to its end.
        struct Shielded(
            Arc<std::sync::atomic::AtomicBool>,
            std::cell::RefCell<Option<oneshot::Receiver<()>>>,
        );
        impl maker::Server for Shielded {
            async fn pair(
                self: std::rc::Rc<Self>,
                _: maker::PairParams,
                _: maker::PairResults,
            ) -> Result<(), capnp::Error> {
                let rx = self.1.borrow_mut().take().unwrap();
                let done = self.0.clone();
                capnp_actix::shield(async move {
                    let _ = rx.await;
                    done.store(true, Ordering::SeqCst);
                    Ok(())
                })
                .await
            }
        }
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (go, rx) = oneshot::channel();
        let cap: Cap<maker::Client> =
            Cap::new(Shielded(done.clone(), std::cell::RefCell::new(Some(rx))));
        let pending = cap.client().pair_request().send();
        tokio::task::yield_now().await;
        drop(pending);
        tokio::task::yield_now().await;
        go.send(()).unwrap();
        within("shielded body", async {
            while !done.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
    assert_all_released().await;
}

#[actix::test]
async fn cancelled_before_start_never_starts() {
    let log = Log::default();
    {
        let cap = Probe::cap(&log);
        let client = cap.client();
        let mut req = client.call_request();
        req.get().set_seq(1);
        drop(req.send()); // dropped before the actor gets to it
        assert_eq!(call(&client, 2).await.unwrap(), 2);
        assert_eq!(log.calls(), [2], "the dropped call must never start");
    }
    assert_all_released().await;
}

#[actix::test]
async fn e_order_10000_calls_on_one_reference_start_in_send_order() {
    let log = Log::default();
    {
        let client = Probe::cap(&log).client();
        let calls: Vec<_> = (0..10_000).map(|i| call(&client, i)).collect();
        for (i, r) in join_all(calls).await.into_iter().enumerate() {
            assert_eq!(r.unwrap(), i as u64);
        }
        assert_eq!(log.calls(), (0..10_000).collect::<Vec<_>>());
    }
    assert_all_released().await;
}

#[actix::test]
async fn e_order_10000_calls_across_a_promise_resolution() {
    let log = Log::default();
    {
        let (p, r) = Cap::<probe::Client>::promise();
        let client = p.client();
        // The first half: `send` hands each call to the promise before it
        // returns, so these 5,000 are all in its queue before it resolves.
        let mut first: Vec<_> = (0..5_000)
            .map(|i| {
                let mut req = client.call_request();
                req.get().set_seq(i);
                req.send().promise
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(
            log.calls().is_empty(),
            "a call started before the resolution"
        );
        assert!(
            futures::FutureExt::now_or_never(p.when_resolved()).is_none(),
            "the promise resolved before the test resolved it"
        );
        r.resolve_to(Probe::cap(&log).raw().clone());
        first.extend((5_000..10_000).map(|i| {
            let mut req = client.call_request();
            req.get().set_seq(i);
            req.send().promise
        }));
        for (i, reply) in first.into_iter().enumerate() {
            assert_eq!(reply.await.unwrap().get().unwrap().get_seq(), i as u64);
        }
        assert_eq!(log.calls(), (0..10_000).collect::<Vec<_>>());
    }
    assert_all_released().await;
}

#[actix::test]
async fn e_order_pipelined_calls_keep_order_across_the_answer() {
    let log = Log::default();
    {
        let (m, tx) = maker_with_pair();
        let maker: Cap<maker::Client> = Cap::new(m);
        let pending = maker.client().pair_request().send();
        let first = pending.pipeline.get_pair().get_first();
        let mut handles: Vec<_> = (0..500)
            .map(|i| {
                let c = first.clone();
                tokio::task::spawn_local(async move { call(&c, i).await })
            })
            .collect();
        tokio::task::yield_now().await;
        tx.send((Probe::cap(&log), Probe::cap(&log))).ok().unwrap();
        handles.extend((500..1000).map(|i| {
            let c = first.clone();
            tokio::task::spawn_local(async move { call(&c, i).await })
        }));
        for h in handles {
            h.await.unwrap().unwrap();
        }
        assert_eq!(log.calls(), (0..1000).collect::<Vec<_>>());
        drop(pending);
    }
    assert_all_released().await;
}

#[actix::test]
async fn set_pipeline_resolves_pipelined_calls_before_the_method_returns() {
    let log = Log::default();
    {
        let (m, tx) = maker_with_pair();
        let early = Probe::cap(&log);
        let m = Maker {
            early: Some((early.clone(), early)),
            ..m
        };
        let maker: Cap<maker::Client> = Cap::new(m);
        let pending = maker.client().pair_request().send();
        let first = pending.pipeline.get_pair().get_first();
        // The method is still waiting for `tx`, yet the pipelined call works.
        assert_eq!(within("early pipeline", call(&first, 4)).await.unwrap(), 4);
        tx.send((Probe::cap(&log), Probe::cap(&log))).ok().unwrap();
        pending.promise.await.unwrap();
    }
    assert_all_released().await;
    assert_eq!(log.released(), 3);
}

#[actix::test]
async fn release_by_drop_stops_the_actor_and_runs_the_release_hook() {
    let log = Log::default();
    let cap = Probe::cap(&log);
    let c1 = cap.client();
    let c2 = c1.clone();
    let report = capnp_actix::debug::report();
    assert!(
        report.caps.iter().any(|c| c.id == cap.id() && c.refs == 3),
        "{report}"
    );
    assert_eq!(report.actors, 1);
    drop(cap);
    drop(c1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(log.released(), 0, "still referenced by one client");
    drop(c2);
    assert_all_released().await;
    assert_eq!(log.released(), 1);
}

#[actix::test]
async fn a_panicking_method_fails_that_call_and_the_capability_keeps_serving() {
    let log = Log::default();
    {
        let client = Probe::cap(&log).client();
        let e = call(&client, PANIC).await.unwrap_err();
        assert_eq!(e.kind, capnp::ErrorKind::Failed);
        assert!(e.to_string().contains("probe told to panic"), "{e}");
        assert_eq!(call(&client, 1).await.unwrap(), 1);
    }
    assert_all_released().await;
}

#[actix::test]
async fn an_unknown_method_is_unimplemented() {
    {
        let cap: Cap<maker::Client> = Cap::new(Maker::default());
        let as_probe: Cap<probe::Client> = cap.cast();
        let e = call(&as_probe.client(), 1).await.unwrap_err();
        assert_eq!(e.kind, capnp::ErrorKind::Unimplemented);
    }
    assert_all_released().await;
}

#[actix::test]
async fn caps_are_send_and_sync_and_callable_from_another_arbiter() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let log = Log::default();
    {
        let cap = Probe::cap(&log);
        send_sync(&cap);
        let arbiter = actix::Arbiter::new();
        let (tx, rx) = oneshot::channel();
        let moved = cap.clone();
        arbiter.spawn_fn(move || {
            actix_rt::spawn(async move {
                let r = call(&moved.client(), 11).await;
                let _ = tx.send((r.map_err(|e| e.to_string()), std::thread::current().id()));
            });
        });
        let (r, thread) = within("call from another arbiter", rx).await.unwrap();
        assert_eq!(r.unwrap(), 11);
        assert_ne!(thread, std::thread::current().id());

        // A capability hosted on the other arbiter, called from here.
        let log2 = log.clone();
        let remote: Cap<probe::Client> = Cap::new_on(&arbiter.handle(), move || Probe::new(&log2));
        assert_eq!(call(&remote.client(), 12).await.unwrap(), 12);
        drop(remote);
        arbiter.stop();
    }
    assert_all_released().await;
    assert_eq!(log.calls(), [11, 12]);
}

#[actix::test]
async fn foreign_hooks_travel_in_cap_tables_and_keep_their_identity() {
    let log = Log::default();
    {
        // A capability of the capnp-rpc crate, sent through our runtime and back.
        let theirs: probe::Client = capnp_rpc::new_client(Probe::new(&log));
        let maker: Cap<maker::Client> = Cap::new(Maker::default());
        let mut req = maker.client().hold_request();
        req.get().set_probe(theirs.clone());
        let back = req
            .send()
            .promise
            .await
            .unwrap()
            .get()
            .unwrap()
            .get_probe()
            .unwrap();
        assert_eq!(
            back.as_client_hook().get_ptr(),
            theirs.as_client_hook().get_ptr(),
            "on its own thread the foreign capability comes back as itself, not a proxy"
        );
        assert_eq!(call(&back, 1).await.unwrap(), 1);
        assert_eq!(
            Cap::<probe::Client>::from_client(&theirs),
            Cap::from_client(&back)
        );

        // Ours, sent through a capnp-rpc server and back.
        let ours = Probe::cap(&log);
        let their_maker: maker::Client = capnp_rpc::new_client(Maker::default());
        let mut req = their_maker.hold_request();
        req.get().set_probe(ours.client());
        let back = req
            .send()
            .promise
            .await
            .unwrap()
            .get()
            .unwrap()
            .get_probe()
            .unwrap();
        assert_eq!(Cap::<probe::Client>::from_client(&back), ours);
        assert_eq!(call(&back, 2).await.unwrap(), 2);
    }
    assert_all_released().await;
    assert_eq!(log.calls(), [1, 2]);
}

#[actix::test]
async fn broken_capability_fails_calls_and_releases_their_params() {
    let log = Log::default();
    {
        let broken: Cap<maker::Client> = Cap::broken(failed("no such thing"));
        let mut req = broken.client().hold_request();
        req.get().set_probe(Probe::cap(&log).client());
        let e = req.send().promise.await.err().unwrap();
        assert!(e.to_string().contains("no such thing"));
        let _unused: Option<CapRef> = None;
    }
    assert_all_released().await;
    assert_eq!(
        log.released(),
        1,
        "the probe passed as a parameter is released"
    );
}
