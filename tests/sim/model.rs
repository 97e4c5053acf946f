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

/// What the object serving a call is told to reply.
pub type Reply = Result<Vec<Cap<fuzz::Client>>, capnp::Error>;

pub struct RefRec {
    pub vat: usize,
    pub meaning: Meaning,
    /// The runtime handle, while the vat holds the reference.
    pub cap: Option<Cap<fuzz::Client>>,
    /// The `seq` of the next call made on this reference.
    pub next_seq: u64,
    /// The `seq` of the last call that arrived through this reference.
    pub last_arrived: Option<u64>,
}

pub struct ObjRec {
    pub vat: usize,
    pub alive: bool,
}

pub struct PromiseRec {
    pub vat: usize,
    pub resolution: Option<Meaning>,
    pub resolver: Option<Resolver>,
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
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} calls sent, {} arrived, {} ok, {} failed, {} cancelled; {} references, {} objects released; {} messages delivered",
            self.calls_sent,
            self.calls_arrived,
            self.calls_returned_ok,
            self.calls_returned_err,
            self.calls_cancelled,
            self.refs_made,
            self.objects_dropped,
            self.messages_delivered
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
    /// Some connection was ended on purpose: from then on a call may fail
    /// with Disconnected anywhere, and releases are not checked for timing.
    pub disconnected: bool,
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
            violations: Vec::new(),
            counts: Counts::default(),
            activity,
            trace: std::env::var_os("SIM_TRACE").is_some(),
        }
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    /// Where a meaning leads now, through resolved promises.
    pub fn follow(&self, mut m: Meaning) -> Meaning {
        // The driver never makes a cycle, so this ends; the bound is a guard.
        for _ in 0..=self.promises.len() {
            match m {
                Meaning::Promise(p) => match self.promises[p].resolution {
                    Some(next) => m = next,
                    None => return m,
                },
                _ => return m,
            }
        }
        m
    }

    /// A new reference held by `vat`.
    pub fn add_ref(&mut self, vat: usize, meaning: Meaning, cap: Cap<fuzz::Client>) -> RefId {
        let id = self.refs.len();
        self.refs.push(RefRec {
            vat,
            meaning,
            cap: Some(cap),
            next_seq: 0,
            last_arrived: None,
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
        for (m, c) in params.into_iter().zip(caps) {
            self.add_ref(vat, m, c);
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
        let rec = &mut self.calls[call];
        rec.done = true;
        let caller = rec.caller;
        match outcome {
            Ok(caps) => {
                self.counts.calls_returned_ok += 1;
                match rec.answer.clone() {
                    Some(Ok(meanings)) if meanings.len() == caps.len() => {
                        for (m, c) in meanings.into_iter().zip(caps) {
                            self.add_ref(caller, m, c);
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
                let expected = matches!(rec.answer, Some(Err(()))) || meant == Meaning::Broken;
                if !expected && !self.disconnected {
                    let (target, seq, answer) = (rec.target, rec.seq, rec.answer.clone());
                    self.violation(format!(
                        "call {call} (ref {target}, seq {seq}) failed with \"{e}\"; its reference means {meant:?}, its object answered {answer:?}"
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
        if self.disconnected {
            return;
        }
        let holder = self.held.iter().flatten().copied().find(|&r| {
            self.refs[r].cap.is_some() && self.follow(self.refs[r].meaning) == Meaning::Object(obj)
        });
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
        let caps = reply
            .await
            .map_err(|_| capnp::Error::failed("the simulation dropped this call".into()))??;
        let mut list = results.get().init_caps(caps.len() as u32);
        for (i, c) in caps.iter().enumerate() {
            list.set(i as u32, c.client().client.hook);
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
