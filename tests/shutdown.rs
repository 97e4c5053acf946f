//! One call to serve (`Vat::builder`) and the graceful shutdown
//! (`Vat::shutdown`): service IDs with and without TLS, the URIs the
//! builder gives, its errors; running calls finishing within the grace
//! period while new ones are refused, the reason reaching the peer, calls
//! cut off after the grace period, and nothing left alive.

mod support;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use capnp_actix::schemas::test_api_capnp::probe;
use capnp_actix::vat::{ServiceUris, Vat, VatError, SHUTTING_DOWN};
use capnp_actix::{Address, Cap, SecretKey, SturdyUri, VatAuth, VatConfig};
use futures::channel::oneshot;
use futures::FutureExt;
use support::{call, Log, Probe};

fn socket(name: &str) -> Address {
    Address::Unix(std::env::temp_dir().join(format!(
        "capnp-actix-shutdown-{name}-{}.sock",
        std::process::id()
    )))
}

/// Shuts the vats down (again, for those already shut down), drops them
/// and checks that nothing is left alive.
async fn end<const N: usize>(vats: [Vat; N]) {
    for vat in &vats {
        vat.shutdown(Duration::from_secs(1)).await;
    }
    drop(vats);
    all_released().await;
}

async fn all_released() {
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
}

/// A probe whose call `seq` waits for the gate the test keeps.
fn gated_probe(log: &Log, seq: u64) -> (Cap<probe::Client>, oneshot::Sender<()>) {
    let (open, gate) = oneshot::channel();
    let probe = Probe {
        log: log.clone(),
        gates: RefCell::new(vec![(seq, gate)]),
    };
    (Cap::new(probe), open)
}

/// Calls `seq` on the service at `uri` through `client`.
async fn call_at(client: &Vat, uri: &SturdyUri, seq: u64) -> Result<u64, capnp::Error> {
    let cap: Cap<probe::Client> = client.import_as(uri).await?;
    call(&cap.client(), seq).await
}

