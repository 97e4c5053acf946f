//! Vats over real sockets: SCENARIOS.md 49-58 with the vat supervisor,
//! TLS identities and restorers.

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capnp_actix::restorer::{Loader, Table};
use capnp_actix::schemas::echo_api_capnp::echo;
use capnp_actix::vat::{Peer, Vat};
use capnp_actix::{Address, Cap, CapRef, SecretKey, SturdyUri, VatAuth, VatConfig};
use echo_service::{EchoService, Sink};
use futures::future::BoxFuture;
use futures::FutureExt;

fn echo_cap() -> Cap<echo::Client> {
    Cap::new(EchoService::new(Duration::from_millis(1), Sink::Stdout))
}

async fn ping(cap: &Cap<echo::Client>, msg: &str) -> Result<String, capnp::Error> {
    let mut req = cap.client().ping_request();
    req.get().set_msg(msg);
    Ok(req.send().promise.await?.get()?.get_reply()?.to_string()?)
}

fn socket_path(name: &str) -> Address {
    Address::Unix(
        std::env::temp_dir().join(format!("capnp-actix-{name}-{}.sock", std::process::id())),
    )
}

fn tcp() -> Address {
    Address::parse("tcp:127.0.0.1:0").unwrap()
}

fn config(address: Address, tls: bool) -> VatConfig {
    VatConfig::new()
        .with_listen_address(address)
        .with_tls(tls)
        .with_secret_key(SecretKey::ephemeral())
}

/// A vat serving the echo service under `main`; returns the vat, the
/// service and its URI.
async fn echo_vat(config: &VatConfig) -> (Vat, Cap<echo::Client>, SturdyUri) {
    let service = echo_cap();
    let raw = service.raw().clone();
    let vat = Vat::start_with(config, move |uris| {
        let table = Table::new(move |id| uris.sturdy_uri(id));
        table.add(b"main", raw);
        table
    })
    .await
    .unwrap();
    let uri = vat.sturdy_uri(b"main").unwrap();
    (vat, service, uri)
}

async fn client_vat(tls: bool) -> Vat {
    Vat::client(&VatConfig::new().with_tls(tls)).await.unwrap()
}

