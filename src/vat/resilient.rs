//! Imports for clients that must survive the network: one that fails
//! early ([`Vat::import_checked`]: the service is known to exist once it
//! returns) and one that reconnects ([`Vat::import_reconnecting`]).
//!
//! # Reconnecting imports
//!
//! [`Vat::import_reconnecting`] gives a [`Reconnecting`] handle whose
//! capability ([`Reconnecting::cap`], a [`Cap<C>`] usable from any
//! arbiter) stays the same while the connection under it is lost and made
//! again. A task on the calling arbiter drives it:
//!
//! 1. connect and bootstrap as [`Vat::import_checked`] does (bounded by
//!    the vat's connect deadline, `--capnp-connect-timeout-ms`);
//! 2. once the service answered, route calls to it: state
//!    [`ConnectionState::Connected`];
//! 3. when it breaks (the connection ended, or the heartbeat declared the
//!    peer dead), calls in flight fail with Disconnected, once: they are
//!    never sent again, since calls are not idempotent. The state becomes
//!    [`ConnectionState::Reconnecting`], and after a backoff (exponential,
//!    with jitter: [`ReconnectPolicy`]) the task goes back to 1;
//! 4. a connect that fails with Disconnected or Overloaded (refused,
//!    unreachable, timed out) is retried after a longer backoff; any other
//!    error (a wrong service ID, a key that does not match the URI) cannot
//!    be helped by retrying: the capability breaks with it at once
//!    ([`ConnectionState::GaveUp`]), as it does once the policy's
//!    [`max_attempts`](ReconnectPolicy::max_attempts) or
//!    [`max_time`](ReconnectPolicy::max_time) is reached, or the vat stops.
//!
//! Calls made while no connection is up wait for the next one, in order
//! ([`WhileDown::Wait`], the default; give them a deadline with
//! [`Cap::with_deadline`] or [`crate::deadline`]) or fail at once with
//! Disconnected ([`WhileDown::FailFast`]). The task ends, and the
//! connection's import is released, once every handle to the capability
//! has gone.

use std::time::Duration;

use capnp::capability::FromClientHook;
use capnp_actix_actors::switch::Switch;
pub use capnp_actix_actors::switch::WhileDown;
use capnp_actix_actors::{system, Cap, CapRef};
use futures::future::{select, Either};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Vat;
use crate::uri::SturdyUri;

impl Vat {
    /// [`Vat::import`], then waits until the service is known to exist:
    /// the peer answered the bootstrap with it. A wrong service ID fails
    /// here (Failed, "Unknown persistent service ID") rather than at the
    /// first call, and a peer that never answers fails once the vat's
    /// connect deadline (`--capnp-connect-timeout-ms`, 10 s by default)
    /// has passed since the start (dial, TLS handshake and bootstrap
    /// together), with Disconnected. Every error names the address.
    ///
    /// ```no_run
    /// # async fn f(vat: capnp_actix::vat::Vat, uri: capnp_actix::SturdyUri) -> Result<(), capnp::Error> {
    /// use capnp_actix::schemas::echo_api_capnp::echo;
    /// let echo = vat.import_checked_as::<echo::Client>(&uri).await?; // the service exists
    /// # Ok(()) }
    /// ```
    pub async fn import_checked(&self, uri: &SturdyUri) -> Result<CapRef, capnp::Error> {
        let address = uri.address.to_string();
        let checked = async {
            let cap = self.import(uri).await?;
            cap.when_resolved().await?;
            Ok(cap)
        };
        let outcome = match self.shared.connect_timeout {
            None => checked.await,
            Some(limit) => tokio::time::timeout(limit, checked)
                .await
                .unwrap_or_else(|_| {
                    Err(capnp::Error::disconnected(format!(
                        "connecting to {address}: no answer to the bootstrap within the \
                         connect deadline of {limit:?}"
                    )))
                }),
        };
        outcome.map_err(|mut e| {
            if !e.extra.contains(&address) {
                e.extra = format!("importing a service from {address}: {}", e.extra);
            }
            e
        })
    }

    /// [`Vat::import_checked`] as a typed capability.
    pub async fn import_checked_as<C>(&self, uri: &SturdyUri) -> Result<Cap<C>, capnp::Error> {
        self.import_checked(uri).await.map(Cap::from_raw)
    }

