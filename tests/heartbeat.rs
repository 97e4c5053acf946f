//! Dead-peer detection (issue 15, item 3): a connection with a heartbeat
//! probes a silent peer with a bootstrap request, which every peer
//! answers, and declares a peer that stays silent dead: its capabilities
//! break with Disconnected, naming the heartbeat, and their watchers run.
//! The interop tests check that pycapnp and the capnp-rpc crate answer the
//! probes (and that a paused pycapnp is declared dead).

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::time::{Duration, Instant};

use capnp_actix::restorer::Table;
use capnp_actix::schemas::echo_api_capnp::echo;
use capnp_actix::vat::Vat;
use capnp_actix::{Address, Cap, SecretKey, SturdyUri, VatAuth, VatConfig};
use echo_service::{EchoService, Sink};
use tokio::io::AsyncReadExt;

const BEAT: Duration = Duration::from_millis(100);

fn socket(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "capnp-actix-heartbeat-{name}-{}.sock",
        std::process::id()
    ))
}

async fn ping(cap: &Cap<echo::Client>, msg: &str) -> Result<String, capnp::Error> {
    let mut req = cap.client().ping_request();
    req.get().set_msg(msg);
    Ok(req.send().promise.await?.get()?.get_reply()?.to_string()?)
}

/// The error `cap` breaks with, as its `on_broken` watcher sees it.
fn broken(cap: &Cap<echo::Client>) -> futures::channel::oneshot::Receiver<capnp::Error> {
    let (tx, rx) = futures::channel::oneshot::channel();
    cap.on_broken(move |e| {
        let _ = tx.send(e);
    });
    rx
}

async fn all_released() {
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
}

#[actix::test]
async fn a_peer_that_accepts_and_never_answers_is_declared_dead() {
    let path = socket("silent");
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    // The "peer": reads whatever comes and never writes a byte.
    let silent = actix::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let vat = Vat::client(&VatConfig::new().with_tls(false).with_heartbeat(Some(BEAT)))
        .await
        .unwrap();
    let uri = SturdyUri {
        auth: VatAuth::Insecure,
        address: Address::Unix(path.clone()),
        service_id: b"main".to_vec(),
    };
    let started = Instant::now();
    let cap: Cap<echo::Client> = vat.import_as(&uri).await.unwrap();
    let watcher = broken(&cap);
    let call = ping(&cap, "anyone there?");
    let e = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call fails once the peer is declared dead")
        .expect_err("nobody answers");
    let elapsed = started.elapsed();
    assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
    assert!(e.to_string().contains("heartbeat"), "{e}");
    // A probe after 100 ms of silence, then 100 ms more without a word.
    assert!(elapsed >= 2 * BEAT, "declared dead after {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(2),
        "declared dead after {elapsed:?}"
    );
    let seen = tokio::time::timeout(Duration::from_secs(1), watcher)
        .await
        .expect("the watcher runs")
        .unwrap();
    assert!(seen.to_string().contains("not answering"), "{seen}");
    silent.abort();
    drop(cap);
    vat.stop();
    drop(vat);
    all_released().await;
    let _ = std::fs::remove_file(path);
}

#[actix::test]
async fn two_vats_with_heartbeats_answer_each_other_s_probes_and_end_with_empty_tables() {
    let path = socket("vats");
    let config = VatConfig::new()
        .with_secret_key(SecretKey::ephemeral())
        .with_listen_address(Address::Unix(path.clone()))
        .with_heartbeat(Some(BEAT));
    let service: Cap<echo::Client> = Cap::new(EchoService::new(
        Duration::from_millis(1),
        Sink::Memory(Default::default()),
    ));
    let raw = service.raw().clone();
    let server = Vat::start_with(&config, move |uris| {
        let table = Table::new(move |id| uris.sturdy_uri(id));
        table.add(b"main", raw);
        table
    })
    .await
    .unwrap();
    let client = Vat::client(
        &VatConfig::new()
            .with_secret_key(SecretKey::ephemeral())
            .with_heartbeat(Some(BEAT)),
    )
    .await
    .unwrap();
    let cap: Cap<echo::Client> = client
        .import_as(&server.sturdy_uri(b"main").unwrap())
        .await
        .unwrap();
    assert_eq!(ping(&cap, "one").await.unwrap(), "echo:one");
    // Ten intervals of silence: without answers to the probes, either side
    // would have declared the other dead after two.
    tokio::time::sleep(10 * BEAT).await;
    assert_eq!(ping(&cap, "two").await.unwrap(), "echo:two");
    drop(cap);
    // The probes' questions were all finished and their answers released:
    // once the import is gone, every table is empty on both sides.
    let mut tables = Vec::new();
    for _ in 0..100 {
        tables = [client.connections().await, server.connections().await]
            .into_iter()
            .flatten()
            .map(|c| c.tables)
            .collect();
        if tables
            .iter()
            .all(|t| t.questions + t.answers + t.imports + t.exports == 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tables.len(), 2, "one connection, seen from each side");
    for t in &tables {
        assert_eq!(
            t.questions + t.answers + t.imports + t.exports + t.embargoes,
            0,
            "{t:?}"
        );
    }
    drop(service);
    for vat in [client, server] {
        vat.stop();
    }
    all_released().await;
    let _ = std::fs::remove_file(path);
}
