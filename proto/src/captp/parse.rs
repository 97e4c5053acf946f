//! Reading an incoming message into plain values ([`Parsed`]) before the
//! core acts on it, so that a malformed message is rejected whole before
//! any table changes. Bounds the lengths a peer chooses (cap tables,
//! promised-answer paths).

use capnp::message;
use capnp::{Error, MessageSize};

use crate::exception;
use crate::frame::WordSegments;
use crate::rpc_capnp::{
    cap_descriptor, message as rpc_message, message_target, payload, promised_answer, return_,
};

/// What a call or descriptor targets on our side: an export of ours
/// (`importedCap` from the peer's view) or a field of an answer.
pub(super) enum RawTarget {
    Import(u32),
    Answer(u32, Vec<u16>),
}

/// A capability descriptor as read (`CapDescriptor`).
pub(super) enum RawCap {
    None,
    /// `senderHosted` (false) or `senderPromise` (true).
    Sender(u32, bool),
    /// `receiverHosted`.
    Receiver(u32),
    /// `receiverAnswer`.
    Answer(u32, Vec<u16>),
}

/// What a return carries.
pub(super) enum RawResult {
    /// The cap table, and the content's size (see [`InPayload::size`](super::InPayload)).
    Results(Vec<RawCap>, capnp::Result<MessageSize>),
    Error(Error),
    TakeFrom(u32),
}

/// Where the results of a call the peer makes should go.
#[derive(PartialEq, Eq)]
pub(super) enum ResultsTo {
    Caller,
    /// Keep them: the peer will name this call in a `takeFromOtherQuestion`
    /// (a tail call it made on our behalf).
    Yourself,
    ThirdParty,
}

/// The context of a disembargo.
pub(super) enum RawEmbargo {
    SenderLoopback(u32),
    ReceiverLoopback(u32),
    Other,
}

/// What an `unimplemented` message sends back to us.
pub(super) enum RawUnimplemented {
    /// A `resolve` of ours.
    Resolve(u32),
    /// A call or bootstrap of ours, by question id.
    Question(u32),
    Other,
}

/// A `call`.
pub(super) struct RawCall {
    pub(super) question: u32,
    pub(super) target: RawTarget,
    pub(super) interface_id: u64,
    pub(super) method_id: u16,
    pub(super) caps: Vec<RawCap>,
    pub(super) to: ResultsTo,
    pub(super) no_pipelining: bool,
    /// The params content's size (see [`InPayload::size`](super::InPayload)).
    pub(super) size: capnp::Result<MessageSize>,
}

/// A `return`.
pub(super) struct RawReturn {
    /// Our question it answers.
    pub(super) answer: u32,
    pub(super) release_params: bool,
    pub(super) no_finish_needed: bool,
    pub(super) result: RawResult,
}

/// A `finish`.
pub(super) struct RawFinish {
    pub(super) question: u32,
    pub(super) release_results: bool,
    pub(super) not_before_start: bool,
}

/// A `disembargo`.
pub(super) struct RawDisembargo {
    pub(super) target: RawTarget,
    pub(super) context: RawEmbargo,
}

/// One incoming message, read.
pub(super) enum Parsed {
    /// A message kind we do not implement: answered with `unimplemented`.
    Unknown,
    Abort(Error),
    Unimplemented(RawUnimplemented),
    Bootstrap {
        question: u32,
        object_id: Vec<u8>,
    },
    Call(RawCall),
    Return(RawReturn),
    Finish(RawFinish),
    Resolve {
        promise: u32,
        to: Result<RawCap, Error>,
    },
    Release {
        id: u32,
        count: u32,
    },
    Disembargo(RawDisembargo),
}

/// Longest promised-answer transform accepted.
const MAX_PATH: u32 = 64;

fn parse_path(pa: promised_answer::Reader<'_>) -> capnp::Result<(u32, Vec<u16>)> {
    let ops = pa.get_transform()?;
    if ops.len() > MAX_PATH {
        return Err(Error::failed(format!("transform of {} ops", ops.len())));
    }
    let mut path = Vec::with_capacity(ops.len() as usize);
    for op in ops.iter() {
        match op.which()? {
            promised_answer::op::Noop(()) => {}
            promised_answer::op::GetPointerField(f) => path.push(f),
        }
    }
    Ok((pa.get_question_id(), path))
}

fn parse_target(t: message_target::Reader<'_>) -> capnp::Result<RawTarget> {
    Ok(match t.which()? {
        message_target::ImportedCap(id) => RawTarget::Import(id),
        message_target::PromisedAnswer(pa) => {
            let (q, path) = parse_path(pa?)?;
            RawTarget::Answer(q, path)
        }
    })
}

fn parse_cap(d: cap_descriptor::Reader<'_>) -> capnp::Result<RawCap> {
    Ok(match d.which()? {
        cap_descriptor::None(()) => RawCap::None,
        cap_descriptor::SenderHosted(id) => RawCap::Sender(id, false),
        cap_descriptor::SenderPromise(id) => RawCap::Sender(id, true),
        cap_descriptor::ReceiverHosted(id) => RawCap::Receiver(id),
        cap_descriptor::ReceiverAnswer(pa) => {
            let (q, path) = parse_path(pa?)?;
            RawCap::Answer(q, path)
        }
        // Without three-party handoff, the vine is the capability.
        cap_descriptor::ThirdPartyHosted(t) => RawCap::Sender(t?.get_vine_id(), false),
    })
}

/// Longest cap table accepted in one payload.
const MAX_CAP_TABLE: u32 = 16_384;

