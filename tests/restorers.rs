//! SCENARIOS 59 (table restorer) and 60 (loader table), on local
//! capabilities.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use capnp_actix::address::Address;
use capnp_actix::restorer::{digest, unknown_service, Loader, Restorer, Single, Table};
use capnp_actix::schemas::test_api_capnp::probe;
use capnp_actix::{Cap, CapRef, SturdyUri, VatAuth};
use futures::channel::oneshot;
use futures::future::{BoxFuture, FutureExt};
use support::{call, Log, Probe};

fn make_uri(id: &[u8]) -> SturdyUri {
    SturdyUri {
        auth: VatAuth::Insecure,
        address: Address::Tcp {
            host: "127.0.0.1".into(),
            port: 7000,
        },
        service_id: id.to_vec(),
    }
}

fn probe_ref(log: &Log) -> CapRef {
    Probe::cap(log).into()
}

/// Calls the probe behind `cap` with `seq` and returns the echoed `seq`.
async fn call_raw(cap: &CapRef, seq: u64) -> Result<u64, capnp::Error> {
    call(&Cap::<probe::Client>::from_raw(cap.clone()).client(), seq).await
}

fn err_text(r: Result<CapRef, capnp::Error>) -> String {
    match r {
        Ok(cap) => panic!("expected an error, got {cap:?}"),
        Err(e) => e.to_string(),
    }
}

/// Lets spawned tasks and actors run.
async fn yield_a_while() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    actix_rt::time::sleep(Duration::from_millis(5)).await;
}

#[actix_rt::test]
async fn scenario_59_table_restoring_twice_gives_the_same_capability() {
    let log = Log::default();
    {
        let table = Table::new(make_uri);
        let cap = probe_ref(&log);
        table.add(b"main", cap.clone());
        let a = table.restore(b"main").await.unwrap();
        let b = table.restore(b"main").await.unwrap();
        assert_eq!(a, cap);
        assert_eq!(b, cap);
        assert_eq!(call_raw(&a, 1).await.unwrap(), 1);
        assert_eq!(table.len(), 1);
        assert_eq!(table.sturdy_ref(b"main"), make_uri(b"main"));
    }
    capnp_actix::debug::assert_all_released().await;
    assert_eq!(log.released(), 1);
}

#[actix_rt::test]
async fn scenario_59_table_unknown_id_gives_unknown_persistent_service_id() {
    let log = Log::default();
    {
        let table = Table::new(make_uri);
        table.add(b"main", probe_ref(&log));
        let text = err_text(table.restore(b"other").await);
        assert!(text.contains("Unknown persistent service ID"), "{text}");
        let text = err_text(table.restore(b"").await);
        assert!(text.contains("Unknown persistent service ID"), "{text}");
        assert!(unknown_service()
            .to_string()
            .contains("Unknown persistent service ID"));
        // The known one still works.
        table.restore(b"main").await.unwrap();
    }
    capnp_actix::debug::assert_all_released().await;
}

#[actix_rt::test]
async fn scenario_59_table_removed_id_stops_working() {
    let log = Log::default();
    {
        let table = Table::new(make_uri);
        table.add(b"a", probe_ref(&log));
        table.add(b"b", probe_ref(&log));
        let held = table.restore(b"a").await.unwrap();
        table.remove(b"a");
        let text = err_text(table.restore(b"a").await);
        assert!(text.contains("Unknown persistent service ID"), "{text}");
        // Others are untouched; the holder keeps its capability.
        table.restore(b"b").await.unwrap();
        assert_eq!(call_raw(&held, 7).await.unwrap(), 7);
        assert_eq!(table.len(), 1);
        // Removing what is not there is fine.
        table.remove(b"a");
        table.remove(b"never");
    }
    capnp_actix::debug::assert_all_released().await;
    assert_eq!(log.released(), 2);
}

