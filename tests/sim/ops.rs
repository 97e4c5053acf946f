//! The steps of a simulation, and the two ways of choosing them: a seeded
//! pseudo-random generator (the `cargo test` run) and a fuzzer's bytes.
//!
//! Steps name what they act on by small indexes, taken modulo whatever
//! exists when the step runs (the vat's held references, the pending
//! calls...). So every list of steps is valid, and removing steps from a
//! failing list (shrinking) leaves a list that still runs.

/// One step of the simulation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Vat `vat` creates a service object and holds a reference to it.
    NewObject { vat: u8 },
    /// Vat `vat` creates a local promise (it keeps the resolver).
    NewPromise { vat: u8 },
    /// Vat `vat` creates a broken capability.
    NewBroken { vat: u8 },
    /// Vat `vat` asks its peer number `peer` for a bootstrap capability;
    /// the peer answers with its held reference number `offer`.
    Bootstrap { vat: u8, peer: u8, offer: u8 },
    /// Vat `vat` calls its reference `target`, passing its references `caps`.
    Call { vat: u8, target: u8, caps: Vec<u8> },
    /// Delivers the next message of the wire number `wire` (among those
    /// with messages waiting).
    Deliver { wire: u8 },
    /// The caller of outstanding call number `call` gives up on it.
    Cancel { call: u8 },
    /// Vat `vat` drops its reference number `cap`.
    Release { vat: u8, cap: u8 },
    /// The object serving pending call number `call` returns the
    /// references `caps` of its vat.
    Answer { call: u8, caps: Vec<u8> },
    /// The object serving pending call number `call` fails it.
    Fail { call: u8 },
    /// Unresolved promise number `promise` is resolved to its vat's
    /// reference number `target` (skipped if that would make a cycle).
    Resolve { promise: u8, target: u8 },
    /// Unresolved promise number `promise` is broken.
    Break { promise: u8 },
    /// The connection between vat pair number `pair` ends: its wires are
    /// cut (`abort == false`) or one side aborts it.
    Disconnect { pair: u8, abort: bool },
    /// Every waiting message is delivered until nothing moves; then the
    /// exact table invariants are checked.
    Flush,
    /// The caller of outstanding call number `call` takes a pipelined
    /// reference on returned capability number `index` (0 to 2) of its
    /// results, before they come back.
    Pipeline { call: u8, index: u8 },
    /// The object serving pending call number `call` answers it with a
    /// tail call on its vat's reference number `target`: the caller gets
    /// that call's results.
    TailCall { call: u8, target: u8 },
}

/// Which of the steps added after the first fourteen kinds are generated
/// (`Pipeline`, `TailCall`), and so which the driver prepares for (see
/// `driver::Config::new_ops`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NewOps {
    pub pipeline: bool,
    pub tail_calls: bool,
}

impl NewOps {
    pub const ALL: NewOps = NewOps {
        pipeline: true,
        tail_calls: true,
    };
}

/// The new steps of this run: `SIM_NEW_OPS=1` (all), `=pipeline`, `=tail`
/// or `=0` (none); without it, [`NEW_OPS_BY_DEFAULT`].
pub fn new_ops() -> NewOps {
    match std::env::var("SIM_NEW_OPS").as_deref() {
        Ok("0") | Ok("none") => NewOps::default(),
        Ok("pipeline") => NewOps {
            pipeline: true,
            tail_calls: false,
        },
        Ok("tail") => NewOps {
            pipeline: false,
            tail_calls: true,
        },
        Ok(_) => NewOps::ALL,
        Err(_) => NEW_OPS_BY_DEFAULT,
    }
}

/// See [`new_ops`].
pub const NEW_OPS_BY_DEFAULT: NewOps = NewOps::ALL;

/// A whole simulation: how many vats, and the steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    pub vats: u8,
    pub ops: Vec<Op>,
}

impl Scenario {
    /// The number of vats, between 2 and 3.
    pub fn vat_count(&self) -> usize {
        (self.vats as usize).clamp(2, 3)
    }
}