/// Waits until the probes of `log` have started call `seq`.
async fn started(log: &Log, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.calls().contains(&seq) {
        assert!(Instant::now() < deadline, "call {seq} never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `uris[name]`'s service ID.
fn id_of(uris: &ServiceUris, name: &str) -> Vec<u8> {
    uris[name].service_id.clone()
}

#[actix::test]
async fn with_tls_the_builder_serves_named_services_under_the_reference_derived_ids() {
    let log = Log::default();
    let key = SecretKey::generate().unwrap();
    let config = VatConfig::new()
        .with_secret_key(key.clone())
        .with_listen_address(socket("tls"))
        .with_arbiters(2);
    let per_log = log.clone();
    let (vat, uris) = Vat::builder(&config)
        .serve("main", Probe::cap(&log))
        .serve_per_arbiter::<probe::Client, _, _>("per", move || Probe::new(&per_log))
        .serve_public("public", Probe::cap(&log))
        .default_without_tls("main")
        .start()
        .await
        .unwrap();
    // Derived as the reference's `Vat_config.derived_id config name`
    // does: HMAC-SHA256 keyed with SHA-256 of the key's PEM.
    assert_eq!(id_of(&uris, "main"), key.derived_id(b"main"));
    assert_eq!(id_of(&uris, "per"), key.derived_id(b"per"));
    assert_eq!(id_of(&uris, "public"), b"public".to_vec());
    let names: Vec<&str> = uris.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["main", "per", "public"], "no empty ID with TLS");
    for (_, uri) in uris.iter() {
        assert_eq!(uri.auth, VatAuth::Sha256(key.fingerprint().0));
        assert_eq!(Some(&uri.address), vat.address());
    }
    let client = Vat::client(&VatConfig::new()).await.unwrap();
    assert_eq!(call_at(&client, &uris["main"], 1).await.unwrap(), 1);
    assert_eq!(call_at(&client, &uris["per"], 2).await.unwrap(), 2);
    assert_eq!(call_at(&client, &uris["public"], 3).await.unwrap(), 3);
    let mut empty = uris["main"].clone();
    empty.service_id.clear();
    let e = call_at(&client, &empty, 4).await.unwrap_err();
    assert!(
        e.to_string().contains("Unknown persistent service ID"),
        "{e}"
    );
    end([vat, client]).await;
}

#[actix::test]
async fn without_tls_ids_are_the_names_and_the_default_answers_the_empty_id() {
    let log = Log::default();
    let config = VatConfig::new()
        .with_tls(false)
        .with_listen_address(socket("plain"));
    let (vat, uris) = Vat::builder(&config)
        .serve("main", Probe::cap(&log))
        .default_without_tls("main")
        .start()
        .await
        .unwrap();
    assert_eq!(id_of(&uris, "main"), b"main".to_vec());
    assert_eq!(uris[""].service_id, Vec::<u8>::new());
    assert_eq!(uris["main"].auth, VatAuth::Insecure);
    // Through another vat, and as a client that sends no ID.
    let client = Vat::client(&VatConfig::new()).await.unwrap();
    assert_eq!(call_at(&client, &uris["main"], 1).await.unwrap(), 1);
    let anonymous: Cap<probe::Client> =
        Cap::from_raw(capnp_actix::vat::import(&uris[""]).await.unwrap());
    assert_eq!(call(&anonymous.client(), 2).await.unwrap(), 2);
    assert_eq!(log.calls(), [1, 2], "one service under both IDs");
    drop(anonymous);
    end([vat, client]).await;
}

#[actix::test]
async fn without_tls_ids_can_be_derived_as_the_reference_does() {
    let log = Log::default();
    let key = SecretKey::generate().unwrap();
    let config = VatConfig::new()
        .with_tls(false)
        .with_secret_key(key.clone())
        .with_listen_address(socket("derived-plain"));
    let (vat, uris) = Vat::builder(&config)
        .serve_with(move |s| {
            let uri = s.serve("main", Probe::cap(&log));
            assert_eq!(uri, s.uri("main"));
        })
        .derive_ids_without_tls()
        .start()
        .await
        .unwrap();
    assert_eq!(id_of(&uris, "main"), key.derived_id(b"main"));
    assert_eq!(uris["main"].auth, VatAuth::Insecure);
    let client = Vat::client(&VatConfig::new()).await.unwrap();
    assert_eq!(call_at(&client, &uris["main"], 7).await.unwrap(), 7);
    end([vat, client]).await;
}

#[actix::test]
async fn the_builder_names_what_is_wrong() {
    let log = Log::default();
    let plain = VatConfig::new().with_tls(false);
    let e = Vat::builder(&plain)
        .serve("main", Probe::cap(&log))
        .start()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no --capnp-listen-address"), "{e}");
    let config = plain.with_listen_address(socket("errors"));
    let twice = Vat::builder(&config)
        .serve("main", Probe::cap(&log))
        .serve("main", Probe::cap(&log))
        .start()
        .await;
    match twice {
        Err(VatError::Services(e)) => assert!(e.contains("\"main\" is served twice"), "{e}"),
        other => panic!("expected a Services error, got {other:?}"),
    }
    let unknown = Vat::builder(&config)
        .serve("main", Probe::cap(&log))
        .default_without_tls("other")
        .start()
        .await;
    match unknown {
        Err(VatError::Services(e)) => assert!(e.contains("\"other\""), "{e}"),
        other => panic!("expected a Services error, got {other:?}"),
    }
    all_released().await;
}

#[actix::test]
async fn shutdown_lets_a_running_call_finish_refuses_new_ones_and_tells_the_peer() {
    let log = Log::default();
    let (slow, open) = gated_probe(&log, 1);
    let config = VatConfig::new()
        .with_listen_address(socket("graceful"))
        .with_arbiters(2);
    let (vat, uris) = Vat::builder(&config)
        .serve("main", slow)
        .start()
        .await
        .unwrap();
    let uri = uris["main"].clone();
    let client = Vat::client(&VatConfig::new()).await.unwrap();
    let cap: Cap<probe::Client> = client.import_as(&uri).await.unwrap();
    let conn = client.connection_to(&uri).await.unwrap();
    let running = actix_rt::spawn({
        let client = cap.client();
        async move { call(&client, 1).await }
    });
    started(&log, 1).await;

    let shutting = vat.clone();
    let began = Instant::now();
    let mut shutdown =
        actix_rt::spawn(async move { shutting.shutdown(Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // New calls from the peer fail while the first one runs...
    let refused = call(&cap.client(), 2).await.unwrap_err();
    assert_eq!(refused.kind, capnp::ErrorKind::Disconnected, "{refused}");
    assert!(refused.to_string().contains(SHUTTING_DOWN), "{refused}");
    // ...and nobody new gets in: the vat no longer listens.
    let other = Vat::client(&VatConfig::new()).await.unwrap();
    assert!(call_at(&other, &uri, 3).await.is_err());
    other.stop();
    assert!((&mut shutdown).now_or_never().is_none(), "shutdown waits");

    // The running call finishes and its reply reaches the client.
    open.send(()).unwrap();
    assert_eq!(running.await.unwrap().unwrap(), 1);
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown returns once the call is answered")
        .unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "well within the grace"
    );
    assert_eq!(log.calls(), [1], "the refused call never ran");

    // Every connection has ended and written its last bytes.
    assert!(vat.arbiters().loads().iter().all(|&l| l == 0));
    let reason = tokio::time::timeout(Duration::from_secs(2), conn.closed())
        .await
        .expect("the client's connection ends");
    assert_eq!(reason.kind, capnp::ErrorKind::Disconnected, "{reason}");
    assert!(reason.to_string().contains(SHUTTING_DOWN), "{reason}");
    let e = call(&cap.client(), 4).await.unwrap_err();
    assert!(e.to_string().contains(SHUTTING_DOWN), "{e}");

    drop((cap, conn));
    end([vat, client, other]).await;
}

#[actix::test]
async fn calls_still_running_after_the_grace_period_are_cut_off() {
    let log = Log::default();
    let (slow, _never) = gated_probe(&log, 1);
    let config = VatConfig::new()
        .with_tls(false)
        .with_listen_address(socket("cut-off"));
    let (vat, uris) = Vat::builder(&config)
        .serve("main", slow)
        .start()
        .await
        .unwrap();
    let client = Vat::client(&VatConfig::new()).await.unwrap();
    let cap: Cap<probe::Client> = client.import_as(&uris["main"]).await.unwrap();
    let running = actix_rt::spawn({
        let client = cap.client();
        async move { call(&client, 1).await }
    });
    started(&log, 1).await;
    let grace = Duration::from_millis(300);
    let began = Instant::now();
    vat.shutdown(grace).await;
    let took = began.elapsed();
    assert!(
        took >= grace,
        "returned after {took:?}, before the grace period"
    );
    assert!(took < grace + Duration::from_secs(3), "took {took:?}");
    let e = tokio::time::timeout(Duration::from_secs(2), running)
        .await
        .expect("the cut-off call fails")
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
    assert!(e.to_string().contains(SHUTTING_DOWN), "{e}");
    assert!(client.connections().await.is_empty());
    drop(cap);
    end([vat, client]).await;
}

#[actix::test]
async fn shutdown_is_idempotent_and_works_from_any_thread() {
    let log = Log::default();
    let config = VatConfig::new()
        .with_tls(false)
        .with_listen_address(socket("threads"))
        .with_arbiters(2);
    let (vat, uris) = Vat::builder(&config)
        .serve("main", Probe::cap(&log))
        .start()
        .await
        .unwrap();
    let client = Vat::client(&VatConfig::new()).await.unwrap();
    assert_eq!(call_at(&client, &uris["main"], 1).await.unwrap(), 1);
    let elsewhere = vat.clone();
    let thread = std::thread::spawn(move || {
        futures::executor::block_on(elsewhere.shutdown(Duration::from_secs(1)))
    });
    vat.shutdown(Duration::from_secs(1)).await;
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    // Once more, and after `stop`: both return at once.
    tokio::time::timeout(
        Duration::from_millis(500),
        vat.shutdown(Duration::from_secs(1)),
    )
    .await
    .expect("a second shutdown returns at once");
    vat.stop();
    vat.stopped().await;
    // The client heard why and let go of the connection.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !client.connections().await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the client still has a connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.stop();
    client.stopped().await;
    drop((vat, client));
    all_released().await;
}
