//! The capnp-actix tutorial: an echo service, called in-process.
//!
//! Run it with `cargo run --example echo` (add `-- --heartbeat-interval 0.1`
//! for a faster heartbeat). The runtime's log goes to stderr, filtered by
//! `RUST_LOG` (default `info`; `RUST_LOG=debug` shows every call as it
//! ends; see `examples/common/logging.rs`, which every example uses). It walks through the four things a newcomer needs,
//! in order:
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
//!    we drop ours, the actors stop; [`capnp_actix::debug::wait_all_released`] checks
//!    that nothing is left alive (a leak is reported on stderr and the
//!    example fails).
//!
//! Standard output carries exactly the lines the tutorial prints; errors and
//! diagnostics go to standard error, and any failure exits non-zero.
//!
//! The same service and callback also run over the network, with or without
//! TLS (here without; see `--capnp-secret-key-file` in the README):
//!
//! ```text
//! echo serve --capnp-listen-address unix:/tmp/echo.sock --capnp-disable-tls
//! echo service running at: capnp://insecure@/tmp/echo.sock/bWFpbg
//!
//! echo ping capnp://insecure@/tmp/echo.sock/bWFpbg hello    # Got reply "echo:hello"
//! echo log capnp://insecure@/tmp/echo.sock/bWFpbg hello     # server: Service logger: hello
//! echo connect capnp://insecure@/tmp/echo.sock/bWFpbg       # Callback got "foo" (x3)
//! echo connect --reconnect capnp://insecure@/tmp/echo.sock/bWFpbg  # pings until Ctrl-C,
//!                                                            # across server restarts
//! echo get-logger capnp://insecure@/tmp/echo.sock/bWFpbg    # logger at: capnp://insecure@/tmp/echo.sock/bG9nZ2Vy
//! ```
//!
//! As in the reference tutorial, the logger `getLogger` returns is
//! persistent: `get-logger` saves it (`Persistent.save`, pipelined on
//! `getLogger`) and prints its URI, which `echo log` can use, also after
//! the server restarts (with TLS: with the same `--capnp-secret-key-file`).
//! `create-logger` makes new loggers, saved in `--store-dir`.
//!
//! `serve` starts its vat in one call (`Vat::builder`) and runs until
//! SIGINT (Ctrl-C) or SIGTERM; then it shuts down gracefully
//! (`Vat::shutdown`): calls running get 5 s to finish, every client is
//! told "the vat is shutting down", and the process exits 0.
//!
//! `serve` offers the service under the ID `main` (the URI it prints) and,
//! because TLS is off, under the empty ID too, which is what clients that
//! cannot send an ID (pycapnp, the C++ EzRpc client) ask for. Exit codes:
//! 0 on success; 1 when a call or the connection fails, or a key file
//! cannot be read; 2 for a bad command line (an address or URI that does
//! not parse). Every error message names the problem.

#[path = "common/logging.rs"]
mod logging;

#[path = "common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::error::Error;
use std::io::Write;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capnp_actix::identity::generated_service_id;
use capnp_actix::persist::{save_client, with_sturdy_ref};
use capnp_actix::restorer::{digest, Loader};
use capnp_actix::schemas::echo_api_capnp::saved_service;
use capnp_actix::schemas::echo_api_capnp::{callback, echo};
use capnp_actix::vat::{ConnectionState, ReconnectPolicy, UriMaker, Vat};
use capnp_actix::{Cap, CapRef, FileStore, SturdyUri, VatConfig};
use clap::{Parser, Subcommand};
use echo_service::{EchoService, Logger, Sink};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::path::PathBuf;

/// The capnp-actix echo tutorial, and an echo server and clients.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// What to do; without one, run the in-process tutorial.
    #[command(subcommand)]
    command: Option<Command>,

    /// Seconds between the service's heartbeat callbacks, in the tutorial
    /// (`serve` takes its own).
    #[arg(
        long,
        value_name = "SECS",
        default_value = "1.0",
        value_parser = parse_interval,
        allow_hyphen_values = true
    )]
    heartbeat_interval: Duration,
}