    /// The service `uri` names, as a capability that reconnects when its
    /// connection is lost (see the module docs): usable at once (calls
    /// wait for the first connection, or fail fast, as `policy` says).
    /// The task reconnecting it runs on the calling arbiter; it fails
    /// only outside an actix System.
    ///
    /// ```no_run
    /// # async fn f(vat: capnp_actix::vat::Vat, uri: capnp_actix::SturdyUri) -> Result<(), capnp::Error> {
    /// use capnp_actix::schemas::echo_api_capnp::echo;
    /// use capnp_actix::vat::ReconnectPolicy;
    /// let echo = vat.import_reconnecting::<echo::Client>(&uri, ReconnectPolicy::default())?;
    /// let mut state = echo.watch();
    /// actix::spawn(async move {
    ///     while state.changed().await.is_ok() {
    ///         println!("echo: {:?}", *state.borrow());
    ///     }
    /// });
    /// let reply = echo.client().ping_request().send().promise.await?;
    /// # Ok(()) }
    /// ```
    pub fn import_reconnecting<C>(
        &self,
        uri: &SturdyUri,
        policy: ReconnectPolicy,
    ) -> Result<Reconnecting<C>, capnp::Error> {
        system::check_capnp("Vat::import_reconnecting")?;
        let (cap, switch) = Switch::new(
            policy.while_down,
            capnp::Error::disconnected(format!("not connected to {} yet", uri.address)),
        );
        let (tx, rx) = watch::channel(ConnectionState::Connecting);
        actix_rt::spawn(drive(self.clone(), uri.clone(), policy, switch, tx));
        Ok(Reconnecting {
            cap: Cap::from_raw(cap),
            state: rx,
        })
    }
}

/// How a reconnecting import waits between attempts, and when it gives
/// up. The wait before attempt `n` after a loss is `initial_delay *
/// multiplier^(n-1)`, at most `max_delay`, times a random factor in
/// `1 ± jitter` (so that clients of one server do not all come back at
/// the same moment).
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    /// The wait before the first attempt after a loss (default 100 ms).
    pub initial_delay: Duration,
    /// The longest wait between attempts (default 5 s).
    pub max_delay: Duration,
    /// How much longer each wait is than the one before (default 2).
    pub multiplier: f64,
    /// The spread of the random factor, from 0 to 1 (default 0.2).
    pub jitter: f64,
    /// Give up after this many failed attempts in a row (default: never).
    pub max_attempts: Option<u32>,
    /// Give up when the connection has been down this long (default:
    /// never).
    pub max_time: Option<Duration>,
    /// What calls made while down do (default: wait).
    pub while_down: WhileDown,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: None,
            max_time: None,
            while_down: WhileDown::Wait,
        }
    }
}

impl ReconnectPolicy {
    /// The default policy with these waits (see [`ReconnectPolicy`]).
    pub fn with_delays(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_delay = initial;
        self.max_delay = max;
        self
    }

    /// Give up after `n` failed attempts in a row.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Give up once the connection has been down for `t`.
    pub fn with_max_time(mut self, t: Duration) -> Self {
        self.max_time = Some(t);
        self
    }

    /// Calls made while down fail at once with Disconnected.
    pub fn fail_fast(mut self) -> Self {
        self.while_down = WhileDown::FailFast;
        self
    }

    /// The wait before attempt `attempt` (1 for the first after a loss).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_delay.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let base = base.min(self.max_delay.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            rand::thread_rng().gen_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        Duration::from_secs_f64(base * factor)
    }
}

/// Where a reconnecting import stands.
#[derive(Debug, Clone)]
pub enum ConnectionState {
    /// The first connect is under way.
    Connecting,
    /// The service answered on the current connection: calls go to it.
    Connected,
    /// The connection was lost (or the first connect failed):
    /// `attempt` is the number of the attempt waited for or under way
    /// (1 for the first after the loss), `last_error` why the last one
    /// ended.
    Reconnecting {
        /// The attempt under way or next, from 1.
        attempt: u32,
        /// Why the connection, or the last attempt, ended.
        last_error: capnp::Error,
    },
    /// Broken for good: every call fails with this error.
    GaveUp(capnp::Error),
}

/// A capability that reconnects ([`Vat::import_reconnecting`]) and a way
/// to watch its connection. Clones share both.
pub struct Reconnecting<C> {
    cap: Cap<C>,
    state: watch::Receiver<ConnectionState>,
}

impl<C> Clone for Reconnecting<C> {
    fn clone(&self) -> Self {
        Reconnecting {
            cap: self.cap.clone(),
            state: self.state.clone(),
        }
    }
}

