//! File transfer over streaming calls: the `files` example, serving and
//! using `schemas/files.capnp` (the interface foreign peers test against).
//!
//! ```text
//! files serve --dir DIR --capnp-listen-address unix:/tmp/files.sock --capnp-disable-tls
//! files service running at: capnp://insecure@/tmp/files.sock/ZmlsZXM
//!
//! files upload   capnp://insecure@/tmp/files.sock/ZmlsZXM ./local.bin remote.bin
//! files download capnp://insecure@/tmp/files.sock/ZmlsZXM remote.bin ./copy.bin
//! files stat     capnp://insecure@/tmp/files.sock/ZmlsZXM remote.bin
//! ```
//!
//! * `serve` offers a flat directory (the service ID `files`; without TLS
//!   also the empty ID, for clients that cannot send one, as `echo serve`
//!   does) until SIGINT or SIGTERM. Names are checked as the schema says
//!   (`examples/common/files_service.rs`), so no name reaches outside DIR;
//!   an upload is written to a temporary file in DIR and renamed once
//!   `end` returns, and a sink released before `end` leaves nothing behind.
//! * `upload` streams LOCAL into the sink `upload(NAME)` returns, then calls
//!   `end`; `download` hands the server a sink of ours writing LOCAL (a
//!   temporary file beside it, renamed at `end`). Both print the size and
//!   SHA-256 and exit 0 only when what the far side reports (`end`'s
//!   results, `download`'s) matches the local file.
//! * `stat` prints the size in decimal, then the SHA-256 in hex, one a line.
//!
//! Writes are `send()`-awaited one after another; the runtime's flow control
//! keeps a window of them in flight. A progress bar with rate and ETA goes
//! to standard output when it is a terminal (nothing otherwise).
//!
//! Exit codes: 0 on success; 1 when a call, the connection or a check
//! fails, or a local file cannot be read or written; 2 for a bad command
//! line. Every error message names the problem.

#[path = "common/logging.rs"]
mod logging;

#[path = "common/files_service.rs"]
mod files_service;

use std::error::Error;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use capnp_actix::schemas::files_capnp::{byte_sink, files};
use capnp_actix::vat::Vat;
use capnp_actix::{Cap, SturdyUri, VatConfig};
use clap::{Parser, Subcommand};
use files_service::{
    check_name, end_sink, send_file, summarize_file, FileSink, FilesService, Summary,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// File transfer over Cap'n Proto streaming calls (files.capnp).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the files of DIR until SIGINT or SIGTERM.
    Serve {
        /// The directory whose files are served (it must exist).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The vat: key file, addresses, TLS.
        #[command(flatten)]
        vat: VatConfig,
    },
    /// Store the local file LOCAL on the server as NAME.
    Upload {
        /// The service's sturdy URI, as `serve` prints it.
        uri: SturdyUri,
        /// The file to send.
        local: PathBuf,
        /// Its name on the server.
        name: String,
    },
    /// Fetch the server's file NAME into the local file LOCAL.
    Download {
        /// The service's sturdy URI, as `serve` prints it.
        uri: SturdyUri,
        /// The name on the server.
        name: String,
        /// Where to store it.
        local: PathBuf,
    },
    /// Print the size (decimal) and SHA-256 (hex) of the server's file NAME.
    Stat {
        /// The service's sturdy URI, as `serve` prints it.
        uri: SturdyUri,
        /// The name on the server.
        name: String,
    },
}

type BoxError = Box<dyn Error>;

/// How long calls running at SIGINT or SIGTERM get to finish.
const GRACE: Duration = Duration::from_secs(5);

fn host_sink(sink: FileSink) -> byte_sink::Client {
    Cap::<byte_sink::Client>::new(sink).client()
}

/// `files serve`.
async fn serve(dir: PathBuf, config: VatConfig) -> Result<(), BoxError> {
    if config.listen_address.is_none() {
        return Err("serve needs --capnp-listen-address".into());
    }
    if !dir.is_dir() {
        return Err(format!("--dir {}: not a directory", dir.display()).into());
    }
    let service = FilesService::new(dir, host_sink);
    let (vat, uris) = Vat::builder(&config)
        .serve_with(move |s| {
            s.serve("files", Cap::<files::Client>::new(service));
        })
        .default_without_tls("files")
        .start()
        .await?;
    let signal = capnp_actix::vat::shutdown_signal();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "files service running at: {}", uris["files"])?;
    stdout.flush()?;
    drop(stdout);
    signal.await;
    tracing::info!("signal received: shutting down");
    vat.shutdown(GRACE).await;
    Ok(())
}

