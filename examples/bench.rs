//! Network benchmark: Cap'n Proto RPC calls over a socket, on our runtime
//! and on the capnp-rpc crate, and on our runtime with TLS and without,
//! for the `Bench` interface of `schemas/bench.capnp`.
//!
//! ```text
//! cargo run --release --example bench -- compare            # both runtimes, one run
//! cargo run --release --example bench -- compare --quick    # fewer calls, one round
//! cargo run --release --example bench -- tls                # TLS against no TLS
//! cargo run --release --example bench -- tls --quick
//! cargo run --release --example bench -- serve unix:/tmp/bench.sock --capnp-disable-tls
//! cargo run --release --example bench -- client capnp://insecure@/tmp/bench.sock/bWFpbg
//! ```
//!
//! The service: `ping(n)` returns `n + 1` (so that a reply shows the
//! server read the request) and `echoBytes(data)` returns `data`. The same
//! server type runs on both runtimes. The client checks every reply; it
//! also accepts `n` from `ping`, which is what the schema's comment asks
//! for, so `bench client` works against other implementations' servers.
//!
//! `compare` runs, in one process, over Unix sockets in a temporary
//! directory:
//!
//! - our server vat (no TLS) on a thread of its own (its own actix
//!   system), and a client vat on another, connected with `Vat::import`;
//! - a capnp-rpc server on a third thread (tokio current-thread runtime and
//!   `LocalSet`) and the capnp-rpc client on a fourth.
//!
//! Each round measures, per pair, after a warm-up:
//!
//! - sequential `ping`: one call at a time; median and 99th percentile of
//!   the round trip, in µs;
//! - `ping` with 100 calls in flight: calls/s;
//! - sequential `echoBytes` of 64 KiB: MB/s of payload echoed (10^6 bytes
//!   of `data` sent and the same returned per MB).
//!
//! The pairs take turns (ours first in rounds 1, 3, ..., theirs first in
//! rounds 2, 4, ...), so a slow patch of the machine does not hit only one
//! of them.
//! Each figure is the median over rounds. The table gives our ratio to
//! capnp-rpc, always oriented so that > 1 means we are faster: theirs/ours
//! for latency, ours/theirs for throughput. See BENCHMARKING.md for the
//! targets and for pinning both threads of a pair to one CPU
//! (`taskset -c 0`).
//!
//! `tls` runs, in one process, over TCP on 127.0.0.1, three server vats
//! on a thread of their own (TLS with an RSA-2048 key, TLS with an ECDSA
//! P-256 key, no TLS) and the clients on the main thread:
//!
//! - connect + first call: a fresh client vat (its key made beforehand)
//!   imports the service's URI and awaits one `ping`; the wall time from
//!   the import to the reply (TCP connect, TLS handshake if any,
//!   bootstrap, call), median and p99 over 50 connections per server
//!   (10 with `--quick`), the three servers taking turns;
//! - the three tests above, with one long-lived client vat over TLS (to
//!   the RSA-2048 server) and one without, taking turns as in `compare`.
//!
//! The table gives the ratio TLS/insecure for every figure.
//!
//! Standard output carries the results; errors go to standard error and
//! exit 1 (2 for a bad command line).

#[path = "common/bench_service.rs"]
mod bench_service;
#[path = "common/logging.rs"]
mod logging;

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bench_service::BenchServer;
use capnp_actix::schemas::bench_capnp::bench;
use capnp_actix::vat::Vat;
use capnp_actix::{Address, Cap, SecretKey, SturdyUri, VatConfig};
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use clap::{Parser, Subcommand};
use futures::channel::oneshot;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::compat::TokioAsyncReadCompatExt;

/// Cap'n Proto RPC over a socket: capnp-actix against the capnp-rpc crate.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the bench service until SIGINT or SIGTERM, under the service ID `main`
    /// (and, without TLS, the empty ID). TLS is on unless
    /// --capnp-disable-tls is given.
    Serve {
        /// Where to listen: tcp:HOST:PORT (port 0 picks one) or unix:PATH;
        /// the same as --capnp-listen-address.
        #[arg(conflicts_with = "listen_address")]
        address: Option<Address>,
        /// The vat: key file, addresses, TLS.
        #[command(flatten)]
        vat: VatConfig,
    },
    /// Measure our client against the service a sturdy URI names (any
    /// runtime's server).
    Client {
        /// The service's sturdy URI, as `serve` prints it.
        uri: SturdyUri,
        #[command(flatten)]
        size: Size,
    },
    /// Measure both runtimes, client and server, over Unix sockets, and
    /// print our ratio to capnp-rpc.
    Compare {
        #[command(flatten)]
        size: Size,
    },
    /// Measure our runtime over TCP with TLS and without, and print the
    /// ratio TLS/insecure: connect + first call, ping latency, calls/s.
    Tls {
        #[command(flatten)]
        size: Size,
        /// Connections timed per server (default 50, or 10 with --quick).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        handshakes: Option<u64>,
    },
}

