//! The RPC simulation, bounded and seeded: two or three vats in one actix
//! system, joined by in-memory wires, doing pseudo-random steps (calls
//! passing capabilities, answers, promise resolutions, cancellations,
//! releases, bootstraps, disconnects, one message delivered at a time)
//! against a shadow model of who refers to what (see `tests/sim/`).
//! Tail calls (with `sendResultsTo.yourself` on every connection) and
//! pipelining on call results are among the steps (`SIM_NEW_OPS=0`,
//! `=pipeline` or `=tail` picks fewer, to compare).
//!
//! The oracle (`tests/sim/driver.rs` and `model.rs`): every call reaches
//! the object its reference means, in the order sent on that reference,
//! and fails only if it should; no object is released while a vat holds a
//! reference to it; no connection ends unless told to; tables stay within
//! bounds and mirror each other after a flush; at teardown every call has
//! completed, every table is empty and nothing is left alive. Each run is
//! watched for hangs (a deadlock in the runtime).
//!
//! Each CI run does 600,000 steps (1,500 seeds of 400 steps, in two halves
//! on two threads; about 35 s in debug on two cores). A failure prints its
//! seed and the shortest list of steps found that still fails the same
//! way, as Rust to paste into a regression test below. Seeds that hit a
//! bug listed in `sim::KNOWN_BUGS` are counted and skipped. To replay one
//! seed: `SIM_SEED=<seed> cargo test --test simulation one_seed`; to look
//! further, `SIM_EXPLORE=<seeds> SIM_SEED_BASE=<first> ... explore`; to
//! watch a run, `SIM_TRACE=1`. The same driver runs under cargo-fuzz
//! (`fuzz/`).

mod sim;

use std::time::{Duration, Instant};

use sim::driver::{self, Config, Failure, Outcome};
use sim::ops::{self, AsRust, Op, Scenario};

/// How long one scenario may take before it counts as hung (a deadlock
/// in the runtime blocks its thread for good; the watchdog reports it and
/// leaves that thread behind). `SIM_HANG_SECS` changes it (shorter makes
/// shrinking a hang faster).
fn hang_limit() -> Duration {
    let secs = std::env::var("SIM_HANG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// Runs a scenario on its own thread, turning a panic of the driver into
/// a failure, and a scenario that does not finish in time into one.
fn run(scenario: &Scenario, cfg: &Config) -> Result<Outcome, Failure> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (s, c) = (scenario.clone(), cfg.clone());
    std::thread::spawn(move || {
        sim::install_panic_hook();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver::run(&s, &c)));
        let _ = tx.send(r.map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "?".into())
        }));
    });
    let limit = hang_limit();
    match rx.recv_timeout(limit) {
        Ok(Ok(r)) => r,
        Ok(Err(p)) => Err(Failure {
            step: None,
            message: format!("the driver panicked: {p}"),
        }),
        Err(_) => Err(Failure {
            step: None,
            message: format!("hang: the run did not finish within {limit:?} (a deadlock?)"),
        }),
    }
}

