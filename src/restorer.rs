//! Restorers: from a service ID to the capability it names.
//!
//! A peer that holds a sturdy ref connects to the vat and sends
//! `Bootstrap` with the ref's service ID; the vat asks its [`Restorer`]
//! which capability that is. Service IDs are bearer secrets ("Swiss
//! numbers"), so every lookup here keys on [`digest`]`(id)` (SHA-256),
//! never on the ID itself: how long a lookup takes tells nothing about the
//! secret, and a stolen store of saved services does not reveal the IDs.
//!
//! - [`Single`] serves one capability under one ID.
//! - [`Table`] serves many: services added by the application, and
//!   optionally services a [`Loader`] brings back from storage on demand
//!   (and keeps cached while someone uses them).
//!
//! An unknown ID is an ordinary failure of the bootstrap
//! ([`unknown_service`]), never a reason to abort the connection.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures::channel::oneshot;
use futures::future::{self, BoxFuture, FutureExt};
use sha2::{Digest as _, Sha256};

use crate::{CapRef, SturdyUri, WeakCapRef};

/// What restoring gives: the capability, or why there is none.
type Restored = Result<CapRef, capnp::Error>;

/// Finds the capability a service ID names (what a peer's bootstrap with
/// that ID gets).
pub trait Restorer: Send + Sync + 'static {
    /// The capability `id` names. The future may take time (a service
    /// loaded from storage); an unknown ID gives [`unknown_service`].
    fn restore(&self, id: &[u8]) -> BoxFuture<'static, Result<CapRef, capnp::Error>>;
}

impl<R: Restorer + ?Sized> Restorer for Arc<R> {
    fn restore(&self, id: &[u8]) -> BoxFuture<'static, Result<CapRef, capnp::Error>> {
        (**self).restore(id)
    }
}

/// The digest every lookup keys on: SHA-256 of the service ID, raw bytes.
pub fn digest(id: &[u8]) -> [u8; 32] {
    Sha256::digest(id).into()
}

/// The error for a service ID that names nothing: `Failed`, "Unknown
/// persistent service ID" (the text the reference vats use).
pub fn unknown_service() -> capnp::Error {
    capnp::Error::failed("Unknown persistent service ID".into())
}

/// Compares two digests in time that does not depend on where they differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One service under one ID: the restorer of a vat that offers a single
/// service.
pub struct Single {
    digest: [u8; 32],
    cap: CapRef,
}

impl Single {
    /// Serves `cap` to peers that present `id`, and nothing to the others.
    pub fn new(id: &[u8], cap: CapRef) -> Self {
        Single {
            digest: digest(id),
            cap,
        }
    }
}

impl fmt::Debug for Single {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Single").field("cap", &self.cap).finish()
    }
}

impl Restorer for Single {
    fn restore(&self, id: &[u8]) -> BoxFuture<'static, Result<CapRef, capnp::Error>> {
        let restored = if same_digest(&digest(id), &self.digest) {
            Ok(self.cap.clone())
        } else {
            Err(unknown_service())
        };
        future::ready(restored).boxed()
    }
}

/// Something that can bring back a saved service from its digest (from a
/// [`FileStore`](crate::store::FileStore), say).
pub trait Loader: Send + Sync + 'static {
    /// Loads the service saved under `digest` (SHA-256 of its ID). `uri` is
    /// the service's own sturdy ref, made by the table's `make_uri` from the
    /// ID, so that the service can answer `Persistent.save`. A service that
    /// is not saved gives [`unknown_service`].
    fn load(
        &self,
        uri: SturdyUri,
        digest: [u8; 32],
    ) -> BoxFuture<'static, Result<CapRef, capnp::Error>>;
}

impl<F> Loader for F
where
    F: Fn(SturdyUri, [u8; 32]) -> BoxFuture<'static, Result<CapRef, capnp::Error>>
        + Send
        + Sync
        + 'static,
{
    fn load(
        &self,
        uri: SturdyUri,
        digest: [u8; 32],
    ) -> BoxFuture<'static, Result<CapRef, capnp::Error>> {
        self(uri, digest)
    }
}

