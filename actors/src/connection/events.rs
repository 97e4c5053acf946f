//! Events from the protocol core, one method per kind of event: the
//! peer's bootstraps, calls, cancellations and finishes (serving it), its
//! returns (our questions), its resolves and disembargoes (embargoes and
//! path shortening), and the end of the connection.
//!
//! The core decides what the protocol says; these methods decide what it
//! means for the runtime's capabilities and answers.

use std::sync::Arc;

use actix::{ActorFutureExt, AsyncContext, WrapFuture};
use capnp_actix_proto::captp::{CallTarget, Event, InCap, InPayload, OutCap, OutTarget};
use futures::FutureExt;

use super::deferred::{Deferred, ImportEmbargoStart};
use super::tables::{Embargo, PeerAnswer, Question};
use super::{field_of, key, Connection};
use crate::answer::Answer;
use crate::call::{Call, Marker};
use crate::cap::{CapRef, Kind};
use crate::error;
use crate::hook::{send_call, WaitOutcome};
use crate::metrics;
use crate::payload::Payload;

impl Connection {
    /// Handles one event of the core: one method per kind of event.
    pub(super) fn on_event(
        &mut self,
        event: Event<CapRef, Embargo>,
        ctx: &mut actix::Context<Self>,
    ) {
        match event {
            Event::Bootstrap { answer, object_id } => self.on_bootstrap(answer, object_id, ctx),
            Event::Call {
                answer,
                target,
                interface_id,
                method_id,
                params,
            } => self.on_call(answer, target, interface_id, method_id, params, ctx),
            Event::Cancel {
                answer,
                not_before_start,
            } => self.on_cancel(answer, not_before_start, ctx),
            // The core has answered it already.
            Event::CallFailed { answer, error } => self.keep_failed(answer, error),
            Event::Finished { answer } => self.on_finished(answer, ctx),
            Event::ResultsSentElsewhere { question } => self.on_results_sent_elsewhere(question),
            Event::Return {
                question,
                result,
                pipelined,
            } => self.on_return(question, result, pipelined),
            Event::ReturnTakeFrom {
                question,
                answer,
                pipelined,
            } => self.on_return_take_from(question, answer, pipelined, ctx),
            Event::EmbargoLifted { waiting, .. } => match waiting {
                Embargo::Field { answer, path, held } => {
                    let target = field_of(&answer, &path);
                    for call in held {
                        target.deliver(call);
                    }
                    answer.lift_embargo(&path);
                }
                Embargo::Import { resolver, target } => resolver.resolve_to(target),
            },
            // (Just after `Aborted`.)
            Event::EmbargoBroken { waiting, .. } => self.on_embargo_broken(waiting),
            Event::Resolve { import, to } => match to {
                Ok(c) => self.resolve_import(import, c),
                // An error needs no embargo: the import is broken from now on.
                Err(e) => self.break_import(import, e),
            },
            Event::Loopback { embargo, target } => self.on_loopback(embargo, target, ctx),
            Event::ExportedPromise { export, cap } => self.on_exported_promise(export, cap, ctx),
            Event::Aborted(e) => self.on_aborted(e, ctx),
        }
    }

