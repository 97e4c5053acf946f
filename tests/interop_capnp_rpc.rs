//! Interop with the capnp-rpc crate over real sockets: its client against
//! our server, our client against its server, for the echo tutorial
//! (ping, heartbeat with a client-side callback, pipelined getLogger + log),
//! over TCP and Unix sockets.

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capnp_actix::connection::{bootstrap_fn, start_connection, ConnectionOptions};
use capnp_actix::schemas::echo_api_capnp::{callback, echo};
use capnp_actix::Cap;
use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty, RpcSystem};
use futures::AsyncReadExt;
use tokio_util::compat::TokioAsyncReadCompatExt;

type Lines = Arc<Mutex<Vec<String>>>;

/// A callback that records what it is told.
struct Recorder(Lines);
impl callback::Server for Recorder {
    async fn log(
        self: Rc<Self>,
        params: callback::LogParams,
        _: callback::LogResults,
    ) -> Result<(), capnp::Error> {
        self.0
            .lock()
            .unwrap()
            .push(params.get()?.get_msg()?.to_string()?);
        Ok(())
    }
}

/// The echo service written for the capnp-rpc crate alone (no capnp-actix).
struct TheirEcho {
    logger: callback::Client,
}
impl echo::Server for TheirEcho {
    async fn ping(
        self: Rc<Self>,
        params: echo::PingParams,
        mut results: echo::PingResults,
    ) -> Result<(), capnp::Error> {
        let msg = params.get()?.get_msg()?.to_str()?;
        results.get().set_reply(format!("echo:{msg}"));
        Ok(())
    }
    async fn heartbeat(
        self: Rc<Self>,
        params: echo::HeartbeatParams,
        _: echo::HeartbeatResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let msg = p.get_msg()?.to_string()?;
        let cb = p.get_callback()?;
        for _ in 0..3 {
            let mut req = cb.log_request();
            req.get().set_msg(&msg[..]);
            req.send().promise.await?;
        }
        Ok(())
    }
    async fn get_logger(
        self: Rc<Self>,
        _: echo::GetLoggerParams,
        mut results: echo::GetLoggerResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_callback(self.logger.clone());
        Ok(())
    }
}

/// The client side of the tutorial, for any runtime's `echo::Client`.
/// Returns what our `Recorder` callback received.
async fn exercise(
    echo: echo::Client,
    callback: callback::Client,
    got: Lines,
) -> Result<(), capnp::Error> {
    let mut req = echo.ping_request();
    req.get().set_msg("foo");
    let reply = req.send().promise.await?;
    assert_eq!(reply.get()?.get_reply()?.to_str()?, "echo:foo");

    // Large enough (over 1024 words) that our side sends its params or
    // results as segments spliced behind the call or return (far pointers
    // into them), which the other implementation must read.
    let long: String = (0..40_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut req = echo.ping_request();
    req.get().set_msg(long.as_str());
    let reply = req.send().promise.await?;
    assert_eq!(reply.get()?.get_reply()?.to_str()?, format!("echo:{long}"));

    let mut req = echo.heartbeat_request();
    req.get().set_msg("beat");
    req.get().set_callback(callback);
    req.send().promise.await?;
    assert_eq!(*got.lock().unwrap(), ["beat", "beat", "beat"]);

    let logger = echo.get_logger_request().send().pipeline.get_callback();
    let mut req = logger.log_request();
    req.get().set_msg("pipelined");
    req.send().promise.await?;
    Ok(())
}

/// Runs `f` on a thread of its own with a tokio LocalSet (capnp-rpc is
/// single-threaded), returning its result.
fn on_their_thread<F, Fut>(f: F) -> std::thread::JoinHandle<Result<(), String>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f())
    })
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

enum Transport {
    Tcp,
    Unix,
}

fn socket_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("capnp-actix-{tag}-{}.sock", std::process::id()))
}

