//! The in-memory transport between two simulated vats.
//!
//! A [`Wire`] carries bytes one way. Writes never block: each write is cut
//! into whole Cap'n Proto frames (messages) that wait in the wire's queue
//! until the driver delivers them, one at a time, to the reading side.
//! Nothing moves on its own, so which message arrives when is the driver's
//! choice, and a run is reproducible from its list of steps.
//!
//! Wires, their ends, the activity counter and the log are `Send + Sync`
//! (shared state behind a `Mutex`, the counter atomic), so that an end can
//! be read and written by a connection on another arbiter while the driver
//! delivers from its own thread (`SIM_ARBITERS`, see the driver). On one
//! thread the locks are never contended and nothing else changes.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bumped whenever something observable happens (bytes written or read,
/// a call reaching an object, an answer coming back...): the driver waits
/// until it stops moving. Bumped from any thread.
pub type Activity = Arc<AtomicU64>;

pub fn bump(activity: &Activity) {
    activity.fetch_add(1, Ordering::SeqCst);
}

/// The activity count now.
pub fn activity_now(activity: &Activity) -> u64 {
    activity.load(Ordering::SeqCst)
}

/// Every frame written to or delivered by the wires that share it, in
/// order, described (see [`super::describe::frame`]): what the replay of a
/// recorded regression counts its triggers in.
pub type Log = Arc<Mutex<Vec<Logged>>>;

/// Locks `m`; a panic elsewhere (which the driver reports) does not poison
/// what the wires hold for the rest of the run.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One entry of a [`Log`].
#[derive(Clone, Debug)]
pub struct Logged {
    /// The wire's label (`"0>1 "`: written by vat 0, read by vat 1).
    pub wire: String,
    /// Delivered to the reader (else: written by the writer).
    pub delivered: bool,
    pub frame: String,
}

#[derive(Default)]
struct State {
    /// Written bytes that do not yet make a whole frame.
    partial: Vec<u8>,
    /// Whole frames written and not yet delivered.
    frames: VecDeque<Vec<u8>>,
    /// Delivered bytes the reader has not taken yet.
    readable: VecDeque<u8>,
    reader: Option<Waker>,
    /// The writer shut its side down: the reader gets end-of-stream once
    /// everything written before has been delivered and read.
    shut: bool,
    /// The wire was cut: the reader gets end-of-stream at once, writes fail.
    cut: bool,
    /// Printed with each frame delivered under `SIM_TRACE`.
    label: String,
    /// Every frame written, if capture is on (seed corpora, raw-bytes tests).
    capture: Option<Vec<Vec<u8>>>,
    /// Where written and delivered frames are noted, if anywhere.
    log: Option<Log>,
}

impl State {
    fn wake_reader(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }
}

/// One direction of a connection; see the module docs.
#[derive(Clone)]
pub struct Wire {
    state: Arc<Mutex<State>>,
}