/// How much to measure.
#[derive(clap::Args, Debug, Clone, Copy)]
struct Size {
    /// Fewer calls (2,000 sequential pings) and one round.
    #[arg(long)]
    quick: bool,
    /// Sequential pings per round (default 20,000); the in-flight test
    /// makes 5 times as many calls and the echo test a tenth as many.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    calls: Option<u64>,
    /// Rounds (default 3, or 1 with --quick); each figure is the median
    /// over rounds.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    rounds: Option<u64>,
    /// Echoes per round, instead of a tenth of `--calls` (for profiling
    /// the echo test: `--calls 10 --echoes 20000`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    echoes: Option<u64>,
}

/// Calls in flight in the throughput test.
const WINDOW: usize = 100;
/// Bytes per `echoBytes` call.
const ECHO_SIZE: usize = 64 * 1024;

/// One round's work, for one client.
#[derive(Debug, Clone, Copy)]
struct Plan {
    warmup: u64,
    sequential: u64,
    in_flight: u64,
    echoes: u64,
    rounds: u64,
}

impl Size {
    fn plan(self) -> Plan {
        let calls = self
            .calls
            .unwrap_or(if self.quick { 2_000 } else { 20_000 });
        Plan {
            warmup: (calls / 10).clamp(1, 2_000),
            sequential: calls,
            in_flight: calls * 5,
            echoes: self.echoes.unwrap_or((calls / 10).max(1)),
            rounds: self.rounds.unwrap_or(if self.quick { 1 } else { 3 }),
        }
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "per round: {} sequential pings, {} pings with {WINDOW} in flight, \
             {} sequential 64 KiB echoBytes (after {} warm-up pings); \
             median of {} round(s)",
            self.sequential, self.in_flight, self.echoes, self.warmup, self.rounds
        )
    }
}

/// What one round measured.
#[derive(Debug, Clone, Copy)]
struct Metrics {
    /// Sequential ping round trip, median, µs.
    median_us: f64,
    /// Sequential ping round trip, 99th percentile, µs.
    p99_us: f64,
    /// Pings per second with [`WINDOW`] in flight.
    calls_per_s: f64,
    /// Payload MB per second of sequential 64 KiB echoes.
    echo_mb_s: f64,
}

impl std::fmt::Display for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ping median {:.1} µs, p99 {:.1} µs; {:.0} calls/s with {WINDOW} in flight; \
             echoBytes {:.0} MB/s",
            self.median_us, self.p99_us, self.calls_per_s, self.echo_mb_s
        )
    }
}

type BoxError = Box<dyn Error>;

async fn ping(client: &bench::Client, n: u64) -> Result<(), capnp::Error> {
    let mut request = client.ping_request();
    request.get().set_n(n);
    let reply = request.send().promise.await?;
    let got = reply.get()?.get_n();
    if got != n.wrapping_add(1) && got != n {
        return Err(capnp::Error::failed(format!(
            "ping({n}) returned {got}, expected {} (or {n})",
            n.wrapping_add(1)
        )));
    }
    Ok(())
}

async fn echo(client: &bench::Client, payload: &[u8]) -> Result<(), capnp::Error> {
    let mut request = client.echo_bytes_request();
    request.get().set_data(payload);
    let reply = request.send().promise.await?;
    if reply.get()?.get_data()? != payload {
        return Err(capnp::Error::failed(
            "echoBytes returned other bytes".into(),
        ));
    }
    Ok(())
}

