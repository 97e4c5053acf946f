//! The Cap'n Proto calculator sample over the network, with TLS.
//!
//! ```sh
//! cargo run --example calc        # server and client in one process
//! cargo run --example calc -- serve --capnp-secret-key-file calc.pem \
//!     --capnp-listen-address unix:/tmp/calc.sock
//! cargo run --example calc -- connect capnp://sha-256:FINGERPRINT@/tmp/calc.sock/SERVICE-ID
//! cargo run --example calc -- serve --capnp-listen-address tcp:127.0.0.1:7000 --capnp-disable-tls
//! cargo run --example calc -- connect capnp://insecure@127.0.0.1:7000/bWFpbg
//! ```
//!
//! `serve` runs a vat with the usual options (`--capnp-secret-key-file`,
//! `--capnp-listen-address`, `--capnp-public-address`,
//! `--capnp-disable-tls`) that offers the calculator
//! (`examples/common/calc_service.rs`), prints `calculator running at: URI`
//! and runs until SIGINT or SIGTERM, then shuts down gracefully (calls
//! running get 5 s to finish; clients are told why) and exits 0. With TLS (the default) the service ID is derived
//! from the key and the name `main`, so the URI stays the same across
//! restarts with the same key file (without a key file the key, and so the
//! URI, is new each run). Without TLS the ID is `main`, and the calculator
//! is also offered under the empty ID, which is what clients that cannot
//! send an ID ask for (pycapnp, the C++ EzRpc client).
//!
//! `connect` imports a sturdy URI (TLS or `insecure`) through a client-only
//! vat with an ephemeral key, and runs the classic sample client's checks
//! (literals, pipelined operators, a previous result used twice, functions
//! defined on the server, a function of the client's own), printing
//! `name = value` for each. Without a subcommand, both run in this process,
//! over TLS on a temporary Unix socket.
//!
//! Standard output carries those lines only; errors go to standard error.
//! A bad address or URI, or `serve` without a listen address, exits with
//! status 2; anything that fails at run time (an unusable key file, an
//! address that cannot be bound, a failed connection or check) with 1.

#[path = "common/logging.rs"]
mod logging;

#[path = "common/calc_service.rs"]
#[allow(dead_code)]
mod calc_service;

use std::process::ExitCode;
use std::time::Duration;

use calc_service::client::run_client_checks;
use calc_service::Calculator;
use capnp_actix::schemas::calculator_capnp::calculator;
use capnp_actix::vat::{Vat, VatError};
use capnp_actix::{Address, Cap, ConfigError, SturdyUri, VatConfig};
use clap::{Parser, Subcommand};

/// The Cap'n Proto calculator: a server and a client.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// What to do; without one, serve and connect in this process.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the calculator until SIGINT or SIGTERM (needs
    /// --capnp-listen-address).
    Serve {
        /// The vat: key file, addresses, TLS.
        #[command(flatten)]
        vat: VatConfig,
    },
    /// Connect to a calculator and check its answers.
    Connect {
        /// The calculator's sturdy URI, as `serve` prints it.
        #[arg(value_name = "URI", value_parser = SturdyUri::parse)]
        uri: SturdyUri,
    },
}

/// How the program failed: a usage error (status 2) or a runtime one (1).
enum Failure {
    Usage(String),
    Runtime(String),
}

impl From<capnp::Error> for Failure {
    fn from(e: capnp::Error) -> Self {
        Failure::Runtime(e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Runtime(e.to_string())
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Runtime(e.to_string())
    }
}

impl From<VatError> for Failure {
    fn from(e: VatError) -> Self {
        Failure::Runtime(e.to_string())
    }
}

/// Starts a vat that offers a new calculator, and prints its URI.
///
/// With TLS the service ID is derived from the key (`main`); without, it
/// is `main` itself, and the empty ID is served too.
async fn start_server(config: &VatConfig) -> Result<(Vat, SturdyUri), Failure> {
    if config.listen_address.is_none() {
        return Err(Failure::Usage(
            "serve needs --capnp-listen-address (tcp:HOST:PORT, tcp:[IPv6]:PORT or unix:PATH)"
                .into(),
        ));
    }
    let calc: Cap<calculator::Client> = Cap::new(Calculator::new());
    let (vat, uris) = Vat::builder(config)
        .serve("main", calc)
        .default_without_tls("main")
        .start()
        .await?;
    let uri = uris["main"].clone();
    println!("calculator running at: {uri}");
    Ok((vat, uri))
}

/// `calc serve`: serve until SIGINT or SIGTERM, then shut down
/// gracefully (calls running get 5 s to finish).
async fn serve(config: VatConfig) -> Result<(), Failure> {
    // Installed before the server says it is up.
    let signal = capnp_actix::vat::shutdown_signal();
    let (vat, _) = start_server(&config).await?;
    signal.await;
    vat.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Imports `uri` through a client-only vat (an ephemeral key: it reaches
/// TLS vats and insecure ones alike) and prints the results of the checks.
async fn connect(uri: &SturdyUri) -> Result<(), Failure> {
    let vat = Vat::client(&VatConfig::new()).await?;
    let outcome = async {
        let calc: Cap<calculator::Client> = vat.import_as(uri).await?;
        run_client_checks(calc.client()).await
    }
    .await;
    vat.shutdown(Duration::from_secs(1)).await;
    for (name, value) in outcome? {
        println!("{name} = {value}");
    }
    Ok(())
}

/// Serves over TLS on a temporary Unix socket, with an ephemeral key, and
/// connects to it from a second vat (with a key of its own).
async fn in_process() -> Result<(), Failure> {
    let path = std::env::temp_dir().join(format!("capnp-actix-calc-{}.sock", std::process::id()));
    let config = VatConfig::new().with_listen_address(Address::Unix(path.clone()));
    let outcome = async {
        let (server, uri) = start_server(&config).await?;
        let checked = connect(&uri).await;
        server.shutdown(Duration::from_secs(1)).await;
        checked
    }
    .await;
    let _ = std::fs::remove_file(&path);
    outcome
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init();
    let system = actix::System::new();
    let outcome = match args.command {
        None => system.block_on(in_process()),
        Some(Command::Serve { vat }) => system.block_on(serve(vat)),
        Some(Command::Connect { uri }) => system.block_on(connect(&uri)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("calc: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("calc: {e}");
            ExitCode::FAILURE
        }
    }
}
