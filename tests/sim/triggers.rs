//! The triggers a recorded regression can require of its replay, counted
//! from the messages its vats wrote and delivered (a [`Log`]): if the
//! runtime changes so that a regression no longer reaches the situation
//! that once went wrong, its replay fails instead of passing for nothing.
//!
//! - `bootstrap`: a bootstrap request was delivered;
//! - `pipelined-call`: a call addressed to a promised answer was delivered;
//! - `tail-call`: a call with `sendResultsTo.yourself` was delivered;
//! - `take-from`: a `return ... takeFromOtherQuestion` was delivered;
//! - `sent-elsewhere`: a `return ... resultsSentElsewhere` was delivered;
//! - `exception`: a return carrying an exception was delivered;
//! - `resolve`: a `resolve` to a capability was delivered;
//! - `resolve-exception`: a `resolve` to an exception was delivered;
//! - `embargo`: a `disembargo senderLoopback` was delivered (an embargo
//!   started, its marker on the way);
//! - `disembargo-reflected`: a `disembargo receiverLoopback` was delivered
//!   (the marker came back; the embargo lifts);
//! - `early-finish`: a vat wrote `finish` for a question before that
//!   question's return had been delivered to it;
//! - `receiver-hosted`, `receiver-answer`, `sender-promise`: a delivered
//!   call or return named a capability that way;
//! - `three-vats`: messages were delivered on two different connections;
//! - `pipelined-ref`: a vat took a reference pipelined on a call's results
//!   (a `Pipeline` step that took effect; local calls count too);
//! - `tail-answer`: an object answered a call with a tail call (a
//!   `TailCall` step that took effect; local calls count too);
//! - `cancel`: a caller gave up on a call;
//! - `disconnect`: a connection was ended by a `Disconnect` step.
//!
//! In a header, `embargo x2` asks for at least two.

use std::collections::{BTreeMap, HashSet};

use super::model::Counts;
use super::wire::Logged;

/// Every trigger name, in the order of the module docs.
pub const NAMES: &[&str] = &[
    "bootstrap",
    "pipelined-call",
    "tail-call",
    "take-from",
    "sent-elsewhere",
    "exception",
    "resolve",
    "resolve-exception",
    "embargo",
    "disembargo-reflected",
    "early-finish",
    "receiver-hosted",
    "receiver-answer",
    "sender-promise",
    "three-vats",
    "pipelined-ref",
    "tail-answer",
    "cancel",
    "disconnect",
];

/// A trigger of a header, `name` or `name xN` (at least N times).
pub fn known(trigger: &str) -> bool {
    parse(trigger).is_some()
}

fn parse(trigger: &str) -> Option<(&str, usize)> {
    let (name, times) = match trigger.split_once(" x") {
        Some((n, t)) => (n.trim(), t.trim().parse().ok()?),
        None => (trigger, 1),
    };
    NAMES.contains(&name).then_some((name, times))
}

/// The triggers a delivered frame shows (by its description).
fn of_delivered(frame: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut word = |cond: bool, name: &'static str| {
        if cond {
            out.push(name);
        }
    };
    let is_call = frame.starts_with("call ");
    let is_return = frame.starts_with("return ");
    word(frame.starts_with("bootstrap "), "bootstrap");
    word(is_call && frame.contains(" -> answer "), "pipelined-call");
    word(is_call && frame.ends_with(" to yourself"), "tail-call");
    word(is_return && frame.contains(" takeFrom "), "take-from");
    word(
        is_return && frame.ends_with(" sentElsewhere"),
        "sent-elsewhere",
    );
    word(is_return && frame.ends_with(" exception"), "exception");
    let resolve = frame.starts_with("resolve ");
    word(resolve && !frame.ends_with("-> exception"), "resolve");
    word(
        resolve && frame.ends_with("-> exception"),
        "resolve-exception",
    );
    word(frame.starts_with("disembargo senderLoopback"), "embargo");
    word(
        frame.starts_with("disembargo receiverLoopback"),
        "disembargo-reflected",
    );
    let names = is_call || is_return || resolve;
    word(names && frame.contains("receiverHosted"), "receiver-hosted");
    word(names && frame.contains("receiverAnswer"), "receiver-answer");
    word(names && frame.contains("senderPromise"), "sender-promise");
    out
}

/// `"0>1 "` as (writer, reader).
fn ends(wire: &str) -> (String, String) {
    let (a, b) = wire.trim().split_once('>').unwrap_or(("?", "?"));
    (a.to_string(), b.to_string())
}

/// The number after `prefix` at the start of `frame` (`"finish q3"`, `"finish q"`).
fn id_after(frame: &str, prefix: &str) -> Option<String> {
    let rest = frame.strip_prefix(prefix)?;
    Some(rest.split_whitespace().next().unwrap_or("").to_string())
}

/// How often each trigger happened in a run: its messages (`log`) and the
/// driver's counts.
pub fn count(log: &[Logged], run: &Counts) -> BTreeMap<&'static str, usize> {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (name, n) in [
        ("pipelined-ref", run.pipelined_refs),
        ("tail-answer", run.tail_calls),
        ("cancel", run.calls_cancelled),
        ("disconnect", run.disconnects),
    ] {
        if n > 0 {
            counts.insert(name, n as usize);
        }
    }
    // Questions written (asker, answerer, id) whose return the asker has
    // not been delivered yet.
    let mut open: HashSet<(String, String, String)> = HashSet::new();
    let mut connections: HashSet<(String, String)> = HashSet::new();
    for l in log {
        let (from, to) = ends(&l.wire);
        if l.delivered {
            for t in of_delivered(&l.frame) {
                *counts.entry(t).or_default() += 1;
            }
            connections.insert((from.clone().min(to.clone()), from.clone().max(to.clone())));
            if let Some(a) = id_after(&l.frame, "return a") {
                open.remove(&(to, from, a));
            }
            continue;
        }
        let asked = id_after(&l.frame, "call q").or_else(|| id_after(&l.frame, "bootstrap q"));
        if let Some(q) = asked {
            open.insert((from, to, q));
        } else if let Some(q) = id_after(&l.frame, "finish q") {
            if open.remove(&(from, to, q)) {
                *counts.entry("early-finish").or_default() += 1;
            }
        }
    }
    if connections.len() > 1 {
        counts.insert("three-vats", connections.len());
    }
    counts
}

/// The triggers of `expect` that `counts` lacks.
pub fn missing(expect: &[String], counts: &BTreeMap<&'static str, usize>) -> Vec<String> {
    expect
        .iter()
        .filter(|t| {
            let (name, times) = parse(t).unwrap_or((t.as_str(), 1));
            counts.get(name).copied().unwrap_or(0) < times
        })
        .cloned()
        .collect()
}

/// `counts` in one line: `embargo 2, resolve 1`.
pub fn show(counts: &BTreeMap<&'static str, usize>) -> String {
    let list: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    list.join(", ")
}
