//! Interop with pycapnp (Python, on the C++ library) over real sockets:
//! its client against our server, our client against its server, over TCP
//! and Unix sockets, for
//!
//! - the echo tutorial (ping, heartbeat with a client-side callback,
//!   pipelined getLogger + log);
//! - the classic calculator sample: its client checks against our
//!   calculator, and our `run_client_checks` against its calculator
//!   (literals, operators used before they are answered, an unread result
//!   used twice as `previousResult`, `defFunction`, and a function the
//!   client implements, which the server calls back).
//!
//! The Python peers are the scripts under `tests/python`. When the build
//! script (`build.rs`) finds no pycapnp (`python3 -c "import capnp"`
//! fails), it leaves `have_pycapnp` unset and these tests are reported as
//! ignored, with the reason, unless `CAPNP_ACTIX_REQUIRE_PYCAPNP` is set
//! (as CI does): then they run, and a missing pycapnp fails them.
//!
//! Every test ends by checking that our side released every capability and
//! stopped every actor (`capnp_actix::debug::wait_all_released`).

#[path = "../examples/common/calc_service.rs"]
#[allow(dead_code)]
mod calc_service;

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calc_service::client::{run_client_checks, EXPECTED};
use calc_service::Calculator;
use capnp_actix::schemas::calculator_capnp::calculator;
use capnp_actix::schemas::echo_api_capnp::{callback, echo};
use capnp_actix::vat::{self, Services, Vat};
use capnp_actix::{Address, Cap, SturdyUri, VatAuth, VatConfig};
use echo_service::{EchoService, Sink};
use tokio::sync::mpsc;

/// How long any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(30);

/// How long our side may take to release everything at the end.
const SETTLE: Duration = Duration::from_secs(5);

const REQUIRE_VAR: &str = "CAPNP_ACTIX_REQUIRE_PYCAPNP";

type Lines = Arc<Mutex<Vec<String>>>;

/// Panics unless pycapnp can be imported: a test that runs needs it (the
/// build script found it, or `CAPNP_ACTIX_REQUIRE_PYCAPNP` is set).
fn require_pycapnp(test: &str) {
    let probe = Command::new("python3")
        .args(["-c", "import capnp"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let why = match probe {
        Ok(out) if out.status.success() => return,
        Ok(out) => format!(
            "`python3 -c \"import capnp\"` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("cannot run python3: {e}"),
    };
    panic!(
        "{test}: pycapnp is required ({REQUIRE_VAR} is set, or the build script found it) \
         but unavailable: {why}; install it with `python3 -m pip install pycapnp==2.2.4`"
    );
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("python")
        .join(name)
}

fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("capnp-actix-py-{tag}-{}.sock", std::process::id()))
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Awaits `f`, failing the test if it takes longer than [`STEP`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?}: {what}"),
    }
}