/// Our server; their client.
async fn their_client_our_server(transport: Transport) {
    let lines: Lines = Arc::default();
    let service: Cap<echo::Client> = Cap::new(echo_service::EchoService::new(
        Duration::from_millis(1),
        echo_service::Sink::Memory(lines.clone()),
    ));
    let raw = service.raw().clone();
    let options = ConnectionOptions {
        bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(raw.clone()))),
        ..Default::default()
    };
    let their = match transport {
        Transport::Tcp => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            actix_rt::spawn(async move {
                let (s, _) = listener.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                start_connection(s, options);
            });
            on_their_thread(move || async move {
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| e.to_string())?;
                their_client(s).await
            })
        }
        Transport::Unix => {
            let path = socket_path("their-client");
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            actix_rt::spawn(async move {
                let (s, _) = listener.accept().await.unwrap();
                start_connection(s, options);
            });
            on_their_thread(move || async move {
                let s = tokio::net::UnixStream::connect(&path)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = std::fs::remove_file(&path);
                their_client(s).await
            })
        }
    };
    let result = tokio::task::spawn_blocking(move || their.join().unwrap())
        .await
        .unwrap();
    result.unwrap();
    assert_eq!(*lines.lock().unwrap(), ["Service logger: pipelined"]);
    // Their thread has ended and closed its socket: our connection ends
    // with it, and releases everything it held.
    drop(service);
    capnp_actix::debug::assert_all_released().await;
}

async fn their_client<S>(s: S) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let mut rpc = their_rpc(s, Side::Client, None);
    let echo: echo::Client = rpc.bootstrap(Side::Server);
    tokio::task::spawn_local(rpc);
    let got: Lines = Arc::default();
    let cb: callback::Client = capnp_rpc::new_client(Recorder(got.clone()));
    exercise(echo, cb, got).await.map_err(|e| e.to_string())
}

