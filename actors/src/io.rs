//! The byte side of a connection: a reader that decodes frames straight
//! from the stream, and the writer's vectored writes.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BufMut;
use capnp::message;
use capnp_actix_proto::frame::Output;
use capnp_actix_proto::{FrameDecoder, FrameError, Limits, WordSegments};
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

/// What the reader yields.
pub(crate) enum Input {
    /// Messages decoded from everything the stream had ready (never
    /// empty).
    Messages(Vec<message::Reader<WordSegments>>),
    /// The stream of frames is invalid (after the messages before the
    /// invalid frame); nothing follows.
    Invalid(FrameError),
    /// Reading failed; nothing follows.
    Failed(std::io::Error),
}

/// Bytes read at a time into the read buffer.
const READ_BYTES: usize = 64 * 1024;
/// Bytes read at a time into the read buffer right after a large frame:
/// enough for the tables of small frames, while the body of a large one
/// that follows is mostly read straight into its place.
const READ_BYTES_AFTER_LARGE: usize = 1024;
/// A body still missing this many bytes is read straight into its own
/// buffer (no copy from the read buffer); a smaller rest is read with
/// whatever follows it.
const DIRECT_MIN_BYTES: usize = 4096;
/// Bytes read in one poll before the messages decoded so far are handed
/// over, when the stream keeps having more (a peer flooding us).
const MAX_BATCH_BYTES: usize = 1 << 20;

enum State {
    Open,
    /// The stream ended; the decoder's verdict comes next.
    Ended,
    /// Reading failed; reported next.
    Failed(std::io::Error),
    Done,
}

/// Decodes frames from a byte stream: a stream of [`Input`]s.
///
/// Each poll reads everything the stream has ready (up to
/// [`MAX_BATCH_BYTES`]) and yields every message it completed, so that one
/// batch of input is handled (and answered) in one go. Small frames go
/// through a read buffer and are copied once into their messages; the
/// body of a large frame is read straight into the buffer of the message
/// it becomes ([`FrameDecoder::body_buffer`]). The decoder checks every
/// segment table against the limits, and allocates for a body as its
/// bytes arrive, not for the size the table announces.
pub(crate) struct FrameReader<R: AsyncRead + Unpin + 'static> {
    /// Taken only when the reader is dropped (see `hand_back`).
    read: Option<R>,
    /// Where the stream goes when the reader is dropped: the writer's last
    /// task reads and drops what the peer still sends, so that closing
    /// with input unread does not reset the connection (the peer would
    /// then lose what it had not read yet, such as an abort).
    hand_back: Option<futures::channel::oneshot::Sender<Leftover>>,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    /// The last frame read was large (see [`READ_BYTES_AFTER_LARGE`]).
    large: bool,
    state: State,
}

/// The reading half of a finished connection (see `FrameReader`).
pub(crate) type Leftover = Box<dyn AsyncRead + Unpin>;

impl<R: AsyncRead + Unpin + 'static> FrameReader<R> {
    /// The reader of `read`; `read` is sent to `hand_back` when the
    /// reader is dropped.
    pub(crate) fn new(
        read: R,
        limits: Limits,
        hand_back: futures::channel::oneshot::Sender<Leftover>,
    ) -> Self {
        FrameReader {
            read: Some(read),
            hand_back: Some(hand_back),
            decoder: FrameDecoder::new(limits),
            // Reads fill the capacity (an empty buffer would read 64 bytes).
            buf: Vec::with_capacity(READ_BYTES),
            large: false,
            state: State::Open,
        }
    }
}

impl<R: AsyncRead + Unpin + 'static> Drop for FrameReader<R> {
    fn drop(&mut self) {
        if let (Some(read), Some(tx)) = (self.read.take(), self.hand_back.take()) {
            let _ = tx.send(Box::new(read));
        }
    }
}

