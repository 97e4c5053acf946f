//! The question table: calls (and bootstraps) we sent, by question id,
//! until both their return has arrived and we have sent their finish
//! (spec: "Questions" in `rpc.capnp`). Decides when a question id is
//! allocated and whether the table is full.

use std::hash::Hash;

use capnp::Error;

use super::Conn;

pub(super) struct Question {
    pub(super) returned: bool,
    /// Sent with `sendResultsTo.yourself` (our tail call): the peer keeps
    /// the results for a `takeFromOtherQuestion` of ours; the question
    /// stays pipelinable after its return, until we finish it.
    pub(super) yourself: bool,
    /// We sent `finish` (cancelled it) before the return.
    pub(super) finished: bool,
    /// Exports listed in the params (released if the peer says
    /// `releaseParamCaps`, or does not implement the call).
    pub(super) param_exports: Vec<u32>,
    /// The fields calls were pipelined on over the wire before the return,
    /// most recently used last: handed to the runtime with the return
    /// ([`Event::Return`](super::Event::Return)), which embargoes those
    /// that turn out not to be the peer's. Empty, and unallocated, unless
    /// a call was pipelined on this question.
    pub(super) pipelined: Vec<Vec<u16>>,
}

impl Question {
    /// A call is pipelined on field `path`: remember it (once, moved to
    /// the end if already there; allocates only for a new path).
    pub(super) fn note_pipelined(&mut self, path: &[u16]) {
        match self.pipelined.iter().position(|p| p == path) {
            Some(i) => {
                let p = self.pipelined.remove(i);
                self.pipelined.push(p);
            }
            None => self.pipelined.push(path.to_vec()),
        }
    }
}

impl<L: Clone + Eq + Hash, E> Conn<L, E> {
    pub(super) fn new_question(&mut self) -> Result<u32, Error> {
        if let Some(e) = &self.aborted {
            return Err(e.clone());
        }
        if self.questions.len() >= self.limits.max_questions {
            return Err(Error::overloaded(format!(
                "too many outstanding questions on this connection (limit {})",
                self.limits.max_questions
            )));
        }
        Ok(self.questions.insert(Question {
            returned: false,
            yourself: false,
            finished: false,
            param_exports: Vec::new(),
            pipelined: Vec::new(),
        }))
    }

    /// True while `question` is one of our tail calls (sent by
    /// [`Conn::tail_call`] with `sendResultsTo.yourself`): its return
    /// reaches the runtime as
    /// [`Event::ResultsSentElsewhere`](super::Event::ResultsSentElsewhere)
    /// and nothing else will, so a runtime that cancels it
    /// ([`Conn::finish`]) forgets it at once. Ask before finishing.
    pub fn sends_results_elsewhere(&self, question: u32) -> bool {
        self.questions.get(question).is_some_and(|q| q.yourself)
    }
}