async fn import_files(uri: &SturdyUri) -> Result<files::Client, BoxError> {
    let vat = Vat::client(&VatConfig::new()).await?;
    Ok(vat.import_as::<files::Client>(uri).await?.client())
}

/// A progress bar of `len` bytes (unknown: `None`) on standard output,
/// hidden when that is not a terminal.
fn progress(len: Option<u64>) -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stdout());
    let style = ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Fails unless `remote` (what the far side reported) equals `local`.
fn compare(what: &str, remote: Summary, local: Summary) -> Result<(), BoxError> {
    if remote != local {
        return Err(format!(
            "{what}: the server reports {} bytes with SHA-256 {}, the local file has {} bytes \
             with SHA-256 {}",
            remote.size,
            remote.hex(),
            local.size,
            local.hex()
        )
        .into());
    }
    println!("{}", local.size);
    println!("{}", local.hex());
    Ok(())
}

/// `files upload`.
async fn upload(uri: SturdyUri, local: PathBuf, name: String) -> Result<(), BoxError> {
    check_name(&name)?;
    let file = File::open(&local).map_err(|e| format!("cannot open {}: {e}", local.display()))?;
    let len = file.metadata().ok().map(|m| m.len());
    let service = import_files(&uri).await?;
    let mut request = service.upload_request();
    request.get().set_name(&name[..]);
    // The writes are pipelined on `upload`'s answer: they go out before
    // it is in, and keep their order when the sink's own capability
    // arrives and later writes go to it directly.
    let sink = request.send().pipeline.get_sink();
    let bar = progress(len);
    let sent = send_file(file, &sink, |n| bar.inc(n as u64)).await?;
    let ended = end_sink(&sink).await?;
    bar.finish_and_clear();
    // What was sent is what was read: check the file did not change since.
    let now =
        summarize_file(&local).map_err(|e| format!("cannot read {}: {e}", local.display()))?;
    if now != sent {
        return Err(format!("upload: {} changed while it was sent", local.display()).into());
    }
    compare("upload", ended, now)
}

/// `files download`.
async fn download(uri: SturdyUri, name: String, local: PathBuf) -> Result<(), BoxError> {
    check_name(&name)?;
    let service = import_files(&uri).await?;
    let bar = progress(None);
    let sink = FileSink::with_progress(
        &local,
        Box::new({
            let bar = bar.clone();
            move |n| bar.inc(n as u64)
        }),
    )?;
    // The size for the bar's ETA comes from `stat`, sent alongside.
    let mut stat = service.stat_request();
    stat.get().set_name(&name[..]);
    let stat = stat.send().promise;
    let mut request = service.download_request();
    request.get().set_name(&name[..]);
    request.get().set_sink(host_sink(sink));
    let downloaded = request.send().promise;
    futures::pin_mut!(downloaded);
    let response = match futures::future::select(stat, downloaded).await {
        futures::future::Either::Left((stat, downloaded)) => {
            if let Ok(stat) = stat {
                bar.set_length(stat.get()?.get_size());
            }
            downloaded.await?
        }
        futures::future::Either::Right((downloaded, _)) => downloaded?,
    };
    bar.finish_and_clear();
    let reported = response.get()?;
    let reported = Summary::read(reported.get_size(), reported.get_sha256()?)?;
    let stored =
        summarize_file(&local).map_err(|e| format!("cannot read {}: {e}", local.display()))?;
    compare("download", reported, stored)
}

/// `files stat`.
async fn stat(uri: SturdyUri, name: String) -> Result<(), BoxError> {
    check_name(&name)?;
    let service = import_files(&uri).await?;
    let mut request = service.stat_request();
    request.get().set_name(&name[..]);
    let response = request.send().promise.await?;
    let stat = response.get()?;
    let summary = Summary::read(stat.get_size(), stat.get_sha256()?)?;
    println!("{}", summary.size);
    println!("{}", summary.hex());
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init();
    let system = actix::System::new();
    let outcome = match args.command {
        Command::Serve { dir, vat } => system.block_on(serve(dir, vat)),
        Command::Upload { uri, local, name } => system.block_on(upload(uri, local, name)),
        Command::Download { uri, name, local } => system.block_on(download(uri, name, local)),
        Command::Stat { uri, name } => system.block_on(stat(uri, name)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("files: {e}");
            ExitCode::FAILURE
        }
    }
}