/// A table of services by digest, optionally backed by a [`Loader`].
///
/// Services [added](Table::add) by the application stay until
/// [removed](Table::remove). Services the loader brings back are cached
/// while in use: as long as any handle to one lives, restoring its ID gives
/// that same capability; once every handle is gone the next restore loads
/// it again. Restores of an ID whose load is under way wait for that one
/// load. A failed load is not cached. A load runs to its end even if
/// everyone waiting for it goes away (it is spawned on the current actix
/// arbiter; outside any arbiter, the first restore drives it).
///
/// `Table` is a cheap handle: clones share one table.
#[derive(Clone)]
pub struct Table {
    inner: Arc<Inner>,
}

type MakeUri = dyn Fn(&[u8]) -> SturdyUri + Send + Sync;

struct Inner {
    make_uri: Box<MakeUri>,
    loader: Option<Box<dyn Loader>>,
    state: Mutex<State>,
}

enum Entry {
    /// Added by the application; held until removed.
    Added(CapRef),
    /// Being loaded by load number `n`; restores meanwhile wait for it.
    Loading(u64),
    /// Loaded; kept only while someone else holds it.
    Loaded(WeakCapRef),
}

/// Below this many entries, dead cache entries are swept only when met.
const MIN_SWEEP: usize = 64;

struct State {
    entries: HashMap<[u8; 32], Entry>,
    /// Who waits for each load under way, by load number. Kept apart from
    /// `entries` so that a load whose entry was removed (or the table
    /// cleared) still answers those who asked.
    waiters: HashMap<u64, Vec<oneshot::Sender<Restored>>>,
    next_load: u64,
    /// Sweep dead cache entries when `entries` grows to this size, so that
    /// the map stays proportional to what is alive (amortised O(1)).
    sweep_at: usize,
}

impl State {
    fn sweep_if_due(&mut self) {
        if self.entries.len() < self.sweep_at {
            return;
        }
        self.entries.retain(|_, entry| match entry {
            Entry::Loaded(weak) => weak.upgrade().is_some(),
            _ => true,
        });
        self.sweep_at = (self.entries.len() * 2).max(MIN_SWEEP);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single insert or remove, so a panic elsewhere
        // cannot leave the state half-changed: ignore poisoning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("len", &self.len())
            .field("loader", &self.inner.loader.is_some())
            .finish()
    }
}

impl Table {
    /// An empty table without a loader. `make_uri` gives the sturdy ref of
    /// a service ID (see [`Table::sturdy_ref`]).
    pub fn new(make_uri: impl Fn(&[u8]) -> SturdyUri + Send + Sync + 'static) -> Self {
        Self::build(Box::new(make_uri), None)
    }

    /// An empty table that asks `loader` for services it does not hold.
    pub fn with_loader(
        make_uri: impl Fn(&[u8]) -> SturdyUri + Send + Sync + 'static,
        loader: impl Loader,
    ) -> Self {
        Self::build(Box::new(make_uri), Some(Box::new(loader)))
    }

    fn build(make_uri: Box<MakeUri>, loader: Option<Box<dyn Loader>>) -> Self {
        Table {
            inner: Arc::new(Inner {
                make_uri,
                loader,
                state: Mutex::new(State {
                    entries: HashMap::new(),
                    waiters: HashMap::new(),
                    next_load: 0,
                    sweep_at: MIN_SWEEP,
                }),
            }),
        }
    }

    /// Serves `cap` under `id` until [`remove`](Table::remove)d (the table
    /// holds it). Replaces whatever the table had under `id`; a load of
    /// `id` under way still answers its waiters but is not cached.
    pub fn add(&self, id: &[u8], cap: CapRef) {
        let old = {
            let mut state = self.inner.lock();
            state.sweep_if_due();
            state.entries.insert(digest(id), Entry::Added(cap))
        };
        drop(old); // after unlocking: releasing a capability runs its hooks
    }

