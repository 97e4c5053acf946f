//! Network scenarios over real sockets (no TLS).

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::time::Duration;

use capnp_actix::connection::ConnectionHandle;
use capnp_actix::schemas::echo_api_capnp::echo;
use capnp_actix::vat::{self, Services};
use capnp_actix::{Address, Cap, SturdyUri};
use echo_service::{EchoService, Sink};

async fn ping(cap: &Cap<echo::Client>, msg: &str) -> Result<String, capnp::Error> {
    let mut req = cap.client().ping_request();
    req.get().set_msg(msg);
    Ok(req.send().promise.await?.get()?.get_reply()?.to_string()?)
}

async fn serve_echo(address: &str) -> vat::Listening {
    let service: Cap<echo::Client> =
        Cap::new(EchoService::new(Duration::from_millis(1), Sink::Stdout));
    let mut services = Services::new();
    services.add("main", &service).add("", &service);
    vat::serve(&Address::parse(address).unwrap(), services)
        .await
        .unwrap()
}

/// The service a sturdy URI names, over a connection of its own, as
/// `vat::import` does for an `insecure@` URI (`vat::connect` to the
/// address, then `bootstrap` with the service ID) but keeping the
/// connection's handle, so that the test can close it at once
/// (`vat::import`'s own connection closes when its capabilities are
/// released: see `vat_import_leaves_no_connection_behind`).
async fn import(uri: &SturdyUri) -> (ConnectionHandle, Cap<echo::Client>) {
    let conn = vat::connect(&uri.address).await.unwrap();
    let cap = Cap::from_raw(conn.bootstrap(&uri.service_id));
    (conn, cap)
}

/// Closes `conn` and waits until it has ended.
async fn close(conn: ConnectionHandle) {
    conn.close("test over");
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the connection ends");
}

#[actix::test]
async fn scenario_49_no_tls_import_a_sturdy_uri_connect_and_call() {
    for address in [
        "tcp:127.0.0.1:0".to_string(),
        format!(
            "unix:{}",
            std::env::temp_dir()
                .join(format!("capnp-actix-49-{}.sock", std::process::id()))
                .display()
        ),
    ] {
        let listening = serve_echo(&address).await;
        let uri = listening.uri(b"main").to_string();
        assert!(uri.starts_with("capnp://insecure@"), "{uri}");
        assert!(uri.ends_with("/bWFpbg"), "{uri}");
        let (conn, cap) = import(&SturdyUri::parse(&uri).unwrap()).await;
        assert_eq!(ping(&cap, "foo").await.unwrap(), "echo:foo");

        // The empty service ID, as pycapnp and C++ clients use it.
        let empty = listening.uri(b"").to_string();
        assert!(empty.ends_with('/'), "{empty}");
        let (conn2, cap2) = import(&empty.parse().unwrap()).await;
        assert_eq!(ping(&cap2, "bar").await.unwrap(), "echo:bar");

        // An unknown ID fails that call; the connection stays usable.
        let mut wrong = SturdyUri::parse(&uri).unwrap();
        wrong.service_id = b"nope".to_vec();
        let (conn3, bad) = import(&wrong).await;
        let e = ping(&bad, "x").await.unwrap_err();
        assert!(
            e.to_string().contains("Unknown persistent service ID"),
            "{e}"
        );
        assert!(conn3.is_open());
        drop((cap, cap2, bad));
        listening.stop();
        // The server's side of each connection ends with ours.
        for conn in [conn, conn2, conn3] {
            close(conn).await;
        }
    }
    // The imports, the connections (both sides), the listeners and the
    // service are all gone.
    capnp_actix::debug::assert_all_released().await;
}

/// `vat::import` opens a connection for the capability it returns; once
/// that capability is released, the connection closes, and so does the
/// server's side of it (which holds the served services).
#[actix::test]
async fn vat_import_leaves_no_connection_behind() {
    let address = "tcp:127.0.0.1:0";
    let listening = serve_echo(address).await;
    let uri = listening.uri(b"main");
    {
        let cap: Cap<echo::Client> = Cap::from_raw(vat::import(&uri).await.unwrap());
        assert_eq!(ping(&cap, "foo").await.unwrap(), "echo:foo");
    }
    // A capability that came through the connection keeps it open after
    // the imported one is released; the last release closes it.
    let logger = {
        let cap: Cap<echo::Client> = Cap::from_raw(vat::import(&uri).await.unwrap());
        let response = cap
            .client()
            .get_logger_request()
            .send()
            .promise
            .await
            .unwrap();
        Cap::<capnp_actix::schemas::echo_api_capnp::callback::Client>::from_client(
            &response.get().unwrap().get_callback().unwrap(),
        )
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut req = logger.client().log_request();
    req.get().set_msg("still connected");
    req.send()
        .promise
        .await
        .expect("the logger's connection is still open");
    drop(logger);
    listening.stop();
    capnp_actix::debug::assert_all_released().await;
}

#[actix::test]
async fn connecting_to_nothing_is_a_clear_error() {
    let path = std::env::temp_dir().join("capnp-actix-no-such.sock");
    let e = vat::connect(&Address::Unix(path.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    capnp_actix::debug::assert_all_released().await;
}
