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
//! way, as a regression file to fill in and add to `tests/sim/regressions/`
//! (see the list below; the format is in `tests/sim/script.rs`). Seeds that hit a
//! bug listed in `sim::KNOWN_BUGS` are counted and skipped. To replay one
//! seed: `SIM_SEED=<seed> cargo test --test simulation one_seed`; to look
//! further, `SIM_EXPLORE=<seeds> SIM_SEED_BASE=<first> ... explore`; to
//! watch a run, `SIM_TRACE=1`. The same driver runs under cargo-fuzz
//! (`fuzz/`).
//!
//! On several arbiters: with `SIM_ARBITERS=<n>` (n > 1; default 1) a run
//! starts n arbiters (threads) of its own and starts each pair's two
//! connection ends on two different ones, while the vats' objects and
//! promises stay on the driver's thread, so calls between them cross
//! threads through mailboxes as in a vat that serves its connections on
//! several arbiters (see `tests/sim/spread.rs`). Frames still arrive when
//! the driver delivers them, so a run mostly follows its seed, but it is
//! not reproducible to the instruction; the driver counts the threads as
//! quiet once nothing has moved across its own idle rounds and a round
//! trip to every arbiter, twice in a row. `SIM_ARBITERS` applies to
//! `one_seed` and `explore` (e.g. `SIM_ARBITERS=2 SIM_EXPLORE=5000 cargo
//! test --release --test simulation explore -- --nocapture`) and to the
//! fuzz target. Every other test runs on one thread whatever it says (the
//! 1,500 seeds above, and the regressions' replays, which assert their
//! triggers), except two that run on two arbiters:
//! `simulation_on_two_arbiters` (300 seeds of 200 steps, about 25 s in
//! debug) and `regressions_pass_on_two_arbiters` (the oracle only).

mod sim;

use std::time::{Duration, Instant};

use sim::driver::{self, Config, Failure, Outcome};
use sim::ops::{self, Op, Scenario};
use sim::script::{self, AsFile, Recorded};
use sim::triggers;

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
                 shrunk to {} steps, which fail with: {}\n\
                 as a regression file for tests/sim/regressions/ (see tests/sim/script.rs):\n{}",
                scenario.vat_count(),
                scenario.ops.len(),
                small.ops.len(),
                again.map_or("(no longer fails)".to_string(), |f| f.to_string()),
                AsFile {
                    scenario: &small,
                    seed
                }
            );
        }
    }
}

/// Steps per seed: long enough for promises to be resolved, passed on and
/// called through; short enough that a failure shrinks quickly.
const STEPS_PER_SEED: usize = 400;

/// The configuration of the tests that want every run reproducible from
/// its steps: everything on one thread, whatever `SIM_ARBITERS` says.
fn one_thread() -> Config {
    Config {
        arbiters: 1,
        ..Config::default()
    }
}

/// Runs seeds `first, first + stride, ...` until `steps` steps have run
/// in seeds that passed, on one thread.
fn run_seeds(first: u64, stride: u64, steps: usize) {
    run_seeds_with(&one_thread(), first, stride, steps, STEPS_PER_SEED);
}

