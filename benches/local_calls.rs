//! In-process call throughput: our actor path against the capnp-rpc crate's
//! direct local call (`capnp_rpc::new_client` on the same server), in the
//! same run. Prints calls/s for each and our ratio.
//!
//! Run with `cargo bench --bench local_calls` (add `-- --quick` for a short
//! run). See BENCHMARKING.md.

use std::rc::Rc;
use std::time::{Duration, Instant};

use capnp_actix::schemas::bench_capnp::bench;
use futures::stream::{FuturesUnordered, StreamExt};

struct BenchServer;

impl bench::Server for BenchServer {
    async fn ping(
        self: Rc<Self>,
        params: bench::PingParams,
        mut results: bench::PingResults,
    ) -> Result<(), capnp::Error> {
        let n = params.get()?.get_n();
        results.get().set_n(n + 1);
        Ok(())
    }
}

async fn ping(client: &bench::Client, n: u64) -> u64 {
    let mut req = client.ping_request();
    req.get().set_n(n);
    let reply = req.send().promise.await.expect("ping failed");
    reply.get().expect("bad reply").get_n()
}

async fn sequential(client: &bench::Client, calls: u64) -> Duration {
    let start = Instant::now();
    for i in 0..calls {
        let r = ping(client, i).await;
        assert_eq!(r, i + 1);
    }
    start.elapsed()
}

async fn in_flight(client: &bench::Client, calls: u64, window: usize) -> Duration {
    let start = Instant::now();
    let mut running = FuturesUnordered::new();
    let mut sent = 0;
    let mut done = 0;
    while done < calls {
        while running.len() < window && sent < calls {
            running.push(ping(client, sent));
            sent += 1;
        }
        if running.next().await.is_some() {
            done += 1;
        }
    }
    start.elapsed()
}

fn rate(calls: u64, d: Duration) -> f64 {
    calls as f64 / d.as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let calls: u64 = if quick { 20_000 } else { 200_000 };
    let rounds = if quick { 1 } else { 5 };
    let sys = actix::System::new();
    sys.block_on(async move {
        let ours: bench::Client = capnp_actix::new_client(BenchServer);
        let theirs: bench::Client = capnp_rpc::new_client(BenchServer);
        // Warm up both.
        sequential(&ours, calls / 10).await;
        sequential(&theirs, calls / 10).await;
        let mut best = [f64::MIN; 4];
        for _ in 0..rounds {
            let r = [
                rate(calls, sequential(&ours, calls).await),
                rate(calls, sequential(&theirs, calls).await),
                rate(calls, in_flight(&ours, calls, 64).await),
                rate(calls, in_flight(&theirs, calls, 64).await),
            ];
            for (b, x) in best.iter_mut().zip(r) {
                *b = b.max(x);
            }
        }
        println!("in-process calls ({calls} calls, best of {rounds})");
        println!(
            "  sequential:    capnp-actix {:>10.0} calls/s   capnp-rpc {:>10.0} calls/s   ratio {:.2} (target >= 0.6)",
            best[0], best[1], best[0] / best[1]
        );
        println!(
            "  64 in flight:  capnp-actix {:>10.0} calls/s   capnp-rpc {:>10.0} calls/s   ratio {:.2} (target >= 0.8)",
            best[2], best[3], best[2] / best[3]
        );
    });
}
