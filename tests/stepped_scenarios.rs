//! Stepped protocol scenarios between our vats (SCENARIOS 6, 8, 10, 12-28,
//! 28a, 28b with three vats, 33, 34, and regressions of the
//! simulation's seeds): the vats are joined by in-memory
//! wires that move one message at a time when the test says so, and the
//! test checks the kind, ids, target and capability descriptors of every
//! message each side sends before delivering it. Scenario 21 also runs
//! against a scripted peer (a bare protocol core the test drives), which
//! sends what our vats never do. Each test ends with every table on every
//! side empty and nothing alive.
//!
//! The same scenarios run over real sockets with many calls in bursts in
//! `tests/embargo_scenarios.rs` and `tests/path_shortening.rs`; here the
//! interleaving is forced, so the embargo logic is checked message by
//! message.

#[path = "sim/describe.rs"]
mod describe;
mod support;
#[path = "sim/wire.rs"]
#[allow(dead_code)]
mod wire;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use capnp_actix::connection::{
    bootstrap_fn, start_connection, BootstrapFn, ConnectionHandle, ConnectionOptions,
};
use capnp_actix::schemas::test_api_capnp::{maker, probe};
use capnp_actix::{Cap, CapRef, Resolver};
use futures::channel::oneshot;
use support::{start_call, Held, Log, Probe};
use wire::{Activity, Wire};

/// Which way a message goes.
#[derive(Clone, Copy, Debug)]
enum Dir {
    /// From the client vat to the server vat.
    Up,
    /// From the server vat to the client vat.
    Down,
}

/// Two vats over stepped wires; the server's bootstrap is `service`.
struct Net {
    activity: Activity,
    up: Wire,
    down: Wire,
    client: ConnectionHandle,
    /// `None` when the test scripts the server itself.
    server: Option<ConnectionHandle>,
}

impl Net {
    fn new(service: CapRef) -> Net {
        Net::mutual(offering(service), None)
    }

    /// Two vats where the server offers what `server` looks up, and the
    /// client what `client` does, if anything (SCENARIO 23: each vat
    /// bootstraps the other).
    fn mutual(server: BootstrapFn, client: Option<BootstrapFn>) -> Net {
        Net::with_options(
            ConnectionOptions {
                bootstrap: Some(server),
                ..Default::default()
            },
            client,
        )
    }

    /// Two vats where the server's connection has the options `server`
    /// (its bootstrap among them), and the client offers what `client`
    /// looks up, if anything.
    fn with_options(server: ConnectionOptions, client: Option<BootstrapFn>) -> Net {
        let activity = Activity::default();
        let (client_end, server_end, up, down) = wire::pair(&activity);
        let server = start_connection(server_end, server);
        let client = start_connection(
            client_end,
            ConnectionOptions {
                bootstrap: client,
                ..Default::default()
            },
        );
        Net {
            activity,
            up,
            down,
            client,
            server: Some(server),
        }
    }

    /// Two vats; the server's bootstrap is a maker served by `server`.
    fn serving(server: impl maker::Server + 'static) -> Net {
        Net::new(Cap::<maker::Client>::new(server).raw().clone())
    }

    /// [`Net::serving`], where the server's tail calls back to the client
    /// go out with `sendResultsTo.yourself` (SCENARIO 22).
    fn serving_results_to_yourself(server: impl maker::Server + 'static) -> Net {
        Net::with_options(
            ConnectionOptions {
                bootstrap: Some(offering(Cap::<maker::Client>::new(server).raw().clone())),
                send_results_to_yourself: true,
                ..Default::default()
            },
            None,
        )
    }

    /// The client's reference to the server's bootstrap maker.
    fn maker(&self) -> maker::Client {
        Cap::<maker::Client>::from_raw(self.client.bootstrap(b"")).client()
    }

    fn wire(&self, dir: Dir) -> &Wire {
        match dir {
            Dir::Up => &self.up,
            Dir::Down => &self.down,
        }
    }

    /// Lets both vats run until nothing moves (every mailbox drained, no
    /// byte read or written for a while).
    async fn settle(&self) {
        let mut idle = 0;
        let mut last = wire::activity_now(&self.activity);
        let mut rounds = 0;
        while idle < 64 {
            tokio::task::yield_now().await;
            rounds += 1;
            assert!(rounds < 1_000_000, "the vats never went quiet");
            let now = wire::activity_now(&self.activity);
            if now == last {
                idle += 1;
            } else {
                last = now;
                idle = 0;
            }
        }
    }

    /// The messages waiting on a wire, in order.
    async fn waiting(&self, dir: Dir) -> Vec<String> {
        self.settle().await;
        self.wire(dir)
            .waiting()
            .iter()
            .map(|f| describe::frame(f))
            .collect()
    }

    /// Checks that exactly `expected` wait on the wire, in that order.
    async fn expect(&self, dir: Dir, expected: &[&str]) {
        assert_eq!(self.waiting(dir).await, expected, "messages going {dir:?}");
    }

    /// Checks that exactly `expected` wait on the wire, in any order (for
    /// messages that independent actors write).
    async fn expect_unordered(&self, dir: Dir, expected: &[&str]) {
        let mut got = self.waiting(dir).await;
        got.sort();
        let mut expected = expected.to_vec();
        expected.sort();
        assert_eq!(got, expected, "messages going {dir:?}");
    }

    /// Checks that no call and no disembargo waits to go up (calls made
    /// so far went to a local or broken target).
    async fn no_call_goes_up(&self) {
        let up = self.waiting(Dir::Up).await;
        assert!(
            !up.iter()
                .any(|m| m.starts_with("call") || m.starts_with("disembargo")),
            "{up:?}"
        );
    }

    /// Delivers the next `n` messages on a wire, one at a time.
    async fn deliver(&self, dir: Dir, n: usize) {
        for _ in 0..n {
            self.settle().await;
            assert!(self.wire(dir).deliver_one(), "nothing to deliver {dir:?}");
        }
        self.settle().await;
    }

    /// Checks what waits on a wire, then delivers all of it.
    async fn pass(&self, dir: Dir, expected: &[&str]) {
        self.expect(dir, expected).await;
        self.deliver(dir, expected.len()).await;
    }

    /// Delivers everything both ways until nothing moves.
    async fn flush(&self) {
        self.flush_seen().await;
    }

    /// [`Net::flush`], giving every message delivered.
    async fn flush_seen(&self) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            self.settle().await;
            let mut moved = false;
            for w in [&self.up, &self.down] {
                while let Some(f) = w.waiting().first() {
                    seen.push(describe::frame(f));
                    w.deliver_one();
                    moved = true;
                }
            }
            if !moved {
                return seen;
            }
        }
    }

    /// Closes the connection once every table on both sides is empty.
    async fn close(&self) {
        self.flush().await;
        let sides = [
            ("client", Some(&self.client)),
            ("server", self.server.as_ref()),
        ];
        for (side, conn) in sides.into_iter().filter_map(|(s, c)| Some((s, c?))) {
            let (t, dump) = conn.inspect().await.unwrap();
            assert_eq!(
                t.questions + t.answers + t.exports + t.imports + t.embargoes,
                0,
                "{side} tables not empty:\n{dump}"
            );
        }
        self.client.close("test over");
        self.flush().await;
    }

    /// Ends a test: every table empty on both sides, then nothing alive.
    async fn end(self) {
        self.close().await;
        drop(self);
        capnp_actix::debug::wait_all_released(Duration::from_secs(5))
            .await
            .unwrap_or_else(|r| panic!("still alive:\n{r}"));
    }
}

/// A bootstrap that offers `service` whatever is asked.
fn offering(service: CapRef) -> BootstrapFn {
    bootstrap_fn(move |_: &[u8]| Ok(service.clone()))
}

async fn outcomes(calls: Vec<tokio::task::JoinHandle<Result<u64, capnp::Error>>>) -> Vec<u64> {
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.unwrap().unwrap());
    }
    out
}

/// The first capability of the server's `pair()`, fetched with every
/// message delivered.
async fn first_of_pair(net: &Net, maker: &maker::Client) -> probe::Client {
    let pair = maker.pair_request().send();
    net.flush().await;
    let response = pair.promise.await.unwrap();
    let first = response
        .get()
        .unwrap()
        .get_pair()
        .unwrap()
        .get_first()
        .unwrap();
    drop(response);
    net.flush().await;
    first
}

/// The client's bootstrap and a `hold(local)` pipelined on it, delivered:
/// the first messages of most scenarios here. Gives the maker and the call.
async fn send_hold(
    net: &Net,
    local: probe::Client,
) -> (
    maker::Client,
    capnp::capability::RemotePromise<maker::hold_results::Owned>,
) {
    let maker = net.maker();
    let mut req = maker.hold_request();
    req.get().set_probe(local);
    let held = req.send();
    net.pass(
        Dir::Up,
        &["bootstrap q0", "call q1 -> answer 0 m1 [senderHosted 0]"],
    )
    .await;
    (maker, held)
}

/// [`send_hold`], for the capability pipelined on its answer only.
async fn hold_through_bootstrap(net: &Net, local: probe::Client) -> probe::Client {
    let (maker, held) = send_hold(net, local).await;
    let promise = held.pipeline.get_probe();
    tokio::task::spawn_local(async move {
        let _ = held.promise.await;
        drop(maker);
    });
    promise
}

