//! The Cap'n Proto calculator sample over the network.
//!
//! ```sh
//! cargo run --example calc        # server and client in one process
//! cargo run --example calc -- serve --capnp-listen-address unix:/tmp/calc.sock --capnp-disable-tls
//! cargo run --example calc -- connect capnp://insecure@/tmp/calc.sock/bWFpbg
//! ```
//!
//! `serve` offers the calculator (`examples/common/calc_service.rs`) under
//! the service ID `main` and under the empty ID (for clients that cannot
//! send one), prints `calculator running at: URI` and runs until killed.
//! `connect` imports a sturdy URI and runs the classic sample client's
//! checks (literals, pipelined operators, a previous result used twice,
//! functions defined on the server, a function of the client's own),
//! printing `name = value` for each. Without a subcommand, both run in this
//! process over a temporary Unix socket.
//!
//! Standard output carries those lines only; errors go to standard error.
//! A bad address or URI, or asking for TLS (not supported yet), exits with
//! status 2; a failed connection or check with 1.

#[path = "common/calc_service.rs"]
#[allow(dead_code)]
mod calc_service;

use std::process::ExitCode;

use calc_service::client::run_client_checks;
use calc_service::Calculator;
use capnp_actix::schemas::calculator_capnp::calculator;
use capnp_actix::vat::{self, Services};
use capnp_actix::{Address, Cap, SturdyUri, VatAuth};
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
    /// Serve the calculator until killed.
    Serve {
        /// Where to listen: tcp:HOST:PORT, tcp:[IPv6]:PORT or unix:PATH.
        #[arg(long, value_name = "ADDR", value_parser = Address::parse)]
        capnp_listen_address: Address,
        /// Serve without TLS (required: TLS is not supported yet).
        #[arg(long)]
        capnp_disable_tls: bool,
    },
    /// Connect to a calculator and check its answers.
    Connect {
        /// The calculator's sturdy URI, e.g. capnp://insecure@/tmp/calc.sock/bWFpbg
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

/// Offers a new calculator on `address` as `main` and as the empty ID.
async fn start_server(address: &Address) -> Result<vat::Listening, Failure> {
    let calc: Cap<calculator::Client> = Cap::new(Calculator::new());
    let mut services = Services::new();
    services.add("main", &calc).add("", &calc);
    let listening = vat::serve(address, services).await?;
    println!("calculator running at: {}", listening.uri(b"main"));
    Ok(listening)
}

async fn serve(address: Address) -> Result<(), Failure> {
    let _listening = start_server(&address).await?;
    futures::future::pending::<()>().await;
    Ok(())
}

/// Imports `uri` and prints the results of the checks.
async fn connect(uri: &SturdyUri) -> Result<(), Failure> {
    if uri.auth != VatAuth::Insecure {
        return Err(Failure::Usage(format!(
            "{uri}: TLS is not supported yet; use an insecure@ URI"
        )));
    }
    let calc: Cap<calculator::Client> = Cap::from_raw(vat::import(uri).await?);
    for (name, value) in run_client_checks(calc.client()).await? {
        println!("{name} = {value}");
    }
    Ok(())
}

/// Serves on a temporary Unix socket and connects to it.
async fn in_process() -> Result<(), Failure> {
    let path = std::env::temp_dir().join(format!("capnp-actix-calc-{}.sock", std::process::id()));
    let listening = start_server(&Address::Unix(path.clone())).await?;
    let outcome = connect(&listening.uri(b"main")).await;
    listening.stop();
    let _ = std::fs::remove_file(&path);
    outcome
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = match args.command {
        None => actix::System::new().block_on(in_process()),
        Some(Command::Serve {
            capnp_listen_address,
            capnp_disable_tls,
        }) => {
            if capnp_disable_tls {
                actix::System::new().block_on(serve(capnp_listen_address))
            } else {
                Err(Failure::Usage(
                    "TLS is not supported yet; pass --capnp-disable-tls to serve without it".into(),
                ))
            }
        }
        Some(Command::Connect { uri }) => actix::System::new().block_on(connect(&uri)),
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
