//! Interop with the C++ reference implementation (libcapnp 0.9.2, whose
//! `rpc.capnp` predates `noFinishNeeded` and friends), over Unix sockets
//! and TCP, in both directions:
//!
//! - the echo tutorial: its `EzRpcClient` against our echo server, and our
//!   client (`vat::import`) against its `EzRpcServer`, for ping, heartbeat
//!   with a callback implemented on the client's side, and a pipelined
//!   getLogger + log;
//! - the classic calculator sample: its client checks against our
//!   calculator, and our `run_client_checks` against its calculator
//!   (literals, operators used before they are answered, an unread result
//!   used twice as `previousResult`, `defFunction`, and a function the
//!   client implements, which the server calls back).
//!
//! The peers are the programs under `tests/cpp`. Each test process
//! compiles `schemas/echo_api.capnp` and `schemas/calculator.capnp` with
//! `capnp compile -oc++` once, and builds each program with g++ at most
//! once, under Cargo's target tmp dir. When the build script (`build.rs`)
//! finds no g++, `capnp` or `pkg-config capnp-rpc`, it leaves
//! `have_cpp_capnp` unset and these tests are reported as ignored, with
//! the reason, unless `CAPNP_ACTIX_REQUIRE_CPP` is set (as CI does): then
//! they run, and a missing toolchain fails them.
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
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use calc_service::client::{run_client_checks, EXPECTED};
use calc_service::Calculator;
use capnp_actix::schemas::calculator_capnp::calculator;
use capnp_actix::schemas::echo_api_capnp::{callback, echo};
use capnp_actix::vat::{self, Services, Vat};
use capnp_actix::{Address, Cap, SturdyUri, VatConfig};
use echo_service::{EchoService, Sink};
use tokio::sync::mpsc;

/// How long a C++ program may take to print an expected line or to exit,
/// and how long any one step of ours may take.
const STEP: Duration = Duration::from_secs(30);

/// How long our side may take to release everything at the end.
const SETTLE: Duration = Duration::from_secs(5);

const REQUIRE_VAR: &str = "CAPNP_ACTIX_REQUIRE_CPP";

type Lines = Arc<Mutex<Vec<String>>>;

// ---- building the C++ programs ----

/// A program of `tests/cpp`.
#[derive(Clone, Copy, Debug)]
enum Program {
    EchoClient,
    EchoServer,
    CalcClient,
    CalcServer,
}

impl Program {
    /// The source's stem (`tests/cpp/NAME.c++`) and the binary's name.
    fn name(self) -> &'static str {
        match self {
            Program::EchoClient => "echo_client",
            Program::EchoServer => "echo_server",
            Program::CalcClient => "calc_client",
            Program::CalcServer => "calc_server",
        }
    }

    /// The schema (under `schemas/`, without `.capnp`) it is built with.
    fn schema(self) -> &'static str {
        match self {
            Program::EchoClient | Program::EchoServer => "echo_api",
            Program::CalcClient | Program::CalcServer => "calculator",
        }
    }

    /// Where its build result is kept.
    fn slot(self) -> &'static OnceLock<Result<PathBuf, String>> {
        static BUILT: [OnceLock<Result<PathBuf, String>>; 4] = [
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
        ];
        &BUILT[self as usize]
    }
}

/// Runs `program args` to completion; `Err` describes why it did not
/// succeed.
fn run_tool(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether the C++ toolchain and library are installed; `Err` says what is
/// missing.
fn toolchain() -> Result<(), String> {
    run_tool("g++", &["--version"])?;
    run_tool("capnp", &["--version"])?;
    run_tool("pkg-config", &["--exists", "capnp-rpc"])?;
    Ok(())
}

/// This process's build directory, with the C++ code of both schemas
/// generated in it.
fn generate() -> Result<PathBuf, String> {
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-cpp");
    // A directory per process, so concurrent test runs do not collide;
    // those of processes that have ended are removed.
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("build-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    let work = base.join(format!("build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("mkdir {}: {e}", work.display()))?;

    let out_arg = format!("-oc++:{}", work.display());
    let prefix_arg = format!("--src-prefix={}", schemas.display());
    let echo = schemas.join("echo_api.capnp");
    let calc = schemas.join("calculator.capnp");
    run_tool(
        "capnp",
        &[
            "compile",
            &out_arg,
            &prefix_arg,
            &echo.to_string_lossy(),
            &calc.to_string_lossy(),
        ],
    )?;
    Ok(work)
}

/// The build directory, made once per process. `Err((true, why))`: the
/// toolchain is missing; `Err((false, why))`: generating the code failed.
fn generated() -> &'static Result<PathBuf, (bool, String)> {
    static GENERATED: OnceLock<Result<PathBuf, (bool, String)>> = OnceLock::new();
    GENERATED.get_or_init(|| {
        toolchain().map_err(|why| (true, why))?;
        generate().map_err(|why| (false, why))
    })
}