/// SCENARIOS 10 and 15: the server's answer is a promise, which it
/// resolves to the client's own object (a `resolve` naming the client's
/// export). The client made calls on the promise over the wire, so it
/// embargoes: calls made after the `resolve` wait in the client until its
/// `disembargo` has come back behind the calls the server forwards, then
/// go to the local object directly, never on the wire.
#[actix::test]
async fn scenario_10_and_15_a_promise_resolved_to_our_own_object_is_embargoed_then_local() {
    let held = Held::default();
    let net = Net::serving(held.clone());
    let log = Log::default();
    {
        let local = Probe::cap(&log);
        let promise = hold_through_bootstrap(&net, local.client()).await;
        net.pass(
            Dir::Down,
            &[
                "return a0 results [senderHosted 0]",
                "return a1 results [senderPromise 1]",
            ],
        )
        .await;
        // Two calls on the promise go to the server (pipelined on q1: the
        // client heard of the promise from that return).
        let mut calls = vec![start_call(&promise, 0), start_call(&promise, 1)];
        // (The bootstrap's and hold's answers are finished, the maker
        // released; question ids are reused.)
        let before = [
            "finish q0",
            "finish q1",
            "release 0 x1",
            "call q0 -> import 1 m0 []",
            "call q1 -> import 1 m0 []",
        ];
        net.expect(Dir::Up, &before).await;
        // The server resolves its promise to the client's probe before it
        // reads those calls: `resolve` names the client's export.
        held.resolve();
        net.expect(Dir::Down, &["resolve 1 -> receiverHosted 0"])
            .await;
        net.deliver(Dir::Down, 1).await;
        // The client embargoes: a disembargo through the promise, and the
        // next call waits in the client.
        calls.push(start_call(&promise, 2));
        let mut then = before.to_vec();
        then.push("disembargo senderLoopback 0 -> import 1");
        net.expect(Dir::Up, &then).await;
        assert!(log.calls().is_empty());
        // The server forwards the two calls back to the probe, then
        // reflects the disembargo behind them.
        net.deliver(Dir::Up, then.len()).await;
        net.expect(
            Dir::Down,
            &[
                "call q0 -> import 0 m0 []",
                "call q1 -> import 0 m0 []",
                "disembargo receiverLoopback 0 -> import 0",
            ],
        )
        .await;
        net.deliver(Dir::Down, 3).await;
        assert_eq!(log.calls(), vec![0, 1, 2], "E-order across the embargo");
        // From now on calls on the promise are local: nothing on the wire.
        calls.push(start_call(&promise, 3));
        net.settle().await;
        assert_eq!(log.calls(), vec![0, 1, 2, 3]);
        net.flush().await;
        assert_eq!(outcomes(calls).await, vec![0, 1, 2, 3]);
        drop((promise, local));
    }
    net.end().await;
    assert_eq!(log.released(), 1);
}

/// SCENARIO 17: calls pipelined on an answer that turns out to be a
/// promise of the server's, which later resolves to the client's own
/// object, still need an embargo: they went to the server, which forwards
/// them back. The client has made no direct call on the import, but the
/// pipelined calls count as calls on it.
#[actix::test]
async fn scenario_17_pipelined_calls_on_an_answer_resolving_later_to_our_object_are_embargoed() {
    let held = Held::default();
    let net = Net::serving(held.clone());
    let log = Log::default();
    {
        let local = Probe::cap(&log);
        let promise = hold_through_bootstrap(&net, local.client()).await;
        // Pipelined on the answer, before the return.
        let mut calls = vec![start_call(&promise, 0), start_call(&promise, 1)];
        net.pass(
            Dir::Up,
            &[
                "call q2 -> answer 1.[0] m0 []",
                "call q3 -> answer 1.[0] m0 []",
            ],
        )
        .await;
        // The server answered with its promise (and put the pipelined
        // calls in its queue).
        net.pass(
            Dir::Down,
            &[
                "return a0 results [senderHosted 0]",
                "return a1 results [senderPromise 1]",
            ],
        )
        .await;
        // The promise resolves to the client's probe; the server forwards
        // the queued calls to it, then says `resolve`.
        held.resolve();
        net.pass(
            Dir::Down,
            &[
                "call q0 -> import 0 m0 []",
                "call q1 -> import 0 m0 []",
                "resolve 1 -> receiverHosted 0",
            ],
        )
        .await;
        assert_eq!(log.calls(), vec![0, 1]);
        // The client embargoes all the same, since calls it pipelined went
        // to that import (it cannot know they all came back already).
        calls.push(start_call(&promise, 2));
        net.settle().await;
        assert_eq!(log.calls(), vec![0, 1], "call 2 did not wait");
        let up = net.waiting(Dir::Up).await;
        assert_eq!(
            up.last().map(String::as_str),
            Some("disembargo senderLoopback 0 -> import 1"),
            "{up:?}"
        );
        assert!(!up.iter().any(|m| m.starts_with("call")), "{up:?}");
        net.flush().await;
        assert_eq!(log.calls(), vec![0, 1, 2]);
        assert_eq!(outcomes(calls).await, vec![0, 1, 2]);
        drop((promise, local));
    }
    net.end().await;
}

/// The other side of SCENARIO 17's rule (and seed 4331 of the
/// simulation): an import no call of ours went to needs no embargo when
/// the peer resolves it to our own object; calls go to it directly at
/// once, with no disembargo on the wire.
#[actix::test]
async fn scenario_17_an_import_never_called_resolves_to_our_object_without_an_embargo() {
    let held = Held::default();
    let net = Net::serving(held.clone());
    let log = Log::default();
    {
        let local = Probe::cap(&log);
        let promise = hold_through_bootstrap(&net, local.client()).await;
        net.pass(
            Dir::Down,
            &[
                "return a0 results [senderHosted 0]",
                "return a1 results [senderPromise 1]",
            ],
        )
        .await;
        held.resolve();
        net.pass(Dir::Down, &["resolve 1 -> receiverHosted 0"])
            .await;
        let calls = vec![start_call(&promise, 0)];
        net.settle().await;
        assert_eq!(log.calls(), vec![0], "called locally at once");
        net.no_call_goes_up().await;
        net.flush().await;
        assert_eq!(outcomes(calls).await, vec![0]);
        drop((promise, local));
    }
    net.end().await;
}

/// SCENARIO 13: the client pipelines M1 through an answer that turns out
/// to be its own object, then sends M2 on it: the client embargoes the
/// field (a disembargo on the promised answer), M2 waits in the client
/// until the server has forwarded M1 back and reflected the disembargo.
#[actix::test]
async fn scenario_13_a_pipelined_call_through_an_answer_that_is_our_own_object_keeps_order() {
    let net = Net::serving(support::Maker::default());
    let log = Log::default();
    {
        let local = Probe::cap(&log);
        let echoed = hold_through_bootstrap(&net, local.client()).await;
        let mut calls = vec![start_call(&echoed, 1)];
        net.pass(Dir::Up, &["call q2 -> answer 1.[0] m0 []"]).await;
        // The server answers with the client's own probe and forwards M1
        // to it; the client reads the return first.
        net.expect(
            Dir::Down,
            &[
                "return a0 results [senderHosted 0]",
                "return a1 results [receiverHosted 0]",
                "call q0 -> import 0 m0 []",
            ],
        )
        .await;
        net.deliver(Dir::Down, 2).await;
        calls.push(start_call(&echoed, 2));
        net.settle().await;
        assert!(log.calls().is_empty(), "M2 overtook M1");
        let up = net.waiting(Dir::Up).await;
        assert!(
            up.iter()
                .any(|m| m == "disembargo senderLoopback 0 -> answer 1.[0]"),
            "{up:?}"
        );
        assert!(!up.iter().any(|m| m.starts_with("call")), "{up:?}");
        // M1 arrives, then the disembargo goes up and comes back.
        net.deliver(Dir::Down, 1).await;
        assert_eq!(log.calls(), vec![1]);
        net.deliver(Dir::Up, up.len()).await;
        // (The client finished its question, so the server releases the
        // probe that was its answer.)
        net.pass(
            Dir::Down,
            &["disembargo receiverLoopback 0 -> import 0", "release 0 x1"],
        )
        .await;
        assert_eq!(log.calls(), vec![1, 2]);
        net.flush().await;
        assert_eq!(outcomes(calls).await, vec![1, 2]);
        drop((echoed, local));
    }
    net.end().await;
}

/// SCENARIO 24: once the target is broken, nothing waits and no
/// disembargo is sent: calls made on it fail with its error at once, and
/// those already sent fail too.
#[actix::test]
async fn scenario_24_a_broken_target_gets_no_disembargo_and_calls_fail_with_its_error() {
    let held = Held::default();
    let net = Net::serving(held.clone());
    let log = Log::default();
    {
        let local = Probe::cap(&log);
        let promise = hold_through_bootstrap(&net, local.client()).await;
        net.pass(
            Dir::Down,
            &[
                "return a0 results [senderHosted 0]",
                "return a1 results [senderPromise 1]",
            ],
        )
        .await;
        let sent = start_call(&promise, 0);
        net.settle().await;
        held.break_it("the promise broke");
        // (The server drops the probe it was given.)
        net.pass(Dir::Down, &["release 0 x1", "resolve 1 -> exception"])
            .await;
        let after = start_call(&promise, 1);
        net.settle().await;
        let up = net.waiting(Dir::Up).await;
        assert!(!up.iter().any(|m| m.starts_with("disembargo")), "{up:?}");
        assert_eq!(
            up.iter().filter(|m| m.starts_with("call")).count(),
            1,
            "only the call made before the resolve goes out: {up:?}"
        );
        net.flush().await;
        for c in [sent, after] {
            let e = c.await.unwrap().unwrap_err();
            assert!(e.to_string().contains("the promise broke"), "{e}");
        }
        assert!(log.calls().is_empty());
        drop((promise, local));
    }
    net.end().await;
}

/// The server's maker for `pair`: answers with the capabilities it was
/// made with (the second possibly absent).
struct Pairs {
    first: Cap<probe::Client>,
    second: Option<Cap<probe::Client>>,
}

impl maker::Server for Pairs {
    async fn pair(
        self: Rc<Self>,
        _: maker::PairParams,
        mut results: maker::PairResults,
    ) -> Result<(), capnp::Error> {
        let mut p = results.get().init_pair();
        p.set_first(self.first.client());
        if let Some(s) = &self.second {
            p.set_second(s.client());
        }
        Ok(())
    }
}