/// The `q` quantile of sorted samples (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (sorted.len() as f64 * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One round of all three tests on `client`.
async fn measure(client: &bench::Client, plan: &Plan) -> Result<Metrics, capnp::Error> {
    let payload: Vec<u8> = (0..ECHO_SIZE).map(|i| (i % 251) as u8).collect();
    for i in 0..plan.warmup {
        ping(client, i).await?;
    }
    for _ in 0..plan.echoes.min(10) {
        echo(client, &payload).await?;
    }

    // Sequential round trips.
    let mut samples = Vec::with_capacity(plan.sequential as usize);
    for i in 0..plan.sequential {
        let start = Instant::now();
        ping(client, i).await?;
        samples.push(start.elapsed());
    }
    samples.sort_unstable();

    // A window of calls in flight.
    let start = Instant::now();
    let mut running = FuturesUnordered::new();
    let mut sent = 0;
    let mut done = 0;
    while done < plan.in_flight {
        while running.len() < WINDOW && sent < plan.in_flight {
            running.push(ping(client, sent));
            sent += 1;
        }
        if let Some(result) = running.next().await {
            result?;
            done += 1;
        }
    }
    let calls_per_s = plan.in_flight as f64 / start.elapsed().as_secs_f64();

    // Bulk data, one call at a time.
    let start = Instant::now();
    for _ in 0..plan.echoes {
        echo(client, &payload).await?;
    }
    let echo_mb_s = (plan.echoes as f64 * ECHO_SIZE as f64) / start.elapsed().as_secs_f64() / 1e6;

    Ok(Metrics {
        median_us: micros(quantile(&samples, 0.5)),
        p99_us: micros(quantile(&samples, 0.99)),
        calls_per_s,
        echo_mb_s,
    })
}

/// Runs rounds as they are asked for, on the client's own thread, until
/// the sender of plans is dropped.
async fn drive(
    client: bench::Client,
    mut plans: mpsc::UnboundedReceiver<Plan>,
    results: std_mpsc::Sender<Result<Metrics, String>>,
) {
    while let Some(plan) = plans.recv().await {
        let outcome = measure(&client, &plan).await.map_err(|e| e.to_string());
        if results.send(outcome).is_err() {
            break;
        }
    }
}

