//! Pipelining, promises and embargoes between two of our vats over a
//! socket pair (SCENARIOS 6, 12, 17, 19, 21, 24-28). Each test checks what
//! arrives where and in which order, and ends with nothing alive.

mod support;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use capnp_actix::connection::{
    bootstrap_fn, start_connection, ConnectionHandle, ConnectionOptions,
};
use capnp_actix::schemas::test_api_capnp::{maker, probe};
use capnp_actix::{Cap, CapRef};
use futures::channel::oneshot;
use support::{call, maker_with_pair, Log, Probe};

/// What the server's `hold(probe)` answers.
#[derive(Clone, Copy)]
enum Hold {
    /// The probe itself.
    Now,
    /// A promise that resolves to the probe after a delay.
    Later(Duration),
    /// A promise that resolves to another promise, which resolves to the
    /// probe: two steps, a delay each.
    Chain(Duration),
    /// A promise that breaks after a delay.
    Breaks(Duration),
    /// The probe, once the test opens the gate.
    Gated,
    /// The "probe" given is really a maker: answer with the first field
    /// of its `pair()`, pipelined (a promised answer of the caller's).
    ViaPair,
}

/// The server's maker.
struct Switchboard {
    hold: Hold,
    gate: RefCell<Option<oneshot::Receiver<()>>>,
    /// What `pair` returns: (first, second), second possibly absent.
    pair: Option<(Cap<probe::Client>, Option<Cap<probe::Client>>)>,
}

fn switchboard(hold: Hold) -> Switchboard {
    Switchboard {
        hold,
        gate: RefCell::new(None),
        pair: None,
    }
}

/// A local promise resolved to `to` after `delay`.
fn later(to: CapRef, delay: Duration) -> Cap<probe::Client> {
    let (promise, resolver) = Cap::<probe::Client>::promise();
    actix::spawn(async move {
        tokio::time::sleep(delay).await;
        resolver.resolve_to(to);
    });
    promise
}

const BROKEN: &str = "the held probe broke";

impl maker::Server for Switchboard {
    async fn hold(
        self: Rc<Self>,
        params: maker::HoldParams,
        mut results: maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        let given: Cap<probe::Client> = Cap::from_client(&params.get()?.get_probe()?);
        let answer = match self.hold {
            Hold::Now => given,
            Hold::Later(d) => later(given.raw().clone(), d),
            Hold::Chain(d) => {
                let second = later(given.raw().clone(), d);
                later(second.raw().clone(), d)
            }
            Hold::Breaks(d) => {
                let (promise, resolver) = Cap::<probe::Client>::promise();
                actix::spawn(async move {
                    tokio::time::sleep(d).await;
                    resolver.reject(capnp::Error::failed(BROKEN.into()));
                    drop(given);
                });
                promise
            }
            Hold::ViaPair => {
                let theirs: maker::Client = given.clone().cast::<maker::Client>().client();
                let first = theirs.pair_request().send().pipeline.get_pair().get_first();
                Cap::from_client(&first)
            }
            Hold::Gated => {
                let gate = self.gate.borrow_mut().take();
                if let Some(g) = gate {
                    let _ = g.await;
                }
                given
            }
        };
        results.get().set_probe(answer.client());
        Ok(())
    }

    async fn pair(
        self: Rc<Self>,
        _: maker::PairParams,
        mut results: maker::PairResults,
    ) -> Result<(), capnp::Error> {
        let Some((first, second)) = &self.pair else {
            return Err(capnp::Error::failed("no pair".into()));
        };
        let mut p = results.get().init_pair();
        p.set_first(first.client());
        if let Some(s) = second {
            p.set_second(s.client());
        }
        Ok(())
    }
}

/// Two vats joined by a socket pair; the server's bootstrap is `service`.
struct Vats {
    client: ConnectionHandle,
    server: ConnectionHandle,
}

fn vats(service: CapRef) -> Vats {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let server = start_connection(
        a,
        ConnectionOptions {
            bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(service.clone()))),
            ..Default::default()
        },
    );
    let client = start_connection(b, ConnectionOptions::default());
    Vats { client, server }
}

impl Vats {
    fn maker(&self) -> maker::Client {
        Cap::<maker::Client>::from_raw(self.client.bootstrap(b"")).client()
    }

