//! The calculator sample: in-process, between two of our vats over TLS
//! and without, on TCP and Unix sockets (scenario 11 over TLS, with a
//! latency link that shows the round trips), and against the capnp-rpc
//! crate in both directions over TCP and Unix sockets (plain connections:
//! the insecure `vat::serve` and `vat::import`). Every test runs under a
//! timeout.

#[path = "../examples/common/calc_service.rs"]
#[allow(dead_code)]
mod calc_service;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use calc_service::client::{self, call, Expr, EXPECTED};
use calc_service::{Calculator, Host};
use capnp::capability::FromServer;
use capnp_actix::restorer::Table;
use capnp_actix::schemas::calculator_capnp::calculator::{self, Operator};
use capnp_actix::vat::{self, Services, Vat};
use capnp_actix::{Address, Cap, SturdyUri, VatAuth, VatConfig};
use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty, RpcSystem};
use futures::AsyncReadExt;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// How long any one test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {TEST_TIMEOUT:?}"))
}

fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "capnp-actix-calc-{tag}-{}.sock",
        std::process::id()
    ))
}

fn unix(path: &Path) -> Address {
    Address::Unix(path.to_path_buf())
}

fn assert_expected(got: &[(String, f64)]) {
    let got: Vec<(&str, f64)> = got.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    assert_eq!(got, EXPECTED);
}

/// Serves a new calculator on `address` as `main` and as the empty ID.
async fn serve_calculator(address: &Address) -> vat::Listening {
    let calc: Cap<calculator::Client> = Cap::new(Calculator::new());
    let mut services = Services::new();
    services.add("main", &calc).add("", &calc);
    vat::serve(address, services).await.unwrap()
}

async fn import_calculator(uri: &SturdyUri) -> calculator::Client {
    Cap::<calculator::Client>::from_raw(vat::import(uri).await.unwrap()).client()
}

/// A vat offering a new calculator as `calc serve` does: with TLS under
/// the ID derived from the key and `main`; without, under `main` and the
/// empty ID. Returns the vat and the URIs of the calculator.
async fn calculator_vat(config: &VatConfig) -> (Vat, Vec<SturdyUri>) {
    let tls = config.tls();
    let ids = if tls {
        vec![config.derived_id("main").unwrap()]
    } else {
        vec![b"main".to_vec(), Vec::new()]
    };
    let calc: Cap<calculator::Client> = Cap::new(Calculator::new());
    let vat = Vat::start_with(config, |uris| {
        let table = Table::new(move |id| uris.sturdy_uri(id));
        for id in &ids {
            table.add(id, calc.raw().clone());
        }
        table
    })
    .await
    .unwrap();
    let uris = ids.iter().map(|id| vat.sturdy_uri(id).unwrap()).collect();
    (vat, uris)
}

