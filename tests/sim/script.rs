//! Recorded scenarios as text: the regression files under
//! `tests/sim/regressions/`, and what a failing run prints to paste into a
//! new one.
//!
//! A file is a header, then one step per line. `#` starts a comment (to
//! the end of the line); blank lines are ignored.
//!
//! ```text
//! # Why this scenario matters, in as many comment lines as it takes.
//! name: no_disembargo_on_a_question_finished_before_its_return
//! bug: a disembargo on a question finished before its return
//! seed: none
//! expect: pipelined-call, embargo
//! vats: 2
//!
//! new_object vat=0
//! bootstrap vat=1 peer=0 offer=0
//! call vat=0 target=1            # caps=1,2 passes references 1 and 2
//! release vat=0 cap=1
//! flush
//! ```
//!
//! Header lines are `key: value` and come before the first step: `name`
//! (the test's name, and the file's), `bug` (what it pinned; may be given
//! on several lines, which are joined), `seed` (the seed it was shrunk from,
//! or `none`), `expect` (the triggers the run must show, see
//! [`super::triggers`]; may be empty) and `vats` (2 or 3). Each step is the
//! name of an [`Op`] in snake case followed by its fields as `key=value`,
//! exactly the fields of the `Op` (`caps` may be left out when empty;
//! `abort` is `true` or `false`).

use std::fmt;

use super::ops::{Op, Scenario};

/// One recorded scenario with its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub name: String,
    pub bug: String,
    /// The seed it came from, if any.
    pub seed: Option<u64>,
    /// The triggers the replay must show (see [`super::triggers`]).
    pub expect: Vec<String>,
    pub scenario: Scenario,
}

/// Reads a recorded scenario; `file` names it in errors, which look like
/// `tests/sim/regressions/x.txt:12: unknown step "cal"`.
pub fn parse(file: &str, text: &str) -> Result<Recorded, String> {
    let mut header = Header::default();
    let mut ops = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let at = |msg: String| format!("{file}:{}: {msg}", i + 1);
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some(key) = first.strip_suffix(':') {
            if !ops.is_empty() {
                return Err(at(format!("header line \"{key}:\" after the first step")));
            }
            let value = line[first.len()..].trim();
            header.set(key, value).map_err(at)?;
        } else {
            ops.push(step(line).map_err(at)?);
        }
    }
    header.finish(ops).map_err(|m| format!("{file}: {m}"))
}

#[derive(Default)]
struct Header {
    name: Option<String>,
    bug: Vec<String>,
    seed: Option<Option<u64>>,
    expect: Option<Vec<String>>,
    vats: Option<u8>,
}

impl Header {
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let twice = || format!("\"{key}:\" given twice");
        match key {
            "name" if self.name.is_some() => return Err(twice()),
            "name" => self.name = Some(value.to_string()),
            "bug" => self.bug.push(value.to_string()),
            "seed" if self.seed.is_some() => return Err(twice()),
            "seed" if value == "none" => self.seed = Some(None),
            "seed" => self.seed = Some(Some(number(key, value)?)),
            "expect" if self.expect.is_some() => return Err(twice()),
            "expect" => {
                let list: Vec<String> = value
                    .split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect();
                if let Some(bad) = list.iter().find(|t| !super::triggers::known(t)) {
                    return Err(format!(
                        "unknown trigger \"{bad}\" (known: {})",
                        super::triggers::NAMES.join(", ")
                    ));
                }
                self.expect = Some(list);
            }
            "vats" if self.vats.is_some() => return Err(twice()),
            "vats" => match value {
                "2" => self.vats = Some(2),
                "3" => self.vats = Some(3),
                _ => return Err(format!("vats must be 2 or 3, not \"{value}\"")),
            },
            _ => return Err(format!("unknown header \"{key}:\"")),
        }
        Ok(())
    }

    fn finish(self, ops: Vec<Op>) -> Result<Recorded, String> {
        let missing = |k: &str| format!("no \"{k}:\" line in the header");
        Ok(Recorded {
            name: self.name.ok_or_else(|| missing("name"))?,
            bug: if self.bug.is_empty() {
                return Err(missing("bug"));
            } else {
                self.bug.join(" ")
            },
            seed: self.seed.ok_or_else(|| missing("seed"))?,
            expect: self.expect.ok_or_else(|| missing("expect"))?,
            scenario: Scenario {
                vats: self.vats.ok_or_else(|| missing("vats"))?,
                ops,
            },
        })
    }
}