/// splitmix64: small, fast, and good enough to pick steps.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// How often each kind of step is picked (out of the sum).
const WEIGHTS: [(Kind, u64); 16] = [
    (Kind::NewObject, 50),
    (Kind::NewPromise, 35),
    (Kind::NewBroken, 8),
    (Kind::Bootstrap, 40),
    (Kind::Call, 200),
    (Kind::Deliver, 330),
    (Kind::Cancel, 25),
    (Kind::Release, 110),
    (Kind::Answer, 120),
    (Kind::Fail, 15),
    (Kind::Resolve, 45),
    (Kind::Break, 8),
    (Kind::Disconnect, 1),
    (Kind::Flush, 12),
    (Kind::Pipeline, 45),
    (Kind::TailCall, 25),
];

/// The kinds generated: the original ones and the new ones of this run
/// ([`new_ops`]). Without new ones, generation is exactly what it was
/// before they were added.
fn weights() -> Vec<(Kind, u64)> {
    let new = new_ops();
    WEIGHTS
        .iter()
        .copied()
        .filter(|(k, _)| match k {
            Kind::Pipeline => new.pipeline,
            Kind::TailCall => new.tail_calls,
            _ => true,
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    NewObject,
    NewPromise,
    NewBroken,
    Bootstrap,
    Call,
    Deliver,
    Cancel,
    Release,
    Answer,
    Fail,
    Resolve,
    Break,
    Disconnect,
    Flush,
    Pipeline,
    TailCall,
}

/// Which kind of step each kind byte of a fuzzer's input reads as: every
/// kind gets a share of the 256 values close to its weight, and at least one.
fn kind_table() -> [Kind; 256] {
    let weights = weights();
    let total: u64 = weights.iter().map(|(_, w)| w).sum();
    let mut shares: Vec<usize> = weights
        .iter()
        .map(|(_, w)| ((w * 256 / total) as usize).max(1))
        .collect();
    // The most frequent kind (delivering) absorbs the rounding.
    let sum: usize = shares.iter().sum();
    let biggest = (0..shares.len()).max_by_key(|&i| shares[i]).unwrap_or(0);
    shares[biggest] = shares[biggest] + 256 - sum;
    let mut table = [Kind::Flush; 256];
    let mut at = 0;
    for (i, n) in shares.into_iter().enumerate() {
        for slot in table.iter_mut().skip(at).take(n) {
            *slot = weights[i].0;
        }
        at += n;
    }
    table
}

/// Up to three references, fewer more often.
fn cap_list(len: u8, mut next: impl FnMut() -> u8) -> Vec<u8> {
    let n = match len % 8 {
        0..=2 => 0,
        3..=5 => 1,
        6 => 2,
        _ => 3,
    };
    (0..n).map(|_| next()).collect()
}

fn build(kind: Kind, mut next: impl FnMut() -> u8) -> Op {
    match kind {
        Kind::NewObject => Op::NewObject { vat: next() },
        Kind::NewPromise => Op::NewPromise { vat: next() },
        Kind::NewBroken => Op::NewBroken { vat: next() },
        Kind::Bootstrap => Op::Bootstrap {
            vat: next(),
            peer: next(),
            offer: next(),
        },
        Kind::Call => {
            let vat = next();
            let target = next();
            let len = next();
            Op::Call {
                vat,
                target,
                caps: cap_list(len, &mut next),
            }
        }
        Kind::Deliver => Op::Deliver { wire: next() },
        Kind::Cancel => Op::Cancel { call: next() },
        Kind::Release => Op::Release {
            vat: next(),
            cap: next(),
        },
        Kind::Answer => {
            let call = next();
            let len = next();
            Op::Answer {
                call,
                caps: cap_list(len, &mut next),
            }
        }
        Kind::Fail => Op::Fail { call: next() },
        Kind::Resolve => Op::Resolve {
            promise: next(),
            target: next(),
        },
        Kind::Break => Op::Break { promise: next() },
        Kind::Disconnect => Op::Disconnect {
            pair: next(),
            abort: next() & 1 == 1,
        },
        Kind::Flush => Op::Flush,
        Kind::Pipeline => Op::Pipeline {
            call: next(),
            index: next(),
        },
        Kind::TailCall => Op::TailCall {
            call: next(),
            target: next(),
        },
    }
}

/// `steps` pseudo-random steps for 2 or 3 vats, from `seed`.
pub fn generate(seed: u64, steps: usize) -> Scenario {
    let mut rng = Rng::new(seed);
    let vats = 2 + rng.below(2) as u8;
    let weights = weights();
    let total: u64 = weights.iter().map(|(_, w)| w).sum();
    let mut ops = Vec::with_capacity(steps);
    for _ in 0..steps {
        let mut pick = rng.below(total);
        let mut kind = Kind::Flush;
        for &(k, w) in &weights {
            if pick < w {
                kind = k;
                break;
            }
            pick -= w;
        }
        ops.push(build(kind, || rng.byte()));
    }
    Scenario { vats, ops }
}

/// A scenario from a fuzzer's bytes: the first byte picks the number of
/// vats, then each step is a kind byte followed by its operands. Missing
/// bytes read as zero, so every input is a scenario.
pub fn from_bytes(data: &[u8]) -> Scenario {
    let mut input = Input { data, at: 0 };
    let vats = 2 + (input.next() & 1);
    let mut ops = Vec::new();
    let table = kind_table();
    while input.at < data.len() {
        let kind = table[input.next() as usize];
        ops.push(build(kind, || input.next()));
    }
    Scenario { vats, ops }
}

struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn next(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
}

/// The bytes [`from_bytes`] reads back as `scenario` (for seed corpora).
/// With the new steps off ([`new_ops`]), the new steps are left out.
pub fn to_bytes(scenario: &Scenario) -> Vec<u8> {
    let table = kind_table();
    // The first kind byte that reads as each kind.
    let byte_of = |index: usize| -> Option<u8> {
        let kind = WEIGHTS[index].0;
        (0..=255u8).find(|b| table[*b as usize] == kind)
    };
    // Every original kind has a byte.
    let kind_byte = |index: usize| -> u8 { byte_of(index).unwrap_or(0) };
    let caps_len = |n: usize| -> u8 {
        match n {
            0 => 0,
            1 => 3,
            2 => 6,
            _ => 7,
        }
    };
    let mut out = vec![scenario.vats.saturating_sub(2) & 1];
    for op in &scenario.ops {
        match op {
            Op::NewObject { vat } => out.extend([kind_byte(0), *vat]),
            Op::NewPromise { vat } => out.extend([kind_byte(1), *vat]),
            Op::NewBroken { vat } => out.extend([kind_byte(2), *vat]),
            Op::Bootstrap { vat, peer, offer } => out.extend([kind_byte(3), *vat, *peer, *offer]),
            Op::Call { vat, target, caps } => {
                out.extend([kind_byte(4), *vat, *target, caps_len(caps.len())]);
                out.extend(caps.iter().take(3));
            }
            Op::Deliver { wire } => out.extend([kind_byte(5), *wire]),
            Op::Cancel { call } => out.extend([kind_byte(6), *call]),
            Op::Release { vat, cap } => out.extend([kind_byte(7), *vat, *cap]),
            Op::Answer { call, caps } => {
                out.extend([kind_byte(8), *call, caps_len(caps.len())]);
                out.extend(caps.iter().take(3));
            }
            Op::Fail { call } => out.extend([kind_byte(9), *call]),
            Op::Resolve { promise, target } => out.extend([kind_byte(10), *promise, *target]),
            Op::Break { promise } => out.extend([kind_byte(11), *promise]),
            Op::Disconnect { pair, abort } => out.extend([kind_byte(12), *pair, u8::from(*abort)]),
            Op::Flush => out.push(kind_byte(13)),
            Op::Pipeline { call, index } => {
                if let Some(k) = byte_of(14) {
                    out.extend([k, *call, *index]);
                }
            }
            Op::TailCall { call, target } => {
                if let Some(k) = byte_of(15) {
                    out.extend([k, *call, *target]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_through_scenarios() {
        for seed in 0..50 {
            let s = generate(seed, 200);
            assert_eq!(from_bytes(&to_bytes(&s)), s, "seed {seed}");
        }
    }
}