impl<C> std::fmt::Debug for Reconnecting<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconnecting")
            .field("cap", &self.cap)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl<C> Reconnecting<C> {
    /// The capability: the same across reconnections, `Send + Sync`.
    pub fn cap(&self) -> &Cap<C> {
        &self.cap
    }

    /// The capability, without the state.
    pub fn into_cap(self) -> Cap<C> {
        self.cap
    }

    /// Where it stands now.
    pub fn state(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of state (`changed().await`);
    /// it ends once the capability is released.
    pub fn watch(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Waits until connected (`Ok`) or given up (the error).
    pub async fn connected(&self) -> Result<(), capnp::Error> {
        let mut state = self.state.clone();
        let seen = state
            .wait_for(|s| matches!(s, ConnectionState::Connected | ConnectionState::GaveUp(_)))
            .await
            .map(|s| s.clone());
        match seen {
            Ok(ConnectionState::GaveUp(e)) => Err(e),
            Ok(_) => Ok(()),
            Err(_) => Err(capnp::Error::disconnected(
                "the reconnecting capability's task has ended".into(),
            )),
        }
    }
}

impl<C: FromClientHook> Reconnecting<C> {
    /// The generated client, usable on this thread.
    pub fn client(&self) -> C {
        self.cap.client()
    }
}

/// True for a connect error another attempt may not have.
fn retryable(e: &capnp::Error) -> bool {
    matches!(
        e.kind,
        capnp::ErrorKind::Disconnected | capnp::ErrorKind::Overloaded
    )
}

/// What ended a wait of the driving task.
enum Woke<T> {
    Released,
    Done(T),
}

/// Waits for `fut` unless the capability is released first.
async fn unless_released<T>(switch: &Switch, fut: impl std::future::Future<Output = T>) -> Woke<T> {
    let released = std::pin::pin!(switch.released());
    let fut = std::pin::pin!(fut);
    match select(released, fut).await {
        Either::Left(_) => Woke::Released,
        Either::Right((v, _)) => Woke::Done(v),
    }
}

/// The task behind a reconnecting import (see the module docs).
async fn drive(
    vat: Vat,
    uri: SturdyUri,
    policy: ReconnectPolicy,
    switch: Switch,
    state: watch::Sender<ConnectionState>,
) {
    let address = uri.address.clone();
    // Attempts failed since the start or the last loss.
    let mut failures: u32 = 0;
    let mut down_since = Instant::now();
    loop {
        let last_error = match unless_released(&switch, vat.import_checked(&uri)).await {
            Woke::Released => return,
            Woke::Done(Ok(cap)) => {
                let (tx, rx) = futures::channel::oneshot::channel();
                cap.on_broken(move |e| {
                    let _ = tx.send(e);
                });
                switch.up(cap);
                state.send_replace(ConnectionState::Connected);
                tracing::info!(%address, "reconnecting import connected");
                failures = 0;
                // The watcher is dropped unrun if the capability is released.
                let Woke::Done(Ok(e)) = unless_released(&switch, rx).await else {
                    return;
                };
                switch.down(e.clone());
                down_since = Instant::now();
                tracing::warn!(%address, "reconnecting import lost its connection: {e}");
                e
            }
            Woke::Done(Err(e)) if !retryable(&e) || !vat.shared.supervisor.connected() => {
                return give_up(&switch, &state, e);
            }
            Woke::Done(Err(e)) => {
                failures += 1;
                tracing::debug!(%address, failures, "reconnect attempt failed: {e}");
                if policy.max_attempts.is_some_and(|max| failures >= max) {
                    return give_up(&switch, &state, gave_up(&address, failures, &e));
                }
                e
            }
        };
        if policy
            .max_time
            .is_some_and(|max| down_since.elapsed() >= max)
        {
            return give_up(&switch, &state, gave_up(&address, failures, &last_error));
        }
        let attempt = failures + 1;
        state.send_replace(ConnectionState::Reconnecting {
            attempt,
            last_error,
        });
        let wait = tokio::time::sleep(policy.delay(attempt));
        if let Woke::Released = unless_released(&switch, wait).await {
            return;
        }
    }
}

/// The error of an import that stopped trying.
fn gave_up(address: &crate::Address, attempts: u32, last: &capnp::Error) -> capnp::Error {
    capnp::Error::disconnected(format!(
        "gave up reconnecting to {address} after {attempts} failed attempt(s); the last: {}",
        last.extra
    ))
}

/// Breaks the capability for good with `error`.
fn give_up(switch: &Switch, state: &watch::Sender<ConnectionState>, error: capnp::Error) {
    tracing::warn!("reconnecting import gave up: {error}");
    switch.give_up(error.clone());
    state.send_replace(ConnectionState::GaveUp(error));
}