#[actix_rt::test]
async fn scenario_59_table_clear_leaves_held_caps_working() {
    let log = Log::default();
    {
        let table = Table::new(make_uri);
        table.add(b"main", probe_ref(&log));
        let held = table.restore(b"main").await.unwrap();
        table.clear();
        assert!(table.is_empty());
        assert!(table.restore(b"main").await.is_err());
        assert_eq!(call_raw(&held, 3).await.unwrap(), 3);
    }
    capnp_actix::debug::assert_all_released().await;
}

#[actix_rt::test]
async fn scenario_59_single_restorer_serves_its_id_and_rejects_others() {
    let log = Log::default();
    {
        let cap = probe_ref(&log);
        let single = Single::new(b"secret", cap.clone());
        let got = single.restore(b"secret").await.unwrap();
        assert_eq!(got, cap);
        assert_eq!(call_raw(&got, 5).await.unwrap(), 5);
        for other in [&b"Secret"[..], b"secret\0", b"", b"secre"] {
            let text = err_text(single.restore(other).await);
            assert!(text.contains("Unknown persistent service ID"), "{text}");
        }
        // Through an Arc<dyn Restorer>, as a vat holds it.
        let shared: Arc<dyn Restorer> = Arc::new(single);
        assert_eq!(shared.restore(b"secret").await.unwrap(), cap);
    }
    capnp_actix::debug::assert_all_released().await;
}

/// A loader that counts its loads, can be told to fail the next one, and
/// can hold the next one open until the test opens a gate.
#[derive(Clone, Default)]
struct CountingLoader {
    state: Arc<Mutex<LoaderState>>,
    log: Log,
}

#[derive(Default)]
struct LoaderState {
    loads: usize,
    finished: usize,
    fail_next: bool,
    gate: Option<oneshot::Receiver<()>>,
    seen: Vec<(SturdyUri, [u8; 32])>,
}

impl CountingLoader {
    fn loads(&self) -> usize {
        self.state.lock().unwrap().loads
    }
    fn finished(&self) -> usize {
        self.state.lock().unwrap().finished
    }
    fn fail_next(&self) {
        self.state.lock().unwrap().fail_next = true;
    }
    /// Holds the next load until the returned sender fires (or drops).
    fn gate_next(&self) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        self.state.lock().unwrap().gate = Some(rx);
        tx
    }
    fn seen(&self) -> Vec<(SturdyUri, [u8; 32])> {
        self.state.lock().unwrap().seen.clone()
    }
}

impl Loader for CountingLoader {
    fn load(
        &self,
        uri: SturdyUri,
        digest: [u8; 32],
    ) -> BoxFuture<'static, Result<CapRef, capnp::Error>> {
        let (gate, fail) = {
            let mut s = self.state.lock().unwrap();
            s.loads += 1;
            s.seen.push((uri, digest));
            (s.gate.take(), std::mem::take(&mut s.fail_next))
        };
        let state = self.state.clone();
        let log = self.log.clone();
        async move {
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            state.lock().unwrap().finished += 1;
            if fail {
                return Err(capnp::Error::failed("test load failed".into()));
            }
            Ok(probe_ref(&log))
        }
        .boxed()
    }
}

fn loader_table() -> (Table, CountingLoader) {
    let loader = CountingLoader::default();
    (Table::with_loader(make_uri, loader.clone()), loader)
}

#[actix_rt::test]
async fn scenario_60_loader_table_cached_while_in_use() {
    let (table, loader) = loader_table();
    {
        let a = table.restore(b"svc").await.unwrap();
        let b = table.restore(b"svc").await.unwrap();
        assert_eq!(a, b);
        assert_eq!(loader.loads(), 1);
        assert_eq!(table.len(), 1);
        assert_eq!(call_raw(&b, 1).await.unwrap(), 1);
    }
    capnp_actix::debug::assert_all_released().await;
    assert_eq!(table.len(), 0, "the cache keeps nothing alive");
    drop(table);
    drop(loader);
    capnp_actix::debug::assert_all_released().await;
}