/// Imports `uri` through a new client-only vat (TLS on, an ephemeral key:
/// it reaches TLS and insecure vats alike).
async fn import_through_a_client_vat(uri: &SturdyUri) -> (Vat, calculator::Client) {
    let vat = Vat::client(&VatConfig::new()).await.unwrap();
    let calc: Cap<calculator::Client> = vat.import_as(uri).await.unwrap();
    (vat, calc.client())
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
async fn calculator_in_process_checks() {
    within("in-process checks", async {
        let calc: Cap<calculator::Client> = Cap::new(Calculator::new());
        let got = client::run_client_checks(calc.client()).await.unwrap();
        assert_expected(&got);
    })
    .await;
    capnp_actix::debug::assert_all_released().await;
}

/// Evaluates `expr` and reads the result, expecting an error that says
/// `want`.
async fn expect_error(calc: &calculator::Client, expr: &Expr, want: &str) {
    let e = client::read(&client::evaluate(calc, expr))
        .await
        .expect_err(want);
    assert_eq!(e.kind, capnp::ErrorKind::Failed, "{e}");
    assert!(e.to_string().contains(want), "wanted {want:?}, got: {e}");
}

#[actix::test]
async fn calculator_errors_name_the_problem() {
    within("errors", async {
        let calc: Cap<calculator::Client> = Cap::new(Calculator::new());
        let calc = calc.client();
        let add = client::operator(&calc, Operator::Add);
        let lit = Expr::Lit;

        expect_error(
            &calc,
            &call(&add, [lit(1.0), lit(2.0), lit(3.0)]),
            "operator add takes exactly 2 parameters, got 3",
        )
        .await;
        expect_error(
            &calc,
            &call(&add, [Expr::Param(0), lit(1.0)]),
            "parameter 0 used outside a function body",
        )
        .await;

        let second = client::def_function(&calc, 1, &Expr::Param(1));
        expect_error(
            &calc,
            &call(&second, [lit(5.0)]),
            "parameter 1 is out of range: the function has 1 parameter(s)",
        )
        .await;
        let identity = client::def_function(&calc, 1, &Expr::Param(0));
        expect_error(
            &calc,
            &call(&identity, [lit(1.0), lit(2.0)]),
            "function takes 1 parameter(s), got 2",
        )
        .await;
        let negative = client::def_function(&calc, -1, &lit(0.0));
        expect_error(
            &calc,
            &call(&negative, []),
            "paramCount must not be negative (got -1)",
        )
        .await;

        // An error inside a nested argument fails the whole evaluation.
        expect_error(
            &calc,
            &call(&add, [call(&add, [lit(1.0)]), lit(1.0)]),
            "operator add takes exactly 2 parameters, got 1",
        )
        .await;

        // And the calculator goes on working.
        let v = client::read(&client::evaluate(&calc, &call(&identity, [lit(7.0)])))
            .await
            .unwrap();
        assert_eq!(v, 7.0);
    })
    .await;
    capnp_actix::debug::assert_all_released().await;
}

/// A link with a fixed one-way latency: accepts one connection on
/// `listen` and forwards it to `target`, delivering every chunk `delay`
/// after it was read, in order, in both directions.
async fn latency_link(listen: &Path, target: PathBuf, delay: Duration) {
    let _ = std::fs::remove_file(listen);
    let listener = tokio::net::UnixListener::bind(listen).unwrap();
    actix_rt::spawn(async move {
        let (near, _) = listener.accept().await.unwrap();
        let far = tokio::net::UnixStream::connect(&target).await.unwrap();
        let (near_r, near_w) = tokio::io::split(near);
        let (far_r, far_w) = tokio::io::split(far);
        actix_rt::spawn(delayed_pump(near_r, far_w, delay));
        actix_rt::spawn(delayed_pump(far_r, near_w, delay));
    });
}

async fn delayed_pump<R, W>(mut from: R, mut to: W, delay: Duration)
where
    R: tokio::io::AsyncRead + Unpin + 'static,
    W: tokio::io::AsyncWrite + Unpin + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    actix_rt::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let due = tokio::time::Instant::now() + delay;
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
}

