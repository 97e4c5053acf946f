//! Streaming calls (`-> stream` methods): the caller's flow control.
//!
//! capnpc generates `write_request()` returning a `StreamingRequest`, whose
//! `send()` comes here (`hook.rs`, `OutgoingRequest::send_streaming`). The
//! call goes out at once, in order with every other call on the
//! capability; what `send()` returns is not the call's return but
//! permission to send the next one: it resolves as soon as the bytes in
//! flight on that capability (sent, not yet returned) are below its
//! window. So the idiom `for chunk { req.send().await?; }` keeps a window
//! of writes in flight instead of waiting a round trip per write, and a
//! writer faster than its reader is held back instead of filling the
//! reader's memory.
//!
//! * **One [`Flow`] per capability** (per node: every handle of the same
//!   capability shares it), made on its first streaming call.
//! * **Failure**: the first write that returns an error fails the flow;
//!   every later streaming call fails with that error without being sent,
//!   writers waiting for room get it, and so does every later ordinary call
//!   on the capability (the call that ends the stream included): as in the
//!   reference implementations, a failed stream breaks its capability.
//! * **The window** is a [`Window`]: fixed, or adapted to the round trip
//!   measured on the acknowledgements (see its docs), within
//!   [`WindowConfig`]'s bounds. `Window` reads no clock: the times are
//!   passed in, so its tests inject them.
//!
//! The served side (one streaming call at a time, in order; a failed one
//! fails the calls after it) is the capability actor's (`host.rs`).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::channel::oneshot;

/// The bounds and starting size of a stream's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    /// The window at the start, in bytes.
    pub initial: usize,
    /// The smallest window the controller shrinks to.
    pub min: usize,
    /// The largest window the controller grows to.
    pub max: usize,
    /// Adapt the window to the measured round trip; `false` keeps it at
    /// `initial`.
    pub adaptive: bool,
}

impl WindowConfig {
    /// A window that stays at `bytes`.
    pub fn fixed(bytes: usize) -> WindowConfig {
        WindowConfig {
            initial: bytes,
            min: bytes,
            max: bytes,
            adaptive: false,
        }
    }
}

impl Default for WindowConfig {
    /// Adaptive, starting at 64 KiB, between 64 KiB and 1 GiB.
    fn default() -> Self {
        WindowConfig {
            initial: 64 * 1024,
            min: 64 * 1024,
            max: 1 << 30,
            adaptive: true,
        }
    }
}

/// A round trip this many times the smallest one seen means the window
/// only adds queueing: the window shrinks.
const QUEUEING_FACTOR: u32 = 2;

/// The window controller: how many bytes may be in flight.
///
/// Adaptive windows work in epochs of one round trip (an epoch ends when
/// a write sent after it began is acknowledged):
///
/// * while starting (until the first shrink), the window doubles per epoch
///   in which the writer filled it;
/// * after that it grows by 5/4 per epoch in which the writer filled it
///   and the round trip stayed near the smallest seen;
/// * it shrinks by 7/8 at the end of an epoch whose round trip exceeded
///   [`QUEUEING_FACTOR`] times the smallest seen (bytes queue somewhere:
///   more window only adds delay and memory);
///
/// always within [`WindowConfig::min`] and [`WindowConfig::max`]. An epoch
/// in which the writer never filled the window leaves it as it is (the
/// writer, not the window, was the limit).
#[derive(Debug, Clone)]
pub struct Window {
    config: WindowConfig,
    size: usize,
    starting: bool,
    min_rtt: Option<Duration>,
    epoch_start: Option<Instant>,
    filled: bool,
}

impl Window {
    /// A controller with `config`.
    pub fn new(config: WindowConfig) -> Window {
        let size = config.initial.clamp(config.min, config.max.max(config.min));
        Window {
            config,
            size,
            starting: true,
            min_rtt: None,
            epoch_start: None,
            filled: false,
        }
    }