/// A running Python script. Its stdout arrives line by line on a channel
/// (read by a thread, so the actix thread never blocks); its stderr is
/// collected for error messages. Dropping it kills the process.
struct Python {
    name: String,
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Python {
    fn spawn(name: &str, address: &str) -> Python {
        Self::spawn_with_env(name, address, &[])
    }

    /// [`Python::spawn`] with these environment variables set.
    fn spawn_with_env(name: &str, address: &str, env: &[(&str, &std::path::Path)]) -> Python {
        let mut child = Command::new("python3")
            .arg(script(name))
            .arg(address)
            .env("PYTHONUNBUFFERED", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3 {name}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr: Arc<Mutex<String>> = Arc::default();
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Python {
            name: name.to_string(),
            child,
            stdout: rx,
            seen: Vec::new(),
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Reads stdout until a line equal to `want`; fails on end of output or
    /// timeout.
    async fn expect_line(&mut self, want: &str) {
        let found = tokio::time::timeout(STEP, async {
            while let Some(line) = self.stdout.recv().await {
                self.seen.push(line.clone());
                if line == want {
                    return true;
                }
            }
            false
        })
        .await;
        match found {
            Ok(true) => {}
            Ok(false) => panic!(
                "{} ended without printing {want:?}; stdout: {:?}; exit: {:?}; stderr:\n{}",
                self.name,
                self.seen,
                self.child.try_wait(),
                self.stderr()
            ),
            Err(_) => panic!(
                "{} did not print {want:?} within {STEP:?}; stdout: {:?}; stderr:\n{}",
                self.name,
                self.seen,
                self.stderr()
            ),
        }
    }

    /// Reads the "ready PORT" line a server prints once it listens;
    /// returns the port (0 for a Unix socket).
    async fn ready(&mut self) -> u16 {
        let found = tokio::time::timeout(STEP, async {
            while let Some(line) = self.stdout.recv().await {
                self.seen.push(line.clone());
                if let Some(port) = line.strip_prefix("ready ") {
                    return Some(port.to_string());
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(port)) => port
                .parse()
                .unwrap_or_else(|e| panic!("{} printed \"ready {port}\": {e}", self.name)),
            Ok(None) => panic!(
                "{} ended without printing \"ready PORT\"; stdout: {:?}; exit: {:?}; stderr:\n{}",
                self.name,
                self.seen,
                self.child.try_wait(),
                self.stderr()
            ),
            Err(_) => panic!(
                "{} did not print \"ready PORT\" within {STEP:?}; stdout: {:?}; stderr:\n{}",
                self.name,
                self.seen,
                self.stderr()
            ),
        }
    }

    /// Waits for the process to exit and for the end of its stdout;
    /// returns its status and all its stdout lines.
    async fn finish(&mut self) -> (ExitStatus, Vec<String>) {
        let status = within(&format!("{} to exit", self.name), async {
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        within(&format!("end of {}'s stdout", self.name), async {
            while let Some(line) = self.stdout.recv().await {
                self.seen.push(line);
            }
        })
        .await;
        (status, self.seen.clone())
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Checks that our side released every capability and stopped every
/// actor.
async fn settled(what: &str) {
    capnp_actix::debug::wait_all_released(SETTLE)
        .await
        .unwrap_or_else(|r| panic!("{what}: still alive on our side at the end:\n{r}"));
}

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

/// Our echo server, pycapnp's client.
async fn pycapnp_client_our_server(address: &str) {
    let lines: Lines = Arc::default();
    let service: Cap<echo::Client> = Cap::new(EchoService::new(
        Duration::from_millis(1),
        Sink::Memory(lines.clone()),
    ));
    let mut services = Services::new();
    services.add("", &service);
    let listening = vat::serve(&Address::parse(address).unwrap(), services)
        .await
        .unwrap();
    let address = listening.address().to_string();

    let mut client = Python::spawn("echo_client.py", &address);
    let (status, stdout) = client.finish().await;
    assert!(
        status.success(),
        "echo_client.py {address} failed ({status}); stdout: {stdout:?}; stderr:\n{}",
        client.stderr()
    );
    assert_eq!(
        stdout,
        ["ping ok", "heartbeat ok 3", "log ok"],
        "stderr:\n{}",
        client.stderr()
    );
    assert_eq!(*lines.lock().unwrap(), ["Service logger: from python"]);
    drop(client);
    drop(service);
    listening.stop();
    settled(&format!("echo_client.py {address}")).await;
}

/// pycapnp's echo server, our client.
async fn our_client_pycapnp_server(address: &str) {
    let mut server = Python::spawn("echo_server.py", address);
    server.expect_line("ready").await;

    let conn = within(
        "connecting to echo_server.py",
        vat::connect(&Address::parse(address).unwrap()),
    )
    .await
    .unwrap_or_else(|e| panic!("connect {address}: {e}; stderr:\n{}", server.stderr()));
    {
        let echo: Cap<echo::Client> = Cap::from_raw(conn.bootstrap(b""));
        let echo = echo.client();

        let mut req = echo.ping_request();
        req.get().set_msg("foo");
        let reply = within("ping", req.send().promise).await.unwrap();
        assert_eq!(reply.get().unwrap().get_reply().unwrap(), "echo:foo");

        // Over 1024 words: our params go out as segments spliced behind
        // the call (far pointers into them), which pycapnp reads.
        let long: String = (0..40_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let mut req = echo.ping_request();
        req.get().set_msg(long.as_str());
        let reply = within("long ping", req.send().promise).await.unwrap();
        assert_eq!(
            reply.get().unwrap().get_reply().unwrap().to_str().unwrap(),
            format!("echo:{long}")
        );

        let got: Lines = Arc::default();
        let mut req = echo.heartbeat_request();
        req.get().set_msg("beat");
        req.get()
            .set_callback(capnp_actix::new_client(Recorder(got.clone())));
        within("heartbeat", req.send().promise).await.unwrap();
        assert_eq!(*got.lock().unwrap(), ["beat", "beat", "beat"]);

        // Pipelined: log goes out before getLogger has answered.
        let logger = echo.get_logger_request().send().pipeline.get_callback();
        let mut req = logger.log_request();
        req.get().set_msg("from rust");
        within("pipelined log", req.send().promise).await.unwrap();
    }
    server.expect_line("Service logger: from rust").await;

    // A sturdy URI with the empty service ID reaches the same service.
    let uri = SturdyUri {
        auth: VatAuth::Insecure,
        address: Address::parse(address).unwrap(),
        service_id: Vec::new(),
    };
    let echo: Cap<echo::Client> = Cap::from_raw(within("import", vat::import(&uri)).await.unwrap());
    let mut req = echo.client().ping_request();
    req.get().set_msg("bar");
    let reply = within("ping over an imported URI", req.send().promise)
        .await
        .unwrap();
    assert_eq!(reply.get().unwrap().get_reply().unwrap(), "echo:bar");

    // The connections end with the server; our imports go with them.
    drop(echo);
    drop(conn);
    drop(server);
    settled(&format!("echo_server.py {address}")).await;
    if let Some(path) = address.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
    }
}

#[actix::test]
#[cfg_attr(
    not(have_pycapnp),
    ignore = "pycapnp not installed: python3 -m pip install pycapnp==2.2.4, then touch build.rs"
)]
async fn pycapnp_client_against_our_server_over_unix_socket() {
    require_pycapnp("pycapnp_client_against_our_server_over_unix_socket");
    let path = socket_path("client-unix");
    pycapnp_client_our_server(&format!("unix:{}", path.display())).await;
    let _ = std::fs::remove_file(&path);
}

#[actix::test]
#[cfg_attr(
    not(have_pycapnp),
    ignore = "pycapnp not installed: python3 -m pip install pycapnp==2.2.4, then touch build.rs"
)]
async fn pycapnp_client_against_our_server_over_tcp() {
    require_pycapnp("pycapnp_client_against_our_server_over_tcp");
    pycapnp_client_our_server("tcp:127.0.0.1:0").await;
}

/// A certificate as PEM text.
fn certificate_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// pycapnp over TLS, that is OpenSSL, against our TLS vat, both sides with
/// the key files we create by default (ECDSA P-256): OpenSSL accepts the
/// vat's certificate (its only trust anchor) and its key's signature, and
/// the vat, which requires a client certificate, accepts OpenSSL's.
#[actix::test]
#[cfg_attr(
    not(have_pycapnp),
    ignore = "pycapnp not installed: python3 -m pip install pycapnp==2.2.4, then touch build.rs"
)]
async fn pycapnp_client_over_tls_with_our_new_p256_key_files() {
    require_pycapnp("pycapnp_client_over_tls_with_our_new_p256_key_files");
    let dir = std::env::temp_dir().join(format!("capnp-actix-py-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = VatConfig::new()
        .with_secret_key_file(dir.join("server.pem"))
        .with_listen_address(Address::parse("tcp:127.0.0.1:0").unwrap());
    let server_key = config.secret_key().unwrap();
    assert!(
        format!("{server_key:?}").contains("ECDSA P-256"),
        "{server_key:?}"
    );
    let client_key = capnp_actix::SecretKey::load_or_create(&dir.join("client.pem")).unwrap();
    std::fs::write(
        dir.join("server.crt"),
        certificate_pem(&server_key.certified_key().0),
    )
    .unwrap();
    std::fs::write(
        dir.join("client.crt"),
        certificate_pem(&client_key.certified_key().0),
    )
    .unwrap();

    let lines: Lines = Arc::default();
    let service: Cap<echo::Client> = Cap::new(EchoService::new(
        Duration::from_millis(1),
        Sink::Memory(lines.clone()),
    ));
    let raw = service.raw().clone();
    let vat = Vat::start_with(&config, move |uris| {
        let table = capnp_actix::restorer::Table::new(move |id| uris.sturdy_uri(id));
        table.add(b"", raw);
        table
    })
    .await
    .unwrap();
    let address = vat.address().unwrap().to_string();
    let (trust, cert, key) = (
        dir.join("server.crt"),
        dir.join("client.crt"),
        dir.join("client.pem"),
    );
    let mut client = Python::spawn_with_env(
        "echo_client.py",
        &address,
        &[
            ("ECHO_TLS_TRUST", &trust),
            ("ECHO_TLS_CERT", &cert),
            ("ECHO_TLS_KEY", &key),
        ],
    );
    let (status, stdout) = client.finish().await;
    assert!(
        status.success(),
        "echo_client.py over TLS to {address} failed ({status}); stdout: {stdout:?}; stderr:\n{}",
        client.stderr()
    );
    assert_eq!(stdout, ["ping ok", "heartbeat ok 3", "log ok"]);
    assert_eq!(*lines.lock().unwrap(), ["Service logger: from python"]);
    drop(client);
    drop(service);
    vat.stop();
    // Its restorer holds the service.
    drop(vat);
    settled("echo_client.py over TLS").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix::test]
#[cfg_attr(
    not(have_pycapnp),
    ignore = "pycapnp not installed: python3 -m pip install pycapnp==2.2.4, then touch build.rs"
)]
async fn our_client_against_pycapnp_server_over_unix_socket() {
    require_pycapnp("our_client_against_pycapnp_server_over_unix_socket");
    let path = socket_path("server-unix");
    our_client_pycapnp_server(&format!("unix:{}", path.display())).await;
}

#[actix::test]
#[cfg_attr(
    not(have_pycapnp),
    ignore = "pycapnp not installed: python3 -m pip install pycapnp==2.2.4, then touch build.rs"
)]
async fn our_client_against_pycapnp_server_over_tcp() {
    require_pycapnp("our_client_against_pycapnp_server_over_tcp");
    our_client_pycapnp_server(&format!("tcp:127.0.0.1:{}", free_tcp_port())).await;
}

// ---- the calculator ----

/// Checks the "NAME = VALUE" lines a calculator client printed against
/// [`EXPECTED`].
fn assert_printed_expected(lines: &[String], stderr: &str) {
    let parsed: Vec<(&str, f64)> = lines
        .iter()
        .map(|line| {
            let (name, value) = line
                .rsplit_once(" = ")
                .unwrap_or_else(|| panic!("unexpected line {line:?}; stderr:\n{stderr}"));
            let value = value
                .parse()
                .unwrap_or_else(|e| panic!("{line:?}: {e}; stderr:\n{stderr}"));
            (name, value)
        })
        .collect();
    assert_eq!(parsed, EXPECTED, "stderr:\n{stderr}");
}

/// Our calculator (under the empty service ID), pycapnp's client checks.
async fn pycapnp_calc_client_our_calculator(address: &str) {
    let calc: Cap<calculator::Client> = Cap::new(Calculator::new());
    let mut services = Services::new();
    services.add("", &calc);
    let listening = vat::serve(&Address::parse(address).unwrap(), services)
        .await
        .unwrap();
    let address = listening.address().to_string();

    let mut client = Python::spawn("calc_client.py", &address);
    let (status, stdout) = client.finish().await;
    assert!(
        status.success(),
        "calc_client.py {address} failed ({status}); stdout: {stdout:?}; stderr:\n{}",
        client.stderr()
    );
    assert_printed_expected(&stdout, &client.stderr());

    drop(client);
    drop(calc);
    listening.stop();
    settled(&format!("calc_client.py {address}")).await;
}

/// pycapnp's calculator, our client's checks (through a client vat without
/// TLS).
async fn our_calc_client_pycapnp_calculator(listen: &str) {
    let mut server = Python::spawn("calc_server.py", listen);
    let port = server.ready().await;
    let text = match listen.strip_prefix("unix:") {
        Some(path) => format!("capnp://insecure@{path}/"),
        None => format!("capnp://insecure@127.0.0.1:{port}/"),
    };
    let uri = SturdyUri::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));

