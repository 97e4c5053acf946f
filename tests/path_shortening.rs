//! Path shortening when a peer resolves a promise it exported to us
//! (SCENARIOS 10 and 15), against the capnp-rpc crate as the peer: it
//! exports promises as `senderPromise` and sends `resolve` when they
//! settle, which our own vats do not do yet.

mod support;

use std::rc::Rc;
use std::time::Duration;

use capnp_actix::connection::{start_connection, ConnectionOptions};
use capnp_actix::schemas::test_api_capnp::{maker, probe};
use capnp_actix::Cap;
use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty, RpcSystem};
use futures::AsyncReadExt;
use support::{call, Log, Probe};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// Their maker: `hold(probe)` answers at once with a promise that
/// resolves to the probe it was given after `delay`.
struct DelayedHolder {
    delay: Duration,
}

impl maker::Server for DelayedHolder {
    async fn hold(
        self: Rc<Self>,
        params: maker::HoldParams,
        mut results: maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        let given = params.get()?.get_probe()?;
        let delay = self.delay;
        let promise: probe::Client = capnp_rpc::new_future_client(async move {
            tokio::time::sleep(delay).await;
            Ok(given)
        });
        results.get().set_probe(promise);
        Ok(())
    }
}

/// Serves `DelayedHolder` with the capnp-rpc crate on a thread of its own.
fn their_server(
    stream: std::os::unix::net::UnixStream,
    delay: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, async move {
            stream.set_nonblocking(true).unwrap();
            let stream = tokio::net::UnixStream::from_std(stream).unwrap();
            let (r, w) = stream.compat().split();
            let network = twoparty::VatNetwork::new(r, w, Side::Server, Default::default());
            let holder: maker::Client = capnp_rpc::new_client(DelayedHolder { delay });
            let rpc = RpcSystem::new(Box::new(network), Some(holder.client));
            let _ = rpc.await;
        })
    })
}

const N: u64 = 500;

#[actix::test]
async fn scenario_10_and_15_a_resolve_to_our_own_object_shortens_the_path_in_order() {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let server = their_server(theirs, Duration::from_millis(15));
    ours.set_nonblocking(true).unwrap();
    let conn = start_connection(
        tokio::net::UnixStream::from_std(ours).unwrap(),
        ConnectionOptions::default(),
    );
    let log = Log::default();
    {
        let maker: Cap<maker::Client> = Cap::from_raw(conn.bootstrap(b""));
        let local = Probe::cap(&log);
        let mut req = maker.client().hold_request();
        req.get().set_probe(local.client());
        let held = req.send().promise.await.unwrap();
        let promise = held.get().unwrap().get_probe().unwrap();

        // Calls on the promise before, during and after its resolution
        // (15: the switch comes with a `resolve` message).
        // Bursts, so that calls made just after the resolution would
        // overtake those still on their way back through the peer if
        // nothing held them.
        let mut pending = Vec::new();
        for seq in 0..N {
            let p = promise.clone();
            pending.push(actix::spawn(async move { call(&p, seq).await }));
            if seq % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        for (seq, p) in pending.into_iter().enumerate() {
            assert_eq!(p.await.unwrap().unwrap(), seq as u64);
        }
        assert_eq!(
            log.calls(),
            (0..N).collect::<Vec<_>>(),
            "E-order across the resolution"
        );

        // 10: the promise is now our own object: calls on it no longer
        // need the network, not even a connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.close("test: the server goes away");
        for _ in 0..100 {
            if !conn.is_open() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!conn.is_open());
        assert_eq!(call(&promise, 100).await.unwrap(), 100);
        assert_eq!(log.calls().last(), Some(&100));
        drop((maker, local, promise, held));
    }
    capnp_actix::debug::settle(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
    assert_eq!(log.released(), 1);
    server.join().unwrap();
}
