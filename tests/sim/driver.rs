//! The multi-vat driver: two or three vats in one actix system on one
//! thread, each pair joined by a connection over in-memory wires, doing
//! the steps of a [`Scenario`] one at a time and letting the runtime run
//! until it is quiet after each. With [`Config::arbiters`] above 1 the
//! connections run on arbiters of their own (see `super::spread`); then
//! frames still arrive when the driver says, but what the threads do in
//! between is not reproducible to the instruction.
//!
//! Checked as it runs (see [`Model`] for the call checks):
//! - every call reaches exactly the object its reference means, in the
//!   order it was sent on that reference (E-order; cancelled calls may be
//!   missing), and fails only if its target is broken or its object failed
//!   it;
//! - an object is never released while a vat still holds a reference that
//!   means it;
//! - after every step, every connection that was not ended on purpose is
//!   still open, and every table is within its configured bound;
//! - after every `Flush` (all messages delivered, runtime quiet), for each
//!   connection the questions of one side are the answers of the other,
//!   the imports of one side are the exports of the other, and no embargo
//!   is left;
//! - at teardown (every promise settled, every pending call answered,
//!   every reference dropped, everything delivered) every call that was not
//!   cancelled has its outcome, every table is empty, no capability is
//!   alive, and once the connections are closed no runtime actor is left.
//!
//! Relaxed: once a connection has been ended on purpose, a call that may
//! have crossed it (its reference, a reference it passes, or a tail call
//! answering it came through that connection; see `super::routes`) may
//! fail with a disconnection (`ErrorKind::Disconnected`), and an object
//! may be released while the only references that still mean it came
//! through that connection. Every other call and release is checked
//! exactly, and calls reaching the wrong object or out of order are always
//! violations.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use capnp_actix::connection::{
    bootstrap_fn, start_connection, ConnectionHandle, ConnectionOptions,
};
use capnp_actix::proto::captp::{ConnLimits, TableSizes};
use capnp_actix::schemas::fuzz_capnp::fuzz;
use capnp_actix::{Cap, CapRef};
use futures::future::abortable;
use futures::FutureExt;

use super::model::{
    Counts, FuzzObject, Meaning, Model, ObjId, ObjRec, PromiseRec, RefId, Reply, PIPELINE_FIELDS,
};
use super::ops::{NewOps, Op, Scenario};
use super::spread::{self, Spread};
use super::wire::{self, Activity, Wire};

/// How the driver runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Scheduler rounds without any observable activity after which the
    /// runtime counts as quiet.
    pub idle_rounds: usize,
    /// Rounds after which a runtime that never goes quiet is a failure.
    pub max_rounds: usize,
    /// Ask every connection for its table sizes after every step.
    pub inspect_every_step: bool,
    /// Keep a copy of every frame written (see [`Outcome::frames`]).
    pub capture: bool,
    /// Note every frame written and delivered (see [`Outcome::messages`]).
    pub log_messages: bool,
    /// What the new steps need (see [`super::ops::new_ops`]): for
    /// `pipeline`, calls keep their pipeline while outstanding and objects
    /// write wide results; for `tail_calls`, connections send tail calls
    /// back with `sendResultsTo.yourself`.
    pub new_ops: NewOps,
    /// How many arbiters (threads) the connections run on (`SIM_ARBITERS`,
    /// see [`arbiters`]): 1, everything on the driver's thread, each run
    /// reproducible from its steps; above, see `super::spread`.
    pub arbiters: usize,
}

/// `SIM_ARBITERS`, else 1.
pub fn arbiters() -> usize {
    std::env::var("SIM_ARBITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            idle_rounds: 8,
            max_rounds: 200_000,
            inspect_every_step: true,
            capture: false,
            log_messages: false,
            new_ops: super::ops::new_ops(),
            arbiters: arbiters(),
        }
    }
}

