//! Network scenarios over real sockets (no TLS).

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::time::Duration;

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
        let cap: Cap<echo::Client> =
            Cap::from_raw(vat::import(&SturdyUri::parse(&uri).unwrap()).await.unwrap());
        assert_eq!(ping(&cap, "foo").await.unwrap(), "echo:foo");

        // The empty service ID, as pycapnp and C++ clients use it.
        let empty = listening.uri(b"").to_string();
        assert!(empty.ends_with('/'), "{empty}");
        let cap: Cap<echo::Client> =
            Cap::from_raw(vat::import(&empty.parse().unwrap()).await.unwrap());
        assert_eq!(ping(&cap, "bar").await.unwrap(), "echo:bar");

        // An unknown ID fails that call; the connection stays usable.
        let mut wrong = SturdyUri::parse(&uri).unwrap();
        wrong.service_id = b"nope".to_vec();
        let bad: Cap<echo::Client> = Cap::from_raw(vat::import(&wrong).await.unwrap());
        let e = ping(&bad, "x").await.unwrap_err();
        assert!(
            e.to_string().contains("Unknown persistent service ID"),
            "{e}"
        );
        listening.stop();
    }
}

#[actix::test]
async fn connecting_to_nothing_is_a_clear_error() {
    let path = std::env::temp_dir().join("capnp-actix-no-such.sock");
    let e = vat::connect(&Address::Unix(path.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
}
