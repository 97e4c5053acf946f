//! Regression tests for bugs found in review of the path-shortening,
//! tail-call and embargo work. Each test that still fails is marked
//! `#[ignore = "bug: ..."]` so that the suite stays green; run them with
//! `cargo test --test review_regressions -- --ignored`.

mod support;

use std::rc::Rc;
use std::time::Duration;

use capnp_actix::connection::{bootstrap_fn, start_connection, ConnectionOptions};
use capnp_actix::schemas::test_api_capnp::{maker, probe};
use capnp_actix::Cap;
use support::{call, Log, Probe, TailCaller};

/// `hold(p)` answers `p`, after a little while.
struct SlowHold;

impl maker::Server for SlowHold {
    async fn hold(
        self: Rc<Self>,
        params: maker::HoldParams,
        mut results: maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?.get_probe()?;
        tokio::time::sleep(Duration::from_millis(10)).await;
        results.get().set_probe(p);
        Ok(())
    }
}

const T: Duration = Duration::from_secs(5);

/// actors/src/connection/: a peer's call answered by our tail call with
/// `takeFromOtherQuestion` never goes through `send_return` or
/// `cancel_answer`, so `unhold` never runs for it: its bytes stay counted
/// in `held_bytes` (and its entry in `held`) for the life of the
/// connection. With a budget of one byte (one call at a time), the second
/// such call is refused as Overloaded although the first one is long over.
#[actix::test]
async fn held_call_bytes_are_released_after_a_tail_call_to_the_caller() {
    let log = Log::default();
    let service: Cap<maker::Client> = Cap::new(TailCaller {
        own: Probe::cap(&log),
    });
    let raw = service.raw().clone();
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let server = start_connection(
        a,
        ConnectionOptions {
            bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(raw.clone()))),
            send_results_to_yourself: true,
            // One call at a time ("one call is always accepted").
            max_held_call_bytes: 1,
            ..Default::default()
        },
    );
    let client = start_connection(b, ConnectionOptions::default());
    let remote: Cap<maker::Client> = Cap::from_raw(client.bootstrap(b""));
    let slow: Cap<maker::Client> = Cap::new(SlowHold);
    for round in 0..3 {
        let mut req = remote.client().hold_request();
        req.get()
            .set_probe(slow.clone().cast::<probe::Client>().client());
        let response = tokio::time::timeout(T, req.send().promise)
            .await
            .expect("no answer");
        assert!(
            response.is_ok(),
            "round {round}: {}",
            response.err().unwrap()
        );
        drop(response);
        // The finish reaches the server: its answer table is empty again
        // (the round's call and its tail call are forgotten), so the next
        // round starts from nothing held.
        answers_forgotten(&server).await;
    }
    drop((remote, slow, service));
    close(&client, &server).await;
    capnp_actix::debug::assert_all_released().await;
}

/// Waits (up to [`T`]) until `conn` keeps no answer for its peer.
async fn answers_forgotten(conn: &capnp_actix::connection::ConnectionHandle) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (sizes, dump) = conn.inspect().await.expect("the connection runs");
        if sizes.answers == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "answers still kept: {dump}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Closes the connection from `client`'s side and waits until both ends
/// have stopped.
async fn close(
    client: &capnp_actix::connection::ConnectionHandle,
    server: &capnp_actix::connection::ConnectionHandle,
) {
    client.close("test over");
    tokio::time::timeout(T, client.closed()).await.unwrap();
    tokio::time::timeout(T, server.closed()).await.unwrap();
}