fn parse_caps(p: payload::Reader<'_>) -> capnp::Result<Vec<RawCap>> {
    let table = p.get_cap_table()?;
    if table.len() > MAX_CAP_TABLE {
        return Err(Error::failed(format!(
            "cap table of {} entries (at most {MAX_CAP_TABLE})",
            table.len()
        )));
    }
    table.iter().map(parse_cap).collect()
}

/// Reads a message; an error means it is malformed.
pub(super) fn parse(msg: &message::Reader<WordSegments>) -> capnp::Result<Parsed> {
    let root: rpc_message::Reader<'_> = msg.get_root()?;
    let which = match root.which() {
        Ok(w) => w,
        Err(_) => return Ok(Parsed::Unknown),
    };
    Ok(match which {
        rpc_message::Unimplemented(m) => Parsed::Unimplemented(parse_unimplemented(m?)?),
        rpc_message::Abort(e) => Parsed::Abort(exception::read(e?)),
        rpc_message::Bootstrap(b) => parse_bootstrap(b?)?,
        rpc_message::Call(c) => Parsed::Call(parse_call(c?)?),
        rpc_message::Return(r) => Parsed::Return(parse_return(r?)?),
        rpc_message::Finish(f) => {
            let f = f?;
            Parsed::Finish(RawFinish {
                question: f.get_question_id(),
                release_results: f.get_release_result_caps(),
                not_before_start: f.get_require_early_cancellation_workaround(),
            })
        }
        rpc_message::Resolve(r) => {
            let r = r?;
            Parsed::Resolve {
                promise: r.get_promise_id(),
                to: match r.which()? {
                    crate::rpc_capnp::resolve::Cap(d) => Ok(parse_cap(d?)?),
                    crate::rpc_capnp::resolve::Exception(e) => Err(exception::read(e?)),
                },
            }
        }
        rpc_message::Release(r) => {
            let r = r?;
            Parsed::Release {
                id: r.get_id(),
                count: r.get_reference_count(),
            }
        }
        rpc_message::Disembargo(d) => Parsed::Disembargo(parse_disembargo(d?)?),
        rpc_message::ObsoleteSave(_)
        | rpc_message::ObsoleteDelete(_)
        | rpc_message::Provide(_)
        | rpc_message::Accept(_)
        | rpc_message::Join(_) => Parsed::Unknown,
    })
}

fn parse_unimplemented(m: rpc_message::Reader<'_>) -> capnp::Result<RawUnimplemented> {
    Ok(match m.which() {
        Ok(rpc_message::Resolve(r)) => RawUnimplemented::Resolve(r?.get_promise_id()),
        Ok(rpc_message::Bootstrap(b)) => RawUnimplemented::Question(b?.get_question_id()),
        Ok(rpc_message::Call(c)) => RawUnimplemented::Question(c?.get_question_id()),
        _ => RawUnimplemented::Other,
    })
}

fn parse_bootstrap(b: crate::rpc_capnp::bootstrap::Reader<'_>) -> capnp::Result<Parsed> {
    let id = b.get_deprecated_object_id();
    let object_id = if id.is_null() {
        Vec::new()
    } else {
        id.get_as::<capnp::text::Reader<'_>>()?.as_bytes().to_vec()
    };
    Ok(Parsed::Bootstrap {
        question: b.get_question_id(),
        object_id,
    })
}

fn parse_call(c: crate::rpc_capnp::call::Reader<'_>) -> capnp::Result<RawCall> {
    use crate::rpc_capnp::call::send_results_to;
    let to = match c.get_send_results_to().which()? {
        send_results_to::Caller(()) => ResultsTo::Caller,
        send_results_to::Yourself(()) => ResultsTo::Yourself,
        send_results_to::ThirdParty(_) => ResultsTo::ThirdParty,
    };
    let params = c.get_params()?;
    Ok(RawCall {
        question: c.get_question_id(),
        target: parse_target(c.get_target()?)?,
        interface_id: c.get_interface_id(),
        method_id: c.get_method_id(),
        caps: parse_caps(params)?,
        to,
        no_pipelining: c.get_no_promise_pipelining(),
        // Last, after everything else read.
        size: params.get_content().target_size(),
    })
}

fn parse_return(r: return_::Reader<'_>) -> capnp::Result<RawReturn> {
    let result = match r.which()? {
        return_::Results(p) => {
            let p = p?;
            // The content's size last, after everything else read.
            RawResult::Results(parse_caps(p)?, p.get_content().target_size())
        }
        return_::Exception(e) => RawResult::Error(exception::read(e?)),
        return_::Canceled(()) => RawResult::Error(Error::failed("call canceled".into())),
        return_::ResultsSentElsewhere(()) => {
            RawResult::Error(Error::failed("results were sent elsewhere".into()))
        }
        return_::TakeFromOtherQuestion(a) => RawResult::TakeFrom(a),
        return_::AcceptFromThirdParty(_) => RawResult::Error(Error::unimplemented(
            "three-party handoff is not supported yet".into(),
        )),
    };
    Ok(RawReturn {
        answer: r.get_answer_id(),
        release_params: r.get_release_param_caps(),
        no_finish_needed: r.get_no_finish_needed(),
        result,
    })
}

fn parse_disembargo(d: crate::rpc_capnp::disembargo::Reader<'_>) -> capnp::Result<RawDisembargo> {
    use crate::rpc_capnp::disembargo::context;
    Ok(RawDisembargo {
        target: parse_target(d.get_target()?)?,
        context: match d.get_context().which()? {
            context::SenderLoopback(e) => RawEmbargo::SenderLoopback(e),
            context::ReceiverLoopback(e) => RawEmbargo::ReceiverLoopback(e),
            _ => RawEmbargo::Other,
        },
    })
}
