//! The answer table: calls the peer made on us, by the peer's question
//! id, until we have returned and the peer has finished them. Decides
//! when an answer is pending, returned, finished or forgotten
//! (`noFinishNeeded`), and how a call whose results the peer asked us to
//! keep (`sendResultsTo.yourself`) is answered.

use std::hash::Hash;

use capnp::Error;

use super::{protocol_error, Conn, Event};

pub(super) struct Answer {
    pub(super) returned: bool,
    /// The caller asked us to keep the results (`sendResultsTo.yourself`).
    pub(super) results_to_yourself: bool,
    /// The caller promised not to pipeline on the results
    /// (`noPromisePipelining`): a return without capabilities can say
    /// `noFinishNeeded` and forget the answer at once.
    pub(super) no_pipelining: bool,
    pub(super) finished: bool,
    /// Exports listed in the results we sent (released on
    /// `releaseResultCaps`).
    pub(super) result_exports: Vec<u32>,
}

impl<L: Clone + Eq + Hash, E> Conn<L, E> {
    /// For a call whose caller asked us to keep the results: the runtime
    /// keeps them (for the peer's `takeFromOtherQuestion`); the peer gets
    /// `resultsSentElsewhere`.
    pub(super) fn kept_for_tail_call(&mut self, answer: u32) -> bool {
        if !self
            .answers
            .get(&answer)
            .is_some_and(|a| a.results_to_yourself)
        {
            return false;
        }
        self.send_bare_return(answer, |mut r| r.set_results_sent_elsewhere(()));
        true
    }

    /// True if the caller of `answer` promised not to pipeline on it, so
    /// that a return without capabilities can say `noFinishNeeded`.
    pub(super) fn no_finish_needed(&self, answer: u32) -> bool {
        self.answers
            .get(&answer)
            .is_some_and(|a| a.no_pipelining && !a.results_to_yourself && !a.finished)
    }

    /// The answer was returned with `noFinishNeeded`: no finish will come.
    pub(super) fn forget_answer(&mut self, answer: u32) {
        if self.answers.remove(&answer).is_some() {
            self.events.push_back(Event::Finished { answer });
        }
    }

    pub(super) fn answer_pending(&self, answer: u32) -> bool {
        self.aborted.is_none() && self.answers.get(&answer).is_some_and(|a| !a.returned)
    }

    pub(super) fn answered(&mut self, answer: u32, exports: Vec<u32>) {
        let finished = match self.answers.get_mut(&answer) {
            Some(a) => {
                a.returned = true;
                a.result_exports = exports;
                a.finished
            }
            None => false,
        };
        if finished {
            self.answers.remove(&answer);
            self.events.push_back(Event::Finished { answer });
        }
    }

    /// Answers the peer's call `answer` with `error` at once, and tells
    /// the runtime ([`Event::CallFailed`]), which keeps the outcome while
    /// the answer id is live: without it, a `receiverAnswer` or a call
    /// naming the answer would find nothing there.
    pub(super) fn fail_call(&mut self, answer: u32, error: Error) {
        self.return_error(answer, error.clone());
        self.events.push_back(Event::CallFailed { answer, error });
    }

    pub(super) fn new_answer(&mut self, id: u32) -> Result<(), Error> {
        if self.answers.contains_key(&id) {
            return Err(protocol_error(format!(
                "question id {id} is already in use"
            )));
        }
        if self.answers.len() >= self.limits.max_answers {
            return Err(Error::overloaded(format!(
                "peer has more than {} calls outstanding on this connection",
                self.limits.max_answers
            )));
        }
        self.answers.insert(
            id,
            Answer {
                returned: false,
                results_to_yourself: false,
                no_pipelining: false,
                finished: false,
                result_exports: Vec::new(),
            },
        );
        Ok(())
    }
}