/// Builds `program` in `work`; returns the binary's path.
fn build(work: &Path, program: Program) -> Result<PathBuf, String> {
    let flags = run_tool("pkg-config", &["--cflags", "--libs", "capnp-rpc"])?;
    let binary = work.join(program.name());
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("cpp")
        .join(format!("{}.c++", program.name()));
    let generated = work.join(format!("{}.capnp.c++", program.schema()));
    let include = format!("-I{}", work.display());
    let mut args = vec![
        "-O0",
        "-std=c++14",
        &include,
        "-o",
        binary.to_str().unwrap(),
        source.to_str().unwrap(),
        generated.to_str().unwrap(),
    ];
    args.extend(flags.split_whitespace());
    run_tool("g++", &args)?;
    Ok(binary)
}

/// `program`'s binary, built once per test process. Panics when the
/// toolchain is missing (a test that runs needs it: the build script found
/// it, or `CAPNP_ACTIX_REQUIRE_CPP` is set) or when the build fails.
fn cpp_program(test: &str, program: Program) -> PathBuf {
    let work = match generated() {
        Ok(work) => work,
        Err((false, why)) => panic!("{test}: generating the C++ code failed: {why}"),
        Err((true, why)) => panic!(
            "{test}: the C++ Cap'n Proto toolchain is required ({REQUIRE_VAR} is set, or \
             the build script found it) but unavailable: {why}; install it with \
             `apt-get install capnproto libcapnp-dev g++ pkg-config`"
        ),
    };
    match program.slot().get_or_init(|| build(work, program)) {
        Ok(path) => path.clone(),
        Err(why) => panic!("{test}: building the C++ {} failed: {why}", program.name()),
    }
}

// ---- running them ----

/// Awaits `f`, failing the test if it takes longer than [`STEP`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?}: {what}"),
    }
}

/// A running C++ program. Its stdout arrives line by line on a channel
/// (read by a thread, so the actix thread never blocks); its stderr is
/// collected for failure messages. Dropping it kills the process.
struct Running {
    name: String,
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn spawn(binary: &Path, address: &str) -> Running {
        let name = format!(
            "{} {address}",
            binary.file_name().unwrap().to_string_lossy()
        );
        let mut child = Command::new(binary)
            .arg(address)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
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
        Running {
            name,
            child,
            stdout: rx,
            seen: Vec::new(),
            stderr,
        }
    }

    /// What the program printed so far, for failure messages.
    fn output(&self) -> String {
        format!(
            "stdout: {:?}; stderr:\n{}",
            self.seen,
            self.stderr.lock().unwrap()
        )
    }

