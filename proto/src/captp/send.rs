//! The outgoing API: what the runtime asks to send (bootstrap, call,
//! tail call, finish, return in its kinds). Decides whether a message may
//! be sent at all (a question still pipelinable, an answer still pending)
//! and takes the fast paths for small content without capabilities
//! (headers written directly, see [`super::headers`]).

use std::hash::Hash;

use capnp::{Error, Word};

use super::build::{
    call_params, payload_message, return_results, small_message, splice_worthwhile, write_target,
    ContentRef, Written, WrittenContent, CALL_CONTENT, RETURN_CONTENT,
};
use super::headers::{call_header, finish_frame, return_header, words_to_bytes};
use super::{Conn, OutCap, OutContent, OutTarget};
use crate::exception;
use crate::frame;
use crate::rpc_capnp::{message as rpc_message, return_};

impl<L: Clone + Eq + Hash, E> Conn<L, E> {
    /// Asks for the peer's bootstrap capability, with a service ID (none
    /// is sent when it is empty). Returns the question id.
    pub fn bootstrap(&mut self, object_id: &[u8]) -> Result<u32, Error> {
        let q = self.new_question()?;
        let mut m = small_message();
        {
            let mut b = m.init_root::<rpc_message::Builder<'_>>().init_bootstrap();
            b.set_question_id(q);
            if !object_id.is_empty() {
                // The ID travels as Text holding its raw bytes.
                let t = b
                    .init_deprecated_object_id()
                    .initn_as::<capnp::text::Builder<'_>>(object_id.len() as u32);
                t.as_bytes_mut().copy_from_slice(object_id);
            }
        }
        self.send(&m);
        Ok(q)
    }

