//! A capability whose target can change: what a reconnecting import is
//! made of (the vat's `import_reconnecting` drives it).
//!
//! [`Switch::new`] gives the capability users hold and the [`Switch`] that
//! routes it. The switch is *up* (calls go to the current target), *down*
//! (calls wait in a FIFO queue, or fail at once, as chosen), or *gone*
//! (every call fails with the reason, for good: it has broken).
//!
//! - Calls are handed on by value and never kept: a call that reached a
//!   target whose connection then failed fails with that target's error
//!   (Disconnected), and is never sent again.
//! - A target found broken when a call arrives puts the switch down
//!   at once, so that the call waits for the next target instead of
//!   failing (in the waiting mode).
//! - When the switch goes up, the waiting calls go to the new target in
//!   order, before any later call (E-order); calls whose callers gave up
//!   meanwhile (a deadline passed) are dropped without being sent.
//! - The switch does not keep the capability alive: once users let go of
//!   it, [`Switch::released`] resolves and the target is released.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures::channel::oneshot;
use futures::future::{BoxFuture, Shared};
use futures::FutureExt;

use crate::call::Call;
use crate::cap::{BrokenWatcher, CapRef, Kind};
use crate::error;
use crate::wrap::Wrap;

/// What calls made while the switch is down do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhileDown {
    /// Wait for the next target (bounded by the call's deadline, if it has
    /// one: see [`crate::deadline`]).
    #[default]
    Wait,
    /// Fail at once with Disconnected, naming why the switch is down.
    FailFast,
}

/// Where calls go now.
enum Route {
    Up(CapRef),
    Down(capnp::Error),
    Gone(capnp::Error),
}

struct State {
    route: Route,
    /// Calls waiting for a target (only while down, or being flushed).
    queue: VecDeque<Call>,
    /// Someone is handing the queue to a new target: new calls queue too.
    flushing: bool,
    /// Run when the switch is gone.
    watchers: Vec<BrokenWatcher>,
    /// Told when the switch goes up or is gone.
    waiters: Vec<oneshot::Sender<Result<(), capnp::Error>>>,
}

/// The shared part, held by the capability's node.
struct Core {
    state: Mutex<State>,
    while_down: WhileDown,
    /// Dropped with the core: tells the switch the capability is released.
    _released: oneshot::Sender<()>,
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the queue to the target, one call at a time, never holding
    /// the lock while delivering.
    fn flush(&self) {
        loop {
            let (target, call) = {
                let mut s = self.lock();
                let Route::Up(target) = &s.route else {
                    s.flushing = false;
                    return;
                };
                let target = target.clone();
                match s.queue.pop_front() {
                    Some(call) => (target, call),
                    None => {
                        s.flushing = false;
                        return;
                    }
                }
            };
            if call.completer.is_cancelled() {
                call.fail(error::cancelled());
            } else {
                target.deliver(call);
            }
        }
    }
}

/// Routes a capability made by [`Switch::new`]; see the module docs.
/// Holding it does not keep the capability alive.
pub struct Switch {
    core: Weak<Core>,
    released: Shared<oneshot::Receiver<()>>,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switch")
            .field("released", &(self.core.strong_count() == 0))
            .finish()
    }
}

impl Switch {
    /// A new capability, down (with `why` as the reason calls get in the
    /// fail-fast mode), and the switch that routes it.
    pub fn new(while_down: WhileDown, why: capnp::Error) -> (CapRef, Switch) {
        let (tx, rx) = oneshot::channel();
        let core = Arc::new(Core {
            state: Mutex::new(State {
                route: Route::Down(why),
                queue: VecDeque::new(),
                flushing: false,
                watchers: Vec::new(),
                waiters: Vec::new(),
            }),
            while_down,
            _released: tx,
        });
        let switch = Switch {
            core: Arc::downgrade(&core),
            released: rx.shared(),
        };
        (CapRef::from_kind(Kind::Wrapped(core)), switch)
    }

