//! The RPC simulation, bounded and seeded: two or three vats in one actix
//! system, joined by in-memory wires, doing pseudo-random steps (calls
//! passing capabilities, answers, promise resolutions, cancellations,
//! releases, bootstraps, disconnects, one message delivered at a time)
//! against a shadow model of who refers to what (see `tests/sim/`).
//!
//! A failure prints its seed and the shortest list of steps found that
//! still fails, as Rust to paste into a regression test below. To replay
//! one seed: `SIM_SEED=<seed> cargo test --test simulation one_seed`.
//! The same driver runs under cargo-fuzz (`fuzz/`).

mod sim;

use std::time::{Duration, Instant};

use sim::driver::{self, Config, Failure, Outcome};
use sim::ops::{self, AsRust, Op, Scenario};

/// Runs a scenario, turning a panic of the driver into a failure.
fn run(scenario: &Scenario, cfg: &Config) -> Result<Outcome, Failure> {
    sim::install_panic_hook();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver::run(scenario, cfg))) {
        Ok(r) => r,
        Err(p) => Err(Failure {
            step: None,
            message: format!(
                "the driver panicked: {}",
                p.downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| p.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            ),
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
            let small = shrink(scenario, cfg, Duration::from_secs(90));
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
    run_seeds(seed_base(), 2, 50_000);
}

#[test]
fn simulation_odd_seeds() {
    run_seeds(seed_base() + 1, 2, 50_000);
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
    let mut scenarios: Vec<(String, Scenario)> = regression_scenarios()
        .into_iter()
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
    ]
}

/// Runs a regression scenario; panics with the failure.
fn regression(s: Scenario) {
    if let Err(f) = run(&s, &Config::default()) {
        panic!("{f}");
    }
}

/// The peer gets a `disembargo` on a question it has already finished and
/// aborts the connection ("disembargo on unknown answer"): vat 0 pipelines
/// a call on its bootstrap question, drops the bootstrap capability (so a
/// `finish` goes out before the return), and the return names a field
/// that leads back to vat 0, which then asks for an embargo on the
/// finished question.
#[test]
#[ignore = "bug: a disembargo is sent on a question already finished; the peer aborts"]
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
#[ignore = "bug: a call pipelined on a question that returns meanwhile is queued again, behind later calls"]
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
#[ignore = "bug: receiverHosted naming a broken export reads as a null capability; the payload is unreadable"]
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