/// What kind of failure this is: its first line without numbers, so that
/// shrinking keeps to the same bug rather than wandering to another.
fn signature(f: &Failure) -> String {
    let first = f.message.lines().next().unwrap_or("");
    first.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// Removes steps while the scenario still fails the same way (chunks,
/// then single steps, then capabilities passed), within `budget`.
fn shrink(failing: &Scenario, cfg: &Config, budget: Duration) -> Scenario {
    let deadline = Instant::now() + budget;
    let Err(first) = run(failing, cfg) else {
        return failing.clone();
    };
    let wanted = signature(&first);
    let fails = |s: &Scenario| run(s, cfg).is_err_and(|f| signature(&f) == wanted);
    let mut cur = failing.clone();
    // Steps after the one that failed never matter.
    if let Some(s) = first.step {
        let mut cut = cur.clone();
        cut.ops.truncate(s + 1);
        if fails(&cut) {
            cur = cut;
        }
    }
    let mut chunk = cur.ops.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        let mut removed = false;
        while i < cur.ops.len() && Instant::now() < deadline {
            let mut cand = cur.clone();
            cand.ops.drain(i..(i + chunk).min(cand.ops.len()));
            if fails(&cand) {
                cur = cand;
                removed = true;
            } else {
                i += chunk;
            }
        }
        if Instant::now() >= deadline {
            return cur;
        }
        if !removed {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    // Fewer capabilities passed or returned, and two vats if that will do.
    for i in 0..cur.ops.len() {
        loop {
            let mut cand = cur.clone();
            let shorter = match &mut cand.ops[i] {
                Op::Call { caps, .. } | Op::Answer { caps, .. } => caps.pop().is_some(),
                _ => false,
            };
            if !shorter || Instant::now() >= deadline || !fails(&cand) {
                break;
            }
            cur = cand;
        }
    }
    if cur.vats > 2 {
        let cand = Scenario {
            vats: 2,
            ops: cur.ops.clone(),
        };
        if fails(&cand) {
            cur = cand;
        }
    }
    cur
}

/// Runs `scenario`; on failure, shrinks it and panics with the seed and
/// the shrunk steps.
fn check(seed: Option<u64>, scenario: &Scenario, cfg: &Config) -> Outcome {
    match run(scenario, cfg) {
        Ok(o) => o,
        Err(first) => {
            let budget = std::env::var("SIM_SHRINK_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(90);
            let small = shrink(scenario, cfg, Duration::from_secs(budget));
            let again = run(&small, cfg).err();
            panic!(
                "simulation failed (seed {seed:?}, {} vats, {} steps): {first}\n\
                 shrunk to {} steps, which fail with: {}\n{}",
                scenario.vat_count(),
                scenario.ops.len(),
                small.ops.len(),
                again.map_or("(no longer fails)".to_string(), |f| f.to_string()),
                AsRust(&small)
            );
        }
    }
}

/// Steps per seed: long enough for promises to be resolved, passed on and
/// called through; short enough that a failure shrinks quickly.
const STEPS_PER_SEED: usize = 400;

/// Runs seeds `first, first + stride, ...` until `steps` steps have run
/// in seeds that passed.
fn run_seeds(first: u64, stride: u64, steps: usize) {
    let cfg = Config::default();
    let started = Instant::now();
    let mut done = 0;
    let mut seed = first;
    let mut seeds = 0;
    let mut known: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    let mut totals = sim::model::Counts::default();
    while done < steps {
        let scenario = ops::generate(seed, STEPS_PER_SEED);
        match run(&scenario, &cfg) {
            Ok(o) => {
                totals.add(&o.counts);
                done += scenario.ops.len();
                seeds += 1;
            }
            Err(f) => match sim::known_bug(&f.message) {
                Some(test) => known.entry(test).or_default().push(seed),
                None => {
                    check(Some(seed), &scenario, &cfg);
                }
            },
        }
        seed += stride;
    }
    eprintln!(
        "{seeds} seeds passed, {done} steps in {:.1?}: {totals}",
        started.elapsed()
    );
    for (test, seeds) in known {
        eprintln!("known bug {test}: {} seeds, {seeds:?}", seeds.len());
    }
}

/// The seeds of this CI run: fixed, so that a failure is reproducible;
/// `SIM_SEED_BASE` moves the window to explore further.
fn seed_base() -> u64 {
    std::env::var("SIM_SEED_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// Two halves, so that the two run on two cores.
#[test]
fn simulation_even_seeds() {
    run_seeds(seed_base(), 2, 300_000);
}

#[test]
fn simulation_odd_seeds() {
    run_seeds(seed_base() + 1, 2, 300_000);
}

/// Replays one seed: `SIM_SEED=<seed> [SIM_STEPS=<n>]`.
#[test]
fn one_seed() {
    let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) else {
        return;
    };
    let steps = std::env::var("SIM_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(STEPS_PER_SEED);
    let o = check(Some(seed), &ops::generate(seed, steps), &Config::default());
    eprintln!("seed {seed}: {}", o.counts);
}

#[test]
fn a_run_is_reproducible_from_its_steps() {
    let scenario = ops::generate(7, 300);
    let cfg = Config::default();
    let a = run(&scenario, &cfg).unwrap().counts;
    let b = run(&scenario, &cfg).unwrap().counts;
    assert_eq!(format!("{a}"), format!("{b}"));
    assert!(a.calls_arrived > 0, "{a}");
}

#[test]
fn the_oracle_sees_calls_arrive_and_return() {
    // Vat 0 makes an object; vat 1 bootstraps it, calls it passing a
    // promise of its own, and gets the promise back in the answer.
    let s = Scenario {
        vats: 2,
        ops: vec![
            Op::NewObject { vat: 0 },
            Op::NewPromise { vat: 1 },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 0,
            },
            Op::Call {
                vat: 1,
                target: 1,
                caps: vec![0],
            },
            Op::Flush,
            Op::Answer {
                call: 0,
                caps: vec![1],
            },
            Op::Flush,
            Op::NewObject { vat: 1 },
            Op::Resolve {
                promise: 0,
                target: 3,
            },
            Op::Call {
                vat: 1,
                target: 2,
                caps: vec![],
            },
            Op::Flush,
        ],
    };
    let o = check(None, &s, &Config::default());
    assert_eq!(o.counts.calls_sent, 2, "{}", o.counts);
    assert_eq!(o.counts.calls_arrived, 2, "{}", o.counts);
    assert_eq!(o.counts.calls_returned_ok, 2, "{}", o.counts);
}

/// Raw bytes into a connection: seeded random strings, and mutations of
/// real frames captured from the simulation. Never a panic; an abort
/// always has a reason and leaves no table behind.
#[test]
fn raw_bytes_never_panic() {
    let cfg = Config {
        capture: true,
        ..Config::default()
    };
    // Real traffic: every frame each wire carried in a short run.
    let streams: Vec<Vec<Vec<u8>>> = (0..4)
        .flat_map(|seed| {
            run(&ops::generate(100 + seed, 200), &cfg)
                .expect("capture run")
                .frames
        })
        .filter(|s| !s.is_empty())
        .collect();
    assert!(!streams.is_empty());
    let mut rng = ops::Rng::new(0x5eed);
    let mut aborted = 0;
    let cases = 4000;
    for case in 0..cases {
        let setup = rng.byte();
        let mut input = vec![setup];
        match case % 4 {
            // Random bytes.
            0 => input.extend((0..rng.below(200)).map(|_| rng.byte())),
            // A real stream, whole.
            1 => {
                let s = &streams[rng.below(streams.len() as u64) as usize];
                input.extend(s.iter().flatten());
            }
            // A real stream, a few bytes changed.
            2 => {
                let s = &streams[rng.below(streams.len() as u64) as usize];
                let mut bytes: Vec<u8> = s.iter().flatten().copied().collect();
                for _ in 0..1 + rng.below(4) {
                    if !bytes.is_empty() {
                        let at = rng.below(bytes.len() as u64) as usize;
                        bytes[at] = rng.byte();
                    }
                }
                input.extend(bytes);
            }
            // Frames of several streams spliced, some cut short.
            _ => {
                for _ in 0..1 + rng.below(6) {
                    let s = &streams[rng.below(streams.len() as u64) as usize];
                    let f = &s[rng.below(s.len() as u64) as usize];
                    let keep = if rng.below(4) == 0 {
                        rng.below(f.len() as u64 + 1) as usize
                    } else {
                        f.len()
                    };
                    input.extend(&f[..keep]);
                }
            }
        }
        let fed = std::panic::catch_unwind(|| sim::raw::feed(&input))
            .unwrap_or_else(|_| panic!("case {case} panicked on input {input:?}"));
        aborted += usize::from(fed.aborted);
    }
    assert!(aborted > 0);
}

/// Explores seeds without stopping at the first failure, printing each
/// failure's kind: `SIM_EXPLORE=<seeds> [SIM_SEED_BASE=<first>]`.
#[test]
fn explore() {
    let Some(n) = std::env::var("SIM_EXPLORE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return;
    };
    let cfg = Config::default();
    let mut kinds: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for seed in seed_base()..seed_base() + n {
        if let Err(f) = run(&ops::generate(seed, STEPS_PER_SEED), &cfg) {
            kinds.entry(signature(&f)).or_default().push(seed);
        }
    }
    for (k, seeds) in &kinds {
        eprintln!(
            "{} seeds, e.g. {:?}: {k}",
            seeds.len(),
            &seeds[..seeds.len().min(5)]
        );
    }
}

/// Writes the seed corpora of the fuzz targets (`fuzz/corpus/`):
/// `SIM_WRITE_CORPUS=1 cargo test --test simulation write_fuzz_corpus`.
/// Short scenarios (the regression tests' among them) for `multi_vat`;
/// real frames captured from short runs for `raw_bytes`.
#[test]
fn write_fuzz_corpus() {
    if std::env::var_os("SIM_WRITE_CORPUS").is_none() {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let multi = root.join("multi_vat");
    let raw = root.join("raw_bytes");
    std::fs::create_dir_all(&multi).unwrap();
    std::fs::create_dir_all(&raw).unwrap();
    // Not the deadlock: a seed input that hangs stops the fuzzer at once.
    let mut scenarios: Vec<(String, Scenario)> = regression_scenarios()
        .into_iter()
        .filter(|(n, _)| *n != "a_call_pipelined_on_a_dead_connection_does_not_deadlock")
        .map(|(n, s)| (n.to_string(), s))
        .collect();
    for seed in 0..6 {
        scenarios.push((format!("seed-{seed}"), ops::generate(seed, 60)));
    }
    for (name, s) in &scenarios {
        assert_eq!(&ops::from_bytes(&ops::to_bytes(s)), s);
        std::fs::write(multi.join(name), ops::to_bytes(s)).unwrap();
    }
    let cfg = Config {
        capture: true,
        ..Config::default()
    };
    for seed in 0..3 {
        let frames = run(&ops::generate(seed, 120), &cfg).unwrap().frames;
        for (w, stream) in frames.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            // A whole stream at once, and the first frames read in
            // 7-byte pieces after asking for a bootstrap and calling.
            let bytes: Vec<u8> = stream.iter().take(24).flatten().copied().collect();
            let mut whole = vec![0u8];
            whole.extend(&bytes);
            std::fs::write(raw.join(format!("stream-{seed}-{w}")), whole).unwrap();
            let mut pieces = vec![0x7c_u8];
            pieces.extend(stream.iter().take(6).flatten());
            std::fs::write(raw.join(format!("pieces-{seed}-{w}")), pieces).unwrap();
        }
    }
}

// ---- regression tests: bugs the simulation found ------------------------

/// Every regression scenario, by test name (also seeds of the fuzz corpus).
fn regression_scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "no_disembargo_on_a_question_finished_before_its_return",
            no_disembargo_on_a_question_finished_before_its_return_steps(),
        ),
        (
            "calls_pipelined_on_a_forwarded_bootstrap_keep_their_order",
            calls_pipelined_on_a_forwarded_bootstrap_keep_their_order_steps(),
        ),
        (
            "a_broken_capability_sent_back_to_its_sender_stays_readable",
            a_broken_capability_sent_back_to_its_sender_stays_readable_steps(),
        ),
        (
            "an_embargo_id_is_not_reused_while_its_embargo_is_live",
            an_embargo_id_is_not_reused_while_its_embargo_is_live_steps(),
        ),
        (
            "an_exported_promise_settling_on_an_embargoed_import_is_not_broken",
            an_exported_promise_settling_on_an_embargoed_import_is_not_broken_steps(),
        ),
        (
            "no_embargo_is_left_once_everything_is_delivered",
            no_embargo_is_left_once_everything_is_delivered_steps(),
        ),
        (
            "a_disembargo_is_sent_only_where_it_can_be_reflected",
            a_disembargo_is_sent_only_where_it_can_be_reflected_steps(),
        ),
        (
            "a_call_pipelined_on_a_dead_connection_does_not_deadlock",
            a_call_pipelined_on_a_dead_connection_does_not_deadlock_steps(),
        ),
        (
            "calls_sent_before_and_after_a_resolve_keep_their_order",
            calls_sent_before_and_after_a_resolve_keep_their_order_steps(),
        ),
        (
            "a_disembargo_does_not_overtake_a_call_forwarded_in_the_same_read",
            a_disembargo_does_not_overtake_a_call_forwarded_in_the_same_read_steps(),
        ),
        (
            "seed_4331_calls_on_one_reference_keep_their_order",
            seed_4331_calls_on_one_reference_keep_their_order_steps(),
        ),
    ]
}

/// Runs a regression scenario (with the hang watchdog); panics with the
/// failure.
fn regression(s: Scenario) {
    if let Err(f) = run(&s, &Config::default()) {
        panic!("{f}");
    }
}

/// A regression scenario with the new steps (`Pipeline`, `TailCall`) and
/// what they need, whatever `SIM_NEW_OPS` says.
fn regression_new_ops(s: Scenario) {
    let cfg = Config {
        new_ops: sim::ops::NewOps::ALL,
        ..Config::default()
    };
    if let Err(f) = run(&s, &cfg) {
        panic!("{f}");
    }
}

/// The peer gets a `disembargo` on a question it has already finished and
/// aborts the connection ("disembargo on unknown answer"): vat 0 pipelines
/// a call on its bootstrap question, drops the bootstrap capability (so a
/// `finish` goes out before the return), and the return names a field
/// that leads back to vat 0, which then asks for an embargo on the
/// finished question.
/// (Found by the simulation; fixed since by keeping a question wanted
/// while a call pipelined on it runs, so no early `finish` goes out.)
#[test]
fn no_disembargo_on_a_question_finished_before_its_return() {
    regression(no_disembargo_on_a_question_finished_before_its_return_steps());
}

fn no_disembargo_on_a_question_finished_before_its_return_steps() -> Scenario {
    Scenario {
        vats: 2,
        ops: vec![
            Op::NewObject { vat: 0 },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 0,
            },
            Op::Bootstrap {
                vat: 0,
                peer: 0,
                offer: 0,
            },
            Op::Call {
                vat: 0,
                target: 1,
                caps: vec![],
            },
            Op::Release { vat: 0, cap: 1 },
            Op::Flush,
        ],
    }
}

/// Two calls pipelined on one reference arrive out of order. Vat 0 asks
/// vat 1 for its bootstrap capability, which is itself vat 1's pipelined
/// bootstrap of vat 0 (not answered yet), and pipelines calls A and B on
/// it, with vat 1's bootstrap answer between them on the wire. Vat 1 gets
/// all of it in one read: A is pipelined on its own question (queued to
/// its connection actor's mailbox), the return resolves that question,
/// and B goes straight to the resolved import (also queued). When the
/// actor then handles A, the question has returned, so A is delivered to
/// the field again (`field_of(..).deliver`), which queues it once more:
/// behind B. Vat 0's object gets B, then A.
#[test]
fn calls_pipelined_on_a_forwarded_bootstrap_keep_their_order() {
    regression(calls_pipelined_on_a_forwarded_bootstrap_keep_their_order_steps());
}

fn calls_pipelined_on_a_forwarded_bootstrap_keep_their_order_steps() -> Scenario {
    Scenario {
        vats: 2,
        ops: vec![
            Op::NewObject { vat: 0 },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 0,
            },
            Op::Bootstrap {
                vat: 0,
                peer: 0,
                offer: 0,
            },
            Op::Call {
                vat: 0,
                target: 1,
                caps: vec![],
            },
            Op::Deliver { wire: 1 },
            Op::Call {
                vat: 0,
                target: 1,
                caps: vec![],
            },
            Op::Flush,
        ],
    }
}

