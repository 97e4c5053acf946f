//! Load benchmark: many connections, from several client processes,
//! against one vat served by 1 arbiter and by 2 (or more), with a probe
//! client timing single calls meanwhile.
//!
//! ```text
//! cargo run --release --example load -- compare            # 1 arbiter against 2
//! cargo run --release --example load -- compare --quick    # one short round
//! cargo run --release --example load -- compare --arbiters 4 --connections 256
//! cargo run --release --example load -- serve unix:/tmp/load.sock --capnp-disable-tls --capnp-arbiters 2
//! cargo run --release --example load -- drive capnp://insecure@/tmp/load.sock/ --connections 16
//! ```
//!
//! `serve` runs a vat serving the `Bench` service of
//! `schemas/bench.capnp` with one instance per arbiter
//! (`Cap::per_arbiter`: the service is stateless, so a call never leaves
//! the arbiter of its connection), under the empty service ID.
//!
//! `drive` opens `--connections` connections to a URI and keeps
//! `--in-flight` `ping` calls in flight on each, for a warm-up second and
//! then `--seconds`; it prints the calls completed in the measured window.
//!
//! `compare` runs, for each arbiter count in turn (alternating the order
//! from round to round, so that a slow patch of the machine does not hit
//! one count only):
//!
//! 1. a `serve` process over a Unix socket in a temporary directory;
//! 2. an idle probe: sequential `ping`s from this process, p50 and p99;
//! 3. `--clients` `drive` processes sharing `--connections` connections;
//!    while they run, the probe goes on (p50 and p99 under load) and the
//!    server's CPU time is read from `/proc/PID/stat` over the measured
//!    window;
//! 4. the calls/s the drivers report together.
//!
//! It prints each round, then the median (and range) per arbiter count and
//! the ratios of the last count to 1 arbiter. See BENCHMARKING.md.

#[path = "common/bench_service.rs"]
mod bench_service;
#[path = "common/blast.rs"]
mod blast;
#[path = "common/logging.rs"]
mod logging;

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use bench_service::BenchServer;
use capnp_actix::schemas::bench_capnp::bench;
use capnp_actix::vat::Vat;
use capnp_actix::{Address, Cap, SturdyUri, VatConfig};
use clap::{Parser, Subcommand};
use futures::stream::{FuturesUnordered, StreamExt};

type BoxError = Box<dyn Error>;

/// Many connections against one vat, by arbiter count.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve the bench service (one instance per arbiter) until SIGINT or SIGTERM,
    /// under the empty service ID.
    Serve {
        /// Where to listen: tcp:HOST:PORT or unix:PATH.
        address: Address,
        /// The vat: TLS, arbiters, limits.
        #[command(flatten)]
        vat: VatConfig,
    },
    /// Like `drive`, with a raw load generator instead of an RPC client:
    /// each call and finish is a prepared message with its question ID
    /// patched in, and only a return's ID is read, so the clients cost
    /// far less CPU per call than the server. Unix socket URIs only.
    Blast {
        /// The service's sturdy URI (`capnp://insecure@/PATH/`).
        uri: SturdyUri,
        #[command(flatten)]
        load: Load,
        /// Calls per second offered by this process in all (default: a
        /// new call as soon as one returns).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Keep calls in flight on many connections; print the calls done.
    Drive {
        /// The service's sturdy URI.
        uri: SturdyUri,
        #[command(flatten)]
        load: Load,
    },
    /// Serve with 1 arbiter and with `--arbiters`, under the same load,
    /// and compare.
    Compare {
        /// The arbiter count compared with 1.
        #[arg(long, default_value_t = 2)]
        arbiters: u16,
        /// Client processes sharing the connections.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Rounds (each runs every arbiter count once).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// One short round.
        #[arg(long)]
        quick: bool,
        /// The load generators: `blast` (raw, cheap per call, so the
        /// server is what saturates) or `rpc` (our RPC client, `drive`).
        #[arg(long, value_enum, default_value_t = Generator::Blast)]
        client: Generator,
        /// Calls per second offered by all the `blast` clients together
        /// (default: as many as the server answers, a new call as soon as
        /// one returns). Below the server's capacity, the probe shows the
        /// latency of a vat that is busy but not saturated.
        #[arg(long)]
        rate: Option<f64>,
        #[command(flatten)]
        load: Load,
    },
}