fn number(key: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{key} must be a number, not \"{value}\""))
}

/// The fields of one step line, taken out one by one by name.
struct Fields<'a> {
    kind: &'a str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Fields<'a> {
    fn take(&mut self, key: &str) -> Option<&'a str> {
        let at = self.pairs.iter().position(|(k, _)| *k == key)?;
        Some(self.pairs.remove(at).1)
    }

    fn byte(&mut self, key: &str) -> Result<u8, String> {
        let v = self
            .take(key)
            .ok_or_else(|| format!("{} needs {key}=", self.kind))?;
        v.parse()
            .map_err(|_| format!("{key} must be a number from 0 to 255, not \"{v}\""))
    }

    fn list(&mut self, key: &str) -> Result<Vec<u8>, String> {
        let Some(v) = self.take(key) else {
            return Ok(Vec::new());
        };
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("{key} must be numbers separated by commas, not \"{v}\""))
            })
            .collect()
    }

    fn flag(&mut self, key: &str) -> Result<bool, String> {
        match self.take(key) {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(format!("{key} must be true or false, not \"{v}\"")),
            None => Err(format!("{} needs {key}=", self.kind)),
        }
    }

    fn done(self, op: Op) -> Result<Op, String> {
        match self.pairs.first() {
            Some((k, _)) => Err(format!("{} has no field \"{k}\"", self.kind)),
            None => Ok(op),
        }
    }
}

/// One step line (comment removed, not empty).
fn step(line: &str) -> Result<Op, String> {
    let mut words = line.split_whitespace();
    let kind = words.next().unwrap_or("");
    let mut pairs = Vec::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("\"{w}\" is not key=value"))?;
        if pairs.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("field \"{k}\" given twice"));
        }
        pairs.push((k, v));
    }
    let mut f = Fields { kind, pairs };
    let op = match kind {
        "new_object" => Op::NewObject {
            vat: f.byte("vat")?,
        },
        "new_promise" => Op::NewPromise {
            vat: f.byte("vat")?,
        },
        "new_broken" => Op::NewBroken {
            vat: f.byte("vat")?,
        },
        "bootstrap" => Op::Bootstrap {
            vat: f.byte("vat")?,
            peer: f.byte("peer")?,
            offer: f.byte("offer")?,
        },
        "call" => Op::Call {
            vat: f.byte("vat")?,
            target: f.byte("target")?,
            caps: f.list("caps")?,
        },
        "deliver" => Op::Deliver {
            wire: f.byte("wire")?,
        },
        "cancel" => Op::Cancel {
            call: f.byte("call")?,
        },
        "release" => Op::Release {
            vat: f.byte("vat")?,
            cap: f.byte("cap")?,
        },
        "answer" => Op::Answer {
            call: f.byte("call")?,
            caps: f.list("caps")?,
        },
        "fail" => Op::Fail {
            call: f.byte("call")?,
        },
        "resolve" => Op::Resolve {
            promise: f.byte("promise")?,
            target: f.byte("target")?,
        },
        "break" => Op::Break {
            promise: f.byte("promise")?,
        },
        "disconnect" => Op::Disconnect {
            pair: f.byte("pair")?,
            abort: f.flag("abort")?,
        },
        "flush" => Op::Flush,
        "pipeline" => Op::Pipeline {
            call: f.byte("call")?,
            index: f.byte("index")?,
        },
        "tail_call" => Op::TailCall {
            call: f.byte("call")?,
            target: f.byte("target")?,
        },
        _ => return Err(format!("unknown step \"{kind}\"")),
    };
    f.done(op)
}