/// Vat 1 passes a broken capability to vat 0's object; the call arrives
/// before the `resolve` that breaks the export, and the object returns
/// the capability at once, so the return names it as `receiverHosted`.
/// Vat 1's export entry for a broken capability holds nothing, and its
/// core turns the descriptor into "no capability": the results cannot be
/// read and the call fails with "Message contained invalid capability
/// pointer" (a call passing it back fails the same way, before its
/// object sees it). It should read as the broken capability.
#[test]
fn a_broken_capability_sent_back_to_its_sender_stays_readable() {
    regression(a_broken_capability_sent_back_to_its_sender_stays_readable_steps());
}

fn a_broken_capability_sent_back_to_its_sender_stays_readable_steps() -> Scenario {
    Scenario {
        vats: 2,
        ops: vec![
            Op::NewObject { vat: 0 },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 0,
            },
            Op::Flush,
            Op::NewBroken { vat: 1 },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![1],
            },
            Op::Deliver { wire: 0 },
            Op::Answer {
                call: 0,
                caps: vec![1],
            },
            Op::Flush,
        ],
    }
}

/// A call is lost ("the capability's actor stopped before answering the
/// call") on a promise that is never resolved. The connection's core frees
/// an embargo id as soon as it parses the peer's reflected disembargo, but
/// the actor learns it from an `EmbargoLifted` event queued behind the
/// other events of the same read. If one of those is a return that needs
/// a new embargo, the core hands out the freed id again and
/// `embargo_local_fields` inserts the new embargo over the old one, whose
/// held calls are dropped; the old reflection then lifts the new embargo
/// early. (Root cause found by a backtrace of the dropped `Completer`:
/// `Connection::embargo_local_fields`, `self.embargoes.insert`.)
#[test]
fn an_embargo_id_is_not_reused_while_its_embargo_is_live() {
    regression(an_embargo_id_is_not_reused_while_its_embargo_is_live_steps());
}

fn an_embargo_id_is_not_reused_while_its_embargo_is_live_steps() -> Scenario {
    Scenario {
        vats: 2,
        ops: vec![
            Op::NewPromise { vat: 168 },
            Op::Bootstrap {
                vat: 209,
                peer: 162,
                offer: 235,
            },
            Op::Bootstrap {
                vat: 46,
                peer: 242,
                offer: 32,
            },
            Op::Deliver { wire: 150 },
            Op::Bootstrap {
                vat: 196,
                peer: 17,
                offer: 35,
            },
            Op::NewPromise { vat: 232 },
            Op::Bootstrap {
                vat: 204,
                peer: 21,
                offer: 53,
            },
            Op::Deliver { wire: 10 },
            Op::Call {
                vat: 28,
                target: 49,
                caps: vec![],
            },
            Op::Call {
                vat: 18,
                target: 182,
                caps: vec![],
            },
            Op::Deliver { wire: 148 },
            Op::Deliver { wire: 109 },
            Op::Deliver { wire: 106 },
            Op::Deliver { wire: 172 },
            Op::Call {
                vat: 108,
                target: 208,
                caps: vec![],
            },
            Op::Deliver { wire: 250 },
            Op::Deliver { wire: 189 },
            Op::NewPromise { vat: 92 },
            Op::Release { vat: 240, cap: 5 },
            Op::Deliver { wire: 224 },
            Op::Resolve {
                promise: 176,
                target: 85,
            },
            Op::Deliver { wire: 28 },
            Op::Resolve {
                promise: 23,
                target: 147,
            },
            Op::Deliver { wire: 78 },
            Op::Flush,
        ],
    }
}

/// A promise that vat 0 exported (as `senderPromise`) settles on an import
/// whose peer has just resolved it back to one of vat 0's own objects, so
/// that the import is under an embargo (resolved to a local promise that
/// waits for the disembargo). `settled_weak` takes an import as settled and
/// returns the end of its chain, which is that still unresolved local
/// promise; the `ExportedPromise` handler then sends `resolve` with the
/// error "internal error in capnp-actix: a settled promise is still a
/// promise", and calls through the peer's import fail with it. (Cause
/// inferred from the code, not traced.)
#[test]
fn an_exported_promise_settling_on_an_embargoed_import_is_not_broken() {
    regression(an_exported_promise_settling_on_an_embargoed_import_is_not_broken_steps());
}

fn an_exported_promise_settling_on_an_embargoed_import_is_not_broken_steps() -> Scenario {
    Scenario {
        vats: 3,
        ops: vec![
            Op::NewObject { vat: 112 },
            Op::NewObject { vat: 193 },
            Op::NewPromise { vat: 139 },
            Op::Call {
                vat: 193,
                target: 21,
                caps: vec![],
            },
            Op::Answer {
                call: 208,
                caps: vec![189],
            },
            Op::Bootstrap {
                vat: 89,
                peer: 123,
                offer: 73,
            },
            Op::Deliver { wire: 230 },
            Op::NewPromise { vat: 73 },
            Op::NewPromise { vat: 197 },
            Op::Deliver { wire: 105 },
            Op::Call {
                vat: 233,
                target: 250,
                caps: vec![31],
            },
            Op::Resolve {
                promise: 36,
                target: 241,
            },
            Op::Deliver { wire: 25 },
            Op::Deliver { wire: 176 },
            Op::Release { vat: 245, cap: 237 },
            Op::Answer {
                call: 82,
                caps: vec![204, 36, 116],
            },
            Op::Call {
                vat: 175,
                target: 19,
                caps: vec![229],
            },
            Op::Answer {
                call: 9,
                caps: vec![67],
            },
            Op::Deliver { wire: 8 },
            Op::Release { vat: 248, cap: 236 },
            Op::NewObject { vat: 113 },
            Op::Call {
                vat: 149,
                target: 202,
                caps: vec![],
            },
            Op::Release { vat: 88, cap: 231 },
            Op::Deliver { wire: 118 },
            Op::NewObject { vat: 69 },
            Op::Resolve {
                promise: 251,
                target: 121,
            },
            Op::NewPromise { vat: 16 },
            Op::Release { vat: 106, cap: 97 },
            Op::Deliver { wire: 212 },
            Op::Deliver { wire: 56 },
            Op::Release { vat: 193, cap: 64 },
            Op::Answer {
                call: 93,
                caps: vec![172, 29],
            },
            Op::Call {
                vat: 172,
                target: 121,
                caps: vec![164, 47, 174],
            },
            Op::Release { vat: 134, cap: 210 },
            Op::Deliver { wire: 180 },
            Op::Deliver { wire: 230 },
            Op::Deliver { wire: 68 },
            Op::Resolve {
                promise: 167,
                target: 66,
            },
            Op::Deliver { wire: 254 },
            Op::Bootstrap {
                vat: 2,
                peer: 22,
                offer: 61,
            },
            Op::Call {
                vat: 137,
                target: 142,
                caps: vec![],
            },
        ],
    }
}

/// After every message has been delivered and the runtime is quiet, vat 0
/// still counts one embargo (`TableSizes::embargoes == 1`) that nothing
/// will lift: calls held by it never go. Seen at step 80; the cause is not
/// analysed yet (no lost call and no dropped resolver precede it).
#[test]
fn no_embargo_is_left_once_everything_is_delivered() {
    regression(no_embargo_is_left_once_everything_is_delivered_steps());
}

fn no_embargo_is_left_once_everything_is_delivered_steps() -> Scenario {
    Scenario {
        vats: 3,
        ops: vec![
            Op::NewObject { vat: 37 },
            Op::NewObject { vat: 237 },
            Op::NewPromise { vat: 0 },
            Op::Break { promise: 243 },
            Op::Call {
                vat: 90,
                target: 30,
                caps: vec![131, 64],
            },
            Op::Call {
                vat: 7,
                target: 149,
                caps: vec![],
            },
            Op::Answer {
                call: 255,
                caps: vec![18, 212, 112],
            },
            Op::Answer {
                call: 37,
                caps: vec![79, 99],
            },
            Op::Release { vat: 88, cap: 215 },
            Op::Release { vat: 33, cap: 222 },
            Op::Release { vat: 238, cap: 24 },
            Op::Release { vat: 16, cap: 167 },
            Op::NewBroken { vat: 162 },
            Op::Release { vat: 162, cap: 125 },
            Op::Bootstrap {
                vat: 33,
                peer: 114,
                offer: 126,
            },
            Op::NewObject { vat: 13 },
            Op::NewPromise { vat: 80 },
            Op::NewPromise { vat: 250 },
            Op::Call {
                vat: 37,
                target: 105,
                caps: vec![110],
            },
            Op::Release { vat: 55, cap: 40 },
            Op::NewObject { vat: 112 },
            Op::NewPromise { vat: 207 },
            Op::NewObject { vat: 207 },
            Op::NewPromise { vat: 72 },
            Op::Answer {
                call: 116,
                caps: vec![251],
            },
            Op::Release { vat: 22, cap: 210 },
            Op::Call {
                vat: 112,
                target: 79,
                caps: vec![252],
            },
            Op::NewPromise { vat: 118 },
            Op::Answer {
                call: 90,
                caps: vec![24],
            },
            Op::Break { promise: 195 },
            Op::Deliver { wire: 58 },
            Op::Release { vat: 141, cap: 180 },
            Op::NewObject { vat: 4 },
            Op::NewObject { vat: 213 },
            Op::NewPromise { vat: 60 },
            Op::NewPromise { vat: 92 },
            Op::Call {
                vat: 241,
                target: 109,
                caps: vec![228],
            },
            Op::Deliver { wire: 132 },
            Op::NewObject { vat: 164 },
            Op::NewPromise { vat: 12 },
            Op::Release { vat: 117, cap: 90 },
            Op::Resolve {
                promise: 159,
                target: 233,
            },
            Op::NewPromise { vat: 65 },
            Op::Resolve {
                promise: 103,
                target: 193,
            },
            Op::NewObject { vat: 243 },
            Op::Release { vat: 46, cap: 166 },
            Op::NewPromise { vat: 126 },
            Op::Resolve {
                promise: 242,
                target: 88,
            },
            Op::Resolve {
                promise: 151,
                target: 219,
            },
            Op::Resolve {
                promise: 53,
                target: 129,
            },
            Op::NewPromise { vat: 171 },
            Op::Deliver { wire: 238 },
            Op::NewBroken { vat: 252 },
            Op::Bootstrap {
                vat: 81,
                peer: 231,
                offer: 247,
            },
            Op::Deliver { wire: 89 },
            Op::NewObject { vat: 138 },
            Op::Deliver { wire: 119 },
            Op::Call {
                vat: 141,
                target: 200,
                caps: vec![128],
            },
            Op::Bootstrap {
                vat: 13,
                peer: 21,
                offer: 140,
            },
            Op::Deliver { wire: 28 },
            Op::Deliver { wire: 131 },
            Op::Deliver { wire: 226 },
            Op::Deliver { wire: 61 },
            Op::Answer {
                call: 167,
                caps: vec![123],
            },
            Op::Deliver { wire: 188 },
            Op::Deliver { wire: 135 },
            Op::Release { vat: 154, cap: 129 },
            Op::Release { vat: 66, cap: 68 },
            Op::Deliver { wire: 239 },
            Op::Release { vat: 163, cap: 82 },
            Op::Resolve {
                promise: 182,
                target: 54,
            },
            Op::Bootstrap {
                vat: 21,
                peer: 129,
                offer: 224,
            },
            Op::Bootstrap {
                vat: 61,
                peer: 73,
                offer: 34,
            },
            Op::Deliver { wire: 37 },
            Op::Bootstrap {
                vat: 165,
                peer: 134,
                offer: 1,
            },
            Op::NewPromise { vat: 153 },
            Op::Deliver { wire: 205 },
            Op::Resolve {
                promise: 210,
                target: 203,
            },
            Op::Deliver { wire: 61 },
            Op::Resolve {
                promise: 162,
                target: 250,
            },
            Op::Flush,
        ],
    }
}

