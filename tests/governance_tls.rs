//! Connection governance with TLS (issue 13, item 3): the per-peer limit
//! counts a TLS client by its key's fingerprint. Over a Unix socket, where
//! there is no client address, only the key can tell two clients apart.

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::time::Duration;

use capnp_actix::identity::SecretKey;
use capnp_actix::restorer::Table;
use capnp_actix::schemas::echo_api_capnp::echo;
use capnp_actix::vat::Vat;
use capnp_actix::{Address, Cap, VatConfig};
use echo_service::{EchoService, Sink};

async fn ping(cap: &Cap<echo::Client>, msg: &str) -> Result<String, capnp::Error> {
    let mut req = cap.client().ping_request();
    req.get().set_msg(msg);
    Ok(req.send().promise.await?.get()?.get_reply()?.to_string()?)
}

/// A client vat with this key; its import of the server's URI.
async fn client(key: &SecretKey, server: &Vat) -> (Vat, Cap<echo::Client>) {
    let vat = Vat::client(&VatConfig::new().with_secret_key(key.clone()))
        .await
        .expect("the client vat starts");
    let uri = server.sturdy_uri(b"main").expect("a URI");
    let cap = vat.import_as(&uri).await.expect("import");
    (vat, cap)
}

#[actix::test]
async fn over_the_per_key_limit_a_tls_client_is_told_why() {
    let socket = std::env::temp_dir().join(format!(
        "capnp-actix-governance-tls-{}.sock",
        std::process::id()
    ));
    let config = VatConfig::new()
        .with_secret_key(SecretKey::ephemeral())
        .with_listen_address(Address::Unix(socket.clone()))
        .with_max_connections_per_peer(1);
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
    .expect("the server starts");

    // Two client vats with the same key: one peer for the server.
    let key = SecretKey::ephemeral();
    let (first_vat, first) = client(&key, &server).await;
    assert_eq!(ping(&first, "one").await.unwrap(), "echo:one");
    let (second_vat, second) = client(&key, &server).await;
    let e = tokio::time::timeout(Duration::from_secs(20), ping(&second, "two"))
        .await
        .expect("the refused client learns it")
        .expect_err("a second connection with the same key is refused");
    let reason = e.to_string();
    assert!(
        reason.contains("client key") && reason.contains("--capnp-max-connections-per-peer"),
        "{reason}"
    );
    assert_eq!(e.kind, capnp::ErrorKind::Overloaded, "{e}");

    // Another key is another peer; the first client is still served.
    let (third_vat, third) = client(&SecretKey::ephemeral(), &server).await;
    assert_eq!(ping(&third, "three").await.unwrap(), "echo:three");
    assert_eq!(ping(&first, "again").await.unwrap(), "echo:again");

    drop((first, second, third, service));
    for vat in [first_vat, second_vat, third_vat, server] {
        vat.stop();
    }
    capnp_actix::debug::assert_all_released().await;
    let _ = std::fs::remove_file(socket);
}

/// A TLS server vat on a Unix socket serving an echo service as `main`,
/// with a memory budget of `budget` bytes.
async fn server_with_budget(socket: &std::path::Path, budget: usize) -> (Vat, Cap<echo::Client>) {
    let config = VatConfig::new()
        .with_secret_key(SecretKey::ephemeral())
        .with_listen_address(Address::Unix(socket.to_path_buf()))
        .with_memory_budget(budget);
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
    .expect("the server starts");
    (server, service)
}

#[actix::test]
async fn tls_handshakes_in_progress_count_against_the_memory_budget() {
    let socket = std::env::temp_dir().join(format!(
        "capnp-actix-governance-handshakes-{}.sock",
        std::process::id()
    ));
    // Room for one handshake (64 KiB each) and a bit.
    let (server, service) = server_with_budget(&socket, 100 << 10).await;
    // Two clients that connect and never say hello: their handshakes wait
    // (for up to 10 s), each holding its share of the budget.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(tokio::net::UnixStream::connect(&socket).await.unwrap());
    }
    // The vat has accepted both before the next client comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (refused_vat, refused) = client(&SecretKey::ephemeral(), &server).await;
    let e = tokio::time::timeout(Duration::from_secs(20), ping(&refused, "no room"))
        .await
        .expect("the refused client learns it")
        .expect_err("no new connection while the budget is exhausted");
    assert_eq!(e.kind, capnp::ErrorKind::Overloaded, "{e}");
    assert!(
        e.to_string().contains("memory budget is exhausted")
            && e.to_string().contains("--capnp-memory-budget"),
        "{e}"
    );
    // Once the stalled clients leave, their shares come back and a new
    // client is served.
    drop(stalled);
    let mut served = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (vat, cap) = client(&SecretKey::ephemeral(), &server).await;
        match ping(&cap, "room again").await {
            Ok(reply) => {
                served = Some((vat, cap, reply));
                break;
            }
            Err(_) => vat.stop(),
        }
    }
    let (served_vat, served_cap, reply) = served.expect("served once the handshakes ended");
    assert_eq!(reply, "echo:room again");
    drop((refused, served_cap, service));
    for vat in [refused_vat, served_vat, server] {
        vat.stop();
    }
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("{r}"));
    let _ = std::fs::remove_file(socket);
}