/// SCENARIOS 6 and 12: calls pipelined on two capabilities at different
/// pointer indexes of a nested result struct name each by its path; a
/// capability taken from the result keeps working after the client has
/// finished the question and dropped the result.
#[actix::test]
async fn scenario_06_and_12_nested_fields_by_path_and_a_field_outliving_its_result() {
    let server_log = Log::default();
    let net = Net::serving(Pairs {
        first: Probe::cap(&server_log),
        second: Some(Probe::cap(&server_log)),
    });
    {
        let maker = net.maker();
        let capnp::capability::RemotePromise { promise, pipeline } = maker.pair_request().send();
        let first = pipeline.get_pair().get_first();
        let second = pipeline.get_pair().get_second();
        let mut calls = vec![start_call(&second, 2), start_call(&first, 1)];
        net.pass(
            Dir::Up,
            &[
                "bootstrap q0",
                "call q1 -> answer 0 m0 []",
                "call q2 -> answer 1.[0.1] m0 []",
                "call q3 -> answer 1.[0.0] m0 []",
            ],
        )
        .await;
        net.expect(
            Dir::Down,
            &[
                "return a0 results [senderHosted 0]",
                "return a1 results [senderHosted 1, senderHosted 2]",
                "return a2 results []",
                "return a3 results []",
            ],
        )
        .await;
        net.flush().await;
        assert_eq!(server_log.calls(), vec![2, 1]);
        assert_eq!(outcomes(std::mem::take(&mut calls)).await, vec![2, 1]);
        // 6: take the first field out of the result, drop the result.
        let response = promise.await.unwrap();
        let kept = response
            .get()
            .unwrap()
            .get_pair()
            .unwrap()
            .get_first()
            .unwrap();
        drop((response, pipeline, first, second, maker));
        // The second field and the maker are released; the first is kept.
        net.pass(Dir::Up, &["release 2 x1", "release 0 x1"]).await;
        net.flush().await;
        calls.push(start_call(&kept, 3));
        net.pass(Dir::Up, &["call q0 -> import 1 m0 []"]).await;
        net.flush().await;
        assert_eq!(outcomes(calls).await, vec![3]);
        assert_eq!(server_log.calls(), vec![2, 1, 3]);
        drop(kept);
    }
    net.end().await;
    assert_eq!(server_log.released(), 2);
}

/// SCENARIOS 16 and 26: a call pipelined on a field the result turns out
/// not to have fails (the server answers it with an error), a call made
/// on that field after the return fails at once without going out, and
/// no embargo is ever started for it.
#[actix::test]
async fn scenario_16_and_26_a_pipelined_call_on_an_absent_field_fails_without_an_embargo() {
    let server_log = Log::default();
    let net = Net::serving(Pairs {
        first: Probe::cap(&server_log),
        second: None,
    });
    {
        let maker = net.maker();
        let pair = maker.pair_request().send();
        let second = pair.pipeline.get_pair().get_second();
        let before = start_call(&second, 1);
        net.pass(
            Dir::Up,
            &[
                "bootstrap q0",
                "call q1 -> answer 0 m0 []",
                "call q2 -> answer 1.[0.1] m0 []",
            ],
        )
        .await;
        net.pass(
            Dir::Down,
            &[
                "return a0 results [senderHosted 0]",
                "return a1 results [senderHosted 1]",
                "return a2 exception",
            ],
        )
        .await;
        assert!(before.await.unwrap().is_err());
        let after = start_call(&second, 2);
        net.settle().await;
        net.no_call_goes_up().await;
        assert!(after.await.unwrap().is_err());
        assert!(server_log.calls().is_empty());
        drop((second, pair, maker));
    }
    net.end().await;
}

/// SCENARIO 19: the client sends its own local promise to the server,
/// which hands it back as the answer; M1, pipelined on the answer, goes
/// to the server and comes back into the promise's queue. The answer is
/// the client's own promise, so M2 waits behind an embargo, then joins the
/// same queue; once the promise resolves to a local object, M1 and M2 run
/// in order (no `resolve` goes out: the server no longer holds the
/// promise).
#[actix::test]
async fn scenario_19_our_promise_handed_back_then_resolved_to_a_local_object_keeps_order() {
    let net = Net::serving(support::Maker::default());
    let log = Log::default();
    {
        let (promise, resolver) = Cap::<probe::Client>::promise();
        let maker = net.maker();
        let mut req = maker.hold_request();
        req.get().set_probe(promise.client());
        let held = req.send();
        let back = held.pipeline.get_probe();
        let mut calls = vec![start_call(&back, 1)];
        net.pass(
            Dir::Up,
            &[
                "bootstrap q0",
                "call q1 -> answer 0 m1 [senderPromise 0]",
                "call q2 -> answer 1.[0] m0 []",
            ],
        )
        .await;
        // The server answers with the client's promise and forwards M1 to
        // it.
        net.pass(
            Dir::Down,
            &[
                "return a0 results [senderHosted 0]",
                "return a1 results [receiverHosted 0]",
                "call q0 -> import 0 m0 []",
            ],
        )
        .await;
        calls.push(start_call(&back, 2));
        net.settle().await;
        let up = net.waiting(Dir::Up).await;
        assert!(
            up.iter()
                .any(|m| m == "disembargo senderLoopback 0 -> answer 1.[0]"),
            "{up:?}"
        );
        assert!(!up.iter().any(|m| m.starts_with("call")), "{up:?}");
        net.flush().await;
        assert!(log.calls().is_empty(), "nothing runs before the resolution");
        resolver.resolve_to(Probe::cap(&log).raw().clone());
        net.settle().await;
        assert_eq!(log.calls(), vec![1, 2]);
        // Only M1's return goes back to the server: it released its
        // import of the promise when the client finished the question, so
        // no `resolve` is due.
        net.expect(Dir::Up, &["return a0 results []"]).await;
        net.flush().await;
        assert_eq!(outcomes(calls).await, vec![1, 2]);
        drop((back, held, maker, promise));
    }
    net.end().await;
    assert_eq!(log.released(), 1);
}

/// The server's maker for SCENARIO 14: `hold(m)` treats `m` as a maker,
/// calls its `pair()`, and answers with that call's first field,
/// pipelined: a promised answer of the caller's own.
struct ViaPair;

impl maker::Server for ViaPair {
    async fn hold(
        self: Rc<Self>,
        params: maker::HoldParams,
        mut results: maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        let given: Cap<probe::Client> = Cap::from_client(&params.get()?.get_probe()?);
        let theirs: maker::Client = given.cast::<maker::Client>().client();
        results.get().set_probe(first_of_their_pair(&theirs));
        Ok(())
    }
}

/// The first field of `theirs.pair()`, pipelined.
fn first_of_their_pair(theirs: &maker::Client) -> probe::Client {
    theirs.pair_request().send().pipeline.get_pair().get_first()
}

/// SCENARIO 14: M1 is pipelined through an answer that turns out to be a
/// promised answer of the client's own (the server answers with a field
/// of a call it made on the client). The client embargoes the field, the
/// server reflects the disembargo through its own question to the client,
/// and M2 runs after M1.
#[actix::test]
async fn scenario_14_an_answer_that_is_our_own_promised_answer_keeps_order() {
    let net = Net::serving(ViaPair);
    let log = Log::default();
    {
        let (local_maker, answer_pair) = support::maker_with_pair();
        let local_maker: Cap<maker::Client> = Cap::new(local_maker);
        let as_probe: Cap<probe::Client> = local_maker.clone().cast();
        let back = hold_through_bootstrap(&net, as_probe.client()).await;
        let mut calls = vec![start_call(&back, 1)];
        net.pass(Dir::Up, &["call q2 -> answer 1.[0] m0 []"]).await;
        // The server calls pair() on the client's maker, answers hold with
        // its first field, and forwards M1 there; the client reads all but
        // the forwarded M1.
        net.expect(
            Dir::Down,
            &[
                "return a0 results [senderHosted 0]",
                "call q0 -> import 0 m0 []",
                "release 0 x1",
                "return a1 results [receiverAnswer 0.[0.0]]",
                "call q1 -> answer 0.[0.0] m0 []",
            ],
        )
        .await;
        net.deliver(Dir::Down, 4).await;
        // The field is the client's own: embargo, and M2 waits.
        calls.push(start_call(&back, 2));
        net.pass(
            Dir::Up,
            &[
                "finish q0",
                "disembargo senderLoopback 0 -> answer 1.[0]",
                "finish q1",
                "release 0 x1",
            ],
        )
        .await;
        // The server reflects the disembargo through its question, behind
        // M1.
        net.pass(
            Dir::Down,
            &[
                "call q1 -> answer 0.[0.0] m0 []",
                "disembargo receiverLoopback 0 -> answer 0.[0.0]",
            ],
        )
        .await;
        net.flush().await;
        assert!(log.calls().is_empty(), "pair() has not answered yet");
        answer_pair
            .send((Probe::cap(&log), Probe::cap(&Log::default())))
            .ok()
            .unwrap();
        net.flush().await;
        assert_eq!(log.calls(), vec![1, 2]);
        assert_eq!(outcomes(calls).await, vec![1, 2]);
        drop((back, as_probe, local_maker));
    }
    net.end().await;
}

/// The server's maker for SCENARIOS 18 and 20: `hold` as [`Held`], and
/// `pair` answering with a probe of the server's.
struct HeldAndPair {
    held: Held,
    first: Cap<probe::Client>,
}

impl maker::Server for HeldAndPair {
    async fn hold(
        self: Rc<Self>,
        params: maker::HoldParams,
        results: maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        maker::Server::hold(Rc::new(self.held.clone()), params, results).await
    }

    async fn pair(
        self: Rc<Self>,
        _: maker::PairParams,
        mut results: maker::PairResults,
    ) -> Result<(), capnp::Error> {
        results.get().init_pair().set_first(self.first.client());
        Ok(())
    }
}

/// Where SCENARIOS 18/20 and 28a start: the server's maker answers `hold`
/// with its own promise S (see [`Held`]); the client has fetched R, the
/// server's probe, through `pair()`, sent its local promise P in `hold`,
/// and pipelined M1 on the answer; the server has answered with S, which
/// holds M1, and the client has finished the question.
struct Bounce {
    net: Net,
    held: Held,
    r_log: Log,
    maker: maker::Client,
    r: probe::Client,
    p: Cap<probe::Client>,
    resolve_p: Resolver,
    hold: capnp::capability::RemotePromise<maker::hold_results::Owned>,
    back: probe::Client,
    calls: Vec<tokio::task::JoinHandle<Result<u64, capnp::Error>>>,
}