/// The network subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the echo service and its logger until SIGINT or SIGTERM,
    /// then shut down gracefully.
    Serve {
        /// The vat: key file, addresses, TLS.
        #[command(flatten)]
        vat: VatConfig,

        /// Where loggers made by `createLogger` are saved.
        #[arg(long, value_name = "DIR", default_value = "echo-store")]
        store_dir: PathBuf,

        /// Seconds between the service's heartbeat callbacks.
        #[arg(
            long,
            value_name = "SECS",
            default_value = "1.0",
            value_parser = parse_interval,
            allow_hyphen_values = true
        )]
        heartbeat_interval: Duration,
    },
    /// Call `heartbeat("foo", callback)` with a callback of ours, which
    /// the service calls three times.
    Connect {
        /// The service's sturdy URI, as `serve` prints it.
        uri: SturdyUri,
        /// Instead, ping every 0.5 s until SIGINT or SIGTERM through a
        /// capability that reconnects when the connection is lost
        /// (printing `Got reply ...` per reply and `Connection: ...` per
        /// change of the connection's state).
        #[arg(long)]
        reconnect: bool,
    },
    /// Call `ping(MSG)` and print the reply.
    Ping {
        /// The service's sturdy URI, as `serve` prints it.
        uri: SturdyUri,
        /// What to send.
        msg: String,
    },
    /// Log MSG: through a logger's URI (as `serve` or `create-logger`
    /// print it), or, given the echo service's URI, through `getLogger`
    /// with `log` pipelined on its answer (the server prints `LABEL: MSG`).
    Log {
        /// A logger's or the echo service's sturdy URI.
        uri: SturdyUri,
        /// What to log.
        msg: String,
    },
    /// Get the service's logger (`getLogger`), ask it for its sturdy URI
    /// (`save`, pipelined on `getLogger`'s answer) and print it: the URI
    /// works after the server restarts with the same key file.
    GetLogger {
        /// The echo service's sturdy URI.
        uri: SturdyUri,
    },
    /// Create a saved logger labelled LABEL (`createLogger`, with `save`
    /// and a first `log` pipelined on it: one round trip) and print its URI.
    CreateLogger {
        /// The echo service's sturdy URI.
        uri: SturdyUri,
        /// The new logger's label.
        label: String,
    },
}

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
    capnp_actix::debug::wait_all_released(Duration::from_secs(2))
        .await
        .map_err(|report| format!("capabilities or actors still alive after 2 s:\n{report}"))?;
    Ok(())
}

/// `echo serve`: offer the service until SIGINT or SIGTERM, then shut
/// down gracefully (calls running get [`GRACE`] to finish; every client
/// is told "the vat is shutting down") and exit 0.
///
/// With TLS the service IDs are derived from the key (`main` and
/// `logger`), so the URIs stay the same across restarts with the same key
/// file. Without TLS they are the plain names, and the service is also
/// offered under the empty ID, for clients that cannot send one.
async fn serve(config: VatConfig, store_dir: PathBuf, interval: Duration) -> Result<(), BoxError> {
    if config.listen_address.is_none() {
        return Err("serve needs --capnp-listen-address".into());
    }
    let store = Arc::new(FileStore::open(&store_dir)?);
    let mut echo = EchoService::new(interval, Sink::Stdout);
    // `createLogger` saves each new logger; the loader brings a saved one
    // back when a client restores its URI (after a restart too).
    let loggers = SavedLoggers {
        store: store.clone(),
    };
    let (vat, uris) = Vat::builder(&config)
        .loader(loggers)
        .serve_with(move |s| {
            echo.make_logger = Some(Rc::new({
                let uris = s.uri_maker().clone();
                move |label| create_logger(&store, &uris, label)
            }));
            // The service's logger answers `save` with its own URI, which
            // the vat serves: `getLogger` gives a logger a client can save
            // and come back to after a restart.
            let logger = echo.persist_logger(&s.uri("logger"));
            s.serve("logger", logger);
            s.serve("main", Cap::<echo::Client>::new(echo));
        })
        .default_without_tls("main")
        .start()
        .await?;
    // Installed before the server says it is up.
    let signal = capnp_actix::vat::shutdown_signal();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "echo service running at: {}", uris["main"])?;
    writeln!(stdout, "logger running at: {}", uris["logger"])?;
    stdout.flush()?;
    drop(stdout);
    signal.await;
    tracing::info!("signal received: shutting down");
    vat.shutdown(GRACE).await;
    Ok(())
}