    /// The window now, in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// A write left at `now`, making `in_flight` bytes in flight.
    pub fn on_send(&mut self, in_flight: usize, now: Instant) {
        if self.epoch_start.is_none() {
            self.epoch_start = Some(now);
        }
        if in_flight >= self.size {
            self.filled = true;
        }
    }

    /// A write sent at `sent_at` was acknowledged at `now`.
    pub fn on_ack(&mut self, sent_at: Instant, now: Instant) {
        if !self.config.adaptive {
            return;
        }
        let rtt = now.saturating_duration_since(sent_at);
        let min_rtt = *self.min_rtt.get_or_insert(rtt);
        self.min_rtt = Some(min_rtt.min(rtt));
        let Some(epoch_start) = self.epoch_start else {
            return;
        };
        if sent_at < epoch_start {
            return;
        }
        // One round trip since the epoch began: judge it, start the next.
        self.epoch_start = Some(now);
        let queueing = rtt > min_rtt.saturating_mul(QUEUEING_FACTOR);
        let size = self.size;
        self.size = if queueing {
            self.starting = false;
            size - size / 8
        } else if !self.filled {
            size
        } else if self.starting {
            size.saturating_mul(2)
        } else {
            size.saturating_add(size / 4)
        }
        .clamp(self.config.min, self.config.max.max(self.config.min));
        self.filled = false;
    }
}

/// One capability's stream state; see the module docs.
pub(crate) struct Flow {
    state: Mutex<FlowState>,
}

struct FlowState {
    in_flight: usize,
    /// The largest write seen: the window is extended by it, so that a
    /// write larger than the window does not stall the stream for a round
    /// trip after it (as the reference implementations do).
    max_write: usize,
    window: Window,
    failed: Option<capnp::Error>,
    waiting: Vec<oneshot::Sender<Result<(), capnp::Error>>>,
}

impl FlowState {
    fn has_room(&self) -> bool {
        self.in_flight < self.window.size().saturating_add(self.max_write)
    }
}