async fn bounce() -> Bounce {
    let held = Held::default();
    let r_log = Log::default();
    let net = Net::serving(HeldAndPair {
        held: held.clone(),
        first: Probe::cap(&r_log),
    });
    let maker = net.maker();
    let r = first_of_pair(&net, &maker).await;
    let (p, resolve_p) = Cap::<probe::Client>::promise();
    let mut req = maker.hold_request();
    req.get().set_probe(p.client());
    let hold = req.send();
    let back = hold.pipeline.get_probe();
    let calls = vec![start_call(&back, 1)];
    net.pass(
        Dir::Up,
        &[
            "call q0 -> import 0 m1 [senderPromise 0]",
            "call q1 -> answer 0.[0] m0 []",
        ],
    )
    .await;
    net.pass(Dir::Down, &["return a0 results [senderPromise 2]"])
        .await;
    net.pass(Dir::Up, &["finish q0"]).await;
    Bounce {
        net,
        held,
        r_log,
        maker,
        r,
        p,
        resolve_p,
        hold,
        back,
        calls,
    }
}

/// SCENARIOS 18 and 20: M1 bounces client -> server -> client -> server.
/// The client's promise P goes to the server, whose answer is its own
/// promise S; S resolves to P (M1 comes back to the client), then P
/// resolves to the server's object R (M1 goes back to the server). Each
/// side learns that a promise it called resolved to one of its own, so
/// both embargo, and M2, made after the client's embargo started, reaches
/// R after M1.
#[actix::test]
async fn scenario_18_and_20_both_sides_embargo_when_calls_bounce_back() {
    let Bounce {
        net,
        held,
        r_log: server_log,
        maker,
        r,
        p,
        resolve_p,
        hold,
        back,
        mut calls,
    } = bounce().await;
    {
        // S resolves to P: M1 comes back to the client, into P's queue,
        // and the client embargoes its import of S (it pipelined M1 on
        // it): M2 waits in the client.
        held.resolve();
        net.pass(
            Dir::Down,
            &["call q0 -> import 0 m0 []", "resolve 2 -> receiverHosted 0"],
        )
        .await;
        calls.push(start_call(&back, 2));
        net.expect(Dir::Up, &["disembargo senderLoopback 0 -> import 2"])
            .await;
        // P resolves to R: M1 goes back to the server, and the server
        // hears that P is its own R.
        resolve_p.resolve_to(Cap::<probe::Client>::from_client(&r).raw().clone());
        net.pass(
            Dir::Up,
            &[
                "disembargo senderLoopback 0 -> import 2",
                "call q0 -> import 1 m0 []",
                "resolve 0 -> receiverHosted 1",
            ],
        )
        .await;
        assert_eq!(server_log.calls(), vec![1]);
        // The server reflects the client's disembargo (through S to P),
        // and embargoes its own import of P, which S forwarded M1 to.
        net.expect(
            Dir::Down,
            &[
                "disembargo receiverLoopback 0 -> import 0",
                "return a0 results []",
                "disembargo senderLoopback 0 -> import 0",
            ],
        )
        .await;
        net.flush().await;
        assert_eq!(server_log.calls(), vec![1, 2]);
        assert_eq!(outcomes(calls).await, vec![1, 2]);
        drop((back, hold, p, r));
        drop(maker);
    }
    net.end().await;
}

/// SCENARIO 8, after a bootstrap has returned: a call made on the
/// bootstrap capability (whose first calls were pipelined on the
/// bootstrap question) still lets calls pipelined on *its* answer go out
/// at once as promised-answer calls, rather than wait for its return.
#[actix::test]
async fn scenario_08_pipelining_on_a_call_made_through_a_resolved_bootstrap() {
    let net = Net::serving(support::Maker::default());
    let log = Log::default();
    {
        let local = Probe::cap(&log);
        let maker = net.maker();
        // A first call pipelined on the bootstrap question.
        let mut req = maker.hold_request();
        req.get().set_probe(local.client());
        let first = req.send();
        net.flush().await;
        drop(first);
        net.flush().await;
        // Then a call on the (now returned) bootstrap, and a call
        // pipelined on its answer.
        let mut req = maker.hold_request();
        req.get().set_probe(local.client());
        let second = req.send();
        let calls = vec![start_call(&second.pipeline.get_probe(), 1)];
        net.expect(
            Dir::Up,
            &[
                "call q0 -> import 0 m1 [senderHosted 0]",
                "call q1 -> answer 0.[0] m0 []",
            ],
        )
        .await;
        net.flush().await;
        assert_eq!(outcomes(calls).await, vec![1]);
        assert_eq!(log.calls(), vec![1]);
        drop((second, maker, local));
    }
    net.end().await;
}

/// SCENARIO 25: a broken capability passed in a call goes out as a
/// promise and its `resolve` to the error; the server echoes it back; a
/// call pipelined on the echo fails with the error, and no disembargo is
/// sent by either side.
#[actix::test]
async fn scenario_25_a_broken_capability_echoed_back_gets_no_embargo() {
    let net = Net::serving(support::Maker::default());
    {
        let broken: Cap<probe::Client> = Cap::from_raw(CapRef::broken(capnp::Error::failed(
            "broken on purpose".into(),
        )));
        let maker = net.maker();
        let mut req = maker.hold_request();
        req.get().set_probe(broken.client());
        let held = req.send();
        let m1 = start_call(&held.pipeline.get_probe(), 1);
        net.expect(
            Dir::Up,
            &[
                "bootstrap q0",
                "call q1 -> answer 0 m1 [senderPromise 0]",
                "resolve 0 -> exception",
                "call q2 -> answer 1.[0] m0 []",
            ],
        )
        .await;
        let seen = net.flush_seen().await;
        assert!(
            !seen.iter().any(|m| m.starts_with("disembargo")),
            "{seen:?}"
        );
        let e = m1.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("broken on purpose"), "{e}");
        let m2 = start_call(&held.pipeline.get_probe(), 2);
        net.settle().await;
        assert!(
            net.waiting(Dir::Up).await.is_empty(),
            "a call on a broken cap went out"
        );
        let e = m2.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("broken on purpose"), "{e}");
        drop((held, maker, broken));
    }
    net.end().await;
}

/// The server's maker for a field of a failed call passed back: `pair`
/// answers with a broken capability as its first; `hold` keeps the probe
/// it is given, for the test to look at, and answers with nothing.
#[derive(Clone, Default)]
struct Keeper(Rc<RefCell<Vec<CapRef>>>);

impl maker::Server for Keeper {
    async fn pair(
        self: Rc<Self>,
        _: maker::PairParams,
        mut results: maker::PairResults,
    ) -> Result<(), capnp::Error> {
        let broken: Cap<probe::Client> = Cap::from_raw(CapRef::broken(capnp::Error::failed(
            "broken on purpose".into(),
        )));
        results.get().init_pair().set_first(broken.client());
        Ok(())
    }

    async fn hold(
        self: Rc<Self>,
        params: maker::HoldParams,
        _: maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        let given: Cap<probe::Client> = Cap::from_client(&params.get()?.get_probe()?);
        self.0.borrow_mut().push(given.raw().clone());
        Ok(())
    }
}

/// A call on a capability the server exported broken (as a promise whose
/// `resolve` to the exception has not reached the client yet) is answered
/// by the server's core at once with an exception. A second call passes
/// a field of the first's results back (`receiverAnswer`) while that
/// answer is live: it reaches the server's maker with a broken capability
/// carrying the first call's error, instead of failing as a whole.
#[actix::test]
async fn a_field_of_a_call_on_a_broken_export_arrives_as_a_broken_capability() {
    let keeper = Keeper::default();
    let net = Net::serving(keeper.clone());
    {
        let maker = net.maker();
        let pair = maker.pair_request().send();
        net.pass(Dir::Up, &["bootstrap q0", "call q1 -> answer 0 m0 []"])
            .await;
        // The broken capability goes out as a promise, resolved to its
        // error right behind; the client reads the returns only.
        net.expect(
            Dir::Down,
            &[
                "return a0 results [senderHosted 0]",
                "return a1 results [senderPromise 1]",
                "resolve 1 -> exception",
            ],
        )
        .await;
        net.deliver(Dir::Down, 2).await;
        let response = pair.promise.await.unwrap();
        let first = response
            .get()
            .unwrap()
            .get_pair()
            .unwrap()
            .get_first()
            .unwrap();
        let broken = Cap::<probe::Client>::from_client(&first)
            .cast::<maker::Client>()
            .client();
        drop((first, response));
        // Call 0 on the broken capability, and call 1 passing field 0 of
        // call 0's results to the server's maker (the finished bootstrap
        // and pair questions free their ids for them).
        let call0 = broken.hold_request().send();
        let mut req = maker.hold_request();
        req.get().set_probe(call0.pipeline.get_probe());
        let call1 = req.send();
        net.pass(
            Dir::Up,
            &[
                "finish q0",
                "finish q1",
                "call q0 -> import 1 m1 []",
                "call q1 -> import 0 m1 [receiverAnswer 0.[0]]",
            ],
        )
        .await;
        // The server's core answers call 0 as it reads it; call 1 reaches
        // the maker and is answered.
        net.pass(
            Dir::Down,
            &[
                "resolve 1 -> exception",
                "return a0 exception",
                "return a1 results []",
            ],
        )
        .await;
        let e = call0.promise.await.err().expect("call 0 fails");
        assert!(e.to_string().contains("call on a broken capability"), "{e}");
        call1.promise.await.expect("call 1 reaches the maker");
        let given = keeper.0.borrow_mut().drain(..).collect::<Vec<_>>();
        let [given] = given.as_slice() else {
            panic!("the maker got {} probes", given.len())
        };
        let held = given.broken_error().expect("a broken capability");
        assert_eq!(held.to_string(), e.to_string());
        drop((pair.pipeline, call0.pipeline, call1.pipeline, broken, maker));
        // The server keeps both answers until the client's finishes.
        let server = net.server.as_ref().unwrap();
        let (tables, dump) = server.inspect().await.unwrap();
        assert_eq!(tables.answers, 2, "{dump}");
        // The client finishes both questions and releases both imports.
        net.pass(
            Dir::Up,
            &["finish q0", "finish q1", "release 1 x1", "release 0 x1"],
        )
        .await;
    }
    net.end().await;
}