/// Waits until `vat` has exactly `n` connections.
async fn wait_connections(vat: &Vat, n: usize) -> Vec<capnp_actix::vat::ConnectionInfo> {
    for _ in 0..100 {
        let list = vat.connections().await;
        if list.len() == n {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {n} connections, have:\n{}", vat.dump().await);
}

/// Waits for `cap` to break and gives the error.
async fn broken<C>(cap: &Cap<C>) -> capnp::Error {
    let (tx, rx) = futures::channel::oneshot::channel();
    cap.on_broken(move |e| {
        let _ = tx.send(e);
    });
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the capability broke in time")
        .expect("the watcher ran")
}

/// Stops the vats and checks that nothing is left alive.
async fn end(vats: Vec<Vat>) {
    for v in &vats {
        v.stop();
    }
    drop(vats);
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive after the vats stopped:\n{r}"));
}

#[actix::test]
async fn scenario_49_no_tls_import_connect_call() {
    for address in [tcp(), socket_path("49")] {
        let (server, service, uri) = echo_vat(&config(address, false)).await;
        assert_eq!(uri.auth, VatAuth::Insecure);
        let client = client_vat(false).await;
        let cap: Cap<echo::Client> = client.import_as(&uri).await.unwrap();
        assert_eq!(ping(&cap, "foo").await.unwrap(), "echo:foo");
        drop((cap, service));
        end(vec![client, server]).await;
    }
}

#[actix::test]
async fn scenario_50_tls_import_connect_call_and_identities() {
    for address in [tcp(), socket_path("50")] {
        let (server, service, uri) = echo_vat(&config(address, true)).await;
        let VatAuth::Sha256(fp) = uri.auth else {
            panic!("a TLS vat's URI: {uri}")
        };
        assert_eq!(Some(capnp_actix::Fingerprint(fp)), server.fingerprint());
        assert!(uri.to_string().starts_with("capnp://sha-256:"), "{uri}");
        let client = client_vat(true).await;
        let cap: Cap<echo::Client> = client.import_as(&uri).await.unwrap();
        assert_eq!(ping(&cap, "foo").await.unwrap(), "echo:foo");
        // Each side knows the other by its key.
        let theirs = wait_connections(&server, 1).await;
        assert_eq!(theirs[0].peer, Peer::Vat(client.fingerprint().unwrap()));
        assert!(!theirs[0].initiated_by_us);
        let ours = wait_connections(&client, 1).await;
        assert_eq!(ours[0].peer, Peer::Vat(server.fingerprint().unwrap()));
        assert!(ours[0].initiated_by_us);
        drop((cap, service));
        end(vec![client, server]).await;
    }
}

#[actix::test]
async fn scenario_51_wrong_fingerprint_is_refused_and_nothing_else_is_affected() {
    let (server, service, uri) = echo_vat(&config(tcp(), true)).await;
    let client = client_vat(true).await;
    let good: Cap<echo::Client> = client.import_as(&uri).await.unwrap();
    assert_eq!(ping(&good, "before").await.unwrap(), "echo:before");

    // A different key's fingerprint, same address: another "vat".
    let mut wrong = uri.clone();
    wrong.auth = VatAuth::Sha256(SecretKey::ephemeral().fingerprint().0);
    let other = client_vat(true).await;
    let e = other.import(&wrong).await.unwrap_err().to_string();
    assert!(e.contains("TLS authentication failed"), "{e}");
    assert!(e.contains("fingerprint"), "{e}");
    // A failure is not cached: the right URI works from the same vat.
    let again: Cap<echo::Client> = other.import_as(&uri).await.unwrap();
    assert_eq!(ping(&again, "x").await.unwrap(), "echo:x");
    // The first client's connection is untouched.
    assert_eq!(ping(&good, "after").await.unwrap(), "echo:after");
    drop((good, again, service));
    end(vec![client, other, server]).await;
}

#[actix::test]
async fn scenario_52_importing_our_own_uri_gives_the_local_object() {
    for tls in [true, false] {
        let (server, service, uri) = echo_vat(&config(socket_path("52"), tls)).await;
        let cap = server.import(&uri).await.unwrap();
        assert_eq!(&cap, service.raw(), "the local object itself");
        assert!(server.connections().await.is_empty());
        drop((cap, service));
        end(vec![server]).await;
    }
}

#[actix::test]
async fn scenario_53_parallel_connects_share_one_connection() {
    for tls in [true, false] {
        let (server, service, uri) = echo_vat(&config(tcp(), tls)).await;
        let client = client_vat(tls).await;
        let (a, b) = futures::join!(client.import(&uri), client.import(&uri));
        let (a, b): (Cap<echo::Client>, Cap<echo::Client>) =
            (Cap::from_raw(a.unwrap()), Cap::from_raw(b.unwrap()));
        assert_eq!(ping(&a, "a").await.unwrap(), "echo:a");
        assert_eq!(ping(&b, "b").await.unwrap(), "echo:b");
        assert_eq!(client.connections().await.len(), 1);
        wait_connections(&server, 1).await;
        drop((a, b, service));
        end(vec![client, server]).await;
    }
}

#[actix::test]
async fn scenario_54_concurrent_connects_to_a_vat_that_dies_break_alike_then_reconnect() {
    let key = SecretKey::ephemeral();
    let address = socket_path("54");
    let config = config(address, true).with_secret_key(key);
    let (server, service, uri) = echo_vat(&config).await;
    let client = client_vat(true).await;
    let (a, b) = futures::join!(client.import(&uri), client.import(&uri));
    let (a, b): (Cap<echo::Client>, Cap<echo::Client>) =
        (Cap::from_raw(a.unwrap()), Cap::from_raw(b.unwrap()));
    assert_eq!(ping(&a, "a").await.unwrap(), "echo:a");
    server.stop();
    drop((server, service));
    let ea = broken(&a).await;
    let eb = broken(&b).await;
    assert_eq!(ea.kind, capnp::ErrorKind::Disconnected, "{ea}");
    assert_eq!(ea.to_string(), eb.to_string());
    assert_eq!(ping(&b, "x").await.unwrap_err().to_string(), eb.to_string());

    // The same vat again (same key and address): a new import works.
    let (server, service, uri2) = echo_vat(&config).await;
    assert_eq!(uri, uri2, "the URI survives the restart");
    let c: Cap<echo::Client> = client.import_as(&uri).await.unwrap();
    assert_eq!(ping(&c, "again").await.unwrap(), "echo:again");
    drop((a, b, c, service));
    end(vec![client, server]).await;
}

#[actix::test]
async fn scenario_55_crossed_connections_ten_times() {
    for round in 0..10 {
        let (a, sa, ua) = echo_vat(&config(tcp(), true)).await;
        let (b, sb, ub) = echo_vat(&config(tcp(), true)).await;
        // Both connect to each other at the same moment.
        let (to_b, to_a) = futures::join!(a.import(&ub), b.import(&ua));
        let (to_b, to_a): (Cap<echo::Client>, Cap<echo::Client>) =
            (Cap::from_raw(to_b.unwrap()), Cap::from_raw(to_a.unwrap()));
        let (pb, pa) = futures::join!(ping(&to_b, "b"), ping(&to_a, "a"));
        assert_eq!(pb.unwrap(), "echo:b", "round {round}");
        assert_eq!(pa.unwrap(), "echo:a", "round {round}");
        drop((to_a, to_b));
        // In the end one connection is left, the one opened by the vat
        // with the greater fingerprint, and both agree on it.
        let ca = wait_connections(&a, 1).await;
        let cb = wait_connections(&b, 1).await;
        let a_wins = a.fingerprint() > b.fingerprint();
        assert_eq!(ca[0].initiated_by_us, a_wins, "round {round}");
        assert_eq!(cb[0].initiated_by_us, !a_wins, "round {round}");
        // And it still works.
        let again: Cap<echo::Client> = a.import_as(&ub).await.unwrap();
        assert_eq!(ping(&again, "c").await.unwrap(), "echo:c");
        drop((again, sa, sb));
        end(vec![a, b]).await;
    }
}

#[actix::test]
async fn scenario_56_a_vat_killed_under_a_held_capability() {
    let (server, service, uri) = echo_vat(&config(tcp(), true)).await;
    let client = client_vat(true).await;
    let cap: Cap<echo::Client> = client.import_as(&uri).await.unwrap();
    assert_eq!(ping(&cap, "a").await.unwrap(), "echo:a");
    let fired = Arc::new(Mutex::new(None));
    let f = fired.clone();
    cap.on_broken(move |e| *f.lock().unwrap() = Some(e));
    server.stop();
    drop((server, service));
    let e = broken(&cap).await;
    assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
    let later = ping(&cap, "b").await.unwrap_err();
    assert_eq!(later.kind, capnp::ErrorKind::Disconnected, "{later}");
    let watched = fired.lock().unwrap().clone().expect("the watcher fired");
    assert_eq!(watched.kind, capnp::ErrorKind::Disconnected);
    // The client forgets the dead connection.
    wait_connections(&client, 0).await;
    drop(cap);
    end(vec![client]).await;
}

/// A loader held open until told to finish.
struct GatedLoader {
    gate: Mutex<Option<futures::channel::oneshot::Receiver<()>>>,
    loads: AtomicUsize,
    finished: Arc<AtomicUsize>,
}

impl Loader for GatedLoader {
    fn load(
        &self,
        _uri: SturdyUri,
        _digest: [u8; 32],
    ) -> BoxFuture<'static, Result<CapRef, capnp::Error>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let gate = self.gate.lock().unwrap().take();
        let finished = self.finished.clone();
        async move {
            if let Some(g) = gate {
                let _ = g.await;
            }
            finished.fetch_add(1, Ordering::SeqCst);
            Ok(echo_cap().raw().clone())
        }
        .boxed()
    }
}

#[actix::test]
async fn scenario_57_client_leaves_while_the_loader_runs() {
    let (open, gate) = futures::channel::oneshot::channel();
    let finished = Arc::new(AtomicUsize::new(0));
    let loader = GatedLoader {
        gate: Mutex::new(Some(gate)),
        loads: AtomicUsize::new(0),
        finished: finished.clone(),
    };
    let server = Vat::start_with(&config(tcp(), true), move |uris| {
        Table::with_loader(move |id| uris.sturdy_uri(id), loader)
    })
    .await
    .unwrap();
    let uri = server.sturdy_uri(b"saved").unwrap();
    let client = client_vat(true).await;
    let cap: Cap<echo::Client> = client.import_as(&uri).await.unwrap();
    let call = {
        let cap = cap.clone();
        actix::spawn(async move { ping(&cap, "x").await })
    };
    wait_connections(&server, 1).await;
    client.stop();
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
    wait_connections(&server, 0).await;
    // The loader finishes after its client left: nothing breaks.
    open.send(()).unwrap();
    for _ in 0..100 {
        if finished.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(finished.load(Ordering::SeqCst), 1);
    // The server still serves others.
    let other = client_vat(true).await;
    let again: Cap<echo::Client> = other.import_as(&uri).await.unwrap();
    assert_eq!(ping(&again, "y").await.unwrap(), "echo:y");
    drop((cap, again));
    end(vec![other, server]).await;
}

#[actix::test]
async fn scenario_58_after_disconnect_every_table_is_empty() {
    let (server, service, uri) = echo_vat(&config(tcp(), true)).await;
    let client = client_vat(true).await;
    let cap: Cap<echo::Client> = client.import_as(&uri).await.unwrap();
    // A pipelined capability and a pending heartbeat hold entries on
    // both sides.
    let logger = cap
        .client()
        .get_logger_request()
        .send()
        .pipeline
        .get_callback();
    let mut log = logger.log_request();
    log.get().set_msg("hi");
    log.send().promise.await.unwrap();
    let busy = wait_connections(&server, 1).await;
    assert!(busy[0].tables.exports > 0, "{}", busy[0].dump);
    client.stop();
    wait_connections(&server, 0).await;
    wait_connections(&client, 0).await;
    let e = ping(&cap, "x").await.unwrap_err();
    assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
    drop((cap, logger, service));
    end(vec![server]).await;
}

#[actix::test]
async fn a_listener_that_fails_is_restarted_on_the_same_address() {
    for address in [tcp(), socket_path("restart")] {
        let (server, service, uri) = echo_vat(&config(address, true)).await;
        let first = client_vat(true).await;
        let a: Cap<echo::Client> = first.import_as(&uri).await.unwrap();
        assert_eq!(ping(&a, "before").await.unwrap(), "echo:before");
        server.fail_listeners_for_test();
        // Accepted connections are not the listener's: they go on.
        assert_eq!(ping(&a, "during").await.unwrap(), "echo:during");
        // After the backoff the address is bound again.
        let second = client_vat(true).await;
        let mut reply = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok(b) = second.import_as::<echo::Client>(&uri).await {
                if let Ok(r) = ping(&b, "after").await {
                    reply = Some(r);
                    break;
                }
            }
        }
        assert_eq!(reply.as_deref(), Some("echo:after"));
        drop((a, service));
        end(vec![first, second, server]).await;
    }
}

#[actix::test]
async fn a_plain_connection_to_a_tls_vat_says_the_peer_speaks_tls() {
    let (server, service, uri) = echo_vat(&config(tcp(), true)).await;
    // The same address, asked for without TLS (a user's slip): the vat
    // answers the plain bytes with a TLS alert.
    let mut plain = uri.clone();
    plain.auth = VatAuth::Insecure;
    let client = client_vat(false).await;
    let cap: Cap<echo::Client> = client.import_as(&plain).await.expect("import");
    let e = tokio::time::timeout(Duration::from_secs(10), ping(&cap, "x"))
        .await
        .expect("the call ends")
        .expect_err("a TLS vat does not speak plain Cap'n Proto");
    let reason = e.to_string();
    assert!(
        reason.contains("the peer speaks TLS") && reason.contains("sha-256"),
        "{reason}"
    );
    drop((cap, service));
    end(vec![client, server]).await;
}

#[actix::test]
async fn a_tls_peer_that_vanishes_is_reported_without_the_tls_library_s_text() {
    use tokio::io::AsyncReadExt;
    // A "vat" that completes the TLS handshake, reads what the client
    // sends, then vanishes: its socket closes without a TLS close_notify,
    // as when a process is killed.
    let key = SecretKey::ephemeral();
    let acceptor = capnp_actix::tls::Acceptor::new(&key).expect("an acceptor");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let vanishing = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut tls, _) = acceptor.accept(tcp).await.expect("the handshake");
        let mut buf = vec![0u8; 4096];
        // Everything the client sends before it waits for answers.
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), tls.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
        }
        let (tcp, _) = tls.into_inner();
        drop(tcp);
    });
    let uri = SturdyUri {
        auth: VatAuth::Sha256(key.fingerprint().0),
        address: Address::parse(&format!("tcp:127.0.0.1:{port}")).unwrap(),
        service_id: b"main".to_vec(),
    };
    let client = client_vat(true).await;
    let cap: Cap<echo::Client> = client.import_as(&uri).await.expect("import");
    let e = tokio::time::timeout(Duration::from_secs(10), ping(&cap, "x"))
        .await
        .expect("the call ends")
        .expect_err("the peer vanished");
    assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
    let reason = e.to_string();
    assert!(
        reason.contains("without ending it cleanly") && !reason.contains("docs.rs"),
        "{reason}"
    );
    vanishing.await.unwrap();
    drop(cap);
    end(vec![client]).await;
}