/// How long calls running at SIGINT or SIGTERM get to finish.
const GRACE: Duration = Duration::from_secs(5);

/// Saved loggers, by the digest of their IDs.
struct SavedLoggers {
    store: Arc<FileStore>,
}

impl Loader for SavedLoggers {
    fn load(
        &self,
        uri: SturdyUri,
        digest: [u8; 32],
    ) -> BoxFuture<'static, Result<CapRef, capnp::Error>> {
        let loaded = self
            .store
            .load(&digest)
            .map_err(|e| capnp::Error::failed(e.to_string()));
        let restored = loaded.and_then(|saved| {
            let Some(saved) = saved else {
                return Err(capnp::Error::failed("Unknown persistent service ID".into()));
            };
            let saved: saved_service::Reader = saved.get_root()?;
            let label = saved.get_logger()?.get_label()?.to_string()?;
            let logger: Cap<callback::Client> = Cap::new(Logger {
                label,
                sink: Sink::Stdout,
            });
            Ok(with_sturdy_ref(logger, &uri))
        });
        futures::future::ready(restored).boxed()
    }
}

/// `createLogger` of `serve`: a new logger under a fresh secret ID, saved
/// in the store before its URI is handed out.
fn create_logger(
    store: &FileStore,
    uris: &UriMaker,
    label: &str,
) -> Result<Cap<callback::Client>, capnp::Error> {
    let id = generated_service_id();
    let mut message = capnp::message::Builder::new_default();
    message
        .init_root::<saved_service::Builder>()
        .init_logger()
        .set_label(label);
    store
        .save(&digest(&id), &message)
        .map_err(|e| capnp::Error::failed(format!("cannot save the logger: {e}")))?;
    let logger: Cap<callback::Client> = Cap::new(Logger {
        label: label.to_string(),
        sink: Sink::Stdout,
    });
    Ok(Cap::from_raw(with_sturdy_ref(
        logger,
        &uris.sturdy_uri(&id),
    )))
}

/// The capability a sturdy URI names, through a client-only vat (calls
/// on it are pipelined on the connection and the bootstrap). The vat has
/// an ephemeral key, so it can reach TLS vats and insecure ones alike.
async fn import<C>(uri: &SturdyUri) -> Result<Cap<C>, BoxError> {
    let vat = Vat::client(&VatConfig::new()).await?;
    Ok(vat.import_as(uri).await?)
}

async fn import_echo(uri: &SturdyUri) -> Result<echo::Client, BoxError> {
    Ok(import::<echo::Client>(uri).await?.client())
}

/// `echo ping`: one call, its reply printed.
async fn ping(uri: SturdyUri, msg: String) -> Result<(), BoxError> {
    let echo = import_echo(&uri).await?;
    let mut request = echo.ping_request();
    request.get().set_msg(&msg[..]);
    let response = request.send().promise.await?;
    let reply = response.get()?.get_reply()?.to_str()?;
    println!("Got reply {reply:?}");
    Ok(())
}

/// `echo connect`: `heartbeat` with a callback of ours, called over the
/// connection by the service.
async fn connect(uri: SturdyUri) -> Result<(), BoxError> {
    let echo = import_echo(&uri).await?;
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
    Ok(())
}

