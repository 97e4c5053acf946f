//! Running the examples from tests: building them once per process,
//! running one to its end ([`run_example`]) or in the background
//! ([`Server`]), and temporary directories for their sockets. Shared by
//! `examples_run.rs` and `examples_signals.rs`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const EXAMPLES: [&str; 7] = [
    "echo",
    "actor_service",
    "web",
    "bench",
    "calc",
    "load",
    "files",
];

/// How long one example may run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The cargo arguments that select the profile this test binary was built
/// with: it lives in `<target-dir>/<profile-dir>/deps/`.
pub fn profile_args() -> Vec<String> {
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .and_then(|dir| dir.file_name())
        .and_then(|name| name.to_str())
        .unwrap_or("debug")
        .to_owned();
    match profile_dir.as_str() {
        "debug" => vec![],
        "release" => vec!["--release".into()],
        other => vec!["--profile".into(), other.into()],
    }
}

/// Builds the examples (once per process) and returns their paths by name.
pub fn example_binaries() -> &'static HashMap<String, PathBuf> {
    static BINARIES: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "--quiet",
                "--message-format=json-render-diagnostics",
            ])
            .args(["--package", env!("CARGO_PKG_NAME")])
            .args(profile_args());
        for name in EXAMPLES {
            cmd.args(["--example", name]);
        }
        // Build errors go straight to our stderr; JSON messages come back.
        let output = cmd
            .stderr(Stdio::inherit())
            .output()
            .expect("could not run cargo");
        assert!(
            output.status.success(),
            "building the examples failed: {}",
            output.status
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut found = HashMap::new();
        for line in stdout.lines() {
            if !line.contains("\"reason\":\"compiler-artifact\"") {
                continue;
            }
            if let Some(path) = json_string_field(line, "executable") {
                let path = PathBuf::from(path);
                let stem = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned);
                if let Some(stem) = stem.filter(|s| EXAMPLES.contains(&s.as_str())) {
                    found.insert(stem, path);
                }
            }
        }
        for name in EXAMPLES {
            assert!(
                found.contains_key(name),
                "cargo reported no executable for example {name}"
            );
        }
        found
    })
}

/// The string value of `"key":"..."` in one line of cargo's JSON output
/// (only the escapes a path can contain are undone).
pub fn json_string_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut value = String::new();
    let mut chars = line[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
}

pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs an example with `args` and `RUST_LOG=warn`, killing it if it
/// outlives [`RUN_TIMEOUT`].
pub fn run_example(name: &str, args: &[&str]) -> Run {
    run_example_logging(name, args, Some("warn"))
}

/// [`run_example`] with `RUST_LOG` set to `rust_log`, or unset (`None`).
pub fn run_example_logging(name: &str, args: &[&str], rust_log: Option<&str>) -> Run {
    let path = &example_binaries()[name];
    let mut command = Command::new(path);
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", path.display()));
    // Drain both pipes on their own threads so the child never blocks on a
    // full pipe while we wait.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));

    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the example") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Run {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "example {name} {args:?} did not finish within {RUN_TIMEOUT:?}; killed it\n\
             --- stdout ---\n{stdout}--- stderr ---\n{stderr}"
        ),
    }
}

/// A directory of our own under the system's temporary directory (for
/// Unix sockets), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("capnp-actix-examples-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How long a server may take to say where it listens, and to print a line
/// we expect.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

/// An example serving in the background until the test drops it (then it
/// is killed).
pub struct Server {
    pub child: Child,
    /// Lines of its standard output, as they come.
    pub lines: mpsc::Receiver<String>,
    /// Every line read so far (for failure messages).
    pub seen: Vec<String>,
    pub stderr: Option<JoinHandle<String>>,
    /// The URI it printed.
    pub uri: String,
}

impl Server {
    /// Starts example `name` with `args` and waits for the line starting
    /// with `banner`, which ends with the service's URI.
    pub fn start(name: &str, args: &[&str], banner: &str) -> Server {
        let path = &example_binaries()[name];
        let mut child = Command::new(path)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", path.display()));
        let (tx, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        let mut server = Server {
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
            uri: String::new(),
        };
        let line = server.expect(|l| l.starts_with(banner), &format!("{banner}URI"));
        server.uri = line[banner.len()..].to_string();
        server
    }

    /// Waits for a line of standard output that `wanted` accepts.
    pub fn expect(&mut self, wanted: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + SERVER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stderr = self
                        .stderr
                        .take()
                        .and_then(|t| t.join().ok())
                        .unwrap_or_default();
                    panic!(
                        "the server never printed {what:?} ({e:?})\n\
                         --- stdout ---\n{}\n--- stderr ---\n{stderr}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// Waits for exactly `line` on standard output.
    pub fn expect_line(&mut self, line: &str) {
        self.expect(|l| l == line, line);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn exit_code(run: &Run) -> Option<i32> {
    run.status.code()
}