/// A TCP address on which nothing listens (bound, read, released).
fn closed_port() -> Address {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    Address::parse(&format!("tcp:127.0.0.1:{}", l.local_addr().unwrap().port())).unwrap()
}

#[actix::test]
async fn connect_failures_name_the_address_they_were_connecting_to() {
    let client = client_vat(true).await;
    let prefix = |a: &Address| format!("connecting to {a}: ");

    // Nothing listens: TLS and plain URIs alike, the address once.
    let closed = closed_port();
    for auth in [
        VatAuth::Sha256(SecretKey::ephemeral().fingerprint().0),
        VatAuth::Insecure,
    ] {
        let uri = SturdyUri {
            auth,
            address: closed.clone(),
            service_id: b"main".to_vec(),
        };
        let e = client.import(&uri).await.unwrap_err();
        assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
        let reason = e.to_string();
        assert!(reason.contains(&prefix(&closed)), "{uri}: {reason}");
        assert_eq!(reason.matches(&closed.to_string()).count(), 1, "{reason}");
    }

    // A TLS vat that shows another key: the handshake's failure, with the
    // address (an early return used to drop it).
    let (server, service, uri) = echo_vat(&config(tcp(), true)).await;
    let mut wrong = uri.clone();
    wrong.auth = VatAuth::Sha256(SecretKey::ephemeral().fingerprint().0);
    let reason = client.import(&wrong).await.unwrap_err().to_string();
    assert!(
        reason.contains(&format!(
            "{}TLS authentication failed",
            prefix(&uri.address)
        )),
        "{reason}"
    );

    // A plain vat where a TLS one was expected: the handshake fails, and
    // says where.
    let (plain_server, plain_service, plain_uri) = echo_vat(&config(tcp(), false)).await;
    let mut as_tls = plain_uri.clone();
    as_tls.auth = VatAuth::Sha256(SecretKey::ephemeral().fingerprint().0);
    let reason = tokio::time::timeout(Duration::from_secs(15), client.import(&as_tls))
        .await
        .expect("the handshake ends")
        .unwrap_err()
        .to_string();
    assert!(reason.contains(&prefix(&plain_uri.address)), "{reason}");

    drop((service, plain_service));
    end(vec![client, server, plain_server]).await;
}