/// SCENARIO 34: calls pipelined on a local call's answer queue until it
/// returns; when the answer turns out to be a remote capability, they go
/// to it in order, and a call made afterwards goes behind them.
#[actix::test]
async fn scenario_34_a_local_answer_resolved_to_a_remote_one_flushes_queued_calls_in_order() {
    let server_log = Log::default();
    let net = Net::serving(Pairs {
        first: Probe::cap(&server_log),
        second: None,
    });
    {
        let maker = net.maker();
        let remote = first_of_pair(&net, &maker).await;
        // A local maker whose pair() the test answers later.
        let (local_maker, answer_pair) = support::maker_with_pair();
        let local_maker: Cap<maker::Client> = Cap::new(local_maker);
        let local_pair = local_maker.client().pair_request().send();
        let first = local_pair.pipeline.get_pair().get_first();
        let mut calls = vec![start_call(&first, 1), start_call(&first, 2)];
        net.settle().await;
        assert!(
            net.waiting(Dir::Up).await.is_empty(),
            "nothing goes out yet"
        );
        answer_pair
            .send((Cap::from_client(&remote), Probe::cap(&Log::default())))
            .ok()
            .unwrap();
        calls.push(start_call(&first, 3));
        net.expect(
            Dir::Up,
            &[
                "call q0 -> import 1 m0 []",
                "call q1 -> import 1 m0 []",
                "call q2 -> import 1 m0 []",
            ],
        )
        .await;
        net.flush().await;
        assert_eq!(server_log.calls(), vec![1, 2, 3]);
        assert_eq!(outcomes(calls).await, vec![1, 2, 3]);
        drop((first, local_pair, local_maker, remote, maker));
    }
    net.end().await;
}

/// A call made on a local promise waits in it, and calls pipelined on that
/// call wait in its answer's queue; when the promise resolves to the
/// peer's capability, the call goes out and the queued calls follow it at
/// once, pipelined on its question, without waiting for its return (as a
/// call pipelined on it afterwards does). They used to wait for the
/// return, and with them any disembargo the peer sent through them, which
/// could wait for ever (simulation seed 197).
#[actix::test]
async fn calls_queued_on_a_call_through_a_local_promise_follow_it_to_the_peer() {
    let server_log = Log::default();
    let net = Net::serving(Pairs {
        first: Probe::cap(&server_log),
        second: None,
    });
    {
        let maker = net.maker();
        let remote = first_of_pair(&net, &maker).await;
        let (promise, resolver) = Cap::<maker::Client>::promise();
        let pair = promise.client().pair_request().send();
        let first = pair.pipeline.get_pair().get_first();
        let mut calls = vec![start_call(&first, 1), start_call(&first, 2)];
        net.settle().await;
        assert!(
            net.waiting(Dir::Up).await.is_empty(),
            "nothing goes out yet"
        );
        resolver.resolve_to(Cap::from_client(&maker).raw().clone());
        net.settle().await;
        calls.push(start_call(&first, 3));
        net.expect(
            Dir::Up,
            &[
                "call q0 -> import 0 m0 []",
                "call q1 -> answer 0.[0.0] m0 []",
                "call q2 -> answer 0.[0.0] m0 []",
                "call q3 -> answer 0.[0.0] m0 []",
            ],
        )
        .await;
        net.flush().await;
        assert_eq!(server_log.calls(), vec![1, 2, 3]);
        assert_eq!(outcomes(calls).await, vec![1, 2, 3]);
        drop((first, pair, promise, remote, maker));
    }
    net.end().await;
}

/// A scripted server for SCENARIO 21: a bare protocol core that the test
/// drives by hand, so that it can send what our own vats never send (a
/// `resolve` of one promise to another promise).
struct Script {
    core: capnp_actix::proto::captp::Conn<u32>,
    up: Wire,
    down: Wire,
}

impl Script {
    /// Reads every frame the client has sent; gives the core's events.
    fn read(&mut self) -> Vec<capnp_actix::proto::captp::Event<u32>> {
        while let Some(f) = self.up.take() {
            self.core.receive(&f);
        }
        let mut events = Vec::new();
        while let Some(e) = self.core.next_event() {
            events.push(e);
        }
        events
    }

    /// Writes what the core has to send.
    fn write(&mut self) {
        let out = self.core.take_output();
        self.down.inject(&out);
    }
}

/// SCENARIO 21, against a peer that resolves a chain one step at a time:
/// the client calls the peer's promise S1; S1 resolves to the peer's
/// promise S2 (no embargo: the path stays on the connection), then S2 to
/// the client's own probe. The call sent to S1 is still coming back
/// through the peer, so the client embargoes S2, although it never
/// called S2 itself: calls on S1 count as calls on what S1 resolved to.
#[actix::test]
async fn scenario_21_a_chain_resolved_step_by_step_embargoes_where_it_ends_at_our_object() {
    use capnp_actix::proto::captp::{
        CallTarget, Conn, ConnLimits, Event, InCap, OutCap, OutContent, OutTarget,
    };
    let activity = Activity::default();
    let (client_end, server_end, up, down) = wire::pair(&activity);
    drop(server_end);
    let client = start_connection(client_end, ConnectionOptions::default());
    let mut script = Script {
        core: Conn::new(ConnLimits::default(), capnp_actix::proto::Limits::default()),
        up: up.clone(),
        down: down.clone(),
    };
    let net = Net {
        activity,
        up,
        down,
        client,
        server: None,
    };
    let log = Log::default();
    {
        let local = Probe::cap(&log);
        let maker = net.maker();
        let mut req = maker.hold_request();
        req.get().set_probe(local.client());
        let held = req.send();
        let promise = held.pipeline.get_probe();
        net.expect(
            Dir::Up,
            &["bootstrap q0", "call q1 -> answer 0 m1 [senderHosted 0]"],
        )
        .await;
        // The script answers the bootstrap with its object 1 and `hold`
        // with its promise 10.
        for e in script.read() {
            match e {
                Event::Bootstrap { answer, .. } => {
                    let m = capnp_actix::proto::content::cap_root_message();
                    script.core.return_results(
                        answer,
                        OutContent::Reader(m.get_root_as_reader().unwrap()),
                        &[OutCap::Local(1)],
                    );
                }
                Event::Call { answer, params, .. } => {
                    assert!(matches!(
                        params.caps.as_slice(),
                        [InCap::Import { id: 0, .. }]
                    ));
                    let mut results = capnp::message::Builder::new_default();
                    {
                        let mut table = Vec::new();
                        let mut root: capnp::any_pointer::Builder<'_> = results.init_root();
                        capnp::traits::ImbueMut::imbue_mut(&mut root, &mut table);
                        let stand_in: probe::Client =
                            capnp_rpc::new_client(Probe::new(&Log::default()));
                        root.init_as::<maker::hold_results::Builder<'_>>()
                            .set_probe(stand_in);
                    }
                    script.core.return_results(
                        answer,
                        OutContent::Reader(results.get_root_as_reader().unwrap()),
                        &[OutCap::Promise(10)],
                    );
                }
                _ => {}
            }
        }
        script.write();
        net.pass(
            Dir::Down,
            &[
                "return a0 results [senderHosted 0]",
                "return a1 results [senderPromise 1]",
            ],
        )
        .await;
        // M1 goes to S1.
        let mut calls = vec![start_call(&promise, 1)];
        net.expect(
            Dir::Up,
            &["finish q0", "finish q1", "call q0 -> import 1 m0 []"],
        )
        .await;
        let mut m1 = None;
        for e in script.read() {
            if let Event::Call {
                answer,
                target: CallTarget::Local(10),
                interface_id,
                method_id,
                params,
            } = e
            {
                let mut m = capnp::message::Builder::new_default();
                m.set_root(params.content().unwrap()).unwrap();
                m1 = Some((answer, interface_id, method_id, m));
            }
        }
        let (m1_answer, iid, mid, m1_params) = m1.expect("M1 reached the script");
        // S1 -> S2 (a new promise), then S2 -> the client's probe.
        script.core.resolve_export(1, &10, OutCap::Promise(20));
        script.write();
        net.pass(Dir::Down, &["resolve 1 -> senderPromise 2"]).await;
        script.core.resolve_export(2, &20, OutCap::Import(0));
        script.write();
        net.pass(Dir::Down, &["resolve 2 -> receiverHosted 0"])
            .await;
        // M2 waits behind an embargo on S2.
        calls.push(start_call(&promise, 2));
        net.expect(Dir::Up, &["disembargo senderLoopback 0 -> import 2"])
            .await;
        assert!(log.calls().is_empty(), "M2 overtook M1");
        let mut embargo = None;
        for e in script.read() {
            if let Event::Loopback { embargo: id, .. } = e {
                embargo = Some(id);
            }
        }
        // The script forwards M1 to the probe, then reflects.
        let q = script
            .core
            .call(
                &OutTarget::Import(0),
                iid,
                mid,
                OutContent::Reader(m1_params.get_root_as_reader().unwrap()),
                &[],
            )
            .unwrap();
        script
            .core
            .disembargo_reply(embargo.expect("the script got the disembargo"), 0);
        script.write();
        net.pass(
            Dir::Down,
            &[
                "call q0 -> import 0 m0 []",
                "disembargo receiverLoopback 0 -> import 0",
            ],
        )
        .await;
        assert_eq!(log.calls(), vec![1, 2]);
        // The script passes M1's results back to the client; then
        // everything is released and finished.
        drop((promise, held, maker, local));
        script.core.release_import(0);
        for _ in 0..10 {
            net.settle().await;
            for e in script.read() {
                if let Event::Return {
                    question,
                    result: Ok(payload),
                    ..
                } = e
                {
                    assert_eq!(question, q);
                    script
                        .core
                        .return_results(m1_answer, payload.content().unwrap(), &[]);
                }
            }
            script.write();
            while net.down.deliver_one() {
                net.settle().await;
            }
        }
        assert_eq!(outcomes(calls).await, vec![1, 2]);
        let t = script.core.table_sizes();
        assert_eq!(
            t.questions + t.answers + t.exports + t.imports + t.embargoes,
            0,
            "script tables not empty:\n{}",
            script.core.dump()
        );
    }
    net.end().await;
}