    /// Every table on both sides is empty (after the calls settled).
    async fn assert_tables_empty(&self) {
        for _ in 0..100 {
            let c = self.client.inspect().await.unwrap();
            let s = self.server.inspect().await.unwrap();
            let empty = |t: &capnp_actix::proto::captp::TableSizes| {
                t.questions + t.answers + t.exports + t.imports + t.embargoes == 0
            };
            if empty(&c.0) && empty(&s.0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let c = self.client.inspect().await.unwrap();
        let s = self.server.inspect().await.unwrap();
        panic!(
            "tables not empty:\nclient {:?}\n{}\nserver {:?}\n{}",
            c.0, c.1, s.0, s.1
        );
    }
}

/// Ends a test: the tables empty while connected, then nothing alive.
async fn end(vats: Vats) {
    vats.assert_tables_empty().await;
    vats.client.close("test over");
    drop(vats);
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
}

/// Sends calls `seqs` on `target` in bursts of ten (so that later calls
/// can overtake earlier ones if nothing keeps the order), and returns
/// their outcomes in the order sent.
async fn bursts(
    target: &probe::Client,
    seqs: std::ops::Range<u64>,
) -> Vec<Result<u64, capnp::Error>> {
    let mut pending = Vec::new();
    for seq in seqs {
        let t = target.clone();
        pending.push(tokio::task::spawn_local(async move { call(&t, seq).await }));
        if seq % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut out = Vec::new();
    for p in pending {
        out.push(p.await.unwrap());
    }
    out
}

fn assert_all_ok(outcomes: &[Result<u64, capnp::Error>], seqs: std::ops::Range<u64>) {
    let got: Vec<u64> = outcomes.iter().map(|r| *r.as_ref().unwrap()).collect();
    assert_eq!(got, seqs.collect::<Vec<_>>());
}

#[actix::test]
async fn scenario_06_a_field_of_a_result_outlives_the_result() {
    let log = Log::default();
    let mut sb = switchboard(Hold::Now);
    sb.pair = Some((Probe::cap(&log), None));
    let service: Cap<maker::Client> = Cap::new(sb);
    let v = vats(service.raw().clone());
    {
        let maker = v.maker();
        let response = maker.pair_request().send().promise.await.unwrap();
        let first = response
            .get()
            .unwrap()
            .get_pair()
            .unwrap()
            .get_first()
            .unwrap();
        drop(response);
        assert_eq!(call(&first, 7).await.unwrap(), 7);
        assert_eq!(log.calls(), [7]);
    }
    drop(service);
    end(v).await;
    assert_eq!(log.released(), 1);
}

#[actix::test]
async fn scenario_12_two_capabilities_in_a_nested_result_reached_by_pipelining() {
    let (first_log, second_log) = (Log::default(), Log::default());
    let mut sb = switchboard(Hold::Now);
    sb.pair = Some((Probe::cap(&first_log), Some(Probe::cap(&second_log))));
    let service: Cap<maker::Client> = Cap::new(sb);
    let v = vats(service.raw().clone());
    {
        let maker = v.maker();
        let pending = maker.pair_request().send();
        let pair = pending.pipeline.get_pair();
        let (first, second) = (pair.get_first(), pair.get_second());
        let (a, b) = futures::join!(call(&first, 1), call(&second, 2));
        assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
        assert_eq!((first_log.calls(), second_log.calls()), (vec![1], vec![2]));
        drop(pending.promise);
    }
    drop(service);
    end(v).await;
}

#[actix::test]
async fn scenario_26_a_pipelined_call_on_an_absent_field_fails_and_the_rest_works() {
    let log = Log::default();
    let mut sb = switchboard(Hold::Now);
    sb.pair = Some((Probe::cap(&log), None));
    let service: Cap<maker::Client> = Cap::new(sb);
    let v = vats(service.raw().clone());
    {
        let maker = v.maker();
        let pending = maker.pair_request().send();
        let pair = pending.pipeline.get_pair();
        let (first, absent) = (pair.get_first(), pair.get_second());
        let (a, b) = futures::join!(call(&first, 1), call(&absent, 2));
        assert_eq!(a.unwrap(), 1);
        assert!(b.is_err(), "a call on a null field fails");
        // The connection is fine.
        assert_eq!(call(&first, 3).await.unwrap(), 3);
        assert_eq!(log.calls(), [1, 3]);
        drop(pending.promise);
    }
    drop(service);
    end(v).await;
}

/// `hold(local)` with calls pipelined on its answer from the start, in
/// bursts, across the return and any later resolution.
async fn pipelined_through_hold(
    v: &Vats,
    local: &Cap<probe::Client>,
    n: u64,
) -> Vec<Result<u64, capnp::Error>> {
    let maker = v.maker();
    let mut req = maker.hold_request();
    req.get().set_probe(local.client());
    let pending = req.send();
    let held = pending.pipeline.get_probe();
    let outcomes = bursts(&held, 0..n).await;
    drop(pending.promise);
    outcomes
}

/// The server's `hold` answers as `hold` says; our probe, handed to it,
/// gets 300 calls pipelined on the answer, in order.
async fn our_probe_through(hold: Hold) {
    let log = Log::default();
    let service: Cap<maker::Client> = Cap::new(switchboard(hold));
    let v = vats(service.raw().clone());
    {
        let local = Probe::cap(&log);
        let outcomes = pipelined_through_hold(&v, &local, 300).await;
        assert_all_ok(&outcomes, 0..300);
        assert_eq!(log.calls(), (0..300).collect::<Vec<_>>());
    }
    drop(service);
    end(v).await;
}

#[actix::test]
async fn scenario_17_an_answer_that_is_a_promise_resolving_to_our_object_keeps_order() {
    our_probe_through(Hold::Later(Duration::from_millis(10))).await;
}

#[actix::test]
async fn scenario_21_a_chain_of_resolutions_keeps_order() {
    our_probe_through(Hold::Chain(Duration::from_millis(8))).await;
}

#[actix::test]
async fn scenario_19_our_promise_sent_out_and_back_then_resolved_locally_keeps_order() {
    let log = Log::default();
    let service: Cap<maker::Client> = Cap::new(switchboard(Hold::Now));
    let v = vats(service.raw().clone());
    {
        // A local promise goes to the server and comes back; calls are
        // pipelined on the way; it resolves to a local probe meanwhile.
        let (promise, resolver) = Cap::<probe::Client>::promise();
        let probe = Probe::cap(&log);
        let target = probe.raw().clone();
        actix::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            resolver.resolve_to(target);
        });
        let outcomes = pipelined_through_hold(&v, &promise, 300).await;
        assert_all_ok(&outcomes, 0..300);
        assert_eq!(log.calls(), (0..300).collect::<Vec<_>>());
        drop((promise, probe));
    }
    drop(service);
    end(v).await;
}

#[actix::test]
async fn scenario_24_once_the_target_is_broken_calls_fail_with_its_error() {
    let log = Log::default();
    let service: Cap<maker::Client> =
        Cap::new(switchboard(Hold::Breaks(Duration::from_millis(10))));
    let v = vats(service.raw().clone());
    {
        let local = Probe::cap(&log);
        let outcomes = pipelined_through_hold(&v, &local, 100).await;
        // Every call fails with the error (none reached the probe), and
        // the connection survives.
        for o in &outcomes {
            let e = o.as_ref().unwrap_err();
            assert!(e.to_string().contains(BROKEN), "{e}");
        }
        assert!(log.calls().is_empty());
        assert!(v.client.is_open() && v.server.is_open());
    }
    drop(service);
    end(v).await;
}

#[actix::test]
async fn scenario_25_a_broken_capability_echoed_back_fails_calls_without_hanging() {
    let service: Cap<maker::Client> = Cap::new(switchboard(Hold::Now));
    let v = vats(service.raw().clone());
    {
        let broken = Cap::<probe::Client>::broken(capnp::Error::failed("broken on purpose".into()));
        let outcomes = pipelined_through_hold(&v, &broken, 20).await;
        for o in &outcomes {
            let e = o.as_ref().unwrap_err();
            assert!(e.to_string().contains("broken on purpose"), "{e}");
        }
        // Still usable afterwards.
        let log = Log::default();
        let probe = Probe::cap(&log);
        let outcomes = pipelined_through_hold(&v, &probe, 5).await;
        assert_all_ok(&outcomes, 0..5);
    }
    drop(service);
    end(v).await;
}

#[actix::test]
async fn scenario_27_a_forwarding_chain_through_a_local_promise_to_the_servers_bootstrap() {
    let log = Log::default();
    let probe = Probe::cap(&log);
    let v = vats(probe.raw().clone());
    {
        // Our local promise, called before and after it resolves to the
        // server's bootstrap (a probe), which also gets direct calls later.
        let (promise, resolver) = Cap::<probe::Client>::promise();
        let p = promise.client();
        let first = bursts(&p, 0..100);
        let bootstrap = v.client.bootstrap(b"");
        let resolve = async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            resolver.resolve_to(bootstrap);
        };
        let (outcomes, ()) = futures::join!(first, resolve);
        assert_all_ok(&outcomes, 0..100);
        let more = bursts(&p, 100..200).await;
        assert_all_ok(&more, 100..200);
        assert_eq!(log.calls(), (0..200).collect::<Vec<_>>());
        drop((promise, p));
    }
    drop(probe);
    end(v).await;
}

