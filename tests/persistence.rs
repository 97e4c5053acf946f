//! Persistence (issue 4 item 5): `with_sturdy_ref` answers
//! `Persistent.save` with its URI and forwards every other call;
//! capabilities without persistence answer Unimplemented; `save` over the
//! wire gives back exactly the URI the vat serves, and that URI can be
//! imported again; `save_client` on generated clients, pipelined on a
//! capability not yet returned; the echo service's `getLogger` logger,
//! persistent as in the reference tutorial, saved and used again after a
//! restart.
//!
//! Every test stops its vats, drops everything, and checks that nothing is
//! left alive.

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capnp_actix::identity::generated_service_id;
use capnp_actix::persist::{save, save_client, with_sturdy_ref};
use capnp_actix::restorer::{digest, Table};
use capnp_actix::schemas::echo_api_capnp::{callback, echo};
use capnp_actix::vat::Vat;
use capnp_actix::{Address, Cap, CapRef, SecretKey, SturdyUri, VatAuth, VatConfig};
use echo_service::{EchoService, Logger, Sink};
use futures::future::BoxFuture;
use futures::FutureExt;

/// What loggers write, in memory.
type Lines = Arc<Mutex<Vec<String>>>;

fn echo_cap(lines: &Lines) -> Cap<echo::Client> {
    Cap::new(EchoService::new(
        Duration::from_millis(1),
        Sink::Memory(lines.clone()),
    ))
}

async fn ping(echo: &echo::Client, msg: &str) -> Result<String, capnp::Error> {
    let mut req = echo.ping_request();
    req.get().set_msg(msg);
    Ok(req.send().promise.await?.get()?.get_reply()?.to_string()?)
}

async fn log(logger: &callback::Client, msg: &str) -> Result<(), capnp::Error> {
    let mut req = logger.log_request();
    req.get().set_msg(msg);
    req.send().promise.await.map(drop)
}

fn socket_path(name: &str) -> Address {
    Address::Unix(std::env::temp_dir().join(format!(
        "capnp-actix-persistence-{name}-{}.sock",
        std::process::id()
    )))
}

fn tcp() -> Address {
    Address::parse("tcp:127.0.0.1:0").unwrap()
}

/// A TLS vat's configuration, with an ephemeral key.
fn tls_config(address: Address) -> VatConfig {
    VatConfig::new()
        .with_listen_address(address)
        .with_secret_key(SecretKey::ephemeral())
}

/// A client-only vat with TLS and an ephemeral key of its own.
async fn client_vat() -> Vat {
    Vat::client(&VatConfig::new()).await.unwrap()
}

