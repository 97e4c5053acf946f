//! The serving examples shut down gracefully on SIGTERM and SIGINT: a
//! call running at the signal finishes, new calls are refused with the
//! reason, the client's connection ends with it, and the process exits 0
//! promptly.

mod examples_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capnp_actix::schemas::echo_api_capnp::{callback, echo};
use capnp_actix::vat::{Vat, SHUTTING_DOWN};
use capnp_actix::{Cap, SturdyUri, VatConfig};
use examples_support::{Server, TempDir};

/// How long a server may take to exit after the signal: the grace period
/// is 5 s, and nothing here keeps a call running that long.
const EXIT_WITHIN: Duration = Duration::from_secs(4);

/// Sends `signal` to the server's process.
fn send(server: &Server, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(server.child.id()).expect("a pid");
    // SAFETY: kill(2) has no memory effects; the pid is our own child's,
    // which has not been waited for, so it names that process.
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal}) failed");
}

/// Waits for the server's process to exit, within [`EXIT_WITHIN`], and
/// asserts that it exited with status 0.
fn assert_exits_cleanly(server: &mut Server) {
    let deadline = Instant::now() + EXIT_WITHIN;
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("waiting for the server") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server still runs {EXIT_WITHIN:?} after the signal"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the server exited with {status}");
}

/// Counts the service's callbacks.
struct Count(Arc<AtomicUsize>);

impl callback::Server for Count {
    async fn log(
        self: std::rc::Rc<Self>,
        _: callback::LogParams,
        _: callback::LogResults,
    ) -> Result<(), capnp::Error> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn ping(echo: &echo::Client, msg: &str) -> Result<String, capnp::Error> {
    let mut request = echo.ping_request();
    request.get().set_msg(msg);
    let response = request.send().promise.await?;
    Ok(response.get()?.get_reply()?.to_string()?)
}

/// Over TLS, as a client in another process sees it: a heartbeat (three
/// callbacks, 0.5 s apart) is running when SIGTERM comes.
async fn heartbeat_across_sigterm(uri: SturdyUri, server: &Server) {
    let client = Vat::client(&VatConfig::new()).await.unwrap();
    let cap: Cap<echo::Client> = client.import_as(&uri).await.unwrap();
    let conn = client.connection_to(&uri).await.unwrap();
    let echo = cap.client();
    assert_eq!(ping(&echo, "before").await.unwrap(), "echo:before");

    let calls = Arc::new(AtomicUsize::new(0));
    let mut request = echo.heartbeat_request();
    request.get().set_msg("beat");
    request
        .get()
        .set_callback(Cap::<callback::Client>::new(Count(calls.clone())).client());
    let heartbeat = actix_rt::spawn(request.send().promise);
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no heartbeat callback");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    send(server, libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = ping(&echo, "during").await.unwrap_err();
    assert_eq!(refused.kind, capnp::ErrorKind::Disconnected, "{refused}");
    assert!(refused.to_string().contains(SHUTTING_DOWN), "{refused}");

    heartbeat
        .await
        .unwrap()
        .expect("the call running at the signal finishes");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the server closes the connection");
    assert!(reason.to_string().contains(SHUTTING_DOWN), "{reason}");
    drop((echo, cap, conn));
    client.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn echo_serve_finishes_the_running_call_and_exits_0_on_sigterm() {
    let dir = TempDir::new("echo-sigterm");
    let address = format!("unix:{}", dir.path().join("echo.sock").display());
    let store = dir.path().join("store");
    let mut server = Server::start(
        "echo",
        &[
            "serve",
            "--capnp-listen-address",
            &address,
            "--heartbeat-interval",
            "0.5",
            "--store-dir",
            &store.display().to_string(),
        ],
        "echo service running at: ",
    );
    let uri = SturdyUri::parse(&server.uri).unwrap();
    actix::System::new().block_on(heartbeat_across_sigterm(uri, &server));
    assert_exits_cleanly(&mut server);
}

#[test]
fn calc_serve_exits_0_on_sigint() {
    let dir = TempDir::new("calc-sigint");
    let address = format!("unix:{}", dir.path().join("calc.sock").display());
    let mut server = Server::start(
        "calc",
        &["serve", "--capnp-listen-address", &address],
        "calculator running at: ",
    );
    send(&server, libc::SIGINT);
    assert_exits_cleanly(&mut server);
}