impl<R: AsyncRead + Unpin + 'static> Stream for FrameReader<R> {
    type Item = Input;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Input>> {
        let this = self.get_mut();
        if matches!(this.state, State::Done) {
            return Poll::Ready(None);
        }
        let mut batch = Vec::new();
        let mut read = 0;
        loop {
            loop {
                match this.decoder.next_message() {
                    Ok(Some(m)) => batch.push(m),
                    Ok(None) => break,
                    Err(e) if batch.is_empty() => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Input::Invalid(e)));
                    }
                    // The error comes after these.
                    Err(_) => return Poll::Ready(Some(Input::Messages(batch))),
                }
            }
            if !matches!(this.state, State::Open) {
                if !batch.is_empty() {
                    return Poll::Ready(Some(Input::Messages(batch)));
                }
                return Poll::Ready(match std::mem::replace(&mut this.state, State::Done) {
                    State::Ended => this.decoder.finish().err().map(Input::Invalid),
                    State::Failed(e) => Some(Input::Failed(e)),
                    State::Open | State::Done => None,
                });
            }
            if read >= MAX_BATCH_BYTES && !batch.is_empty() {
                return Poll::Ready(Some(Input::Messages(batch)));
            }
            let Some(stream) = this.read.as_mut() else {
                return Poll::Ready(None);
            };
            let read_in = Pin::new(stream);
            let (polled, direct) = match this.decoder.body_buffer(DIRECT_MIN_BYTES) {
                Some((body, missing)) => {
                    let mut room = body.limit(missing);
                    (poll_read_buf(read_in, cx, &mut room), true)
                }
                None => {
                    this.buf.clear();
                    let want = if this.large {
                        READ_BYTES_AFTER_LARGE
                    } else {
                        READ_BYTES
                    };
                    let mut room = (&mut this.buf).limit(want);
                    (poll_read_buf(read_in, cx, &mut room), false)
                }
            };
            match polled {
                Poll::Pending if batch.is_empty() => return Poll::Pending,
                Poll::Pending => return Poll::Ready(Some(Input::Messages(batch))),
                Poll::Ready(Ok(0)) => this.state = State::Ended,
                Poll::Ready(Ok(n)) => {
                    read += n;
                    crate::metrics::bytes_received(n);
                    if direct {
                        this.decoder.body_appended();
                        this.large = true;
                    } else {
                        this.decoder.push(&this.buf[..n]);
                        this.large = this.decoder.body_buffer(DIRECT_MIN_BYTES).is_some();
                    }
                }
                Poll::Ready(Err(e)) => this.state = State::Failed(e),
            }
        }
    }
}

/// Slices given to one vectored write at most.
const MAX_SLICES: usize = 64;

/// The writing half of a connection, driven by the connection actor
/// itself (no task of its own): what the actor produced while handling
/// its input is queued and written at the end of the actor's turn, from
/// where it is (large kept segments with vectored writes).
pub(crate) struct Writer {
    write: Box<dyn AsyncWrite + Unpin>,
    /// Outputs not yet written in full, in order; when the stream is
    /// busy, later outputs are appended to the last one.
    queue: VecDeque<Output>,
    /// Bytes of the first output already written.
    written: usize,
    /// Bytes queued and not yet written.
    queued: usize,
    /// True when bytes were written since the stream was last flushed: a
    /// stream may buffer what it took (TLS keeps records it could not
    /// send yet) until it is flushed.
    unflushed: bool,
}