    /// The peer asks for our bootstrap capability: look it up (perhaps later) and keep the answer like any other.
    pub(super) fn on_bootstrap(
        &mut self,
        answer: u32,
        object_id: Vec<u8>,
        ctx: &mut actix::Context<Self>,
    ) {
        let mut found = match (&self.bootstrap, self.refused()) {
            (_, Some(e)) => futures::future::ready(Err(e)).boxed(),
            (Some(b), None) => b(&object_id),
            (None, None) => futures::future::ready(Err(capnp::Error::failed(
                "this vat offers no bootstrap capability".into(),
            )))
            .boxed(),
        };
        // The answer is kept like any other, so that calls the peer
        // pipelines on it reach the capability (or get the error).
        let (answer_ref, completer) = Answer::open();
        let complete = move |found: Result<CapRef, capnp::Error>| match found {
            Ok(cap) => completer.complete_payload(Payload::built(
                capnp_actix_proto::content::cap_root_message(),
                vec![Some(cap)],
            )),
            Err(e) => completer.complete(Err(e)),
        };
        match (&mut found).now_or_never() {
            Some(found) => {
                complete(found);
                let outcome = answer_ref.shared().resolution_now();
                self.answers.insert(
                    answer,
                    PeerAnswer {
                        answer: answer_ref,
                        sending: None,
                        arrived: std::time::Instant::now(),
                        retained: 0,
                    },
                );
                if let Some(o) = outcome {
                    self.send_return(answer, o);
                }
            }
            None => {
                // Dropped with the connection (or on the peer's
                // finish): the lookup itself may go on elsewhere.
                let handle = ctx.spawn(actix::fut::wrap_future(found).map(
                    move |found, act: &mut Self, ctx| {
                        complete(found);
                        let outcome = act.answers.get_mut(&answer).and_then(|entry| {
                            entry.sending = None;
                            entry.answer.shared().resolution_now()
                        });
                        if let Some(o) = outcome {
                            act.send_return(answer, o);
                        }
                        act.handle_core_events(ctx);
                    },
                ));
                self.answers.insert(
                    answer,
                    PeerAnswer {
                        answer: answer_ref,
                        sending: Some(handle),
                        arrived: std::time::Instant::now(),
                        retained: 0,
                    },
                );
            }
        }
    }

    /// The peer calls one of our capabilities (or pipelines on one of our
    /// answers): deliver the call, within the held-bytes budget, and send
    /// the return when it completes.
    pub(super) fn on_call(
        &mut self,
        answer: u32,
        target: CallTarget<CapRef>,
        interface_id: u64,
        method_id: u16,
        params: InPayload<CapRef>,
        ctx: &mut actix::Context<Self>,
    ) {
        let target = match target {
            CallTarget::Local(c) => c,
            CallTarget::Answer { answer: a, path } => match self.answers.get(&a) {
                Some(entry) => entry.answer.pipelined_cap(path),
                None => CapRef::broken(error::internal("pipelined on a forgotten answer")),
            },
        };
        metrics::call_received();
        if let Some(e) = self.refused().or_else(|| self.vat_overloaded()) {
            drop(params);
            return self.fail_answer(answer, e);
        }
        let bytes = params.message_words().saturating_mul(8);
        if !self.held.is_empty() && self.held_bytes.saturating_add(bytes) > self.max_held {
            drop(params);
            return self.fail_answer(
                answer,
                capnp::Error::overloaded(format!(
                    "too many bytes of calls waiting for an answer on this connection \
                     (at most {})",
                    self.max_held
                )),
            );
        }
        let payload = match self.in_payload(params) {
            Ok(p) => p,
            Err(e) => return self.fail_answer(answer, e),
        };
        self.held.insert(answer, bytes);
        self.held_bytes += bytes;
        self.report_holdings();
        let answer_ref = send_call(&target, interface_id, method_id, payload);
        if self.results_to_yourself {
            answer_ref
                .shared()
                .set_origin(self.me.clone(), self.id, answer);
        }
        let waiter = WaitOutcome {
            answer: answer_ref.clone(),
        };
        let handle = ctx.spawn(waiter.into_actor(self).map(move |outcome, act, ctx| {
            if let Some(entry) = act.answers.get_mut(&answer) {
                entry.sending = None;
            }
            act.send_return(answer, outcome);
            act.handle_core_events(ctx);
        }));
        self.answers.insert(
            answer,
            PeerAnswer {
                answer: answer_ref,
                sending: Some(handle),
                arrived: std::time::Instant::now(),
                retained: 0,
            },
        );
    }

    /// The peer no longer wants our answer `answer`.
    pub(super) fn on_cancel(
        &mut self,
        answer: u32,
        not_before_start: bool,
        ctx: &mut actix::Context<Self>,
    ) {
        let waiting = self
            .answers
            .get(&answer)
            .filter(|_| not_before_start)
            .map(|entry| entry.answer.shared().when_started());
        match waiting {
            // Let it start first (an older peer may count on its
            // delivery), then cancel what is still running.
            Some(started) => {
                ctx.spawn(
                    actix::fut::wrap_future(started).map(move |(), act: &mut Self, ctx| {
                        act.cancel_answer(answer, ctx);
                        act.handle_core_events(ctx);
                    }),
                );
            }
            None => self.cancel_answer(answer, ctx),
        }
    }

