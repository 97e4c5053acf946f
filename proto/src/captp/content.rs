//! Payload content in both directions: what a received call or return
//! carries ([`InPayload`], read in place as [`InContent`]), and how the
//! runtime hands content to send.

use capnp::message::{self, ReaderOptions};
use capnp::{any_pointer, Error, MessageSize};

use super::InCap;
use crate::frame::{Kept, WordSegments};
use crate::rpc_capnp::{message as rpc_message, return_};

/// A received payload: the whole received message (owned) plus what each
/// capability index of its content stands for.
pub struct InPayload<L> {
    pub(super) message: message::Reader<WordSegments>,
    /// The nesting limit the message was received with.
    pub(super) nesting_limit: i32,
    /// The content's size, measured when the message was parsed (or why
    /// it could not be).
    pub(super) size: capnp::Result<MessageSize>,
    /// What each capability index of the content stands for.
    pub caps: Vec<InCap<L>>,
}

impl<L> InPayload<L> {
    /// The size of the whole message that carried it, in words.
    pub fn message_words(&self) -> usize {
        self.message.size_in_words()
    }

    /// The content: the params of a call or the results of a return.
    pub fn content(&self) -> capnp::Result<any_pointer::Reader<'_>> {
        content_of(&self.message)
    }

    /// Keeps the received message so that its content can be read where
    /// it lies, instead of being copied out.
    ///
    /// The whole content was traversed once when the message was parsed
    /// (its size, as `target_size` counts it, after everything else the
    /// parse read), against the traversal budget the message was received
    /// with, so a message whose pointers share subtrees cannot amplify
    /// beyond that budget; the size is returned (or the error that
    /// traversal met). After that check the content reader has no
    /// traversal limit: a full read of it costs at most that size, as a
    /// full read of a copy would. The nesting limit stays.
    pub fn into_in_place(self) -> capnp::Result<(InContent, Vec<InCap<L>>, MessageSize)> {
        let InPayload {
            message,
            caps,
            nesting_limit,
            size,
        } = self;
        let size = size?;
        let mut options = ReaderOptions::new();
        options
            .traversal_limit_in_words(None)
            .nesting_limit(nesting_limit);
        let message = message::Reader::new(message.into_segments(), options);
        Ok((InContent { message }, caps, size))
    }
}

/// The content of an outgoing call or return (its params or results),
/// whose capability pointers index the `caps` passed beside it, in the
/// form the runtime holds it in. [`Conn::call`](super::Conn::call),
/// [`Conn::tail_call`](super::Conn::tail_call) and
/// [`Conn::return_results`](super::Conn::return_results) take any of the
/// three (or what converts into one); the peer receives the same message
/// whichever is used, but the core copies less of the last two.
pub enum OutContent<'a> {
    /// A reader of the content, wherever it lies: the content is copied
    /// into the call or return.
    Reader(any_pointer::Reader<'a>),
    /// The segments of a message built by this process, whose root is the
    /// content. When it carries no capability, its segments go out as
    /// they are instead of being copied through capnp: a small one-segment
    /// content inlined in the call's or return's own segment (see
    /// [`encode_inlined`](crate::frame::encode_inlined)), a large one
    /// spliced behind it (see [`encode_spliced`](crate::frame::encode_spliced)).
    Segments(&'a [&'a [u8]]),
    /// As [`OutContent::Segments`], for a message kept whole: spliced
    /// content is not even copied into the output, which keeps the
    /// message until it is written (see
    /// [`Conn::take_output_pieces`](super::Conn::take_output_pieces)).
    Kept(Kept),
}

impl<'a> From<any_pointer::Reader<'a>> for OutContent<'a> {
    fn from(root: any_pointer::Reader<'a>) -> Self {
        OutContent::Reader(root)
    }
}

impl<'a> From<&'a [&'a [u8]]> for OutContent<'a> {
    fn from(segments: &'a [&'a [u8]]) -> Self {
        OutContent::Segments(segments)
    }
}

impl From<Kept> for OutContent<'_> {
    fn from(kept: Kept) -> Self {
        OutContent::Kept(kept)
    }
}

/// A received call or return kept whole, its payload content read in
/// place (see [`InPayload::into_in_place`]). It may be shared between
/// threads.
pub struct InContent {
    message: message::Reader<WordSegments>,
}

impl InContent {
    /// The content: the params of a call or the results of a return. Its
    /// capability pointers index the payload's cap table.
    pub fn content(&self) -> capnp::Result<any_pointer::Reader<'_>> {
        content_of(&self.message)
    }

    /// The size of the whole message, in words.
    pub fn message_words(&self) -> usize {
        self.message.size_in_words()
    }
}

fn content_of(message: &message::Reader<WordSegments>) -> capnp::Result<any_pointer::Reader<'_>> {
    let m: rpc_message::Reader<'_> = message.get_root()?;
    match m.which() {
        Ok(rpc_message::Call(c)) => Ok(c?.get_params()?.get_content()),
        Ok(rpc_message::Return(r)) => match r?.which() {
            Ok(return_::Results(p)) => Ok(p?.get_content()),
            _ => Err(Error::failed("return carries no results".into())),
        },
        _ => Err(Error::failed("message carries no payload".into())),
    }
}