impl Writer {
    pub(crate) fn new(write: Box<dyn AsyncWrite + Unpin>) -> Self {
        Writer {
            write,
            queue: VecDeque::new(),
            written: 0,
            queued: 0,
            unflushed: false,
        }
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Queues `out` behind what is queued.
    pub(crate) fn push(&mut self, out: Output) {
        if out.is_empty() {
            return;
        }
        self.queued += out.len();
        match self.queue.back_mut() {
            // (A stream without vectored writes would otherwise get one
            // write per output.)
            Some(last) => last.append(out),
            None => self.queue.push_back(out),
        }
    }

    /// Writes what is queued as far as the stream takes it, and flushes
    /// the stream; `Ready(Ok)` once everything is written and flushed.
    /// The buffer of each output written in
    /// full goes to `done` (for reuse).
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        mut done: impl FnMut(Vec<u8>),
    ) -> Poll<std::io::Result<()>> {
        while !self.queue.is_empty() {
            let mut slices: Vec<IoSlice<'_>> = Vec::new();
            let mut skip = self.written;
            'outputs: for out in &self.queue {
                for piece in out.pieces() {
                    if skip >= piece.len() {
                        skip -= piece.len();
                        continue;
                    }
                    slices.push(IoSlice::new(&piece[skip..]));
                    skip = 0;
                    if slices.len() == MAX_SLICES {
                        break 'outputs;
                    }
                }
            }
            let write = Pin::new(&mut self.write);
            let polled = match slices.as_slice() {
                [one] => write.poll_write(cx, one),
                _ => write.poll_write_vectored(cx, &slices),
            };
            drop(slices);
            let mut n = match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => n,
            };
            self.unflushed = true;
            self.queued = self.queued.saturating_sub(n);
            while n > 0 {
                let Some(first) = self.queue.front() else {
                    break;
                };
                let left = first.len() - self.written;
                if n < left {
                    self.written += n;
                    break;
                }
                n -= left;
                self.written = 0;
                if let Some(out) = self.queue.pop_front() {
                    done(out.into_buffer());
                }
            }
        }
        if self.unflushed {
            std::task::ready!(Pin::new(&mut self.write).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes everything queued, then shuts the stream down; then reads
    /// and drops what the peer still sends (from the reading half, once
    /// `leftover` gives it) until it ends, so that the connection closes
    /// without a reset: the peer reads everything we wrote, the abort
    /// last. The caller bounds the time this takes.
    pub(crate) async fn finish(
        mut self,
        leftover: Option<futures::channel::oneshot::Receiver<Leftover>>,
    ) {
        use tokio::io::AsyncReadExt;
        let written = futures::future::poll_fn(|cx| self.poll_write(cx, drop)).await;
        if written.is_err() || self.write.shutdown().await.is_err() {
            return;
        }
        if let Some(Ok(mut read)) = match leftover {
            Some(rx) => Some(rx.await),
            None => None,
        } {
            let mut sink = vec![0u8; 16 << 10];
            while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
        }
    }

    /// Drops what is queued beyond the end of the frame being written, so
    /// that what is pushed next (an abort) follows it at once: for a peer
    /// that does not read, which would otherwise have to take everything
    /// queued first. The rest of the current frame is kept (copied out),
    /// as the peer has its beginning.
    pub(crate) fn cut_after_current_frame(&mut self) {
        let rest = match self.queue.front() {
            Some(first) if self.written > 0 => {
                let bytes = first.pieces().concat();
                let end = frame_end_after(&bytes, self.written).min(bytes.len());
                bytes[self.written..end].to_vec()
            }
            _ => Vec::new(),
        };
        self.queue.clear();
        self.written = 0;
        self.queued = rest.len();
        if !rest.is_empty() {
            let mut out = Output::with_buffer(Vec::new());
            out.bytes_mut().extend_from_slice(&rest);
            self.queue.push_back(out);
        }
    }
}

/// The end of the frame, in `bytes` (frames one after another), that
/// covers offset `pos`.
fn frame_end_after(bytes: &[u8], pos: usize) -> usize {
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let mut start = 0;
    while start < bytes.len() {
        let segments = word(start) + 1;
        let header = (4 + 4 * segments).div_ceil(8) * 8;
        let body: usize = (0..segments).map(|i| word(start + 4 + 4 * i) * 8).sum();
        let end = start + header + body;
        if end > pos {
            return end;
        }
        start = end;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A stream that, like TLS, takes every write into a buffer of its own
    /// and passes it on only when flushed.
    #[derive(Clone, Default)]
    struct Buffering {
        pending: Arc<Mutex<Vec<u8>>>,
        delivered: Arc<Mutex<Vec<u8>>>,
    }

    impl AsyncWrite for Buffering {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.pending.lock().unwrap().extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            let mut pending = self.pending.lock().unwrap();
            self.delivered.lock().unwrap().append(&mut pending);
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            self.poll_flush(cx)
        }
    }

    #[test]
    fn what_a_buffering_stream_took_is_flushed_before_the_write_counts_as_done() {
        let stream = Buffering::default();
        let mut writer = Writer::new(Box::new(stream.clone()));
        let mut out = Output::with_buffer(Vec::new());
        out.bytes_mut().extend_from_slice(b"hello");
        writer.push(out);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            writer.poll_write(&mut cx, drop),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(stream.delivered.lock().unwrap().as_slice(), b"hello");
        assert!(stream.pending.lock().unwrap().is_empty());
    }

    /// Two framed one-word messages, the first with the word `a`.
    fn two_frames(a: u8) -> Vec<u8> {
        let mut bytes = Vec::new();
        for w in [a, 0xbb] {
            bytes.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
            bytes.extend_from_slice(&[w; 8]);
        }
        bytes
    }

    #[test]
    fn frame_ends_are_found_from_the_segment_tables() {
        let bytes = two_frames(0xaa);
        assert_eq!(frame_end_after(&bytes, 0), 16);
        assert_eq!(frame_end_after(&bytes, 15), 16);
        assert_eq!(frame_end_after(&bytes, 16), 32);
    }

    /// A stream that takes at most `room` bytes, then is full.
    struct Narrow {
        taken: Vec<u8>,
        room: usize,
    }

    impl AsyncWrite for Narrow {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.room - self.taken.len());
            if n == 0 {
                return Poll::Pending;
            }
            self.taken.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_cut_keeps_the_rest_of_the_frame_being_written_and_nothing_after() {
        let mut writer = Writer::new(Box::new(Narrow {
            taken: Vec::new(),
            room: 10,
        }));
        let mut out = Output::with_buffer(Vec::new());
        out.bytes_mut().extend_from_slice(&two_frames(0xaa));
        writer.push(out);
        let mut more = Output::with_buffer(Vec::new());
        more.bytes_mut().extend_from_slice(&two_frames(0xcc));
        writer.push(more);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(writer.poll_write(&mut cx, drop).is_pending());
        writer.cut_after_current_frame();
        // Six bytes of the first frame were not written yet; nothing else
        // is left.
        assert_eq!(writer.queued(), 6);
        let rest: Vec<u8> = writer
            .queue
            .iter()
            .flat_map(|o| o.pieces().concat())
            .collect();
        assert_eq!(rest, vec![0xaa; 6]);
    }
}
