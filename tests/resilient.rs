//! Clients that survive the network (issue 15): call deadlines (the call
//! fails naming its deadline, and the server's method is cancelled by the
//! `finish`), a default deadline on a capability, the connect deadline on
//! a socket that never answers, `import_checked` with a wrong service ID,
//! and reconnecting imports across a server restart and a flapping
//! server (growing backoff, no storm of connects). Over TCP and Unix,
//! with TLS and without. Every test ends with nothing left alive.

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capnp_actix::deadline::{is_expired, DeadlineExt};
use capnp_actix::schemas::test_api_capnp::probe;
use capnp_actix::vat::{ConnectionState, ReconnectPolicy, Vat};
use capnp_actix::{Address, Cap, SecretKey, SturdyUri, VatConfig};

/// Calls with a `seq` at least this big run until cancelled.
const SLOW: u64 = 1000;

/// What the slow servers saw, shared with the test.
#[derive(Clone, Default)]
struct Seen {
    /// Every call's `seq`, as its method started.
    started: Arc<Mutex<Vec<u64>>>,
    /// The `seq` of every slow call whose method was dropped unfinished.
    cancelled: Arc<Mutex<Vec<u64>>>,
}

impl Seen {
    fn started(&self) -> Vec<u64> {
        self.started.lock().unwrap().clone()
    }
    fn cancelled(&self) -> Vec<u64> {
        self.cancelled.lock().unwrap().clone()
    }
}

/// Answers `call(seq)` with `seq` at once, or, for `seq >= SLOW`, never:
/// such a method runs until it is cancelled, which its guard records.
struct Slow(Seen);

/// Records the cancellation of the slow call `seq` when dropped.
struct Guard(Seen, u64);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.cancelled.lock().unwrap().push(self.1);
    }
}

