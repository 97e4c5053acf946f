//! Runs the examples (`echo`, `actor_service`, `web --self-test`, `bench`,
//! `calc`) as their users would and checks what they print; the network
//! ones (`echo serve` with `echo ping` / `log` / `connect`, `bench serve`
//! with `bench client`, `calc serve` with `calc connect`) across processes.
//!
//! Cargo does not tell an integration test where example binaries are, and
//! does not build them for `cargo test --test examples_run`. So the first
//! test to need them runs `cargo build --examples`-style once (with the same
//! cargo and the profile this test was built with; a no-op when they are
//! up to date) and takes the binaries' paths from cargo's JSON messages.
//! Each example runs under a timeout and is killed if it overruns; servers
//! started in the background are killed when their test ends, however it
//! ends. They run with `RUST_LOG=warn` (their default is `info`, which
//! shows where servers listen), so that a test asserting an empty standard
//! error checks that nothing went wrong, not that nothing was said;
//! `examples_log_at_info_by_default_and_honour_rust_log` checks the
//! default.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod examples_support;

use examples_support::*;

#[test]
fn echo_walks_the_tutorial() {
    let started = Instant::now();
    let run = run_example("echo", &["--heartbeat-interval", "0.01"]);
    assert!(run.status.success(), "{run}");
    assert_eq!(
        run.lines(),
        [
            r#"Got reply "echo:foo""#,
            r#"Callback got "foo""#,
            r#"Callback got "foo""#,
            r#"Callback got "foo""#,
            "Service logger: Hello from the tutorial",
        ],
        "{run}"
    );
    assert!(run.stderr.is_empty(), "{run}");
    // Three heartbeats 10 ms apart, not the default second.
    assert!(started.elapsed() < Duration::from_secs(30), "{run}");
}

#[test]
fn echo_heartbeat_interval_is_honoured() {
    let started = Instant::now();
    let run = run_example("echo", &["--heartbeat-interval", "0.3"]);
    let took = started.elapsed();
    assert!(run.status.success(), "{run}");
    // Two pauses between three heartbeats.
    assert!(took >= Duration::from_millis(600), "took {took:?}\n{run}");
}

#[test]
fn echo_rejects_a_bad_interval() {
    for bad in ["-1", "soon", "NaN"] {
        let run = run_example("echo", &["--heartbeat-interval", bad]);
        assert!(!run.status.success(), "--heartbeat-interval {bad}: {run}");
        assert!(run.stdout.is_empty(), "--heartbeat-interval {bad}: {run}");
        assert!(
            run.stderr.contains("--heartbeat-interval"),
            "--heartbeat-interval {bad}: {run}"
        );
    }
}

#[test]
fn actor_service_serves_from_the_users_actor() {
    let run = run_example("actor_service", &[]);
    assert!(run.status.success(), "{run}");
    assert_eq!(
        run.lines(),
        [
            r#"ping("one") -> "echo:one (call 1)""#,
            r#"ping("two") -> "echo:two (call 2)""#,
            r#"callback got "beat: 2 pings so far""#,
            r#"counter: restarting, forgetting 2 pings and ["heartbeat delivered", "kept in the actor's state"]"#,
            r#"ping("crash") -> Err(Error { kind: Failed, extra: "Echo.ping panicked: asked to crash; the actor serving it was stopped (an actix Supervisor restarts it)" })"#,
            r#"ping("three") -> "echo:three (call 1)""#,
            "all capabilities released",
        ],
        "{run}"
    );
    // The panic is reported where panics are (the default hook).
    assert!(run.stderr.contains("asked to crash"), "{run}");
}

#[test]
fn web_self_test_passes() {
    let run = run_example("web", &["--self-test"]);
    assert!(run.status.success(), "{run}");
    let lines = run.lines();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("listening on http://127.0.0.1:")),
        "{run}"
    );
    assert!(lines.contains(&"GET /metrics -> 200"), "{run}");
    assert!(
        lines.contains(&r#"GET /ping/hello -> 200 "echo:hello""#),
        "{run}"
    );
    assert_eq!(lines.last(), Some(&"self-test passed"), "{run}");
}

