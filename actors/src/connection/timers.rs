//! The connection's clocks: the deadline for the peer's first message and
//! the idle timeout (see [`ConnectionOptions`](super::ConnectionOptions)).
//! Each ends the connection with an abort naming it, so the peer learns
//! why.

use std::time::{Duration, Instant};

use actix::AsyncContext;

use super::Connection;

/// The shortest period at which the idle timeout is checked.
const MIN_IDLE_CHECK: Duration = Duration::from_millis(10);

/// Starts the timers the options ask for.
pub(super) fn start(
    ctx: &mut actix::Context<Connection>,
    first_message: Option<Duration>,
    idle: Option<Duration>,
) {
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
    /// True when the connection holds nothing either way and the peer has
    /// sent nothing for `timeout`.
    fn idle_for(&self, timeout: Duration) -> bool {
        self.holds_nothing() && Instant::now().duration_since(self.last_input) >= timeout
    }
}
