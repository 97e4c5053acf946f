//! The errors the runtime itself raises.
//!
//! Errors are [`capnp::Error`]s: one type carrying the protocol's kinds
//! (Failed, Overloaded, Disconnected, Unimplemented) and a reason, which is
//! what the code capnpc generates returns and what goes on the wire.

use capnp::Error;

/// A promise resolved, directly or not, to itself.
pub fn cycle() -> Error {
    Error::failed("capability promise resolves to itself (cycle)".into())
}

/// A call was lost because the capability's actor stopped.
pub fn lost_call() -> Error {
    Error::disconnected("the capability's actor stopped before answering the call".into())
}

/// A promise's resolver was dropped without resolving it.
pub fn unresolved_promise() -> Error {
    Error::failed("promise dropped without being resolved".into())
}

/// The caller no longer wants the answer.
pub fn cancelled() -> Error {
    Error::failed("call cancelled by the caller".into())
}

/// A method body panicked.
pub fn panicked(payload: &(dyn std::any::Any + Send)) -> Error {
    Error::failed(format!("method panicked: {}", panic_message(payload)))
}

/// Method `method` of interface `interface`, served by an actor, panicked:
/// the call fails, and the actor is stopped (restarted if supervised).
pub fn actor_method_panicked(
    interface: &str,
    method: &str,
    payload: &(dyn std::any::Any + Send),
) -> Error {
    Error::failed(format!(
        "{interface}.{method} panicked: {}; the actor serving it was stopped \
         (an actix Supervisor restarts it)",
        panic_message(payload)
    ))
}

/// The message a panic was raised with, if it has one we can show.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// A bug in the runtime: reported as an error rather than a panic.
pub fn internal(what: &str) -> Error {
    Error::failed(format!("internal error in capnp-actix: {what}"))
}

/// What capnpc's generated dispatch answers for an interface or a method
/// number it does not know.
const GENERATED_UNIMPLEMENTED: &str = "Method not implemented.";

/// `e`, or, if it is the generated dispatch's nameless Unimplemented, the
/// same kind with a reason naming the interface and the method asked for.
pub(crate) fn name_unimplemented(e: Error, interface_id: u64, method_id: u16) -> Error {
    if e.kind == capnp::ErrorKind::Unimplemented && e.extra == GENERATED_UNIMPLEMENTED {
        Error::unimplemented(format!(
            "method @{method_id} of interface {interface_id:#018x} is not implemented by \
             this capability"
        ))
    } else {
        e
    }
}