    /// Reads stdout until a line for which `wanted` holds, and returns it;
    /// fails (with the program's output) on end of output or timeout.
    async fn expect_line(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let found = tokio::time::timeout(STEP, async {
            while let Some(line) = self.stdout.recv().await {
                self.seen.push(line.clone());
                if wanted(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => {
                // Its stderr may still be on its way.
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "`{}` ended its output without printing {what}; exit: {:?}; {}",
                    self.name,
                    self.child.try_wait(),
                    self.output()
                )
            }
            Err(_) => panic!(
                "`{}` did not print {what} within {STEP:?}; {}",
                self.name,
                self.output()
            ),
        }
    }

    /// Reads the "ready PORT" line a server prints once it listens;
    /// returns the port (0 for a Unix socket).
    async fn ready(&mut self) -> u16 {
        let line = self
            .expect_line("\"ready PORT\"", |l| l.starts_with("ready "))
            .await;
        line["ready ".len()..]
            .parse()
            .unwrap_or_else(|e| panic!("`{}` printed {line:?}: {e}", self.name))
    }

    /// Waits for the process to exit and for the end of its stdout;
    /// returns its status and every stdout line. Fails (with its output)
    /// after [`STEP`].
    async fn finish(&mut self) -> ExitStatus {
        let waited = tokio::time::timeout(STEP, async {
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    break status;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let Ok(status) = waited else {
            panic!(
                "`{}` did not exit within {STEP:?}; {}",
                self.name,
                self.output()
            )
        };
        within(&format!("the end of `{}`'s stdout", self.name), async {
            while let Some(line) = self.stdout.recv().await {
                self.seen.push(line);
            }
        })
        .await;
        // The stderr reader ends with the pipe, which the exit closed.
        tokio::time::sleep(Duration::from_millis(20)).await;
        status
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Checks that our side released every capability and stopped every
/// actor.
async fn settled(test: &str) {
    capnp_actix::debug::wait_all_released(SETTLE)
        .await
        .unwrap_or_else(|r| panic!("{test}: still alive on our side at the end:\n{r}"));
}

fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("capnp-actix-cpp-{tag}-{}.sock", std::process::id()))
}

/// Where a test listens, and how each side names it.
#[derive(Clone, Copy, Debug)]
enum Transport {
    Unix,
    Tcp,
}

impl Transport {
    /// The address our listener binds (port 0: any).
    fn our_listen_address(self, path: &Path) -> Address {
        match self {
            Transport::Unix => Address::Unix(path.to_path_buf()),
            Transport::Tcp => Address::parse("tcp:127.0.0.1:0").unwrap(),
        }
    }

    /// The address a C++ server binds, as EzRpcServer takes it.
    fn cpp_listen_address(self, path: &Path) -> String {
        match self {
            Transport::Unix => format!("unix:{}", path.display()),
            Transport::Tcp => "127.0.0.1:0".to_string(),
        }
    }

    /// Our URI of the bootstrap service (the empty ID) of a C++ server
    /// listening on `path` or `port`.
    fn uri_of_cpp_server(self, path: &Path, port: u16) -> SturdyUri {
        let text = match self {
            Transport::Unix => format!("capnp://insecure@{}/", path.display()),
            Transport::Tcp => format!("capnp://insecure@127.0.0.1:{port}/"),
        };
        SturdyUri::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }
}

/// How a C++ client names the address our listener bound: `unix:PATH` as
/// we print it, but TCP as `HOST:PORT`.
fn cpp_target(bound: &Address) -> String {
    let bound = bound.to_string();
    bound.strip_prefix("tcp:").unwrap_or(&bound).to_string()
}

// ---- echo ----

/// Our echo server (under the empty service ID), the C++ client.
async fn cpp_echo_client_our_server(test: &str, transport: Transport) {
    let binary = cpp_program(test, Program::EchoClient);
    let path = socket_path(&format!("echo-client-{transport:?}"));
    let lines: Lines = Arc::default();
    let service: Cap<echo::Client> = Cap::new(EchoService::new(
        Duration::from_millis(1),
        Sink::Memory(lines.clone()),
    ));
    let mut services = Services::new();
    services.add("", &service);
    let listening = vat::serve(&transport.our_listen_address(&path), services)
        .await
        .unwrap();
    let target = cpp_target(listening.address());

    let mut client = Running::spawn(&binary, &target);
    let status = client.finish().await;
    assert!(
        status.success(),
        "{test}: the C++ client failed ({status}); {}",
        client.output()
    );
    assert_eq!(
        client.seen,
        ["ping ok", "heartbeat ok 3", "log ok"],
        "{test}: {}",
        client.output()
    );
    assert_eq!(*lines.lock().unwrap(), ["Service logger: from c++"]);

    drop(client);
    drop(service);
    listening.stop();
    settled(test).await;
    let _ = std::fs::remove_file(&path);
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

/// The C++ echo server, our client (`vat::import`).
async fn our_client_cpp_echo_server(test: &str, transport: Transport) {
    let binary = cpp_program(test, Program::EchoServer);
    let path = socket_path(&format!("echo-server-{transport:?}"));
    let _ = std::fs::remove_file(&path);
    let mut server = Running::spawn(&binary, &transport.cpp_listen_address(&path));
    let port = server.ready().await;
    let uri = transport.uri_of_cpp_server(&path, port);

    let heard: Lines = Arc::default();
    {
        let imported = within("import", vat::import(&uri))
            .await
            .unwrap_or_else(|e| panic!("{test}: import {uri}: {e}; {}", server.output()));
        let echo: Cap<echo::Client> = Cap::from_raw(imported);
        let echo = echo.client();

        let mut req = echo.ping_request();
        req.get().set_msg("foo");
        let reply = within("ping", req.send().promise)
            .await
            .unwrap_or_else(|e| panic!("{test}: ping: {e}; {}", server.output()));
        assert_eq!(reply.get().unwrap().get_reply().unwrap(), "echo:foo");

        // Over 1024 words: our params go out as segments spliced behind
        // the call (far pointers into them), which the C++ server reads.
        let long: String = (0..40_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let mut req = echo.ping_request();
        req.get().set_msg(long.as_str());
        let reply = within("long ping", req.send().promise)
            .await
            .unwrap_or_else(|e| panic!("{test}: long ping: {e}; {}", server.output()));
        assert_eq!(
            reply.get().unwrap().get_reply().unwrap().to_str().unwrap(),
            format!("echo:{long}")
        );

        let mut req = echo.heartbeat_request();
        req.get().set_msg("beat");
        req.get()
            .set_callback(capnp_actix::new_client(Recorder(heard.clone())));
        within("heartbeat", req.send().promise)
            .await
            .unwrap_or_else(|e| panic!("{test}: heartbeat: {e}; {}", server.output()));
        assert_eq!(*heard.lock().unwrap(), ["beat", "beat", "beat"]);

        // Pipelined: log goes out before getLogger has answered.
        let logger = echo.get_logger_request().send().pipeline.get_callback();
        let mut req = logger.log_request();
        req.get().set_msg("from rust");
        within("pipelined log", req.send().promise)
            .await
            .unwrap_or_else(|e| panic!("{test}: pipelined log: {e}; {}", server.output()));
    }
    server
        .expect_line("\"Service logger: from rust\"", |l| {
            l == "Service logger: from rust"
        })
        .await;
    assert_eq!(
        server.seen,
        [
            "ready ".to_string() + &port.to_string(),
            "Service logger: from rust".into()
        ],
        "{test}: {}",
        server.output()
    );

    // The connection ends with the server; our imports go with it.
    drop(server);
    settled(test).await;
    let _ = std::fs::remove_file(&path);
}

#[actix::test]
#[cfg_attr(
    not(have_cpp_capnp),
    ignore = "C++ Cap'n Proto not installed: apt-get install capnproto libcapnp-dev g++ pkg-config, then touch build.rs"
)]
async fn cpp_client_against_our_server_over_unix_socket() {
    cpp_echo_client_our_server(
        "cpp_client_against_our_server_over_unix_socket",
        Transport::Unix,
    )
    .await;
}

#[actix::test]
#[cfg_attr(
    not(have_cpp_capnp),
    ignore = "C++ Cap'n Proto not installed: apt-get install capnproto libcapnp-dev g++ pkg-config, then touch build.rs"
)]
async fn cpp_client_against_our_server_over_tcp() {
    cpp_echo_client_our_server("cpp_client_against_our_server_over_tcp", Transport::Tcp).await;
}

#[actix::test]
#[cfg_attr(
    not(have_cpp_capnp),
    ignore = "C++ Cap'n Proto not installed: apt-get install capnproto libcapnp-dev g++ pkg-config, then touch build.rs"
)]
async fn our_client_against_cpp_server_over_unix_socket() {
    our_client_cpp_echo_server(
        "our_client_against_cpp_server_over_unix_socket",
        Transport::Unix,
    )
    .await;
}