/// Their server; our client.
async fn our_client_their_server(transport: Transport) {
    let lines: Lines = Arc::default();
    let served = lines.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let path = socket_path("their-server");
    let unix = matches!(transport, Transport::Unix);
    let server_path = path.clone();
    let their = on_their_thread(move || async move {
        let logger: callback::Client = capnp_rpc::new_client(Prefix(served));
        let echo: echo::Client = capnp_rpc::new_client(TheirEcho { logger });
        let stream_done = if unix {
            let _ = std::fs::remove_file(&server_path);
            let l = tokio::net::UnixListener::bind(&server_path).map_err(|e| e.to_string())?;
            tx.send(None).unwrap();
            let (s, _) = l.accept().await.map_err(|e| e.to_string())?;
            their_rpc(s, Side::Server, Some(echo.client))
        } else {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            tx.send(Some(l.local_addr().unwrap())).unwrap();
            let (s, _) = l.accept().await.map_err(|e| e.to_string())?;
            s.set_nodelay(true).unwrap();
            their_rpc(s, Side::Server, Some(echo.client))
        };
        // Serve until our client disconnects.
        stream_done.await.map_err(|e| e.to_string())
    });
    let addr = tokio::task::spawn_blocking(move || rx.recv().unwrap())
        .await
        .unwrap();
    let conn = match addr {
        Some(a) => start_connection(
            tokio::net::TcpStream::connect(a).await.unwrap(),
            ConnectionOptions::default(),
        ),
        None => start_connection(
            tokio::net::UnixStream::connect(&path).await.unwrap(),
            ConnectionOptions::default(),
        ),
    };
    {
        let echo: Cap<echo::Client> = Cap::from_raw(conn.bootstrap(b""));
        let got: Lines = Arc::default();
        let cb = capnp_actix::new_client(Recorder(got.clone()));
        exercise(echo.client(), cb, got).await.unwrap();
    }
    assert_eq!(*lines.lock().unwrap(), ["Service logger: pipelined"]);
    let mut empty = false;
    for _ in 0..200 {
        if conn.inspect().await.is_some_and(|(s, _)| s.is_empty()) {
            empty = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(empty, "our tables: {:?}", conn.inspect().await);
    conn.close("test over");
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("our connection ends");
    // Their server stops serving once we have gone (with the error our
    // abort gave it, which is not what this test checks).
    let _ = tokio::task::spawn_blocking(move || their.join().unwrap())
        .await
        .unwrap();
    let _ = std::fs::remove_file(&path);
    capnp_actix::debug::assert_all_released().await;
}

struct Prefix(Lines);
impl callback::Server for Prefix {
    async fn log(
        self: Rc<Self>,
        params: callback::LogParams,
        _: callback::LogResults,
    ) -> Result<(), capnp::Error> {
        let msg = params.get()?.get_msg()?.to_string()?;
        self.0
            .lock()
            .unwrap()
            .push(format!("Service logger: {msg}"));
        Ok(())
    }
}

#[actix::test]
async fn capnp_rpc_client_against_our_server_over_tcp() {
    their_client_our_server(Transport::Tcp).await;
}

#[actix::test]
async fn capnp_rpc_client_against_our_server_over_unix_socket() {
    their_client_our_server(Transport::Unix).await;
}

#[actix::test]
async fn our_client_against_capnp_rpc_server_over_tcp() {
    our_client_their_server(Transport::Tcp).await;
}

#[actix::test]
async fn our_client_against_capnp_rpc_server_over_unix_socket() {
    our_client_their_server(Transport::Unix).await;
}

#[actix::test]
async fn the_capnp_rpc_crate_answers_our_heartbeat_probes() {
    let beat = Duration::from_millis(100);
    let path = socket_path("their-heartbeat");
    let server_path = path.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let their = on_their_thread(move || async move {
        let logger: callback::Client = capnp_rpc::new_client(Prefix(Lines::default()));
        let echo: echo::Client = capnp_rpc::new_client(TheirEcho { logger });
        let _ = std::fs::remove_file(&server_path);
        let l = tokio::net::UnixListener::bind(&server_path).map_err(|e| e.to_string())?;
        tx.send(()).unwrap();
        let (s, _) = l.accept().await.map_err(|e| e.to_string())?;
        their_rpc(s, Side::Server, Some(echo.client))
            .await
            .map_err(|e| e.to_string())
    });
    tokio::task::spawn_blocking(move || rx.recv().unwrap())
        .await
        .unwrap();
    let options = ConnectionOptions {
        heartbeat: Some(capnp_actix::connection::Heartbeat {
            interval: beat,
            timeout: beat,
        }),
        ..ConnectionOptions::default()
    };
    let conn = start_connection(
        tokio::net::UnixStream::connect(&path).await.unwrap(),
        options,
    );
    let ping = |echo: &Cap<echo::Client>, msg: &'static str| {
        let client = echo.client();
        async move {
            let mut req = client.ping_request();
            req.get().set_msg(msg);
            let reply = req.send().promise.await?;
            Ok::<_, capnp::Error>(reply.get()?.get_reply()?.to_string()?)
        }
    };
    {
        let echo: Cap<echo::Client> = Cap::from_raw(conn.bootstrap(b""));
        assert_eq!(ping(&echo, "one").await.unwrap(), "echo:one");
        // Ten intervals of silence: unanswered, the probes would have
        // ended the connection after two.
        tokio::time::sleep(10 * beat).await;
        assert!(conn.is_open());
        assert_eq!(ping(&echo, "two").await.unwrap(), "echo:two");
    }
    // Every probe was finished and its answer released.
    let mut empty = false;
    for _ in 0..200 {
        if conn.inspect().await.is_some_and(|(s, _)| s.is_empty()) {
            empty = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(empty, "our tables: {:?}", conn.inspect().await);
    conn.close("test over");
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("our connection ends");
    let _ = tokio::task::spawn_blocking(move || their.join().unwrap())
        .await
        .unwrap();
    let _ = std::fs::remove_file(&path);
    capnp_actix::debug::assert_all_released().await;
}