/// A server vat whose restorer is a [`Table`], returned with it.
async fn table_vat(config: &VatConfig) -> (Vat, Table) {
    let mut table = None;
    let vat = Vat::start_with(config, |uris| {
        let t = Table::new(move |id| uris.sturdy_uri(id));
        table = Some(t.clone());
        t
    })
    .await
    .unwrap();
    (vat, table.unwrap())
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

fn assert_unimplemented(result: Result<SturdyUri, capnp::Error>, what: &str) {
    match result {
        Ok(uri) => panic!("{what}: save answered {uri}"),
        Err(e) => assert_eq!(e.kind, capnp::ErrorKind::Unimplemented, "{what}: {e}"),
    }
}

#[actix::test]
async fn with_sturdy_ref_answers_save_locally_and_forwards_other_calls() {
    let lines = Lines::default();
    let service = echo_cap(&lines);
    let uri: SturdyUri = format!(
        "capnp://sha-256:{}@/run/calc.sock/bWFpbg",
        SecretKey::ephemeral().fingerprint()
    )
    .parse()
    .unwrap();
    let wrapped = with_sturdy_ref(service.raw().clone(), &uri);

    // `save` is answered by the wrapper, with exactly that URI, through the
    // untyped and the typed entry points.
    assert_eq!(save(&wrapped).await.unwrap(), uri);
    let echo: echo::Client = Cap::<echo::Client>::from_raw(wrapped.clone()).client();
    let saved = save_client(&echo).await.unwrap();
    assert_eq!(saved.to_string(), uri.to_string());

    // Everything else goes to the echo service: a plain call, a call that
    // passes a capability, and one pipelined on a returned capability.
    assert_eq!(ping(&echo, "through").await.unwrap(), "echo:through");
    let logger = echo.get_logger_request().send().pipeline.get_callback();
    log(&logger, "pipelined through the wrapper").await.unwrap();
    assert_eq!(
        lines.lock().unwrap().clone(),
        ["Service logger: pipelined through the wrapper"]
    );
    // This service's logger was not made persistent
    // (`EchoService::persist_logger`, see
    // `get_logger_gives_a_logger_whose_saved_uri_survives_a_restart`).
    assert_unimplemented(save_client(&logger).await, "the service's logger");

    drop((echo, logger, wrapped, service));
    end(Vec::new()).await;
}

#[actix::test]
async fn save_without_persistence_is_unimplemented_locally_and_over_the_network() {
    let lines = Lines::default();
    let service = echo_cap(&lines);

    // Locally: the echo service does not implement `Persistent`.
    assert_unimplemented(save(service.raw()).await, "a local echo service");
    assert_unimplemented(
        save_client(&service.client()).await,
        "a local echo service (typed)",
    );
    // A local logger either.
    let logger = service
        .client()
        .get_logger_request()
        .send()
        .pipeline
        .get_callback();
    assert_unimplemented(save_client(&logger).await, "a local logger");
    drop((logger, service));
    end(Vec::new()).await;

    // Over the network, TLS and without.
    for tls in [true, false] {
        let (server, table) = table_vat(&tls_config(tcp()).with_tls(tls)).await;
        table.add(b"main", echo_cap(&lines).raw().clone());
        let client = client_vat().await;
        let uri = server.sturdy_uri(b"main").unwrap();
        let remote: Cap<echo::Client> = client.import_as(&uri).await.unwrap();
        assert_eq!(
            ping(&remote.client(), "reachable").await.unwrap(),
            "echo:reachable"
        );
        assert_unimplemented(save(remote.raw()).await, "a remote echo service");
        assert_unimplemented(
            save_client(&remote.client()).await,
            "a remote echo service (typed)",
        );
        // And the connection goes on working.
        assert_eq!(ping(&remote.client(), "after").await.unwrap(), "echo:after");
        drop((remote, table));
        end(vec![client, server]).await;
    }
}

#[actix::test]
async fn save_over_the_network_returns_the_uri_and_a_second_vat_can_import_it() {
    for (name, address) in [("tcp", tcp()), ("unix", socket_path("save-uri"))] {
        let lines = Lines::default();
        let (server, table) = table_vat(&tls_config(address)).await;
        let id = generated_service_id();
        let uri = server.sturdy_uri(&id).unwrap();
        assert!(matches!(uri.auth, VatAuth::Sha256(_)), "{name}: {uri}");
        table.add(&id, with_sturdy_ref(echo_cap(&lines), &uri));

        // `save` goes over the wire to the server's wrapper, and comes back
        // as exactly the URI the vat serves the service under.
        let first = client_vat().await;
        let remote: Cap<echo::Client> = first.import_as(&uri).await.unwrap();
        let saved = save(remote.raw()).await.unwrap();
        assert_eq!(saved, uri, "{name}");
        assert_eq!(saved.to_string(), uri.to_string(), "{name}");
        assert_eq!(save_client(&remote.client()).await.unwrap(), uri, "{name}");
        assert_eq!(
            ping(&remote.client(), "first").await.unwrap(),
            "echo:first",
            "{name}"
        );

        // A vat that was only handed the saved URI gets the same service.
        let second = client_vat().await;
        assert_ne!(first.fingerprint(), second.fingerprint());
        let again: Cap<echo::Client> = second.import_as(&saved).await.unwrap();
        assert_eq!(
            ping(&again.client(), "second").await.unwrap(),
            "echo:second",
            "{name}"
        );
        // It is persistent there too.
        assert_eq!(save(again.raw()).await.unwrap(), uri, "{name}");

        // The server itself gets its own object back from its own URI.
        let local = server.import(&saved).await.unwrap();
        assert_eq!(save(&local).await.unwrap(), uri, "{name}");

        drop((remote, again, local, table));
        end(vec![first, second, server]).await;
    }
}

/// Loggers made by `createLogger`: their labels by the digest of their
/// IDs (what a store would keep), so that the table's loader can bring a
/// logger back when its URI is restored.
type Saved = Arc<Mutex<HashMap<[u8; 32], String>>>;

/// A logger that answers `save` with `uri`.
fn persistent_logger(label: &str, lines: &Lines, uri: &SturdyUri) -> Cap<callback::Client> {
    let logger: Cap<callback::Client> = Cap::new(Logger {
        label: label.to_string(),
        sink: Sink::Memory(lines.clone()),
    });
    Cap::from_raw(with_sturdy_ref(logger, uri))
}

/// A TLS vat serving a persistent echo service under `main`, whose
/// `createLogger` makes persistent loggers (kept in `saved`, not in the
/// table: the service holds no capability of the table's, so nothing
/// keeps itself alive).
async fn echo_vat_with_saved_loggers(config: &VatConfig, lines: &Lines) -> (Vat, Table, SturdyUri) {
    let saved = Saved::default();
    let mut echo = EchoService::new(Duration::from_millis(1), Sink::Memory(lines.clone()));
    let mut table = None;
    let vat = Vat::start_with(config, |uris| {
        let loader = {
            let (saved, lines) = (saved.clone(), lines.clone());
            move |uri: SturdyUri,
                  digest: [u8; 32]|
                  -> BoxFuture<'static, Result<CapRef, capnp::Error>> {
                let label = saved.lock().unwrap().get(&digest).cloned();
                let restored = match label {
                    Some(label) => Ok(persistent_logger(&label, &lines, &uri).raw().clone()),
                    None => Err(capnp_actix::restorer::unknown_service()),
                };
                futures::future::ready(restored).boxed()
            }
        };
        let t = Table::with_loader(
            {
                let uris = uris.clone();
                move |id| uris.sturdy_uri(id)
            },
            loader,
        );
        echo.make_logger = Some(Rc::new({
            let (saved, lines) = (saved.clone(), lines.clone());
            move |label: &str| {
                let id = generated_service_id();
                saved.lock().unwrap().insert(digest(&id), label.to_string());
                Ok(persistent_logger(label, &lines, &uris.sturdy_uri(&id)))
            }
        }));
        table = Some(t.clone());
        t
    })
    .await
    .unwrap();
    let table = table.unwrap();
    let uri = vat.sturdy_uri(b"main").unwrap();
    let service: Cap<echo::Client> = Cap::new(echo);
    table.add(b"main", with_sturdy_ref(service, &uri));
    (vat, table, uri)
}