impl probe::Server for Slow {
    async fn call(
        self: Rc<Self>,
        params: probe::CallParams,
        mut results: probe::CallResults,
    ) -> Result<(), capnp::Error> {
        let seq = params.get()?.get_seq();
        self.0.started.lock().unwrap().push(seq);
        if seq >= SLOW {
            let _guard = Guard(self.0.clone(), seq);
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        results.get().set_seq(seq);
        Ok(())
    }
}

async fn call(p: &probe::Client, seq: u64) -> Result<u64, capnp::Error> {
    let mut req = p.call_request();
    req.get().set_seq(seq);
    Ok(req.send().promise.await?.get()?.get_seq())
}

/// How the test vats talk.
#[derive(Clone, Copy, Debug)]
enum Link {
    TcpInsecure,
    TcpTls,
    UnixInsecure,
    UnixTls,
}

fn socket(name: &str) -> Address {
    Address::Unix(std::env::temp_dir().join(format!(
        "capnp-actix-resilient-{name}-{}.sock",
        std::process::id()
    )))
}

/// A server configuration for `link` (a fixed key for TLS, so that a
/// restarted server has the same URI).
fn server_config(link: Link, name: &str, key: &SecretKey) -> VatConfig {
    let config = VatConfig::new().with_arbiters(1);
    match link {
        Link::TcpInsecure => config
            .with_tls(false)
            .with_listen_address("tcp:127.0.0.1:0".parse().unwrap()),
        Link::TcpTls => config
            .with_secret_key(key.clone())
            .with_listen_address("tcp:127.0.0.1:0".parse().unwrap()),
        Link::UnixInsecure => config.with_tls(false).with_listen_address(socket(name)),
        Link::UnixTls => config
            .with_secret_key(key.clone())
            .with_listen_address(socket(name)),
    }
}

fn client_config(link: Link) -> VatConfig {
    VatConfig::new()
        .with_arbiters(1)
        .with_tls(matches!(link, Link::UnixTls | Link::TcpTls))
}

/// Starts a vat serving a slow probe as `main`; gives its URI.
async fn start_server(config: &VatConfig, seen: &Seen) -> (Vat, SturdyUri) {
    let cap: Cap<probe::Client> = Cap::new(Slow(seen.clone()));
    let (vat, uris) = Vat::builder(config)
        .serve("main", cap)
        .start()
        .await
        .unwrap();
    let uri = uris["main"].clone();
    (vat, uri)
}

/// Waits up to 5 s for `ready`.
async fn until(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ready() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn all_released() {
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
}

async fn stop(vats: Vec<Vat>) {
    for vat in &vats {
        vat.stop();
        vat.stopped().await;
    }
}

async fn call_deadline_cancels_the_method(link: Link) {
    let seen = Seen::default();
    let key = SecretKey::generate().unwrap();
    let (server, uri) = start_server(&server_config(link, "deadline", &key), &seen).await;
    let client = Vat::client(&client_config(link)).await.unwrap();
    let cap: Cap<probe::Client> = client.import_checked_as(&uri).await.unwrap();
    let p = cap.client();

    // One call with a deadline.
    let began = Instant::now();
    let e = call(&p, SLOW + 1)
        .deadline(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(is_expired(&e), "{e}");
    assert_eq!(e.kind, capnp::ErrorKind::Overloaded);
    assert!(e.extra.contains("deadline of 300ms"), "{e}");
    assert!(began.elapsed() < Duration::from_secs(2));
    // The finish reached the server, which dropped the method.
    until("the server's method is cancelled", || {
        seen.cancelled() == [SLOW + 1]
    })
    .await;

    // A default deadline on the capability, through `.client()`.
    let bounded = cap.with_deadline(Duration::from_millis(200)).client();
    let e = call(&bounded, SLOW + 2).await.unwrap_err();
    assert!(is_expired(&e) && e.extra.contains("200ms"), "{e}");
    until("the bounded call's method is cancelled", || {
        seen.cancelled() == [SLOW + 1, SLOW + 2]
    })
    .await;
    // Quick calls are unaffected, and the capability still works.
    assert_eq!(call(&bounded, 7).await.unwrap(), 7);
    assert_eq!(call(&p, 8).await.unwrap(), 8);

    drop((p, bounded, cap));
    stop(vec![client, server]).await;
    all_released().await;
}

#[actix::test]
async fn a_call_deadline_fails_the_call_and_cancels_the_method_over_tcp() {
    call_deadline_cancels_the_method(Link::TcpInsecure).await;
}

#[actix::test]
async fn a_call_deadline_fails_the_call_and_cancels_the_method_over_unix_with_tls() {
    call_deadline_cancels_the_method(Link::UnixTls).await;
}

#[actix::test]
async fn a_call_deadline_fails_the_call_and_cancels_the_method_over_tcp_with_tls() {
    call_deadline_cancels_the_method(Link::TcpTls).await;
}

#[actix::test]
async fn a_call_deadline_fails_the_call_and_cancels_the_method_over_unix() {
    call_deadline_cancels_the_method(Link::UnixInsecure).await;
}

/// A socket that accepts connections (the kernel's backlog does) and
/// never reads nor writes.
fn silent_socket() -> (std::net::TcpListener, Address) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let address = format!("tcp:127.0.0.1:{port}").parse().unwrap();
    (listener, address)
}

/// The URI of service `main` at `address`, without TLS.
fn insecure_uri(address: &Address) -> SturdyUri {
    SturdyUri {
        auth: capnp_actix::VatAuth::Insecure,
        address: address.clone(),
        service_id: b"main".to_vec(),
    }
}

#[actix::test]
async fn the_connect_deadline_fires_on_a_socket_that_never_answers() {
    let (_silent, address) = silent_socket();
    for tls in [false, true] {
        let config = client_config(Link::TcpInsecure)
            .with_tls(tls)
            .with_connect_timeout(Some(Duration::from_millis(300)));
        let client = Vat::client(&config).await.unwrap();
        let mut uri = insecure_uri(&address);
        if tls {
            uri.auth = capnp_actix::VatAuth::Sha256([7; 32]);
        }
        let began = Instant::now();
        let e = client.import_checked(&uri).await.unwrap_err();
        let took = began.elapsed();
        assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
        assert!(e.extra.contains(&address.to_string()), "{e}");
        assert!(e.extra.contains("connect deadline of 300ms"), "{e}");
        assert!(
            took >= Duration::from_millis(280) && took < Duration::from_secs(3),
            "tls {tls}: took {took:?}"
        );
        stop(vec![client]).await;
    }
    all_released().await;
}

#[actix::test]
async fn import_checked_fails_early_with_a_wrong_service_id() {
    let seen = Seen::default();
    let key = SecretKey::generate().unwrap();
    for link in [
        Link::TcpInsecure,
        Link::TcpTls,
        Link::UnixInsecure,
        Link::UnixTls,
    ] {
        let (server, uri) = start_server(&server_config(link, "wrong-id", &key), &seen).await;
        let client = Vat::client(&client_config(link)).await.unwrap();
        let wrong = SturdyUri {
            service_id: b"no such service".to_vec(),
            ..uri.clone()
        };
        let e = client.import_checked(&wrong).await.unwrap_err();
        assert_eq!(e.kind, capnp::ErrorKind::Failed, "{link:?}: {e}");
        assert!(
            e.extra.contains("Unknown persistent service ID"),
            "{link:?}: {e}"
        );
        assert!(e.extra.contains(&uri.address.to_string()), "{link:?}: {e}");
        // The right one passes the check.
        client.import_checked(&uri).await.unwrap();
        stop(vec![client, server]).await;
    }
    all_released().await;
}

/// Waits up to 5 s for a state of `rc` satisfying `want`.
async fn state<C>(
    rc: &capnp_actix::vat::Reconnecting<C>,
    want: impl FnMut(&ConnectionState) -> bool,
) -> ConnectionState {
    let mut watch = rc.watch();
    let seen = tokio::time::timeout(Duration::from_secs(5), watch.wait_for(want))
        .await
        .unwrap_or_else(|_| panic!("state never came; now {:?}", rc.state()))
        .expect("the reconnecting task runs")
        .clone();
    seen
}

fn is_reconnecting(s: &ConnectionState) -> bool {
    matches!(s, ConnectionState::Reconnecting { .. })
}

async fn reconnects_across_a_server_restart(link: Link) {
    let key = SecretKey::generate().unwrap();
    let first = Seen::default();
    let config = server_config(link, "restart", &key);
    let (server, uri) = start_server(&config, &first).await;
    // The restarted server listens where the first one did.
    let config = config.with_listen_address(server.address().unwrap().clone());
    let client = Vat::client(&client_config(link)).await.unwrap();
    let policy = ReconnectPolicy::default()
        .with_delays(Duration::from_millis(20), Duration::from_millis(200));
    let rc = client
        .import_reconnecting::<probe::Client>(&uri, policy.clone())
        .unwrap();
    let fast = client
        .import_reconnecting::<probe::Client>(&uri, policy.fail_fast())
        .unwrap();
    let p = rc.client();
    // The first call waits for the first connection.
    assert_eq!(call(&p, 1).await.unwrap(), 1);
    assert!(matches!(rc.state(), ConnectionState::Connected));
    fast.connected().await.unwrap();

    // A call in flight when the server goes fails once, with Disconnected.
    let mut request = p.call_request();
    request.get().set_seq(SLOW + 1);
    let in_flight = request.send().promise;
    until("the slow call runs", || {
        first.started().contains(&(SLOW + 1))
    })
    .await;
    stop(vec![server]).await;
    let e = in_flight.await.err().expect("the in-flight call fails");
    assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
    state(&rc, is_reconnecting).await;

    // While down: the fail-fast import fails at once, the other waits.
    let began = Instant::now();
    let e = call(&fast.client(), 9).await.unwrap_err();
    assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
    assert!(began.elapsed() < Duration::from_millis(500));
    let mut request = p.call_request();
    request.get().set_seq(2);
    let waiting = request.send().promise;

    let second = Seen::default();
    let (server, again) = start_server(&config, &second).await;
    assert_eq!(again, uri, "the restarted server has the same URI");
    assert_eq!(waiting.await.unwrap().get().unwrap().get_seq(), 2);
    state(&rc, |s| matches!(s, ConnectionState::Connected)).await;
    assert_eq!(call(&p, 3).await.unwrap(), 3);
    fast.connected().await.unwrap();
    assert_eq!(call(&fast.client(), 4).await.unwrap(), 4);
    // Nothing was sent twice: the in-flight call went to the first server only.
    assert_eq!(first.started(), [1, SLOW + 1]);
    assert_eq!(second.started(), [2, 3, 4]);

    drop((p, rc, fast));
    stop(vec![client, server]).await;
    all_released().await;
}

#[actix::test]
async fn a_reconnecting_import_survives_a_server_restart_over_tcp() {
    reconnects_across_a_server_restart(Link::TcpInsecure).await;
}

#[actix::test]
async fn a_reconnecting_import_survives_a_server_restart_over_unix_with_tls() {
    reconnects_across_a_server_restart(Link::UnixTls).await;
}

#[actix::test]
async fn a_reconnecting_import_survives_a_server_restart_over_tcp_with_tls() {
    reconnects_across_a_server_restart(Link::TcpTls).await;
}

#[actix::test]
async fn a_reconnecting_import_survives_a_server_restart_over_unix() {
    reconnects_across_a_server_restart(Link::UnixInsecure).await;
}

#[actix::test]
async fn a_flapping_server_gets_connects_spaced_ever_wider_then_the_import_gives_up() {
    // Accepts every connection and closes it at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepts = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let recorded = accepts.clone();
    let acceptor = actix::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            recorded.lock().unwrap().push(Instant::now());
            drop(stream);
        }
    });
    let client = Vat::client(&client_config(Link::TcpInsecure))
        .await
        .unwrap();
    let address: Address = format!("tcp:127.0.0.1:{port}").parse().unwrap();
    let uri = insecure_uri(&address);
    let policy = ReconnectPolicy::default()
        .with_delays(Duration::from_millis(40), Duration::from_secs(5))
        .with_max_attempts(5);
    let rc = client
        .import_reconnecting::<probe::Client>(&uri, policy)
        .unwrap();
    let e = rc.connected().await.unwrap_err();
    assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
    assert!(
        e.extra
            .contains(&format!("gave up reconnecting to {address} after 5 failed")),
        "{e}"
    );
    assert!(matches!(rc.state(), ConnectionState::GaveUp(_)));
    // Calls on it fail with that error.
    let e2 = call(&rc.client(), 1).await.unwrap_err();
    assert_eq!(e2.extra, e.extra);

    let times = accepts.lock().unwrap().clone();
    assert_eq!(times.len(), 5, "one connect per attempt, no more");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // 40, 80, 160, 320 ms, each within 20%: every wait longer than the
    // one before, and none shorter than the first.
    assert!(gaps[0] >= Duration::from_millis(30), "{gaps:?}");
    for pair in gaps.windows(2) {
        assert!(pair[1] > pair[0], "backoff not growing: {gaps:?}");
    }
    acceptor.abort();
    drop(rc);
    stop(vec![client]).await;
    all_released().await;
}
