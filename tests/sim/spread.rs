//! The simulation with its connections on other arbiters
//! (`SIM_ARBITERS=N`, N > 1): the run starts N arbiters (threads) of its
//! own and starts each pair's two connection ends on two different ones,
//! as a vat serving its connections on several arbiters does. The vats'
//! objects, promises and the driver stay on the driver's thread; a call
//! between them and a connection crosses threads through mailboxes, and
//! the wires are read and written on the connections' arbiters.
//!
//! Knowing that nothing moves any more needs more than yields then: an
//! arbiter may be in the middle of a turn while the driver's thread is
//! idle. [`Spread::ping`] waits until every arbiter has run what was
//! queued on it before the ping; the driver counts the runtime as quiet
//! once the activity counter has not changed across its own idle rounds
//! and a ping, twice in a row ([`Spread::settle`]). (Without the pings,
//! nine seeds in ten fail: tables that do not mirror each other after a
//! flush, calls that never complete; the oracle notices a settle that
//! comes too early.)

use actix::ArbiterHandle;
use capnp_actix::arbiters::Arbiters;
use capnp_actix::connection::{start_connection_on, ConnectionHandle, ConnectionOptions};

use super::wire::{activity_now, Activity, End};
use super::PanicSink;

/// The arbiters of one run, and where the panics on them go.
pub struct Spread {
    /// Owned: dropping it stops the arbiters (at the end of the run).
    _pool: Arbiters,
    handles: Vec<ArbiterHandle>,
    panics: PanicSink,
}

impl Spread {
    /// `count` arbiters for a run, or `None` for 1 (everything on the
    /// driver's thread). Call inside the run's actix system.
    pub fn start(count: usize) -> Option<Self> {
        if count <= 1 {
            return None;
        }
        let pool = Arbiters::start(count);
        let handles: Vec<ArbiterHandle> = pool.handles().flatten().cloned().collect();
        let panics = PanicSink::default();
        for h in &handles {
            let sink = panics.clone();
            h.spawn_fn(move || super::forward_panics(sink));
        }
        Some(Spread {
            _pool: pool,
            handles,
            panics,
        })
    }

    /// Starts end `side` (0 or 1) of pair number `pair`: the two ends of a
    /// pair on two different arbiters, the pairs going round them.
    pub fn start_end(
        &self,
        pair: usize,
        side: usize,
        end: End,
        options: ConnectionOptions,
    ) -> ConnectionHandle {
        let arbiter = &self.handles[(pair + side) % self.handles.len()];
        start_connection_on(arbiter, move || Ok(end), options)
    }

    /// Resolves once every arbiter has run a task queued after everything
    /// that was queued on it (woken, sent to one of its actors) before.
    pub async fn ping(&self) {
        let answers: Vec<_> = self
            .handles
            .iter()
            .map(|h| {
                let (tx, rx) = futures::channel::oneshot::channel::<()>();
                h.spawn(async move {
                    let _ = tx.send(());
                });
                rx
            })
            .collect();
        // An arbiter that stopped drops its task: nothing to wait for.
        let _ = futures::future::join_all(answers).await;
    }

    /// The first panic on one of the arbiters, if any.
    pub fn take_panic(&self) -> Option<String> {
        super::take_forwarded(&self.panics)
    }

    /// Lets the runtime run until the activity counter has not changed
    /// across [`idle`] on this thread then a ping, twice in a row: an
    /// arbiter's turn that had begun when the first ping reached it has
    /// ended before it answers the second (a turn that read a frame, say,
    /// and answered the first ping in its middle), and what that turn sent
    /// to this thread has run in the second round's idle rounds.
    pub async fn settle(
        &self,
        activity: &Activity,
        idle_rounds: usize,
        max_rounds: usize,
    ) -> Result<(), String> {
        let round = || async {
            idle(activity, idle_rounds, max_rounds).await?;
            self.ping().await;
            Ok(())
        };
        let limit = max_rounds / idle_rounds.max(1);
        quiet_for(activity, 2, limit, "rounds of pings", round).await
    }
}

/// Yields until nothing observable has happened for `idle_rounds`
/// scheduler rounds of this thread (with everything on it, that is when
/// the runtime is quiet); fails after `max_rounds`.
pub async fn idle(
    activity: &Activity,
    idle_rounds: usize,
    max_rounds: usize,
) -> Result<(), String> {
    let round = || async {
        tokio::task::yield_now().await;
        Ok(())
    };
    quiet_for(activity, idle_rounds, max_rounds, "scheduler rounds", round).await
}

/// Runs `round` until the activity counter has not changed across
/// `needed` of them in a row. A round's own error ends it; so does going
/// beyond `max_rounds` rounds (`rounds_are` names them in its error).
async fn quiet_for<F, R>(
    activity: &Activity,
    needed: usize,
    max_rounds: usize,
    rounds_are: &str,
    mut round: F,
) -> Result<(), String>
where
    F: FnMut() -> R,
    R: std::future::Future<Output = Result<(), String>>,
{
    let (mut quiet, mut rounds) = (0, 0);
    while quiet < needed {
        let before = activity_now(activity);
        round().await?;
        rounds += 1;
        if activity_now(activity) == before {
            quiet += 1;
        } else {
            quiet = 0;
        }
        if rounds > max_rounds {
            return Err(format!(
                "the runtime was still busy after {rounds} {rounds_are} (a message loop?)"
            ));
        }
    }
    Ok(())
}