#[actix::test]
#[cfg_attr(
    not(have_cpp_capnp),
    ignore = "C++ Cap'n Proto not installed: apt-get install capnproto libcapnp-dev g++ pkg-config, then touch build.rs"
)]
async fn our_client_against_cpp_server_over_tcp() {
    our_client_cpp_echo_server("our_client_against_cpp_server_over_tcp", Transport::Tcp).await;
}

// ---- the calculator ----

/// Checks the "NAME = VALUE" lines a calculator client printed against
/// [`EXPECTED`].
fn assert_printed_expected(test: &str, run: &Running) {
    let parsed: Vec<(&str, f64)> = run
        .seen
        .iter()
        .map(|line| {
            let (name, value) = line
                .rsplit_once(" = ")
                .unwrap_or_else(|| panic!("{test}: unexpected line {line:?}; {}", run.output()));
            let value = value
                .parse()
                .unwrap_or_else(|e| panic!("{test}: {line:?}: {e}; {}", run.output()));
            (name, value)
        })
        .collect();
    assert_eq!(parsed, EXPECTED, "{test}: {}", run.output());
}

/// Our calculator (under the empty service ID), the C++ client's checks.
async fn cpp_calc_client_our_calculator(test: &str, transport: Transport) {
    let binary = cpp_program(test, Program::CalcClient);
    let path = socket_path(&format!("calc-client-{transport:?}"));
    let calc: Cap<calculator::Client> = Cap::new(Calculator::new());
    let mut services = Services::new();
    services.add("", &calc);
    let listening = vat::serve(&transport.our_listen_address(&path), services)
        .await
        .unwrap();
    let target = cpp_target(listening.address());

    let mut client = Running::spawn(&binary, &target);
    let status = client.finish().await;
    assert!(
        status.success(),
        "{test}: the C++ calculator client failed ({status}); {}",
        client.output()
    );
    assert_printed_expected(test, &client);

    drop(client);
    drop(calc);
    listening.stop();
    settled(test).await;
    let _ = std::fs::remove_file(&path);
}