/// A client and its server, each on its own thread, idle between rounds.
struct Pair {
    name: &'static str,
    plans: Option<mpsc::UnboundedSender<Plan>>,
    results: std_mpsc::Receiver<Result<Metrics, String>>,
    stop_server: Option<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pair {
    /// One round, run on the client's thread.
    fn round(&self, plan: Plan) -> Result<Metrics, String> {
        self.plans
            .as_ref()
            .and_then(|p| p.send(plan).ok())
            .ok_or_else(|| format!("{}: the client thread has stopped", self.name))?;
        self.results
            .recv()
            .map_err(|_| format!("{}: the client thread has stopped", self.name))?
            .map_err(|e| format!("{}: {e}", self.name))
    }

    /// Stops the client, then the server, and waits for their threads.
    fn finish(mut self) {
        self.plans = None;
        // The client thread ends when it sees the closed channel; the
        // server's turn comes after, so the client never sees it vanish.
        if let Some(client) = self.threads.pop() {
            let _ = client.join();
        }
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| format!("could not start thread {name}: {e}"))
}

/// A vat serving our service on the current arbiter, under the public ID
/// `main` (with TLS too: the other implementations' clients ask for it)
/// and, without TLS, the empty ID; and the URI of `main`.
async fn serve_ours(config: &VatConfig) -> Result<(Vat, SturdyUri), BoxError> {
    let service: Cap<bench::Client> = Cap::new(BenchServer);
    let (vat, uris) = Vat::builder(config)
        .serve_public("main", service)
        .default_without_tls("main")
        .start()
        .await?;
    Ok((vat, uris["main"].clone()))
}

/// Server vats running on a thread: their URIs, the sender that stops
/// them, and the thread.
type Servers = (Vec<SturdyUri>, oneshot::Sender<()>, JoinHandle<()>);

/// Our server vats, one per configuration, on a thread of their own (its
/// own actix system) until the returned sender fires or is dropped; gives
/// their URIs in the order of `configs`.
fn spawn_servers(name: &str, configs: Vec<VatConfig>) -> Result<Servers, String> {
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = spawn_thread(name, move || {
        actix::System::new().block_on(async move {
            let mut vats = Vec::new();
            let mut uris = Vec::new();
            for config in &configs {
                match serve_ours(config).await {
                    Ok((vat, uri)) => {
                        vats.push(vat);
                        uris.push(uri);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
            let _ = ready_tx.send(Ok(uris));
            let _ = stop_rx.await;
            for vat in vats {
                vat.stop();
            }
        })
    })?;
    let uris = ready_rx
        .recv()
        .map_err(|_| format!("{name}: the server thread died"))??;
    Ok((uris, stop_tx, thread))
}

/// The configuration of a client-only vat: with TLS (and an ephemeral key,
/// made now) or without.
fn client_config(tls: bool) -> Result<VatConfig, BoxError> {
    Ok(if tls {
        VatConfig::new().with_secret_key(SecretKey::try_ephemeral()?)
    } else {
        VatConfig::new().with_tls(false)
    })
}

/// A client-only vat (see [`client_config`]) and the bench service at
/// `uri` through it.
async fn import_bench(uri: &SturdyUri, tls: bool) -> Result<(Vat, bench::Client), BoxError> {
    let vat = Vat::client(&client_config(tls)?).await?;
    let cap: Cap<bench::Client> = vat.import_as(uri).await?;
    Ok((vat, cap.client()))
}

/// Our server and our client, over a Unix socket at `path` (no TLS).
fn start_ours(path: &Path) -> Result<Pair, String> {
    let config = VatConfig::new()
        .with_listen_address(Address::Unix(path.to_owned()))
        .with_tls(false);
    let (uris, stop_tx, server) = spawn_servers("ours-server", vec![config])?;
    let uri = uris
        .into_iter()
        .next()
        .ok_or("capnp-actix server thread gave no URI")?;

    let (plans_tx, plans_rx) = mpsc::unbounded_channel();
    let (results_tx, results_rx) = std_mpsc::channel();
    let client = spawn_thread("ours-client", move || {
        actix::System::new().block_on(async move {
            match import_bench(&uri, false).await {
                Ok((vat, client)) => {
                    drive(client, plans_rx, results_tx).await;
                    vat.stop();
                }
                Err(e) => {
                    let _ = results_tx.send(Err(e.to_string()));
                }
            }
        })
    })?;
    Ok(Pair {
        name: "capnp-actix",
        plans: Some(plans_tx),
        results: results_rx,
        stop_server: Some(stop_tx),
        threads: vec![server, client],
    })
}

/// A capnp-rpc two-party RPC system over `stream`.
fn their_rpc<S>(
    stream: S,
    side: Side,
    bootstrap: Option<capnp::capability::Client>,
) -> RpcSystem<Side>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let (read, write) = stream.compat().split();
    let network = twoparty::VatNetwork::new(read, write, side, Default::default());
    RpcSystem::new(Box::new(network), bootstrap)
}

/// Runs `f` on a tokio current-thread runtime with a `LocalSet`, as
/// capnp-rpc needs.
fn on_local_set<Fut: std::future::Future<Output = ()>>(f: impl FnOnce() -> Fut) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => tokio::task::LocalSet::new().block_on(&rt, f()),
        Err(e) => eprintln!("bench: could not start a tokio runtime: {e}"),
    }
}

/// The capnp-rpc server and client, over a Unix socket at `path`.
fn start_theirs(path: &Path) -> Result<Pair, String> {
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server_path = path.to_owned();
    let server = spawn_thread("capnp-rpc-server", move || {
        on_local_set(|| async move {
            let listener = match tokio::net::UnixListener::bind(&server_path) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{}: {e}", server_path.display())));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let service: bench::Client = capnp_rpc::new_client(BenchServer);
            let accept = async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let rpc = their_rpc(stream, Side::Server, Some(service.clone().client));
                    tokio::task::spawn_local(async move {
                        let _ = rpc.await;
                    });
                }
            };
            futures::pin_mut!(accept);
            futures::future::select(accept, stop_rx).await;
        })
    })?;
    ready_rx
        .recv()
        .map_err(|_| "capnp-rpc server thread died".to_string())??;

    let (plans_tx, plans_rx) = mpsc::unbounded_channel();
    let (results_tx, results_rx) = std_mpsc::channel();
    let client_path = path.to_owned();
    let client = spawn_thread("capnp-rpc-client", move || {
        on_local_set(|| async move {
            let stream = match tokio::net::UnixStream::connect(&client_path).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = results_tx.send(Err(format!("{}: {e}", client_path.display())));
                    return;
                }
            };
            let mut rpc = their_rpc(stream, Side::Client, None);
            let client: bench::Client = rpc.bootstrap(Side::Server);
            tokio::task::spawn_local(async move {
                let _ = rpc.await;
            });
            drive(client, plans_rx, results_tx).await;
        })
    })?;
    Ok(Pair {
        name: "capnp-rpc",
        plans: Some(plans_tx),
        results: results_rx,
        stop_server: Some(stop_tx),
        threads: vec![server, client],
    })
}