    /// Stops serving `id`. Holders of the capability keep it. With a
    /// loader, the next restore of `id` asks the loader again (delete the
    /// saved service too to make the ID unknown).
    pub fn remove(&self, id: &[u8]) {
        let old = self.inner.lock().entries.remove(&digest(id));
        drop(old);
    }

    /// The sturdy ref of `id`, as `make_uri` makes it.
    pub fn sturdy_ref(&self, id: &[u8]) -> SturdyUri {
        (self.inner.make_uri)(id)
    }

    /// Forgets every entry: added services and the cache of loaded ones.
    /// Capabilities already handed out keep working; loads under way still
    /// answer their waiters.
    pub fn clear(&self) {
        let old = std::mem::take(&mut self.inner.lock().entries);
        drop(old);
    }

    /// How many services the table serves now: added ones, loads under
    /// way, and loaded ones still in use.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .entries
            .values()
            .filter(|entry| match entry {
                Entry::Loaded(weak) => weak.upgrade().is_some(),
                _ => true,
            })
            .count()
    }

    /// True when [`len`](Table::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts load number `n` of `id` (whose entry says `Loading(n)`) and
    /// returns what the first waiter awaits.
    fn start_load(
        &self,
        loader: &dyn Loader,
        id: &[u8],
        key: [u8; 32],
        n: u64,
        first: oneshot::Receiver<Restored>,
    ) -> BoxFuture<'static, Restored> {
        let guard = LoadGuard {
            table: Arc::downgrade(&self.inner),
            key,
            n,
            done: false,
        };
        let load = loader.load(self.sturdy_ref(id), key);
        let task = async move {
            let mut guard = guard;
            let restored = load.await;
            guard.finish(restored);
        };
        let waiter = wait_for(first);
        match actix_rt::Arbiter::try_current() {
            Some(arbiter) => {
                // A refused spawn (the arbiter is stopping) drops the task,
                // whose guard then tells the waiters the load was abandoned.
                arbiter.spawn(task);
                waiter
            }
            None => async move {
                task.await;
                waiter.await
            }
            .boxed(),
        }
    }
}

/// The answer to one waiter of a load.
fn wait_for(rx: oneshot::Receiver<Restored>) -> BoxFuture<'static, Restored> {
    rx.map(|r| {
        r.unwrap_or_else(|_| {
            Err(capnp::Error::failed(
                "loading the persistent service was abandoned".into(),
            ))
        })
    })
    .boxed()
}

/// Settles one load in the table: caches its result (if its entry is still
/// there) and answers its waiters. Dropped unfinished (the load future was
/// dropped: runtime shutdown), it clears the entry so the next restore
/// tries again.
struct LoadGuard {
    table: Weak<Inner>,
    key: [u8; 32],
    n: u64,
    done: bool,
}

impl LoadGuard {
    fn finish(&mut self, restored: Restored) {
        self.done = true;
        let waiters = self.settle(Some(&restored));
        for w in waiters {
            // A waiter that went away gives the value back; drop it.
            let _ = w.send(restored.clone());
        }
    }

    /// Updates the entry and takes the waiters, under the lock.
    fn settle(&self, restored: Option<&Restored>) -> Vec<oneshot::Sender<Restored>> {
        let Some(inner) = self.table.upgrade() else {
            return Vec::new();
        };
        let mut state = inner.lock();
        if matches!(state.entries.get(&self.key), Some(Entry::Loading(n)) if *n == self.n) {
            match restored {
                Some(Ok(cap)) => {
                    state
                        .entries
                        .insert(self.key, Entry::Loaded(cap.downgrade()));
                }
                _ => {
                    state.entries.remove(&self.key);
                }
            }
        }
        state.waiters.remove(&self.n).unwrap_or_default()
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        if !self.done {
            // Dropping the senders tells the waiters the load was abandoned.
            drop(self.settle(None));
        }
    }
}