/// SCENARIO 28a, the Tribble race: the client's promise X goes to the
/// server, whose answer S is a promise; X resolves to the server's object
/// R while S resolves to X. The server's `resolve` of S names X (the step
/// it knows), which by then points back at the server: the client still
/// embargoes S, and M2 reaches R after M1, which went client -> server ->
/// client -> server.
#[actix::test]
async fn scenario_28a_tribble_race_a_resolve_naming_our_promise_that_points_back_is_embargoed() {
    let Bounce {
        net,
        held,
        r_log,
        maker,
        r,
        p: x,
        resolve_p: resolve_x,
        hold,
        back,
        mut calls,
    } = bounce().await;
    {
        // X -> R, not yet read by the server.
        resolve_x.resolve_to(Cap::<probe::Client>::from_client(&r).raw().clone());
        net.expect(Dir::Up, &["resolve 0 -> receiverHosted 1"])
            .await;
        // S -> X on the server, which does not know yet that X is R: M1
        // goes to X, and the resolve names X.
        held.resolve();
        net.pass(
            Dir::Down,
            &["call q0 -> import 0 m0 []", "resolve 2 -> receiverHosted 0"],
        )
        .await;
        // The client forwards M1 to R and embargoes S (its resolution, X,
        // leads back through the client); M2 waits.
        calls.push(start_call(&back, 2));
        net.pass(
            Dir::Up,
            &[
                "resolve 0 -> receiverHosted 1",
                "call q0 -> import 1 m0 []",
                "disembargo senderLoopback 0 -> import 2",
            ],
        )
        .await;
        assert_eq!(r_log.calls(), vec![1]);
        // The server embargoes its import of X too (it forwarded M1 to
        // it, and X turned out to be its own R), and reflects the
        // client's disembargo; R answers M1 meanwhile.
        net.expect_unordered(
            Dir::Down,
            &[
                "disembargo senderLoopback 0 -> import 0",
                "disembargo receiverLoopback 0 -> import 0",
                "return a0 results []",
            ],
        )
        .await;
        net.flush().await;
        assert_eq!(r_log.calls(), vec![1, 2]);
        assert_eq!(outcomes(calls).await, vec![1, 2]);
        drop((back, hold, x, r, maker));
    }
    net.end().await;
}

/// The middle vat's maker for SCENARIO 28b: `hold` answers with a promise
/// that the test resolves to `third` (a capability of a third vat),
/// whatever it was given.
struct ToThird {
    third: CapRef,
    held: Held,
}

impl maker::Server for ToThird {
    async fn hold(
        self: Rc<Self>,
        _: maker::HoldParams,
        mut results: maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        results
            .get()
            .set_probe(self.held.promise_for(self.third.clone()));
        Ok(())
    }
}

/// SCENARIO 28b, three vats A - B - C: B's answer to A is a promise that
/// resolves to C's object, which B reaches through its own import. To A
/// the resolution is one of B's capabilities (B exports its proxy), so A
/// sends no disembargo that B would have to reject; B forwards M1 and M2
/// to C in order.
#[actix::test]
async fn scenario_28b_a_resolution_to_a_third_vat_needs_no_disembargo_and_keeps_order() {
    let c_log = Log::default();
    let c_probe = Probe::cap(&c_log);
    // B is the client of C...
    let bc = Net::new(c_probe.raw().clone());
    let c_at_b = bc.client.bootstrap(b"");
    let held = Held::default();
    // ... and the server of A.
    let ab = Net::serving(ToThird {
        third: c_at_b.clone(),
        held: held.clone(),
    });
    {
        let unused = Probe::cap(&Log::default());
        let back = hold_through_bootstrap(&ab, unused.client()).await;
        let mut calls = vec![start_call(&back, 1)];
        ab.pass(Dir::Up, &["call q2 -> answer 1.[0] m0 []"]).await;
        // (B drops the probe it was given at once.)
        ab.pass(
            Dir::Down,
            &[
                "return a0 results [senderHosted 0]",
                "release 0 x1",
                "return a1 results [senderPromise 1]",
            ],
        )
        .await;
        // B's promise resolves to C's object: M1 goes on to C (pipelined
        // on B's bootstrap question to C).
        held.resolve();
        bc.pass(Dir::Up, &["bootstrap q0", "call q1 -> answer 0 m0 []"])
            .await;
        assert_eq!(c_log.calls(), vec![1]);
        // Once C's object is settled at B, A hears of B's proxy for it.
        bc.flush().await;
        ab.pass(
            Dir::Down,
            &["resolve 1 -> senderHosted 2", "return a2 results []"],
        )
        .await;
        calls.push(start_call(&back, 2));
        let up = ab.waiting(Dir::Up).await;
        assert!(!up.iter().any(|m| m.starts_with("disembargo")), "{up:?}");
        assert!(
            up.contains(&"call q0 -> import 2 m0 []".to_string()),
            "{up:?}"
        );
        ab.deliver(Dir::Up, up.len()).await;
        // B forwards M2 to C.
        let up = bc.waiting(Dir::Up).await;
        assert!(up.iter().any(|m| m.starts_with("call")), "{up:?}");
        bc.flush().await;
        assert_eq!(c_log.calls(), vec![1, 2]);
        ab.flush().await;
        assert_eq!(outcomes(calls).await, vec![1, 2]);
        drop((back, unused));
    }
    ab.close().await;
    drop((ab, c_at_b, c_probe));
    bc.end().await;
}

/// SCENARIO 27: a local promise, called before and after it resolves to
/// the server's bootstrap capability (itself not answered yet): the
/// queued calls go out pipelined on the bootstrap question, in order,
/// followed by later calls on the promise and on the bootstrap itself.
#[actix::test]
async fn scenario_27_a_local_promise_resolved_to_the_unanswered_bootstrap_forwards_in_order() {
    let log = Log::default();
    let net = Net::new(Probe::cap(&log).raw().clone());
    {
        let (promise, resolver) = Cap::<probe::Client>::promise();
        let p = promise.client();
        let mut calls = vec![start_call(&p, 0), start_call(&p, 1)];
        net.settle().await;
        assert!(net.waiting(Dir::Up).await.is_empty());
        let bootstrap = net.client.bootstrap(b"");
        resolver.resolve_to(bootstrap.clone());
        calls.push(start_call(&p, 2));
        let direct: Cap<probe::Client> = Cap::from_raw(bootstrap);
        calls.push(start_call(&direct.client(), 3));
        net.pass(
            Dir::Up,
            &[
                "bootstrap q0",
                "call q1 -> answer 0 m0 []",
                "call q2 -> answer 0 m0 []",
                "call q3 -> answer 0 m0 []",
                "call q4 -> answer 0 m0 []",
            ],
        )
        .await;
        assert_eq!(log.calls(), vec![0, 1, 2, 3]);
        net.flush().await;
        // After the return: the import, directly.
        calls.push(start_call(&p, 4));
        net.expect(Dir::Up, &["call q0 -> import 0 m0 []"]).await;
        net.flush().await;
        assert_eq!(log.calls(), vec![0, 1, 2, 3, 4]);
        assert_eq!(outcomes(calls).await, vec![0, 1, 2, 3, 4]);
        drop((p, promise, direct));
    }
    net.end().await;
}

/// SCENARIO 33: a handle to an import is released while a local promise
/// resolved to the same import still forwards to it: no `release` goes
/// out until the promise goes too, and calls through the promise still
/// reach the import.
#[actix::test]
async fn scenario_33_a_released_handle_leaves_its_import_to_a_promise_forwarding_through_it() {
    let log = Log::default();
    let net = Net::new(Probe::cap(&log).raw().clone());
    {
        let import: Cap<probe::Client> = Cap::from_raw(net.client.bootstrap(b""));
        let mut calls = vec![start_call(&import.client(), 0)];
        net.flush().await;
        let (promise, resolver) = Cap::<probe::Client>::promise();
        resolver.resolve_to(import.raw().clone());
        drop(import);
        net.settle().await;
        assert!(net.waiting(Dir::Up).await.is_empty(), "released too early");
        calls.push(start_call(&promise.client(), 1));
        net.pass(Dir::Up, &["call q0 -> import 0 m0 []"]).await;
        net.flush().await;
        drop(promise);
        net.pass(Dir::Up, &["release 0 x1"]).await;
        assert_eq!(log.calls(), vec![0, 1]);
        assert_eq!(outcomes(calls).await, vec![0, 1]);
    }
    net.end().await;
}

/// A maker whose `hold(probe)` answers with the probe it was given, but
/// only once the test opens its gate: a call blocked in its callee.
struct Gated(RefCell<Option<oneshot::Receiver<()>>>);

impl Gated {
    /// The maker, and the gate's key.
    fn new() -> (Gated, oneshot::Sender<()>) {
        let (open, gate) = oneshot::channel();
        (Gated(RefCell::new(Some(gate))), open)
    }
}

impl maker::Server for Gated {
    async fn hold(
        self: Rc<Self>,
        params: maker::HoldParams,
        mut results: maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        let gate = self.0.borrow_mut().take();
        if let Some(g) = gate {
            let _ = g.await;
        }
        results.get().set_probe(params.get()?.get_probe()?);
        Ok(())
    }
}