    /// The peer has finished with our answer `answer`: forget it.
    pub(super) fn on_finished(&mut self, answer: u32, ctx: &mut actix::Context<Self>) {
        self.unhold(answer);
        // (A handle left means the answer was given by a tail call
        // and its own outcome never came: stop waiting for it.)
        self.forget_peer_answer(answer, ctx);
    }

    /// Forgets the peer's call `answer`: stops waiting for its outcome
    /// (which cancels the call unless something else holds its answer),
    /// and the answer no longer names it as its origin (the id may be
    /// reused).
    fn forget_peer_answer(&mut self, answer: u32, ctx: &mut actix::Context<Self>) {
        if let Some(PeerAnswer {
            answer: r,
            sending: h,
            retained,
            ..
        }) = self.answers.remove(&answer)
        {
            r.shared().clear_origin();
            if let Some(h) = h {
                ctx.cancel_future(h);
            }
            self.unretain(retained);
        }
    }

    /// The peer returned results (or an error) for our question: complete
    /// it, and embargo the fields calls were pipelined on that turn out to
    /// be ours.
    pub(super) fn on_return(
        &mut self,
        question: u32,
        result: Result<InPayload<CapRef>, capnp::Error>,
        pipelined: Vec<Vec<u16>>,
    ) {
        if let Some(Question {
            completer,
            answer: a,
        }) = self.questions.remove(&question)
        {
            if let Some(a) = &a {
                self.question_of.remove(&key(a));
            }
            // Which capabilities the peer named as ours (an export of
            // ours, or a field of one of our answers); only asked
            // about fields calls were pipelined on.
            let ours: Vec<bool> = match &result {
                Ok(p) if !pipelined.is_empty() => p
                    .caps
                    .iter()
                    .map(|c| matches!(c, InCap::Local(_) | InCap::Answer { .. }))
                    .collect(),
                _ => Vec::new(),
            };
            match result.and_then(|p| self.in_payload(p)) {
                Ok(p) => {
                    if let Some(a) = &a {
                        self.embargo_local_fields(question, a, &p, pipelined, &ours);
                    }
                    completer.complete_payload(p)
                }
                Err(e) => completer.complete(Err(e)),
            }
        }
    }

    /// Our question is answered by one of the peer's questions to us (a
    /// tail call it made on our behalf).
    pub(super) fn on_return_take_from(
        &mut self,
        question: u32,
        answer: u32,
        pipelined: Vec<Vec<u16>>,
        ctx: &mut actix::Context<Self>,
    ) {
        // A tail call the peer made on our behalf: our question's
        // answer is that of a call it made on us (which we kept).
        if let Some(Question {
            completer,
            answer: a,
        }) = self.questions.remove(&question)
        {
            if let Some(a) = &a {
                self.question_of.remove(&key(a));
            }
            match (
                self.answers.get(&answer).map(|entry| entry.answer.clone()),
                a,
            ) {
                (Some(source), Some(a)) => {
                    // Every field calls were pipelined on over the
                    // wire is now one of ours: those calls come back
                    // through the peer, so later ones wait for them.
                    for path in pipelined {
                        self.embargo_field(question, &a, path);
                    }
                    a.forward_to(source);
                    drop(completer);
                }
                (Some(source), None) => {
                    ctx.spawn(
                        WaitOutcome { answer: source }
                            .into_actor(self)
                            .map(move |outcome, _, _| completer.complete(outcome)),
                    );
                }
                (None, _) => completer.complete(Err(error::internal("tail call source forgotten"))),
            }
        }
    }

    /// `resultsSentElsewhere` for our tail call: the peer keeps the
    /// results for its own question; calls pipelined on ours go on to it
    /// until we finish (cancel) it. Forgotten at once if the core has
    /// already forgotten it (the peer said no finish is needed).
    pub(super) fn on_results_sent_elsewhere(&mut self, question: u32) {
        if !self.core.sends_results_elsewhere(question) {
            self.forget_question(question);
        }
    }

    /// Forgets our question `question` without completing it.
    pub(super) fn forget_question(&mut self, question: u32) {
        if let Some(q) = self.questions.remove(&question) {
            if let Some(a) = &q.answer {
                self.question_of.remove(&key(a));
            }
        }
    }

