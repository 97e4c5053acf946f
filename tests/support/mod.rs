//! Test services: a `Probe` that records the calls it gets, and a `Maker`
//! and a `Held` whose answers the test controls.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use capnp_actix::schemas::test_api_capnp::{maker, probe};
use capnp_actix::{Cap, CapRef, Resolver};
use futures::channel::oneshot;

/// What probes observed, shared with the test.
#[derive(Clone, Default)]
pub struct Log {
    /// `seq` of each call, in the order the method bodies started.
    pub calls: Arc<Mutex<Vec<u64>>>,
    /// How many probes were released (their `Drop` ran).
    pub released: Arc<AtomicUsize>,
}

impl Log {
    pub fn calls(&self) -> Vec<u64> {
        self.calls.lock().unwrap().clone()
    }
    pub fn released(&self) -> usize {
        self.released.load(Ordering::SeqCst)
    }
}

/// Records each call. `seq == PANIC` panics; a `seq` in `gates` waits for
/// the gate to open before replying.
pub struct Probe {
    pub log: Log,
    pub gates: RefCell<Vec<(u64, oneshot::Receiver<()>)>>,
}

pub const PANIC: u64 = u64::MAX - 13;

impl Probe {
    pub fn new(log: &Log) -> Self {
        Probe {
            log: log.clone(),
            gates: RefCell::new(Vec::new()),
        }
    }
    pub fn cap(log: &Log) -> Cap<probe::Client> {
        Cap::new(Probe::new(log))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.log.released.fetch_add(1, Ordering::SeqCst);
    }
}

impl probe::Server for Probe {
    async fn call(
        self: Rc<Self>,
        params: probe::CallParams,
        mut results: probe::CallResults,
    ) -> Result<(), capnp::Error> {
        let seq = params.get()?.get_seq();
        self.log.calls.lock().unwrap().push(seq);
        if seq == PANIC {
            panic!("probe told to panic");
        }
        let gate = {
            let mut gates = self.gates.borrow_mut();
            gates
                .iter()
                .position(|(s, _)| *s == seq)
                .map(|i| gates.remove(i).1)
        };
        if let Some(g) = gate {
            let _ = g.await;
        }
        results.get().set_seq(seq);
        Ok(())
    }
}

pub async fn call(p: &probe::Client, seq: u64) -> Result<u64, capnp::Error> {
    let mut req = p.call_request();
    req.get().set_seq(seq);
    Ok(req.send().promise.await?.get()?.get_seq())
}

/// Two probes, as `pair` returns them.
pub type ProbePair = (Cap<probe::Client>, Cap<probe::Client>);

/// Answers `pair` with what the test sends through the channel it gets
/// from `next_pair`; `hold` returns its argument.
#[derive(Default)]
pub struct Maker {
    pub pairs: RefCell<Vec<oneshot::Receiver<ProbePair>>>,
    /// Set when a `pair` body finishes (not cancelled).
    pub finished: Arc<AtomicUsize>,
    /// Set when a `pair` body is dropped before finishing.
    pub dropped: Arc<AtomicUsize>,
    /// Call `set_pipeline` before waiting.
    pub early: Option<ProbePair>,
}

struct DropFlag(Arc<AtomicUsize>, bool);
impl Drop for DropFlag {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl maker::Server for Maker {
    async fn pair(
        self: Rc<Self>,
        _: maker::PairParams,
        mut results: maker::PairResults,
    ) -> Result<(), capnp::Error> {
        let mut flag = DropFlag(self.dropped.clone(), false);
        if let Some((a, b)) = &self.early {
            let mut p = results.get().init_pair();
            p.set_first(a.client());
            p.set_second(b.client());
            results.set_pipeline()?;
        }
        let rx = self.pairs.borrow_mut().pop();
        let (a, b) = match rx {
            Some(rx) => rx
                .await
                .map_err(|_| capnp::Error::failed("no pair sent".into()))?,
            None => return Err(capnp::Error::failed("no pair expected".into())),
        };
        if self.early.is_none() {
            // (Re-initialising a struct that holds capabilities panics in
            // capnp 0.27, so early results stay as they are.)
            let mut p = results.get().init_pair();
            p.set_first(a.client());
            p.set_second(b.client());
        }
        flag.1 = true;
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn hold(
        self: Rc<Self>,
        params: maker::HoldParams,
        mut results: maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?.get_probe()?;
        results.get().set_probe(p);
        Ok(())
    }
}

/// `hold(x)`: x is really a maker; tail-call `x.hold(own probe)`
/// (`results.hook.tail_call`), so `hold`'s answer is the tail call's.
pub struct TailCaller {
    pub own: Cap<probe::Client>,
}

impl maker::Server for TailCaller {
    async fn hold(
        self: Rc<Self>,
        params: maker::HoldParams,
        results: maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        let given: Cap<probe::Client> = Cap::from_client(&params.get()?.get_probe()?);
        let theirs = given.cast::<maker::Client>().client();
        let mut req = theirs.hold_request();
        req.get().set_probe(self.own.client());
        results.hook.tail_call(req.hook).await
    }
}

/// A maker with one pending `pair`, and the sender that answers it.
pub fn maker_with_pair() -> (Maker, oneshot::Sender<ProbePair>) {
    let (tx, rx) = oneshot::channel();
    let m = Maker::default();
    m.pairs.borrow_mut().push(rx);
    (m, tx)
}

/// Runs a vat of the capnp-rpc crate on a thread of its own (a tokio
/// current-thread runtime and `LocalSet`) over `stream`, on `side`,
/// offering what `bootstrap` makes; `body` gets its `RpcSystem`.
fn their_vat<B, F, Fut, T>(
    stream: std::os::unix::net::UnixStream,
    side: capnp_rpc::rpc_twoparty_capnp::Side,
    bootstrap: B,
    body: F,
) -> std::thread::JoinHandle<T>
where
    B: FnOnce() -> Option<capnp::capability::Client> + Send + 'static,
    F: FnOnce(capnp_rpc::RpcSystem<capnp_rpc::rpc_twoparty_capnp::Side>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    use futures::AsyncReadExt;
    use tokio_util::compat::TokioAsyncReadCompatExt;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, async move {
            stream.set_nonblocking(true).unwrap();
            let stream = tokio::net::UnixStream::from_std(stream).unwrap();
            let (r, w) = stream.compat().split();
            let network = capnp_rpc::twoparty::VatNetwork::new(r, w, side, Default::default());
            body(capnp_rpc::RpcSystem::new(Box::new(network), bootstrap())).await
        })
    })
}

