//! Tail calls made by user code (`results.hook.tail_call(request)`):
//! locally the call's answer simply becomes the tail call's (nothing is
//! copied); when the method serves a peer's call and tail-calls that same
//! peer, the call goes out with `sendResultsTo.yourself` and the peer's
//! question is answered with `takeFromOtherQuestion`, so the results go
//! straight from callee to caller (SCENARIOS 22, sending side; opt-in
//! with `ConnectionOptions::send_results_to_yourself`, since the
//! capnp-rpc crate does not run such calls).

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

/// Calls `hold(local_maker)` on `remote`, pipelining calls on its answer
/// while the tail call runs; checks they reach `log`'s probe in order.
async fn through_tail_call(remote: &maker::Client, local_maker: &Cap<maker::Client>, log: &Log) {
    let mut req = remote.hold_request();
    req.get()
        .set_probe(local_maker.clone().cast::<probe::Client>().client());
    let pending = req.send();
    let held = pending.pipeline.get_probe();
    let mut calls = Vec::new();
    for seq in 0..100u64 {
        let h = held.clone();
        calls.push(tokio::task::spawn_local(async move { call(&h, seq).await }));
        if seq % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let response = pending.promise.await.unwrap();
    let returned = response.get().unwrap().get_probe().unwrap();
    for (seq, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap(), seq as u64);
    }
    assert_eq!(call(&returned, 100).await.unwrap(), 100);
    assert_eq!(log.calls(), (0..=100).collect::<Vec<_>>());
}

#[actix::test]
async fn a_local_tail_call_answers_with_the_tail_calls_answer() {
    let log = Log::default();
    {
        let caller: Cap<maker::Client> = Cap::new(TailCaller {
            own: Probe::cap(&log),
        });
        let slow: Cap<maker::Client> = Cap::new(SlowHold);
        through_tail_call(&caller.client(), &slow, &log).await;
    }
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
    assert_eq!(log.released(), 1);
}

#[actix::test]
async fn a_tail_call_back_to_the_caller_goes_out_as_send_results_to_yourself() {
    // B serves TailCaller; A passes its own SlowHold maker: B's method
    // tail-calls A over the connection the call came from.
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
            ..Default::default()
        },
    );
    let client = start_connection(b, ConnectionOptions::default());
    {
        let remote: Cap<maker::Client> = Cap::from_raw(client.bootstrap(b""));
        let slow: Cap<maker::Client> = Cap::new(SlowHold);
        through_tail_call(&remote.client(), &slow, &log).await;
        drop((remote, slow));
    }
    drop(service);
    for _ in 0..100 {
        let (c, s) = (
            client.inspect().await.unwrap().0,
            server.inspect().await.unwrap().0,
        );
        if c.is_empty() && s.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (c, s) = (
        client.inspect().await.unwrap(),
        server.inspect().await.unwrap(),
    );
    assert!(
        c.0.is_empty() && s.0.is_empty(),
        "client:\n{}\nserver:\n{}",
        c.1,
        s.1
    );
    client.close("test over");
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
}

#[actix::test]
async fn the_capnp_rpc_crate_takes_the_results_of_our_tail_call_to_it() {
    // Our TailCaller serves the capnp-rpc crate's client, whose own maker
    // it tail-calls. With the default options the tail call goes out as
    // an ordinary call and its results come back through us: the
    // capnp-rpc crate (0.27) accepts `sendResultsTo.yourself` but never
    // runs such a call (its answer is only driven by pipelined calls).
    let our_log = Log::default();
    let service: Cap<maker::Client> = Cap::new(TailCaller {
        own: Probe::cap(&our_log),
    });
    let raw = service.raw().clone();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let server = start_connection(
        tokio::net::UnixStream::from_std(ours).unwrap(),
        ConnectionOptions {
            bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(raw.clone()))),
            ..Default::default()
        },
    );
    let client = support::their_client(theirs, |remote: maker::Client| async move {
        let slow: maker::Client = capnp_rpc::new_client(SlowHold);
        let mut req = remote.hold_request();
        req.get().set_probe(probe::Client {
            client: slow.client.clone(),
        });
        let pending = req.send();
        let held = pending.pipeline.get_probe();
        let early = call(&held, 1);
        let t = Duration::from_secs(5);
        let response = tokio::time::timeout(t, pending.promise)
            .await
            .map_err(|_| "the response never came".to_string())?
            .map_err(|e| e.to_string())?;
        let returned = response
            .get()
            .and_then(|r| r.get_probe())
            .map_err(|e| e.to_string())?;
        let one = tokio::time::timeout(t, early)
            .await
            .map_err(|_| "the pipelined call never returned".to_string())?
            .map_err(|e| e.to_string())?;
        let two = tokio::time::timeout(t, call(&returned, 2))
            .await
            .map_err(|_| "the call on the result never returned".to_string())?
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((one, two))
    });
    assert_eq!(support::join(client).await, Ok((1, 2)));
    assert_eq!(our_log.calls(), [1, 2]);
    server.close("test over");
    drop(service);
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
}