    let vat = Vat::client(&VatConfig::new().with_tls(false))
        .await
        .unwrap();
    let got = within("the calculator checks", async {
        let calc: Cap<calculator::Client> = vat
            .import_as(&uri)
            .await
            .unwrap_or_else(|e| panic!("import {uri}: {e}; stderr:\n{}", server.stderr()));
        run_client_checks(calc.client()).await
    })
    .await
    .unwrap_or_else(|e| panic!("calc_server.py {listen}: {e}; stderr:\n{}", server.stderr()));
    let got: Vec<(&str, f64)> = got.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    assert_eq!(got, EXPECTED, "stderr:\n{}", server.stderr());

    vat.stop();
    drop(vat);
    settled(&format!("calc_server.py {listen}")).await;
    // It served us to the end.
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "calc_server.py {listen} exited; stdout: {:?}; stderr:\n{}",
        server.seen,
        server.stderr()
    );
    drop(server);
    if let Some(path) = listen.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
    }
}

#[actix::test]
#[cfg_attr(
    not(have_pycapnp),
    ignore = "pycapnp not installed: python3 -m pip install pycapnp==2.2.4, then touch build.rs"
)]
async fn pycapnp_calculator_client_against_our_calculator_over_unix_socket() {
    require_pycapnp("pycapnp_calculator_client_against_our_calculator_over_unix_socket");
    let path = socket_path("calc-client-unix");
    pycapnp_calc_client_our_calculator(&format!("unix:{}", path.display())).await;
    let _ = std::fs::remove_file(&path);
}