#[actix::test]
async fn save_client_on_generated_clients_and_pipelined_on_a_capability_not_yet_returned() {
    let lines = Lines::default();
    let (server, table, uri) =
        echo_vat_with_saved_loggers(&tls_config(socket_path("pipelined")), &lines).await;
    let client = client_vat().await;
    let echo = client
        .import_as::<echo::Client>(&uri)
        .await
        .unwrap()
        .client();

    // On a generated client (the imported echo service).
    assert_eq!(save_client(&echo).await.unwrap(), uri);

    // `createLogger`, with `save` and a first `log` sent on its result
    // before it comes back.
    let mut request = echo.create_logger_request();
    request.get().set_label("alice");
    let capnp::capability::RemotePromise { promise, pipeline } = request.send();
    let logger = pipeline.get_callback();
    drop(pipeline);
    let saved = save_client(&logger);
    let mut first = logger.log_request();
    first.get().set_msg("created");
    let (saved, logged, created) = futures::join!(saved, first.send().promise, promise);
    logged.unwrap();
    let saved = saved.unwrap();
    // The pipelined answer agrees with the one on the returned capability.
    let returned = created.unwrap().get().unwrap().get_callback().unwrap();
    assert_eq!(save_client(&returned).await.unwrap(), saved);
    assert_eq!(saved.auth, uri.auth);
    assert_eq!(saved.address, uri.address);
    assert_ne!(saved.service_id, uri.service_id);

    // Another vat restores the logger from the saved URI alone (the table's
    // loader brings it back) and logs through it.
    let other = client_vat().await;
    let restored = other
        .import_as::<callback::Client>(&saved)
        .await
        .unwrap()
        .client();
    log(&restored, "restored").await.unwrap();
    assert_eq!(save_client(&restored).await.unwrap(), saved);
    assert_eq!(
        lines.lock().unwrap().clone(),
        ["alice: created", "alice: restored"]
    );

    // An ID nobody saved is still unknown.
    let mut unknown = saved.clone();
    unknown.service_id = generated_service_id();
    let nothing = other.import_as::<callback::Client>(&unknown).await.unwrap();
    let e = log(&nothing.client(), "x").await.unwrap_err();
    assert!(
        e.to_string().contains("Unknown persistent service ID"),
        "{e}"
    );

    drop((echo, logger, returned, restored, nothing, table));
    end(vec![client, other, server]).await;
}

