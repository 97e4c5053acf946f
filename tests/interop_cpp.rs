//! Interop with the C++ reference implementation (libcapnp 0.9.2, whose
//! `rpc.capnp` predates `noFinishNeeded` and friends): its `EzRpcClient`
//! against our echo server, over a Unix socket and over TCP, for ping,
//! heartbeat with a callback implemented in C++, and a pipelined
//! getLogger + log.
//!
//! The client is `tests/cpp/echo_client.c++`. Each test process compiles
//! `schemas/echo_api.capnp` with `capnp compile -oc++` and builds the client
//! with g++ once, under Cargo's target tmp dir. When g++, `capnp` or
//! `pkg-config capnp-rpc` is missing the tests print a note and pass, unless
//! `CAPNP_ACTIX_REQUIRE_CPP` is set (as CI does), in which case they fail.

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use capnp_actix::schemas::echo_api_capnp::echo;
use capnp_actix::vat::{self, Services};
use capnp_actix::{Address, Cap};
use echo_service::{EchoService, Sink};

/// How long the C++ client may run before the test fails.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

const REQUIRE_VAR: &str = "CAPNP_ACTIX_REQUIRE_CPP";

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

/// Generates the echo schema's C++ and builds the client; returns the
/// binary's path.
fn build_client() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schemas = root.join("schemas");
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
    let schema = schemas.join("echo_api.capnp");
    run_tool(
        "capnp",
        &["compile", &out_arg, &prefix_arg, &schema.to_string_lossy()],
    )?;

    let flags = run_tool("pkg-config", &["--cflags", "--libs", "capnp-rpc"])?;
    let binary = work.join("echo_client");
    let source = root.join("tests").join("cpp").join("echo_client.c++");
    let generated = work.join("echo_api.capnp.c++");
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

/// The C++ client binary, built once per test process; `None` when the
/// toolchain is missing and the test should be skipped (after printing a
/// note). Panics when the toolchain is missing and `CAPNP_ACTIX_REQUIRE_CPP`
/// is set, or when the build itself fails.
fn cpp_client(test: &str) -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, (bool, String)>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        toolchain().map_err(|why| (true, why))?;
        build_client().map_err(|why| (false, why))
    });
    match built {
        Ok(path) => Some(path.clone()),
        Err((false, why)) => panic!("{test}: building the C++ echo client failed: {why}"),
        Err((true, why)) if std::env::var_os(REQUIRE_VAR).is_some() => panic!(
            "{test}: the C++ Cap'n Proto toolchain is required ({REQUIRE_VAR} is set) \
             but unavailable: {why}; install it with \
             `apt-get install capnproto libcapnp-dev g++ pkg-config`"
        ),
        Err((true, why)) => {
            eprintln!(
                "note: skipping {test}: the C++ Cap'n Proto toolchain is not available \
                 ({why}); set {REQUIRE_VAR}=1 to make this a failure"
            );
            None
        }
    }
}

/// Reads a child's pipe to the end on its own thread.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A running child process; dropping it kills the process.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the C++ client did: its exit status (`None` if it was killed after
/// [`CLIENT_TIMEOUT`]), stdout and stderr.
struct Outcome {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs the client against `address` without blocking the actix thread
/// (polls for its exit), killing it after [`CLIENT_TIMEOUT`].
async fn run_client(binary: &Path, address: &str) -> Outcome {
    let mut child = KillOnDrop(
        Command::new(binary)
            .arg(address)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display())),
    );
    let stdout = drain(child.0.stdout.take().unwrap());
    let stderr = drain(child.0.stderr.take().unwrap());
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    };
    // Killed (if still running) and reaped, so both pipes reach their end.
    drop(child);
    // The pipes are closed; wait for the reader threads without blocking.
    while !(stdout.is_finished() && stderr.is_finished()) {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    Outcome {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Our echo server (under the empty service ID), the C++ client.
async fn cpp_client_our_server(test: &str, address: &str) {
    let Some(binary) = cpp_client(test) else {
        return;
    };
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let service: Cap<echo::Client> = Cap::new(EchoService::new(
        Duration::from_millis(1),
        Sink::Memory(lines.clone()),
    ));
    let mut services = Services::new();
    services.add("", &service);
    let listening = vat::serve(&Address::parse(address).unwrap(), services)
        .await
        .unwrap();
    // EzRpcClient takes `unix:PATH` as we print it, but TCP as `HOST:PORT`.
    let bound = listening.address().to_string();
    let target = bound.strip_prefix("tcp:").unwrap_or(&bound).to_string();

    let run = run_client(&binary, &target).await;
    let Some(status) = run.status else {
        panic!(
            "{test}: the C++ client ({target}) did not exit within {CLIENT_TIMEOUT:?}; \
             stdout: {:?}; stderr:\n{}",
            run.stdout, run.stderr
        );
    };
    assert!(
        status.success(),
        "{test}: the C++ client ({target}) failed ({status}); stdout: {:?}; stderr:\n{}",
        run.stdout,
        run.stderr
    );
    let printed: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        printed,
        ["ping ok", "heartbeat ok 3", "log ok"],
        "{test}: stderr:\n{}",
        run.stderr
    );
    assert_eq!(*lines.lock().unwrap(), ["Service logger: from c++"]);
    listening.stop();
}

#[actix::test]
async fn cpp_client_against_our_server_over_unix_socket() {
    let path = std::env::temp_dir().join(format!(
        "capnp-actix-cpp-client-{}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    cpp_client_our_server(
        "cpp_client_against_our_server_over_unix_socket",
        &format!("unix:{}", path.display()),
    )
    .await;
    let _ = std::fs::remove_file(&path);
}

#[actix::test]
async fn cpp_client_against_our_server_over_tcp() {
    cpp_client_our_server("cpp_client_against_our_server_over_tcp", "tcp:127.0.0.1:0").await;
}