/// Which load generator `compare` runs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Generator {
    /// `load blast`.
    Blast,
    /// `load drive`.
    Rpc,
}

impl Generator {
    fn command(self) -> &'static str {
        match self {
            Generator::Blast => "blast",
            Generator::Rpc => "drive",
        }
    }
}

/// The load the drivers put on.
#[derive(clap::Args, Debug, Clone, Copy)]
struct Load {
    /// Connections (in all, for `compare`).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Calls kept in flight on each connection.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Seconds measured, after a second of warm-up.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

const WARM_UP: Duration = Duration::from_secs(1);

async fn ping(client: &bench::Client, n: u64) -> Result<(), capnp::Error> {
    let mut request = client.ping_request();
    request.get().set_n(n);
    let got = request.send().promise.await?.get()?.get_n();
    if got != n.wrapping_add(1) {
        return Err(capnp::Error::failed(format!("ping({n}) returned {got}")));
    }
    Ok(())
}

/// `load serve`: the service, one instance per arbiter, under the empty
/// ID, until SIGINT or SIGTERM; then a graceful shutdown.
async fn serve(address: Address, config: VatConfig) -> Result<(), BoxError> {
    let config = config.with_listen_address(address);
    let (vat, uris) = Vat::builder(&config)
        .serve_with(|s| {
            let service: Cap<bench::Client> = Cap::per_arbiter(s.arbiters(), || BenchServer);
            s.serve_public("", service);
        })
        .start()
        .await?;
    // Installed before the server says it is up.
    let signal = capnp_actix::vat::shutdown_signal();
    println!(
        "load service at: {} ({} arbiters)",
        uris[""],
        vat.arbiters().len()
    );
    std::io::stdout().flush()?;
    signal.await;
    vat.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// `load drive`: prints `calls N` for the measured window.
async fn drive(uri: SturdyUri, load: Load) -> Result<(), BoxError> {
    let mut clients = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let cap: Cap<bench::Client> = Cap::from_raw(
            capnp_actix::vat::import(&uri)
                .await
                .map_err(|e| e.to_string())?,
        );
        clients.push(cap);
    }
    let start = Instant::now();
    let measure_from = start + WARM_UP;
    let end = measure_from + Duration::from_secs(load.seconds);
    let mut loops = FuturesUnordered::new();
    for cap in &clients {
        for _ in 0..load.in_flight {
            let client = cap.client();
            loops.push(async move {
                let mut done = 0u64;
                let mut n = 0u64;
                loop {
                    ping(&client, n).await?;
                    n += 1;
                    let now = Instant::now();
                    if now >= end {
                        return Ok::<u64, capnp::Error>(done);
                    }
                    if now >= measure_from {
                        done += 1;
                    }
                }
            });
        }
    }
    let mut total = 0;
    while let Some(done) = loops.next().await {
        total += done?;
    }
    println!("calls {total}");
    Ok(())
}

/// Latencies of sequential pings, in µs, until `until`.
async fn probe(client: &bench::Client, until: Instant) -> Result<Vec<f64>, BoxError> {
    let mut samples = Vec::new();
    let mut n = 0;
    while Instant::now() < until {
        let t = Instant::now();
        ping(client, n).await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        n += 1;
    }
    Ok(samples)
}

fn quantile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64) * q).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), which ends
    // at the last ')': state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .ok_or("unreadable /proc stat")?
        .1
        .split_whitespace()
        .collect::<Vec<_>>();
    let ticks = |i: usize| -> Result<f64, BoxError> {
        let field = rest.get(i - 3).ok_or("a short /proc stat line")?;
        Ok(field.parse::<f64>()?)
    };
    // USER_HZ is 100 on Linux.
    Ok((ticks(14)? + ticks(15)?) / 100.0)
}

/// CPU seconds the whole machine has been busy (all but idle and
/// iowait), from `/proc/stat`.
fn machine_busy_seconds() -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().ok_or("empty /proc/stat")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse::<f64>())
        .collect::<Result<_, _>>()?;
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    Ok((ticks.iter().sum::<f64>() - idle) / 100.0)
}

