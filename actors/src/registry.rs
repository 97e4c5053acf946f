//! The debug report of live capabilities and actors.
//!
//! Every capability node and every runtime actor registers here, scoped by
//! the actix `System` it was created in, so that tests running side by side
//! in one process each see only their own.
//!
//! A leaf: it knows nothing of what it counts. A capability registers a
//! weak pointer to its node (only its strong count is read) and the name
//! of its kind.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::Duration;

/// One live capability in a debug report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCap {
    /// The capability's identifier (unique within the process).
    pub id: u64,
    /// What the capability is: `local`, `promise`, `pipelined`, `broken` or `foreign`.
    pub kind: &'static str,
    /// How many handles (clients, hooks, cap-table entries) refer to it.
    pub refs: usize,
}

impl fmt::Display for LiveCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cap#{} {} refs={}", self.id, self.kind, self.refs)
    }
}

/// A snapshot of what is alive in one actix system.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Capabilities still referenced, by id.
    pub caps: Vec<LiveCap>,
    /// Runtime actors (capability, promise, answer and proxy actors) still running.
    pub actors: usize,
}

impl Report {
    /// True when no capability is referenced and no runtime actor runs.
    pub fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.actors == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} live capabilities, {} runtime actors",
            self.caps.len(),
            self.actors
        )?;
        for c in &self.caps {
            writeln!(f, "  {c}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Scope {
    caps: HashMap<u64, Registered>,
    actors: usize,
}

static SCOPES: Mutex<Option<HashMap<usize, Scope>>> = Mutex::new(None);

fn scopes() -> MutexGuard<'static, Option<HashMap<usize, Scope>>> {
    // A panic while holding this lock cannot leave the maps inconsistent
    // (every update is a single insert or remove), so poisoning is ignored.
    SCOPES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The scope of the calling thread: its actix system, or 0 outside any.
pub(crate) fn current_scope() -> usize {
    actix::System::try_current()
        .map(|s| s.id() + 1)
        .unwrap_or(0)
}

fn with_scope<R>(scope: usize, f: impl FnOnce(&mut Scope) -> R) -> R {
    let mut g = scopes();
    let map = g.get_or_insert_with(HashMap::new);
    let entry = map.entry(scope).or_default();
    let r = f(entry);
    // A system whose last capability and actor are gone leaves nothing
    // behind (a process may start many systems: tests, fuzzing).
    if entry.caps.is_empty() && entry.actors == 0 {
        map.remove(&scope);
    }
    r
}

/// A capability node as the registry sees it.
struct Registered {
    /// Counts the node's handles; never upgraded.
    node: Weak<dyn Send + Sync>,
    /// What kind of capability it is (see [`LiveCap::kind`]).
    kind: &'static str,
}

/// Counts capability `id` of `kind` (its node is `node`) as live in `scope`.
pub(crate) fn add_cap(scope: usize, id: u64, node: Weak<dyn Send + Sync>, kind: &'static str) {
    with_scope(scope, |s| s.caps.insert(id, Registered { node, kind }));
}

/// Stops counting capability `id` (its node is being dropped).
pub(crate) fn remove_cap(scope: usize, id: u64) {
    with_scope(scope, |s| s.caps.remove(&id));
}

/// Counts a runtime actor from its construction until it is dropped. Keep
/// it as the actor's last field, so that the count drops only after
/// everything the actor owned (a service and its release hook) is gone.
pub(crate) struct ActorGuard {
    scope: usize,
}

impl ActorGuard {
    pub(crate) fn new() -> Self {
        let scope = current_scope();
        with_scope(scope, |s| s.actors += 1);
        ActorGuard { scope }
    }
}

impl Default for ActorGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ActorGuard {
    fn drop(&mut self) {
        with_scope(self.scope, |s| s.actors = s.actors.saturating_sub(1));
    }
}

/// What is alive in the calling thread's actix system right now.
pub fn report() -> Report {
    let scope = current_scope();
    with_scope(scope, |s| {
        let mut caps: Vec<LiveCap> = s
            .caps
            .iter()
            .filter_map(|(&id, r)| {
                let refs = r.node.strong_count();
                (refs > 0).then_some(LiveCap {
                    id,
                    kind: r.kind,
                    refs,
                })
            })
            .collect();
        caps.sort_by_key(|c| c.id);
        Report {
            caps,
            actors: s.actors,
        }
    })
}

/// Waits (up to `timeout`) until no capability is referenced and no runtime
/// actor runs in the calling thread's actix system, and returns what is
/// still alive if that does not happen. Release is asynchronous (a released
/// capability's actor stops on its own thread), hence the wait.
pub async fn wait_all_released(timeout: Duration) -> Result<(), Report> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let r = report();
        if r.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(r);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Test helper: panics with the report unless everything is released
/// within two seconds.
pub async fn assert_all_released() {
    if let Err(r) = wait_all_released(Duration::from_secs(2)).await {
        panic!("capabilities or actors still alive:\n{r}");
    }
}