#[actix::test]
async fn scenario_28_fetched_back_through_a_blocked_call_and_pinged_while_the_path_shortens() {
    let log = Log::default();
    let (open, gate) = oneshot::channel();
    let sb = switchboard(Hold::Gated);
    *sb.gate.borrow_mut() = Some(gate);
    let service: Cap<maker::Client> = Cap::new(sb);
    let v = vats(service.raw().clone());
    {
        let local = Probe::cap(&log);
        let maker = v.maker();
        let mut req = maker.hold_request();
        req.get().set_probe(local.client());
        let pending = req.send();
        let held = pending.pipeline.get_probe();
        // 0 goes out while the call is blocked; the gate opens and 1
        // follows at once; 2 after the answer is back, while the path
        // shortens to our own probe: all on the one reference.
        let zero = tokio::task::spawn_local({
            let h = held.clone();
            async move { call(&h, 0).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        open.send(()).unwrap();
        let one = tokio::task::spawn_local({
            let h = held.clone();
            async move { call(&h, 1).await }
        });
        let response = pending.promise.await.unwrap();
        let two = call(&held, 2).await;
        assert_eq!(
            (
                zero.await.unwrap().unwrap(),
                one.await.unwrap().unwrap(),
                two.unwrap()
            ),
            (0, 1, 2)
        );
        assert_eq!(log.calls(), [0, 1, 2]);
        // The capability in the answer is our own probe.
        let fetched = response.get().unwrap().get_probe().unwrap();
        assert_eq!(call(&fetched, 3).await.unwrap(), 3);
        drop((held, fetched, response));
    }
    drop(service);
    end(v).await;
}

#[actix::test]
async fn scenario_14_an_answer_that_is_our_own_promised_answer_keeps_order() {
    let log = Log::default();
    let service: Cap<maker::Client> = Cap::new(switchboard(Hold::ViaPair));
    let v = vats(service.raw().clone());
    {
        // Our maker goes to the server, which calls `pair()` on it and
        // answers with that call's pipelined first field: the answer is a
        // promised answer of ours.
        let (local_maker, answer_pair) = maker_with_pair();
        let local_maker: Cap<maker::Client> = Cap::new(local_maker);
        let as_probe: Cap<probe::Client> = local_maker.clone().cast();
        let probe = Probe::cap(&log);
        let other = Probe::cap(&Log::default());
        let (p, o) = (probe.clone(), other.clone());
        actix::spawn(async move {
            tokio::time::sleep(Duration::from_millis(8)).await;
            let _ = answer_pair.send((p, o));
        });
        let outcomes = pipelined_through_hold(&v, &as_probe, 300).await;
        assert_all_ok(&outcomes, 0..300);
        assert_eq!(log.calls(), (0..300).collect::<Vec<_>>());
        drop((local_maker, as_probe, probe, other));
    }
    drop(service);
    end(v).await;
}

/// Our local promise goes to the server, whose answer is a promise of
/// its own that resolves to what it was given: calls bounce client ->
/// server -> client while both promises resolve, in either order.
async fn bouncing(server_delay: u64, client_delay: u64) {
    let log = Log::default();
    let service: Cap<maker::Client> = Cap::new(switchboard(Hold::Later(Duration::from_millis(
        server_delay,
    ))));
    let v = vats(service.raw().clone());
    {
        let (promise, resolver) = Cap::<probe::Client>::promise();
        let probe = Probe::cap(&log);
        let target = probe.raw().clone();
        actix::spawn(async move {
            tokio::time::sleep(Duration::from_millis(client_delay)).await;
            resolver.resolve_to(target);
        });
        let outcomes = pipelined_through_hold(&v, &promise, 300).await;
        assert_all_ok(&outcomes, 0..300);
        assert_eq!(log.calls(), (0..300).collect::<Vec<_>>());
        drop((promise, probe));
    }
    drop(service);
    end(v).await;
}

#[actix::test]
async fn scenario_18_both_sides_embargo_when_calls_bounce_back_through_the_peer() {
    // The server's promise resolves first (to our promise), ours later.
    bouncing(4, 12).await;
}

#[actix::test]
async fn scenario_20_our_promise_resolves_while_calls_bounce_multi_hop() {
    // Ours resolves first, the server's later.
    bouncing(12, 4).await;
}

#[actix::test]
async fn scenario_28a_tribble_race_a_resolution_to_our_promise_that_points_back_is_embargoed() {
    // The server's object R; our promise X resolves to R (an import from
    // the server) while the server's answer P resolves to X: P's
    // resolution names our X, which by then points back at the server.
    let r_log = Log::default();
    let mut sb = switchboard(Hold::Later(Duration::from_millis(12)));
    sb.pair = Some((Probe::cap(&r_log), None));
    let service: Cap<maker::Client> = Cap::new(sb);
    let v = vats(service.raw().clone());
    {
        let maker = v.maker();
        let response = maker.pair_request().send().promise.await.unwrap();
        let r = response
            .get()
            .unwrap()
            .get_pair()
            .unwrap()
            .get_first()
            .unwrap();
        let r: Cap<probe::Client> = Cap::from_client(&r);
        drop(response);
        let (x, resolver) = Cap::<probe::Client>::promise();
        let target = r.raw().clone();
        actix::spawn(async move {
            tokio::time::sleep(Duration::from_millis(4)).await;
            resolver.resolve_to(target);
        });
        let outcomes = pipelined_through_hold(&v, &x, 300).await;
        assert_all_ok(&outcomes, 0..300);
        assert_eq!(r_log.calls(), (0..300).collect::<Vec<_>>());
        drop((x, r));
    }
    drop(service);
    end(v).await;
}

/// A local maker that forwards `hold` to a remote one: its answer is a
/// local promise for a struct that becomes the remote answer.
struct Forwarder {
    remote: maker::Client,
}

impl maker::Server for Forwarder {
    async fn hold(
        self: Rc<Self>,
        params: maker::HoldParams,
        mut results: maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        let given = params.get()?.get_probe()?;
        // Wait a little, so that calls queue on our answer first.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut req = self.remote.hold_request();
        req.get().set_probe(given);
        let pending = req.send();
        results.get().set_probe(pending.pipeline.get_probe());
        drop(pending.promise);
        Ok(())
    }
}

#[actix::test]
async fn scenario_34_a_local_answer_resolved_to_a_remote_one_flushes_queued_calls_in_order() {
    let log = Log::default();
    let service: Cap<maker::Client> = Cap::new(switchboard(Hold::Later(Duration::from_millis(5))));
    let v = vats(service.raw().clone());
    {
        let forwarder: Cap<maker::Client> = Cap::new(Forwarder { remote: v.maker() });
        let local = Probe::cap(&log);
        let mut req = forwarder.client().hold_request();
        req.get().set_probe(local.client());
        let pending = req.send();
        let held = pending.pipeline.get_probe();
        let outcomes = bursts(&held, 0..300).await;
        assert_all_ok(&outcomes, 0..300);
        assert_eq!(log.calls(), (0..300).collect::<Vec<_>>());
        drop((pending.promise, held, forwarder, local));
    }
    drop(service);
    end(v).await;
}

#[actix::test]
async fn scenario_28b_a_two_hop_resolution_to_a_third_vat_needs_no_disembargo_and_keeps_order() {
    // A <-> B <-> C. B's answer to A is a promise that resolves to C's
    // object (B holds an import of it): A must not embargo (the
    // resolution is B's capability as far as A can tell), B forwards.
    let c_log = Log::default();
    let c_probe = Probe::cap(&c_log);
    let bc = vats(c_probe.raw().clone()); // B is bc's client, C its server
    let r_at_b: Cap<probe::Client> = Cap::from_raw(bc.client.bootstrap(b""));
    // B's maker: `hold` answers a promise resolving to C's object,
    // whatever it is given.
    struct ToThird {
        third: Cap<probe::Client>,
    }
    impl maker::Server for ToThird {
        async fn hold(
            self: Rc<Self>,
            _: maker::HoldParams,
            mut results: maker::HoldResults,
        ) -> Result<(), capnp::Error> {
            let p = later(self.third.raw().clone(), Duration::from_millis(8));
            results.get().set_probe(p.client());
            Ok(())
        }
    }
    let b_service: Cap<maker::Client> = Cap::new(ToThird {
        third: r_at_b.clone(),
    });
    let ab = vats(b_service.raw().clone());
    {
        let unused = Probe::cap(&Log::default());
        let outcomes = pipelined_through_hold(&ab, &unused, 300).await;
        assert_all_ok(&outcomes, 0..300);
        assert_eq!(c_log.calls(), (0..300).collect::<Vec<_>>());
        assert!(
            ab.client.is_open() && ab.server.is_open(),
            "no disembargo was rejected"
        );
        drop(unused);
    }
    drop((b_service, r_at_b, c_probe));
    ab.assert_tables_empty().await;
    // B's bootstrap (which holds its import of C's object) goes with the
    // A-B connection.
    ab.client.close("test over");
    for _ in 0..100 {
        if !ab.server.is_open() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bc.assert_tables_empty().await;
    bc.client.close("test over");
    drop((ab, bc));
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
}

#[actix::test]
async fn scenario_33_a_released_handle_leaves_its_import_to_those_forwarding_through_it() {
    let log = Log::default();
    let service = Probe::cap(&log);
    let v = vats(service.raw().clone());
    {
        // The import is reached through a local promise; the direct
        // handle goes away, calls through the promise still arrive.
        let import: Cap<probe::Client> = Cap::from_raw(v.client.bootstrap(b""));
        assert_eq!(call(&import.client(), 0).await.unwrap(), 0);
        let (promise, resolver) = Cap::<probe::Client>::promise();
        resolver.resolve_to(import.raw().clone());
        drop(import);
        let outcomes = bursts(&promise.client(), 1..50).await;
        assert_all_ok(&outcomes, 1..50);
        assert_eq!(log.calls(), (0..50).collect::<Vec<_>>());
        // Releasing the promise releases the import.
        drop(promise);
    }
    drop(service);
    end(v).await;
}

#[actix::test]
async fn scenario_23_mutual_bootstraps_pass_a_capability_both_ways_in_order() {
    // Each side offers a maker and bootstraps the other's.
    let a_service: Cap<maker::Client> = Cap::new(switchboard(Hold::Now));
    let b_service: Cap<maker::Client> = Cap::new(switchboard(Hold::Now));
    let (x, y) = tokio::net::UnixStream::pair().unwrap();
    let (a_raw, b_raw) = (a_service.raw().clone(), b_service.raw().clone());
    let a = start_connection(
        x,
        ConnectionOptions {
            bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(a_raw.clone()))),
            ..Default::default()
        },
    );
    let b = start_connection(
        y,
        ConnectionOptions {
            bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(b_raw.clone()))),
            ..Default::default()
        },
    );
    let log = Log::default();
    {
        let b_maker: Cap<maker::Client> = Cap::from_raw(a.bootstrap(b""));
        let a_maker: Cap<maker::Client> = Cap::from_raw(b.bootstrap(b""));
        // B sends a probe to A's maker and gets it back (its own object
        // again); A then passes it to B's maker and pipelines calls on the
        // answer: the capability has crossed the connection both ways
        // through both bootstraps, and the calls keep their order.
        let b_probe: Cap<probe::Client> = Cap::new(Probe::new(&log));
        let mut req = a_maker.client().hold_request();
        req.get().set_probe(b_probe.client());
        let b_probe_at_a = req.send().promise.await.unwrap();
        let b_probe_at_a = b_probe_at_a.get().unwrap().get_probe().unwrap();
        let mut req = b_maker.client().hold_request();
        req.get().set_probe(b_probe_at_a);
        let pending = req.send();
        let held = pending.pipeline.get_probe();
        let outcomes = bursts(&held, 0..200).await;
        assert_all_ok(&outcomes, 0..200);
        assert_eq!(log.calls(), (0..200).collect::<Vec<_>>());
        drop((pending.promise, held, a_maker, b_maker, b_probe));
    }
    drop((a_service, b_service));
    let v = Vats {
        client: a,
        server: b,
    };
    end(v).await;
}