/// One measurement of one arbiter count.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// Cores the whole machine kept busy (server, clients, probe and
    /// whatever else runs): near the CPU count, the clients are short of
    /// CPU too.
    machine: f64,
    cores: f64,
    calls_per_s: f64,
    idle_p50: f64,
    idle_p99: f64,
    load_p50: f64,
    load_p99: f64,
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(exe: &Path, socket: &Path, arbiters: u16) -> Result<(Server, SturdyUri), BoxError> {
    let _ = std::fs::remove_file(socket);
    let mut child = Command::new(exe)
        .args(["serve", &format!("unix:{}", socket.display())])
        .args([
            "--capnp-disable-tls",
            "--capnp-arbiters",
            &arbiters.to_string(),
        ])
        .args(["--capnp-max-connections-per-peer", "100000"])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let uri = line
        .strip_prefix("load service at: ")
        .and_then(|l| l.split_whitespace().next())
        .ok_or_else(|| format!("unexpected line from the server: {line:?}"))?;
    Ok((server, uri.parse()?))
}

/// The client processes of a round.
#[derive(Debug, Clone, Copy)]
struct Drivers {
    generator: Generator,
    /// How many processes share the connections.
    clients: usize,
    /// Calls per second offered by all of them (`blast` only).
    rate: Option<f64>,
}

impl Drivers {
    fn start(self, exe: &Path, uri: &SturdyUri, load: Load) -> Result<Vec<Child>, BoxError> {
        let clients = self.clients;
        (0..clients)
            .map(|i| {
                let share =
                    load.connections / clients + usize::from(i < load.connections % clients);
                let mut cmd = Command::new(exe);
                cmd.args([self.generator.command(), &uri.to_string()])
                    .args(["--connections", &share.to_string()])
                    .args(["--in-flight", &load.in_flight.to_string()])
                    .args(["--seconds", &load.seconds.to_string()]);
                if let Some(rate) = self.rate {
                    cmd.args(["--rate", &(rate / clients as f64).to_string()]);
                }
                Ok(cmd.stdout(Stdio::piped()).spawn()?)
            })
            .collect()
    }

    fn describe(&self, load: &Load) -> String {
        let offered = match self.rate {
            Some(rate) => format!("{rate:.0} calls/s offered in all"),
            None => format!("{} calls in flight on each", load.in_flight),
        };
        format!(
            "{} connections from {} `{}` client processes, {offered}, {} s measured",
            load.connections,
            self.clients,
            self.generator.command(),
            load.seconds
        )
    }
}

fn calls_of(drivers: Vec<Child>) -> Result<u64, BoxError> {
    let mut total = 0;
    for driver in drivers {
        let out = driver.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let n = text
            .lines()
            .find_map(|l| l.strip_prefix("calls "))
            .ok_or_else(|| format!("a driver failed ({}): {text}", out.status))?;
        total += n.trim().parse::<u64>()?;
    }
    Ok(total)
}

/// One round for one arbiter count.
async fn round(
    dir: &Path,
    arbiters: u16,
    drivers: Drivers,
    load: Load,
    probe_for: Duration,
) -> Result<Round, BoxError> {
    let exe = std::env::current_exe()?;
    let (server, uri) = start_server(&exe, &dir.join(format!("load-{arbiters}.sock")), arbiters)?;
    let pid = server.0.id();
    let cap: Cap<bench::Client> = Cap::from_raw(capnp_actix::vat::import(&uri).await?);
    let client = cap.client();
    let mut idle = probe(&client, Instant::now() + probe_for).await?;
    let drivers = drivers.start(&exe, &uri, load)?;
    // Connections take a moment to open; the drivers' clocks start once
    // all theirs are open, so measure a little late rather than early.
    tokio::time::sleep(WARM_UP + Duration::from_millis(300)).await;
    let (cpu0, busy0, t0) = (cpu_seconds(pid)?, machine_busy_seconds()?, Instant::now());
    let window = Duration::from_secs(load.seconds) - Duration::from_millis(600);
    let mut loaded = probe(&client, t0 + window).await?;
    let cores = (cpu_seconds(pid)? - cpu0) / t0.elapsed().as_secs_f64();
    let machine = (machine_busy_seconds()? - busy0) / t0.elapsed().as_secs_f64();
    let calls = calls_of(drivers)?;
    drop((client, cap, server));
    Ok(Round {
        machine,
        cores,
        calls_per_s: calls as f64 / load.seconds as f64,
        idle_p50: quantile(&mut idle, 0.5),
        idle_p99: quantile(&mut idle, 0.99),
        load_p50: quantile(&mut loaded, 0.5),
        load_p99: quantile(&mut loaded, 0.99),
    })
}

