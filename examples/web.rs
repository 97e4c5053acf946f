//! An actix-web front end for a Cap'n Proto capability.
//!
//! Run it with `cargo run --example web` and open
//! <http://127.0.0.1:8080/ping/hello>: the reply is `echo:hello`, computed by
//! the echo service of the tutorial (`examples/common/echo_service.rs`).
//! `--bind ADDR` picks another address; `--self-test` serves on a free port,
//! fetches `/ping/hello` once with a tiny HTTP/1.1 client, checks the body
//! and exits (0 when it is right). `--backend URI` calls the echo service of
//! another process (what `echo serve` prints) instead of hosting one,
//! imported with reconnection (`Vat::import_reconnecting`): the front end
//! survives a restart of the backend, and a request made while it is down
//! waits for it up to 2 s, then gets 502. `GET /metrics` gives the runtime's
//! metrics (connections, calls, bytes, durations, memory held for peers:
//! see the `metrics` facade's names in the crate docs) in Prometheus' text
//! format, from the `metrics-exporter-prometheus` recorder installed at
//! start.
//!
//! How it fits together: the echo service is hosted with [`Cap::new`] in the
//! main actix `System`, so its actor lives on the main thread. The resulting
//! `Cap<echo::Client>` is `Send + Sync`, so it goes into `web::Data` and is
//! shared by every actix-web worker (each worker is its own arbiter, on its
//! own thread). A handler calls [`Cap::client`] to get the generated client
//! on its worker thread, and the call travels to the service's actor on the
//! main thread and back.

#[path = "common/logging.rs"]
mod logging;

#[path = "common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use capnp_actix::schemas::echo_api_capnp::echo;
use capnp_actix::Cap;
use clap::Parser;
use echo_service::{EchoService, Sink};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serve the echo capability over HTTP: `GET /ping/{msg}`.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,

    /// Number of actix-web worker threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,

    /// Serve on a free local port, fetch /ping/hello once, check the reply
    /// and exit.
    #[arg(long)]
    self_test: bool,

    /// Use the echo service this sturdy URI names (what `echo serve`
    /// prints) instead of hosting one: it is imported with reconnection,
    /// so the front end survives a restart of the backend. While the
    /// backend is down, a request waits for it up to 2 s, then gets 502.
    #[arg(long, value_name = "URI")]
    backend: Option<capnp_actix::SturdyUri>,
}

/// How long a request waits for the backend's reply (including for the
/// backend to come back after a restart).
const BACKEND_DEADLINE: Duration = Duration::from_secs(2);

/// The echo service the front end calls: the backend at `uri` (imported
/// with reconnection, through a client vat kept alive with it) or one
/// hosted here.
async fn echo_service(
    uri: Option<&capnp_actix::SturdyUri>,
) -> Result<(Cap<echo::Client>, Option<capnp_actix::vat::Vat>), BoxError> {
    let Some(uri) = uri else {
        let hosted = Cap::new(EchoService::new(Duration::from_secs(1), Sink::Stdout));
        return Ok((hosted, None));
    };
    let vat = capnp_actix::vat::Vat::client(&capnp_actix::VatConfig::new()).await?;
    let backend =
        vat.import_reconnecting::<echo::Client>(uri, capnp_actix::vat::ReconnectPolicy::default())?;
    let mut state = backend.watch();
    actix::spawn(async move {
        while state.changed().await.is_ok() {
            let now = format!("{:?}", *state.borrow());
            tracing::info!("backend: {now}");
        }
    });
    Ok((backend.cap().with_deadline(BACKEND_DEADLINE), Some(vat)))
}

type BoxError = Box<dyn Error>;

/// `GET /ping/{msg}`: pings the echo capability and returns its reply.
async fn ping(service: web::Data<Cap<echo::Client>>, msg: web::Path<String>) -> HttpResponse {
    // The generated client is made here, on this worker's thread.
    let client = service.client();
    let mut request = client.ping_request();
    request.get().set_msg(msg.as_str());
    let reply = async {
        let response = request.send().promise.await?;
        Ok::<_, capnp::Error>(response.get()?.get_reply()?.to_str()?.to_owned())
    }
    .await;
    match reply {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(text),
        Err(e) => HttpResponse::BadGateway()
            .content_type("text/plain; charset=utf-8")
            .body(format!("echo service failed: {e}\n")),
    }
}