    /// The peer's disembargo names something of ours: reflect it once every
    /// call the peer sent that way before has gone on.
    pub(super) fn on_loopback(
        &mut self,
        embargo: u32,
        target: CallTarget<CapRef>,
        ctx: &mut actix::Context<Self>,
    ) {
        let resolved = match &target {
            CallTarget::Answer { answer, path } => self
                .answers
                .get(answer)
                .and_then(|entry| entry.answer.shared().field_now(path)),
            CallTarget::Local(c) => Some(c.clone()),
        };
        // The peer's own capability, or a field of one of our
        // questions to the peer, somewhere along the chain of
        // resolutions (not necessarily at its end: what the peer
        // embargoed is the step it knows of).
        let back_to_sender = resolved
            .as_ref()
            .is_some_and(|c| self.leads_back_to_peer(c));
        if !back_to_sender {
            // It did when the peer sent it (a question of ours it
            // named has returned since, or a promise resolved):
            // every call the peer sent that way before has been
            // handed on by now, so reflect it after them, through
            // our own mailbox.
            tracing::debug!(
                conn = self.id,
                embargo,
                "disembargo target no longer leads back to the peer; reflected at once"
            );
            let target = self.reflection_target(&target);
            self.deferred.do_send(Deferred::Reflect { embargo, target });
            return;
        }
        // Reflect it along the path calls on the target take
        // (through any queue on our side), so that it goes out
        // after every call the peer sent before it. If the path
        // no longer ends at the peer when the marker gets there
        // (the field it went through has been answered since with
        // something else, say), the marker is dropped there, after
        // the calls before it: then reflect it from here.
        let (mark, completer) = Answer::open();
        let reply = self.reflection_target(&target);
        ctx.spawn(
            WaitOutcome { answer: mark }
                .into_actor(self)
                .map(move |outcome, act, _| {
                    if outcome.is_err() {
                        act.core.disembargo_reply_to(embargo, &reply);
                    }
                }),
        );
        let marker = Call {
            interface_id: 0,
            method_id: 0,
            params: Payload::empty(),
            completer,
            marker: Some(Marker {
                conn_id: self.id,
                embargo,
            }),
        };
        match target {
            CallTarget::Answer { answer, path } => {
                if let Some(entry) = self.answers.get(&answer) {
                    entry.answer.deliver_pipelined(&path, marker);
                }
            }
            CallTarget::Local(c) => c.deliver(marker),
        }
    }

    /// We exported a promise: tell the peer what it resolves to, once it
    /// does.
    pub(super) fn on_exported_promise(
        &mut self,
        export: u32,
        cap: CapRef,
        ctx: &mut actix::Context<Self>,
    ) {
        let resolved = cap.resolved_end_weak();
        let promise = cap.downgrade();
        drop(cap);
        ctx.spawn(
            actix::fut::wrap_future(resolved).map(move |end, act: &mut Self, ctx| {
                // Released before it resolved: the core sends nothing.
                let to = match end {
                    Some(end) => match act.out_cap(Some(&end)) {
                        OutCap::Promise(_) => {
                            OutCap::Broken(error::internal("a settled promise is still a promise"))
                        }
                        to => to,
                    },
                    None => return,
                };
                // The export id may name another promise by now.
                if let Some(promise) = promise.upgrade() {
                    act.core.resolve_export(export, &promise, to);
                }
                act.handle_core_events(ctx);
            }),
        );
    }

    /// The connection ended: fail our questions, stop serving the peer's,
    /// break our imports and lift our embargoes.
    pub(super) fn on_aborted(&mut self, e: capnp::Error, ctx: &mut actix::Context<Self>) {
        tracing::debug!(conn = self.id, "connection ended: {e}");
        for (_, question) in self.questions.drain() {
            question.completer.complete(Err(e.clone()));
        }
        self.question_of.clear();
        self.held.clear();
        self.held_bytes = 0;
        self.retained_answers = 0;
        self.retained_bytes = 0;
        self.reported = 0;
        self.queued_out = 0;
        if let Some(budget) = &self.budget {
            budget.remove(self.id);
        }
        for (_, entry) in self.answers.drain() {
            if let Some(h) = entry.sending {
                ctx.cancel_future(h);
            }
        }
        for id in self.imports.keys().copied().collect::<Vec<_>>() {
            self.break_import(id, e.clone());
        }
        self.imports.clear();
        // Embargoes still queued to start break now (their messages may
        // never be read: see `deferred.rs`); those started come next, one
        // `EmbargoBroken` each.
        for start in self.embargo_starts.drain(..) {
            start.resolver.reject(e.clone());
        }
    }