/// `echo serve` on `address`, with a fast heartbeat.
fn echo_server(address: &str) -> Server {
    Server::start(
        "echo",
        &[
            "serve",
            "--capnp-listen-address",
            address,
            "--capnp-disable-tls",
            "--heartbeat-interval",
            "0.01",
        ],
        "echo service running at: ",
    )
}

/// `echo ping`, `echo log` and `echo connect` against a running server.
fn exercise_echo_clients(server: &mut Server) {
    let uri = server.uri.clone();

    let run = run_example("echo", &["ping", &uri, "hello"]);
    assert!(run.status.success(), "{run}");
    assert_eq!(run.lines(), [r#"Got reply "echo:hello""#], "{run}");
    assert!(run.stderr.is_empty(), "{run}");

    let run = run_example("echo", &["log", &uri, "over the wire"]);
    assert!(run.status.success(), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    assert!(run.stderr.is_empty(), "{run}");
    server.expect_line("Service logger: over the wire");

    let run = run_example("echo", &["connect", &uri]);
    assert!(run.status.success(), "{run}");
    assert_eq!(run.lines(), [r#"Callback got "foo""#; 3], "{run}");
    assert!(run.stderr.is_empty(), "{run}");
}

#[test]
fn echo_serve_and_clients_over_a_unix_socket() {
    let dir = TempDir::new("echo-unix");
    let socket = dir.path().join("echo.sock");
    let mut server = echo_server(&format!("unix:{}", socket.display()));
    assert_eq!(
        server.uri,
        format!("capnp://insecure@{}/bWFpbg", socket.display())
    );
    exercise_echo_clients(&mut server);

    // The empty service ID is served too (TLS is off).
    let empty = server.uri.strip_suffix("bWFpbg").unwrap().to_string();
    let run = run_example("echo", &["ping", &empty, "no id"]);
    assert!(run.status.success(), "{run}");
    assert_eq!(run.lines(), [r#"Got reply "echo:no id""#], "{run}");

    // An ID nobody serves fails the call: exit 1, the error on stderr.
    let unknown = format!("{empty}bm9wZQ");
    let run = run_example("echo", &["ping", &unknown, "x"]);
    assert_eq!(exit_code(&run), Some(1), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    assert!(
        run.stderr.contains("Unknown persistent service ID"),
        "{run}"
    );
}

#[test]
fn echo_serve_and_clients_over_tcp_on_a_chosen_port() {
    let mut server = echo_server("tcp:127.0.0.1:0");
    let port = server
        .uri
        .strip_prefix("capnp://insecure@127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("/bWFpbg"))
        .and_then(|port| port.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("unexpected URI {:?}", server.uri));
    assert_ne!(port, 0);
    exercise_echo_clients(&mut server);
}

#[test]
fn echo_serve_refuses_bad_addresses_and_key_files() {
    let run = run_example("echo", &["serve", "--capnp-disable-tls"]);
    assert_eq!(exit_code(&run), Some(1), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    assert!(run.stderr.contains("--capnp-listen-address"), "{run}");

    // A key file that cannot be read (a directory) is named.
    let dir = TempDir::new("echo-badkey");
    let key = dir.path().display().to_string();
    let run = run_example(
        "echo",
        &[
            "serve",
            "--capnp-listen-address",
            "tcp:127.0.0.1:0",
            "--capnp-secret-key-file",
            &key,
        ],
    );
    assert_eq!(exit_code(&run), Some(1), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    assert!(run.stderr.contains(&key), "{run}");

    for (bad, problem) in [
        (
            "udp:127.0.0.1:7000",
            "Only tcp:HOST:PORT and unix:PATH addresses are supported",
        ),
        ("tcp:localhost", "missing a port"),
        ("tcp:localhost:http", "invalid port \"http\""),
        ("unix:", "missing a socket path"),
        ("localhost", "missing ':'"),
    ] {
        let run = run_example(
            "echo",
            &[
                "serve",
                "--capnp-listen-address",
                bad,
                "--capnp-disable-tls",
            ],
        );
        assert_eq!(exit_code(&run), Some(2), "{bad}: {run}");
        assert!(run.stdout.is_empty(), "{bad}: {run}");
        assert!(run.stderr.contains(problem), "{bad}: {run}");
    }
}

#[test]
fn echo_clients_refuse_bad_uris() {
    for (bad, problem) in [
        ("http://insecure@127.0.0.1:7000/bWFpbg", "wrong scheme"),
        ("capnp://insecure@127.0.0.1/bWFpbg", "missing port"),
        ("capnp://127.0.0.1:7000/bWFpbg", "missing digest hash type"),
        ("capnp://insecure@127.0.0.1:7000/!!", "service ID"),
        ("not a uri", "not a valid URI"),
    ] {
        for args in [
            vec!["ping", bad, "x"],
            vec!["log", bad, "x"],
            vec!["connect", bad],
        ] {
            let run = run_example("echo", &args);
            assert_eq!(exit_code(&run), Some(2), "{args:?}: {run}");
            assert!(run.stdout.is_empty(), "{args:?}: {run}");
            assert!(run.stderr.contains(problem), "{args:?}: {run}");
        }
    }
}

#[test]
fn echo_clients_fail_when_nothing_listens() {
    let dir = TempDir::new("echo-nothing");
    let socket = dir.path().join("nobody.sock");
    let uri = format!("capnp://insecure@{}/bWFpbg", socket.display());
    for args in [
        vec!["ping", &uri, "x"],
        vec!["log", &uri, "x"],
        vec!["connect", &uri],
    ] {
        let run = run_example("echo", &args);
        assert_eq!(exit_code(&run), Some(1), "{args:?}: {run}");
        assert!(run.stdout.is_empty(), "{args:?}: {run}");
        // The error is the last line (the runtime's warning about the
        // failed connect comes before it).
        let last = run.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("echo: ") && last.contains(&socket.display().to_string()),
            "{args:?}: {run}"
        );
    }
}

#[test]
fn examples_log_at_info_by_default_and_honour_rust_log() {
    // Without RUST_LOG: info, so the vat's "listening" line is there.
    let run = run_example_logging("calc", &[], None);
    assert!(run.status.success(), "{run}");
    assert!(
        run.stderr.contains("INFO") && run.stderr.contains("vat listening"),
        "{run}"
    );
    // RUST_LOG chooses: nothing at `off`, the debug lines at `debug`.
    let run = run_example_logging("calc", &[], Some("off"));
    assert!(run.status.success(), "{run}");
    assert!(run.stderr.is_empty(), "{run}");
    let run = run_example_logging("echo", &["--heartbeat-interval", "0.01"], Some("debug"));
    assert!(run.status.success(), "{run}");
    assert!(
        run.stderr.contains("DEBUG") && run.stderr.contains("call"),
        "{run}"
    );
    // Every example installs the subscriber: each says where it listens.
    let run = run_example_logging("web", &["--self-test"], None);
    assert!(run.status.success(), "{run}");
    assert!(run.stderr.contains("INFO"), "{run}");
}

/// `bench client URI` with a few calls: it measures and prints the median.
fn bench_client_measures(uri: &str) {
    let run = run_example("bench", &["client", uri, "--calls", "20", "--rounds", "1"]);
    assert!(run.status.success(), "{uri}: {run}");
    assert!(
        run.lines()
            .last()
            .is_some_and(|l| l.starts_with("median: ping median ")),
        "{uri}: {run}"
    );
}

#[test]
fn bench_serve_and_client_across_processes() {
    // `serve ADDR`: TLS, as for any vat, here over a Unix socket.
    let dir = TempDir::new("bench");
    let socket = dir.path().join("bench.sock");
    let server = Server::start(
        "bench",
        &["serve", &format!("unix:{}", socket.display())],
        "bench service running at: ",
    );
    assert!(
        server.uri.starts_with("capnp://sha-256:")
            && server
                .uri
                .ends_with(&format!("@{}/bWFpbg", socket.display())),
        "{}",
        server.uri
    );
    bench_client_measures(&server.uri);

    // The vat's options: no TLS, over TCP.
    let server = Server::start(
        "bench",
        &[
            "serve",
            "--capnp-listen-address",
            "tcp:127.0.0.1:0",
            "--capnp-disable-tls",
        ],
        "bench service running at: ",
    );
    assert!(
        server.uri.starts_with("capnp://insecure@127.0.0.1:"),
        "{}",
        server.uri
    );
    bench_client_measures(&server.uri);
}

#[test]
fn bench_serve_needs_one_address() {
    let run = run_example("bench", &["serve", "--capnp-disable-tls"]);
    assert_eq!(exit_code(&run), Some(1), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    assert!(run.stderr.contains("--capnp-listen-address"), "{run}");

    let run = run_example(
        "bench",
        &[
            "serve",
            "tcp:127.0.0.1:0",
            "--capnp-listen-address",
            "tcp:127.0.0.1:0",
        ],
    );
    assert_eq!(exit_code(&run), Some(2), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    assert!(run.stderr.contains("cannot be used with"), "{run}");
}

/// Checks that `bench`'s table has each of `rows`, each followed by two
/// figures and a ratio, all positive numbers.
fn assert_bench_rows(run: &Run, rows: &[&str]) {
    for row in rows {
        let line = run
            .lines()
            .into_iter()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?}\n{run}"));
        let figures: Vec<f64> = line[row.len()..]
            .split_whitespace()
            .take(3)
            .map(|f| f.parse().unwrap_or(f64::NAN))
            .collect();
        assert!(
            figures.len() == 3 && figures.iter().all(|f| *f > 0.0),
            "{line}\n{run}"
        );
    }
}

#[test]
fn bench_compare_runs_both_runtimes_and_prints_ratios() {
    let run = run_example("bench", &["compare", "--quick", "--calls", "20"]);
    assert!(run.status.success(), "{run}");
    assert!(run.stderr.is_empty(), "{run}");
    assert_bench_rows(
        &run,
        &[
            "ping round trip, median (µs)",
            "ping round trip, p99 (µs)",
            "pings/s, 100 in flight",
            "echoBytes 64 KiB (MB/s)",
        ],
    );
    assert!(
        run.stdout.contains("ratio > 1 means capnp-actix is faster"),
        "{run}"
    );
}

#[test]
fn load_compare_runs_both_arbiter_counts_and_prints_the_ratios() {
    let args = [
        "compare",
        "--quick",
        "--seconds",
        "1",
        "--connections",
        "4",
        "--clients",
        "2",
    ];
    let run = run_example("load", &args);
    assert!(run.status.success(), "{run}");
    assert!(run.stderr.is_empty(), "{run}");
    for count in ["1 arbiter(s): server", "2 arbiter(s): server"] {
        assert!(
            run.lines()
                .iter()
                .any(|l| l.trim_start().starts_with(count)),
            "no round line for {count}\n{run}"
        );
    }
    // Every figure's row: two medians with ranges, then a finite ratio;
    // the drivers completed calls under both counts.
    for figure in [
        "server cores",
        "calls/s",
        "probe idle p99 µs",
        "probe loaded p99 µs",
    ] {
        let row = run
            .lines()
            .into_iter()
            .find(|l| l.starts_with(figure))
            .unwrap_or_else(|| panic!("no row for {figure}\n{run}"));
        let ratio: f64 = row
            .split_whitespace()
            .last()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no ratio in {row:?}"));
        assert!(ratio.is_finite() && ratio > 0.0, "{row}");
    }
    assert!(
        run.lines()
            .iter()
            .filter(|l| l.contains("probe p99 under load / idle p99"))
            .count()
            == 2,
        "{run}"
    );
}

#[test]
fn bench_tls_runs_with_and_without_tls_and_prints_ratios() {
    let run = run_example("bench", &["tls", "--quick"]);
    assert!(run.status.success(), "{run}");
    assert!(run.stderr.is_empty(), "{run}");
    // The progress lines: 10 connections per server with --quick.
    for label in ["TLS, RSA-2048 key:", "TLS, ECDSA P-256 key:", "no TLS:"] {
        assert!(
            run.lines()
                .iter()
                .any(|l| l.starts_with(&format!("  connect + first call, {label}"))),
            "no connect + first call line for {label}\n{run}"
        );
    }
    assert!(
        run.stdout
            .contains("connect + first call: 10 fresh client vats per server"),
        "{run}"
    );
    let header = run
        .lines()
        .into_iter()
        .find(|l| l.trim_start().starts_with("TLS "))
        .unwrap_or_else(|| panic!("no table header\n{run}"));
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["TLS", "insecure", "ratio"],
        "{run}"
    );
    assert_bench_rows(
        &run,
        &[
            "connect + first call, RSA-2048, median (µs)",
            "connect + first call, RSA-2048, p99 (µs)",
            "connect + first call, P-256, median (µs)",
            "connect + first call, P-256, p99 (µs)",
            "ping round trip, median (µs)",
            "ping round trip, p99 (µs)",
            "pings/s, 100 in flight",
            "echoBytes 64 KiB (MB/s)",
        ],
    );
    assert!(
        run.lines()
            .last()
            .is_some_and(|l| l.starts_with("ratio = TLS/insecure")),
        "{run}"
    );
}

/// A TCP port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `echo serve` over TLS with a key file and a store of loggers.
fn tls_echo_server(dir: &Path, port: u16) -> (Server, String) {
    let key = dir.join("key.pem").display().to_string();
    let store = dir.join("loggers").display().to_string();
    let address = format!("tcp:127.0.0.1:{port}");
    let mut server = Server::start(
        "echo",
        &[
            "serve",
            "--capnp-secret-key-file",
            &key,
            "--capnp-listen-address",
            &address,
            "--store-dir",
            &store,
            "--heartbeat-interval",
            "0.01",
        ],
        "echo service running at: ",
    );
    let banner = "logger running at: ";
    let logger = server.expect(|l| l.starts_with(banner), "the logger's URI");
    (server, logger[banner.len()..].to_string())
}

/// Issue 4's tutorial across processes, and SCENARIOS 61: a TLS vat whose
/// URIs survive a restart with the same key file, loggers created and
/// saved through one round trip, and their URIs still working after the
/// server is killed with SIGKILL and started again.
#[test]
fn scenario_61_echo_over_tls_keeps_its_uris_and_saved_loggers_across_a_kill() {
    let dir = TempDir::new("echo-tls");
    let port = free_port();
    let (mut server, logger) = tls_echo_server(dir.path(), port);
    let prefix = "capnp://sha-256:".to_string();
    assert!(server.uri.starts_with(&prefix), "{}", server.uri);
    assert!(
        server.uri.contains(&format!("@127.0.0.1:{port}/")),
        "{}",
        server.uri
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("key.pem"))
        .expect("the key file was created")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    exercise_echo_clients(&mut server);

    // The service's logger through its own URI.
    let run = run_example("echo", &["log", &logger, "through the logger's URI"]);
    assert!(run.status.success(), "{run}");
    server.expect_line("Service logger: through the logger's URI");
    // getLogger's logger is persistent: saving it gives that URI.
    let run = run_example("echo", &["get-logger", &server.uri]);
    assert!(run.status.success(), "{run}");
    assert_eq!(run.lines(), [format!("logger at: {logger}")], "{run}");

    // A new saved logger.
    let run = run_example("echo", &["create-logger", &server.uri, "alice"]);
    assert!(run.status.success(), "{run}");
    let saved = run
        .stdout
        .strip_prefix("new logger at: ")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no URI printed: {run}"));
    assert!(saved.starts_with(&prefix), "{saved}");
    server.expect_line("alice: created");
    let run = run_example("echo", &["log", &saved, "before"]);
    assert!(run.status.success(), "{run}");
    server.expect_line("alice: before");

    // SIGKILL, then the same key file and store again.
    let first_uri = server.uri.clone();
    drop(server);
    let (mut server, logger_again) = tls_echo_server(dir.path(), port);
    assert_eq!(server.uri, first_uri, "the echo URI survives a restart");
    assert_eq!(logger_again, logger, "the logger URI survives a restart");
    let run = run_example("echo", &["log", &saved, "after the restart"]);
    assert!(run.status.success(), "{run}");
    server.expect_line("alice: after the restart");
    let run = run_example("echo", &["log", &logger, "saved before the restart"]);
    assert!(run.status.success(), "{run}");
    server.expect_line("Service logger: saved before the restart");

    // A URI with another key's fingerprint is refused: exit 1, a clear
    // error, and the server goes on serving.
    let other = {
        let mut u = first_uri.clone();
        let at = u.find('@').unwrap();
        let fake = "A".repeat(43);
        u.replace_range("capnp://sha-256:".len()..at, &fake);
        u
    };
    let run = run_example("echo", &["ping", &other, "x"]);
    assert_eq!(exit_code(&run), Some(1), "{run}");
    assert!(run.stderr.contains("TLS authentication failed"), "{run}");
    let run = run_example("echo", &["ping", &first_uri, "still here"]);
    assert!(run.status.success(), "{run}");
}

// ---- calc: the calculator over TLS and Unix sockets ----

/// What `calc connect` (and `calc` alone) prints when every check passes.
const CALC_LINES: [&str; 8] = [
    "123 = 123",
    "add(subtract(123, 45), 67) = 145",
    "add(123, 45) = 168",
    "multiply(previousResult, 2) = 336",
    "subtract(previousResult, 68) = 100",
    "f(12, 34) = 1234",
    "g(21) = 4244",
    "add(pow(2, 4), 3) = 19",
];

const CALC_BANNER: &str = "calculator running at: ";

/// `calc serve` with `args` (the vat's options).
fn calc_server(args: &[&str]) -> Server {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    Server::start("calc", &all, CALC_BANNER)
}

/// `calc connect URI` in a process of its own: every check passes, and
/// nothing goes to standard error.
fn calc_connect_passes(uri: &str) {
    let run = run_example("calc", &["connect", uri]);
    assert!(run.status.success(), "{uri}: {run}");
    assert_eq!(run.lines(), CALC_LINES, "{uri}: {run}");
    assert!(run.stderr.is_empty(), "{uri}: {run}");
}

/// The part of a TLS URI between `capnp://sha-256:` and `@`.
fn fingerprint_of(uri: &str) -> &str {
    uri.strip_prefix("capnp://sha-256:")
        .and_then(|rest| rest.split_once('@'))
        .map(|(fp, _)| fp)
        .unwrap_or_else(|| panic!("not a TLS URI: {uri}"))
}

#[test]
fn calc_alone_serves_and_connects_over_tls_in_one_process() {
    let run = run_example("calc", &[]);
    assert!(run.status.success(), "{run}");
    let lines = run.lines();
    let (banner, checks) = lines.split_first().expect("some output");
    let uri = banner
        .strip_prefix(CALC_BANNER)
        .unwrap_or_else(|| panic!("no banner: {run}"));
    // TLS, on a Unix socket (the address is a path).
    assert!(!fingerprint_of(uri).is_empty(), "{run}");
    assert!(uri.contains("@/"), "{run}");
    assert_eq!(checks, CALC_LINES, "{run}");
    assert!(run.stderr.is_empty(), "{run}");
}

/// Issue 4 item 7: `calc serve` over TLS on a Unix socket, with a key file,
/// and `calc connect URI` from other processes; the URI (a service ID
/// derived from the key) is the same after a restart with that key file.
#[test]
fn calc_serve_and_connect_over_tls_on_a_unix_socket() {
    let dir = TempDir::new("calc-tls-unix");
    let key = dir.path().join("calc.pem").display().to_string();
    let socket = dir.path().join("calc.sock");
    let address = format!("unix:{}", socket.display());
    let args = [
        "--capnp-secret-key-file",
        &key,
        "--capnp-listen-address",
        &address,
    ];
    let server = calc_server(&args);
    let uri = server.uri.clone();
    assert!(!fingerprint_of(&uri).is_empty(), "{uri}");
    assert!(
        uri.contains(&format!("@{}/", socket.display())),
        "the socket's path is the URI's address: {uri}"
    );
    // The ID is derived from the key, not the plain `main`.
    assert!(!uri.ends_with("/bWFpbg"), "{uri}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key)
        .expect("the key file was created")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    calc_connect_passes(&uri);
    // Twice: each client is a new vat with a key of its own.
    calc_connect_passes(&uri);

    // Killed and started again with the same key file: the same URI (the
    // stale socket file is replaced), and it still works.
    drop(server);
    let server = calc_server(&args);
    assert_eq!(server.uri, uri, "the URI survives a restart");
    calc_connect_passes(&server.uri);
}

/// `calc serve` over TLS on TCP (port 0: the port chosen is in the URI),
/// with an ephemeral key; a URI naming another key is refused.
#[test]
fn calc_serve_and_connect_over_tls_on_tcp() {
    let server = calc_server(&["--capnp-listen-address", "tcp:127.0.0.1:0"]);
    let fingerprint = fingerprint_of(&server.uri).to_string();
    let port = server
        .uri
        .split_once("@127.0.0.1:")
        .and_then(|(_, rest)| rest.split_once('/'))
        .and_then(|(port, _)| port.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("unexpected URI {:?}", server.uri));
    assert_ne!(port, 0);
    calc_connect_passes(&server.uri);

    // Another key's fingerprint at the same address: exit 1, a clear
    // error, and the server goes on serving.
    let other = server.uri.replacen(&fingerprint, &"A".repeat(43), 1);
    let run = run_example("calc", &["connect", &other]);
    assert_eq!(exit_code(&run), Some(1), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    assert!(run.stderr.contains("TLS authentication failed"), "{run}");
    calc_connect_passes(&server.uri);
}

/// Without TLS: `main` and the empty ID (for pycapnp and the C++ EzRpc
/// client), over a Unix socket.
#[test]
fn calc_serve_without_tls_offers_main_and_the_empty_id() {
    let dir = TempDir::new("calc-insecure");
    let socket = dir.path().join("calc.sock");
    let server = calc_server(&[
        "--capnp-listen-address",
        &format!("unix:{}", socket.display()),
        "--capnp-disable-tls",
    ]);
    assert_eq!(
        server.uri,
        format!("capnp://insecure@{}/bWFpbg", socket.display())
    );
    calc_connect_passes(&server.uri);
    calc_connect_passes(server.uri.strip_suffix("bWFpbg").unwrap());
}

#[test]
fn calc_serve_refuses_a_missing_address_bad_addresses_and_key_files() {
    // No listen address: a usage error naming the option.
    for args in [vec!["serve"], vec!["serve", "--capnp-disable-tls"]] {
        let run = run_example("calc", &args);
        assert_eq!(exit_code(&run), Some(2), "{args:?}: {run}");
        assert!(run.stdout.is_empty(), "{args:?}: {run}");
        assert!(
            run.stderr.contains("--capnp-listen-address"),
            "{args:?}: {run}"
        );
    }

    let run = run_example(
        "calc",
        &["serve", "--capnp-listen-address", "udp:127.0.0.1:1"],
    );
    assert_eq!(exit_code(&run), Some(2), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    assert!(
        run.stderr
            .contains("Only tcp:HOST:PORT and unix:PATH addresses are supported"),
        "{run}"
    );

    // A key file that cannot be read (a directory) fails at run time,
    // named.
    let dir = TempDir::new("calc-badkey");
    let key = dir.path().display().to_string();
    let run = run_example(
        "calc",
        &[
            "serve",
            "--capnp-listen-address",
            "tcp:127.0.0.1:0",
            "--capnp-secret-key-file",
            &key,
        ],
    );
    assert_eq!(exit_code(&run), Some(1), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    assert!(run.stderr.contains(&key), "{run}");
}

#[test]
fn calc_connect_refuses_bad_uris_and_fails_when_nothing_listens() {
    let run = run_example("calc", &["connect", "not a uri"]);
    assert_eq!(exit_code(&run), Some(2), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    assert!(run.stderr.contains("not a valid URI"), "{run}");

    let dir = TempDir::new("calc-nothing");
    let socket = dir.path().join("nobody.sock");
    let fingerprint = "A".repeat(43);
    for uri in [
        format!("capnp://insecure@{}/bWFpbg", socket.display()),
        format!("capnp://sha-256:{fingerprint}@{}/bWFpbg", socket.display()),
    ] {
        let run = run_example("calc", &["connect", &uri]);
        assert_eq!(exit_code(&run), Some(1), "{uri}: {run}");
        assert!(run.stdout.is_empty(), "{uri}: {run}");
        // The error is the last line (after the runtime's warning).
        let last = run.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("calc: ") && last.contains(&socket.display().to_string()),
            "{uri}: {run}"
        );
    }
}

/// Issue 5, crash during persistence: `echo serve` is killed with SIGKILL
/// in the middle of a burst of `createLogger` + `save`; after a restart,
/// every URI the client received works (a logger's URI is only handed out
/// once its record is on disk: written, fsynced, renamed, directory
/// fsynced).
#[test]
fn saved_logger_uris_survive_a_sigkill_in_the_middle_of_a_burst() {
    use capnp_actix::persist::save_client;
    use capnp_actix::schemas::echo_api_capnp::echo;
    use capnp_actix::vat::Vat;
    use capnp_actix::{SturdyUri, VatConfig};

    let dir = TempDir::new("echo-crash");
    let port = free_port();
    let (server, _) = tls_echo_server(dir.path(), port);
    let echo_uri: SturdyUri = server.uri.parse().expect("the echo URI parses");
    let (tx, rx) = mpsc::channel::<String>();
    // The burst: 200 loggers, each created and saved in one round trip, 20
    // at a time; URIs are reported as they arrive.
    let burst = std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let vat = Vat::client(&VatConfig::new()).await.expect("a client vat");
            let Ok(echo) = vat.import_as::<echo::Client>(&echo_uri).await else {
                return;
            };
            let echo = echo.client();
            for round in 0..10 {
                let mut saves = Vec::new();
                for i in 0..20 {
                    let mut req = echo.create_logger_request();
                    req.get().set_label(&format!("burst-{round}-{i}")[..]);
                    let logger = req.send().pipeline.get_callback();
                    saves.push(async move { save_client(&logger).await });
                }
                for uri in futures::future::join_all(saves).await.into_iter().flatten() {
                    if tx.send(uri.to_string()).is_err() {
                        return;
                    }
                }
            }
        })
    });
    // Kill the server once some URIs have come back, while the rest of the
    // burst is still in flight.
    let mut received = Vec::new();
    while received.len() < 30 {
        match rx.recv_timeout(SERVER_TIMEOUT) {
            Ok(uri) => received.push(uri),
            Err(e) => panic!("the burst stalled after {} URIs: {e:?}", received.len()),
        }
    }
    drop(server); // SIGKILL
    let _ = burst.join();
    received.extend(rx.try_iter());
    assert!(
        received.len() >= 30 && received.len() < 200,
        "{} URIs",
        received.len()
    );

    // Restarted with the same key file and store: every URI received works.
    let (mut server, _) = tls_echo_server(dir.path(), port);
    let uris = received.clone();
    let logged = std::thread::spawn(move || {
        use capnp_actix::schemas::echo_api_capnp::callback;
        actix::System::new().block_on(async move {
            let vat = Vat::client(&VatConfig::new()).await.expect("a client vat");
            for (n, uri) in uris.iter().enumerate() {
                let uri: SturdyUri = uri.parse().map_err(|e| format!("{uri}: {e}"))?;
                let logger = vat
                    .import_as::<callback::Client>(&uri)
                    .await
                    .map_err(|e| format!("{uri}: {e}"))?;
                let mut req = logger.client().log_request();
                req.get().set_msg(&format!("after the crash {n}")[..]);
                req.send()
                    .promise
                    .await
                    .map_err(|e| format!("{uri}: {e}"))?;
            }
            Ok::<_, String>(())
        })
    });
    logged
        .join()
        .expect("the client thread")
        .expect("every saved URI works");
    for n in 0..received.len() {
        server.expect(
            |l| l.ends_with(&format!(": after the crash {n}")),
            "a restored logger's line",
        );
    }
}