/// Builds the HTTP server on `bind` and returns it (not yet running) with
/// the address it listens on.
fn server(
    service: Cap<echo::Client>,
    metrics: PrometheusHandle,
    bind: SocketAddr,
    workers: u16,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    let data = web::Data::new(service);
    let metrics = web::Data::new(metrics);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(metrics.clone())
            .route("/ping/{msg}", web::get().to(ping))
            .route("/metrics", web::get().to(render_metrics))
    })
    .workers(workers.into())
    .bind(bind)?;
    let addr = *server
        .addrs()
        .first()
        .ok_or_else(|| std::io::Error::other("bound to no address"))?;
    println!("listening on http://{addr}/ping/{{msg}}");
    Ok((server.run(), addr))
}

/// `GET /metrics`: every metric recorded so far, in Prometheus' text
/// format.
async fn render_metrics(metrics: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render())
}

/// Installs the Prometheus recorder: the `metrics` facade's reports go to
/// it from now on.
fn install_metrics() -> Result<PrometheusHandle, BoxError> {
    Ok(PrometheusBuilder::new().install_recorder()?)
}

/// A minimal HTTP/1.1 GET: returns the status code and the body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), BoxError> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let raw = String::from_utf8(raw)?;

    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or("response has no end of headers")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(value.parse::<usize>()?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(format!("unexpected transfer-encoding {value:?}").into());
            }
        }
    }
    let body = match content_length {
        Some(n) => body
            .get(..n)
            .ok_or_else(|| format!("body shorter than its content-length {n}"))?,
        // With `Connection: close`, the body runs to the end of the stream.
        None => body,
    };
    Ok((status, body.to_owned()))
}

async fn self_test(workers: u16) -> Result<(), BoxError> {
    {
        let service: Cap<echo::Client> =
            Cap::new(EchoService::new(Duration::from_millis(10), Sink::Stdout));
        // Port 0: the system picks a free port.
        let metrics = install_metrics()?;
        let (running, addr) = server(service, metrics, ([127, 0, 0, 1], 0).into(), workers)?;
        let handle = running.handle();
        let serving = actix_rt::spawn(running);

        let outcome = match tokio::time::timeout(
            Duration::from_secs(10),
            http_get(addr, "/ping/hello"),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err("no HTTP response within 10 s".into()),
        };

        let metrics = match outcome {
            Ok(_) => tokio::time::timeout(Duration::from_secs(10), http_get(addr, "/metrics"))
                .await
                .map_err(|_| BoxError::from("no HTTP response to /metrics within 10 s"))
                .and_then(|r| r),
            Err(_) => Err("skipped".into()),
        };
        handle.stop(true).await;
        let _ = serving.await;
        let (status, body) = outcome?;
        let (metrics_status, _) = metrics?;
        println!("GET /metrics -> {metrics_status}");
        if metrics_status != 200 {
            return Err(format!("expected 200 from /metrics, got {metrics_status}").into());
        }
        println!("GET /ping/hello -> {status} {body:?}");
        if status != 200 || body != "echo:hello" {
            return Err(format!("expected 200 \"echo:hello\", got {status} {body:?}").into());
        }
    }
    capnp_actix::debug::wait_all_released(Duration::from_secs(2))
        .await
        .map_err(|report| format!("capabilities or actors still alive after 2 s:\n{report}"))?;
    println!("self-test passed");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init();
    let system = actix::System::new();
    let outcome = if args.self_test {
        system.block_on(self_test(args.workers))
    } else {
        system.block_on(async {
            let (service, _backend_vat) = echo_service(args.backend.as_ref()).await?;
            // Runs until Ctrl-C (actix-web stops on SIGINT and SIGTERM).
            let metrics = install_metrics()?;
            let (running, _) = server(service, metrics, args.bind, args.workers)?;
            running.await?;
            Ok(())
        })
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web: {e}");
            ExitCode::FAILURE
        }
    }
}