impl Flow {
    pub(crate) fn new(config: WindowConfig) -> Arc<Flow> {
        Arc::new(Flow {
            state: Mutex::new(FlowState {
                in_flight: 0,
                max_write: 0,
                window: Window::new(config),
                failed: None,
                waiting: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, FlowState> {
        // Nothing panics while holding the lock; recover if it ever did.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error that failed the stream, if one did.
    pub(crate) fn failure(&self) -> Option<capnp::Error> {
        self.lock().failed.clone()
    }

    /// The window now, in bytes.
    pub(crate) fn window(&self) -> usize {
        self.lock().window.size()
    }

    /// Records a write of `bytes` sent at `now`.
    pub(crate) fn sent(&self, bytes: usize, now: Instant) {
        let mut state = self.lock();
        state.in_flight += bytes;
        state.max_write = state.max_write.max(bytes);
        let in_flight = state.in_flight;
        state.window.on_send(in_flight, now);
    }

    /// Records the return of a write of `bytes` sent at `sent_at`:
    /// `error` if it failed.
    pub(crate) fn returned(
        &self,
        bytes: usize,
        sent_at: Instant,
        now: Instant,
        error: Option<capnp::Error>,
    ) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(bytes);
        if let Some(error) = error {
            if state.failed.is_none() {
                for waiter in std::mem::take(&mut state.waiting) {
                    let _ = waiter.send(Err(error.clone()));
                }
                state.failed = Some(error);
            }
            return;
        }
        state.window.on_ack(sent_at, now);
        if state.failed.is_none() && state.has_room() {
            for waiter in std::mem::take(&mut state.waiting) {
                let _ = waiter.send(Ok(()));
            }
        }
    }

    /// Resolves when another write may be sent (now, if there is room), or
    /// fails with the stream's error.
    pub(crate) fn ready(&self) -> capnp::capability::Promise<(), capnp::Error> {
        let mut state = self.lock();
        if let Some(e) = &state.failed {
            return capnp::capability::Promise::err(e.clone());
        }
        if state.has_room() {
            return capnp::capability::Promise::ok(());
        }
        let (tx, rx) = oneshot::channel();
        state.waiting.push(tx);
        capnp::capability::Promise::from_future(async move {
            rx.await
                .unwrap_or_else(|_| Err(crate::error::internal("stream flow dropped")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    fn config() -> WindowConfig {
        WindowConfig {
            initial: 64 * KIB,
            min: 64 * KIB,
            max: 1024 * KIB,
            adaptive: true,
        }
    }

    /// One round trip of `rtt` in which the writer fills the window (or
    /// not), starting at `t`; returns the time it ends.
    fn epoch(w: &mut Window, t: Instant, rtt: Duration, fill: bool) -> Instant {
        let in_flight = if fill { w.size() } else { w.size() / 2 };
        w.on_send(in_flight, t);
        let acked = t + rtt;
        w.on_ack(t, acked);
        acked
    }

    #[test]
    fn a_fixed_window_never_changes() {
        let mut w = Window::new(WindowConfig::fixed(100 * KIB));
        let mut t = Instant::now();
        for rtt in [1, 1, 50, 1] {
            t = epoch(&mut w, t, Duration::from_millis(rtt), true);
            assert_eq!(w.size(), 100 * KIB);
        }
    }

    #[test]
    fn the_window_doubles_per_round_trip_at_start_up_to_its_bound() {
        let mut w = Window::new(config());
        let mut t = Instant::now();
        let ms = Duration::from_millis(10);
        let mut sizes = Vec::new();
        for _ in 0..6 {
            t = epoch(&mut w, t, ms, true);
            sizes.push(w.size() / KIB);
        }
        assert_eq!(sizes, [128, 256, 512, 1024, 1024, 1024]);
    }

    #[test]
    fn a_writer_that_does_not_fill_the_window_leaves_it_alone() {
        let mut w = Window::new(config());
        let t = epoch(&mut w, Instant::now(), Duration::from_millis(10), false);
        assert_eq!(w.size(), 64 * KIB);
        epoch(&mut w, t, Duration::from_millis(10), true);
        assert_eq!(w.size(), 128 * KIB);
    }

    #[test]
    fn queueing_shrinks_by_an_eighth_then_growth_is_by_a_quarter() {
        let mut w = Window::new(config());
        let mut t = Instant::now();
        let ms = |n| Duration::from_millis(n);
        t = epoch(&mut w, t, ms(10), true);
        t = epoch(&mut w, t, ms(10), true);
        assert_eq!(w.size(), 256 * KIB);
        // The round trip grows past twice the smallest: bytes queue.
        t = epoch(&mut w, t, ms(25), true);
        assert_eq!(w.size(), 224 * KIB);
        // Back near the smallest round trip: +1/4, no more doubling.
        epoch(&mut w, t, ms(12), true);
        assert_eq!(w.size(), 280 * KIB);
    }

    #[test]
    fn the_window_never_shrinks_below_its_minimum() {
        let mut w = Window::new(config());
        let mut t = epoch(&mut w, Instant::now(), Duration::from_millis(1), true);
        for _ in 0..20 {
            t = epoch(&mut w, t, Duration::from_millis(100), true);
        }
        assert_eq!(w.size(), 64 * KIB);
    }

    #[test]
    fn acks_of_writes_sent_before_the_epoch_do_not_end_it() {
        let mut w = Window::new(config());
        let t0 = Instant::now();
        w.on_send(64 * KIB, t0);
        let t1 = t0 + Duration::from_millis(10);
        w.on_ack(t0, t1);
        assert_eq!(w.size(), 128 * KIB);
        // A write sent before t1 acknowledged now: still the epoch begun at t1.
        w.on_send(128 * KIB, t1);
        w.on_ack(t0 + Duration::from_millis(5), t1 + Duration::from_millis(3));
        assert_eq!(w.size(), 128 * KIB);
    }
}
