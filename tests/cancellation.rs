//! Cancellation by a peer's `finish` (SCENARIOS 44, 47) and the
//! `requireEarlyCancellationWorkaround` flag: a peer that sets it (older
//! implementations, and any that leave the default, as the capnp-rpc crate
//! does) may count on a call it cancels having been delivered, so the call
//! still starts; our own finish clears the flag, so a call we cancel before
//! it starts never starts.

mod support;

use std::time::Duration;

use capnp_actix::connection::{bootstrap_fn, start_connection, ConnectionOptions};
use capnp_actix::proto::captp::TableSizes;
use capnp_actix::schemas::test_api_capnp::probe;
use capnp_actix::Cap;
use futures::channel::oneshot;
use support::{Log, Probe};

const T: Duration = Duration::from_secs(5);

/// Our server: its bootstrap is a promise that resolves to a probe when
/// the test sends on the returned channel, so calls wait in the promise's
/// queue until then.
fn server(
    stream: tokio::net::UnixStream,
    log: &Log,
) -> (
    capnp_actix::connection::ConnectionHandle,
    futures::channel::oneshot::Sender<()>,
) {
    let (promise, resolver) = Cap::<probe::Client>::promise();
    let probe = Probe::cap(log);
    let (resolve, when) = futures::channel::oneshot::channel();
    actix::spawn(async move {
        if when.await.is_ok() {
            resolver.resolve_to(probe.raw().clone());
        }
    });
    let raw = promise.raw().clone();
    let conn = start_connection(
        stream,
        ConnectionOptions {
            bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(raw.clone()))),
            ..Default::default()
        },
    );
    (conn, resolve)
}

/// Waits (up to [`T`]) until the server's tables (their sizes and their
/// dump) satisfy `ready`.
async fn until(
    conn: &capnp_actix::connection::ConnectionHandle,
    what: &str,
    ready: impl Fn(&TableSizes, &str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (sizes, dump) = conn.inspect().await.expect("the server runs");
        if ready(&sizes, &dump) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the server's tables are {dump}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[actix::test]
async fn a_peer_that_needs_the_workaround_gets_its_cancelled_call_started() {
    let log = Log::default();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let (conn, resolve) = server(tokio::net::UnixStream::from_std(ours).unwrap(), &log);
    let (send, send_rx) = oneshot::channel::<()>();
    let (cancel, cancel_rx) = oneshot::channel::<()>();
    let (resolved, resolved_rx) = oneshot::channel::<()>();
    // The capnp-rpc crate leaves requireEarlyCancellationWorkaround at its
    // default (true).
    let client = support::their_client(theirs, |p: probe::Client| async move {
        send_rx.await.unwrap();
        let mut req = p.call_request();
        req.get().set_seq(1);
        let pending = req.send();
        cancel_rx.await.unwrap();
        drop(pending); // finish, before the call could start
        resolved_rx.await.unwrap();
        support::call(&p, 2).await.unwrap()
    });
    // The capnp-rpc crate keeps its bootstrap question (answered) open.
    until(&conn, "the bootstrap", |s, _| s.answers == 1).await;
    send.send(()).unwrap();
    until(&conn, "the call", |s, _| s.answers == 2).await;
    cancel.send(()).unwrap();
    // The server has the finish while the call still waits in the
    // promise's queue (the answer stays until the call has run).
    until(&conn, "the finish", |_, dump| {
        dump.lines()
            .any(|l| l.contains("returned=false finished=true"))
    })
    .await;
    assert!(log.calls().is_empty());
    resolve.send(()).unwrap();
    resolved.send(()).unwrap();
    // Call 2 was sent on the same promise after call 1: had call 1 been
    // dropped, call 2 would be the only one.
    assert_eq!(support::join(client).await, 2);
    assert_eq!(
        log.calls(),
        [1, 2],
        "the cancelled call started once its target was known"
    );
    conn.close("test over");
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
}

#[actix::test]
async fn a_call_we_cancel_before_it_starts_never_starts() {
    let log = Log::default();
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let (conn, resolve) = server(a, &log);
    let client = start_connection(b, ConnectionOptions::default());
    {
        let p: Cap<probe::Client> = Cap::from_raw(client.bootstrap(b""));
        // Our client finishes its bootstrap question once answered: the
        // server exports the promise and owes no answer.
        until(&conn, "the bootstrap", |s, _| {
            s.exports == 1 && s.answers == 0
        })
        .await;
        let mut req = p.client().call_request();
        req.get().set_seq(1);
        let pending = req.send();
        until(&conn, "the call", |s, _| s.answers == 1).await;
        drop(pending);
        // Our finish clears the workaround flag: the answer goes at once.
        until(&conn, "the finish", |s, _| s.answers == 0).await;
        assert!(log.calls().is_empty());
        // The promise resolves only now. Call 2 goes to the same promise
        // after call 1: had call 1 still been queued, it would start first.
        resolve.send(()).unwrap();
        assert_eq!(support::call(&p.client(), 2).await.unwrap(), 2);
    }
    assert_eq!(log.calls(), [2], "the cancelled call never started");
    client.close("test over");
    drop(conn);
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
}

/// Our maker: `hold` returns the probe it is given once the gate opens.
struct GatedHold {
    gate: std::cell::RefCell<Option<futures::channel::oneshot::Receiver<()>>>,
}

impl capnp_actix::schemas::test_api_capnp::maker::Server for GatedHold {
    async fn hold(
        self: std::rc::Rc<Self>,
        params: capnp_actix::schemas::test_api_capnp::maker::HoldParams,
        mut results: capnp_actix::schemas::test_api_capnp::maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        let given = params.get()?.get_probe()?;
        let gate = self.gate.borrow_mut().take();
        if let Some(g) = gate {
            let _ = g.await;
        }
        results.get().set_probe(given);
        Ok(())
    }
}

#[actix::test]
async fn a_call_whose_answer_has_calls_pipelined_on_it_is_not_cancelled_by_an_early_finish() {
    use capnp_actix::schemas::test_api_capnp::maker;
    let log = Log::default();
    let (open, gate) = futures::channel::oneshot::channel();
    let service: Cap<maker::Client> = Cap::new(GatedHold {
        gate: std::cell::RefCell::new(Some(gate)),
    });
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
    {
        let maker: Cap<maker::Client> = Cap::from_raw(client.bootstrap(b""));
        let local = Probe::cap(&log);
        let mut req = maker.client().hold_request();
        req.get().set_probe(local.client());
        let pending = req.send();
        let held = pending.pipeline.get_probe();
        let mut call = held.call_request();
        call.get().set_seq(5);
        let pipelined = call.send().promise;
        // Everything but the pipelined call's own promise goes. The
        // answer to `hold` is still wanted (a call is pipelined on it):
        // whatever the client tells the server, `hold` must not be
        // cancelled, which the pipelined call's completion shows. The
        // drops are given a moment to reach the connection before `hold`
        // may finish; the evidence is the completion, not the wait.
        drop((pending, held, maker));
        tokio::time::sleep(Duration::from_millis(50)).await;
        open.send(()).unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), pipelined)
            .await
            .expect("the pipelined call completes");
        assert_eq!(reply.unwrap().get().unwrap().get_seq(), 5);
        assert_eq!(log.calls(), [5]);
        drop(local);
    }
    drop(service);
    client.close("test over");
    drop(server);
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
}
