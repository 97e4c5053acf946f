//! A vat on several arbiters: connections spread over them, services
//! shared across them or with one instance on each, E-order kept, TLS
//! connections moved after their handshake, and a clean stop.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use capnp_actix::restorer::Table;
use capnp_actix::schemas::test_api_capnp::probe;
use capnp_actix::vat::Vat;
use capnp_actix::{Address, Cap, SecretKey, SturdyUri, VatConfig};

/// Every call a probe served: the thread it ran on and its `seq`.
type Seen = Arc<Mutex<Vec<(ThreadId, u64)>>>;

struct ThreadProbe {
    seen: Seen,
}

impl probe::Server for ThreadProbe {
    async fn call(
        self: Rc<Self>,
        params: probe::CallParams,
        mut results: probe::CallResults,
    ) -> Result<(), capnp::Error> {
        let seq = params.get()?.get_seq();
        self.seen
            .lock()
            .unwrap()
            .push((std::thread::current().id(), seq));
        results.get().set_seq(seq);
        Ok(())
    }
}

fn socket(name: &str) -> Address {
    Address::Unix(std::env::temp_dir().join(format!(
        "capnp-actix-arbiters-{name}-{}.sock",
        std::process::id()
    )))
}

/// A vat on `arbiters` arbiters serving `service` under `main`.
async fn serve(
    config: VatConfig,
    service: impl FnOnce(&capnp_actix::vat::UriMaker) -> Cap<probe::Client>,
) -> (Vat, SturdyUri) {
    let vat = Vat::start_with(&config, move |uris| {
        let cap = service(&uris);
        let table = Table::new(move |id| uris.sturdy_uri(id));
        table.add(b"main", cap.raw().clone());
        table
    })
    .await
    .expect("the vat starts");
    let uri = vat.sturdy_uri(b"main").unwrap();
    (vat, uri)
}

/// Sends `count` calls without waiting (seq = base + i), then checks each
/// reply.
async fn burst(client: &probe::Client, base: u64, count: u64) {
    let replies: Vec<_> = (0..count)
        .map(|i| {
            let mut req = client.call_request();
            req.get().set_seq(base + i);
            req.send().promise
        })
        .collect();
    for (i, reply) in replies.into_iter().enumerate() {
        let got = reply
            .await
            .expect("the call succeeds")
            .get()
            .unwrap()
            .get_seq();
        assert_eq!(got, base + i as u64);
    }
}

/// `seen`'s calls of each client (seq / 1000), in the order served.
fn by_client(seen: &Seen) -> HashMap<u64, Vec<u64>> {
    let mut out: HashMap<u64, Vec<u64>> = HashMap::new();
    for (_, seq) in seen.lock().unwrap().iter() {
        out.entry(seq / 1000).or_default().push(*seq);
    }
    out
}

async fn all_released() {
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|r| panic!("still alive:\n{r}"));
}

#[actix::test]
async fn connections_spread_over_the_arbiters_and_a_per_arbiter_service_never_changes_thread() {
    let seen = Seen::default();
    let service_seen = seen.clone();
    let config = VatConfig::new()
        .with_tls(false)
        .with_listen_address(socket("per-arbiter"))
        .with_arbiters(2);
    let (vat, uri) = serve(config, move |uris| {
        Cap::per_arbiter(uris.arbiters(), move || ThreadProbe {
            seen: service_seen.clone(),
        })
    })
    .await;
    assert_eq!(vat.arbiters().len(), 2);

    // Four connections of their own (`vat::import` opens one each).
    let mut clients = Vec::new();
    for _ in 0..4 {
        let cap: Cap<probe::Client> = Cap::from_raw(capnp_actix::vat::import(&uri).await.unwrap());
        clients.push(cap);
    }
    for (i, cap) in clients.iter().enumerate() {
        burst(&cap.client(), i as u64 * 1000, 50).await;
    }
    assert_eq!(
        vat.arbiters().loads(),
        vec![2, 2],
        "placed on the least loaded"
    );

    // Served on two threads, neither of them this one, and each client's
    // calls on one thread (its connection's), in the order sent.
    let me = std::thread::current().id();
    let threads: HashSet<ThreadId> = seen.lock().unwrap().iter().map(|(t, _)| *t).collect();
    assert_eq!(threads.len(), 2, "{threads:?}");
    assert!(!threads.contains(&me));
    for (client, seqs) in by_client(&seen) {
        let expected: Vec<u64> = (0..50).map(|i| client * 1000 + i).collect();
        assert_eq!(seqs, expected, "client {client} in E-order");
        let client_threads: HashSet<ThreadId> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s / 1000 == client)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(client_threads.len(), 1, "client {client}");
    }

    // Released, the connections close and give their places back.
    drop(clients);
    for _ in 0..200 {
        if vat.arbiters().loads() == vec![0, 0] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(vat.arbiters().loads(), vec![0, 0]);
    assert!(vat.connections().await.is_empty());
    vat.stop();
    drop(vat);
    all_released().await;
}