#[actix::test]
#[cfg_attr(
    not(have_pycapnp),
    ignore = "pycapnp not installed: python3 -m pip install pycapnp==2.2.4, then touch build.rs"
)]
async fn pycapnp_calculator_client_against_our_calculator_over_tcp() {
    require_pycapnp("pycapnp_calculator_client_against_our_calculator_over_tcp");
    pycapnp_calc_client_our_calculator("tcp:127.0.0.1:0").await;
}

#[actix::test]
#[cfg_attr(
    not(have_pycapnp),
    ignore = "pycapnp not installed: python3 -m pip install pycapnp==2.2.4, then touch build.rs"
)]
async fn our_calculator_client_against_pycapnp_calculator_over_unix_socket() {
    require_pycapnp("our_calculator_client_against_pycapnp_calculator_over_unix_socket");
    let path = socket_path("calc-server-unix");
    our_calc_client_pycapnp_calculator(&format!("unix:{}", path.display())).await;
}

#[actix::test]
#[cfg_attr(
    not(have_pycapnp),
    ignore = "pycapnp not installed: python3 -m pip install pycapnp==2.2.4, then touch build.rs"
)]
async fn our_calculator_client_against_pycapnp_calculator_over_tcp() {
    require_pycapnp("our_calculator_client_against_pycapnp_calculator_over_tcp");
    our_calc_client_pycapnp_calculator("tcp:127.0.0.1:0").await;
}