/// A vat gets a `disembargo` (senderLoopback) whose target, on its side,
/// no longer leads back to the vat that sent it (it did when the peer
/// sent it: a question has returned, or a promise resolved, since). It
/// used to abort the connection ("protocol error: disembargo target does
/// not point back to the sender"); such a disembargo is now reflected at
/// once, after the calls already handed on. Two vats, local promises
/// resolved to objects and passed back and forth, bootstraps offering
/// them, messages delivered one at a time; seed 1690 shrunk.
#[test]
fn a_disembargo_is_sent_only_where_it_can_be_reflected() {
    regression(a_disembargo_is_sent_only_where_it_can_be_reflected_steps());
}

fn a_disembargo_is_sent_only_where_it_can_be_reflected_steps() -> Scenario {
    Scenario {
        vats: 2,
        ops: vec![
            Op::NewPromise { vat: 221 },
            Op::NewPromise { vat: 76 },
            Op::NewPromise { vat: 65 },
            Op::NewObject { vat: 92 },
            Op::NewObject { vat: 57 },
            Op::Resolve {
                promise: 252,
                target: 193,
            },
            Op::NewObject { vat: 67 },
            Op::Call {
                vat: 93,
                target: 195,
                caps: vec![],
            },
            Op::Call {
                vat: 160,
                target: 207,
                caps: vec![231],
            },
            Op::Answer {
                call: 120,
                caps: vec![],
            },
            Op::Call {
                vat: 182,
                target: 73,
                caps: vec![171],
            },
            Op::Release { vat: 177, cap: 165 },
            Op::Answer {
                call: 198,
                caps: vec![198],
            },
            Op::Bootstrap {
                vat: 84,
                peer: 65,
                offer: 250,
            },
            Op::Release { vat: 230, cap: 146 },
            Op::Call {
                vat: 222,
                target: 29,
                caps: vec![224, 67],
            },
            Op::Answer {
                call: 197,
                caps: vec![197],
            },
            Op::Call {
                vat: 50,
                target: 121,
                caps: vec![118, 164, 136],
            },
            Op::NewPromise { vat: 100 },
            Op::Deliver { wire: 177 },
            Op::Deliver { wire: 118 },
            Op::Deliver { wire: 221 },
            Op::Deliver { wire: 16 },
            Op::Call {
                vat: 149,
                target: 76,
                caps: vec![199, 71, 207],
            },
            Op::Answer {
                call: 196,
                caps: vec![77],
            },
            Op::Bootstrap {
                vat: 38,
                peer: 212,
                offer: 208,
            },
            Op::Call {
                vat: 59,
                target: 191,
                caps: vec![98],
            },
            Op::Call {
                vat: 187,
                target: 235,
                caps: vec![244, 233, 197],
            },
            Op::Bootstrap {
                vat: 122,
                peer: 174,
                offer: 222,
            },
            Op::Deliver { wire: 21 },
            Op::Resolve {
                promise: 225,
                target: 173,
            },
            Op::Deliver { wire: 31 },
            Op::NewPromise { vat: 49 },
            Op::Resolve {
                promise: 123,
                target: 83,
            },
        ],
    }
}

/// The runtime deadlocks (the whole thread blocks for good). A call is
/// pipelined on an answer that is still unresolved but whose connection
/// has ended: `AnswerRef::deliver_pipelined` holds the answer's lock while
/// it `do_send`s the call to the connection actor; the send fails, actix
/// drops the message at once, and dropping the call drops its
/// `Completer`, whose `depends_on` is an `AnswerRef` to that same answer:
/// its `Drop` takes the lock again. (Backtrace: `deliver_pipelined` ->
/// `Recipient::do_send` -> drop `SendError<ConnMsg>` -> drop `Completer`
/// -> `AnswerRef::drop` -> `Answer::lock`.) `depends_on` came with the
/// change that keeps a question wanted while a call pipelined on it runs.
#[test]
fn a_call_pipelined_on_a_dead_connection_does_not_deadlock() {
    regression(a_call_pipelined_on_a_dead_connection_does_not_deadlock_steps());
}

fn a_call_pipelined_on_a_dead_connection_does_not_deadlock_steps() -> Scenario {
    Scenario {
        vats: 2,
        ops: vec![
            Op::NewPromise { vat: 159 },
            Op::Bootstrap {
                vat: 198,
                peer: 55,
                offer: 24,
            },
            Op::Deliver { wire: 157 },
            Op::Release { vat: 13, cap: 16 },
            Op::Deliver { wire: 192 },
            Op::Deliver { wire: 64 },
            Op::Bootstrap {
                vat: 121,
                peer: 123,
                offer: 34,
            },
            Op::Call {
                vat: 205,
                target: 102,
                caps: vec![],
            },
            Op::NewPromise { vat: 85 },
            Op::Deliver { wire: 218 },
            Op::Bootstrap {
                vat: 137,
                peer: 217,
                offer: 169,
            },
            Op::NewObject { vat: 85 },
            Op::Deliver { wire: 52 },
            Op::NewObject { vat: 81 },
            Op::Release { vat: 75, cap: 193 },
            Op::Disconnect {
                pair: 7,
                abort: false,
            },
            Op::NewPromise { vat: 47 },
            Op::Release { vat: 55, cap: 254 },
            Op::Call {
                vat: 89,
                target: 172,
                caps: vec![],
            },
        ],
    }
}

/// Calls on one reference arrive out of order across the `resolve` of a
/// promise the callee's vat exported. Vat 1 bootstraps vat 0's local
/// promise and pipelines call A on it; vat 0 resolves the promise to one
/// of its own objects and tells vat 1 (`resolve` to a `senderHosted`
/// export); vat 1 sends call B straight to that export, as the protocol
/// allows (the promise's host keeps the order; no embargo). Vat 0 reads A
/// and B together: A goes to the answer's field, the local promise, and
/// B to the object. When the promise was an actor, A took one more mailbox
/// hop and B arrived first; a resolved promise now forwards at once.
/// Seed 1859 shrunk, then made by hand.
#[test]
fn calls_sent_before_and_after_a_resolve_keep_their_order() {
    regression(calls_sent_before_and_after_a_resolve_keep_their_order_steps());
}

fn calls_sent_before_and_after_a_resolve_keep_their_order_steps() -> Scenario {
    Scenario {
        vats: 2,
        ops: vec![
            Op::NewPromise { vat: 0 },
            Op::NewObject { vat: 0 },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 0,
            },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![],
            },
            Op::Deliver { wire: 0 },
            Op::Deliver { wire: 0 },
            Op::Resolve {
                promise: 0,
                target: 1,
            },
            Op::Deliver { wire: 0 },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![],
            },
            Op::Flush,
        ],
    }
}

/// Calls on one reference arrive out of order across a disembargo. Vat 0
/// passes its local promise P to vat 1, then asks vat 1 for its bootstrap
/// capability, which vat 1 answers with that import of P: vat 0's own
/// promise, coming back. Vat 0 pipelines call A on the bootstrap, resolves
/// P to vat 1's object O, and pipelines call B. Vat 1 reads it all at
/// once: A is forwarded to the import of P through the connection actor's
/// own mailbox (`do_send` to itself, handled after the current read); the
/// `resolve` of P to O (one of vat 1's own objects) starts an embargo whose
/// `disembargo` the core writes at once; B waits behind the embargo. So
/// the disembargo goes out before A: vat 0 reflects it, vat 1 lifts the
/// embargo and delivers B to O, and A comes back through vat 0 after it.
/// Seed 2218 shrunk, then made by hand.
#[test]
fn a_disembargo_does_not_overtake_a_call_forwarded_in_the_same_read() {
    regression(a_disembargo_does_not_overtake_a_call_forwarded_in_the_same_read_steps());
}