#[actix::test]
async fn one_shared_instance_is_reached_from_every_arbiter_in_e_order() {
    let seen = Seen::default();
    let service = Cap::<probe::Client>::new(ThreadProbe { seen: seen.clone() });
    let shared = service.clone();
    let config = VatConfig::new()
        .with_tls(false)
        .with_listen_address(socket("shared"))
        .with_arbiters(2);
    let (vat, uri) = serve(config, move |_| shared).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let cap: Cap<probe::Client> = Cap::from_raw(capnp_actix::vat::import(&uri).await.unwrap());
        clients.push(cap);
    }
    // All four bursts in flight at once, from connections on both
    // arbiters, to the one instance on this thread.
    let bursts = clients
        .iter()
        .enumerate()
        .map(|(i, cap)| {
            let client = cap.client();
            async move { burst(&client, i as u64 * 1000, 100).await }
        })
        .collect::<Vec<_>>();
    futures::future::join_all(bursts).await;
    let me = std::thread::current().id();
    assert!(seen.lock().unwrap().iter().all(|(t, _)| *t == me));
    let per_client = by_client(&seen);
    assert_eq!(per_client.len(), 4);
    for (client, seqs) in per_client {
        let expected: Vec<u64> = (0..100).map(|i| client * 1000 + i).collect();
        assert_eq!(seqs, expected, "client {client} in E-order");
    }
    drop((clients, service));
    vat.stop();
    drop(vat);
    all_released().await;
}

#[actix::test]
async fn tls_connections_move_to_their_arbiter_after_the_handshake_both_ways() {
    let seen = Seen::default();
    let service = Cap::<probe::Client>::new(ThreadProbe { seen: seen.clone() });
    let shared = service.clone();
    let config = VatConfig::new()
        .with_secret_key(SecretKey::ephemeral())
        .with_listen_address(socket("tls"))
        .with_arbiters(2);
    let (server, uri) = serve(config, move |_| shared).await;
    let mut vats = Vec::new();
    for _ in 0..3 {
        let client = Vat::client(
            &VatConfig::new()
                .with_secret_key(SecretKey::ephemeral())
                .with_arbiters(2),
        )
        .await
        .unwrap();
        let cap: Cap<probe::Client> = client.import_as(&uri).await.unwrap();
        burst(&cap.client(), vats.len() as u64 * 1000, 20).await;
        assert_eq!(client.arbiters().loads().iter().sum::<usize>(), 1);
        vats.push((client, cap));
    }
    let mut loads = server.arbiters().loads();
    loads.sort();
    assert_eq!(loads, vec![1, 2]);
    assert_eq!(by_client(&seen).len(), 3);

    // Stopping the server: every client hears why (the abort is written
    // from the connection's arbiter before that arbiter stops).
    let broken: Vec<_> = vats
        .iter()
        .map(|(_, cap)| {
            let (tx, rx) = futures::channel::oneshot::channel();
            cap.on_broken(move |e| {
                let _ = tx.send(e);
            });
            rx
        })
        .collect();
    server.stop();
    for ((client, _), broken) in vats.iter().zip(broken) {
        let e = tokio::time::timeout(Duration::from_secs(5), broken)
            .await
            .expect("the client learns the server stopped")
            .unwrap();
        assert!(e.to_string().contains("the vat has stopped"), "{e}");
        client.stop();
    }
    drop((vats, service, server));
    all_released().await;
}
