//! Metrics through the `metrics` facade (issue 13, item 5): a recorder
//! installed by the application sees connections, calls, bytes and
//! durations. One test in its own binary: the recorder is the process's.

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::time::Duration;

use capnp_actix::schemas::echo_api_capnp::echo;
use capnp_actix::vat::{self, Services};
use capnp_actix::{Address, Cap};
use echo_service::{EchoService, Sink};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::CompositeKey;

/// One snapshot of every metric. (The debugging recorder gives what
/// changed since the previous snapshot: counters and gauges as deltas,
/// histograms as the samples recorded meanwhile.)
type Metrics = Vec<(CompositeKey, DebugValue)>;

fn snapshot(snapshotter: &Snapshotter) -> Metrics {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect()
}

/// The value of the metric `name` with these labels (counters and
/// gauges as numbers, histograms as their count of samples).
fn value(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .iter()
        .find(|(key, _)| {
            let key = key.key();
            key.name() == name
                && key.labels().count() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(_, value)| match value {
            DebugValue::Counter(n) => *n as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(samples) => samples.len() as f64,
        })
}

#[actix::test]
async fn connections_calls_and_bytes_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this process");

    let service: Cap<echo::Client> =
        Cap::new(EchoService::new(Duration::from_millis(1), Sink::Stdout));
    let mut services = Services::new();
    services.add("main", &service);
    let listening = vat::serve(&Address::parse("tcp:127.0.0.1:0").unwrap(), services)
        .await
        .unwrap();
    let uri = listening.uri(b"main");
    let conn = vat::connect(&uri.address).await.unwrap();
    let cap: Cap<echo::Client> = Cap::from_raw(conn.bootstrap(&uri.service_id));
    for i in 0..3 {
        let mut req = cap.client().ping_request();
        req.get().set_msg(format!("m{i}"));
        let reply = req.send().promise.await.unwrap();
        assert_eq!(
            reply.get().unwrap().get_reply().unwrap(),
            format!("echo:m{i}").as_str()
        );
    }

    let metrics = snapshot(&snapshotter);
    let v = |name: &str, labels: &[(&str, &str)]| value(&metrics, name, labels);
    // Both ends are in this process: the client's connection and the
    // server's.
    assert_eq!(v("capnp_connections_opened_total", &[]), Some(2.0));
    assert_eq!(v("capnp_connections_open", &[]), Some(2.0));
    assert_eq!(v("capnp_calls_sent_total", &[]), Some(3.0));
    assert_eq!(v("capnp_calls_received_total", &[]), Some(3.0));
    // The bootstrap capability: imported by the client, exported by the
    // server.
    assert_eq!(v("capnp_table_entries", &[("table", "imports")]), Some(1.0));
    assert_eq!(v("capnp_table_entries", &[("table", "exports")]), Some(1.0));
    // Three pings and the bootstrap.
    assert_eq!(
        v("capnp_calls_answered_total", &[("outcome", "results")]),
        Some(4.0)
    );
    assert_eq!(v("capnp_call_duration_seconds", &[]), Some(4.0));
    let received = v("capnp_received_bytes_total", &[]).expect("bytes in");
    let sent = v("capnp_sent_bytes_total", &[]).expect("bytes out");
    assert!(received > 4.0 * 40.0, "{received} bytes received");
    // Both ends are here: what was read was written, and at most the
    // last call's `finish` (40 bytes) can still be on its way.
    assert!(
        received <= sent && sent - received <= 40.0,
        "{received} bytes read, {sent} written"
    );

    drop(cap);
    conn.close("test over");
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    listening.stop();
    drop(service);
    capnp_actix::debug::assert_all_released().await;
    let metrics = snapshot(&snapshotter);
    let v = |name: &str, labels: &[(&str, &str)]| value(&metrics, name, labels);
    // Both connections went: the gauges fell by what they held.
    assert_eq!(
        v("capnp_table_entries", &[("table", "imports")]),
        Some(-1.0)
    );
    assert_eq!(
        v("capnp_table_entries", &[("table", "exports")]),
        Some(-1.0)
    );
    assert_eq!(v("capnp_connections_open", &[]), Some(-2.0));
    assert_eq!(
        v(
            "capnp_connections_closed_total",
            &[("reason", "disconnected")]
        ),
        Some(2.0)
    );
}