    /// Sends a call. `content` is the params content (see [`OutContent`]
    /// for the forms it may take), whose capability pointers index
    /// `caps`. Returns the question id.
    pub fn call<'c>(
        &mut self,
        target: &OutTarget,
        interface_id: u64,
        method_id: u16,
        content: impl Into<OutContent<'c>>,
        caps: &[OutCap<L>],
    ) -> Result<u32, Error> {
        content.into().with_parts(|content| {
            self.send_call(target, interface_id, method_id, content, caps, false)
        })
    }

    pub(super) fn send_call(
        &mut self,
        target: &OutTarget,
        interface_id: u64,
        method_id: u16,
        content: ContentRef<'_>,
        caps: &[OutCap<L>],
        yourself: bool,
    ) -> Result<u32, Error> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let sent = self.send_call_in(
            &mut scratch,
            target,
            interface_id,
            method_id,
            content,
            caps,
            yourself,
        );
        self.scratch = scratch;
        sent
    }

    /// [`Conn::send_call`], building the call in `scratch`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_call_in(
        &mut self,
        scratch: &mut Vec<Word>,
        target: &OutTarget,
        interface_id: u64,
        method_id: u16,
        content: ContentRef<'_>,
        caps: &[OutCap<L>],
        yourself: bool,
    ) -> Result<u32, Error> {
        if let OutTarget::Answer { question, path } = target {
            match self.questions.get_mut(*question) {
                Some(q) if !q.finished && (!q.returned || q.yourself) => q.note_pipelined(path),
                _ => {
                    return Err(Error::failed(format!(
                        "question {question} is no longer pipelinable"
                    )))
                }
            }
        }
        let q = self.new_question()?;
        // The common case, small content built here without capabilities
        // and a plain target: the header written directly, the content
        // inlined behind it (what the general path below sends, byte for
        // byte). Nothing to export: no resolves, no param exports.
        if let (ContentRef::Message([one], _), []) = (&content, caps) {
            if !splice_worthwhile(&[one]) {
                if let Some((words, len)) =
                    call_header(q, interface_id, method_id, target, yourself)
                {
                    let header = words_to_bytes(&words);
                    let header = &header[..len * 8];
                    if frame::encode_inlined(&[header], CALL_CONTENT, one, self.out.bytes_mut()) {
                        return Ok(q);
                    }
                }
            }
        }
        let mut m = payload_message(&content, caps.len(), scratch);
        let mut c = m.init_root::<rpc_message::Builder<'_>>().init_call();
        c.set_question_id(q);
        c.set_interface_id(interface_id);
        c.set_method_id(method_id);
        write_target(target, c.reborrow().init_target());
        if yourself {
            c.reborrow().init_send_results_to().set_yourself(());
        } else {
            c.reborrow().init_send_results_to().set_caller(());
        }
        let broken = match self.write_content(c.init_params(), &content, caps) {
            Ok(WrittenContent { written, spliced }) => {
                if let Err(e) = self.send_content(&mut m, call_params, CALL_CONTENT, spliced) {
                    self.questions.remove(q);
                    return Err(e);
                }
                if let Some(question) = self.questions.get_mut(q) {
                    question.param_exports = written.exports;
                }
                written.broken
            }
            Err(e) => {
                self.questions.remove(q);
                return Err(e);
            }
        };
        self.send_broken_resolves(broken);
        Ok(q)
    }

    /// Makes a tail call on behalf of `answer` (a call the peer made on
    /// us): sends the call with `sendResultsTo.yourself`, then answers
    /// `answer` with `takeFromOtherQuestion`, so that the results go
    /// straight from the callee to the peer's own question. Returns the
    /// question id; it stays pipelinable after its `resultsSentElsewhere`
    /// return, until [`Conn::finish`]. Fails (send an ordinary call then)
    /// if `answer` is not pending, or if its own caller asked us to keep
    /// its results (`sendResultsTo.yourself`): they must come back to us.
    pub fn tail_call<'c>(
        &mut self,
        answer: u32,
        target: &OutTarget,
        interface_id: u64,
        method_id: u16,
        content: impl Into<OutContent<'c>>,
        caps: &[OutCap<L>],
    ) -> Result<u32, Error> {
        if !self.answer_pending(answer) {
            return Err(Error::failed(format!("answer {answer} is not pending")));
        }
        if self
            .answers
            .get(&answer)
            .is_some_and(|a| a.results_to_yourself)
        {
            // Its caller asked us to keep its results (to take them from
            // another question): they must come back to us, so this tail
            // call goes out as an ordinary call.
            return Err(Error::failed(format!(
                "answer {answer} keeps its results for the peer"
            )));
        }
        let q = content.into().with_parts(|content| {
            self.send_call(target, interface_id, method_id, content, caps, true)
        })?;
        if let Some(question) = self.questions.get_mut(q) {
            question.yourself = true;
        }
        self.send_bare_return(answer, |mut r| r.set_take_from_other_question(q));
        Ok(q)
    }

    /// We no longer want the answer to `question` (sent after its return,
    /// or to cancel it). The question id is freed once returned.
    pub fn finish(&mut self, question: u32) {
        if self.aborted.is_some() {
            return;
        }
        let returned = match self.questions.get_mut(question) {
            Some(q) if q.finished => return,
            Some(q) => {
                q.finished = true;
                q.returned
            }
            None => return,
        };
        // releaseResultCaps false; we never count on a cancelled call
        // having been delivered (requireEarlyCancellationWorkaround false).
        self.out
            .bytes_mut()
            .extend_from_slice(&finish_frame(question));
        if returned {
            self.questions.remove(question);
        }
    }

    /// Answers `answer` with results: `content` is the results content
    /// (see [`OutContent`]), whose capability pointers index `caps`.
    pub fn return_results<'c>(
        &mut self,
        answer: u32,
        content: impl Into<OutContent<'c>>,
        caps: &[OutCap<L>],
    ) {
        content
            .into()
            .with_parts(|content| self.send_return(answer, content, caps))
    }

    pub(super) fn send_return(&mut self, answer: u32, content: ContentRef<'_>, caps: &[OutCap<L>]) {
        if !self.answer_pending(answer) {
            return;
        }
        if self.kept_for_tail_call(answer) {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        self.send_return_in(&mut scratch, answer, content, caps);
        self.scratch = scratch;
    }

    /// [`Conn::send_return`], building the return in `scratch`.
    pub(super) fn send_return_in(
        &mut self,
        scratch: &mut Vec<Word>,
        answer: u32,
        content: ContentRef<'_>,
        caps: &[OutCap<L>],
    ) {
        // As in `send_call_in`: small content built here, no capabilities.
        if let (ContentRef::Message([one], _), []) = (&content, caps) {
            if !splice_worthwhile(&[one]) {
                let forget = self.no_finish_needed(answer);
                let words = return_header(answer, forget);
                let header = words_to_bytes(&words);
                let header = &header[..words.len() * 8];
                if frame::encode_inlined(&[header], RETURN_CONTENT, one, self.out.bytes_mut()) {
                    self.answered(answer, Vec::new());
                    if forget {
                        self.forget_answer(answer);
                    }
                    return;
                }
            }
        }
        let mut m = payload_message(&content, caps.len(), scratch);
        let mut r = m.init_root::<rpc_message::Builder<'_>>().init_return();
        r.set_answer_id(answer);
        r.set_release_param_caps(false);
        match self.write_content(r.reborrow().init_results(), &content, caps) {
            Ok(WrittenContent { written, spliced }) => {
                let Written { broken, exports } = written;
                let forget = exports.is_empty() && self.no_finish_needed(answer);
                if forget {
                    r.set_no_finish_needed(true);
                }
                if let Err(e) = self.send_content(&mut m, return_results, RETURN_CONTENT, spliced) {
                    return self.return_error(answer, e);
                }
                self.send_broken_resolves(broken);
                self.answered(answer, exports);
                if forget {
                    self.forget_answer(answer);
                }
            }
            Err(e) => self.return_error(answer, e),
        }
    }

    /// Answers `answer` with an error.
    pub fn return_error(&mut self, answer: u32, error: Error) {
        if self.answer_pending(answer) && !self.kept_for_tail_call(answer) {
            self.send_bare_return(answer, |r| exception::write(&error, r.init_exception()));
        }
    }

    /// Answers `answer` as cancelled (after [`Event::Cancel`](super::Event::Cancel)).
    pub fn return_canceled(&mut self, answer: u32) {
        if self.answer_pending(answer) {
            self.send_bare_return(answer, |mut r| r.set_canceled(()));
        }
    }

    /// Sends a return without results (`fill` sets which kind) and records
    /// the answer as returned.
    pub(super) fn send_bare_return(
        &mut self,
        answer: u32,
        fill: impl FnOnce(return_::Builder<'_>),
    ) {
        let mut m = small_message();
        {
            let mut r = m.init_root::<rpc_message::Builder<'_>>().init_return();
            r.set_answer_id(answer);
            r.set_release_param_caps(false);
            fill(r);
        }
        self.send(&m);
        self.answered(answer, Vec::new());
    }
}