/// `echo connect --reconnect`: a ping every 0.5 s, each with a deadline
/// of 2 s, through a capability that reconnects (calls made while it is
/// down wait for the next connection, within their deadline), until
/// SIGINT or SIGTERM. Prints each reply and each change of the
/// connection's state; a failed ping goes to standard error.
async fn connect_reconnecting(uri: SturdyUri) -> Result<(), BoxError> {
    let vat = Vat::client(&VatConfig::new()).await?;
    let policy = ReconnectPolicy::default();
    let echo = vat.import_reconnecting::<echo::Client>(&uri, policy)?;
    let mut state = echo.watch();
    actix::spawn(async move {
        while state.changed().await.is_ok() {
            let line = match &*state.borrow() {
                ConnectionState::Connecting => "connecting".to_string(),
                ConnectionState::Connected => "connected".to_string(),
                ConnectionState::Reconnecting {
                    attempt,
                    last_error,
                } => format!("reconnecting (attempt {attempt}): {last_error}"),
                ConnectionState::GaveUp(e) => format!("gave up: {e}"),
            };
            println!("Connection: {line}");
        }
    });
    let client = echo.cap().with_deadline(Duration::from_secs(2)).client();
    let ping = async {
        let mut ticks = tokio::time::interval(Duration::from_millis(500));
        for n in 1.. {
            ticks.tick().await;
            let mut request = client.ping_request();
            request.get().set_msg(&format!("ping {n}")[..]);
            match request.send().promise.await {
                Ok(response) => println!("Got reply {:?}", response.get()?.get_reply()?.to_str()?),
                Err(e) => eprintln!("ping {n} failed: {e}"),
            }
        }
        Ok::<(), BoxError>(())
    };
    futures::pin_mut!(ping);
    let signal = std::pin::pin!(capnp_actix::vat::shutdown_signal());
    if let futures::future::Either::Right((outcome, _)) =
        futures::future::select(signal, ping).await
    {
        outcome?;
    }
    Ok(())
}

/// `echo log`: `log(MSG)` on a logger's URI; given the echo service's
/// URI instead (which answers a logger's method with Unimplemented), the
/// service's logger: `log` is sent to the logger `getLogger` will return,
/// without waiting for `getLogger`'s answer; only `log` is awaited.
async fn log(uri: SturdyUri, msg: String) -> Result<(), BoxError> {
    let cap = import::<callback::Client>(&uri).await?;
    let mut request = cap.client().log_request();
    request.get().set_msg(&msg[..]);
    match request.send().promise.await {
        Err(e) if e.kind == capnp::ErrorKind::Unimplemented => {}
        other => return Ok(other.map(drop)?),
    }
    let echo = cap.cast::<echo::Client>().client();
    let pending = echo.get_logger_request().send();
    let logger = pending.pipeline.get_callback();
    let mut request = logger.log_request();
    request.get().set_msg(&msg[..]);
    request.send().promise.await?;
    Ok(())
}

/// `echo get-logger`: `getLogger`, and `save` on the logger it will
/// return, pipelined: one round trip gives the logger's sturdy URI.
async fn get_logger_command(uri: SturdyUri) -> Result<(), BoxError> {
    let echo = import_echo(&uri).await?;
    let pending = echo.get_logger_request().send();
    let logger = pending.pipeline.get_callback();
    println!("logger at: {}", save_client(&logger).await?);
    Ok(())
}

/// `echo create-logger`: `createLogger(LABEL)`, then `save` and a first
/// `log` on the new logger, both pipelined: everything goes out before
/// any answer comes back.
async fn create_logger_command(uri: SturdyUri, label: String) -> Result<(), BoxError> {
    let echo = import_echo(&uri).await?;
    let mut request = echo.create_logger_request();
    request.get().set_label(&label[..]);
    let pending = request.send();
    let logger = pending.pipeline.get_callback();
    let saved = save_client(&logger);
    let mut first = logger.log_request();
    first.get().set_msg("created");
    let (saved, logged) = futures::join!(saved, first.send().promise);
    logged?;
    println!("new logger at: {}", saved?);
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init();
    let system = actix::System::new();
    let outcome = match args.command {
        None => system.block_on(tutorial(args.heartbeat_interval)),
        Some(Command::Serve {
            vat,
            store_dir,
            heartbeat_interval,
        }) => system.block_on(serve(vat, store_dir, heartbeat_interval)),
        Some(Command::Connect {
            uri,
            reconnect: false,
        }) => system.block_on(connect(uri)),
        Some(Command::Connect {
            uri,
            reconnect: true,
        }) => system.block_on(connect_reconnecting(uri)),
        Some(Command::Ping { uri, msg }) => system.block_on(ping(uri, msg)),
        Some(Command::Log { uri, msg }) => system.block_on(log(uri, msg)),
        Some(Command::GetLogger { uri }) => system.block_on(get_logger_command(uri)),
        Some(Command::CreateLogger { uri, label }) => {
            system.block_on(create_logger_command(uri, label))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo: {e}");
            ExitCode::FAILURE
        }
    }
}
