//! Resource limits on what a peer can make us hold, over real sockets.

mod support;

use std::time::Duration;

use capnp_actix::connection::{bootstrap_fn, start_connection, ConnectionOptions};
use capnp_actix::schemas::test_api_capnp::probe;
use capnp_actix::Cap;
use futures::channel::oneshot;
use support::{call, Log, Probe};

#[actix::test]
async fn calls_beyond_the_held_bytes_budget_fail_with_overloaded_and_others_go_on() {
    let log = Log::default();
    let probe = Probe::new(&log);
    let mut gates = Vec::new();
    for seq in 0..40u64 {
        let (tx, rx) = oneshot::channel();
        probe.gates.borrow_mut().push((seq, rx));
        gates.push(tx);
    }
    let service: Cap<probe::Client> = Cap::new(probe);
    let raw = service.raw().clone();
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let server = start_connection(
        a,
        ConnectionOptions {
            bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(raw.clone()))),
            max_held_call_bytes: 2048,
            ..Default::default()
        },
    );
    let client = start_connection(b, ConnectionOptions::default());
    {
        let target: Cap<probe::Client> = Cap::from_raw(client.bootstrap(b""));
        let t = target.client();
        // Forty calls that the probe holds: the first ones fit in the
        // budget and wait; the rest are refused at once.
        let pending: Vec<_> = (0..40u64)
            .map(|seq| {
                let t = t.clone();
                tokio::task::spawn_local(async move { call(&t, seq).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let held = log.calls().len();
        assert!((1..40).contains(&held), "{held} calls reached the probe");
        for g in gates {
            let _ = g.send(());
        }
        let mut refused = 0;
        for (seq, p) in pending.into_iter().enumerate() {
            match p.await.unwrap() {
                Ok(s) => assert_eq!(s, seq as u64),
                Err(e) => {
                    assert_eq!(e.kind, capnp::ErrorKind::Overloaded, "{e}");
                    assert!(e.to_string().contains("at most 2048"), "{e}");
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, 40 - held);
        // The budget is free again.
        assert_eq!(call(&t, 99).await.unwrap(), 99);
        assert!(client.is_open() && server.is_open());
    }
    drop(service);
    client.close("test over");
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
}