/// SCENARIO 28: the client's own probe goes to the server in `hold`,
/// which blocks until the test opens its gate, then answers with that
/// probe; the client pings the capability pipelined on the answer while
/// the path shortens from "through the server" to "local". Ping 0, made
/// while the call is blocked, waits in the server and comes back with
/// the return; ping 1, made after the return but before the disembargo
/// is reflected, waits in the client; ping 2, made after, goes to the
/// probe directly. The probe sees 0, 1, 2.
#[actix::test]
async fn scenario_28_fetched_back_through_a_blocked_call_and_pinged_while_the_path_shortens() {
    let (gated, open) = Gated::new();
    let net = Net::serving(gated);
    let log = Log::default();
    {
        let local = Probe::cap(&log);
        let (maker, pending) = send_hold(&net, local.client()).await;
        let held = pending.pipeline.get_probe();
        // The bootstrap returns; `hold` blocks in the server.
        net.pass(Dir::Down, &["return a0 results [senderHosted 0]"])
            .await;
        // Ping 0, before the return: pipelined on the question, it waits
        // in the server behind the blocked call.
        let mut calls = vec![start_call(&held, 0)];
        net.pass(Dir::Up, &["finish q0", "call q0 -> answer 1.[0] m0 []"])
            .await;
        net.expect(Dir::Down, &[]).await;
        // The gate opens: the server answers with the client's own probe,
        // then forwards ping 0 to it.
        open.send(()).unwrap();
        net.expect(
            Dir::Down,
            &[
                "return a1 results [receiverHosted 0]",
                "call q0 -> import 0 m0 []",
            ],
        )
        .await;
        net.deliver(Dir::Down, 1).await;
        // Ping 1, after the return: the answer is the client's own probe,
        // but ping 0 is still on its way back, so the client embargoes
        // the field and holds ping 1.
        calls.push(start_call(&held, 1));
        net.expect(
            Dir::Up,
            &["disembargo senderLoopback 0 -> answer 1.[0]", "finish q1"],
        )
        .await;
        assert!(log.calls().is_empty(), "ping 1 overtook ping 0");
        // Ping 0 arrives; ping 1 still waits for the disembargo.
        net.deliver(Dir::Down, 1).await;
        assert_eq!(log.calls(), vec![0]);
        // The server reflects the disembargo (behind ping 0, which went
        // down before it); ping 1 goes once it is back.
        net.deliver(Dir::Up, 2).await;
        net.pass(Dir::Down, &["disembargo receiverLoopback 0 -> import 0"])
            .await;
        assert_eq!(log.calls(), vec![0, 1]);
        // Ping 2, after: straight to the probe, nothing on the wire.
        calls.push(start_call(&held, 2));
        net.settle().await;
        assert_eq!(log.calls(), vec![0, 1, 2]);
        net.no_call_goes_up().await;
        net.flush().await;
        assert_eq!(outcomes(calls).await, vec![0, 1, 2]);
        // The capability fetched from the answer is the probe itself.
        let response = pending.promise.await.unwrap();
        let fetched = response.get().unwrap().get_probe().unwrap();
        let direct = start_call(&fetched, 3);
        net.settle().await;
        assert_eq!(log.calls(), vec![0, 1, 2, 3]);
        assert!(net.waiting(Dir::Up).await.is_empty());
        assert_eq!(outcomes(vec![direct]).await, vec![3]);
        drop((fetched, response, held, maker, local));
    }
    net.end().await;
    assert_eq!(log.released(), 1);
}

/// The server's maker for the regression of commit c9855a1: `hold(m)`
/// treats `m` as a maker and asks it `hold(ours)`, whose answer will be
/// the server's own `ours`; it answers with a promise of its own, which
/// [`Held::resolve`] resolves to the field of that question.
struct AskBack {
    held: Held,
    ours: Cap<probe::Client>,
}

impl maker::Server for AskBack {
    async fn hold(
        self: Rc<Self>,
        params: maker::HoldParams,
        mut results: maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        let given: Cap<probe::Client> = Cap::from_client(&params.get()?.get_probe()?);
        let theirs: maker::Client = given.cast::<maker::Client>().client();
        let mut req = theirs.hold_request();
        req.get().set_probe(self.ours.client());
        let field = req.send().pipeline.get_probe();
        let field: Cap<probe::Client> = Cap::from_client(&field);
        results
            .get()
            .set_probe(self.held.promise_for(field.raw().clone()));
        Ok(())
    }
}

/// Regression (commit c9855a1, the seed-4331 simulation scenario): the
/// server's exported promise P resolves to a field of the server's own
/// question Q to the client, and Q returns the server's object O. A call
/// the client made on P went through Q's field to the client and is on
/// its way back to O, so the server embargoes the field. P must not be
/// announced (`resolve P -> senderHosted O`) until the embargo has
/// lifted: the client would send its next calls straight to O, past
/// those the embargo still holds. The `resolve` goes down only once the
/// client's reflection of the disembargo has reached the server, and O
/// sees every call made on P in order.
#[actix::test]
async fn an_exported_promise_resolved_to_an_embargoed_field_is_announced_after_the_embargo() {
    let held = Held::default();
    let log = Log::default();
    let net = Net::serving(AskBack {
        held: held.clone(),
        ours: Probe::cap(&log),
    });
    {
        // The client's maker answers the server's question Q only when
        // the test opens its gate.
        let (gated, open) = Gated::new();
        let local: Cap<maker::Client> = Cap::new(gated);
        let as_probe: Cap<probe::Client> = local.clone().cast();
        let p = hold_through_bootstrap(&net, as_probe.client()).await;
        // The server asks Q = hold(O) of the client's maker (which
        // blocks) and answers with its promise P.
        net.pass(
            Dir::Down,
            &[
                "return a0 results [senderHosted 0]",
                "call q0 -> import 0 m1 [senderHosted 1]",
                "release 0 x1",
                "return a1 results [senderPromise 2]",
            ],
        )
        .await;
        // P resolves to Q's field, which is not settled: nothing to say.
        held.resolve();
        net.expect(Dir::Down, &[]).await;
        // Call 0 on P goes through Q's field, pipelined back to the
        // client, and waits there behind the blocked Q.
        let mut calls = vec![start_call(&p, 0)];
        net.pass(
            Dir::Up,
            &[
                "finish q0",
                "finish q1",
                "release 0 x1",
                "call q0 -> import 2 m0 []",
            ],
        )
        .await;
        net.pass(Dir::Down, &["call q1 -> answer 0.[0] m0 []"])
            .await;
        // Q returns O, the server's own object; the client forwards call 0
        // to it.
        open.send(()).unwrap();
        let back = [
            "return a0 results [receiverHosted 1]",
            "call q1 -> import 1 m0 []",
        ];
        net.expect(Dir::Up, &back).await;
        // The server reads the return: call 0 went out on the field, which
        // is its own O, so it embargoes the field. P resolved to that
        // field, so P is not settled yet either: no `resolve` goes down.
        net.deliver(Dir::Up, 1).await;
        net.expect(
            Dir::Down,
            &["disembargo senderLoopback 0 -> answer 0.[0]", "finish q0"],
        )
        .await;
        // Call 1 on P, then the client reflects the disembargo (behind
        // call 0, which it forwarded to O first), then call 2 on P: all
        // three still go to P, which the client has not heard settle.
        calls.push(start_call(&p, 1));
        net.deliver(Dir::Down, 2).await;
        calls.push(start_call(&p, 2));
        net.expect(
            Dir::Up,
            &[
                "call q1 -> import 1 m0 []",
                "call q2 -> import 2 m0 []",
                "disembargo receiverLoopback 0 -> import 1",
                "call q3 -> import 2 m0 []",
            ],
        )
        .await;
        // Call 0 reaches O; call 1 waits in the server's embargo, and P
        // is still not announced.
        net.deliver(Dir::Up, 2).await;
        assert_eq!(log.calls(), vec![0]);
        let down = net.waiting(Dir::Down).await;
        assert!(!down.iter().any(|m| m.starts_with("resolve")), "{down:?}");
        // The reflection lifts the embargo: call 1 goes to O, and only
        // now does the server announce that P is O.
        net.deliver(Dir::Up, 1).await;
        assert_eq!(log.calls(), vec![0, 1]);
        // (O answers calls 0 and 1 meanwhile.)
        net.expect_unordered(
            Dir::Down,
            &[
                "return a1 results []",
                "resolve 2 -> senderHosted 1",
                "return a2 results []",
            ],
        )
        .await;
        // Call 2, made before the client heard of it, goes through P too.
        net.deliver(Dir::Up, 1).await;
        assert_eq!(log.calls(), vec![0, 1, 2]);
        // Once the client has the `resolve`, calls on P go to O directly.
        net.deliver(Dir::Down, 3).await;
        calls.push(start_call(&p, 3));
        let up = net.waiting(Dir::Up).await;
        assert_eq!(
            up.iter()
                .filter(|m| m.starts_with("call"))
                .collect::<Vec<_>>(),
            ["call q1 -> import 1 m0 []"],
            "{up:?}"
        );
        net.flush().await;
        assert_eq!(log.calls(), vec![0, 1, 2, 3]);
        assert_eq!(outcomes(calls).await, vec![0, 1, 2, 3]);
        drop((p, as_probe, local));
    }
    net.end().await;
}

/// The server's maker for SCENARIO 23: `pair()` asks the same of the
/// client's maker (the server's bootstrap of the client, set once the
/// connection is up) and answers with its first field, pipelined.
#[derive(Clone, Default)]
struct PairOfPeer(Rc<RefCell<Option<maker::Client>>>);

impl maker::Server for PairOfPeer {
    async fn pair(
        self: Rc<Self>,
        _: maker::PairParams,
        mut results: maker::PairResults,
    ) -> Result<(), capnp::Error> {
        let peer = self.0.borrow().clone().expect("the client's maker");
        results
            .get()
            .init_pair()
            .set_first(first_of_their_pair(&peer));
        Ok(())
    }
}