/// The median of some figures.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Per-metric medians over rounds.
fn medians(runs: &[Metrics]) -> Metrics {
    let of = |f: fn(&Metrics) -> f64| median(runs.iter().map(f).collect());
    Metrics {
        median_us: of(|m| m.median_us),
        p99_us: of(|m| m.p99_us),
        calls_per_s: of(|m| m.calls_per_s),
        echo_mb_s: of(|m| m.echo_mb_s),
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A temporary directory for the sockets, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("capnp-actix-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `bench compare`.
fn compare(plan: Plan) -> Result<(), BoxError> {
    let dir = TempDir::new()?;
    let ours = start_ours(&dir.0.join("capnp-actix.sock"))?;
    let theirs = start_theirs(&dir.0.join("capnp-rpc.sock"))?;
    println!(
        "Cap'n Proto RPC over a Unix socket, capnp-actix against the capnp-rpc crate \
         ({} CPU(s) available)",
        cpus()
    );
    println!("{plan}");
    let mut ours_runs = Vec::new();
    let mut theirs_runs = Vec::new();
    for round in 0..plan.rounds {
        let order = if round % 2 == 0 {
            [(&ours, &mut ours_runs), (&theirs, &mut theirs_runs)]
        } else {
            [(&theirs, &mut theirs_runs), (&ours, &mut ours_runs)]
        };
        for (pair, runs) in order {
            let m = pair.round(plan)?;
            println!(
                "  round {}/{} {:<11} {m}",
                round + 1,
                plan.rounds,
                pair.name
            );
            std::io::stdout().flush()?;
            runs.push(m);
        }
    }
    ours.finish();
    theirs.finish();
    print_table(&medians(&ours_runs), &medians(&theirs_runs));
    Ok(())
}

/// A metric of [`Metrics`]: its row name and whether lower is better.
type MetricRow = (&'static str, fn(&Metrics) -> f64, bool);

/// The rows of [`Metrics`], in the order the tables print them.
const METRIC_ROWS: [MetricRow; 4] = [
    ("ping round trip, median (µs)", |m| m.median_us, true),
    ("ping round trip, p99 (µs)", |m| m.p99_us, true),
    ("pings/s, 100 in flight", |m| m.calls_per_s, false),
    ("echoBytes 64 KiB (MB/s)", |m| m.echo_mb_s, false),
];

/// One line of a results table: two figures, their ratio as shown, and
/// optionally a verdict on a target.
struct Row {
    name: String,
    left: f64,
    right: f64,
    ratio: f64,
    target: Option<String>,
}

/// Prints `rows` under the column heads `left` and `right`, after a blank
/// line. Figures under 1000 get one decimal.
fn print_rows(left: &str, right: &str, rows: &[Row]) {
    let width = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(30);
    let targets = if rows.iter().any(|r| r.target.is_some()) {
        "   target"
    } else {
        ""
    };
    println!();
    println!(
        "{:<width$} {:>12} {:>12} {:>7}{targets}",
        "", left, right, "ratio"
    );
    for row in rows {
        let digits = if row.left < 1000.0 { 1 } else { 0 };
        let target = row
            .target
            .as_ref()
            .map_or_else(String::new, |t| format!("   {t}"));
        println!(
            "{:<width$} {:>12.digits$} {:>12.digits$} {:>7.2}{target}",
            row.name, row.left, row.right, row.ratio
        );
    }
}

fn print_table(ours: &Metrics, theirs: &Metrics) {
    let targets = [Some(1.0), None, Some(1.5), Some(1.0)];
    let rows: Vec<Row> = METRIC_ROWS
        .iter()
        .zip(targets)
        .map(|(&(name, of, lower_is_better), target)| {
            let (ours, theirs) = (of(ours), of(theirs));
            let ratio = if lower_is_better {
                theirs / ours
            } else {
                ours / theirs
            };
            let target = match target {
                Some(t) if ratio >= t => format!(">= {t:.2}  met"),
                Some(t) => format!(">= {t:.2}  MISSED"),
                None => "-".into(),
            };
            Row {
                name: name.into(),
                left: ours,
                right: theirs,
                ratio,
                target: Some(target),
            }
        })
        .collect();
    print_rows("capnp-actix", "capnp-rpc", &rows);
    println!(
        "ratio > 1 means capnp-actix is faster: capnp-rpc/capnp-actix for latency, \
         capnp-actix/capnp-rpc for throughput"
    );
}

/// Connect + first call from a fresh client vat: the time from importing
/// `uri` to the reply of one `ping` (the vat and its key are made before
/// the clock starts; the vat is stopped after).
async fn first_call(uri: &SturdyUri, tls: bool) -> Result<Duration, BoxError> {
    let vat = Vat::client(&client_config(tls)?).await?;
    let start = Instant::now();
    let outcome = async {
        let cap: Cap<bench::Client> = vat.import_as(uri).await?;
        ping(&cap.client(), 0).await
    }
    .await;
    let took = start.elapsed();
    vat.stop();
    outcome?;
    // Let the closing connection's work finish outside the next timing.
    tokio::time::sleep(Duration::from_millis(2)).await;
    Ok(took)
}

/// A server of `bench tls`, for connect + first call.
struct Target {
    /// What it is, for the progress lines.
    label: &'static str,
    /// Its key, as the table's rows name it (unused for the insecure
    /// server).
    key: &'static str,
    uri: SturdyUri,
    tls: bool,
    samples: Vec<Duration>,
}

/// What `bench tls` measured.
struct TlsResults {
    /// Connect + first call: the TLS servers, then the insecure one.
    targets: Vec<Target>,
    tls: Metrics,
    insecure: Metrics,
}

/// The client side of `bench tls`, on the current actix system; the
/// servers are `rsa`, `p256` (TLS) and `plain` (no TLS).
async fn tls_client(
    rsa: SturdyUri,
    p256: SturdyUri,
    plain: SturdyUri,
    plan: Plan,
    handshakes: u64,
) -> Result<TlsResults, BoxError> {
    let mut targets = vec![
        Target {
            label: "TLS, RSA-2048 key",
            key: "RSA-2048",
            uri: rsa.clone(),
            tls: true,
            samples: Vec::new(),
        },
        Target {
            label: "TLS, ECDSA P-256 key",
            key: "P-256",
            uri: p256,
            tls: true,
            samples: Vec::new(),
        },
        Target {
            label: "no TLS",
            key: "-",
            uri: plain.clone(),
            tls: false,
            samples: Vec::new(),
        },
    ];
    // One untimed connection to each first; then the servers take turns,
    // the first of each turn rotating, so that none always follows the
    // same one.
    for t in &targets {
        first_call(&t.uri, t.tls).await?;
    }
    let n = targets.len();
    for i in 0..handshakes as usize {
        for k in 0..n {
            let t = &mut targets[(i + k) % n];
            let took = first_call(&t.uri, t.tls).await?;
            t.samples.push(took);
        }
    }
    for t in &mut targets {
        t.samples.sort_unstable();
        println!(
            "  connect + first call, {:<21} median {:.1} µs, p99 {:.1} µs",
            format!("{}:", t.label),
            micros(quantile(&t.samples, 0.5)),
            micros(quantile(&t.samples, 0.99)),
        );
    }
    std::io::stdout().flush()?;

    let (tls_vat, tls_client) = import_bench(&rsa, true).await?;
    let (plain_vat, plain_client) = import_bench(&plain, false).await?;
    let mut tls_runs = Vec::new();
    let mut plain_runs = Vec::new();
    for round in 0..plan.rounds {
        let order = if round % 2 == 0 {
            [
                ("TLS", &tls_client, &mut tls_runs),
                ("insecure", &plain_client, &mut plain_runs),
            ]
        } else {
            [
                ("insecure", &plain_client, &mut plain_runs),
                ("TLS", &tls_client, &mut tls_runs),
            ]
        };
        for (name, client, runs) in order {
            let m = measure(client, &plan).await?;
            println!("  round {}/{} {name:<8} {m}", round + 1, plan.rounds);
            std::io::stdout().flush()?;
            runs.push(m);
        }
    }
    tls_vat.stop();
    plain_vat.stop();
    Ok(TlsResults {
        targets,
        tls: medians(&tls_runs),
        insecure: medians(&plain_runs),
    })
}

/// `bench tls`.
fn tls(plan: Plan, handshakes: u64) -> Result<(), BoxError> {
    let tcp = Address::Tcp {
        host: "127.0.0.1".into(),
        port: 0,
    };
    let configs = vec![
        VatConfig::new()
            .with_listen_address(tcp.clone())
            .with_secret_key(SecretKey::generate_rsa()?),
        VatConfig::new()
            .with_listen_address(tcp.clone())
            .with_secret_key(SecretKey::try_ephemeral()?),
        VatConfig::new().with_listen_address(tcp).with_tls(false),
    ];
    let (uris, stop_servers, server_thread) = spawn_servers("tls-servers", configs)?;
    let [rsa, p256, plain]: [SturdyUri; 3] = uris
        .try_into()
        .map_err(|_| "the server thread gave the wrong number of URIs")?;
    println!(
        "Cap'n Proto RPC over TCP on 127.0.0.1, capnp-actix with TLS (rustls, ring) \
         against without ({} CPU(s) available)",
        cpus()
    );
    println!(
        "connect + first call: {handshakes} fresh client vats per server, each timed \
         from import to the reply of one ping"
    );
    println!("{plan}; TLS to the RSA-2048 server");
    let outcome = actix::System::new().block_on(tls_client(rsa, p256, plain, plan, handshakes));
    let _ = stop_servers.send(());
    let _ = server_thread.join();
    let results = outcome?;

    let Some((insecure, secure)) = results.targets.split_last() else {
        return Err("no connect + first call figures".into());
    };
    let mut rows = Vec::new();
    for t in secure {
        for (what, q) in [("median", 0.5), ("p99", 0.99)] {
            let left = micros(quantile(&t.samples, q));
            let right = micros(quantile(&insecure.samples, q));
            rows.push(Row {
                name: format!("connect + first call, {}, {what} (µs)", t.key),
                left,
                right,
                ratio: left / right,
                target: None,
            });
        }
    }
    for (name, of, _) in METRIC_ROWS {
        let (left, right) = (of(&results.tls), of(&results.insecure));
        rows.push(Row {
            name: name.into(),
            left,
            right,
            ratio: left / right,
            target: None,
        });
    }
    print_rows("TLS", "insecure", &rows);
    println!(
        "ratio = TLS/insecure: for times (µs) above 1 means TLS is slower, \
         for rates below 1 means TLS is slower"
    );
    Ok(())
}

/// `bench client`: our client against any server.
async fn client(uri: SturdyUri, plan: Plan) -> Result<(), BoxError> {
    let (vat, client) = import_bench(&uri, true).await?;
    println!(
        "capnp-actix client against {uri} ({} CPU(s) available)",
        cpus()
    );
    println!("{plan}");
    let mut runs = Vec::new();
    for round in 0..plan.rounds {
        let m = measure(&client, &plan).await?;
        println!("  round {}/{} {m}", round + 1, plan.rounds);
        std::io::stdout().flush()?;
        runs.push(m);
    }
    println!("median: {}", medians(&runs));
    vat.stop();
    Ok(())
}

/// `bench serve`: until SIGINT or SIGTERM, then a graceful shutdown.
async fn serve(address: Option<Address>, config: VatConfig) -> Result<(), BoxError> {
    let config = match address {
        Some(address) => config.with_listen_address(address),
        None if config.listen_address.is_some() => config,
        None => {
            return Err("serve needs an address: bench serve ADDR, \
                        or --capnp-listen-address ADDR"
                .into())
        }
    };
    let (vat, uri) = serve_ours(&config).await?;
    // Installed before the server says it is up.
    let signal = capnp_actix::vat::shutdown_signal();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "bench service running at: {uri}")?;
    stdout.flush()?;
    drop(stdout);
    signal.await;
    vat.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init();
    let outcome = match args.command {
        Command::Serve { address, vat } => actix::System::new().block_on(serve(address, vat)),
        Command::Client { uri, size } => actix::System::new().block_on(client(uri, size.plan())),
        Command::Compare { size } => compare(size.plan()),
        Command::Tls { size, handshakes } => tls(
            size.plan(),
            handshakes.unwrap_or(if size.quick { 10 } else { 50 }),
        ),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