/// Runs seeds `first, first + stride, ...` of `per_seed` steps each with
/// `cfg` until `steps` steps have run in seeds that passed.
fn run_seeds_with(cfg: &Config, first: u64, stride: u64, steps: usize, per_seed: usize) {
    let started = Instant::now();
    let mut done = 0;
    let mut seed = first;
    let mut seeds = 0;
    let mut known: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    let mut totals = sim::model::Counts::default();
    let mut relaxed = sim::routes::Relaxation::default();
    while done < steps {
        let scenario = ops::generate(seed, per_seed);
        match run(&scenario, cfg) {
            Ok(o) => {
                totals.add(&o.counts);
                relaxed.add(&o.counts);
                done += scenario.ops.len();
                seeds += 1;
            }
            Err(f) => match sim::known_bug(&f.message) {
                Some(test) => known.entry(test).or_default().push(seed),
                None => {
                    check(Some(seed), &scenario, cfg);
                }
            },
        }
        seed += stride;
    }
    eprintln!(
        "{seeds} seeds passed on {} arbiters, {done} steps in {:.1?}: {totals}",
        cfg.arbiters,
        started.elapsed()
    );
    eprintln!("{}", relaxed.report(&totals));
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

/// Seeds run with each pair's connection ends on two arbiters (threads)
/// of the run's own, the vats' objects on the driver's thread: a vat
/// serving its connections on several arbiters (issue 13). Shorter seeds,
/// as knowing that the threads are quiet costs round trips to them.
const ARBITER_SEEDS: usize = 300;
const ARBITER_STEPS_PER_SEED: usize = 200;

#[test]
fn simulation_on_two_arbiters() {
    let cfg = Config {
        arbiters: 2,
        ..Config::default()
    };
    let steps = ARBITER_SEEDS * ARBITER_STEPS_PER_SEED;
    run_seeds_with(&cfg, seed_base(), 1, steps, ARBITER_STEPS_PER_SEED);
}

/// Every recorded regression passes the oracle with its connections on
/// two arbiters too (what each triggers depends on the exact order of
/// the threads' turns, so only the one-thread replays assert it).
#[test]
fn regressions_pass_on_two_arbiters() {
    let cfg = Config {
        new_ops: sim::ops::NewOps::ALL,
        arbiters: 2,
        ..Config::default()
    };
    for r in recorded() {
        let path = regression_path(&r.name);
        if let Err(f) = run(&r.scenario, &cfg) {
            panic!("regression {} ({path}) fails on two arbiters: {f}", r.name);
        }
    }
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
    let cfg = one_thread();
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
    let o = check(None, &s, &one_thread());
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
        ..one_thread()
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
    let mut totals = sim::model::Counts::default();
    let mut relaxed = sim::routes::Relaxation::default();
    let mut first_failures = Vec::new();
    for seed in seed_base()..seed_base() + n {
        match run(&ops::generate(seed, STEPS_PER_SEED), &cfg) {
            Ok(o) => {
                totals.add(&o.counts);
                relaxed.add(&o.counts);
            }
            Err(f) => {
                let seeds = kinds.entry(signature(&f)).or_default();
                if seeds.is_empty() {
                    first_failures.push(format!("seed {seed}: {f}"));
                }
                seeds.push(seed);
            }
        }
    }
    eprintln!(
        "seeds {}..{}: {} passed, {} failed; {totals}",
        seed_base(),
        seed_base() + n,
        relaxed.seeds,
        n - relaxed.seeds
    );
    eprintln!("{}", relaxed.report(&totals));
    for f in &first_failures {
        eprintln!("first failure of its kind, {f}");
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
    let mut scenarios: Vec<(String, Scenario)> = recorded()
        .into_iter()
        .filter(|r| r.name != "a_call_pipelined_on_a_dead_connection_does_not_deadlock")
        .map(|r| (r.name, r.scenario))
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
        ..one_thread()
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
//
// Each is a file of `tests/sim/regressions/` (the format is described in
// `tests/sim/script.rs`): the bug it pinned, its seed, the triggers its
// replay must show, and its steps. Each replays as its own test, with the
// steps of today's default (`Pipeline` and `TailCall` and what they need,
// whatever `SIM_NEW_OPS` says). To add one, add its file and its name here;
// a bug not fixed yet is listed as `#[ignore = "known bug"] name` (and in
// `sim::KNOWN_BUGS`).

macro_rules! regressions {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        /// Every recorded regression: its name and its file's text.
        const REGRESSIONS: &[(&str, &str)] = &[$((
            stringify!($name),
            include_str!(concat!("sim/regressions/", stringify!($name), ".txt")),
        )),*];
        $(
            #[test]
            $(#[$attr])*
            fn $name() {
                replay(stringify!($name));
            }
        )*
    };
}

regressions! {
    no_disembargo_on_a_question_finished_before_its_return,
    calls_pipelined_on_a_forwarded_bootstrap_keep_their_order,
    a_broken_capability_sent_back_to_its_sender_stays_readable,
    an_embargo_id_is_not_reused_while_its_embargo_is_live,
    an_exported_promise_settling_on_an_embargoed_import_is_not_broken,
    no_embargo_is_left_once_everything_is_delivered,
    a_disembargo_is_sent_only_where_it_can_be_reflected,
    a_call_pipelined_on_a_dead_connection_does_not_deadlock,
    calls_sent_before_and_after_a_resolve_keep_their_order,
    a_disembargo_does_not_overtake_a_call_forwarded_in_the_same_read,
    seed_4331_calls_on_one_reference_keep_their_order,
    seed_4331_full_calls_on_one_reference_keep_their_order,
    a_field_named_as_our_answer_is_embargoed_even_if_it_resolved_back_to_the_peer,
    a_tail_call_back_on_a_broken_export_keeps_its_results,
    results_holding_fields_of_each_other_are_released,
    a_field_of_a_call_on_a_broken_export_passes_as_a_broken_capability,
    results_holding_fields_of_each_other_are_released_after_their_queues,
    results_holding_a_field_of_the_call_they_answer_by_tail_call_are_released,
    a_tail_call_back_from_a_call_sent_to_yourself_completes,
    calls_pipelined_on_a_call_forwarded_by_a_promise_follow_it,
    a_return_names_a_field_under_an_embargo_as_a_promise,
    a_disembargo_whose_path_no_longer_leads_back_is_reflected,
    a_field_named_as_our_answered_answer_is_embargoed,
}

/// Where a regression's file is, as its errors name it.
fn regression_path(name: &str) -> String {
    format!("tests/sim/regressions/{name}.txt")
}

/// Every recorded regression, read (also seeds of the fuzz corpus).
fn recorded() -> Vec<Recorded> {
    REGRESSIONS
        .iter()
        .map(|(name, text)| {
            script::parse(&regression_path(name), text).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

/// Replays the recorded regression `name` (with the hang watchdog): it
/// must pass the oracle and show every trigger its header expects.
fn replay(name: &str) {
    let path = regression_path(name);
    let text = REGRESSIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t);
    let r = script::parse(&path, text.unwrap_or("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.name, name,
        "{path}: the name in its header is not its file's"
    );
    let cfg = Config {
        log_messages: true,
        new_ops: sim::ops::NewOps::ALL,
        ..one_thread()
    };
    let pinned = r.bug.split(". ").next().unwrap_or("");
    let outcome = run(&r.scenario, &cfg)
        .unwrap_or_else(|f| panic!("regression {name} ({path}) fails: {f}\nit pinned: {pinned}"));
    let counts = triggers::count(&outcome.messages, &outcome.counts);
    let missing = triggers::missing(&r.expect, &counts);
    assert!(
        missing.is_empty(),
        "regression {name} ({path}) passes but no longer triggers {missing:?}, so it no longer \
         tests what it pinned ({pinned}); it triggered: {}",
        triggers::show(&counts)
    );
}

/// Prints what each regression triggers: `SIM_TRIGGERS=1 cargo test
/// --test simulation show_triggers -- --nocapture`.
#[test]
fn show_triggers() {
    if std::env::var_os("SIM_TRIGGERS").is_none() {
        return;
    }
    let cfg = Config {
        log_messages: true,
        new_ops: sim::ops::NewOps::ALL,
        ..one_thread()
    };
    for r in recorded() {
        let o = run(&r.scenario, &cfg)
            .map(|o| triggers::show(&triggers::count(&o.messages, &o.counts)));
        eprintln!("{}: expect {:?}; {o:?}", r.name, r.expect);
    }
}

/// A regression file nobody replays would pass for ever.
#[test]
fn every_regression_file_is_replayed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sim/regressions");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        let name = file.strip_suffix(".txt").unwrap_or(&file);
        assert!(
            REGRESSIONS.iter().any(|(n, _)| *n == name),
            "{}/{file} is not listed in regressions! in tests/simulation.rs",
            dir.display()
        );
    }
}