fn a_disembargo_does_not_overtake_a_call_forwarded_in_the_same_read_steps() -> Scenario {
    Scenario {
        vats: 2,
        ops: vec![
            Op::NewPromise { vat: 0 },
            Op::NewObject { vat: 1 },
            Op::Bootstrap {
                vat: 0,
                peer: 0,
                offer: 0,
            },
            Op::Call {
                vat: 0,
                target: 1,
                caps: vec![0],
            },
            Op::Flush,
            Op::Bootstrap {
                vat: 0,
                peer: 0,
                offer: 1,
            },
            Op::Call {
                vat: 0,
                target: 2,
                caps: vec![],
            },
            Op::Resolve {
                promise: 0,
                target: 1,
            },
            Op::Call {
                vat: 0,
                target: 2,
                caps: vec![],
            },
            Op::Flush,
        ],
    }
}

/// Calls on one reference arrive out of order (E-order: a call with seq 0
/// arrives after seq 1 of the same reference). Seed 4331, shrunk by hand
/// from 134 steps. Vat 0 imports vat 1's promise P as its import 2; vat 1
/// asks for vat 0's bootstrap (q3), which vat 0 answers with that import
/// (`receiverHosted` 2, P coming back). Vat 1 resolves P to vat 0's object
/// O, pipelines call A on q3 before the return, then (after the return)
/// makes call B, which it sends straight to its import of O. Vat 0 reads
/// the resolve of import 2 (to its own O), then A (on q3 = import 2), then
/// B (to O). Vat 0 used to embargo import 2 on every such resolve, so A
/// waited behind a disembargo round trip and B overtook it. Now, as in the
/// reference implementation, an import that no call of ours went to
/// (directly, or pipelined on a field that turned out to be it) resolves
/// at once: nothing of ours can be on its way back through the peer.
#[test]
fn seed_4331_calls_on_one_reference_keep_their_order() {
    regression(seed_4331_calls_on_one_reference_keep_their_order_steps());
}

fn seed_4331_calls_on_one_reference_keep_their_order_steps() -> Scenario {
    Scenario {
        vats: 2,
        ops: vec![
            Op::NewPromise { vat: 1 },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![0, 0],
            },
            Op::NewObject { vat: 1 },
            Op::NewObject { vat: 0 },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 0,
            },
            Op::Call {
                vat: 1,
                target: 2,
                caps: vec![1],
            },
            Op::Call {
                vat: 0,
                target: 0,
                caps: vec![0, 0],
            },
            Op::NewPromise { vat: 1 },
            Op::Answer {
                call: 0,
                caps: vec![],
            },
            Op::Deliver { wire: 0 },
            Op::Deliver { wire: 1 },
            Op::Answer {
                call: 0,
                caps: vec![],
            },
            Op::Call {
                vat: 0,
                target: 3,
                caps: vec![],
            },
            Op::NewObject { vat: 0 },
            Op::Call {
                vat: 0,
                target: 3,
                caps: vec![0],
            },
            Op::Flush,
            Op::Answer {
                call: 0,
                caps: vec![0],
            },
            Op::Answer {
                call: 0,
                caps: vec![0],
            },
            Op::Deliver { wire: 0 },
            Op::Release { vat: 1, cap: 0 },
            Op::Call {
                vat: 0,
                target: 0,
                caps: vec![],
            },
            Op::NewObject { vat: 0 },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 0,
            },
            Op::Bootstrap {
                vat: 0,
                peer: 0,
                offer: 0,
            },
            Op::Deliver { wire: 0 },
            Op::Call {
                vat: 0,
                target: 0,
                caps: vec![],
            },
            Op::Deliver { wire: 0 },
            Op::Deliver { wire: 0 },
            Op::Deliver { wire: 0 },
            Op::Deliver { wire: 0 },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![0, 0, 0],
            },
            Op::Release { vat: 0, cap: 7 },
            Op::Release { vat: 0, cap: 0 },
            Op::Release { vat: 0, cap: 0 },
            Op::NewObject { vat: 1 },
            Op::Resolve {
                promise: 0,
                target: 0,
            },
            Op::NewObject { vat: 1 },
            Op::NewBroken { vat: 1 },
            Op::NewPromise { vat: 0 },
            Op::NewObject { vat: 0 },
            Op::Release { vat: 0, cap: 1 },
            Op::Deliver { wire: 1 },
            Op::NewPromise { vat: 1 },
            Op::Answer {
                call: 2,
                caps: vec![0, 0],
            },
            Op::NewObject { vat: 1 },
            Op::Answer {
                call: 2,
                caps: vec![0, 1, 0],
            },
            Op::Release { vat: 1, cap: 1 },
            Op::Call {
                vat: 0,
                target: 0,
                caps: vec![],
            },
            Op::Call {
                vat: 0,
                target: 0,
                caps: vec![0],
            },
            Op::Answer {
                call: 0,
                caps: vec![],
            },
            Op::Release { vat: 1, cap: 2 },
            Op::Release { vat: 1, cap: 2 },
            Op::Call {
                vat: 0,
                target: 0,
                caps: vec![],
            },
            Op::Release { vat: 0, cap: 0 },
            Op::Cancel { call: 0 },
            Op::Deliver { wire: 1 },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![],
            },
            Op::Deliver { wire: 1 },
            Op::Answer {
                call: 0,
                caps: vec![],
            },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![],
            },
            Op::NewObject { vat: 0 },
            Op::Answer {
                call: 2,
                caps: vec![0, 0, 0],
            },
            Op::Call {
                vat: 0,
                target: 0,
                caps: vec![0],
            },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![],
            },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![0],
            },
            Op::Release { vat: 1, cap: 2 },
            Op::Release { vat: 0, cap: 0 },
            Op::Call {
                vat: 1,
                target: 14,
                caps: vec![],
            },
            Op::Release { vat: 1, cap: 2 },
            Op::Release { vat: 1, cap: 2 },
            Op::Answer {
                call: 3,
                caps: vec![],
            },
            Op::Answer {
                call: 2,
                caps: vec![0],
            },
            Op::Answer {
                call: 2,
                caps: vec![0],
            },
            Op::Deliver { wire: 1 },
            Op::NewPromise { vat: 1 },
            Op::Answer {
                call: 0,
                caps: vec![0],
            },
            Op::Call {
                vat: 0,
                target: 1,
                caps: vec![0],
            },
            Op::Bootstrap {
                vat: 0,
                peer: 0,
                offer: 1,
            },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 0,
            },
            Op::Release { vat: 0, cap: 0 },
            Op::Release { vat: 1, cap: 1 },
            Op::Answer {
                call: 1,
                caps: vec![0],
            },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![0],
            },
            Op::Flush,
            Op::Answer {
                call: 0,
                caps: vec![],
            },
            Op::Answer {
                call: 0,
                caps: vec![],
            },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![0],
            },
            Op::Release { vat: 1, cap: 0 },
            Op::Answer {
                call: 0,
                caps: vec![],
            },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![0],
            },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![0],
            },
            Op::Answer {
                call: 0,
                caps: vec![0, 0, 0],
            },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 0,
            },
            Op::Release { vat: 1, cap: 11 },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![0, 0],
            },
            Op::Deliver { wire: 1 },
            Op::Release { vat: 1, cap: 11 },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 0,
            },
            Op::Release { vat: 1, cap: 11 },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![0],
            },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 9,
            },
            Op::Deliver { wire: 0 },
            Op::Deliver { wire: 0 },
            Op::Resolve {
                promise: 0,
                target: 10,
            },
            Op::Deliver { wire: 0 },
            Op::Deliver { wire: 0 },
            Op::Release { vat: 1, cap: 0 },
            Op::Deliver { wire: 0 },
            Op::Call {
                vat: 1,
                target: 29,
                caps: vec![],
            },
            Op::Deliver { wire: 0 },
            Op::Call {
                vat: 1,
                target: 29,
                caps: vec![],
            },
        ],
    }
}