    /// The connection ended with this embargo of ours live: fail what it
    /// holds.
    pub(super) fn on_embargo_broken(&mut self, waiting: Embargo) {
        let e = self
            .core
            .aborted()
            .cloned()
            .unwrap_or_else(|| capnp::Error::disconnected("connection closed".into()));
        match waiting {
            Embargo::Field { held, answer, path } => {
                for call in held {
                    call.fail(e.clone());
                }
                // Nothing is kept in order any more.
                answer.lift_embargo(&path);
            }
            Embargo::Import { resolver, .. } => resolver.reject(e),
        }
    }

    /// After a return: a field that calls were pipelined on over the wire
    /// and that turns out not to be the peer's (one of our own objects, or
    /// one on another connection) gets an embargo, so that calls made on it
    /// from now on wait for those still coming back through the peer.
    pub(super) fn embargo_local_fields(
        &mut self,
        question: u32,
        answer: &Arc<Answer>,
        results: &Payload,
        pipelined: Vec<Vec<u16>>,
        ours: &[bool],
    ) {
        for path in pipelined {
            // Judged as the peer named it: one of its capabilities means
            // the calls pipelined on it stay with the peer (if the peer
            // later resolves it to one of ours, the import's own embargo
            // takes care of them); one of ours (an export, or one of our
            // answers), even if it has resolved back to the peer since,
            // means they come back through us.
            // (A field of one of our answers that is answered already is
            // what it resolved to, which may be the peer's: judged by the
            // descriptor.)
            let field = results.cap_at(&path);
            let named_ours = results
                .caps
                .iter()
                .zip(ours)
                .any(|(c, &o)| o && c.as_ref() == Some(&field));
            let theirs = !named_ours
                && matches!(field.kind(), Kind::Remote { conn_id, .. } if *conn_id == self.id);
            if theirs {
                if let Some(resolvable) = &field.node.resolvable {
                    resolvable.mark_called();
                }
            }
            if theirs || matches!(field.shortened().kind(), Kind::Broken(_)) {
                continue;
            }
            self.embargo_field(question, answer, path);
        }
    }

    /// Puts field `path` of our answered question under an embargo: asks
    /// the peer to reflect a disembargo along the path the calls pipelined
    /// on it took, and holds calls made on it until the reflection comes.
    pub(super) fn embargo_field(&mut self, question: u32, answer: &Arc<Answer>, path: Vec<u16>) {
        let waiting = Embargo::Field {
            answer: answer.clone(),
            path: path.clone(),
            held: Vec::new(),
        };
        if self
            .core
            .disembargo_request(question, &path, waiting)
            .is_ok()
        {
            answer.embargo(&path);
        }
    }

    /// What a disembargo reflected from here names: what the peer's
    /// disembargo named (a receiverLoopback's target is not read, its id
    /// is).
    pub(super) fn reflection_target(&self, target: &CallTarget<CapRef>) -> OutTarget {
        match target {
            CallTarget::Answer { answer, path } => OutTarget::Answer {
                question: *answer,
                path: path.clone(),
            },
            CallTarget::Local(c) => OutTarget::Import(self.core.export_id(c).unwrap_or(0)),
        }
    }

