//! Which connections a call or a reference may cross, so that ending one
//! connection relaxes the oracle only for what crossed it.
//!
//! Each vat pair's connection is one bit (`pair_bit`). A reference notes
//! the connections it came through when it was made (`RefRec::via`): a
//! bootstrap adds its connection to the offered reference's route; a
//! capability passed in a call or returned in its results adds the route
//! of the call (and of the reference passed or returned). A reference's
//! route ([`Model::route`]) is that, plus the routes of what its promise
//! resolved to, followed as calls would follow it (resolutions, and
//! pipelined references through their call). Calls on a reference cross
//! only connections of its route: routing can be shorter than that (an
//! embargo lifted onto a local object), never elsewhere, since capabilities
//! only travel along the connections they were passed on.
//!
//! Once a connection is ended (`Model::dead`), a call whose route crosses
//! it may fail with a disconnection (not any other error), and an object
//! may be released while a reference whose route crosses it still means
//! it; every other call and reference is checked exactly.

use super::model::{CallId, Meaning, Model, RefId};

/// Bits for "anything": the answer when a walk is too deep to trust.
const ALL: u8 = 0xff;

/// Walks deeper than this give up (and say "anything"); the driver never
/// makes a cycle, so only a very long chain gets there.
const DEPTH: usize = 256;

/// The bit of the connection between vats `a` and `b`: pairs are numbered
/// as the driver makes them, `(0, 1), (0, 2), (1, 2)`.
pub fn pair_bit(vats: usize, a: usize, b: usize) -> u8 {
    let (a, b) = (a.min(b), a.max(b));
    let mut i = 0;
    for x in 0..vats {
        for y in x + 1..vats {
            if (x, y) == (a, b) {
                return 1 << i;
            }
            i += 1;
        }
    }
    0
}

impl Model {
    /// The connections calls on reference `r` may cross.
    pub fn route(&self, r: RefId) -> u8 {
        self.refs[r].via | self.walk(self.refs[r].meaning, 0)
    }

    /// The connections call `c` (and the tail calls answering it) may
    /// cross, with those of the references it passes.
    pub fn reach(&self, c: CallId) -> u8 {
        self.reach_in(c, 0)
    }

    /// The connections the `i`th capability of call `c`'s results came
    /// through (the route of what the final call's object returned there,
    /// as it was then).
    pub fn result_via(&self, c: CallId, i: usize) -> u8 {
        let mut call = c;
        for _ in 0..DEPTH {
            match self.calls[call].tail {
                Some(y) => call = y,
                None => return self.calls[call].answer_via.get(i).copied().unwrap_or(0),
            }
        }
        ALL
    }

    /// Some connection of `route` has been ended.
    pub fn crosses_dead(&self, route: u8) -> bool {
        route & self.dead != 0
    }

    fn reach_in(&self, c: CallId, depth: usize) -> u8 {
        if depth > DEPTH {
            return ALL;
        }
        let rec = &self.calls[c];
        let target =
            self.refs[rec.target].via | self.walk(self.refs[rec.target].meaning, depth + 1);
        let params = rec.param_via.iter().fold(0, |a, b| a | b);
        let tail = rec.tail.map_or(0, |y| self.reach_in(y, depth + 1));
        target | params | tail
    }

    fn walk(&self, m: Meaning, depth: usize) -> u8 {
        if depth > DEPTH {
            return ALL;
        }
        let Meaning::Promise(p) = m else {
            return 0;
        };
        let rec = &self.promises[p];
        if let Some(next) = rec.resolution {
            return rec.resolved_via | self.walk(next, depth + 1);
        }
        let Some((call, i)) = rec.pipelined else {
            return 0;
        };
        let through = self.reach_in(call, depth + 1) | self.result_via(call, i);
        match self.outcome(call) {
            Some(Ok(ms)) => through | ms.get(i).map_or(0, |m| self.walk(*m, depth + 1)),
            _ => through,
        }
    }
}

/// How much of a run of seeds the oracle checked loosely, because a
/// connection had been ended: now (only what crossed an ended connection)
/// and as it was before (everything once any connection had ended).
#[derive(Default)]
pub struct Relaxation {
    pub seeds: u64,
    /// Seeds where a connection was ended (formerly: soft from then on).
    seeds_anywhere: u64,
    /// Seeds where some call or release was actually checked loosely.
    seeds_relaxed: u64,
}

impl Relaxation {
    pub fn add(&mut self, c: &super::model::Counts) {
        self.seeds += 1;
        self.seeds_anywhere += u64::from(c.disconnects > 0);
        self.seeds_relaxed += u64::from(c.relaxed_calls + c.relaxed_releases > 0);
    }

    pub fn report(&self, t: &super::model::Counts) -> String {
        let pct = |a: u64, b: u64| 100.0 * a as f64 / b.max(1) as f64;
        let returned = t.calls_returned_ok + t.calls_returned_err;
        format!(
            "relaxed by an ended connection: seeds {} of {} ({:.1}%; before, any ended \
             connection made the whole seed soft: {} seeds, {:.1}%); calls {} of {} returned \
             ({:.2}%; before {}, {:.2}%); releases {} of {} ({:.2}%; before {}, {:.2}%)",
            self.seeds_relaxed,
            self.seeds,
            pct(self.seeds_relaxed, self.seeds),
            self.seeds_anywhere,
            pct(self.seeds_anywhere, self.seeds),
            t.relaxed_calls,
            returned,
            pct(t.relaxed_calls, returned),
            t.relaxed_calls_anywhere,
            pct(t.relaxed_calls_anywhere, returned),
            t.relaxed_releases,
            t.objects_dropped,
            pct(t.relaxed_releases, t.objects_dropped),
            t.relaxed_releases_anywhere,
            pct(t.relaxed_releases_anywhere, t.objects_dropped),
        )
    }
}
