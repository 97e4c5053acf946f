//! Copying message content between messages while renumbering its
//! capabilities, without any capability runtime.
//!
//! capnp copies a capability pointer by asking the source's cap table for a
//! hook and appending it to the destination's. Filling the source table
//! with placeholders that only remember their index tells us, after the
//! copy, which source capability each destination index stands for.

use capnp::any_pointer;
use capnp::capability::{Promise, Request};
use capnp::private::capability::{ClientHook, ParamsHook, ResultsHook};
use capnp::MessageSize;

/// A placeholder for capability number `0` of some cap table.
struct IndexHook(usize);

impl ClientHook for IndexHook {
    fn add_ref(&self) -> Box<dyn ClientHook> {
        Box::new(IndexHook(self.0))
    }
    fn new_call(
        &self,
        _: u64,
        _: u16,
        _: Option<MessageSize>,
    ) -> Request<any_pointer::Owned, any_pointer::Owned> {
        // Never called: placeholders only live during a copy.
        Request::new(Box::new(NoRequest))
    }
    fn call(
        &self,
        _: u64,
        _: u16,
        _: Box<dyn ParamsHook>,
        _: Box<dyn ResultsHook>,
    ) -> Promise<(), capnp::Error> {
        Promise::err(capnp::Error::failed("placeholder capability".into()))
    }
    fn get_brand(&self) -> usize {
        0
    }
    fn get_ptr(&self) -> usize {
        self.0
    }
    fn get_resolved(&self) -> Option<Box<dyn ClientHook>> {
        None
    }
    fn when_more_resolved(&self) -> Option<Promise<Box<dyn ClientHook>, capnp::Error>> {
        None
    }
    fn when_resolved(&self) -> Promise<(), capnp::Error> {
        Promise::ok(())
    }
}

struct NoRequest;

impl capnp::private::capability::RequestHook for NoRequest {
    fn get(&mut self) -> any_pointer::Builder<'_> {
        unreachable_request()
    }
    fn get_brand(&self) -> usize {
        0
    }
    fn send(self: Box<Self>) -> capnp::capability::RemotePromise<any_pointer::Owned> {
        unreachable_request()
    }
    fn send_streaming(self: Box<Self>) -> Promise<(), capnp::Error> {
        Promise::err(capnp::Error::failed("placeholder capability".into()))
    }
    fn tail_send(
        self: Box<Self>,
    ) -> Option<(
        u32,
        Promise<(), capnp::Error>,
        Box<dyn capnp::private::capability::PipelineHook>,
    )> {
        None
    }
}

fn unreachable_request() -> ! {
    // Placeholders are private to `copy_renumbered`, which makes no calls.
    unreachable!("placeholder capabilities are never called")
}

/// A cap table of `n` placeholders, number `i` standing for index `i`.
pub fn placeholders(n: usize) -> Vec<Option<Box<dyn ClientHook>>> {
    (0..n)
        .map(|i| Some(Box::new(IndexHook(i)) as Box<dyn ClientHook>))
        .collect()
}

/// The source index each entry of a table filled by a copy stands for
/// (`usize::MAX` for an empty entry).
pub fn source_indexes(table: &[Option<Box<dyn ClientHook>>]) -> Vec<usize> {
    table
        .iter()
        .map(|h| h.as_ref().map(|h| h.get_ptr()).unwrap_or(usize::MAX))
        .collect()
}