/// A TLS vat serving the echo service under `main` with its logger made
/// persistent under the derived ID `logger`, as `echo serve` does.
async fn echo_vat_with_persistent_logger(config: &VatConfig, lines: &Lines) -> Vat {
    let (vat, table) = table_vat(config).await;
    let logger_id = config.derived_id("logger").unwrap();
    let mut service = EchoService::new(Duration::from_millis(1), Sink::Memory(lines.clone()));
    let logger = service.persist_logger(&vat.sturdy_uri(&logger_id).unwrap());
    table.add(&logger_id, logger.raw().clone());
    table.add(b"main", Cap::<echo::Client>::new(service).raw().clone());
    vat
}

#[actix::test]
async fn get_logger_gives_a_logger_whose_saved_uri_survives_a_restart() {
    let lines = Lines::default();
    // The same key and address for both runs of the server.
    let config = tls_config(socket_path("get-logger"));
    let server = echo_vat_with_persistent_logger(&config, &lines).await;
    let expected = server
        .sturdy_uri(&config.derived_id("logger").unwrap())
        .unwrap();

    // getLogger, then save and log pipelined on its answer.
    let client = client_vat().await;
    let echo: Cap<echo::Client> = client
        .import_as(&server.sturdy_uri(b"main").unwrap())
        .await
        .unwrap();
    let logger = echo
        .client()
        .get_logger_request()
        .send()
        .pipeline
        .get_callback();
    let (saved, logged) = futures::join!(save_client(&logger), log(&logger, "before"));
    logged.unwrap();
    let saved = saved.unwrap();
    assert_eq!(saved, expected);
    drop((echo, logger));
    end(vec![client, server]).await;

    // A new server with the same key: the saved URI names the same logger.
    let server = echo_vat_with_persistent_logger(&config, &lines).await;
    let client = client_vat().await;
    let logger: Cap<callback::Client> = client.import_as(&saved).await.unwrap();
    log(&logger.client(), "after the restart").await.unwrap();
    // It is still persistent, with the same URI.
    assert_eq!(save_client(&logger.client()).await.unwrap(), saved);
    assert_eq!(
        lines.lock().unwrap().clone(),
        [
            "Service logger: before",
            "Service logger: after the restart"
        ]
    );
    drop(logger);
    end(vec![client, server]).await;
}
