//! Runs the examples (`echo`, `actor_service`, `web --self-test`) as their
//! users would and checks what they print.
//!
//! Cargo does not tell an integration test where example binaries are, and
//! does not build them for `cargo test --test examples_run`. So the first
//! test to need them runs `cargo build --examples`-style once (with the same
//! cargo and the profile this test was built with; a no-op when they are
//! up to date) and takes the binaries' paths from cargo's JSON messages.
//! Each example runs under a timeout and is killed if it overruns.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const EXAMPLES: [&str; 3] = ["echo", "actor_service", "web"];

/// How long one example may run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The cargo arguments that select the profile this test binary was built
/// with: it lives in `<target-dir>/<profile-dir>/deps/`.
fn profile_args() -> Vec<String> {
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
fn example_binaries() -> &'static HashMap<String, PathBuf> {
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
fn json_string_field(line: &str, key: &str) -> Option<String> {
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

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
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

/// Runs an example with `args`, killing it if it outlives [`RUN_TIMEOUT`].
fn run_example(name: &str, args: &[&str]) -> Run {
    let path = &example_binaries()[name];
    let mut child = Command::new(path)
        .args(args)
        .env_remove("RUST_LOG")
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
            r#"actor service: ping("one") -> "echo:one (call 1)""#,
            r#"actor service: ping("two") -> "echo:two (call 2)""#,
            r#"client callback: got "beat: 2 pings so far""#,
            r#"plain service: ping("one") -> "echo:one (call 1)""#,
            r#"arbiter thread: actor service -> "echo:from the arbiter (call 3)""#,
            r#"arbiter thread: plain service -> "echo:from the arbiter (call 2)""#,
            r#"main thread: service on the arbiter -> "echo:hosted over there (call 1)""#,
            r#"counter actor: 3 pings, 6 calls, logged ["kept in the actor's state"]"#,
            "counter actor: stopped after 6 calls",
            "all capabilities released",
        ],
        "{run}"
    );
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
    assert!(
        lines.contains(&r#"GET /ping/hello -> 200 "echo:hello""#),
        "{run}"
    );
    assert_eq!(lines.last(), Some(&"self-test passed"), "{run}");
}
