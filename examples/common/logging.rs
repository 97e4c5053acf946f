//! How the examples show what the runtime reports.
//!
//! capnp-actix reports through the `tracing` facade: where each vat
//! listens (info), refused connections, failed handshakes and connects
//! (warnings), and, at debug level, every connection's end and a span per
//! call. Nothing is printed until a program installs a subscriber; every
//! example installs this one, which writes to standard error and is
//! filtered by `RUST_LOG` (default `info`): `RUST_LOG=warn` for warnings
//! only, `RUST_LOG=capnp_actix=debug` for the runtime's debug output,
//! `RUST_LOG=off` for nothing.

use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::fmt::format::FmtSpan;

/// Installs the examples' subscriber (once per process, at the start of
/// `main`).
pub fn init() {
    // An unparsable RUST_LOG is reported and the rest of it used, rather
    // than silently falling back to the default.
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // The runtime runs each call in a `call` span (debug level): print
        // spans as they close, with their duration.
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
