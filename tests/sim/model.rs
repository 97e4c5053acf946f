//! The shadow reference graph: what every reference held by every vat is
//! meant to designate, and the checks made as calls reach objects and
//! answers come back.
//!
//! A reference's *meaning* is fixed when the reference is made: an object,
//! a promise (which the driver may later resolve to the meaning of another
//! reference, or break), or a broken capability. A call's destination is
//! its reference's meaning followed through resolved promises at the time
//! it arrives. The model never holds a runtime object's state: objects
//! report to it, and it compares.

use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::{cell::RefCell, fmt};

use capnp_actix::schemas::fuzz_capnp::fuzz;
use capnp_actix::{Cap, Resolver};
use futures::channel::oneshot;
use futures::future::AbortHandle;

use super::wire::{bump, Activity};

pub type RefId = usize;
pub type ObjId = usize;
pub type PromiseId = usize;
pub type CallId = usize;

/// What a reference designates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meaning {
    Object(ObjId),
    Promise(PromiseId),
    Broken,
}

/// What the object serving a call is told to do.
pub enum Reply {
    /// Return these capabilities, or fail.
    Caps(Result<Vec<Cap<fuzz::Client>>, capnp::Error>),
    /// Answer with a tail call on `target`, named (`r`, `seq`).
    Tail {
        target: Cap<fuzz::Client>,
        r: u64,
        seq: u64,
    },
}

/// How many capabilities a call's results also carry in pointer fields of
/// their own (1 to 3, after `caps`), so that callers can pipeline on them:
/// the protocol pipelines on struct fields only, never on list elements,
/// and the fuzz schema has no capability field. The results are written as
/// a struct of 1 + `PIPELINE_FIELDS` pointers (like a later version of the
/// schema with three more fields); readers of the schema see `caps` only.
pub const PIPELINE_FIELDS: u16 = 3;

/// The results struct, wide: `caps`, then `PIPELINE_FIELDS` capabilities.
struct WideResults<'a>(capnp::private::layout::StructBuilder<'a>);

const WIDE: capnp::private::layout::StructSize = capnp::private::layout::StructSize {
    data: 0,
    pointers: 1 + PIPELINE_FIELDS,
};

impl<'a> capnp::traits::FromPointerBuilder<'a> for WideResults<'a> {
    fn init_pointer(builder: capnp::private::layout::PointerBuilder<'a>, _len: u32) -> Self {
        WideResults(builder.init_struct(WIDE))
    }
    fn get_from_pointer(
        builder: capnp::private::layout::PointerBuilder<'a>,
        default: Option<&'a [capnp::Word]>,
    ) -> capnp::Result<Self> {
        Ok(WideResults(builder.get_struct(WIDE, default)?))
    }
}

pub struct RefRec {
    pub vat: usize,
    pub meaning: Meaning,
    /// The runtime handle, while the vat holds the reference.
    pub cap: Option<Cap<fuzz::Client>>,
    /// The `seq` of the next call made on this reference.
    pub next_seq: u64,
    /// The `seq` of the last call that arrived through this reference.
    pub last_arrived: Option<u64>,
    /// The connections it came through (see `super::routes`).
    pub via: u8,
}

pub struct ObjRec {
    pub vat: usize,
    pub alive: bool,
}

pub struct PromiseRec {
    pub vat: usize,
    pub resolution: Option<Meaning>,
    pub resolver: Option<Resolver>,
    /// A pipelined reference on field `.1` of call `.0`'s results: it
    /// means what the call's outcome (followed through tail calls) puts
    /// there (see [`Model::follow`]); `resolution` stays `None`.
    pub pipelined: Option<(CallId, usize)>,
    /// The route of the reference it was resolved to, then.
    pub resolved_via: u8,
}