    /// Calls go to `target` from now on, after the calls waiting (in
    /// order). Ignored once the switch is gone.
    pub fn up(&self, target: CapRef) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let waiters = {
            let mut s = core.lock();
            if let Route::Gone(_) = s.route {
                return;
            }
            s.route = Route::Up(target);
            s.flushing = true;
            std::mem::take(&mut s.waiters)
        };
        core.flush();
        for w in waiters {
            let _ = w.send(Ok(()));
        }
    }

    /// Calls wait (or fail with `why`, in the fail-fast mode) from now on;
    /// the target is let go. Ignored once the switch is gone.
    pub fn down(&self, why: capnp::Error) {
        if let Some(core) = self.core.upgrade() {
            let mut s = core.lock();
            if !matches!(s.route, Route::Gone(_)) {
                s.route = Route::Down(why);
            }
        }
    }

    /// Every waiting and later call fails with `error`, and the
    /// capability's broken watchers run: it is broken for good.
    pub fn give_up(&self, error: capnp::Error) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let (queue, watchers, waiters) = {
            let mut s = core.lock();
            s.route = Route::Gone(error.clone());
            (
                std::mem::take(&mut s.queue),
                std::mem::take(&mut s.watchers),
                std::mem::take(&mut s.waiters),
            )
        };
        for call in queue {
            call.fail(error.clone());
        }
        for w in watchers {
            w(error.clone());
        }
        for w in waiters {
            let _ = w.send(Err(error.clone()));
        }
    }

    /// True once every handle to the capability has gone.
    pub fn is_released(&self) -> bool {
        self.core.strong_count() == 0
    }

    /// Resolves once every handle to the capability has gone.
    pub fn released(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.released.clone().map(|_| ())
    }
}

impl Wrap for Core {
    fn name(&self) -> &'static str {
        "switch"
    }

    fn deliver(&self, call: Call) {
        let mut s = self.lock();
        if let (Route::Up(target), false) = (&s.route, s.flushing) {
            match target.broken_error() {
                None => {
                    let target = target.clone();
                    drop(s);
                    return target.deliver(call);
                }
                // Its connection has gone: down until the next one.
                Some(e) => s.route = Route::Down(e),
            }
        }
        match (&s.route, self.while_down) {
            (Route::Gone(e), _) => {
                let e = e.clone();
                drop(s);
                call.fail(e);
            }
            (Route::Down(e), WhileDown::FailFast) => {
                let e = e.clone();
                drop(s);
                call.fail(down_error(e));
            }
            _ if call.marker.is_some() => {
                // A disembargo's marker dropped here is reflected by its
                // connection at once: nothing of its path is queued here.
                drop(s);
                drop(call);
            }
            _ => {
                s.queue.retain(|c| !c.completer.is_cancelled());
                s.queue.push_back(call);
            }
        }
    }

    fn broken_error(&self) -> Option<capnp::Error> {
        match &self.lock().route {
            Route::Gone(e) => Some(e.clone()),
            _ => None,
        }
    }

    fn on_broken(&self, watcher: BrokenWatcher) {
        let mut s = self.lock();
        match &s.route {
            Route::Gone(e) => {
                let e = e.clone();
                drop(s);
                watcher(e);
            }
            _ => s.watchers.push(watcher),
        }
    }

    fn when_resolved(&self) -> BoxFuture<'static, Result<(), capnp::Error>> {
        let mut s = self.lock();
        match &s.route {
            Route::Up(_) => futures::future::ready(Ok(())).boxed(),
            Route::Gone(e) => futures::future::ready(Err(e.clone())).boxed(),
            Route::Down(_) => {
                let (tx, rx) = oneshot::channel();
                s.waiters.push(tx);
                drop(s);
                rx.map(|told| told.unwrap_or_else(|_| Err(error::lost_call())))
                    .boxed()
            }
        }
    }
}

/// A call made while down, in the fail-fast mode: Disconnected, saying why.
fn down_error(why: capnp::Error) -> capnp::Error {
    if why.kind == capnp::ErrorKind::Disconnected {
        why
    } else {
        capnp::Error::disconnected(why.extra)
    }
}
