//! E-order between calls pipelined on an answer and calls made directly
//! on what the answer returned, over a connection served on an arbiter of
//! its own: the peer pipelines many calls on a capability in a pending
//! answer, receives the answer, then calls the capability directly. Every
//! call must reach the capability in the order it was made.
//!
//! Regression (found 2026-12-07 by `files upload`): with the connection on
//! an arbiter of its own, the probe saw runs like `[(760, 1302), (0,
//! 759), (1303, 3299)]`: the calls queued while the answer was pending
//! were overtaken by later ones, because a pipelined call made once the
//! answer was known went straight to the field while the answer's queue
//! still held earlier calls (`AnswerRef::pipelined_cap` now takes that
//! shortcut only when no queue is left). It failed 3 runs in 4 before the
//! fix, with 2 arbiters; with 1, the queue had always drained in time.

mod support;

use std::time::Duration;

use capnp_actix::restorer::Table;
use capnp_actix::schemas::test_api_capnp::maker;
use capnp_actix::vat::Vat;
use capnp_actix::{Address, Cap, VatConfig};
use futures::channel::oneshot;
use support::{Log, Maker, Probe};

/// Calls pipelined before the answer comes, and made directly after.
const PIPELINED: u64 = 3000;
const DIRECT: u64 = 300;
/// The server's connection on an arbiter of its own, its objects on the
/// test's thread.
const ARBITERS: u16 = 2;

#[actix::test]
async fn calls_made_directly_after_the_answer_follow_those_pipelined_on_it() {
    let path = std::env::temp_dir().join(format!(
        "capnp-actix-pipeline-order-{}.sock",
        std::process::id()
    ));
    let log = Log::default();
    let (tx, rx) = oneshot::channel();
    let maker_server = Maker::default();
    maker_server.pairs.borrow_mut().push(rx);
    let made: Cap<maker::Client> = Cap::new(maker_server);
    let raw = made.raw().clone();
    let config = VatConfig::new()
        .with_tls(false)
        .with_arbiters(ARBITERS)
        .with_listen_address(Address::Unix(path.clone()));
    let server = Vat::start_with(&config, move |uris| {
        let table = Table::new(move |id| uris.sturdy_uri(id));
        table.add(b"main", raw);
        table
    })
    .await
    .unwrap();
    let client_vat = Vat::client(&VatConfig::new().with_tls(false))
        .await
        .unwrap();
    let maker: Cap<maker::Client> = client_vat
        .import_as(&server.sturdy_uri(b"main").unwrap())
        .await
        .unwrap();
    let capnp::capability::RemotePromise { promise, pipeline } =
        maker.client().pair_request().send();
    let first = pipeline.get_pair().get_first();
    let mut replies = Vec::new();
    for seq in 0..PIPELINED {
        let mut req = first.call_request();
        req.get().set_seq(seq);
        replies.push(req.send().promise);
    }
    // The answer: a probe on the server, whose queue of pipelined calls
    // is long.
    let probe = Probe::cap(&log);
    let _ = tx.send((probe.clone(), probe.clone()));
    let answer = promise.await.unwrap();
    let direct = answer
        .get()
        .unwrap()
        .get_pair()
        .unwrap()
        .get_first()
        .unwrap();
    for seq in PIPELINED..PIPELINED + DIRECT {
        let mut req = direct.call_request();
        req.get().set_seq(seq);
        replies.push(req.send().promise);
    }
    for r in replies {
        r.await.unwrap();
    }
    let calls = log.calls();
    let mut ranges = Vec::new();
    for &c in &calls {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == c => *end = c,
            _ => ranges.push((c, c)),
        }
    }

    let expected: Vec<u64> = (0..PIPELINED + DIRECT).collect();
    let first_out_of_order = calls.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(
        first_out_of_order, None,
        "calls reached the probe out of order: runs {ranges:?}"
    );
    drop((probe, made, maker, direct, first, answer, pipeline));
    for vat in [client_vat, server] {
        vat.stop();
    }
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("{r}"));
    let _ = std::fs::remove_file(path);
}