#[actix_rt::test]
async fn scenario_60_loader_table_reloaded_after_release() {
    let (table, loader) = loader_table();
    let first = table.restore(b"svc").await.unwrap();
    let first_id = first.id();
    drop(first);
    capnp_actix::debug::wait_all_released(Duration::from_secs(2))
        .await
        .unwrap();
    assert!(table.is_empty());
    assert_eq!(loader.log.released(), 1);

    let second = table.restore(b"svc").await.unwrap();
    assert_eq!(loader.loads(), 2);
    assert_ne!(second.id(), first_id);
    assert_eq!(call_raw(&second, 2).await.unwrap(), 2);
    drop(second);
    drop(table);
    capnp_actix::debug::assert_all_released().await;
}

#[actix_rt::test]
async fn scenario_60_loader_table_two_parallel_restores_do_one_load() {
    let (table, loader) = loader_table();
    {
        let gate = loader.gate_next();
        let r1 = table.restore(b"svc");
        let r2 = table.restore(b"svc");
        let (a, b, ()) = futures::join!(r1, r2, async {
            yield_a_while().await;
            // Both wait on the one load, which is held open.
            assert_eq!(loader.loads(), 1);
            assert_eq!(loader.finished(), 0);
            assert_eq!(table.len(), 1);
            gate.send(()).unwrap();
        });
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a, b);
        assert_eq!(loader.loads(), 1);
        // Once loaded, a third restore finds it in the cache.
        assert_eq!(table.restore(b"svc").await.unwrap(), a);
        assert_eq!(loader.loads(), 1);
    }
    drop(table);
    capnp_actix::debug::assert_all_released().await;
}

#[actix_rt::test]
async fn scenario_60_loader_table_failures_are_not_cached() {
    let (table, loader) = loader_table();
    {
        loader.fail_next();
        let gate = loader.gate_next();
        let r1 = table.restore(b"svc");
        let r2 = table.restore(b"svc");
        let (a, b, ()) = futures::join!(r1, r2, async {
            yield_a_while().await;
            gate.send(()).unwrap();
        });
        assert!(err_text(a).contains("test load failed"));
        assert!(err_text(b).contains("test load failed"));
        assert_eq!(loader.loads(), 1);
        assert!(table.is_empty());

        // The next restore tries again, and succeeds.
        let c = table.restore(b"svc").await.unwrap();
        assert_eq!(loader.loads(), 2);
        assert_eq!(call_raw(&c, 4).await.unwrap(), 4);
    }
    drop(table);
    capnp_actix::debug::assert_all_released().await;
}

#[actix_rt::test]
async fn scenario_60_loader_table_one_user_releasing_does_not_free_it_for_another() {
    let (table, loader) = loader_table();
    {
        let a = table.restore(b"svc").await.unwrap();
        let b = table.restore(b"svc").await.unwrap();
        drop(a);
        yield_a_while().await;
        let c = table.restore(b"svc").await.unwrap();
        assert_eq!(c, b);
        assert_eq!(loader.loads(), 1);
        assert_eq!(loader.log.released(), 0);
        assert_eq!(call_raw(&b, 8).await.unwrap(), 8);
    }
    drop(table);
    capnp_actix::debug::assert_all_released().await;
    assert_eq!(loader.log.released(), 1);
}

#[actix_rt::test]
async fn scenario_60_loader_table_clear_leaves_held_caps_working() {
    let (table, loader) = loader_table();
    {
        let held = table.restore(b"svc").await.unwrap();
        table.add(b"added", probe_ref(&loader.log));
        assert_eq!(table.len(), 2);
        table.clear();
        assert!(table.is_empty());
        assert_eq!(call_raw(&held, 9).await.unwrap(), 9);
        // The cache is gone: the next restore loads a new one.
        let again = table.restore(b"svc").await.unwrap();
        assert_ne!(again, held);
        assert_eq!(loader.loads(), 2);
        // And the added entry is gone (the loader is asked instead).
        table.restore(b"added").await.unwrap();
        assert_eq!(loader.loads(), 3);
    }
    drop(table);
    capnp_actix::debug::assert_all_released().await;
}