#[actix::test]
async fn scenario_11_previous_result_used_in_two_concurrent_pipelined_evaluations() {
    // Each direction of the link takes DELAY, so a round trip takes 2 x DELAY.
    const DELAY: Duration = Duration::from_millis(200);
    let round_trip = DELAY * 2;
    let server_path = socket_path("s11-server");
    let link_path = socket_path("s11-link");
    within("scenario 11", async {
        let config = VatConfig::new().with_listen_address(unix(&server_path));
        let (server, uris) = calculator_vat(&config).await;
        latency_link(&link_path, server_path.clone(), DELAY).await;
        // TLS checks the key, not the address: the link is transparent.
        let mut uri = uris[0].clone();
        uri.address = unix(&link_path);
        assert!(matches!(uri.auth, VatAuth::Sha256(_)), "{uri}");

        // The import waits for the TLS handshake (round trips of its own);
        // then the bootstrap, three getOperator calls, three evaluations
        // (two of them naming the first one's unread Value) and three reads
        // all go out before any answer comes back: one round trip.
        let (client, calc) = import_through_a_client_vat(&uri).await;
        let started = Instant::now();
        let got = client::check_previous_result(&calc).await.unwrap();
        let pipelined = started.elapsed();
        let got: Vec<(&str, f64)> = got.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(
            got,
            [
                ("add(123, 45)", 168.0),
                ("multiply(previousResult, 2)", 336.0),
                ("subtract(previousResult, 68)", 100.0),
            ]
        );
        assert!(
            pipelined >= round_trip,
            "faster than the link allows: {pipelined:?}"
        );
        assert!(
            pipelined < round_trip * 2,
            "took {pipelined:?}: more than one round trip of {round_trip:?}"
        );

        // The control: waiting for the first value before the follow-up
        // costs a second round trip on the same link.
        let started = Instant::now();
        let add = client::operator(&calc, Operator::Add);
        let multiply = client::operator(&calc, Operator::Multiply);
        let first = client::evaluate(&calc, &call(&add, [Expr::Lit(1.0), Expr::Lit(2.0)]));
        assert_eq!(client::read(&first).await.unwrap(), 3.0);
        let then = client::evaluate(&calc, &call(&multiply, [Expr::Prev(first), Expr::Lit(5.0)]));
        assert_eq!(client::read(&then).await.unwrap(), 15.0);
        let sequential = started.elapsed();
        assert!(
            sequential >= round_trip * 2,
            "two dependent round trips took only {sequential:?}"
        );
        drop((calc, add, multiply, then));
        end(vec![client, server]).await;
    })
    .await;
    let _ = std::fs::remove_file(&server_path);
    let _ = std::fs::remove_file(&link_path);
}

#[actix::test]
async fn calculator_between_two_of_our_vats_over_tls_and_without_on_tcp_and_unix_sockets() {
    let path = socket_path("two-vats");
    within("two vats", async {
        for tls in [true, false] {
            for address in [Address::parse("tcp:127.0.0.1:0").unwrap(), unix(&path)] {
                let config = VatConfig::new()
                    .with_listen_address(address.clone())
                    .with_tls(tls);
                let (server, uris) = calculator_vat(&config).await;
                // TLS: one derived ID; without: `main` and the empty ID.
                assert_eq!(uris.len(), if tls { 1 } else { 2 });
                for uri in &uris {
                    assert_eq!(matches!(uri.auth, VatAuth::Sha256(_)), tls, "{uri}");
                    let (client, calc) = import_through_a_client_vat(uri).await;
                    assert_expected(&client::run_client_checks(calc).await.unwrap());
                    client.stop();
                }
                end(vec![server]).await;
            }
        }
    })
    .await;
    let _ = std::fs::remove_file(&path);
}

// ---- interop with the capnp-rpc crate ----

/// Hosts capabilities with the capnp-rpc crate.
#[derive(Clone, Copy)]
struct RpcHost;

impl Host for RpcHost {
    fn host<C, S>(&self, server: S) -> C
    where
        C: FromServer<S>,
    {
        capnp_rpc::new_client(server)
    }
}

/// Runs `f` on a thread of its own with a tokio LocalSet (capnp-rpc is
/// single-threaded), under the test timeout.
fn on_their_thread<T, F, Fut>(f: F) -> std::thread::JoinHandle<Result<T, String>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, String>>,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, async move {
            tokio::time::timeout(TEST_TIMEOUT, f())
                .await
                .unwrap_or_else(|_| Err(format!("their side: timed out after {TEST_TIMEOUT:?}")))
        })
    })
}

/// Waits for a thread of theirs without blocking our arbiter.
async fn join<T: Send + 'static>(thread: std::thread::JoinHandle<Result<T, String>>) -> T {
    within(
        "their thread",
        tokio::task::spawn_blocking(move || thread.join()),
    )
    .await
    .unwrap()
    .expect("their thread panicked")
    .unwrap_or_else(|e| panic!("their side failed: {e}"))
}

fn their_rpc<S>(
    stream: S,
    side: Side,
    bootstrap: Option<capnp::capability::Client>,
) -> RpcSystem<Side>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let (r, w) = stream.compat().split();
    let network = twoparty::VatNetwork::new(r, w, side, Default::default());
    RpcSystem::new(Box::new(network), bootstrap)
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Tcp,
    Unix,
}