/// answer.rs `deliver_pipelined`: once a call on a field of a remote
/// answer has gone to the connection, every later call on that field goes
/// through the connection's mailbox forever ("sticky" routing, and the
/// `embargoed` list is never cleared). After the connection has ended,
/// such calls are dropped with its mailbox and fail, even though the field
/// resolved long ago to a capability of our own, alive and local.
#[actix::test]
async fn a_pipelined_field_resolved_to_our_own_capability_works_after_the_connection_ends() {
    let log = Log::default();
    let service: Cap<maker::Client> = Cap::new(SlowHold);
    let raw = service.raw().clone();
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let server = start_connection(
        a,
        ConnectionOptions {
            bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(raw.clone()))),
            ..Default::default()
        },
    );
    let client = start_connection(b, ConnectionOptions::default());
    let remote: Cap<maker::Client> = Cap::from_raw(client.bootstrap(b""));
    let mine = Probe::cap(&log);
    let mut req = remote.client().hold_request();
    req.get().set_probe(mine.client());
    let pending = req.send();
    let held = pending.pipeline.get_probe();
    // Pipelined before the return: it goes over the wire (and back).
    let (first, response) = futures::join!(call(&held, 1), pending.promise);
    assert_eq!(first.unwrap(), 1);
    let returned = response.unwrap().get().unwrap().get_probe().unwrap();
    assert_eq!(call(&returned, 2).await.unwrap(), 2);
    assert_eq!(call(&held, 3).await.unwrap(), 3);

    client.close("test over");
    tokio::time::timeout(T, client.closed()).await.unwrap();
    // Both handles name our own probe, which is alive.
    assert_eq!(call(&returned, 4).await.unwrap(), 4);
    let after = tokio::time::timeout(T, call(&held, 5)).await.unwrap();
    assert_eq!(
        after.map_err(|e| e.to_string()),
        Ok(5),
        "a call on the resolved pipelined field failed"
    );
    assert_eq!(log.calls(), [1, 2, 3, 4, 5]);
    tokio::time::timeout(T, server.closed()).await.unwrap();
    // (`pending`'s pipeline holds hold's results, and so our probe.)
    drop((pending.pipeline, remote, mine, held, returned, service));
    capnp_actix::debug::assert_all_released().await;
    assert_eq!(log.released(), 1);
}

use capnp::traits::HasTypeId;
use capnp_actix::proto::captp::{Conn, ConnLimits, Event, InCap, OutCap, OutContent, OutTarget};
use capnp_actix::proto::Limits;
use std::cell::RefCell;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `hold(x)` waits for its gate, then tail-calls `x.hold(own)` as
/// [`TailCaller`] does; `pair()` never answers.
struct GatedTailCaller {
    gate: RefCell<Option<futures::channel::oneshot::Receiver<()>>>,
    tail: Rc<TailCaller>,
}

impl maker::Server for GatedTailCaller {
    async fn hold(
        self: Rc<Self>,
        params: maker::HoldParams,
        results: maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        let gate = self.gate.borrow_mut().take();
        if let Some(g) = gate {
            let _ = g.await;
        }
        maker::Server::hold(self.tail.clone(), params, results).await
    }

    async fn pair(
        self: Rc<Self>,
        _: maker::PairParams,
        _: maker::PairResults,
    ) -> Result<(), capnp::Error> {
        futures::future::pending::<()>().await;
        Ok(())
    }
}

/// Feeds the scripted peer's core for `dur`, writing what it produces;
/// gives the events it reported.
async fn pump(
    core: &mut Conn<u32>,
    sock: &mut tokio::net::UnixStream,
    dur: Duration,
) -> Vec<Event<u32>> {
    let mut events = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let end = tokio::time::Instant::now() + dur;
    loop {
        let out = core.take_output();
        if !out.is_empty() {
            sock.write_all(&out).await.unwrap();
        }
        let n = tokio::select! {
            r = sock.read(&mut buf) => r.unwrap_or(0),
            _ = tokio::time::sleep_until(end) => return events,
        };
        if n == 0 {
            return events;
        }
        core.receive(&buf[..n]);
        while let Some(e) = core.next_event() {
            events.push(e);
        }
    }
}