#[actix_rt::test]
async fn scenario_60_loader_table_clear_during_a_load_still_answers_its_waiters() {
    let (table, loader) = loader_table();
    {
        let gate = loader.gate_next();
        let pending = table.restore(b"svc");
        table.clear();
        gate.send(()).unwrap();
        let cap = pending.await.unwrap();
        assert_eq!(call_raw(&cap, 10).await.unwrap(), 10);
        // Cleared while loading: the result is not cached.
        let other = table.restore(b"svc").await.unwrap();
        assert_ne!(other, cap);
        assert_eq!(loader.loads(), 2);
    }
    drop(table);
    capnp_actix::debug::assert_all_released().await;
}

#[actix_rt::test]
async fn scenario_60_loader_table_load_survives_its_waiters_going_away() {
    // SCENARIOS 57, restorer side: the client goes away while the loader
    // runs; the load finishes quietly and its result is released.
    let (table, loader) = loader_table();
    {
        let gate = loader.gate_next();
        let mut first = table.restore(b"svc");
        let second = table.restore(b"svc");
        // Poll the first once, then abandon it.
        assert!(futures::poll!(&mut first).is_pending());
        drop(first);
        yield_a_while().await;
        gate.send(()).unwrap();
        // The other waiter still gets the one load's result.
        let cap = second.await.unwrap();
        assert_eq!(loader.loads(), 1);
        assert_eq!(call_raw(&cap, 11).await.unwrap(), 11);
    }
    {
        // Everyone goes away while the load is held open.
        let gate = loader.gate_next();
        let mut only = table.restore(b"svc");
        assert!(futures::poll!(&mut only).is_pending());
        drop(only);
        yield_a_while().await;
        assert_eq!(loader.loads(), 2);
        assert_eq!(loader.finished(), 1);
        gate.send(()).unwrap();
        yield_a_while().await;
        assert_eq!(loader.finished(), 2, "the load ran to its end");
        capnp_actix::debug::wait_all_released(Duration::from_secs(2))
            .await
            .unwrap();
        assert!(table.is_empty(), "nobody held it, so nothing is cached");
        assert_eq!(loader.log.released(), 2);
    }
    drop(table);
    capnp_actix::debug::assert_all_released().await;
}

#[actix_rt::test]
async fn scenario_60_loader_table_loader_gets_the_digest_and_the_uri() {
    let (table, loader) = loader_table();
    {
        assert_eq!(table.sturdy_ref(b"svc"), make_uri(b"svc"));
        let _a = table.restore(b"svc").await.unwrap();
        let _b = table.restore(b"other").await.unwrap();
        let expected_digest: [u8; 32] = {
            use sha2::Digest as _;
            sha2::Sha256::digest(b"svc").into()
        };
        assert_eq!(digest(b"svc"), expected_digest);
        assert_eq!(
            loader.seen(),
            vec![
                (make_uri(b"svc"), expected_digest),
                (make_uri(b"other"), digest(b"other")),
            ]
        );
    }
    drop(table);
    capnp_actix::debug::assert_all_released().await;
}

#[actix_rt::test]
async fn scenario_60_loader_table_added_entries_take_precedence_and_stay() {
    let (table, loader) = loader_table();
    {
        let cap = probe_ref(&loader.log);
        table.add(b"svc", cap.clone());
        drop(cap);
        yield_a_while().await;
        // The table holds it strongly: still there, no load.
        let got = table.restore(b"svc").await.unwrap();
        assert_eq!(loader.loads(), 0);
        assert_eq!(call_raw(&got, 12).await.unwrap(), 12);
        table.remove(b"svc");
        // Removed: the loader is asked now.
        let loaded = table.restore(b"svc").await.unwrap();
        assert_ne!(loaded, got);
        assert_eq!(loader.loads(), 1);
    }
    drop(table);
    capnp_actix::debug::assert_all_released().await;
}

#[actix_rt::test]
async fn scenario_60_loader_table_many_released_services_do_not_accumulate() {
    let (table, loader) = loader_table();
    for i in 0..300u32 {
        let cap = table.restore(&i.to_be_bytes()).await.unwrap();
        drop(cap);
    }
    capnp_actix::debug::wait_all_released(Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(loader.loads(), 300);
    assert!(table.is_empty());
    drop(table);
    capnp_actix::debug::assert_all_released().await;
}
