//! The connection's clocks: the deadline for the peer's first message,
//! the idle timeout and the heartbeat (see
//! [`ConnectionOptions`](super::ConnectionOptions)). Each ends the
//! connection with an abort naming it, so the peer learns why.
//!
//! The heartbeat is made of ordinary protocol messages, so that every
//! peer answers it: after `interval` with nothing received, the
//! connection asks for the peer's bootstrap capability (no service ID);
//! any message from the peer (the bootstrap's return, or anything else)
//! shows it is alive. The probe is finished as soon as it is sent (we
//! want no capability of it): the peer still returns, and releases what
//! the return would have given us. If nothing at all arrives within `timeout` of the
//! probe, the peer is declared dead: the connection ends with
//! Disconnected, naming the heartbeat, and every capability that came
//! through it breaks (its `on_broken` watchers run).

use std::time::{Duration, Instant};

use actix::AsyncContext;

use super::Connection;
use crate::answer::Answer;

/// The shortest period at which the idle timeout is checked.
const MIN_IDLE_CHECK: Duration = Duration::from_millis(10);

/// Dead-peer detection on a connection (see the module docs and
/// [`ConnectionOptions::heartbeat`](super::ConnectionOptions::heartbeat)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Silence from the peer after which a probe is sent.
    pub interval: Duration,
    /// How long after the probe the peer may stay silent before it is
    /// declared dead.
    pub timeout: Duration,
}

/// The heartbeat's state on a connection.
#[derive(Default)]
pub(super) struct Probe {
    /// When the probe now waiting was sent.
    sent: Option<Instant>,
}

/// Starts the timers the options ask for.
pub(super) fn start(
    ctx: &mut actix::Context<Connection>,
    first_message: Option<Duration>,
    idle: Option<Duration>,
    heartbeat: Option<Heartbeat>,
) {
    if let Some(beat) = heartbeat {
        let period = (beat.interval.min(beat.timeout) / 4).max(MIN_IDLE_CHECK);
        ctx.run_interval(period, move |act, ctx| act.heartbeat(beat, ctx));
    }
    if let Some(deadline) = first_message {
        ctx.run_later(deadline, move |act, ctx| {
            if !act.received_any && act.core.aborted().is_none() {
                act.core.abort(capnp::Error::failed(format!(
                    "no message within the first-message deadline ({} ms) of connecting",
                    deadline.as_millis()
                )));
                act.handle_core_events(ctx);
            }
        });
    }
    if let Some(timeout) = idle {
        let period = (timeout / 4).max(MIN_IDLE_CHECK);
        ctx.run_interval(period, move |act, ctx| {
            if act.core.aborted().is_none() && act.idle_for(timeout) {
                act.core.abort(capnp::Error::disconnected(format!(
                    "idle timeout: nothing held and nothing received for {} ms",
                    timeout.as_millis()
                )));
                act.handle_core_events(ctx);
            }
        });
    }
}

impl Connection {
    /// One tick of the heartbeat: declares the peer dead if a probe went
    /// unanswered for `beat.timeout`, else sends one after `beat.interval`
    /// of silence.
    fn heartbeat(&mut self, beat: Heartbeat, ctx: &mut actix::Context<Self>) {
        if self.core.aborted().is_some() {
            return;
        }
        let now = Instant::now();
        match self.probe.sent {
            Some(sent) if self.last_input < sent && now.duration_since(sent) >= beat.timeout => {
                self.core.abort(capnp::Error::disconnected(format!(
                    "the peer is not answering: nothing received for {} ms, {} ms after a \
                     heartbeat probe (heartbeat interval {} ms, timeout {} ms)",
                    now.duration_since(self.last_input).as_millis(),
                    now.duration_since(sent).as_millis(),
                    beat.interval.as_millis(),
                    beat.timeout.as_millis()
                )));
                self.handle_core_events(ctx);
            }
            // A probe is out and the peer has time left to answer.
            Some(sent) if self.last_input < sent => {}
            _ if now.duration_since(self.last_input) >= beat.interval => {
                let (answer, completer) = Answer::open();
                // Not `used`: a probe does not keep a connection that
                // closes when unused open.
                match self.core.bootstrap(&[]) {
                    Ok(q) => self.register_question(q, completer),
                    Err(e) => completer.complete(Err(e)),
                }
                // Finished at once: only the peer's return matters.
                drop(answer);
                self.probe.sent = Some(now);
                crate::metrics::heartbeat_probe();
                self.handle_core_events(ctx);
            }
            _ => {}
        }
    }

    /// True when the connection holds nothing either way and the peer has
    /// sent nothing for `timeout`.
    fn idle_for(&self, timeout: Duration) -> bool {
        self.holds_nothing() && Instant::now().duration_since(self.last_input) >= timeout
    }
}