/// A 125-step scenario the shrinker made from seed 4331. Vat 1 pipelines
/// calls 26 and 30 on its bootstrap question to vat 0, whose answer is
/// vat 1's exported promise 1. Vat 1 had resolved promise 1 to a field of
/// one of its own questions, which returned vat 1's object 0 and so went
/// under an embargo. Vat 1 then said `resolve 1 -> senderHosted 0` at
/// once: vat 0 sent call 30 straight to object 0, which overtook call 26,
/// still held by the embargo on its way through promise 1. A field under
/// an embargo now stays unsettled until the embargo lifts, so the
/// `resolve` waits for it.
#[test]
fn seed_4331_full_calls_on_one_reference_keep_their_order() {
    regression(Scenario {
        vats: 2,
        ops: vec![
            Op::NewPromise { vat: 191 },
            Op::Call {
                vat: 121,
                target: 238,
                caps: vec![160, 212],
            },
            Op::NewObject { vat: 47 },
            Op::NewObject { vat: 246 },
            Op::Bootstrap {
                vat: 17,
                peer: 81,
                offer: 88,
            },
            Op::Call {
                vat: 9,
                target: 173,
                caps: vec![103],
            },
            Op::Call {
                vat: 200,
                target: 114,
                caps: vec![224, 59],
            },
            Op::NewPromise { vat: 159 },
            Op::Answer {
                call: 3,
                caps: vec![],
            },
            Op::Deliver { wire: 54 },
            Op::Deliver { wire: 65 },
            Op::Answer {
                call: 138,
                caps: vec![],
            },
            Op::Call {
                vat: 18,
                target: 43,
                caps: vec![],
            },
            Op::NewObject { vat: 228 },
            Op::Call {
                vat: 16,
                target: 103,
                caps: vec![228],
            },
            Op::Flush,
            Op::Call {
                vat: 81,
                target: 33,
                caps: vec![],
            },
            Op::Answer {
                call: 126,
                caps: vec![44],
            },
            Op::Deliver { wire: 174 },
            Op::Answer {
                call: 131,
                caps: vec![123],
            },
            Op::Deliver { wire: 125 },
            Op::Release { vat: 35, cap: 40 },
            Op::Call {
                vat: 233,
                target: 197,
                caps: vec![],
            },
            Op::NewObject { vat: 4 },
            Op::Bootstrap {
                vat: 3,
                peer: 35,
                offer: 99,
            },
            Op::Call {
                vat: 147,
                target: 202,
                caps: vec![],
            },
            Op::Bootstrap {
                vat: 202,
                peer: 2,
                offer: 217,
            },
            Op::Call {
                vat: 212,
                target: 226,
                caps: vec![],
            },
            Op::Deliver { wire: 184 },
            Op::Deliver { wire: 232 },
            Op::Deliver { wire: 94 },
            Op::Deliver { wire: 234 },
            Op::Call {
                vat: 21,
                target: 150,
                caps: vec![5, 132, 184],
            },
            Op::Release { vat: 52, cap: 52 },
            Op::Release { vat: 118, cap: 203 },
            Op::Release { vat: 78, cap: 22 },
            Op::NewObject { vat: 39 },
            Op::Resolve {
                promise: 226,
                target: 198,
            },
            Op::NewObject { vat: 13 },
            Op::Deliver { wire: 190 },
            Op::NewBroken { vat: 19 },
            Op::NewPromise { vat: 6 },
            Op::NewObject { vat: 80 },
            Op::Release { vat: 30, cap: 34 },
            Op::Deliver { wire: 209 },
            Op::NewPromise { vat: 89 },
            Op::Answer {
                call: 103,
                caps: vec![240, 177],
            },
            Op::NewObject { vat: 187 },
            Op::Answer {
                call: 80,
                caps: vec![152, 140, 84],
            },
            Op::Release { vat: 155, cap: 181 },
            Op::Call {
                vat: 252,
                target: 143,
                caps: vec![],
            },
            Op::Release { vat: 145, cap: 176 },
            Op::Release { vat: 89, cap: 240 },
            Op::Call {
                vat: 78,
                target: 120,
                caps: vec![],
            },
            Op::Release { vat: 84, cap: 48 },
            Op::Cancel { call: 163 },
            Op::Deliver { wire: 93 },
            Op::Answer {
                call: 141,
                caps: vec![],
            },
            Op::Deliver { wire: 218 },
            Op::NewObject { vat: 64 },
            Op::Answer {
                call: 6,
                caps: vec![30, 34, 41],
            },
            Op::Call {
                vat: 3,
                target: 175,
                caps: vec![170],
            },
            Op::Call {
                vat: 169,
                target: 0,
                caps: vec![229],
            },
            Op::Release { vat: 1, cap: 255 },
            Op::Release { vat: 244, cap: 126 },
            Op::Call {
                vat: 48,
                target: 163,
                caps: vec![229, 157],
            },
            Op::Call {
                vat: 215,
                target: 254,
                caps: vec![],
            },
            Op::Deliver { wire: 234 },
            Op::Release { vat: 237, cap: 133 },
            Op::Release { vat: 179, cap: 164 },
            Op::Answer {
                call: 128,
                caps: vec![233],
            },
            Op::Answer {
                call: 178,
                caps: vec![39],
            },
            Op::NewPromise { vat: 39 },
            Op::Deliver { wire: 222 },
            Op::Deliver { wire: 140 },
            Op::Answer {
                call: 70,
                caps: vec![181],
            },
            Op::Call {
                vat: 190,
                target: 131,
                caps: vec![186],
            },
            Op::Bootstrap {
                vat: 78,
                peer: 145,
                offer: 106,
            },
            Op::NewObject { vat: 32 },
            Op::Bootstrap {
                vat: 245,
                peer: 140,
                offer: 189,
            },
            Op::Call {
                vat: 145,
                target: 83,
                caps: vec![35],
            },
            Op::Resolve {
                promise: 41,
                target: 186,
            },
            Op::Release { vat: 112, cap: 114 },
            Op::Resolve {
                promise: 76,
                target: 32,
            },
            Op::Call {
                vat: 168,
                target: 194,
                caps: vec![45],
            },
            Op::Deliver { wire: 0 },
            Op::NewPromise { vat: 68 },
            Op::Release { vat: 75, cap: 141 },
            Op::Answer {
                call: 85,
                caps: vec![67],
            },
            Op::Call {
                vat: 33,
                target: 226,
                caps: vec![5],
            },
            Op::Flush,
            Op::NewObject { vat: 66 },
            Op::Answer {
                call: 100,
                caps: vec![116, 113],
            },
            Op::Call {
                vat: 157,
                target: 183,
                caps: vec![132],
            },
            Op::Release { vat: 119, cap: 224 },
            Op::Call {
                vat: 227,
                target: 6,
                caps: vec![138],
            },
            Op::Call {
                vat: 189,
                target: 78,
                caps: vec![0],
            },
            Op::Answer {
                call: 63,
                caps: vec![102, 248, 112],
            },
            Op::Release { vat: 132, cap: 70 },
            Op::Bootstrap {
                vat: 45,
                peer: 143,
                offer: 234,
            },
            Op::NewPromise { vat: 94 },
            Op::Release { vat: 173, cap: 201 },
            Op::NewPromise { vat: 156 },
            Op::Call {
                vat: 39,
                target: 189,
                caps: vec![80, 189],
            },
            Op::Release { vat: 225, cap: 106 },
            Op::Release { vat: 68, cap: 21 },
            Op::Bootstrap {
                vat: 5,
                peer: 144,
                offer: 232,
            },
            Op::Release { vat: 111, cap: 233 },
            Op::Call {
                vat: 111,
                target: 9,
                caps: vec![254],
            },
            Op::Bootstrap {
                vat: 1,
                peer: 228,
                offer: 135,
            },
            Op::Answer {
                call: 191,
                caps: vec![151],
            },
            Op::Call {
                vat: 53,
                target: 25,
                caps: vec![145, 164, 96],
            },
            Op::Resolve {
                promise: 200,
                target: 138,
            },
            Op::Bootstrap {
                vat: 151,
                peer: 85,
                offer: 48,
            },
            Op::Call {
                vat: 245,
                target: 32,
                caps: vec![],
            },
            Op::Bootstrap {
                vat: 181,
                peer: 69,
                offer: 81,
            },
            Op::Release { vat: 239, cap: 25 },
            Op::Call {
                vat: 223,
                target: 174,
                caps: vec![99, 116],
            },
            Op::Call {
                vat: 235,
                target: 62,
                caps: vec![69],
            },
            Op::NewObject { vat: 219 },
            Op::Deliver { wire: 122 },
            Op::Bootstrap {
                vat: 163,
                peer: 20,
                offer: 54,
            },
            Op::Call {
                vat: 159,
                target: 103,
                caps: vec![229],
            },
            Op::Deliver { wire: 66 },
            Op::Call {
                vat: 245,
                target: 251,
                caps: vec![],
            },
        ],
    });
}

/// Calls on one reference out of order (seed 6181, shrunk). Vat 0 asks
/// for vat 1's bootstrap and pipelines call A on it; vat 1's bootstrap
/// is its own (unanswered) bootstrap of vat 0, so its return names one of
/// vat 0's answers (`receiverAnswer`), which by then has resolved to vat
/// 1's object. Judged by that shortened end, the field looked like vat
/// 1's and no embargo started, so call B went straight to the object
/// while A was still bouncing vat 0 -> vat 1 -> vat 0 -> vat 1. A field is
/// now judged as the peer named it: one of ours means the calls come back
/// through us, so it is embargoed.
#[test]
fn a_field_named_as_our_answer_is_embargoed_even_if_it_resolved_back_to_the_peer() {
    regression(Scenario {
        vats: 2,
        ops: vec![
            Op::NewObject { vat: 3 },
            Op::Call {
                vat: 41,
                target: 248,
                caps: vec![14],
            },
            Op::Release { vat: 139, cap: 49 },
            Op::Bootstrap {
                vat: 50,
                peer: 79,
                offer: 134,
            },
            Op::Call {
                vat: 84,
                target: 95,
                caps: vec![],
            },
            Op::Deliver { wire: 111 },
            Op::Bootstrap {
                vat: 43,
                peer: 225,
                offer: 243,
            },
            Op::Deliver { wire: 238 },
            Op::Deliver { wire: 198 },
            Op::Release { vat: 130, cap: 120 },
            Op::Deliver { wire: 76 },
            Op::Bootstrap {
                vat: 244,
                peer: 189,
                offer: 157,
            },
            Op::Call {
                vat: 28,
                target: 2,
                caps: vec![],
            },
            Op::Deliver { wire: 241 },
            Op::Deliver { wire: 48 },
            Op::Deliver { wire: 27 },
            Op::Call {
                vat: 40,
                target: 252,
                caps: vec![],
            },
        ],
    });
}

/// A call with `sendResultsTo.yourself` on an export whose capability is
/// broken used to be answered at once with an exception, before the
/// answer was marked as keeping its results, so the
/// `takeFromOtherQuestion` return that followed was taken for a protocol
/// error and the connection aborted. Vat 1 passes a broken capability (a
/// promise export, broken by the `resolve` behind it) to vat 0's object;
/// the object tail-calls it before that `resolve` arrives: vat 0 sends
/// `call q0 -> import 0 [] to yourself` then `return a1 takeFrom 0`. Now
/// vat 1 answers `resultsSentElsewhere` and keeps the error, which call 0
/// gets; the connection stays open.
#[test]
fn a_tail_call_back_on_a_broken_export_keeps_its_results() {
    regression_new_ops(Scenario {
        vats: 2,
        ops: vec![
            Op::NewBroken { vat: 1 },
            Op::NewObject { vat: 0 },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 0,
            },
            Op::Call {
                vat: 1,
                target: 1,
                caps: vec![0],
            },
            Op::Deliver { wire: 0 },
            Op::Deliver { wire: 1 },
            Op::TailCall { call: 0, target: 1 },
            Op::Flush,
        ],
    });
}

