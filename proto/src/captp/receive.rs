//! Incoming messages: the entry points for received bytes or decoded
//! messages, then one method per message kind (`on_call`, `on_return`,
//! `on_finish`, ...), which check the message against the tables, update
//! them and queue [`Event`]s. Any protocol violation aborts the
//! connection with its reason.

use std::hash::Hash;

use capnp::message;
use capnp::Error;

use super::build::small_message;
use super::exports::Export;
use super::parse::{
    parse, Parsed, RawCall, RawCap, RawDisembargo, RawEmbargo, RawFinish, RawResult, RawReturn,
    RawTarget, RawUnimplemented, ResultsTo,
};
use super::{protocol_error, CallTarget, Conn, Event, InPayload};
use crate::frame::{FrameError, WordSegments};
use crate::rpc_capnp::message as rpc_message;

impl<L: Clone + Eq + Hash, E> Conn<L, E> {
    /// Feeds bytes received from the peer. Complete messages are handled at
    /// once; their effects are in [`Conn::next_event`] and
    /// [`Conn::take_output`].
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.aborted.is_some() {
            return;
        }
        self.decoder.push(bytes);
        loop {
            if self.aborted.is_some() {
                return;
            }
            match self.decoder.next_message() {
                Ok(Some(m)) => self.handle(m),
                Ok(None) => return,
                Err(e) => return self.abort(protocol_error(e.to_string())),
            }
        }
    }

    /// The peer closed its side of the stream.
    pub fn receive_end(&mut self) {
        match self.decoder.finish() {
            Ok(()) => self.receive_closed(),
            Err(e) => self.receive_invalid(e),
        }
    }

    /// For a runtime that decodes frames itself (with a
    /// [`FrameDecoder`](crate::frame::FrameDecoder) made with the limits given
    /// to [`Conn::new`], handing each message to [`Conn::handle`]): the stream
    /// of frames is invalid (or was cut inside a frame). Aborts, telling the
    /// peer why.
    pub fn receive_invalid(&mut self, e: FrameError) {
        // The peer may only have closed its sending side: tell it why
        // its last frame was not used.
        self.abort(protocol_error(e.to_string()))
    }

    /// For a runtime that decodes frames itself: the peer closed its side
    /// of the stream after whole frames.
    pub fn receive_closed(&mut self) {
        self.disconnected(Error::disconnected("the peer closed the connection".into()))
    }

    /// Handles one decoded message.
    pub fn handle(&mut self, msg: message::Reader<WordSegments>) {
        if self.aborted.is_some() {
            return;
        }
        let parsed = match parse(&msg) {
            Ok(p) => p,
            Err(e) => return self.abort(protocol_error(format!("malformed message: {e}"))),
        };
        if let Err(e) = self.dispatch(parsed, msg) {
            self.abort(e);
        }
    }

    /// Acts on one parsed message; an error aborts the connection.
    fn dispatch(
        &mut self,
        parsed: Parsed,
        msg: message::Reader<WordSegments>,
    ) -> Result<(), Error> {
        match parsed {
            Parsed::Unknown => self.on_unknown(&msg),
            Parsed::Abort(e) => {
                self.disconnected(e);
                Ok(())
            }
            Parsed::Unimplemented(inner) => self.on_unimplemented(inner),
            Parsed::Bootstrap {
                question,
                object_id,
            } => self.on_bootstrap(question, object_id),
            Parsed::Call(call) => self.on_call(call, msg),
            Parsed::Return(ret) => self.on_return(ret, msg),
            Parsed::Finish(finish) => self.on_finish(finish),
            Parsed::Resolve { promise, to } => self.on_resolve(promise, to),
            Parsed::Release { id, count } => self.release_export(id, count),
            Parsed::Disembargo(d) => self.on_disembargo(d, &msg),
        }
    }

    /// A message we do not implement: echoed back in `unimplemented`.
    fn on_unknown(&mut self, msg: &message::Reader<WordSegments>) -> Result<(), Error> {
        let root: rpc_message::Reader<'_> = msg.get_root()?;
        let mut m = small_message();
        m.init_root::<rpc_message::Builder<'_>>()
            .set_unimplemented(root)?;
        self.send(&m);
        Ok(())
    }

    /// `bootstrap`: a new answer, for the runtime to fill.
    fn on_bootstrap(&mut self, question: u32, object_id: Vec<u8>) -> Result<(), Error> {
        self.new_answer(question)?;
        self.events.push_back(Event::Bootstrap {
            answer: question,
            object_id,
        });
        Ok(())
    }

    /// `call`: a new answer; the call goes to the runtime unless the core
    /// can answer it at once (a broken target, three-party handoff).
    fn on_call(&mut self, call: RawCall, msg: message::Reader<WordSegments>) -> Result<(), Error> {
        let RawCall {
            question,
            target,
            interface_id,
            method_id,
            caps,
            to,
            no_pipelining,
            size,
        } = call;
        self.new_answer(question)?;
        if let Some(a) = self.answers.get_mut(&question) {
            a.no_pipelining = no_pipelining;
        }
        let caps = self.import_caps(caps)?;
        let target = match target {
            RawTarget::Import(id) => match self.exports.get(id) {
                Some(Export { cap: Some(l), .. }) => CallTarget::Local(l.clone()),
                Some(Export { cap: None, .. }) => {
                    self.drop_in_caps(&caps);
                    if let (ResultsTo::Yourself, Some(a)) = (&to, self.answers.get_mut(&question)) {
                        // The caller will take this outcome from another
                        // question: the return says `resultsSentElsewhere`.
                        a.results_to_yourself = true;
                    }
                    self.fail_call(
                        question,
                        Error::failed("call on a broken capability".into()),
                    );
                    return Ok(());
                }
                None => return Err(protocol_error(format!("call on unknown export {id}"))),
            },
            RawTarget::Answer(a, path) => {
                if !self.answers.contains_key(&a) {
                    return Err(protocol_error(format!(
                        "call pipelined on unknown answer {a}"
                    )));
                }
                CallTarget::Answer { answer: a, path }
            }
        };
        match to {
            ResultsTo::Caller => {}
            ResultsTo::Yourself => {
                if let Some(a) = self.answers.get_mut(&question) {
                    a.results_to_yourself = true;
                }
            }
            ResultsTo::ThirdParty => {
                self.drop_in_caps(&caps);
                self.fail_call(
                    question,
                    Error::unimplemented("three-party handoff is not supported yet".into()),
                );
                return Ok(());
            }
        }
        self.events.push_back(Event::Call {
            answer: question,
            target,
            interface_id,
            method_id,
            params: InPayload {
                message: msg,
                caps,
                nesting_limit: self.nesting_limit,
                size,
            },
        });
        Ok(())
    }

    /// `return`: one of our questions is answered. Its finish is sent
    /// after whatever the runtime writes while handling the return,
    /// unless the peer needs none or we cancelled the question already.
    fn on_return(
        &mut self,
        ret: RawReturn,
        msg: message::Reader<WordSegments>,
    ) -> Result<(), Error> {
        let RawReturn {
            answer,
            release_params,
            no_finish_needed,
            result,
        } = ret;
        let q = match self.questions.get_mut(answer) {
            Some(q) if !q.returned => q,
            _ => {
                return Err(protocol_error(format!(
                    "return for unknown question {answer}"
                )))
            }
        };
        q.returned = true;
        let already_finished = q.finished;
        let yourself = q.yourself;
        let params = std::mem::take(&mut q.param_exports);
        let pipelined = std::mem::take(&mut q.pipelined);
        if release_params {
            for id in params {
                self.release_export(id, 1)?;
            }
        }
        let result = match result {
            RawResult::Results(caps, size) => {
                let caps = self.import_caps(caps)?;
                Ok(InPayload {
                    message: msg,
                    caps,
                    nesting_limit: self.nesting_limit,
                    size,
                })
            }
            RawResult::Error(e) => Err(e),
            RawResult::TakeFrom(other) => {
                return self.on_return_take_from(
                    answer,
                    other,
                    no_finish_needed || already_finished,
                    pipelined,
                )
            }
        };
        if no_finish_needed || already_finished {
            self.questions.remove(answer);
        } else if !yourself {
            self.deferred_finish.push(answer);
        }
        if yourself {
            // Our tail call: the results went to the peer's own question
            // (`resultsSentElsewhere`); any the peer sent all the same are
            // not ours to keep.
            if let Ok(p) = &result {
                self.drop_in_caps(&p.caps);
            }
            self.events
                .push_back(Event::ResultsSentElsewhere { question: answer });
            return Ok(());
        }
        self.events.push_back(Event::Return {
            question: answer,
            result,
            pipelined,
        });
        Ok(())
    }

    /// A `return` saying `takeFromOtherQuestion`: the peer made a tail
    /// call on our behalf, whose results we keep in our answer `other`.
    fn on_return_take_from(
        &mut self,
        question: u32,
        other: u32,
        no_finish: bool,
        pipelined: Vec<Vec<u16>>,
    ) -> Result<(), Error> {
        if !self
            .answers
            .get(&other)
            .is_some_and(|a| a.results_to_yourself)
        {
            return Err(protocol_error(format!(
                "takeFromOtherQuestion names {other}, which is not a call whose results we keep"
            )));
        }
        if no_finish {
            self.questions.remove(question);
        } else {
            self.deferred_finish.push(question);
        }
        self.events.push_back(Event::ReturnTakeFrom {
            question,
            answer: other,
            pipelined,
        });
        Ok(())
    }

    /// `finish`: the peer is done with one of our answers (before its
    /// return, that cancels the call).
    fn on_finish(&mut self, finish: RawFinish) -> Result<(), Error> {
        let RawFinish {
            question,
            release_results,
            not_before_start,
        } = finish;
        let Some(a) = self.answers.get_mut(&question) else {
            return Err(protocol_error(format!(
                "finish for unknown question {question}"
            )));
        };
        if a.finished {
            return Err(protocol_error(format!(
                "finish sent twice for question {question}"
            )));
        }
        a.finished = true;
        let returned = a.returned;
        let results = std::mem::take(&mut a.result_exports);
        if release_results {
            for id in results {
                self.release_export(id, 1)?;
            }
        }
        if returned {
            self.answers.remove(&question);
            self.events.push_back(Event::Finished { answer: question });
        } else {
            self.events.push_back(Event::Cancel {
                answer: question,
                not_before_start,
            });
        }
        Ok(())
    }

    /// `resolve`: a promise the peer exported to us has settled.
    fn on_resolve(&mut self, promise: u32, to: Result<RawCap, Error>) -> Result<(), Error> {
        let known = match self.imports.get_mut(&promise) {
            Some(i) if !i.promise || i.resolved => {
                return Err(protocol_error(format!(
                    "resolve of settled import {promise}"
                )));
            }
            Some(i) => {
                i.resolved = true;
                true
            }
            None => false,
        };
        let to = match to {
            Ok(d) => Ok(self.import_cap(d)?),
            Err(e) => Err(e),
        };
        if known {
            self.events.push_back(Event::Resolve {
                import: promise,
                to,
            });
        } else if let Ok(c) = to {
            // We released that promise already: drop what it became.
            self.drop_in_caps(&[c]);
        }
        Ok(())
    }

    /// `disembargo`: the peer asks us to reflect one of its embargoes
    /// (`senderLoopback`), or reflects one of ours (`receiverLoopback`).
    fn on_disembargo(
        &mut self,
        d: RawDisembargo,
        msg: &message::Reader<WordSegments>,
    ) -> Result<(), Error> {
        match d.context {
            RawEmbargo::SenderLoopback(embargo) => self.on_sender_loopback(embargo, d.target),
            RawEmbargo::ReceiverLoopback(e) => {
                let Some(waiting) = self.embargoes.lift(e) else {
                    return Err(protocol_error(format!(
                        "disembargo for unknown embargo {e}"
                    )));
                };
                self.events.push_back(Event::EmbargoLifted {
                    embargo: e,
                    waiting,
                });
                Ok(())
            }
            RawEmbargo::Other => self.on_unknown(msg),
        }
    }

    /// A disembargo to reflect: the runtime finds where `target` leads
    /// ([`Event::Loopback`]), which must be back to the peer.
    fn on_sender_loopback(&mut self, embargo: u32, target: RawTarget) -> Result<(), Error> {
        let target = match target {
            RawTarget::Answer(a, path) if self.answers.contains_key(&a) => {
                CallTarget::Answer { answer: a, path }
            }
            RawTarget::Answer(a, _) => {
                return Err(protocol_error(format!("disembargo on unknown answer {a}")));
            }
            RawTarget::Import(id) => match self.exports.get(id) {
                // A promise we exported and resolved: the runtime checks
                // that it leads back to the peer.
                Some(Export {
                    cap: Some(l),
                    unresolved_promise: false,
                    promise: true,
                    ..
                }) => CallTarget::Local(l.clone()),
                _ => {
                    return Err(protocol_error(format!(
                        "disembargo on export {id}, which is not a resolved promise"
                    )));
                }
            },
        };
        self.events.push_back(Event::Loopback { embargo, target });
        Ok(())
    }

    /// `unimplemented`: the peer did not understand something we sent.
    fn on_unimplemented(&mut self, inner: RawUnimplemented) -> Result<(), Error> {
        match inner {
            RawUnimplemented::Resolve(id) => {
                // A level-0 peer: it will never use the promise.
                if self.exports.get(id).is_some() {
                    self.release_export(id, 1)?;
                }
            }
            RawUnimplemented::Question(q) => {
                let Some(question) = self.questions.remove(q) else {
                    return Err(protocol_error(format!(
                        "unimplemented for unknown question {q}"
                    )));
                };
                for id in question.param_exports {
                    let _ = self.release_export(id, 1);
                }
                if question.yourself {
                    self.events
                        .push_back(Event::ResultsSentElsewhere { question: q });
                    return Ok(());
                }
                self.events.push_back(Event::Return {
                    question: q,
                    result: Err(Error::unimplemented(
                        "the peer does not implement this message".into(),
                    )),
                    pipelined: question.pipelined,
                });
            }
            RawUnimplemented::Other => {
                return Err(protocol_error(
                    "peer did not understand a message it must handle",
                ));
            }
        }
        Ok(())
    }
}