/// The C++ calculator, our client's checks (through a client vat without
/// TLS).
async fn our_calc_client_cpp_calculator(test: &str, transport: Transport) {
    let binary = cpp_program(test, Program::CalcServer);
    let path = socket_path(&format!("calc-server-{transport:?}"));
    let _ = std::fs::remove_file(&path);
    let mut server = Running::spawn(&binary, &transport.cpp_listen_address(&path));
    let port = server.ready().await;
    let uri = transport.uri_of_cpp_server(&path, port);

    let vat = Vat::client(&VatConfig::new().with_tls(false))
        .await
        .unwrap();
    let got = within("the calculator checks", async {
        let calc: Cap<calculator::Client> = vat
            .import_as(&uri)
            .await
            .unwrap_or_else(|e| panic!("{test}: import {uri}: {e}; {}", server.output()));
        run_client_checks(calc.client()).await
    })
    .await
    .unwrap_or_else(|e| panic!("{test}: {e}; {}", server.output()));
    let got: Vec<(&str, f64)> = got.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    assert_eq!(got, EXPECTED, "{test}: {}", server.output());

    vat.stop();
    drop(vat);
    settled(test).await;
    // It served us to the end.
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "{test}: the C++ calculator exited; {}",
        server.output()
    );
    drop(server);
    let _ = std::fs::remove_file(&path);
}

#[actix::test]
#[cfg_attr(
    not(have_cpp_capnp),
    ignore = "C++ Cap'n Proto not installed: apt-get install capnproto libcapnp-dev g++ pkg-config, then touch build.rs"
)]
async fn cpp_calculator_client_against_our_calculator_over_unix_socket() {
    cpp_calc_client_our_calculator(
        "cpp_calculator_client_against_our_calculator_over_unix_socket",
        Transport::Unix,
    )
    .await;
}

#[actix::test]
#[cfg_attr(
    not(have_cpp_capnp),
    ignore = "C++ Cap'n Proto not installed: apt-get install capnproto libcapnp-dev g++ pkg-config, then touch build.rs"
)]
async fn cpp_calculator_client_against_our_calculator_over_tcp() {
    cpp_calc_client_our_calculator(
        "cpp_calculator_client_against_our_calculator_over_tcp",
        Transport::Tcp,
    )
    .await;
}

#[actix::test]
#[cfg_attr(
    not(have_cpp_capnp),
    ignore = "C++ Cap'n Proto not installed: apt-get install capnproto libcapnp-dev g++ pkg-config, then touch build.rs"
)]
async fn our_calculator_client_against_cpp_calculator_over_unix_socket() {
    our_calc_client_cpp_calculator(
        "our_calculator_client_against_cpp_calculator_over_unix_socket",
        Transport::Unix,
    )
    .await;
}

#[actix::test]
#[cfg_attr(
    not(have_cpp_capnp),
    ignore = "C++ Cap'n Proto not installed: apt-get install capnproto libcapnp-dev g++ pkg-config, then touch build.rs"
)]
async fn our_calculator_client_against_cpp_calculator_over_tcp() {
    our_calc_client_cpp_calculator(
        "our_calculator_client_against_cpp_calculator_over_tcp",
        Transport::Tcp,
    )
    .await;
}