    /// The peer resolved one of its promises we import (path shortening).
    /// To another of its capabilities: calls go there directly from now on
    /// (they stay on this connection, behind the earlier ones). To one of
    /// ours (or anything that goes through us, even if it leads back to the
    /// peer: the Tribble race of rpc.capnp): calls made before are still
    /// coming back through the peer, so later ones wait in a local promise
    /// until a disembargo has made the round trip.
    pub(super) fn resolve_import(&mut self, import: u32, to: InCap<CapRef>) {
        let through_us = !matches!(to, InCap::Import { .. });
        let Some(target) = self.in_cap(to) else {
            return self.break_import(
                import,
                capnp::Error::failed("the peer resolved a promise to nothing".into()),
            );
        };
        let Some(node) = self
            .imports
            .get(&import)
            .and_then(|entry| entry.node.upgrade())
        else {
            // Released already: nobody can call it any more.
            return;
        };
        let Some(resolvable) = node.resolvable.as_ref() else {
            return;
        };
        if target.node.resolvable.is_some() && Arc::ptr_eq(&target.node, &node) {
            return;
        }
        if !through_us && resolvable.was_called() {
            // Calls sent to this import are on their way to what it became:
            // if that later resolves to one of ours, they count.
            if let Some(t) = &target.node.resolvable {
                t.mark_called();
            }
        }
        if !through_us || matches!(target.kind(), Kind::Broken(_)) || !resolvable.was_called() {
            // No embargo: the path stays on this connection, or the import
            // is broken, or no call of ours went to it over the wire (so
            // none can be on its way back through the peer).
            return resolvable.resolve(target);
        }
        // Calls on the import wait from now on; the disembargo itself goes
        // out through our own mailbox, behind any call we are still
        // forwarding to this import from the same read (calls the peer sent
        // us for it), so that it follows them on the wire.
        let (promise, resolver) = crate::promise::new_promise();
        resolvable.resolve(promise);
        self.embargo_starts.push_back(ImportEmbargoStart {
            import,
            resolver,
            target,
        });
        self.deferred.do_send(Deferred::EmbargoImport);
    }

    /// Breaks the node of an import (its watchers fire, calls fail).
    pub(super) fn break_import(&mut self, import: u32, e: capnp::Error) {
        let node = self
            .imports
            .get(&import)
            .and_then(|entry| entry.node.upgrade());
        if let Some(resolvable) = node.as_ref().and_then(|n| n.resolvable.as_ref()) {
            resolvable.resolve(CapRef::broken(e));
        }
    }

    /// Answers the peer's call `answer` with `error` before it ran (see
    /// [`Connection::keep_failed`]).
    pub(super) fn fail_answer(&mut self, answer: u32, error: capnp::Error) {
        metrics::call_answered(Err(error.kind), std::time::Duration::ZERO);
        self.keep_failed(answer, error.clone());
        self.core.return_error(answer, error);
    }

    /// Keeps `error` as the outcome of the peer's call `answer`, which
    /// failed before it ran, like any answer's until the peer finishes it:
    /// the peer may still name the answer. A call pipelined on it, or a
    /// field of it passed back as `receiverAnswer`, is then a broken
    /// capability with this error; a peer that asked for
    /// `sendResultsTo.yourself` takes it from there
    /// (`takeFromOtherQuestion`).
    pub(super) fn keep_failed(&mut self, answer: u32, error: capnp::Error) {
        let (kept, completer) = Answer::open();
        completer.complete(Err(error));
        self.answers.insert(
            answer,
            PeerAnswer {
                answer: kept,
                sending: None,
                arrived: std::time::Instant::now(),
                retained: 0,
            },
        );
    }

    /// The peer no longer wants an answer: stop waiting for it (its call
    /// is cancelled unless something else holds it) and say `canceled`.
    pub(super) fn cancel_answer(&mut self, answer: u32, ctx: &mut actix::Context<Self>) {
        self.unhold(answer);
        self.forget_peer_answer(answer, ctx);
        self.core.return_canceled(answer);
    }

    /// True if `cap`, or what it resolves to step by step, is a capability
    /// of the peer on this connection (an import, or a field of one of our
    /// questions to it).
    pub(super) fn leads_back_to_peer(&self, cap: &CapRef) -> bool {
        let mut cur = cap.clone();
        for _ in 0..64 {
            match cur.kind() {
                Kind::Remote { conn_id, .. } if *conn_id == self.id => return true,
                Kind::Pipelined { answer, .. }
                    if answer
                        .shared()
                        .is_some_and(|a| self.question_of.contains_key(&key(&a))) =>
                {
                    return true
                }
                _ => {}
            }
            match cur.resolved() {
                Some(next) => cur = next,
                None => return false,
            }
        }
        false
    }

    /// A call of the peer's is answered (or cancelled): its bytes no
    /// longer count against the budget.
    pub(super) fn unhold(&mut self, answer: u32) {
        if let Some(bytes) = self.held.remove(&answer) {
            self.held_bytes = self.held_bytes.saturating_sub(bytes);
            self.report_holdings();
        }
    }
}