/// Our calculator; their client runs the checks, with its `pow` hosted by
/// capnp-rpc.
async fn their_client_our_calculator(transport: Transport) {
    let path = socket_path(&format!("their-client-{transport:?}"));
    let address = match transport {
        Transport::Tcp => Address::parse("tcp:127.0.0.1:0").unwrap(),
        Transport::Unix => unix(&path),
    };
    let listening = serve_calculator(&address).await;
    let bound = listening.address().clone();
    let their = on_their_thread(move || async move {
        let mut rpc = match bound {
            Address::Tcp { host, port } => {
                let s = tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(|e| e.to_string())?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                their_rpc(s, Side::Client, None)
            }
            Address::Unix(p) => {
                let s = tokio::net::UnixStream::connect(&p)
                    .await
                    .map_err(|e| e.to_string())?;
                their_rpc(s, Side::Client, None)
            }
        };
        let calc: calculator::Client = rpc.bootstrap(Side::Server);
        tokio::task::spawn_local(rpc);
        client::run_client_checks_with(calc, &RpcHost)
            .await
            .map_err(|e| e.to_string())
    });
    let got = join(their).await;
    assert_expected(&got);
    listening.stop();
    let _ = std::fs::remove_file(&path);
}

/// Their calculator (the same service code, hosting its values and
/// functions with capnp-rpc); our client runs the checks.
async fn our_client_their_calculator(transport: Transport) {
    let path = socket_path(&format!("their-server-{transport:?}"));
    let server_path = path.clone();
    let (tx, rx) = std::sync::mpsc::channel::<Address>();
    let their = on_their_thread(move || async move {
        let calc: calculator::Client = capnp_rpc::new_client(Calculator::with_host(RpcHost));
        let rpc = match transport {
            Transport::Tcp => {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| e.to_string())?;
                let port = l.local_addr().map_err(|e| e.to_string())?.port();
                tx.send(Address::Tcp {
                    host: "127.0.0.1".into(),
                    port,
                })
                .map_err(|e| e.to_string())?;
                let (s, _) = l.accept().await.map_err(|e| e.to_string())?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                their_rpc(s, Side::Server, Some(calc.client))
            }
            Transport::Unix => {
                let _ = std::fs::remove_file(&server_path);
                let l = tokio::net::UnixListener::bind(&server_path).map_err(|e| e.to_string())?;
                tx.send(Address::Unix(server_path.clone()))
                    .map_err(|e| e.to_string())?;
                let (s, _) = l.accept().await.map_err(|e| e.to_string())?;
                their_rpc(s, Side::Server, Some(calc.client))
            }
        };
        // Serve until our client disconnects.
        rpc.await.map_err(|e| e.to_string())
    });
    let address = within(
        "their listener",
        tokio::task::spawn_blocking(move || rx.recv()),
    )
    .await
    .unwrap()
    .expect("their server did not start");
    let uri = SturdyUri {
        auth: VatAuth::Insecure,
        address,
        service_id: Vec::new(),
    };
    let got = within("our client", async {
        let calc = import_calculator(&uri).await;
        client::run_client_checks(calc).await.unwrap()
    })
    .await;
    assert_expected(&got);
    let _ = std::fs::remove_file(&path);
    // Their thread serves until the connection closes; it is not joined.
    drop(their);
}

#[actix::test]
async fn capnp_rpc_client_against_our_calculator_over_tcp() {
    their_client_our_calculator(Transport::Tcp).await;
}

#[actix::test]
async fn capnp_rpc_client_against_our_calculator_over_unix_socket() {
    their_client_our_calculator(Transport::Unix).await;
}

#[actix::test]
async fn our_client_against_capnp_rpc_calculator_over_tcp() {
    our_client_their_calculator(Transport::Tcp).await;
}

#[actix::test]
async fn our_client_against_capnp_rpc_calculator_over_unix_socket() {
    our_client_their_calculator(Transport::Unix).await;
}
