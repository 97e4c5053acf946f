//! The byte side of a connection: a reader that decodes frames straight
//! from the stream, and the writer's vectored writes.

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
/// segment table against the limits before allocating for its body.
pub(crate) struct FrameReader<R> {
    read: R,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    /// The last frame read was large (see [`READ_BYTES_AFTER_LARGE`]).
    large: bool,
    state: State,
}

impl<R> FrameReader<R> {
    pub(crate) fn new(read: R, limits: Limits) -> Self {
        FrameReader {
            read,
            decoder: FrameDecoder::new(limits),
            // Reads fill the capacity (an empty buffer would read 64 bytes).
            buf: Vec::with_capacity(READ_BYTES),
            large: false,
            state: State::Open,
        }
    }
}

impl<R: AsyncRead + Unpin> Stream for FrameReader<R> {
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
            let read_in = Pin::new(&mut this.read);
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

/// Writes every output of `batch`, in order: small pieces gathered into
/// one buffer (as many small writes cost more than the copy), large ones
/// (the segments of kept messages) written from where they are with
/// vectored writes when the stream takes them.
pub(crate) async fn write_outputs<W: AsyncWrite + Unpin>(
    write: &mut W,
    batch: &[Output],
) -> std::io::Result<()> {
    let pieces: Vec<&[u8]> = batch.iter().flat_map(Output::pieces).collect();
    if let [one] = pieces.as_slice() {
        return write.write_all(one).await;
    }
    if !write.is_write_vectored() {
        return write.write_all(&pieces.concat()).await;
    }
    // Runs of small pieces, gathered: (end in `gathered`, or a large piece).
    let mut gathered = Vec::new();
    let mut parts: Vec<Result<usize, &[u8]>> = Vec::new();
    for p in pieces {
        if p.len() >= MIN_SEPARATE_BYTES {
            parts.push(Err(p));
        } else {
            gathered.extend_from_slice(p);
            match parts.last_mut() {
                Some(Ok(end)) => *end = gathered.len(),
                _ => parts.push(Ok(gathered.len())),
            }
        }
    }
    let mut start = 0;
    let pieces: Vec<&[u8]> = parts
        .into_iter()
        .map(|part| match part {
            Ok(end) => {
                let run = &gathered[start..end];
                start = end;
                run
            }
            Err(p) => p,
        })
        .collect();
    match pieces.as_slice() {
        [one] => write.write_all(one).await,
        _ => write_pieces(write, &pieces).await,
    }
}

/// Pieces at least this long are written from where they are.
const MIN_SEPARATE_BYTES: usize = 4096;

/// Writes `pieces` in order with vectored writes.
async fn write_pieces<W: AsyncWrite + Unpin>(
    write: &mut W,
    pieces: &[&[u8]],
) -> std::io::Result<()> {
    // The first piece not written in full, and how much of it is.
    let mut first = 0;
    let mut done = 0;
    while first < pieces.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(&pieces[first][done..])
            .chain(pieces[first + 1..].iter().copied())
            .take(MAX_SLICES)
            .map(IoSlice::new)
            .collect();
        let mut n = write.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && first < pieces.len() {
            let left = pieces[first].len() - done;
            if n >= left {
                n -= left;
                first += 1;
                done = 0;
            } else {
                done += n;
                n = 0;
            }
        }
    }
    Ok(())
}