pub struct CallRec {
    pub caller: usize,
    pub target: RefId,
    pub seq: u64,
    /// Meanings of the references passed, in order.
    pub params: Vec<Meaning>,
    pub arrived_at: Option<ObjId>,
    /// How the serving object answered: the meanings of the references it
    /// returned, or an error.
    pub answer: Option<Result<Vec<Meaning>, ()>>,
    /// The caller has its outcome.
    pub done: bool,
    /// The caller gave up on it.
    pub cancelled: bool,
    pub abort: Option<AbortHandle>,
    /// The caller's pipeline on the results, while the call is outstanding
    /// (with the new steps on).
    pub pipeline: Option<capnp::any_pointer::Pipeline>,
    /// Its serving object answered it with this tail call.
    pub tail: Option<CallId>,
    /// A tail call: its outcome goes to the call it answers.
    pub is_tail: bool,
    /// The routes of the references passed, when sent.
    pub param_via: Vec<u8>,
    /// The routes of the references its object returned, when answered.
    pub answer_via: Vec<u8>,
}

/// A call that reached its object and waits for the driver's answer.
pub struct Pending {
    pub call: CallId,
    pub vat: usize,
    pub reply: oneshot::Sender<Reply>,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Counts {
    pub calls_sent: u64,
    pub calls_arrived: u64,
    pub calls_returned_ok: u64,
    pub calls_returned_err: u64,
    pub calls_cancelled: u64,
    pub refs_made: u64,
    pub objects_dropped: u64,
    pub messages_delivered: u64,
    pub pipelined_refs: u64,
    pub tail_calls: u64,
    /// Connections ended by a `Disconnect` step.
    pub disconnects: u64,
    /// Calls whose outcome came back while a connection on their route was
    /// ended: a disconnection is accepted for them.
    pub relaxed_calls: u64,
    /// Calls whose outcome came back after any connection had ended: what
    /// the oracle accepted any error for before routes were followed.
    pub relaxed_calls_anywhere: u64,
    /// Releases of objects still meant by a reference whose route crosses
    /// an ended connection (and by no other).
    pub relaxed_releases: u64,
    /// Releases after any connection had ended (formerly unchecked).
    pub relaxed_releases_anywhere: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.calls_sent += o.calls_sent;
        self.calls_arrived += o.calls_arrived;
        self.calls_returned_ok += o.calls_returned_ok;
        self.calls_returned_err += o.calls_returned_err;
        self.calls_cancelled += o.calls_cancelled;
        self.refs_made += o.refs_made;
        self.objects_dropped += o.objects_dropped;
        self.messages_delivered += o.messages_delivered;
        self.pipelined_refs += o.pipelined_refs;
        self.tail_calls += o.tail_calls;
        self.disconnects += o.disconnects;
        self.relaxed_calls += o.relaxed_calls;
        self.relaxed_calls_anywhere += o.relaxed_calls_anywhere;
        self.relaxed_releases += o.relaxed_releases;
        self.relaxed_releases_anywhere += o.relaxed_releases_anywhere;
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} calls sent, {} arrived, {} ok, {} failed, {} cancelled; {} references, {} objects released; {} messages delivered; {} pipelined references, {} tail calls; {} disconnects",
            self.calls_sent,
            self.calls_arrived,
            self.calls_returned_ok,
            self.calls_returned_err,
            self.calls_cancelled,
            self.refs_made,
            self.objects_dropped,
            self.messages_delivered,
            self.pipelined_refs,
            self.tail_calls,
            self.disconnects
        )
    }
}

pub struct Model {
    pub refs: Vec<RefRec>,
    /// References each vat holds, oldest first.
    pub held: Vec<Vec<RefId>>,
    pub objects: Vec<ObjRec>,
    pub promises: Vec<PromiseRec>,
    pub calls: Vec<CallRec>,
    by_ref_seq: HashMap<(RefId, u64), CallId>,
    /// Calls with no outcome yet that were not cancelled.
    pub outstanding: Vec<CallId>,
    pub pending: Vec<Pending>,
    /// Some connection was ended on purpose (counted in
    /// `Counts::relaxed_calls_anywhere`; the oracle only relaxes what
    /// crossed an ended connection, see `dead`).
    pub disconnected: bool,
    /// The connections ended on purpose, one bit per vat pair (see
    /// `super::routes`): a call that crossed one may fail, and a reference
    /// that came through one may outlive its object.
    pub dead: u8,
    pub vats: usize,
    pub violations: Vec<String>,
    pub counts: Counts,
    activity: Activity,
    /// Print what happens (`SIM_TRACE=1`).
    pub trace: bool,
}

