//! Spreading work over several arbiters: a vat's connections, and the
//! instances of services that keep one instance per arbiter.
//!
//! An actix arbiter is one thread with its own event loop; every actor
//! lives on one. [`Arbiters`] starts a fixed number of them and places each
//! new connection on the one serving the fewest (its socket is taken off
//! the reactor of the thread that accepted it and registered with the
//! arbiter's own; see
//! [`start_connection_on`](crate::connection::start_connection_on)).
//! Capability handles are `Send + Sync`, so a call made on any arbiter
//! reaches its capability's actor through the actor's mailbox, wherever
//! that lives, and E-order holds as on one thread: mailbox order is the
//! order calls were sent.
//!
//! A stateless service can avoid that crossing with one instance per
//! arbiter ([`Cap::per_arbiter`](crate::Cap::per_arbiter)): a call goes to
//! the instance on the arbiter that makes it (for threads that are not one
//! of the pool's arbiters, to an instance chosen once per thread), so
//! calls from one caller still reach one instance in order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Arbiter, ArbiterHandle};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::{
    start_connection, start_connection_on, ConnectionHandle, ConnectionOptions,
};
use crate::slot;

/// A fixed set of arbiters, each with a count of the connections it
/// serves. `Send + Sync`; dropping it stops the arbiters.
pub struct Arbiters {
    workers: Vec<Worker>,
    /// Where ties between equally loaded arbiters start.
    next: AtomicUsize,
}

struct Worker {
    arbiter: Mutex<Option<Arbiter>>,
    /// `None`: the thread that made the pool, which needs not be an
    /// actix arbiter (a `LocalSet` is enough).
    handle: Option<ArbiterHandle>,
    /// Connections placed here that have not finished writing.
    load: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Arbiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arbiters")
            .field("count", &self.workers.len())
            .field("loads", &self.loads())
            .finish()
    }
}

impl Arbiters {
    /// Starts `count` arbiters (at least one). Must be called inside an
    /// actix system: the arbiters belong to it.
    pub fn start(count: usize) -> Self {
        let workers = (0..count.max(1))
            .map(|index| {
                let arbiter = Arbiter::new();
                let handle = arbiter.handle();
                handle.spawn_fn(move || slot::set(index));
                Worker {
                    arbiter: Mutex::new(Some(arbiter)),
                    handle: Some(handle),
                    load: Arc::new(AtomicUsize::new(0)),
                }
            })
            .collect();
        Arbiters {
            workers,
            next: AtomicUsize::new(0),
        }
    }

    /// One arbiter: the current thread (not owned: [`Arbiters::stop`]
    /// leaves it running). Connections and instances are started on the
    /// thread that asks, which must be this one.
    pub fn current() -> Self {
        Arbiters {
            workers: vec![Worker {
                arbiter: Mutex::new(None),
                handle: None,
                load: Arc::new(AtomicUsize::new(0)),
            }],
            next: AtomicUsize::new(0),
        }
    }

    /// `count` arbiters of their own ([`Arbiters::start`]), or for 1 the
    /// current one ([`Arbiters::current`]).
    pub fn current_or_start(count: usize) -> Self {
        if count <= 1 {
            Self::current()
        } else {
            Self::start(count)
        }
    }

    /// True if the arbiters are threads of the pool's own (made by
    /// [`Arbiters::start`]), which [`Arbiters::stop`] stops.
    pub fn owns_threads(&self) -> bool {
        self.workers.iter().any(|w| w.handle.is_some())
    }

    /// How many arbiters there are.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Never true: there is at least one arbiter.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The arbiters' handles, in index order; `None` stands for the
    /// current thread (see [`Arbiters::current`]).
    pub fn handles(&self) -> impl Iterator<Item = Option<&ArbiterHandle>> {
        self.workers.iter().map(|w| w.handle.as_ref())
    }

    /// How many connections each arbiter serves now.
    pub fn loads(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.load.load(Ordering::Relaxed))
            .collect()
    }

    /// Starts a connection on the arbiter serving the fewest, for the
    /// stream `open` gives on that arbiter (see
    /// [`start_connection_on`]). The connection counts against the
    /// arbiter until it has finished writing. Also gives the arbiter's
    /// index.
    pub fn start_connection<S, F>(
        &self,
        open: F,
        mut options: ConnectionOptions,
    ) -> (ConnectionHandle, usize)
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
        F: FnOnce() -> std::io::Result<S> + Send + 'static,
    {
        let index = self.least_loaded();
        let worker = &self.workers[index];
        worker.load.fetch_add(1, Ordering::Relaxed);
        options.held_until_finished = Some(Arc::new(Placed(worker.load.clone())));
        let conn = match &worker.handle {
            Some(arbiter) => start_connection_on(arbiter, open, options),
            None => start_connection_on_this_thread(open, options),
        };
        (conn, index)
    }

    fn least_loaded(&self) -> usize {
        let n = self.workers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|i| (start + i) % n)
            .min_by_key(|&i| self.workers[i].load.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Waits until no arbiter serves a connection any more, or `limit`
    /// has passed; true if they all finished.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.loads().iter().all(|&l| l == 0) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops every arbiter: what still runs on them (connections,
    /// capability actors) ends with its thread.
    pub fn stop(&self) {
        for w in &self.workers {
            let arbiter = w.arbiter.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(arbiter) = arbiter {
                arbiter.stop();
            }
        }
    }
}

/// [`start_connection_on`] for the current thread.
fn start_connection_on_this_thread<S, F>(open: F, options: ConnectionOptions) -> ConnectionHandle
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    F: FnOnce() -> std::io::Result<S>,
{
    match open() {
        Ok(stream) => start_connection(stream, options),
        Err(e) => {
            tracing::warn!("a connection could not be served: {e}");
            // A stream that ends at once: the connection closes as on EOF.
            start_connection(tokio::io::duplex(1).0, options)
        }
    }
}

/// A connection's place on an arbiter, given back when it is dropped.
struct Placed(Arc<AtomicUsize>);

impl Drop for Placed {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Arbiters {
    fn drop(&mut self) {
        self.stop();
    }
}