/// hook.rs `send_tail_call` / answer.rs `origin`: the answer id recorded
/// for a peer's call is used whenever its method tail-calls, even after
/// the peer has cancelled that call and, the id being free again, reused
/// it for another question. `Conn::tail_call` then finds the *new* call
/// pending and answers it with `takeFromOtherQuestion`: the peer's new
/// question receives the results of an old, cancelled call.
///
/// Here the cancelled call's method keeps running because a call the peer
/// pipelined on its answer keeps that answer wanted (`depends_on`).
#[actix::test]
async fn a_tail_call_for_a_cancelled_call_does_not_answer_the_question_that_reused_its_id() {
    let log = Log::default();
    let (gate_tx, gate_rx) = futures::channel::oneshot::channel();
    let service: Cap<maker::Client> = Cap::new(GatedTailCaller {
        gate: RefCell::new(Some(gate_rx)),
        tail: Rc::new(TailCaller {
            own: Probe::cap(&log),
        }),
    });
    let raw = service.raw().clone();
    let (a, mut sock) = tokio::net::UnixStream::pair().unwrap();
    let server = start_connection(
        a,
        ConnectionOptions {
            bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(raw.clone()))),
            send_results_to_yourself: true,
            ..Default::default()
        },
    );
    let mut core: Conn<u32> = Conn::new(ConnLimits::default(), Limits::default());
    let maker_id = <maker::Client as HasTypeId>::TYPE_ID;
    let probe_id = <probe::Client as HasTypeId>::TYPE_ID;

    let boot = core.bootstrap(b"").unwrap();
    let on_boot = OutTarget::Answer {
        question: boot,
        path: vec![],
    };
    // hold(our maker, export L = 7): the method waits at its gate.
    let mut params = capnp::message::Builder::new_default();
    {
        let mut table = Vec::new();
        let mut root: capnp::any_pointer::Builder<'_> = params.init_root();
        capnp::traits::ImbueMut::imbue_mut(&mut root, &mut table);
        let placeholder: probe::Client = capnp_rpc::new_client(Probe::new(&Log::default()));
        root.init_as::<maker::hold_params::Builder<'_>>()
            .set_probe(placeholder);
    }
    let hold = core
        .call(
            &on_boot,
            maker_id,
            1,
            OutContent::Reader(params.get_root_as_reader().unwrap()),
            &[OutCap::Local(7)],
        )
        .unwrap();
    // A call pipelined on hold's answer keeps that answer wanted.
    let mut seq = capnp::message::Builder::new_default();
    seq.init_root::<probe::call_params::Builder<'_>>()
        .set_seq(1);
    let _pipelined = core
        .call(
            &OutTarget::Answer {
                question: hold,
                path: vec![0],
            },
            probe_id,
            0,
            OutContent::Reader(seq.get_root_as_reader().unwrap()),
            &[],
        )
        .unwrap();
    let events = pump(&mut core, &mut sock, Duration::from_millis(100)).await;
    let service_import = events
        .iter()
        .find_map(|e| match e {
            Event::Return {
                question,
                result: Ok(p),
                ..
            } if *question == boot => match p.caps.as_slice() {
                [InCap::Import { id, .. }] => Some(*id),
                _ => None,
            },
            _ => None,
        })
        .expect("bootstrap answered with an import");

    // Cancel hold; wait for its `canceled` return.
    core.finish(hold);
    let events = pump(&mut core, &mut sock, Duration::from_millis(200)).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Return { question, .. } if *question == hold)),
        "hold was not answered after its finish"
    );

    // A new question reuses hold's id: pair(), which never answers.
    let mut empty = capnp::message::Builder::new_default();
    empty.init_root::<maker::pair_params::Builder<'_>>();
    let filler = core
        .call(
            &OutTarget::Import(service_import),
            maker_id,
            0,
            OutContent::Reader(empty.get_root_as_reader().unwrap()),
            &[],
        )
        .unwrap();
    assert_ne!(filler, hold);
    let pair = core
        .call(
            &OutTarget::Import(service_import),
            maker_id,
            0,
            OutContent::Reader(empty.get_root_as_reader().unwrap()),
            &[],
        )
        .unwrap();
    assert_eq!(pair, hold, "the scripted peer reuses the lowest free id");
    pump(&mut core, &mut sock, Duration::from_millis(100)).await;

    // Now the cancelled call's method tail-calls our maker.
    gate_tx.send(()).unwrap();
    let events = pump(&mut core, &mut sock, Duration::from_millis(300)).await;
    let wrong: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::ReturnTakeFrom {
                question, answer, ..
            } if *question == pair => Some(format!(
                "pair() (question {question}) answered with takeFromOtherQuestion {answer}"
            )),
            Event::Return {
                question, result, ..
            } if *question == pair => Some(format!(
                "pair() (question {question}) answered: ok = {}",
                result.is_ok()
            )),
            _ => None,
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:?}");
    // The scripted peer goes away: the server's connection ends, and with
    // it the tail call to the peer's maker and the `pair()` that never
    // answers.
    drop((core, sock));
    tokio::time::timeout(T, server.closed()).await.unwrap();
    drop(service);
    capnp_actix::debug::assert_all_released().await;
    assert_eq!(log.released(), 1);
}