/// SCENARIO 23 (after test_local_embargo_11 of the OCaml capnp-rpc):
/// each vat bootstraps the other. The client asks the server's `pair()`
/// (Q1) and pipelines M1 on its first field X; the server answers with
/// the first field of the same call on the client's maker (Q2), which
/// the client answers with T, its second bootstrap of the server (for the
/// server's probe R), not returned yet. X turns out to be T, a promise
/// the client holds, and M1 is coming back through the server: the client
/// embargoes X, and M2 waits. T then resolves to R, which is remote: no
/// second embargo. The server embargoes Q2's field too (it forwarded M1
/// on it, and it is its own R). One disembargo each way, and R sees M1,
/// M2, M3 in order.
#[actix::test]
async fn scenario_23_mutual_bootstraps_where_the_second_embargo_is_not_needed_as_remote() {
    let r_log = Log::default();
    let peer = PairOfPeer::default();
    let server_maker: Cap<maker::Client> = Cap::new(peer.clone());
    let r = Probe::cap(&r_log).raw().clone();
    let (client_maker, answer_pair) = support::maker_with_pair();
    let client_maker: Cap<maker::Client> = Cap::new(client_maker);
    let (sm, cm) = (server_maker.raw().clone(), client_maker.raw().clone());
    let net = Net::mutual(
        bootstrap_fn(move |id: &[u8]| {
            Ok(if id == b"probe" {
                r.clone()
            } else {
                sm.clone()
            })
        }),
        Some(bootstrap_fn(move |_: &[u8]| Ok(cm.clone()))),
    );
    drop((server_maker, client_maker));
    {
        // Each vat bootstraps the other.
        let to_server = net.maker();
        let to_client: Cap<maker::Client> =
            Cap::from_raw(net.server.as_ref().unwrap().bootstrap(b""));
        *peer.0.borrow_mut() = Some(to_client.client());
        net.expect(Dir::Up, &["bootstrap q0"]).await;
        net.expect(Dir::Down, &["bootstrap q0"]).await;
        net.flush().await;
        // Q1, and the second bootstrap, of the server's probe R, which
        // the server reads only later.
        let q1 = to_server.pair_request().send();
        let x = q1.pipeline.get_pair().get_first();
        let t: Cap<probe::Client> = Cap::from_raw(net.client.bootstrap(b"probe"));
        net.expect(Dir::Up, &["call q0 -> import 0 m0 []", "bootstrap q1"])
            .await;
        net.deliver(Dir::Up, 1).await;
        // The server asks Q2 of the client's maker and answers Q1 with
        // Q2's first field: a promised answer of the client's own.
        net.expect(
            Dir::Down,
            &[
                "call q0 -> import 0 m0 []",
                "return a0 results [receiverAnswer 0.[0.0]]",
            ],
        )
        .await;
        // M1, pipelined on X.
        let mut calls = vec![start_call(&x, 1)];
        // The client answers Q2 with T, pipelined on its bootstrap
        // question q1 (and a spare probe as the second field).
        net.deliver(Dir::Down, 1).await;
        let spare = Probe::cap(&Log::default());
        answer_pair.send((t.clone(), spare)).ok().unwrap();
        let mut up = vec![
            "bootstrap q1",
            "call q2 -> answer 0.[0.0] m0 []",
            "return a0 results [receiverAnswer 1, senderHosted 1]",
        ];
        net.expect(Dir::Up, &up).await;
        // The server answers the second bootstrap with R.
        net.deliver(Dir::Up, 1).await;
        up.remove(0);
        net.expect(
            Dir::Down,
            &[
                "return a0 results [receiverAnswer 0.[0.0]]",
                "return a1 results [senderHosted 1]",
            ],
        )
        .await;
        // The client reads Q1's return: X is T, which it holds, and M1
        // is coming back through the server: it embargoes X, and M2 waits.
        net.deliver(Dir::Down, 1).await;
        calls.push(start_call(&x, 2));
        up.extend(["disembargo senderLoopback 0 -> answer 0.[0.0]", "finish q0"]);
        net.expect(Dir::Up, &up).await;
        // T resolves to R, the server's: no second disembargo, and M2
        // still waits for the first.
        net.deliver(Dir::Down, 1).await;
        up.push("finish q1");
        net.expect(Dir::Up, &up).await;
        // M1 reaches the server, which forwards it on Q2's field to the
        // client, which forwards it to T, that is R.
        net.deliver(Dir::Up, 1).await;
        up.remove(0);
        net.pass(Dir::Down, &["call q1 -> answer 0.[0.0] m0 []"])
            .await;
        up.push("call q0 -> import 1 m0 []");
        net.expect(Dir::Up, &up).await;
        // The server reads Q2's return: its field is the server's own R,
        // and M1 went out on it: the server embargoes it in turn.
        net.deliver(Dir::Up, 1).await;
        up.remove(0);
        net.expect(
            Dir::Down,
            &["disembargo senderLoopback 0 -> answer 0.[0.0]", "finish q0"],
        )
        .await;
        // The client reflects it (behind M1, which it forwarded first).
        net.deliver(Dir::Down, 1).await;
        up.push("disembargo receiverLoopback 0 -> import 1");
        net.expect(Dir::Up, &up).await;
        // The server reflects the client's disembargo.
        net.deliver(Dir::Up, 1).await;
        up.remove(0);
        net.pass(
            Dir::Down,
            &[
                "finish q0",
                "disembargo receiverLoopback 0 -> answer 0.[0.0]",
            ],
        )
        .await;
        // The client's embargo lifts: M2 goes straight to R, behind M1,
        // with no second embargo since R is remote.
        up.push("call q1 -> import 1 m0 []");
        net.expect(Dir::Up, &up).await;
        assert!(r_log.calls().is_empty());
        // Nobody starts another embargo as the rest is delivered.
        let seen = net.flush_seen().await;
        assert!(
            !seen
                .iter()
                .any(|m| m.starts_with("disembargo senderLoopback")),
            "{seen:?}"
        );
        assert_eq!(r_log.calls(), vec![1, 2]);
        // M3: to R directly.
        calls.push(start_call(&x, 3));
        net.expect(Dir::Up, &["call q0 -> import 1 m0 []"]).await;
        net.flush().await;
        assert_eq!(r_log.calls(), vec![1, 2, 3]);
        assert_eq!(outcomes(calls).await, vec![1, 2, 3]);
        // (The server's maker lets go of the client's.)
        peer.0.borrow_mut().take();
        drop((to_server, to_client, x, t, q1));
    }
    net.end().await;
}

/// SCENARIO 22, receiving side (regression of commit 0681238): the
/// client asks `hold(m)` of the server's [`support::TailCaller`], m being
/// the client's own [`Gated`] maker; the server tail-calls `m.hold(R)`
/// back to the client with `sendResultsTo.yourself` and answers the
/// client's question with `takeFromOtherQuestion`, naming the client's
/// answer to that tail call, which blocks at its gate. Calls 0 and 1,
/// pipelined on the question's field, reach the server after its return
/// and are forwarded to the tail call's question, back to the client.
/// When the client reads the return, that field is its own answer's, so
/// it embargoes it: calls 2 and 3 wait in the client until the server
/// reflects the disembargo behind calls 0 and 1, and R, the server's
/// probe, sees 0, 1, 2, 3.
#[actix::test]
async fn scenario_22_a_take_from_other_question_return_embargoes_the_fields_pipelined_on() {
    let log = Log::default();
    let net = Net::serving_results_to_yourself(support::TailCaller {
        own: Probe::cap(&log),
    });
    {
        let (gated, open) = Gated::new();
        let local: Cap<maker::Client> = Cap::new(gated);
        let as_probe: Cap<probe::Client> = local.clone().cast();
        let (maker, pending) = send_hold(&net, as_probe.client()).await;
        let held = pending.pipeline.get_probe();
        // The server tail-calls the client's maker with R, asking the
        // client to keep the results, and answers `hold` with them at
        // once (then lets go of the client's maker).
        let returns = [
            "return a0 results [senderHosted 0]",
            "call q0 -> import 0 m1 [senderHosted 1] to yourself",
            "return a1 takeFrom 0",
            "release 0 x1",
        ];
        net.expect(Dir::Down, &returns).await;
        // Calls 0 and 1, pipelined on the field before the client has
        // read the return: the server forwards them to its tail call's
        // question, that is back to the client.
        let mut calls = vec![start_call(&held, 0), start_call(&held, 1)];
        net.pass(
            Dir::Up,
            &[
                "call q2 -> answer 1.[0] m0 []",
                "call q3 -> answer 1.[0] m0 []",
            ],
        )
        .await;
        let forwarded = [
            "call q1 -> answer 0.[0] m0 []",
            "call q2 -> answer 0.[0] m0 []",
        ];
        let mut down = returns.to_vec();
        down.extend(forwarded);
        net.expect(Dir::Down, &down).await;
        // The tail call reaches the client's maker, which blocks at its
        // gate: no return goes up (only the bootstrap's finish).
        net.deliver(Dir::Down, 2).await;
        net.expect(Dir::Up, &["finish q0"]).await;
        // The client reads `takeFrom 0`: its question's answer is its own
        // blocked answer, and calls 0 and 1 went out on the field, so it
        // embargoes the field (and finishes the question, whose results
        // it holds itself).
        net.deliver(Dir::Down, 1).await;
        let up = [
            "finish q0",
            "disembargo senderLoopback 0 -> answer 1.[0]",
            "finish q1",
        ];
        net.expect(Dir::Up, &up).await;
        // Calls 2 and 3 wait in the client: nothing goes out, nothing
        // runs.
        calls.extend([start_call(&held, 2), start_call(&held, 3)]);
        net.expect(Dir::Up, &up).await;
        assert!(log.calls().is_empty());
        // Calls 0 and 1 come back to the client's blocked answer; the
        // server reflects the disembargo behind them, on the tail call's
        // question.
        net.pass(Dir::Down, &down[returns.len() - 1..]).await;
        net.pass(Dir::Up, &up).await;
        net.pass(
            Dir::Down,
            &["disembargo receiverLoopback 0 -> answer 0.[0]"],
        )
        .await;
        // The embargo lifts: calls 2 and 3 join the blocked answer's
        // queue behind 0 and 1, still in the client.
        net.expect(Dir::Up, &[]).await;
        assert!(log.calls().is_empty());
        // The gate opens: the client's maker answers with R, the client
        // keeps the results (they were sent to it), and the four calls
        // go to R in order (calls 0 and 1 keep the client's questions
        // q2 and q3 until they return).
        open.send(()).unwrap();
        net.expect(
            Dir::Up,
            &[
                "return a0 sentElsewhere",
                "call q0 -> import 1 m0 []",
                "call q1 -> import 1 m0 []",
                "call q4 -> import 1 m0 []",
                "call q5 -> import 1 m0 []",
            ],
        )
        .await;
        net.flush().await;
        assert_eq!(log.calls(), vec![0, 1, 2, 3], "E-order across the embargo");
        assert_eq!(outcomes(calls).await, vec![0, 1, 2, 3]);
        // The client's question answers with R, which later calls on the
        // field reach directly.
        let response = pending.promise.await.unwrap();
        let fetched = response.get().unwrap().get_probe().unwrap();
        for (p, seq) in [(&held, 4), (&fetched, 5)] {
            let call = start_call(p, seq);
            net.pass(Dir::Up, &["call q0 -> import 1 m0 []"]).await;
            net.flush().await;
            assert_eq!(outcomes(vec![call]).await, vec![seq]);
        }
        assert_eq!(log.calls(), vec![0, 1, 2, 3, 4, 5]);
        drop((fetched, response, held, maker, as_probe, local));
    }
    net.end().await;
    assert_eq!(log.released(), 1);
}