/// What a successful run reports.
#[derive(Debug, Default)]
pub struct Outcome {
    pub counts: Counts,
    /// With [`Config::capture`]: the frames written on each wire.
    pub frames: Vec<Vec<Vec<u8>>>,
    /// With [`Config::log_messages`]: every frame written and delivered,
    /// in order.
    pub messages: Vec<wire::Logged>,
}

/// Why a run failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The step at which it was seen (`None`: at teardown).
    pub step: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            Some(s) => write!(f, "after step {s}: {}", self.message),
            None => write!(f, "at teardown: {}", self.message),
        }
    }
}

/// The limits every connection runs with.
fn limits() -> ConnLimits {
    ConnLimits::default()
}

type Offers = Arc<Mutex<HashMap<u64, CapRef>>>;

/// The connection between vats `a` and `b`.
struct Pair {
    a: usize,
    b: usize,
    conn_a: ConnectionHandle,
    conn_b: ConnectionHandle,
    /// `a` to `b`, then `b` to `a`.
    wires: [Wire; 2],
    /// Not ended on purpose.
    live: bool,
}

impl Pair {
    fn conn_of(&self, vat: usize) -> &ConnectionHandle {
        if vat == self.a {
            &self.conn_a
        } else {
            &self.conn_b
        }
    }
}

/// A running simulation.
pub struct Sim {
    vats: usize,
    model: Rc<RefCell<Model>>,
    pairs: Vec<Pair>,
    /// Per vat: capabilities offered to the next bootstrap asking for them.
    offers: Vec<Offers>,
    next_offer: u64,
    released: Rc<RefCell<Vec<ObjId>>>,
    activity: Activity,
    log: wire::Log,
    cfg: Config,
    /// The arbiters the connections run on, if not this thread's.
    spread: Option<Spread>,
}