impl Restorer for Table {
    fn restore(&self, id: &[u8]) -> BoxFuture<'static, Result<CapRef, capnp::Error>> {
        let key = digest(id);
        let (tx, rx) = oneshot::channel();
        let n = {
            let mut state = self.inner.lock();
            state.sweep_if_due();
            match state.entries.get(&key) {
                Some(Entry::Added(cap)) => return future::ready(Ok(cap.clone())).boxed(),
                Some(Entry::Loaded(weak)) => {
                    if let Some(cap) = weak.upgrade() {
                        return future::ready(Ok(cap)).boxed();
                    }
                    // Released since: load it again, below.
                }
                Some(Entry::Loading(n)) => {
                    let n = *n;
                    state.waiters.entry(n).or_default().push(tx);
                    return wait_for(rx);
                }
                None => {}
            }
            if self.inner.loader.is_none() {
                state.entries.remove(&key);
                return future::ready(Err(unknown_service())).boxed();
            }
            let n = state.next_load;
            state.next_load += 1;
            state.entries.insert(key, Entry::Loading(n));
            state.waiters.insert(n, vec![tx]);
            n
        };
        // Outside the lock: the loader is user code and may use the table.
        match &self.inner.loader {
            Some(loader) => self.start_load(loader.as_ref(), id, key, n, rx),
            None => future::ready(Err(unknown_service())).boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::VatAuth;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn uri(id: &[u8]) -> SturdyUri {
        SturdyUri {
            auth: VatAuth::Insecure,
            address: Address::Unix("/tmp/restorer-test.socket".into()),
            service_id: id.to_vec(),
        }
    }

    /// A loader of placeholder capabilities (no actix system needed), each
    /// load waiting for `gate` if one is set.
    fn loader(
        loads: Arc<AtomicUsize>,
        gate: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
    ) -> impl Loader {
        move |_: SturdyUri, _: [u8; 32]| -> BoxFuture<'static, Restored> {
            loads.fetch_add(1, Ordering::SeqCst);
            let gate = gate.lock().ok().and_then(|mut g| g.take());
            async move {
                if let Some(g) = gate {
                    let _ = g.await;
                }
                Ok(CapRef::broken(capnp::Error::failed("placeholder".into())))
            }
            .boxed()
        }
    }

    #[test]
    fn released_cache_entries_are_swept() {
        let loads = Arc::new(AtomicUsize::new(0));
        let table = Table::with_loader(uri, loader(loads.clone(), Default::default()));
        futures::executor::block_on(async {
            for i in 0..1000u32 {
                drop(table.restore(&i.to_be_bytes()).await);
            }
        });
        assert_eq!(loads.load(Ordering::SeqCst), 1000);
        let state = table.inner.lock();
        assert!(state.entries.len() <= MIN_SWEEP, "{}", state.entries.len());
        assert!(state.waiters.is_empty());
    }

    #[test]
    fn outside_an_arbiter_the_first_waiter_drives_the_one_load() {
        let loads = Arc::new(AtomicUsize::new(0));
        let table = Table::with_loader(uri, loader(loads.clone(), Default::default()));
        let (a, b) = futures::executor::block_on(async {
            futures::join!(table.restore(b"svc"), table.restore(b"svc"))
        });
        let (a, b) = (a.ok(), b.ok());
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_abandoned_load_is_not_cached_and_tells_its_waiters() {
        let loads = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Mutex::new(None));
        let table = Table::with_loader(uri, loader(loads.clone(), gate.clone()));
        let (_open, rx) = oneshot::channel::<()>();
        if let Ok(mut g) = gate.lock() {
            *g = Some(rx);
        }
        // Outside an arbiter the first waiter drives the load; dropping it
        // abandons the load.
        let first = table.restore(b"svc");
        let second = table.restore(b"svc");
        drop(first);
        let err = futures::executor::block_on(second).err();
        assert!(
            err.is_some_and(|e| e.to_string().contains("abandoned")),
            "the second waiter hears of it"
        );
        assert!(table.is_empty());
        assert!(futures::executor::block_on(table.restore(b"svc")).is_ok());
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn single_compares_whole_digests() {
        let a = digest(b"a");
        let mut b = a;
        assert!(same_digest(&a, &b));
        b[31] ^= 1;
        assert!(!same_digest(&a, &b));
    }
}
