//! The capnp-actix tutorial: an echo service, called in-process.
//!
//! Run it with `cargo run --example echo` (add `-- --heartbeat-interval 0.1`
//! for a faster heartbeat, and `RUST_LOG=capnp_actix_actors=trace` to see
//! every call and every release on stderr). It walks through the four things a newcomer needs, in order:
//!
//! 1. **A plain call.** The echo service (`examples/common/echo_service.rs`,
//!    an implementation of the generated `echo::Server` trait) is hosted in a
//!    capability actor with [`Cap::new`]. [`Cap::client`] gives the generated
//!    `echo::Client`; we send `ping("foo")` and print the reply:
//!    `Got reply "echo:foo"`.
//! 2. **A callback.** Capabilities travel in messages. We host our own
//!    `callback::Server` (it prints `Callback got "..."`) and pass its client
//!    to `heartbeat("foo", callback)`. The service calls it back three
//!    times, `--heartbeat-interval` seconds apart, before it answers.
//! 3. **Promise pipelining.** `getLogger` returns the service's logger
//!    capability. We do not wait for that answer: the `callback` field of
//!    the pending result is already usable (`pipeline.get_callback()`), so
//!    `log(...)` is sent at once and delivered when the logger is known. Only
//!    the `log` call is awaited. The service's logger prints
//!    `Service logger: ...`.
//! 4. **Release.** Every capability lives while a handle refers to it. Once
//!    we drop ours, the actors stop; [`capnp_actix::debug::settle`] checks
//!    that nothing is left alive (a leak is reported on stderr and the
//!    example fails).
//!
//! Standard output carries exactly the lines the tutorial prints; errors and
//! diagnostics go to standard error, and any failure exits non-zero.

#[path = "common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::error::Error;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capnp_actix::schemas::echo_api_capnp::{callback, echo};
use capnp_actix::Cap;
use clap::{Parser, Subcommand};
use echo_service::{EchoService, Sink};

/// The capnp-actix echo tutorial (and, later, an echo client and server).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// What to do; without one, run the in-process tutorial.
    #[command(subcommand)]
    command: Option<Command>,

    /// Seconds between the service's heartbeat callbacks.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "1.0",
        value_parser = parse_interval,
        allow_hyphen_values = true
    )]
    heartbeat_interval: Duration,
}

/// Subcommands. Reserved: `serve`, `connect`, `ping` and `log` (over the
/// network) come later; none exists yet.
#[derive(Subcommand, Debug)]
enum Command {}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("not a usable interval: {e}"))
}

/// Our side of `heartbeat`: a callback the service calls into.
struct PrintCallback {
    /// How many times it was called (checked at the end).
    calls: Arc<AtomicUsize>,
}

impl callback::Server for PrintCallback {
    async fn log(
        self: Rc<Self>,
        params: callback::LogParams,
        _: callback::LogResults,
    ) -> Result<(), capnp::Error> {
        let msg = params.get()?.get_msg()?.to_str()?;
        println!("Callback got {msg:?}");
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

type BoxError = Box<dyn Error>;

async fn tutorial(interval: Duration) -> Result<(), BoxError> {
    // Everything lives in this block, so that it is all dropped before the
    // release check below.
    {
        // Step 1: host the service and ping it.
        let service: Cap<echo::Client> = Cap::new(EchoService::new(interval, Sink::Stdout));
        let echo = service.client();

        let mut request = echo.ping_request();
        request.get().set_msg("foo");
        let response = request.send().promise.await?;
        let reply = response.get()?.get_reply()?.to_str()?;
        println!("Got reply {reply:?}");
        if reply != "echo:foo" {
            return Err(format!("ping: expected \"echo:foo\", got {reply:?}").into());
        }

        // Step 2: pass a capability of our own and let the service call it.
        let calls = Arc::new(AtomicUsize::new(0));
        let callback: Cap<callback::Client> = Cap::new(PrintCallback {
            calls: calls.clone(),
        });
        let mut request = echo.heartbeat_request();
        request.get().set_msg("foo");
        request.get().set_callback(callback.client());
        request.send().promise.await?;
        let n = calls.load(Ordering::SeqCst);
        if n != 3 {
            return Err(format!("heartbeat: expected 3 callbacks, got {n}").into());
        }

        // Step 3: pipelining. `getLogger` is sent but not awaited; `log` goes
        // to the logger the answer will hold.
        let pending = echo.get_logger_request().send();
        let logger = pending.pipeline.get_callback();
        let mut request = logger.log_request();
        request.get().set_msg("Hello from the tutorial");
        request.send().promise.await?;
        // `pending.promise` (the getLogger answer itself) is dropped unread.
    }

    // Step 4: all our handles are gone; every actor should stop.
    capnp_actix::debug::settle(Duration::from_secs(2))
        .await
        .map_err(|report| format!("capabilities or actors still alive after 2 s:\n{report}"))?;
    Ok(())
}

fn init_tracing() {
    // Diagnostics on stderr, chosen with RUST_LOG (off by default). The
    // runtime runs each call in a `call` span: print spans as they close.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    let outcome = match args.command {
        None => actix::System::new().block_on(tutorial(args.heartbeat_interval)),
        Some(command) => match command {},
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo: {e}");
            ExitCode::FAILURE
        }
    }
}
