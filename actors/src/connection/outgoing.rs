//! What the rest of the runtime asks of a connection ([`ConnMsg`]): calls
//! on the peer's capabilities and on our questions' fields, tail calls,
//! releases of imports and cancellations of questions; and how
//! capabilities and payloads cross to and from the core's descriptors.

use std::sync::Arc;

use actix::Handler;
use capnp_actix_proto::captp::{InCap, InPayload, OutCap, OutContent, OutTarget};

use super::tables::{Embargo, ImportEntry, Question};
use super::{key, Connection};
use crate::answer::Outcome;
use crate::call::{Call, Completer, Marker};
use crate::call::{ConnMsg, RemoteTarget};
use crate::cap::{CapRef, Kind};
use crate::error;
use crate::hook::payload_received;
use crate::metrics;
use crate::payload::{Body, Payload};

impl Connection {
    pub(super) fn send_return(&mut self, answer: u32, outcome: Outcome) {
        // A field under an embargo goes out as the promise of it.
        let held = match self.answers.get(&answer) {
            Some(entry) => {
                let kind = outcome.as_ref().map(|_| ()).map_err(|e| e.kind);
                metrics::call_answered(kind, entry.arrived.elapsed());
                match &outcome {
                    Ok(_) => entry.answer.embargoed_fields(),
                    Err(_) => Vec::new(),
                }
            }
            None => Vec::new(),
        };
        self.unhold(answer);
        match outcome {
            Ok(frozen) => {
                let caps: Vec<OutCap<CapRef>> = frozen
                    .caps
                    .iter()
                    .map(|c| {
                        let promise = c
                            .as_ref()
                            .and_then(|c| held.iter().find(|(end, _)| end == c));
                        match promise {
                            Some((_, p)) => self.out_cap(Some(p)),
                            None => self.out_cap(c.as_ref()),
                        }
                    })
                    .collect();
                // Kept until the peer finishes the call (or, if the core
                // forgets it at once, released by the `Finished` event).
                self.retain(answer, frozen.size_bytes());
                if self.core.aborted().is_some() {
                    return;
                }
                if let Some(kept) = frozen.kept() {
                    return self
                        .core
                        .return_results(answer, OutContent::Kept(kept), &caps);
                }
                match frozen.raw_root() {
                    Ok(root) => self.core.return_results(answer, root, &caps),
                    Err(e) => self.core.return_error(answer, e),
                }
            }
            Err(e) => self.core.return_error(answer, e),
        }
    }

    /// How a capability of a payload we send is described to the peer.
    pub(super) fn out_cap(&self, cap: Option<&CapRef>) -> OutCap<CapRef> {
        let Some(cap) = cap else {
            return OutCap::None;
        };
        let end = cap.shortened();
        match end.kind() {
            Kind::Remote {
                conn_id, import, ..
            } if *conn_id == self.id => OutCap::Import(*import),
            Kind::Pipelined { answer, path } => {
                match answer.shared().and_then(|a| self.question_of.get(&key(&a))) {
                    Some(&question) => OutCap::Answer {
                        question,
                        path: path.clone(),
                    },
                    // Not resolved yet: the peer learns what it becomes from a
                    // `resolve`, and can then shorten its path.
                    None => OutCap::Promise(end),
                }
            }
            Kind::Broken(e) => OutCap::Broken(e.clone()),
            Kind::Promise(_) => OutCap::Promise(end),
            _ => OutCap::Local(cap.clone()),
        }
    }

    /// Our handle for a capability of a payload the peer sent.
    pub(super) fn in_cap(&mut self, cap: InCap<CapRef>) -> Option<CapRef> {
        match cap {
            InCap::None => None,
            InCap::Broken(e) => Some(CapRef::broken(e)),
            InCap::Local(c) => Some(c),
            // The core has checked that the answer is live; every live
            // answer is here, failed ones too (see `keep_failed`). Should one
            // be missing all the same, the slot is a broken capability, not
            // a null one, which would make the whole message unreadable.
            InCap::Answer { answer, path } => Some(match self.answers.get(&answer) {
                Some(entry) => entry.answer.pipelined_cap(path),
                None => CapRef::broken(error::internal("a capability names a forgotten answer")),
            }),
            InCap::Import { id, .. } => {
                if let Some(node) = self.imports.get(&id).and_then(|entry| entry.node.upgrade()) {
                    return Some(CapRef { node });
                }
                // New, or its node is going away (its release will find the
                // new node in charge and do nothing): the new node now holds
                // every reference counted so far.
                let cap = CapRef::from_kind(Kind::Remote {
                    conn: self.me.clone(),
                    conn_id: self.id,
                    import: id,
                });
                self.imports.insert(
                    id,
                    ImportEntry {
                        node: Arc::downgrade(&cap.node),
                        node_id: cap.id(),
                    },
                );
                Some(cap)
            }
        }
    }

    pub(super) fn in_payload(&mut self, p: InPayload<CapRef>) -> Result<Payload, capnp::Error> {
        let caps: Vec<Option<CapRef>> =
            p.caps.clone().into_iter().map(|c| self.in_cap(c)).collect();
        let (content, _, size) = p.into_in_place()?;
        payload_received(content, caps, size)
    }