/// Was a leak (runtime, `actors/src/cap.rs`, `Kind::Pipelined`): a
/// pipelined capability kept its answer (`Kind::Pipelined { answer }`)
/// after it had settled, so results that hold pipelined capabilities on
/// each other's calls kept each other alive. Now a settled pipelined
/// capability lets go of its answer once nothing routed through the
/// answer can be overtaken (`Answer::release_settled`). Calls 0 and 1 on vat 0's
/// object; P on field 1 of call 0, Q on field 1 of call 1; call 0 is
/// answered [Q], call 1 [P]. Both fields 1 are absent, so P and Q are
/// broken (and the model sees no cycle); once everything was released,
/// P, Q and the two broken capabilities they settled to were still alive.
/// (Capnp's own promise clients drop the pipeline once resolved.)
#[test]
fn results_holding_fields_of_each_other_are_released() {
    regression_new_ops(Scenario {
        vats: 2,
        ops: vec![
            Op::NewObject { vat: 0 },
            Op::Call {
                vat: 0,
                target: 0,
                caps: vec![],
            },
            Op::Call {
                vat: 0,
                target: 0,
                caps: vec![],
            },
            Op::Pipeline { call: 0, index: 1 },
            Op::Pipeline { call: 1, index: 1 },
            Op::Answer {
                call: 0,
                caps: vec![2],
            },
            Op::Answer {
                call: 0,
                caps: vec![1],
            },
        ],
    });
}

/// Regression (core, `proto/src/captp.rs`, and connection): a call on an
/// export whose capability is broken is answered at once in `act` ("call
/// on a broken capability"); the runtime was not told, so a capability
/// the peer then passed as `receiverAnswer` on that answer found no
/// answer there and made the whole call that carried it fail with
/// "Message contained invalid capability pointer". The core now reports
/// such answers (`Event::CallFailed`) and the connection keeps their
/// error until the peer's finish. Vat 0 offers a broken capability
/// (exported as a promise, `resolve -> exception` behind it) and an
/// object; vat 1 calls the broken one before the `resolve` arrives
/// (call 0, `call q0 -> import 0`), pipelines P on its field 1, and calls
/// the object passing P (call 1, `[receiverAnswer 0.[2]]`). Expected:
/// call 0 fails, call 1 reaches object 0 with a broken capability.
#[test]
fn a_field_of_a_call_on_a_broken_export_passes_as_a_broken_capability() {
    regression_new_ops(Scenario {
        vats: 2,
        ops: vec![
            Op::NewBroken { vat: 0 },
            Op::NewObject { vat: 0 },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 0,
            },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 1,
            },
            Op::Deliver { wire: 0 },
            Op::Deliver { wire: 1 },
            Op::Deliver { wire: 0 },
            Op::Call {
                vat: 1,
                target: 0,
                caps: vec![],
            },
            Op::Pipeline { call: 0, index: 1 },
            Op::Call {
                vat: 1,
                target: 1,
                caps: vec![2],
            },
            Op::Flush,
        ],
    });
}

/// `results_holding_fields_of_each_other_are_released` with calls made on
/// P and Q before the answers, so that each waits in its answer's queue
/// (`AnswerActor`): the queue keeps calls in order until it has delivered
/// them all, and only then may P and Q let go of their answers. Calls 0
/// and 1 on vat 0's object; P on field 1 of call 0, Q on field 1 of call
/// 1; calls 2 on P and 3 on Q; call 0 is answered [Q, object], call 1
/// [P, object]; then calls 4 on P and 5 on Q, which must arrive after 2
/// and 3. Everything must be released at the end.
#[test]
fn results_holding_fields_of_each_other_are_released_after_their_queues() {
    regression_new_ops(Scenario {
        vats: 2,
        ops: vec![
            Op::NewObject { vat: 0 },
            Op::Call {
                vat: 0,
                target: 0,
                caps: vec![],
            },
            Op::Call {
                vat: 0,
                target: 0,
                caps: vec![],
            },
            Op::Pipeline { call: 0, index: 1 },
            Op::Pipeline { call: 1, index: 1 },
            Op::Call {
                vat: 0,
                target: 1,
                caps: vec![],
            },
            Op::Call {
                vat: 0,
                target: 2,
                caps: vec![],
            },
            Op::Answer {
                call: 0,
                caps: vec![2, 0],
            },
            Op::Answer {
                call: 0,
                caps: vec![1, 0],
            },
            Op::Call {
                vat: 0,
                target: 1,
                caps: vec![],
            },
            Op::Call {
                vat: 0,
                target: 2,
                caps: vec![],
            },
            Op::Flush,
        ],
    });
}

/// Was a leak (runtime, `actors/src/answer.rs`). Call X (on vat
/// 0's object) is answered by a tail call Y to the same object; the
/// caller holds P, pipelined on field 1 of X; Y is answered with [P].
/// Field 1 of Y is absent, so P is broken, and everything was released,
/// yet P, the pipelined capability on Y it settled to, and a broken
/// capability stayed alive: Y's results held P, P (a `Pipelined` node,
/// even settled) held X's answer, X's answer forwards to (holds) Y's
/// answer. The tail-call form of
/// `results_holding_fields_of_each_other_are_released`; fixed the same way.
#[test]
fn results_holding_a_field_of_the_call_they_answer_by_tail_call_are_released() {
    regression_new_ops(Scenario {
        vats: 2,
        ops: vec![
            Op::NewObject { vat: 0 },
            Op::Call {
                vat: 0,
                target: 0,
                caps: vec![],
            },
            Op::Pipeline { call: 0, index: 1 },
            Op::TailCall { call: 0, target: 0 },
            Op::Answer {
                call: 0,
                caps: vec![1],
            },
        ],
    });
}

/// A call that came with `sendResultsTo.yourself` used to be answered by
/// a tail call back to its caller with `sendResultsTo.yourself` too, so
/// its results ended up kept by the peer while this side had to keep them
/// for the peer's `takeFromOtherQuestion`, and the first call never
/// completed. Such a tail call now goes out as an ordinary call (as in
/// capnp's C++ runtime, which tail-calls back only if `!redirectResults`).
/// Vat 0 calls vat 1's object (X); it tail-calls vat 0's object (Y: `call
/// q0 to yourself`, then `return a0 takeFrom 0` for X); Y reaches vat 0's
/// object before that return does, and it tail-calls vat 1's object (Z).
#[test]
fn a_tail_call_back_from_a_call_sent_to_yourself_completes() {
    regression_new_ops(Scenario {
        vats: 2,
        ops: vec![
            Op::NewObject { vat: 0 },
            Op::NewObject { vat: 1 },
            Op::Bootstrap {
                vat: 0,
                peer: 0,
                offer: 0,
            },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 0,
            },
            Op::Flush,
            Op::Call {
                vat: 0,
                target: 1,
                caps: vec![],
            },
            Op::Flush,
            Op::TailCall { call: 0, target: 1 },
            Op::Deliver { wire: 0 },
            Op::TailCall { call: 0, target: 1 },
            Op::Flush,
        ],
    });
}

/// Was a bug (runtime, `actors/src/answer.rs`; found by `Pipeline` alone,
/// seed 197 shrunk): an embargo was left after everything was delivered.
/// Vat 0 calls its own promise p0 (call 0) and takes P1, P3 on its
/// fields; vat 2 bootstraps P3 and P1 and calls them; p0 is resolved to
/// vat 2's promise p2 (an import), so call 0 goes out (`call q1 -> answer
/// 0`). Vat 0 answers vat 2's bootstrap of P1 with `receiverAnswer 1.[1]`;
/// vat 2 embargoes it and sends `disembargo senderLoopback -> answer 2`.
/// The call vat 2 pipelined on that bootstrap (q3) stayed queued in vat 0
/// on call 0's local answer instead of following call 0 to vat 2, so the
/// disembargo was never reflected while p2 was unresolved. Now the queue
/// sends its calls after the call as soon as it goes to a peer (`call q3
/// -> answer 1.[1]`, `GoRemote`), as capnp's C++ runtime resolves a queued
/// call's pipeline to the sent request's.
#[test]
fn calls_pipelined_on_a_call_forwarded_by_a_promise_follow_it() {
    regression_new_ops(Scenario {
        vats: 3,
        ops: vec![
            Op::NewPromise { vat: 153 },
            Op::Call {
                vat: 39,
                target: 50,
                caps: vec![],
            },
            Op::Pipeline {
                call: 173,
                index: 153,
            },
            Op::NewPromise { vat: 230 },
            Op::Pipeline {
                call: 124,
                index: 100,
            },
            Op::Bootstrap {
                vat: 5,
                peer: 64,
                offer: 74,
            },
            Op::Call {
                vat: 53,
                target: 159,
                caps: vec![],
            },
            Op::Deliver { wire: 88 },
            Op::Bootstrap {
                vat: 114,
                peer: 179,
                offer: 238,
            },
            Op::Bootstrap {
                vat: 107,
                peer: 24,
                offer: 117,
            },
            Op::Deliver { wire: 27 },
            Op::Resolve {
                promise: 66,
                target: 119,
            },
            Op::Call {
                vat: 185,
                target: 131,
                caps: vec![],
            },
            Op::Flush,
        ],
    });
}