impl Model {
    pub fn new(vats: usize, activity: Activity) -> Self {
        Model {
            refs: Vec::new(),
            held: vec![Vec::new(); vats],
            objects: Vec::new(),
            promises: Vec::new(),
            calls: Vec::new(),
            by_ref_seq: HashMap::new(),
            outstanding: Vec::new(),
            pending: Vec::new(),
            disconnected: false,
            dead: 0,
            vats,
            violations: Vec::new(),
            counts: Counts::default(),
            activity,
            trace: std::env::var_os("SIM_TRACE").is_some(),
        }
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    /// Where a meaning leads now, through resolved promises (and
    /// pipelined references whose call has its outcome).
    pub fn follow(&self, m: Meaning) -> Meaning {
        // The driver never makes a cycle (see `has_cycle`).
        let mut seen = Vec::new();
        self.follow_in(m, &mut seen).unwrap_or(m)
    }

    /// `follow`, failing if it comes back to a promise of `seen` (a
    /// promise that waits on itself). The walk is a single path: every
    /// unresolved promise leads to one thing at most.
    fn follow_in(&self, mut m: Meaning, seen: &mut Vec<PromiseId>) -> Result<Meaning, ()> {
        loop {
            let Meaning::Promise(p) = m else {
                return Ok(m);
            };
            if seen.contains(&p) {
                return Err(());
            }
            seen.push(p);
            if let Some(next) = self.promises[p].resolution {
                m = next;
                continue;
            }
            let Some((call, i)) = self.promises[p].pipelined else {
                return Ok(m);
            };
            match self.outcome_in(call, seen)? {
                Some(Ok(ms)) => m = ms.get(i).copied().unwrap_or(Meaning::Broken),
                Some(Err(())) => return Ok(Meaning::Broken),
                None => return Ok(m),
            }
        }
    }

    /// What call `call` comes to, as known now: the answer of the last call
    /// of its tail calls, or an error if that call's target is broken.
    pub fn outcome(&self, call: CallId) -> Option<Result<Vec<Meaning>, ()>> {
        let mut seen = Vec::new();
        self.outcome_in(call, &mut seen).ok().flatten()
    }

    fn outcome_in(
        &self,
        mut call: CallId,
        seen: &mut Vec<PromiseId>,
    ) -> Result<Option<Result<Vec<Meaning>, ()>>, ()> {
        for _ in 0..=self.calls.len() {
            let rec = &self.calls[call];
            if let Some(y) = rec.tail {
                call = y;
                continue;
            }
            if let Some(a) = &rec.answer {
                return Ok(Some(a.clone()));
            }
            let target = self.follow_in(self.refs[rec.target].meaning, seen)?;
            return Ok((target == Meaning::Broken).then_some(Err(())));
        }
        Err(())
    }

    /// Some promise waits on itself (through resolutions, answers, tail
    /// calls and the targets of unanswered calls): the runtime could never
    /// settle it, so the driver undoes the step that made it.
    pub fn has_cycle(&self) -> bool {
        (0..self.promises.len()).any(|p| {
            let mut seen = Vec::new();
            self.follow_in(Meaning::Promise(p), &mut seen).is_err()
        })
    }

    /// A pipelined reference of `vat` on field `index` of `call`'s results.
    pub fn add_pipelined(
        &mut self,
        vat: usize,
        call: CallId,
        index: usize,
        cap: Cap<fuzz::Client>,
    ) -> RefId {
        self.promises.push(PromiseRec {
            vat,
            resolution: None,
            resolver: None,
            pipelined: Some((call, index)),
            resolved_via: 0,
        });
        let p = self.promises.len() - 1;
        self.counts.pipelined_refs += 1;
        if self.trace {
            eprintln!("    promise {p}: pipelined on field {index} of call {call}");
        }
        self.add_ref(vat, Meaning::Promise(p), cap)
    }

    /// The tail call by which the object serving `call` (in `vat`) answers
    /// it, on reference `target`; `None` (and nothing changed) if that
    /// would make a promise wait on itself.
    pub fn add_tail_call(
        &mut self,
        vat: usize,
        call: CallId,
        target: RefId,
    ) -> Option<(CallId, u64)> {
        let seq = self.refs[target].next_seq;
        let id = self.calls.len();
        self.calls.push(CallRec {
            caller: vat,
            target,
            seq,
            params: Vec::new(),
            arrived_at: None,
            answer: None,
            done: true,
            cancelled: false,
            abort: None,
            pipeline: None,
            tail: None,
            is_tail: true,
            param_via: Vec::new(),
            answer_via: Vec::new(),
        });
        self.calls[call].tail = Some(id);
        if self.has_cycle() {
            self.calls[call].tail = None;
            self.calls.pop();
            return None;
        }
        self.refs[target].next_seq += 1;
        self.by_ref_seq.insert((target, seq), id);
        self.counts.calls_sent += 1;
        self.counts.tail_calls += 1;
        if self.trace {
            eprintln!("    call {call} answered by tail call {id} (ref {target}, seq {seq})");
        }
        Some((id, seq))
    }

    /// A new reference held by `vat`, made in that vat.
    pub fn add_ref(&mut self, vat: usize, meaning: Meaning, cap: Cap<fuzz::Client>) -> RefId {
        self.add_ref_via(vat, meaning, cap, 0)
    }

    /// A new reference held by `vat`, which came through the connections
    /// of `via` (see `super::routes`).
    pub fn add_ref_via(
        &mut self,
        vat: usize,
        meaning: Meaning,
        cap: Cap<fuzz::Client>,
        via: u8,
    ) -> RefId {
        let id = self.refs.len();
        self.refs.push(RefRec {
            vat,
            meaning,
            cap: Some(cap),
            next_seq: 0,
            last_arrived: None,
            via,
        });
        self.held[vat].push(id);
        self.counts.refs_made += 1;
        if self.trace {
            eprintln!("    ref {id} on vat {vat}: {meaning:?}");
        }
        id
    }

    pub fn add_call(
        &mut self,
        caller: usize,
        target: RefId,
        params: Vec<Meaning>,
    ) -> (CallId, u64) {
        let seq = self.refs[target].next_seq;
        self.refs[target].next_seq += 1;
        let id = self.calls.len();
        self.calls.push(CallRec {
            caller,
            target,
            seq,
            params,
            arrived_at: None,
            answer: None,
            done: false,
            cancelled: false,
            abort: None,
            pipeline: None,
            tail: None,
            is_tail: false,
            param_via: Vec::new(),
            answer_via: Vec::new(),
        });
        self.by_ref_seq.insert((target, seq), id);
        self.outstanding.push(id);
        self.counts.calls_sent += 1;
        (id, seq)
    }

    /// Call `(r, seq)` reached object `obj` of `vat`, passing `caps`.
    pub fn arrived(
        &mut self,
        obj: ObjId,
        vat: usize,
        r: u64,
        seq: u64,
        caps: Vec<Cap<fuzz::Client>>,
    ) -> oneshot::Receiver<Reply> {
        bump(&self.activity);
        self.counts.calls_arrived += 1;
        let (tx, rx) = oneshot::channel();
        let r = r as RefId;
        let Some(&call) = self.by_ref_seq.get(&(r, seq)) else {
            self.violation(format!(
                "object {obj} got a call (ref {r}, seq {seq}) that nobody made"
            ));
            return rx;
        };
        let meant = self.follow(self.refs[r].meaning);
        if meant != Meaning::Object(obj) {
            self.violation(format!(
                "call {call} (ref {r}, seq {seq}) reached object {obj} but its reference means {meant:?} (made as {:?})",
                self.refs[r].meaning
            ));
        }
        if let Some(last) = self.refs[r].last_arrived {
            if seq <= last {
                self.violation(format!(
                    "E-order: call {call} (ref {r}, seq {seq}) arrived after seq {last} of the same reference"
                ));
            }
        }
        self.refs[r].last_arrived = Some(seq);
        if self.trace {
            eprintln!("    call {call} (ref {r}, seq {seq}) arrived at object {obj}");
        }
        if self.calls[call].arrived_at.is_some() {
            self.violation(format!("call {call} arrived twice"));
        }
        self.calls[call].arrived_at = Some(obj);
        let params = self.calls[call].params.clone();
        if params.len() != caps.len() {
            self.violation(format!(
                "call {call} arrived with {} capabilities, {} were sent",
                caps.len(),
                params.len()
            ));
        }
        let reach = self.reach(call);
        let vias = self.calls[call].param_via.clone();
        for (i, (m, c)) in params.into_iter().zip(caps).enumerate() {
            let via = vias.get(i).copied().unwrap_or(0) | reach;
            self.add_ref_via(vat, m, c, via);
        }
        self.pending.push(Pending {
            call,
            vat,
            reply: tx,
        });
        rx
    }

    /// The caller of `call` got its outcome.
    pub fn returned(
        &mut self,
        call: CallId,
        outcome: Result<Vec<Cap<fuzz::Client>>, capnp::Error>,
    ) {
        bump(&self.activity);
        self.outstanding.retain(|c| *c != call);
        if self.trace {
            let what = outcome.as_ref().map(Vec::len).map_err(ToString::to_string);
            eprintln!("    call {call} returned {what:?}");
        }
        let reach = self.reach(call);
        let relaxed = self.crosses_dead(reach);
        self.counts.relaxed_calls += u64::from(relaxed);
        self.counts.relaxed_calls_anywhere += u64::from(self.disconnected);
        let rec = &mut self.calls[call];
        rec.done = true;
        let caller = rec.caller;
        match outcome {
            Ok(caps) => {
                self.counts.calls_returned_ok += 1;
                match self.outcome(call) {
                    Some(Ok(meanings)) if meanings.len() == caps.len() => {
                        for (i, (m, c)) in meanings.into_iter().zip(caps).enumerate() {
                            let via = self.result_via(call, i) | reach;
                            self.add_ref_via(caller, m, c, via);
                        }
                    }
                    other => {
                        let n = caps.len();
                        self.violation(format!(
                            "call {call} returned {n} capabilities, but its object answered {other:?}"
                        ))
                    }
                }
            }
            Err(e) => {
                self.counts.calls_returned_err += 1;
                let rec = &self.calls[call];
                let meant = self.follow(self.refs[rec.target].meaning);
                let outcome = self.outcome(call);
                let expected = matches!(outcome, Some(Err(()))) || meant == Meaning::Broken;
                // A call that crossed an ended connection may fail because
                // of it: with a disconnection, not any error. (A call that
                // reaches a vat whose export the ending broke is answered
                // "call on a broken capability", kind Failed: the core does
                // not keep the broken capability's own error.)
                let disconnection = e.kind == capnp::ErrorKind::Disconnected
                    || e.extra.contains("call on a broken capability");
                let excused = relaxed && disconnection;
                if !expected && !excused {
                    let (target, seq, answer) = (rec.target, rec.seq, rec.answer.clone());
                    let tail = rec.tail;
                    self.violation(format!(
                        "call {call} (ref {target}, seq {seq}) failed with \"{e}\"; its reference means {meant:?}, its object answered {answer:?} (tail call {tail:?}, outcome {outcome:?}; crossed an ended connection: {relaxed})"
                    ));
                }
            }
        }
    }

    /// Object `obj` was released (its server value dropped).
    pub fn object_dropped(&mut self, obj: ObjId) {
        bump(&self.activity);
        self.counts.objects_dropped += 1;
        if self.trace {
            eprintln!("    object {obj} released");
        }
        if !self.objects[obj].alive {
            self.violation(format!("object {obj} released twice"));
        }
        self.objects[obj].alive = false;
        self.counts.relaxed_releases_anywhere += u64::from(self.disconnected);
        let holders: Vec<RefId> = self
            .held
            .iter()
            .flatten()
            .copied()
            .filter(|&r| {
                self.refs[r].cap.is_some()
                    && self.follow(self.refs[r].meaning) == Meaning::Object(obj)
            })
            .collect();
        // A holder whose route crosses an ended connection may hold a
        // broken reference by now; the others must keep the object.
        let (excused, holder): (Vec<RefId>, Vec<RefId>) = holders
            .into_iter()
            .partition(|&r| self.crosses_dead(self.route(r)));
        let holder = holder.first().copied();
        if holder.is_none() && !excused.is_empty() {
            self.counts.relaxed_releases += 1;
        }
        if let Some(r) = holder {
            self.violation(format!(
                "object {obj} (vat {}) was released while vat {} still holds reference {r} to it",
                self.objects[obj].vat, self.refs[r].vat
            ));
        }
    }

    /// Drops pending calls whose method was cancelled (the serving future
    /// was dropped, so nobody waits for the reply).
    pub fn prune_pending(&mut self) {
        self.pending.retain(|p| !p.reply.is_canceled());
    }
}

/// A service object of the simulation: it reports every call to the model
/// and replies as the driver tells it.
pub struct FuzzObject {
    pub id: ObjId,
    /// Write wide results (see [`PIPELINE_FIELDS`]).
    pub wide: bool,
    pub vat: usize,
    pub model: Weak<RefCell<Model>>,
    /// Where the object notes its release: the driver hands it to the
    /// model once the runtime is quiet (a release may happen at any point
    /// of the runtime's work, even while the model is in use).
    pub released: Rc<RefCell<Vec<ObjId>>>,
    pub activity: Activity,
}

impl fuzz::Server for FuzzObject {
    async fn call(
        self: Rc<Self>,
        params: fuzz::CallParams,
        mut results: fuzz::CallResults,
    ) -> Result<(), capnp::Error> {
        let (r, seq, caps) = {
            let p = params.get()?;
            let caps = p
                .get_caps()?
                .iter()
                .map(|c| c.map(|c| Cap::<fuzz::Client>::from_client(&c)))
                .collect::<Result<Vec<_>, _>>()?;
            (p.get_ref(), p.get_seq(), caps)
        };
        drop(params);
        let Some(model) = self.model.upgrade() else {
            return Err(capnp::Error::failed("the simulation is over".into()));
        };
        let reply = model.borrow_mut().arrived(self.id, self.vat, r, seq, caps);
        drop(model);
        let reply = reply
            .await
            .map_err(|_| capnp::Error::failed("the simulation dropped this call".into()))?;
        let caps = match reply {
            Reply::Caps(caps) => caps?,
            Reply::Tail { target, r, seq } => {
                let client = target.client();
                let mut req = client.call_request();
                req.get().set_ref(r);
                req.get().set_seq(seq);
                return results.hook.tail_call(req.hook).await;
            }
        };
        if !self.wide {
            let mut list = results.get().init_caps(caps.len() as u32);
            for (i, c) in caps.iter().enumerate() {
                list.set(i as u32, c.client().client.hook);
            }
            return Ok(());
        }
        let mut wide = results.hook.get()?.init_as::<WideResults<'_>>();
        {
            let field = wide.0.reborrow().get_pointer_field(0);
            let mut list = <capnp::capability_list::Builder<'_, fuzz::Client> as capnp::traits::FromPointerBuilder<'_>>::init_pointer(field, caps.len() as u32);
            for (i, c) in caps.iter().enumerate() {
                list.set(i as u32, c.client().client.hook);
            }
        }
        for (i, c) in caps.iter().enumerate().take(PIPELINE_FIELDS as usize) {
            wide.0
                .reborrow()
                .get_pointer_field(1 + i)
                .set_capability(c.client().client.hook);
        }
        Ok(())
    }
}

impl Drop for FuzzObject {
    fn drop(&mut self) {
        self.released.borrow_mut().push(self.id);
        bump(&self.activity);
    }
}