/// Sends `signal` to the Python process.
fn signal(server: &Python, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(server.child.id()).expect("a pid");
    // SAFETY: kill(2) with a pid we started and a plain signal number.
    #[allow(unsafe_code)]
    let r = unsafe { libc::kill(pid, signal) };
    assert_eq!(r, 0, "kill({pid}, {signal})");
}

#[actix::test]
#[cfg_attr(
    not(have_pycapnp),
    ignore = "pycapnp not installed: python3 -m pip install pycapnp==2.2.4, then touch build.rs"
)]
async fn pycapnp_answers_our_heartbeat_and_a_paused_pycapnp_is_declared_dead() {
    require_pycapnp("pycapnp_answers_our_heartbeat_and_a_paused_pycapnp_is_declared_dead");
    let beat = Duration::from_millis(100);
    let path = socket_path("heartbeat");
    let address = format!("unix:{}", path.display());
    let mut server = Python::spawn("echo_server.py", &address);
    server.expect_line("ready").await;
    let vat = Vat::client(&VatConfig::new().with_tls(false).with_heartbeat(Some(beat)))
        .await
        .unwrap();
    let uri = SturdyUri {
        auth: VatAuth::Insecure,
        address: Address::parse(&address).unwrap(),
        service_id: Vec::new(),
    };
    let echo: Cap<echo::Client> = within("import", vat.import_as(&uri)).await.unwrap();
    let ping = |msg: &'static str| {
        let echo = echo.client();
        async move {
            let mut req = echo.ping_request();
            req.get().set_msg(msg);
            let reply = req.send().promise.await?;
            Ok::<_, capnp::Error>(reply.get()?.get_reply()?.to_string()?)
        }
    };
    assert_eq!(within("ping", ping("one")).await.unwrap(), "echo:one");
    // Ten intervals of silence: pycapnp answers every probe (a bootstrap),
    // or the connection would be declared dead after two.
    tokio::time::sleep(10 * beat).await;
    assert_eq!(within("ping", ping("two")).await.unwrap(), "echo:two");

    // Paused, pycapnp answers nothing: declared dead, the capability
    // breaks with Disconnected naming the heartbeat.
    let (tx, broken) = futures::channel::oneshot::channel();
    echo.on_broken(move |e| {
        let _ = tx.send(e);
    });
    signal(&server, libc::SIGSTOP);
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(5), broken)
        .await
        .expect("declared dead within 5 s")
        .unwrap();
    signal(&server, libc::SIGCONT);
    assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
    assert!(e.to_string().contains("heartbeat"), "{e}");
    assert!(started.elapsed() >= beat, "{:?}", started.elapsed());
    drop(echo);
    vat.stop();
    drop(vat);
    drop(server);
    settled("echo_server.py paused").await;
    let _ = std::fs::remove_file(path);
}
