//! Errors on the wire: `capnp::Error` to and from `rpc.capnp`'s `Exception`.

use crate::rpc_capnp::exception;
use capnp::{Error, ErrorKind};

/// The wire type of an error: the protocol knows four kinds; every other
/// kind of local error travels as `failed`.
pub fn wire_type(kind: ErrorKind) -> exception::Type {
    match kind {
        ErrorKind::Overloaded => exception::Type::Overloaded,
        ErrorKind::Disconnected => exception::Type::Disconnected,
        ErrorKind::Unimplemented => exception::Type::Unimplemented,
        _ => exception::Type::Failed,
    }
}

/// Writes `error` into an `Exception`. Errors of kinds the protocol does
/// not know keep their description in the reason.
pub fn write(error: &Error, mut b: exception::Builder<'_>) {
    b.set_type(wire_type(error.kind));
    match error.kind {
        ErrorKind::Failed
        | ErrorKind::Overloaded
        | ErrorKind::Disconnected
        | ErrorKind::Unimplemented => b.set_reason(error.extra.as_str()),
        _ => b.set_reason(error.to_string().as_str()),
    }
}

/// Reads an `Exception` into an error. Unknown types (from a newer peer)
/// read as Failed; a reason that is not valid UTF-8 is replaced, not
/// rejected, since it is only for people to read.
pub fn read(r: exception::Reader<'_>) -> Error {
    let kind = match r.get_type() {
        Ok(exception::Type::Overloaded) => ErrorKind::Overloaded,
        Ok(exception::Type::Disconnected) => ErrorKind::Disconnected,
        Ok(exception::Type::Unimplemented) => ErrorKind::Unimplemented,
        _ => ErrorKind::Failed,
    };
    let reason = match r.get_reason() {
        Ok(t) => String::from_utf8_lossy(t.as_bytes()).into_owned(),
        Err(e) => format!("(unreadable reason: {e})"),
    };
    Error {
        kind,
        extra: reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(e: &Error) -> Error {
        let mut m = capnp::message::Builder::new_default();
        write(e, m.init_root());
        read(m.get_root_as_reader().unwrap())
    }

    #[test]
    fn the_four_protocol_kinds_round_trip_with_their_reason() {
        for e in [
            Error::failed("a".into()),
            Error::overloaded("b".into()),
            Error::disconnected("c".into()),
            Error::unimplemented("d".into()),
        ] {
            let back = round_trip(&e);
            assert_eq!(back.kind, e.kind);
            assert_eq!(back.extra, e.extra);
        }
    }

    #[test]
    fn other_local_kinds_travel_as_failed_with_their_description() {
        let e = Error::from_kind(ErrorKind::MessageTooLarge(10));
        let back = round_trip(&e);
        assert_eq!(back.kind, ErrorKind::Failed);
        assert!(back.extra.contains("10"), "{}", back.extra);
    }
}