    pub(super) fn send_call(&mut self, target: RemoteTarget, call: Call) {
        let out_target = match target {
            RemoteTarget::Import(id) => OutTarget::Import(id),
            RemoteTarget::Answer { answer, path } => match self.question_of.get(&key(&answer)) {
                // (The core notes the fields calls are pipelined on.)
                Some(&question) => OutTarget::Answer { question, path },
                None => {
                    if let Some(e) = self
                        .core
                        .embargoes_waiting_mut()
                        .find_map(|(_, e)| match e {
                            Embargo::Field {
                                answer: a,
                                path: p,
                                held,
                            } if Arc::ptr_eq(a, &answer) && *p == path => Some(held),
                            _ => None,
                        })
                    {
                        // Held until the calls sent before the return are through.
                        e.push(call);
                        return;
                    }
                    // Not a question (any more): the call is served here,
                    // so its own answer is not a question either.
                    if let Some(a) = call.completer.answer() {
                        a.clear_remote();
                    }
                    return match answer.field_now(&path) {
                        // The return has arrived: the field is known here.
                        Some(target) => self.deliver_now(target, call),
                        // A call that was served here after all (see above)
                        // and has not answered yet: wait with the others.
                        None => {
                            answer.clear_remote();
                            answer.deliver_pipelined(&path, call)
                        }
                    };
                }
            },
        };
        if let Some(Marker { conn_id, embargo }) = call.marker {
            // A disembargo marker has come through every earlier call on
            // its target, which is our peer's: reflect it there.
            // (From another connection, the marker is dropped: the calls
            // before it are queued here, and its own connection reflects it.)
            if conn_id == self.id {
                self.core.disembargo_reply_to(embargo, &out_target);
                call.completer.complete_payload(Payload::empty());
            }
            return;
        }
        let Call {
            interface_id,
            method_id,
            params,
            completer,
            ..
        } = call;
        if completer.is_cancelled() {
            return completer.complete(Err(error::cancelled()));
        }
        // Going out on the wire counts as started.
        completer.mark_started();
        let caps: Vec<OutCap<CapRef>> = params
            .caps
            .iter()
            .map(|c| self.out_cap(c.as_ref()))
            .collect();
        let sent = match params.body {
            // Kept until written, when its content is spliced.
            Body::Built(m) => self.core.call(
                &out_target,
                interface_id,
                method_id,
                OutContent::Kept(Arc::new(m)),
                &caps,
            ),
            body @ Body::Received(_) => body.root().and_then(|root| {
                self.core
                    .call(&out_target, interface_id, method_id, root, &caps)
            }),
        };
        match sent {
            Ok(q) => {
                metrics::call_sent();
                self.register_question(q, completer)
            }
            Err(e) => completer.complete(Err(e)),
        }
    }

    /// Delivers a call whose target we just learnt, in this turn. A target
    /// that is one of the peer's capabilities on this connection is sent
    /// at once rather than through our own mailbox again: calls pipelined
    /// on this call's answer may already be behind it in the mailbox, and
    /// they must find it asked (so that they go out as promised-answer
    /// calls, not wait for its return).
    pub(super) fn deliver_now(&mut self, target: CapRef, call: Call) {
        if let Kind::Remote {
            conn_id, import, ..
        } = target.kind()
        {
            if *conn_id == self.id && target.resolved().is_none() {
                if let (Some(resolvable), None) = (&target.node.resolvable, call.marker) {
                    resolvable.mark_called();
                }
                return self.send_call(RemoteTarget::Import(*import), call);
            }
        }
        target.deliver(call)
    }

    /// See [`ConnMsg::TailCall`]. If the answer is no longer pending (the
    /// peer cancelled it), the call goes out as an ordinary one.
    pub(super) fn send_tail_call(&mut self, answer: u32, import: u32, call: Call) {
        let Call {
            interface_id,
            method_id,
            params,
            completer,
            ..
        } = call;
        completer.mark_started();
        let caps: Vec<OutCap<CapRef>> = params
            .caps
            .iter()
            .map(|c| self.out_cap(c.as_ref()))
            .collect();
        let target = OutTarget::Import(import);
        let sent = params.raw_root().and_then(|root| {
            match self
                .core
                .tail_call(answer, &target, interface_id, method_id, root, &caps)
            {
                Ok(q) => Ok(q),
                Err(_) => self
                    .core
                    .call(&target, interface_id, method_id, root, &caps),
            }
        });
        match sent {
            Ok(q) => self.register_question(q, completer),
            Err(e) => completer.complete(Err(e)),
        }
    }

    pub(super) fn register_question(&mut self, q: u32, completer: Completer) {
        let answer = completer.answer().cloned();
        if let Some(a) = &answer {
            a.set_remote(self.me.clone(), self.id);
            self.question_of.insert(key(a), q);
        }
        self.questions.insert(q, Question { completer, answer });
    }
}

impl Handler<ConnMsg> for Connection {
    type Result = ();
    fn handle(&mut self, msg: ConnMsg, ctx: &mut Self::Context) {
        match msg {
            ConnMsg::Call { target, call } => {
                let routed = match &target {
                    RemoteTarget::Answer { answer, path } => Some((answer.clone(), path.clone())),
                    RemoteTarget::Import(_) => None,
                };
                self.send_call(target, call);
                if let Some((answer, path)) = routed {
                    answer.routed_done(&path);
                }
            }
            ConnMsg::Release { import, node } => {
                if self
                    .imports
                    .get(&import)
                    .is_some_and(|entry| entry.node_id == node)
                {
                    self.imports.remove(&import);
                    self.core.release_import(import);
                }
            }
            ConnMsg::Cancel { answer } => {
                if let Some(a) = answer.upgrade() {
                    if let Some(&q) = self.question_of.get(&key(&a)) {
                        // A tail call gets no return to complete it: forget
                        // it now.
                        let tail_call = self.core.sends_results_elsewhere(q);
                        self.core.finish(q);
                        if tail_call {
                            self.forget_question(q);
                        }
                    }
                }
            }
            ConnMsg::TailCall {
                answer,
                import,
                call,
            } => self.send_tail_call(answer, import, call),
        }
        self.handle_core_events(ctx);
    }
}