/// E-order across three vats (found with `Pipeline`, seed 1783, 133
/// steps; this is it by hand). Vat 0 holds B (vat 1's object) through vat
/// 2, which forwards calls on it to vat 1. Vat 0 calls B (X), takes P on
/// field 0 of X and calls P (C1): vat 2 forwards both to vat 1, C1
/// pipelined on its own question. Vat 1 answers X with O, vat 2's own
/// object, so C1 heads back to vat 2 and vat 2 embargoes that field of its
/// question. Vat 2 then returned X to vat 0 naming O itself (`senderHosted`),
/// so vat 0's next call on P (C2) went straight to O and overtook C1. A
/// field under an embargo now goes out in a return as the promise of it
/// (`senderPromise`, resolved once the embargo lifts), and C2 waits behind
/// the embargo (`AnswerRef::embargoed_fields`).
#[test]
fn a_return_names_a_field_under_an_embargo_as_a_promise() {
    regression_new_ops(Scenario {
        vats: 3,
        ops: vec![
            Op::NewObject { vat: 2 },
            Op::NewObject { vat: 1 },
            Op::Bootstrap {
                vat: 1,
                peer: 0,
                offer: 0,
            },
            Op::Bootstrap {
                vat: 2,
                peer: 1,
                offer: 0,
            },
            Op::Flush,
            Op::Bootstrap {
                vat: 0,
                peer: 1,
                offer: 1,
            },
            Op::Flush,
            Op::Call {
                vat: 0,
                target: 0,
                caps: vec![],
            },
            Op::Pipeline { call: 0, index: 0 },
            Op::Call {
                vat: 0,
                target: 1,
                caps: vec![],
            },
            Op::Flush,
            Op::Answer {
                call: 0,
                caps: vec![1],
            },
            // The return 1>2, then 2>0 (and the finish 0>2).
            Op::Deliver { wire: 0 },
            Op::Deliver { wire: 0 },
            Op::Deliver { wire: 0 },
            Op::Call {
                vat: 0,
                target: 1,
                caps: vec![],
            },
            Op::Flush,
        ],
    });
}

/// A disembargo was never reflected (found with `Pipeline`, seed 197; the
/// shrunk form after the fix of
/// `calls_pipelined_on_a_call_forwarded_by_a_promise_follow_it`). Vat 0
/// calls its promise p0 (call 0) and takes P1 on field 0; vat 2
/// bootstraps P1 and pipelines a call on it; p0 resolves to a capability
/// of vat 2, so call 0 goes there, and so do the calls on P1, pipelined.
/// Vat 0 answers the bootstrap with `receiverAnswer` (vat 2's answer to
/// call 0, field 0); vat 2 embargoes it and sends `disembargo
/// senderLoopback -> answer 1`. Vat 0 sends the marker through its
/// connection after the calls on P1, but call 0's return (no capabilities:
/// P1 is broken) is read in the same batch, before the marker's turn: the
/// marker ended at the broken capability and was dropped, and vat 2's
/// embargo stayed for ever. A marker dropped on its way is now reflected
/// by the connection it came on.
#[test]
fn a_disembargo_whose_path_no_longer_leads_back_is_reflected() {
    regression_new_ops(Scenario {
        vats: 3,
        ops: vec![
            Op::NewObject { vat: 232 },
            Op::NewPromise { vat: 153 },
            Op::Call {
                vat: 39,
                target: 50,
                caps: vec![],
            },
            Op::Pipeline {
                call: 173,
                index: 153,
            },
            Op::Bootstrap {
                vat: 236,
                peer: 123,
                offer: 188,
            },
            Op::Pipeline {
                call: 124,
                index: 100,
            },
            Op::Bootstrap {
                vat: 5,
                peer: 64,
                offer: 74,
            },
            Op::Deliver { wire: 88 },
            Op::Bootstrap {
                vat: 114,
                peer: 179,
                offer: 238,
            },
            Op::Bootstrap {
                vat: 107,
                peer: 24,
                offer: 117,
            },
            Op::Deliver { wire: 27 },
            Op::Resolve {
                promise: 66,
                target: 119,
            },
            Op::Call {
                vat: 135,
                target: 61,
                caps: vec![],
            },
            Op::Deliver { wire: 194 },
            Op::Deliver { wire: 99 },
            Op::Deliver { wire: 12 },
            Op::Deliver { wire: 51 },
            Op::Call {
                vat: 185,
                target: 131,
                caps: vec![],
            },
            Op::Answer {
                call: 242,
                caps: vec![],
            },
            Op::Deliver { wire: 49 },
            Op::Flush,
        ],
    });
}

/// Calls on one reference out of order (seed 8636, shrunk; the same bug
/// as `a_field_named_as_our_answer_is_embargoed_even_if_it_resolved_back_to_the_peer`
/// by another way). Vat 1 bootstraps vat 0, which offers a capability
/// pipelined on its own question to vat 1, and pipelines call 14 on it;
/// vat 0's return names vat 1's answer 0 (`receiverAnswer 0`), which vat 1
/// had already answered with vat 0's object (an import). Reading that
/// descriptor gave the import itself, so the field looked like vat 0's and
/// no embargo started: call 15 went straight to the object while 14 was
/// still bouncing vat 1 -> vat 0 -> vat 1 -> vat 0. A field is now judged
/// by the descriptor the peer sent, even when the answer it names is
/// known already.
#[test]
fn a_field_named_as_our_answered_answer_is_embargoed() {
    regression(Scenario {
        vats: 2,
        ops: vec![
            Op::NewObject { vat: 74 },
            Op::Bootstrap {
                vat: 237,
                peer: 240,
                offer: 232,
            },
            Op::Release { vat: 10, cap: 210 },
            Op::NewObject { vat: 102 },
            Op::Call {
                vat: 2,
                target: 52,
                caps: vec![223],
            },
            Op::Call {
                vat: 92,
                target: 160,
                caps: vec![],
            },
            Op::NewObject { vat: 191 },
            Op::Answer {
                call: 59,
                caps: vec![],
            },
            Op::Answer {
                call: 124,
                caps: vec![166, 17],
            },
            Op::Deliver { wire: 161 },
            Op::NewBroken { vat: 242 },
            Op::Call {
                vat: 31,
                target: 226,
                caps: vec![],
            },
            Op::Deliver { wire: 158 },
            Op::NewPromise { vat: 104 },
            Op::Deliver { wire: 146 },
            Op::Release { vat: 13, cap: 77 },
            Op::Deliver { wire: 4 },
            Op::Call {
                vat: 148,
                target: 198,
                caps: vec![141],
            },
            Op::Call {
                vat: 9,
                target: 245,
                caps: vec![],
            },
            Op::Call {
                vat: 136,
                target: 0,
                caps: vec![154, 201],
            },
            Op::Resolve {
                promise: 18,
                target: 255,
            },
            Op::Deliver { wire: 114 },
            Op::Release { vat: 136, cap: 163 },
            Op::Release { vat: 60, cap: 218 },
            Op::TailCall {
                call: 5,
                target: 243,
            },
            Op::Release { vat: 35, cap: 172 },
            Op::Call {
                vat: 114,
                target: 11,
                caps: vec![217],
            },
            Op::Answer {
                call: 140,
                caps: vec![202],
            },
            Op::Deliver { wire: 213 },
            Op::Bootstrap {
                vat: 230,
                peer: 189,
                offer: 218,
            },
            Op::Pipeline {
                call: 94,
                index: 91,
            },
            Op::Pipeline {
                call: 0,
                index: 209,
            },
            Op::Release { vat: 22, cap: 204 },
            Op::Answer {
                call: 123,
                caps: vec![169, 177],
            },
            Op::Bootstrap {
                vat: 21,
                peer: 29,
                offer: 148,
            },
            Op::Release { vat: 145, cap: 23 },
            Op::Call {
                vat: 204,
                target: 111,
                caps: vec![250, 23],
            },
            Op::Release { vat: 160, cap: 54 },
            Op::Pipeline {
                call: 239,
                index: 84,
            },
            Op::Bootstrap {
                vat: 237,
                peer: 107,
                offer: 250,
            },
            Op::Answer {
                call: 75,
                caps: vec![],
            },
            Op::Flush,
            Op::NewObject { vat: 150 },
            Op::NewObject { vat: 254 },
            Op::Fail { call: 188 },
            Op::Answer {
                call: 249,
                caps: vec![207],
            },
            Op::Release { vat: 90, cap: 118 },
            Op::Release { vat: 178, cap: 45 },
            Op::Bootstrap {
                vat: 44,
                peer: 159,
                offer: 143,
            },
            Op::Deliver { wire: 5 },
            Op::Call {
                vat: 55,
                target: 242,
                caps: vec![],
            },
            Op::Bootstrap {
                vat: 145,
                peer: 235,
                offer: 171,
            },
            Op::TailCall {
                call: 34,
                target: 233,
            },
            Op::Deliver { wire: 176 },
            Op::Deliver { wire: 84 },
            Op::NewObject { vat: 12 },
            Op::Call {
                vat: 44,
                target: 224,
                caps: vec![169],
            },
            Op::Deliver { wire: 174 },
            Op::Bootstrap {
                vat: 17,
                peer: 154,
                offer: 128,
            },
            Op::Deliver { wire: 26 },
            Op::Cancel { call: 141 },
            Op::Answer {
                call: 16,
                caps: vec![51],
            },
            Op::Deliver { wire: 180 },
            Op::Deliver { wire: 211 },
            Op::Deliver { wire: 93 },
            Op::Deliver { wire: 116 },
            Op::Deliver { wire: 149 },
            Op::Deliver { wire: 186 },
            Op::Deliver { wire: 243 },
            Op::Call {
                vat: 219,
                target: 71,
                caps: vec![3],
            },
            Op::Pipeline {
                call: 62,
                index: 105,
            },
            Op::Bootstrap {
                vat: 232,
                peer: 176,
                offer: 26,
            },
            Op::Deliver { wire: 97 },
            Op::Deliver { wire: 87 },
            Op::Bootstrap {
                vat: 107,
                peer: 62,
                offer: 112,
            },
            Op::Deliver { wire: 119 },
            Op::Deliver { wire: 143 },
            Op::NewObject { vat: 232 },
            Op::TailCall {
                call: 160,
                target: 217,
            },
            Op::Deliver { wire: 98 },
            Op::Release { vat: 245, cap: 129 },
            Op::Release { vat: 33, cap: 61 },
            Op::Deliver { wire: 86 },
            Op::Deliver { wire: 42 },
            Op::Deliver { wire: 86 },
            Op::Call {
                vat: 85,
                target: 221,
                caps: vec![],
            },
            Op::Deliver { wire: 106 },
            Op::Call {
                vat: 119,
                target: 149,
                caps: vec![],
            },
        ],
    });
}
