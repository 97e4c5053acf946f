//! What the runtime reports through the [`metrics`](https://docs.rs/metrics) facade: the
//! application installs the recorder (Prometheus, StatsD, ...); without
//! one, each report is a check of one atomic.
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `capnp_connections_opened_total` | counter | connections started |
//! | `capnp_connections_open` | gauge | connections running now |
//! | `capnp_connections_closed_total{reason}` | counter | connections ended, by the kind of their end (`disconnected`, `overloaded`, `failed`, `unimplemented`) |
//! | `capnp_calls_received_total` | counter | calls the peers made on us |
//! | `capnp_calls_answered_total{outcome}` | counter | returns we sent: `results`, or the exception's kind |
//! | `capnp_call_duration_seconds` | histogram | from a peer's call arriving to its return going out |
//! | `capnp_calls_sent_total` | counter | calls we made on the peers' capabilities |
//! | `capnp_received_bytes_total` | counter | bytes read from the sockets |
//! | `capnp_sent_bytes_total` | counter | bytes handed to the socket |
//! | `capnp_table_entries{table}` | gauge | entries in the connections' protocol tables, summed: `questions`, `answers`, `exports`, `imports`, `embargoes` |
//! | `capnp_heartbeat_probes_total` | counter | heartbeat probes sent to silent peers (see `ConnectionOptions::heartbeat`) |
//! | `capnp_vat_held_bytes` | gauge | what a vat holds for its peers (calls not answered, results not finished; see `budget.rs`) |

use capnp::ErrorKind;
use capnp_actix_proto::captp::TableSizes;

/// The label of an error's kind.
pub(crate) fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Failed => "failed",
        ErrorKind::Overloaded => "overloaded",
        ErrorKind::Disconnected => "disconnected",
        ErrorKind::Unimplemented => "unimplemented",
        _ => "other",
    }
}

pub(crate) fn connection_opened() {
    metrics::counter!("capnp_connections_opened_total").increment(1);
    metrics::gauge!("capnp_connections_open").increment(1.0);
}

pub(crate) fn connection_closed(reason: &capnp::Error) {
    metrics::gauge!("capnp_connections_open").decrement(1.0);
    metrics::counter!("capnp_connections_closed_total", "reason" => kind_label(reason.kind))
        .increment(1);
}

pub(crate) fn call_received() {
    metrics::counter!("capnp_calls_received_total").increment(1);
}

/// A return went out, `elapsed` after its call arrived.
pub(crate) fn call_answered(outcome: Result<(), ErrorKind>, elapsed: std::time::Duration) {
    let label = match outcome {
        Ok(()) => "results",
        Err(kind) => kind_label(kind),
    };
    metrics::counter!("capnp_calls_answered_total", "outcome" => label).increment(1);
    metrics::histogram!("capnp_call_duration_seconds").record(elapsed.as_secs_f64());
}

pub(crate) fn heartbeat_probe() {
    metrics::counter!("capnp_heartbeat_probes_total").increment(1);
}

pub(crate) fn call_sent() {
    metrics::counter!("capnp_calls_sent_total").increment(1);
}

pub(crate) fn bytes_received(bytes: usize) {
    metrics::counter!("capnp_received_bytes_total").increment(bytes as u64);
}

pub(crate) fn bytes_sent(bytes: usize) {
    metrics::counter!("capnp_sent_bytes_total").increment(bytes as u64);
}

pub(crate) fn vat_held(bytes: usize) {
    metrics::gauge!("capnp_vat_held_bytes").set(bytes as f64);
}

/// The protocol tables of one connection went from `old` to `new` sizes.
pub(crate) fn tables(old: &TableSizes, new: &TableSizes) {
    let rows = [
        ("questions", old.questions, new.questions),
        ("answers", old.answers, new.answers),
        ("exports", old.exports, new.exports),
        ("imports", old.imports, new.imports),
        ("embargoes", old.embargoes, new.embargoes),
    ];
    for (table, before, now) in rows {
        if before != now {
            metrics::gauge!("capnp_table_entries", "table" => table)
                .increment(now as f64 - before as f64);
        }
    }
}
