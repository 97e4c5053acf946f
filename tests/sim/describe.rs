//! One line per RPC message, naming its kind, ids, target and capability
//! descriptors, for stepped tests that check each message a vat sends,
//! and for `SIM_TRACE`.
//!
//! The forms: `bootstrap q0`; `call q1 -> answer 0.[0] m1 [senderHosted 0]`
//! (target `import N` or `answer Q` with its pointer-field path, method id,
//! the params' cap table, then `to yourself` or `to thirdParty` where the
//! results are not sent to the caller); `return a1 results [senderPromise 1]` (or
//! `exception`, `canceled`, `sentElsewhere`, `takeFrom Q`); `finish q1`;
//! `resolve 1 -> receiverHosted 0` (or `-> exception`); `release 1 x2`;
//! `disembargo senderLoopback 0 -> import 1` (or `receiverLoopback`).

use capnp_actix::schemas::rpc_capnp::{
    call, cap_descriptor, disembargo, message, message_target, payload, promised_answer, resolve,
    return_,
};

fn answer(p: promised_answer::Reader<'_>) -> String {
    let mut s = format!("answer {}", p.get_question_id());
    if let Ok(ops) = p.get_transform() {
        let path: Vec<String> = ops
            .iter()
            .filter_map(|op| match op.which() {
                Ok(promised_answer::op::GetPointerField(i)) => Some(i.to_string()),
                _ => None,
            })
            .collect();
        if !path.is_empty() {
            s.push_str(&format!(".[{}]", path.join(".")));
        }
    }
    s
}

fn target(t: capnp::Result<message_target::Reader<'_>>) -> String {
    match t.map(|t| t.which()) {
        Ok(Ok(message_target::ImportedCap(i))) => format!("import {i}"),
        Ok(Ok(message_target::PromisedAnswer(Ok(p)))) => answer(p),
        _ => "?".into(),
    }
}

fn descriptor(d: cap_descriptor::Reader<'_>) -> String {
    match d.which() {
        Ok(cap_descriptor::None(())) => "none".into(),
        Ok(cap_descriptor::SenderHosted(i)) => format!("senderHosted {i}"),
        Ok(cap_descriptor::SenderPromise(i)) => format!("senderPromise {i}"),
        Ok(cap_descriptor::ReceiverHosted(i)) => format!("receiverHosted {i}"),
        Ok(cap_descriptor::ReceiverAnswer(Ok(a))) => {
            format!("receiverAnswer {}", &answer(a)["answer ".len()..])
        }
        Ok(cap_descriptor::ThirdPartyHosted(_)) => "thirdPartyHosted".into(),
        _ => "?".into(),
    }
}

fn caps(p: capnp::Result<payload::Reader<'_>>) -> String {
    let table = p.and_then(|p| p.get_cap_table());
    let list: Vec<String> = match table {
        Ok(t) => t.iter().map(descriptor).collect(),
        Err(_) => vec!["?".into()],
    };
    format!("[{}]", list.join(", "))
}

/// One frame (a whole message with its segment table), in short.
pub fn frame(bytes: &[u8]) -> String {
    let mut r = bytes;
    let Ok(m) = capnp::serialize::read_message(&mut r, Default::default()) else {
        return "<unreadable>".into();
    };
    let Ok(root) = m.get_root::<message::Reader<'_>>() else {
        return "<unreadable>".into();
    };
    match root.which() {
        Ok(message::Bootstrap(Ok(b))) => format!("bootstrap q{}", b.get_question_id()),
        Ok(message::Call(Ok(c))) => {
            let to = match c.get_send_results_to().which() {
                Ok(call::send_results_to::Caller(())) => "",
                Ok(call::send_results_to::Yourself(())) => " to yourself",
                Ok(call::send_results_to::ThirdParty(_)) => " to thirdParty",
                Err(_) => " to ?",
            };
            format!(
                "call q{} -> {} m{} {}{to}",
                c.get_question_id(),
                target(c.get_target()),
                c.get_method_id(),
                caps(c.get_params())
            )
        }
        Ok(message::Return(Ok(r))) => {
            let what = match r.which() {
                Ok(return_::Results(p)) => format!("results {}", caps(p)),
                Ok(return_::Exception(_)) => "exception".into(),
                Ok(return_::Canceled(())) => "canceled".into(),
                Ok(return_::ResultsSentElsewhere(())) => "sentElsewhere".into(),
                Ok(return_::TakeFromOtherQuestion(q)) => format!("takeFrom {q}"),
                _ => "?".into(),
            };
            format!("return a{} {what}", r.get_answer_id())
        }
        Ok(message::Finish(Ok(f))) => format!("finish q{}", f.get_question_id()),
        Ok(message::Resolve(Ok(r))) => match r.which() {
            Ok(resolve::Cap(Ok(d))) => {
                format!("resolve {} -> {}", r.get_promise_id(), descriptor(d))
            }
            _ => format!("resolve {} -> exception", r.get_promise_id()),
        },
        Ok(message::Release(Ok(r))) => {
            format!("release {} x{}", r.get_id(), r.get_reference_count())
        }
        Ok(message::Disembargo(Ok(d))) => {
            let context = match d.get_context().which() {
                Ok(disembargo::context::SenderLoopback(e)) => format!("senderLoopback {e}"),
                Ok(disembargo::context::ReceiverLoopback(e)) => format!("receiverLoopback {e}"),
                _ => "other".into(),
            };
            format!("disembargo {context} -> {}", target(d.get_target()))
        }
        Ok(message::Abort(_)) => "abort".into(),
        Ok(message::Unimplemented(_)) => "unimplemented".into(),
        _ => "other".into(),
    }
}
