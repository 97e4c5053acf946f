//! Using the runtime outside an actix System (issue 14, item 5): under
//! `#[tokio::main]` (tokio's multi-thread runtime), `#[tokio::test]` (its
//! current-thread runtime) or on a plain thread, the entry points users
//! reach first fail with a message that says an actix System is needed
//! and how to start one, instead of tokio's "`spawn_local` called from
//! outside of a `task::LocalSet`": the vat's functions, which return a
//! `Result`, with an error; `Cap::new`, `new_client`, `with_sturdy_ref`
//! and `start_connection` with a panic.
//!
//! (A tokio `LocalSet` without a System, as the capnp-rpc crate's threads
//! have, keeps working: `tests/interop_capnp_rpc.rs`.)

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use capnp_actix::restorer::Single;
use capnp_actix::schemas::echo_api_capnp::echo;
use capnp_actix::vat::{self, Services, Vat};
use capnp_actix::{Address, Cap, SecretKey, SturdyUri, VatConfig};
use echo_service::{EchoService, Sink};

const TOKIO_TEXT: &str = "`spawn_local` called from outside";

fn echo_service() -> EchoService {
    EchoService::new(Duration::from_millis(1), Sink::Stdout)
}

/// Runs `f` on a thread of its own, as `#[tokio::main]` runs `main`.
fn under_tokio_main<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .unwrap_or_else(|payload| panic::resume_unwind(payload))
}

/// The message `f` panics with, on a thread of its own.
fn panic_of(f: impl FnOnce() + Send + 'static) -> String {
    let payload = std::thread::spawn(move || panic::catch_unwind(AssertUnwindSafe(f)))
        .join()
        .unwrap()
        .expect_err("it panics");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// The message names `what`, says an actix System is needed and how to
/// start one, and is not tokio's.
fn assert_says_start_an_actix_system(message: &str, what: &str) {
    assert!(
        message.contains(&format!("{what} needs an actix System")),
        "{message}"
    );
    assert!(
        message.contains("actix::System::new().block_on"),
        "{message}"
    );
    assert!(message.contains("#[actix::main]"), "{message}");
    assert!(!message.contains(TOKIO_TEXT), "{message}");
}

fn a_uri() -> SturdyUri {
    "capnp://insecure@127.0.0.1:1/bWFpbg".parse().unwrap()
}

#[test]
fn under_tokio_main_the_vat_functions_return_the_error() {
    let errors = under_tokio_main(async {
        let config = VatConfig::new()
            .with_secret_key(SecretKey::ephemeral())
            .with_listen_address(Address::parse("tcp:127.0.0.1:0").unwrap());
        let restorer = Single::new(
            b"main",
            capnp_actix::CapRef::broken(capnp::Error::failed("unused".into())),
        );
        let start = Vat::start(&config, restorer).await.unwrap_err().to_string();
        let client = Vat::client(&VatConfig::new())
            .await
            .unwrap_err()
            .to_string();
        let address = Address::parse("tcp:127.0.0.1:0").unwrap();
        let serve = vat::serve(&address, Services::new())
            .await
            .unwrap_err()
            .to_string();
        let connect = vat::connect(&address).await.unwrap_err().to_string();
        let import = vat::import(&a_uri()).await.unwrap_err().to_string();
        [start, client, serve, connect, import]
    });
    let [start, client, serve, connect, import] = errors;
    assert_says_start_an_actix_system(&start, "starting a vat");
    assert!(start.contains("multi-thread runtime"), "{start}");
    assert_says_start_an_actix_system(&client, "starting a vat");
    assert_says_start_an_actix_system(&serve, "vat::serve");
    assert_says_start_an_actix_system(&connect, "vat::connect");
    assert_says_start_an_actix_system(&import, "vat::import");
}

#[test]
fn under_tokio_main_hosting_a_capability_panics_with_the_message() {
    let message = panic_of(|| {
        under_tokio_main(async {
            let _: Cap<echo::Client> = Cap::new(echo_service());
        })
    });
    assert_says_start_an_actix_system(&message, "Cap::new (hosting a capability)");
    let message = panic_of(|| {
        under_tokio_main(async {
            let _: echo::Client = capnp_actix::new_client(echo_service());
        })
    });
    assert_says_start_an_actix_system(&message, "Cap::new (hosting a capability)");
}

#[test]
fn on_a_plain_thread_every_entry_point_says_so() {
    for (what, f) in [
        (
            "Cap::new (hosting a capability)",
            Box::new(|| drop(Cap::<echo::Client>::new(echo_service()))) as Box<dyn FnOnce() + Send>,
        ),
        (
            "with_sturdy_ref",
            Box::new(|| {
                let cap = capnp_actix::CapRef::broken(capnp::Error::failed("x".into()));
                drop(capnp_actix::persist::with_sturdy_ref(cap, &a_uri()));
            }),
        ),
        (
            "start_connection",
            Box::new(|| {
                let (a, _b) = tokio::io::duplex(64);
                drop(capnp_actix::connection::start_connection(
                    a,
                    Default::default(),
                ));
            }),
        ),
    ] {
        let message = panic_of(f);
        assert_says_start_an_actix_system(&message, what);
        assert!(message.contains("no async runtime"), "{what}: {message}");
    }
}

#[test]
fn under_tokio_test_s_runtime_the_message_replaces_tokio_s_panic() {
    // `#[tokio::test]`: a current-thread runtime, no LocalSet. Whether a
    // LocalSet runs cannot be asked in advance; the spawn is tried and
    // tokio's panic turned into the message.
    let current_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let message = panic_of(move || {
        current_thread().block_on(async {
            drop(Cap::<echo::Client>::new(echo_service()));
        })
    });
    assert_says_start_an_actix_system(&message, "Cap::new (hosting a capability)");
    assert!(message.contains("`#[tokio::test]`"), "{message}");
    let message = panic_of(move || {
        current_thread().block_on(async {
            let config = VatConfig::new().with_secret_key(SecretKey::ephemeral());
            drop(Vat::client(&config).await);
        })
    });
    assert_says_start_an_actix_system(&message, "starting a vat");
}

#[test]
fn inside_an_actix_system_the_same_calls_work() {
    actix::System::new().block_on(async {
        let cap: Cap<echo::Client> = Cap::new(echo_service());
        let mut req = cap.client().ping_request();
        req.get().set_msg("x");
        let reply = req.send().promise.await.unwrap();
        assert_eq!(reply.get().unwrap().get_reply().unwrap(), "echo:x");
        let vat = Vat::client(&VatConfig::new()).await.unwrap();
        vat.stop();
    });
}