/// A step as a line of the format.
pub struct Line<'a>(pub &'a Op);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let caps = |c: &[u8]| {
            let list: Vec<String> = c.iter().map(u8::to_string).collect();
            if list.is_empty() {
                String::new()
            } else {
                format!(" caps={}", list.join(","))
            }
        };
        match self.0 {
            Op::NewObject { vat } => write!(f, "new_object vat={vat}"),
            Op::NewPromise { vat } => write!(f, "new_promise vat={vat}"),
            Op::NewBroken { vat } => write!(f, "new_broken vat={vat}"),
            Op::Bootstrap { vat, peer, offer } => {
                write!(f, "bootstrap vat={vat} peer={peer} offer={offer}")
            }
            Op::Call {
                vat,
                target,
                caps: c,
            } => {
                write!(f, "call vat={vat} target={target}{}", caps(c))
            }
            Op::Deliver { wire } => write!(f, "deliver wire={wire}"),
            Op::Cancel { call } => write!(f, "cancel call={call}"),
            Op::Release { vat, cap } => write!(f, "release vat={vat} cap={cap}"),
            Op::Answer { call, caps: c } => write!(f, "answer call={call}{}", caps(c)),
            Op::Fail { call } => write!(f, "fail call={call}"),
            Op::Resolve { promise, target } => {
                write!(f, "resolve promise={promise} target={target}")
            }
            Op::Break { promise } => write!(f, "break promise={promise}"),
            Op::Disconnect { pair, abort } => write!(f, "disconnect pair={pair} abort={abort}"),
            Op::Flush => write!(f, "flush"),
            Op::Pipeline { call, index } => write!(f, "pipeline call={call} index={index}"),
            Op::TailCall { call, target } => write!(f, "tail_call call={call} target={target}"),
        }
    }
}

/// A scenario as a regression file to fill in (header placeholders, then
/// its steps).
pub struct AsFile<'a> {
    pub scenario: &'a Scenario,
    pub seed: Option<u64>,
}

impl fmt::Display for AsFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "name: <test name, also the file's name>")?;
        writeln!(f, "bug: <what went wrong>")?;
        match self.seed {
            Some(s) => writeln!(f, "seed: {s}")?,
            None => writeln!(f, "seed: none")?,
        }
        writeln!(f, "expect: <triggers, see tests/sim/triggers.rs>")?;
        writeln!(f, "vats: {}", self.scenario.vats)?;
        writeln!(f)?;
        for op in &self.scenario.ops {
            writeln!(f, "{}", Line(op))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_through_lines() {
        for seed in 0..30 {
            let s = super::super::ops::generate(seed, 200);
            let text = format!("name: x\nbug: y\nseed: {seed}\nexpect:\nvats: {}\n", s.vats);
            let body: String = s.ops.iter().map(|o| format!("{}\n", Line(o))).collect();
            let r = parse("generated", &(text + &body)).unwrap();
            assert_eq!(r.scenario, s, "seed {seed}");
        }
    }

    #[test]
    fn a_bad_line_is_named_with_its_file_and_number() {
        let text = "name: x\nbug: y\nseed: none\nexpect:\nvats: 2\n\nflush\ncal vat=1\n";
        let e = parse("f.txt", text).unwrap_err();
        assert_eq!(e, "f.txt:8: unknown step \"cal\"");
        let e = parse("f.txt", "name: x\ncall vat=1 target=x\n").unwrap_err();
        assert!(e.starts_with("f.txt:2: target must be a number"), "{e}");
        let e = parse("f.txt", "name: x\nflush\n").unwrap_err();
        assert_eq!(e, "f.txt: no \"bug:\" line in the header");
    }
}