fn print_round(arbiters: u16, r: &Round) {
    println!(
        "  {arbiters} arbiter(s): server {:.2} cores (machine {:.2}), {:>9.0} calls/s, probe idle p50 {:.0} µs p99 {:.0} µs, under load p50 {:.0} µs p99 {:.0} µs",
        r.cores, r.machine, r.calls_per_s, r.idle_p50, r.idle_p99, r.load_p50, r.load_p99
    );
}

/// Median and range of one figure over rounds.
fn summary(rounds: &[Round], figure: impl Fn(&Round) -> f64) -> (f64, f64, f64) {
    let mut xs: Vec<f64> = rounds.iter().map(figure).collect();
    xs.sort_by(f64::total_cmp);
    let median = if xs.len() % 2 == 1 {
        xs[xs.len() / 2]
    } else {
        (xs[xs.len() / 2 - 1] + xs[xs.len() / 2]) / 2.0
    };
    (median, xs[0], xs[xs.len() - 1])
}

type Figure = (&'static str, fn(&Round) -> f64);

const FIGURES: [Figure; 7] = [
    ("server cores", |r| r.cores),
    ("machine busy cores", |r| r.machine),
    ("calls/s", |r| r.calls_per_s),
    ("probe idle p50 µs", |r| r.idle_p50),
    ("probe idle p99 µs", |r| r.idle_p99),
    ("probe loaded p50 µs", |r| r.load_p50),
    ("probe loaded p99 µs", |r| r.load_p99),
];

fn print_summary(counts: [u16; 2], results: [&[Round]; 2]) {
    println!("\nmedian [range] over {} round(s):", results[0].len());
    println!(
        "{:<22} {:>28} {:>28} {:>8}",
        "",
        format!("{} arbiter(s)", counts[0]),
        format!("{} arbiter(s)", counts[1]),
        "ratio"
    );
    for (name, figure) in FIGURES {
        let (m0, lo0, hi0) = summary(results[0], figure);
        let (m1, lo1, hi1) = summary(results[1], figure);
        println!(
            "{name:<22} {:>28} {:>28} {:>8.2}",
            format!("{m0:.2} [{lo0:.2}-{hi0:.2}]"),
            format!("{m1:.2} [{lo1:.2}-{hi1:.2}]"),
            m1 / m0
        );
    }
    for (count, rounds) in counts.iter().zip(results) {
        let (idle, _, _) = summary(rounds, |r| r.idle_p99);
        let (loaded, _, _) = summary(rounds, |r| r.load_p99);
        println!(
            "{count} arbiter(s): probe p99 under load / idle p99 = {:.1}",
            loaded / idle
        );
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn compare(
    arbiters: u16,
    drivers: Drivers,
    rounds: usize,
    load: Load,
) -> Result<(), BoxError> {
    let dir =
        TempDir(std::env::temp_dir().join(format!("capnp-actix-load-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{}; {cpus} CPU(s)", drivers.describe(&load));
    let counts = [1, arbiters.max(1)];
    let mut results: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    let probe_for = Duration::from_millis(if rounds == 1 { 500 } else { 1500 });
    for r in 0..rounds {
        println!("round {}/{rounds}", r + 1);
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let measured = round(&dir.0, counts[i], drivers, load, probe_for).await?;
            print_round(counts[i], &measured);
            results[i].push(measured);
        }
    }
    print_summary(counts, [&results[0], &results[1]]);
    Ok(())
}

fn main() -> ExitCode {
    logging::init();
    let args = Args::parse();
    let system = actix::System::new();
    let outcome = match args.command {
        Cmd::Serve { address, vat } => system.block_on(serve(address, vat)),
        Cmd::Drive { uri, load } => system.block_on(drive(uri, load)),
        Cmd::Blast { uri, load, rate } => system.block_on(blast::run(uri, load, rate)),
        Cmd::Compare {
            arbiters,
            clients,
            rounds,
            quick,
            client,
            rate,
            mut load,
        } => {
            let rounds = if quick {
                load.seconds = load.seconds.min(2);
                1
            } else {
                rounds.max(1)
            };
            let drivers = Drivers {
                generator: client,
                clients: clients.max(1),
                rate: rate.filter(|_| client == Generator::Blast),
            };
            system.block_on(compare(arbiters, drivers, rounds, load))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}