/// Runs `body` on a thread of its own as a client of the capnp-rpc crate
/// over `stream`, with the peer's bootstrap capability. [`join`] waits
/// for its result.
pub fn their_client<C, F, Fut, T>(
    stream: std::os::unix::net::UnixStream,
    body: F,
) -> std::thread::JoinHandle<T>
where
    C: capnp::capability::FromClientHook + 'static,
    F: FnOnce(C) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    use capnp_rpc::rpc_twoparty_capnp::Side;
    their_vat(
        stream,
        Side::Client,
        || None,
        move |mut rpc| async move {
            let bootstrap: C = rpc.bootstrap(Side::Server);
            tokio::task::spawn_local(rpc);
            body(bootstrap).await
        },
    )
}

/// Serves what `bootstrap` makes with the capnp-rpc crate over `stream`,
/// on a thread of its own, until the connection ends.
pub fn their_server<B>(
    stream: std::os::unix::net::UnixStream,
    bootstrap: B,
) -> std::thread::JoinHandle<()>
where
    B: FnOnce() -> capnp::capability::Client + Send + 'static,
{
    use capnp_rpc::rpc_twoparty_capnp::Side;
    their_vat(
        stream,
        Side::Server,
        move || Some(bootstrap()),
        |rpc| async move {
            let _ = rpc.await;
        },
    )
}

/// Waits for a thread without blocking the actix system it is called
/// from; a panic on the thread is raised here.
pub async fn join<T>(thread: std::thread::JoinHandle<T>) -> T {
    while !thread.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    thread
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// A call on `p` with `seq`, started now; its outcome comes later.
pub fn start_call(
    p: &probe::Client,
    seq: u64,
) -> tokio::task::JoinHandle<Result<u64, capnp::Error>> {
    let mut req = p.call_request();
    req.get().set_seq(seq);
    let promise = req.send().promise;
    tokio::task::spawn_local(async move { Ok(promise.await?.get()?.get_seq()) })
}

/// The server's maker: `hold(probe)` answers at once with a local
/// promise, which the test resolves (to the probe given, or to anything
/// else) with [`Held::resolve`].
#[derive(Clone, Default)]
pub struct Held(Rc<RefCell<Vec<(Resolver, CapRef)>>>);

impl Held {
    /// Resolves the oldest held promise to the probe it was given.
    pub fn resolve(&self) {
        let (resolver, given) = self.0.borrow_mut().remove(0);
        resolver.resolve_to(given);
    }
    /// Breaks the oldest held promise.
    pub fn break_it(&self, reason: &str) {
        let (resolver, _) = self.0.borrow_mut().remove(0);
        resolver.reject(capnp::Error::failed(reason.into()));
    }
    /// A new held promise, which [`Held::resolve`] resolves to `to`.
    pub fn promise_for(&self, to: CapRef) -> probe::Client {
        let (promise, resolver) = Cap::<probe::Client>::promise();
        self.0.borrow_mut().push((resolver, to));
        promise.client()
    }
}

impl maker::Server for Held {
    async fn hold(
        self: Rc<Self>,
        params: maker::HoldParams,
        mut results: maker::HoldResults,
    ) -> Result<(), capnp::Error> {
        let given: Cap<probe::Client> = Cap::from_client(&params.get()?.get_probe()?);
        results
            .get()
            .set_probe(self.promise_for(given.raw().clone()));
        Ok(())
    }
}
