//! A connection that ends while it still has steps queued for itself: what
//! those steps hold must fail with the connection's own error.
//!
//! Two vats over stepped in-memory wires (`tests/sim/wire.rs`), the order
//! of every message forced. Found by the simulation with its connections
//! on two arbiters (`SIM_ARBITERS=2`, seed 4387): there the peer's abort
//! was often read in the same turn as the `resolve` before it.

#[path = "sim/describe.rs"]
mod describe;
mod support;
#[path = "sim/wire.rs"]
#[allow(dead_code)]
mod wire;

use std::time::Duration;

use capnp_actix::connection::{bootstrap_fn, start_connection, ConnectionOptions};
use capnp_actix::schemas::test_api_capnp::maker;
use capnp_actix::Cap;
use support::{start_call, Held, Log, Probe};
use wire::{Activity, Wire};

/// Lets both vats run until no byte has been read or written for a while.
async fn settle(activity: &Activity) {
    let (mut idle, mut last) = (0, wire::activity_now(activity));
    while idle < 64 {
        tokio::task::yield_now().await;
        let now = wire::activity_now(activity);
        idle = if now == last { idle + 1 } else { 0 };
        last = now;
    }
}

/// The messages waiting on `wire`, described.
fn waiting(wire: &Wire) -> Vec<String> {
    wire.waiting().iter().map(|f| describe::frame(f)).collect()
}

/// The peer resolves a promise we called over the wire to our own object
/// (we embargo it: our import now waits on a local promise until the
/// disembargo comes back), and aborts before we have started that
/// embargo: the abort comes in the same read as the `resolve`. The calls
/// waiting on the import fail with the peer's abort, not with "promise
/// dropped without being resolved" (the embargo's start, a step the
/// connection queued for itself, was dropped with its mailbox).
#[actix::test]
async fn calls_on_an_import_embargoed_as_the_peer_aborts_fail_with_its_abort() {
    let activity = Activity::default();
    let (client_end, server_end, up, down) = wire::pair(&activity);
    let held = Held::default();
    let service = Cap::<maker::Client>::new(held.clone()).raw().clone();
    let server = start_connection(
        server_end,
        ConnectionOptions {
            bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(service.clone()))),
            ..Default::default()
        },
    );
    let client = start_connection(client_end, ConnectionOptions::default());
    let log = Log::default();
    let local = Probe::cap(&log);
    let maker = Cap::<maker::Client>::from_raw(client.bootstrap(b"")).client();
    let mut req = maker.hold_request();
    req.get().set_probe(local.client());
    let hold = req.send();
    let promise = hold.pipeline.get_probe();
    let answer = hold.promise;
    drop(hold.pipeline);
    // The bootstrap and the hold go up, their answers come down.
    for _ in 0..4 {
        settle(&activity).await;
        while up.deliver_one() || down.deliver_one() {}
    }
    settle(&activity).await;
    assert!(answer.await.is_ok());
    // A call on the promise goes up (the peer would forward it back).
    let mut calls = vec![start_call(&promise, 0)];
    settle(&activity).await;
    assert!(
        waiting(&up).iter().any(|m| m.contains("-> import")),
        "{:?}",
        waiting(&up)
    );
    // The server resolves the promise to our probe, then aborts.
    held.resolve();
    settle(&activity).await;
    server.close("the server went away");
    settle(&activity).await;
    assert_eq!(
        waiting(&down),
        ["resolve 1 -> receiverHosted 0", "abort"],
        "messages going down"
    );
    // Both arrive in one read; a call made meanwhile waits on the import.
    calls.push(start_call(&promise, 1));
    while down.deliver_one() {}
    settle(&activity).await;
    calls.push(start_call(&promise, 2));
    settle(&activity).await;
    for (seq, call) in calls.into_iter().enumerate() {
        let e = call.await.unwrap().expect_err("the connection ended");
        assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "call {seq}: {e}");
        assert!(e.extra.contains("the server went away"), "call {seq}: {e}");
    }
    assert!(log.calls().is_empty(), "{:?}", log.calls());
    drop((promise, local, maker, client, server));
    up.cut();
    down.cut();
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
}