fn lock(o: &Offers) -> std::sync::MutexGuard<'_, HashMap<u64, CapRef>> {
    o.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sim {
    /// Starts `vats` vats, each pair connected, its connection on this
    /// thread or on `spread`'s arbiters. Call inside an actix system.
    pub fn new(vats: usize, cfg: Config, spread: Option<Spread>) -> Self {
        let activity = Activity::default();
        let offers: Vec<Offers> = (0..vats).map(|_| Offers::default()).collect();
        let log = wire::Log::default();
        let mut pairs = Vec::new();
        for a in 0..vats {
            for b in a + 1..vats {
                let (end_a, end_b, ab, ba) = wire::pair(&activity);
                ab.set_label(&format!("{a}>{b} "));
                ba.set_label(&format!("{b}>{a} "));
                if cfg.capture {
                    ab.start_capture();
                    ba.start_capture();
                }
                if cfg.log_messages {
                    ab.start_log(&log);
                    ba.start_log(&log);
                }
                let options =
                    |vat: usize| {
                        let offers = offers[vat].clone();
                        ConnectionOptions {
                            tables: limits(),
                            bootstrap: Some(bootstrap_fn(move |id: &[u8]| {
                                let key = <[u8; 8]>::try_from(id).map(u64::from_le_bytes).map_err(
                                    |_| capnp::Error::failed("bootstrap id is not an offer".into()),
                                )?;
                                lock(&offers).remove(&key).ok_or_else(|| {
                                    capnp::Error::failed(format!("no offer {key} (asked twice?)"))
                                })
                            })),
                            send_results_to_yourself: cfg.new_ops.tail_calls,
                            ..Default::default()
                        }
                    };
                let (conn_a, conn_b) = match &spread {
                    None => (
                        start_connection(end_a, options(a)),
                        start_connection(end_b, options(b)),
                    ),
                    Some(s) => (
                        s.start_end(pairs.len(), 0, end_a, options(a)),
                        s.start_end(pairs.len(), 1, end_b, options(b)),
                    ),
                };
                pairs.push(Pair {
                    a,
                    b,
                    conn_a,
                    conn_b,
                    wires: [ab, ba],
                    live: true,
                });
            }
        }
        Sim {
            vats,
            model: Rc::new(RefCell::new(Model::new(vats, activity.clone()))),
            pairs,
            offers,
            next_offer: 0,
            released: Rc::default(),
            activity,
            log,
            cfg,
            spread,
        }
    }

    /// Runs every step, then the teardown.
    pub async fn execute(mut self, ops: &[Op]) -> Result<Outcome, Failure> {
        self.settle().await.map_err(|m| fail(Some(0), m))?;
        let trace = self.model.borrow().trace;
        for (i, op) in ops.iter().enumerate() {
            if trace {
                eprintln!("step {i}: {op:?}");
            }
            self.step(op).await;
            let checked = self.check_step(matches!(op, Op::Flush)).await;
            checked.map_err(|m| fail(Some(i), m))?;
        }
        self.teardown().await.map_err(|m| fail(None, m))?;
        let counts = self.model.borrow().counts;
        let frames = self
            .pairs
            .iter()
            .flat_map(|p| p.wires.iter().map(Wire::captured))
            .collect();
        let messages = wire::lock(&self.log).clone();
        Ok(Outcome {
            counts,
            frames,
            messages,
        })
    }

    fn vat(&self, v: u8) -> usize {
        v as usize % self.vats
    }

    /// The reference number `i` (modulo) held by `vat`.
    fn held(&self, vat: usize, i: u8) -> Option<RefId> {
        let m = self.model.borrow();
        let held = &m.held[vat];
        (!held.is_empty()).then(|| held[i as usize % held.len()])
    }

    fn cap_of(&self, r: RefId) -> Cap<fuzz::Client> {
        // Held references always have their handle.
        self.model.borrow().refs[r]
            .cap
            .clone()
            .unwrap_or_else(|| Cap::broken(capnp::Error::failed("driver bug: released".into())))
    }

    fn meaning(&self, r: RefId) -> Meaning {
        self.model.borrow().refs[r].meaning
    }

    fn pair_of(&self, a: usize, b: usize) -> &Pair {
        let (a, b) = (a.min(b), a.max(b));
        self.pairs
            .iter()
            .find(|p| p.a == a && p.b == b)
            .unwrap_or(&self.pairs[0])
    }

    async fn step(&mut self, op: &Op) {
        match op {
            Op::NewObject { .. }
            | Op::NewPromise { .. }
            | Op::NewBroken { .. }
            | Op::Bootstrap { .. } => self.make(op),
            Op::Call { .. } => self.call(op),
            Op::Cancel { .. }
            | Op::Answer { .. }
            | Op::Fail { .. }
            | Op::Pipeline { .. }
            | Op::TailCall { .. } => self.serve(op),
            Op::Flush => {
                let _ = self.flush().await;
            }
            _ => self.act(op),
        }
    }

    /// Makes a reference: a new object, promise or broken capability, or a bootstrap.
    fn make(&mut self, op: &Op) {
        match op {
            Op::NewObject { vat } => {
                let vat = self.vat(*vat);
                let id = {
                    let mut m = self.model.borrow_mut();
                    m.objects.push(ObjRec { vat, alive: true });
                    m.objects.len() - 1
                };
                let cap = Cap::<fuzz::Client>::new(FuzzObject {
                    id,
                    wide: self.cfg.new_ops.pipeline,
                    vat,
                    model: Rc::downgrade(&self.model),
                    released: self.released.clone(),
                    activity: self.activity.clone(),
                });
                self.model
                    .borrow_mut()
                    .add_ref(vat, Meaning::Object(id), cap);
            }
            Op::NewPromise { vat } => {
                let vat = self.vat(*vat);
                let (cap, resolver) = Cap::<fuzz::Client>::promise();
                let mut m = self.model.borrow_mut();
                m.promises.push(PromiseRec {
                    vat,
                    resolution: None,
                    resolver: Some(resolver),
                    pipelined: None,
                    resolved_via: 0,
                });
                let p = m.promises.len() - 1;
                m.add_ref(vat, Meaning::Promise(p), cap);
            }
            Op::NewBroken { vat } => {
                let vat = self.vat(*vat);
                let cap = Cap::broken(capnp::Error::failed("broken by the simulation".into()));
                self.model.borrow_mut().add_ref(vat, Meaning::Broken, cap);
            }
            Op::Bootstrap { vat, peer, offer } => {
                let vat = self.vat(*vat);
                let peer = (vat + 1 + *peer as usize % (self.vats - 1)) % self.vats;
                let Some(offered) = self.held(peer, *offer) else {
                    return;
                };
                let key = self.next_offer;
                self.next_offer += 1;
                lock(&self.offers[peer]).insert(key, self.cap_of(offered).raw().clone());
                let meaning = self.meaning(offered);
                let raw = self
                    .pair_of(vat, peer)
                    .conn_of(vat)
                    .bootstrap(&key.to_le_bytes());
                let mut m = self.model.borrow_mut();
                let via = m.route(offered) | super::routes::pair_bit(self.vats, vat, peer);
                m.add_ref_via(vat, meaning, Cap::from_raw(raw), via);
            }
            _ => {}
        }
    }

    /// Makes a call.
    fn call(&mut self, op: &Op) {
        let Op::Call { vat, target, caps } = op else {
            return;
        };
        let vat = self.vat(*vat);
        let Some(target) = self.held(vat, *target) else {
            return;
        };
        let passed: Vec<RefId> = caps.iter().filter_map(|c| self.held(vat, *c)).collect();
        let params = passed.iter().map(|r| self.meaning(*r)).collect();
        let (call, seq) = {
            let mut m = self.model.borrow_mut();
            let (call, seq) = m.add_call(vat, target, params);
            m.calls[call].param_via = passed.iter().map(|r| m.route(*r)).collect();
            (call, seq)
        };
        let client = self.cap_of(target).client();
        let mut req = client.call_request();
        {
            let mut p = req.get();
            p.set_ref(target as u64);
            p.set_seq(seq);
            let mut list = p.init_caps(passed.len() as u32);
            for (i, r) in passed.iter().enumerate() {
                list.set(i as u32, self.cap_of(*r).client().client.hook);
            }
        }
        // Untyped, for the pipeline's fields beyond the schema's.
        let sent = req.hook.send();
        if self.cfg.new_ops.pipeline {
            self.model.borrow_mut().calls[call].pipeline = Some(sent.pipeline);
        } else {
            drop(sent.pipeline);
        }
        let promise = sent.promise;
        let model = self.model.clone();
        let (task, abort) = abortable(async move {
            let outcome = promise.await.and_then(|response| {
                response
                    .get()?
                    .get_as::<fuzz::call_results::Reader<'_>>()?
                    .get_caps()?
                    .iter()
                    .map(|c| c.map(|c| Cap::<fuzz::Client>::from_client(&c)))
                    .collect::<Result<Vec<_>, _>>()
            });
            model.borrow_mut().returned(call, outcome);
            let pipeline = model.borrow_mut().calls[call].pipeline.take();
            drop(pipeline);
        });
        self.model.borrow_mut().calls[call].abort = Some(abort);
        actix_rt::spawn(task.map(drop));
    }

    /// What a caller or a serving object does with a call: cancel it,
    /// answer it, fail it, pipeline on it, answer it with a tail call.
    fn serve(&mut self, op: &Op) {
        match op {
            Op::Cancel { call } => {
                let mut m = self.model.borrow_mut();
                if m.outstanding.is_empty() {
                    return;
                }
                let n = *call as usize % m.outstanding.len();
                let c = m.outstanding.remove(n);
                m.calls[c].cancelled = true;
                m.counts.calls_cancelled += 1;
                if let Some(a) = m.calls[c].abort.take() {
                    a.abort();
                }
                // The pipeline goes too (the pipelined references taken on
                // it still want the answer: the call goes on while any is
                // held).
                let pipeline = m.calls[c].pipeline.take();
                drop(m);
                drop(pipeline);
            }
            Op::Answer { call, caps } => {
                let Some((vat, n)) = self.pick_pending(*call) else {
                    return;
                };
                let chosen: Vec<RefId> = caps.iter().filter_map(|c| self.held(vat, *c)).collect();
                let handles: Vec<Cap<fuzz::Client>> =
                    chosen.iter().map(|r| self.cap_of(*r)).collect();
                let meanings: Vec<Meaning> = chosen.iter().map(|r| self.meaning(*r)).collect();
                let mut m = self.model.borrow_mut();
                let call = m.pending[n].call;
                m.calls[call].answer = Some(Ok(meanings));
                m.calls[call].answer_via = chosen.iter().map(|r| m.route(*r)).collect();
                if m.has_cycle() {
                    // A pipelined reference on this very call, or one
                    // waiting on it: not made on purpose.
                    m.calls[call].answer = None;
                    return;
                }
                let p = m.pending.remove(n);
                drop(m);
                let _ = p.reply.send(Reply::Caps(Ok(handles)));
            }
            Op::Fail { call } => {
                let mut m = self.model.borrow_mut();
                m.prune_pending();
                if m.pending.is_empty() {
                    return;
                }
                let n = *call as usize % m.pending.len();
                let p = m.pending.remove(n);
                m.calls[p.call].answer = Some(Err(()));
                drop(m);
                let _ = p.reply.send(Reply::Caps(Err(capnp::Error::failed(
                    "failed by the simulation".into(),
                ))));
            }
            Op::Pipeline { call, index } => {
                let mut m = self.model.borrow_mut();
                let open: Vec<usize> = m
                    .outstanding
                    .iter()
                    .copied()
                    .filter(|&c| m.calls[c].pipeline.is_some())
                    .collect();
                if open.is_empty() {
                    return;
                }
                let c = open[*call as usize % open.len()];
                let index = *index as usize % PIPELINE_FIELDS as usize;
                let Some(pipeline) = &m.calls[c].pipeline else {
                    return;
                };
                let hook = pipeline.get_pointer_field(1 + index as u16).as_cap();
                let client: fuzz::Client = capnp::capability::FromClientHook::new(hook);
                let cap = Cap::<fuzz::Client>::from_client(&client);
                drop(client);
                let vat = m.calls[c].caller;
                m.add_pipelined(vat, c, index, cap);
            }
            Op::TailCall { call, target } => {
                let Some((vat, n)) = self.pick_pending(*call) else {
                    return;
                };
                let Some(target) = self.held(vat, *target) else {
                    return;
                };
                let handle = self.cap_of(target);
                let mut m = self.model.borrow_mut();
                let x = m.pending[n].call;
                let Some((_, seq)) = m.add_tail_call(vat, x, target) else {
                    return;
                };
                let p = m.pending.remove(n);
                drop(m);
                let _ = p.reply.send(Reply::Tail {
                    target: handle,
                    r: target as u64,
                    seq,
                });
            }
            _ => {}
        }
    }

    /// Delivers, releases, resolves, breaks or disconnects.
    fn act(&mut self, op: &Op) {
        match op {
            Op::Deliver { wire } => {
                let waiting: Vec<&Wire> = self
                    .pairs
                    .iter()
                    .flat_map(|p| p.wires.iter())
                    .filter(|w| w.queued() > 0)
                    .collect();
                if !waiting.is_empty() {
                    waiting[*wire as usize % waiting.len()].deliver_one();
                    self.model.borrow_mut().counts.messages_delivered += 1;
                }
            }
            Op::Release { vat, cap } => {
                let vat = self.vat(*vat);
                let mut m = self.model.borrow_mut();
                if m.held[vat].is_empty() {
                    return;
                }
                let i = *cap as usize % m.held[vat].len();
                let r = m.held[vat].remove(i);
                let handle = m.refs[r].cap.take();
                drop(m);
                drop(handle);
            }
            Op::Resolve { promise, target } => {
                let Some(p) = self.unresolved(*promise) else {
                    return;
                };
                let vat = self.model.borrow().promises[p].vat;
                let Some(target) = self.held(vat, *target) else {
                    return;
                };
                let to = self.meaning(target);
                let cap = self.cap_of(target);
                let mut m = self.model.borrow_mut();
                m.promises[p].resolution = Some(to);
                m.promises[p].resolved_via = m.route(target);
                if m.has_cycle() {
                    // A cycle: not made on purpose (see the module docs).
                    m.promises[p].resolution = None;
                    return;
                }
                let resolver = m.promises[p].resolver.take();
                drop(m);
                if let Some(r) = resolver {
                    r.resolve_to(cap.raw().clone());
                }
            }
            Op::Break { promise } => {
                let Some(p) = self.unresolved(*promise) else {
                    return;
                };
                self.break_promise(p);
            }
            Op::Disconnect { pair, abort } => {
                let live: Vec<usize> = (0..self.pairs.len())
                    .filter(|&i| self.pairs[i].live)
                    .collect();
                if live.is_empty() {
                    return;
                }
                let index = live[*pair as usize % live.len()];
                let p = &mut self.pairs[index];
                p.live = false;
                if *abort {
                    p.conn_a.close("disconnected by the simulation");
                } else {
                    p.wires[0].cut();
                    p.wires[1].cut();
                }
                let mut m = self.model.borrow_mut();
                m.disconnected = true;
                m.dead |= 1 << index;
                m.counts.disconnects += 1;
            }
            _ => {}
        }
    }

    /// Unresolved promise number `i` (modulo).
    fn unresolved(&self, i: u8) -> Option<usize> {
        let m = self.model.borrow();
        let open: Vec<usize> = (0..m.promises.len())
            .filter(|&p| m.promises[p].resolver.is_some())
            .collect();
        (!open.is_empty()).then(|| open[i as usize % open.len()])
    }

    fn break_promise(&mut self, p: usize) {
        let resolver = {
            let mut m = self.model.borrow_mut();
            m.promises[p].resolution = Some(Meaning::Broken);
            m.promises[p].resolver.take()
        };
        if let Some(r) = resolver {
            r.reject(capnp::Error::failed("broken by the simulation".into()));
        }
    }

    /// Lets the runtime run until nothing observable has happened for
    /// `idle_rounds` scheduler rounds (and, with other arbiters, across
    /// pings of them: see `super::spread`).
    async fn settle(&mut self) -> Result<(), String> {
        let (idle, max) = (self.cfg.idle_rounds, self.cfg.max_rounds);
        match &self.spread {
            None => spread::idle(&self.activity, idle, max).await?,
            Some(s) => s.settle(&self.activity, idle, max).await?,
        }
        let released: Vec<ObjId> = std::mem::take(&mut *self.released.borrow_mut());
        let mut m = self.model.borrow_mut();
        for obj in released {
            m.object_dropped(obj);
        }
        Ok(())
    }

    /// The first panic seen on this thread or on one of the arbiters.
    fn take_panic(&self) -> Option<String> {
        super::take_panic().or_else(|| self.spread.as_ref()?.take_panic())
    }

    /// Delivers every message, again and again, until nothing moves.
    async fn flush(&mut self) -> Result<(), String> {
        loop {
            self.settle().await?;
            let mut moved = 0;
            for w in self.pairs.iter().flat_map(|p| p.wires.iter()) {
                while w.deliver_one() {
                    moved += 1;
                }
            }
            if moved == 0 {
                return Ok(());
            }
            self.model.borrow_mut().counts.messages_delivered += moved;
        }
    }

    /// Fails if a connection that was not ended on purpose has ended, with
    /// the reason and the violations seen meanwhile.
    fn no_connection_ended(&self) -> Result<(), String> {
        for p in self.pairs.iter().filter(|p| p.live) {
            for (vat, conn) in [(p.a, &p.conn_a), (p.b, &p.conn_b)] {
                if !conn.is_open() {
                    let why = conn.closed().now_or_never();
                    let why = why.map_or("?".to_string(), |e| e.to_string());
                    let then = self.take_violations().err().unwrap_or_default();
                    return Err(format!(
                        "the connection of vat {vat} to vat {} ended: {why}\n{then}",
                        p.a + p.b - vat
                    ));
                }
            }
        }
        Ok(())
    }

    fn take_violations(&self) -> Result<(), String> {
        let mut m = self.model.borrow_mut();
        if m.violations.is_empty() {
            return Ok(());
        }
        Err(std::mem::take(&mut m.violations).join("\n"))
    }

    /// The checks made after every step; `flushed`: everything has just
    /// been delivered.
    async fn check_step(&mut self, flushed: bool) -> Result<(), String> {
        self.settle().await?;
        if let Some(p) = self.take_panic() {
            return Err(format!("panic: {p}"));
        }
        // A connection that ended by itself comes first: what follows from
        // it (calls failing, objects released) is not the cause.
        self.no_connection_ended()?;
        self.take_violations()?;
        for p in &self.pairs {
            if !p.live {
                continue;
            }
            if !(self.cfg.inspect_every_step || flushed) {
                continue;
            }
            let (Some((sa, da)), Some((sb, db))) =
                (p.conn_a.inspect().await, p.conn_b.inspect().await)
            else {
                return Err(format!("connection {}-{} stopped answering", p.a, p.b));
            };
            let l = limits();
            for s in [&sa, &sb] {
                if s.questions > l.max_questions
                    || s.answers > l.max_answers
                    || s.exports > l.max_exports
                    || s.imports > l.max_imports
                {
                    return Err(format!("tables beyond their limits: {s:?}"));
                }
            }
            if flushed && !mirrored(&sa, &sb) {
                return Err(format!(
                    "after a flush, the tables of vats {} and {} do not mirror each other:\n{da}\n{db}",
                    p.a, p.b
                ));
            }
        }
        Ok(())
    }

    /// The pending call that index `call` picks (among those still
    /// waiting for an answer): its vat and its place in `pending`.
    fn pick_pending(&self, call: u8) -> Option<(usize, usize)> {
        let mut m = self.model.borrow_mut();
        m.prune_pending();
        if m.pending.is_empty() {
            return None;
        }
        let n = call as usize % m.pending.len();
        Some((m.pending[n].vat, n))
    }

    /// Settles everything, drops everything, and checks that nothing is
    /// left.
    async fn teardown(&mut self) -> Result<(), String> {
        if self.model.borrow().trace {
            eprintln!("teardown");
        }
        // Every promise settled, every pending call answered, until no
        // call is left in flight.
        for _ in 0..1000 {
            let open: Vec<usize> = {
                let m = self.model.borrow();
                (0..m.promises.len())
                    .filter(|&p| m.promises[p].resolver.is_some())
                    .collect()
            };
            for p in open {
                self.break_promise(p);
            }
            let pending = {
                let mut m = self.model.borrow_mut();
                m.prune_pending();
                let pending = std::mem::take(&mut m.pending);
                for p in &pending {
                    m.calls[p.call].answer = Some(Ok(Vec::new()));
                }
                pending
            };
            let answered = pending.len();
            for p in pending {
                let _ = p.reply.send(Reply::Caps(Ok(Vec::new())));
            }
            self.flush().await?;
            self.no_connection_ended()?;
            self.take_violations()?;
            let m = self.model.borrow();
            if answered == 0 && m.pending.is_empty() {
                break;
            }
        }
        // Every reference dropped.
        {
            let mut m = self.model.borrow_mut();
            let mut handles = Vec::new();
            for vat in 0..self.vats {
                for r in std::mem::take(&mut m.held[vat]) {
                    handles.extend(m.refs[r].cap.take());
                }
            }
            drop(m);
            drop(handles);
        }
        for o in &self.offers {
            lock(o).clear();
        }
        self.flush().await?;
        self.no_connection_ended()?;
        self.take_violations()?;
        {
            let m = self.model.borrow();
            if !m.pending.is_empty() {
                return Err(format!(
                    "{} calls arrived after every reference was dropped",
                    m.pending.len()
                ));
            }
            let lost: Vec<String> = m
                .calls
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.done && !c.cancelled)
                .map(|(i, c)| {
                    format!(
                        "call {i} (vat {} on ref {}, seq {}, arrived at {:?}, answer {:?})",
                        c.caller, c.target, c.seq, c.arrived_at, c.answer
                    )
                })
                .collect();
            if !lost.is_empty() {
                return Err(format!(
                    "calls that never completed:\n  {}",
                    lost.join("\n  ")
                ));
            }
        }
        self.tables_are_empty().await?;
        let report = capnp_actix::debug::report();
        if !report.caps.is_empty() {
            return Err(format!("capabilities alive after release: {report}"));
        }
        // Close the connections: then no runtime actor is left either.
        for p in &self.pairs {
            p.conn_a.close("the simulation is over");
            p.conn_b.close("the simulation is over");
        }
        self.settle().await?;
        for p in &self.pairs {
            p.wires[0].cut();
            p.wires[1].cut();
        }
        self.settle().await?;
        self.take_violations()?;
        let report = capnp_actix::debug::report();
        if !report.is_empty() {
            return Err(format!("alive after the connections closed: {report}"));
        }
        let m = self.model.borrow();
        if let Some(o) = m.objects.iter().position(|o| o.alive) {
            return Err(format!("object {o} was never released"));
        }
        if let Some(p) = self.take_panic() {
            return Err(format!("panic: {p}"));
        }
        Ok(())
    }

    /// At teardown: the tables of every live connection are empty, and
    /// both sides of every ended one are closed.
    async fn tables_are_empty(&self) -> Result<(), String> {
        for p in &self.pairs {
            if p.live {
                let (Some((sa, da)), Some((sb, db))) =
                    (p.conn_a.inspect().await, p.conn_b.inspect().await)
                else {
                    return Err(format!("connection {}-{} stopped answering", p.a, p.b));
                };
                if !sa.is_empty() || !sb.is_empty() {
                    return Err(format!(
                        "tables of vats {} and {} are not empty after release:\n{da}\n{db}",
                        p.a, p.b
                    ));
                }
            } else {
                for (vat, conn) in [(p.a, &p.conn_a), (p.b, &p.conn_b)] {
                    if conn.is_open() {
                        return Err(format!(
                            "vat {vat}'s side of the ended connection {}-{} is still open",
                            p.a, p.b
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// With nothing in flight: each side's questions are the other's answers,
/// each side's imports the other's exports, and no embargo waits.
fn mirrored(a: &TableSizes, b: &TableSizes) -> bool {
    a.questions == b.answers
        && a.answers == b.questions
        && a.imports == b.exports
        && a.exports == b.imports
        && a.embargoes == 0
        && b.embargoes == 0
}

fn fail(step: Option<usize>, message: String) -> Failure {
    Failure { step, message }
}

/// Runs `scenario` in a fresh actix system on this thread.
pub fn run(scenario: &Scenario, cfg: &Config) -> Result<Outcome, Failure> {
    let vats = scenario.vat_count();
    let cfg = cfg.clone();
    super::take_panic();
    let system = actix::System::new();
    system.block_on(async move {
        let spread = Spread::start(cfg.arbiters);
        Sim::new(vats, cfg, spread).execute(&scenario.ops).await
    })
}
