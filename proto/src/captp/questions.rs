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
}

impl<L: Clone + Eq + Hash> Conn<L> {
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
        }))
    }
}