impl Wire {
    fn new() -> Self {
        Wire {
            state: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Frames waiting to be delivered.
    pub fn queued(&self) -> usize {
        self.state().frames.len()
    }

    /// The frames waiting to be delivered, oldest first.
    pub fn waiting(&self) -> Vec<Vec<u8>> {
        self.state().frames.iter().cloned().collect()
    }

    /// Takes the next frame off the wire without delivering it (for a
    /// scripted peer that reads it itself).
    pub fn take(&self) -> Option<Vec<u8>> {
        self.state().frames.pop_front()
    }

    /// Queues bytes written by a scripted peer, cut into frames like any
    /// other write.
    pub fn inject(&self, bytes: &[u8]) {
        let mut s = self.state();
        let s = &mut *s;
        s.partial.extend_from_slice(bytes);
        cut_frames(&mut s.partial, &mut s.frames);
    }

    /// Moves the next frame to the reader. False if none was waiting.
    pub fn deliver_one(&self) -> bool {
        let mut s = self.state();
        match s.frames.pop_front() {
            Some(f) => {
                if std::env::var_os("SIM_TRACE").is_some() {
                    println!("    deliver {}{}", s.label, super::describe::frame(&f));
                }
                if let Some(log) = &s.log {
                    lock(log).push(Logged {
                        wire: s.label.clone(),
                        delivered: true,
                        frame: super::describe::frame(&f),
                    });
                }
                s.readable.extend(f);
                s.wake_reader();
                true
            }
            None => false,
        }
    }

    /// Cuts the wire: undelivered bytes are lost, the reader sees the end
    /// of the stream, writes fail.
    pub fn cut(&self) {
        let mut s = self.state();
        s.cut = true;
        s.frames.clear();
        s.partial.clear();
        s.readable.clear();
        s.wake_reader();
    }

    /// Names the wire in `SIM_TRACE` output (`"0>1 "`, say).
    pub fn set_label(&self, label: &str) {
        self.state().label = label.to_string();
    }

    /// Starts keeping a copy of every frame written from now on.
    pub fn start_capture(&self) {
        self.state().capture = Some(Vec::new());
    }

    /// Notes every frame written or delivered from now on in `log`.
    pub fn start_log(&self, log: &Log) {
        self.state().log = Some(log.clone());
    }

    /// The frames captured so far.
    pub fn captured(&self) -> Vec<Vec<u8>> {
        self.state().capture.clone().unwrap_or_default()
    }
}

/// One vat's end of a connection: reads one wire, writes the other.
pub struct End {
    rx: Wire,
    tx: Wire,
    activity: Activity,
}

/// Two ends joined by two wires: `(a, b, a_to_b, b_to_a)`.
pub fn pair(activity: &Activity) -> (End, End, Wire, Wire) {
    let ab = Wire::new();
    let ba = Wire::new();
    let a = End {
        rx: ba.clone(),
        tx: ab.clone(),
        activity: activity.clone(),
    };
    let b = End {
        rx: ab.clone(),
        tx: ba.clone(),
        activity: activity.clone(),
    };
    (a, b, ab, ba)
}

/// Largest segment count we accept when cutting frames (the runtime's own
/// limit is lower; this only guards the arithmetic).
const MAX_SEGMENTS: usize = 512;

/// Moves every whole frame at the front of `partial` to `frames`.
fn cut_frames(partial: &mut Vec<u8>, frames: &mut VecDeque<Vec<u8>>) {
    loop {
        let Some(first) = partial.get(0..4) else {
            return;
        };
        let count = u32::from_le_bytes([first[0], first[1], first[2], first[3]]) as usize + 1;
        if count > MAX_SEGMENTS {
            // Not a frame our runtime would write: pass it on as it is.
            frames.push_back(std::mem::take(partial));
            return;
        }
        let header = (4 + 4 * count).div_ceil(8) * 8;
        if partial.len() < header {
            return;
        }
        let words: usize = (0..count)
            .map(|i| {
                let at = 4 + 4 * i;
                u32::from_le_bytes([
                    partial[at],
                    partial[at + 1],
                    partial[at + 2],
                    partial[at + 3],
                ]) as usize
            })
            .sum();
        let total = header + 8 * words;
        if partial.len() < total {
            return;
        }
        let rest = partial.split_off(total);
        frames.push_back(std::mem::replace(partial, rest));
    }
}

impl AsyncRead for End {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut s = self.rx.state();
        if !s.readable.is_empty() {
            let n = buf.remaining().min(s.readable.len());
            let bytes: Vec<u8> = s.readable.drain(..n).collect();
            buf.put_slice(&bytes);
            bump(&self.activity);
            return Poll::Ready(Ok(()));
        }
        if s.cut || (s.shut && s.frames.is_empty()) {
            // End of stream: a read of zero bytes.
            return Poll::Ready(Ok(()));
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for End {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.tx.state();
        if s.cut || s.shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let s = &mut *s;
        s.partial.extend_from_slice(buf);
        let before = s.frames.len();
        cut_frames(&mut s.partial, &mut s.frames);
        if let Some(c) = &mut s.capture {
            c.extend(s.frames.iter().skip(before).cloned());
        }
        if let Some(log) = &s.log {
            lock(log).extend(s.frames.iter().skip(before).map(|f| Logged {
                wire: s.label.clone(),
                delivered: false,
                frame: super::describe::frame(f),
            }));
        }
        bump(&self.activity);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.tx.state();
        s.shut = true;
        s.wake_reader();
        bump(&self.activity);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_at_their_boundaries() {
        // One segment of one word, then two segments (1 and 2 words).
        let mut bytes = vec![0, 0, 0, 0, 1, 0, 0, 0];
        bytes.extend([7; 8]);
        let second_start = bytes.len();
        bytes.extend([1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend([9; 24]);
        let mut frames = VecDeque::new();
        let mut partial = bytes[..10].to_vec();
        cut_frames(&mut partial, &mut frames);
        assert!(frames.is_empty());
        partial.extend_from_slice(&bytes[10..]);
        cut_frames(&mut partial, &mut frames);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], bytes[..second_start]);
        assert_eq!(frames[1], bytes[second_start..]);
        assert!(partial.is_empty());
    }
}
