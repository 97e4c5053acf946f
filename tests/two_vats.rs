//! Two of our vats joined by a real socket pair.

mod support;

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use capnp_actix::connection::{
    bootstrap_fn, start_connection, ConnectionHandle, ConnectionOptions,
};
use capnp_actix::schemas::echo_api_capnp::{callback, echo};
use capnp_actix::Cap;
use echo_service::{EchoService, Sink};

struct Recorder(Arc<Mutex<Vec<String>>>);
impl callback::Server for Recorder {
    async fn log(
        self: std::rc::Rc<Self>,
        params: callback::LogParams,
        _: callback::LogResults,
    ) -> Result<(), capnp::Error> {
        self.0
            .lock()
            .unwrap()
            .push(params.get()?.get_msg()?.to_string()?);
        Ok(())
    }
}

#[actix::test]
async fn echo_over_a_socket_pair_ping_heartbeat_and_pipelined_logger() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let service: Cap<echo::Client> = Cap::new(EchoService::new(
        Duration::from_millis(1),
        Sink::Memory(lines.clone()),
    ));
    let raw = service.raw().clone();
    let server = start_connection(
        a,
        ConnectionOptions {
            bootstrap: Some(bootstrap_fn(move |id: &[u8]| {
                if id == b"main" || id.is_empty() {
                    Ok(raw.clone())
                } else {
                    Err(capnp::Error::failed("Unknown persistent service ID".into()))
                }
            })),
            ..Default::default()
        },
    );
    let client = start_connection(b, ConnectionOptions::default());
    {
        let remote: Cap<echo::Client> = Cap::from_raw(client.bootstrap(b"main"));
        let echo = remote.client();
        let mut req = echo.ping_request();
        req.get().set_msg("foo");
        let reply = req.send().promise.await.unwrap();
        assert_eq!(
            reply.get().unwrap().get_reply().unwrap().to_str().unwrap(),
            "echo:foo"
        );

        // A callback of ours, called by the server over the wire.
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut req = echo.heartbeat_request();
        req.get().set_msg("beat");
        req.get()
            .set_callback(capnp_actix::new_client(Recorder(got.clone())));
        req.send().promise.await.unwrap();
        assert_eq!(*got.lock().unwrap(), ["beat", "beat", "beat"]);

        // Pipelined: log on the logger before getLogger has returned.
        let logger = echo.get_logger_request().send().pipeline.get_callback();
        let mut req = logger.log_request();
        req.get().set_msg("hi");
        req.send().promise.await.unwrap();
        assert_eq!(*lines.lock().unwrap(), ["Service logger: hi"]);

        // An unknown service ID is an error for that call, not an abort.
        let other: Cap<echo::Client> = Cap::from_raw(client.bootstrap(b"nope"));
        let e = other
            .client()
            .ping_request()
            .send()
            .promise
            .await
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("Unknown persistent service ID"),
            "{e}"
        );
        assert!(client.is_open());
    }
    // Everything the client held is released: both tables drain.
    let mut sizes = None;
    for _ in 0..200 {
        let (c, _) = client.inspect().await.unwrap();
        let (s, _) = server.inspect().await.unwrap();
        if c.is_empty() && s.is_empty() {
            sizes = Some((c, s));
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        sizes.is_some(),
        "client: {:?}\nserver: {:?}",
        client.inspect().await,
        server.inspect().await
    );
    drop(service);
    close_both(&client, &server).await;
    capnp_actix::debug::assert_all_released().await;
}

/// Closes the connection from `client`'s side and waits until both
/// connection actors have stopped, with the reason each one reports.
async fn close_both(client: &ConnectionHandle, server: &ConnectionHandle) {
    client.close("test over");
    let wait = Duration::from_secs(5);
    let ours = tokio::time::timeout(wait, client.closed())
        .await
        .expect("the client's connection ends");
    assert!(ours.to_string().contains("test over"), "{ours}");
    tokio::time::timeout(wait, server.closed())
        .await
        .expect("the server's connection ends with the client's");
    assert!(!client.is_open() && !server.is_open());
}

fn echo_server_options() -> (Cap<echo::Client>, ConnectionOptions) {
    let service: Cap<echo::Client> = Cap::new(EchoService::new(
        Duration::from_millis(1),
        Sink::Memory(Arc::default()),
    ));
    let raw = service.raw().clone();
    let options = ConnectionOptions {
        bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(raw.clone()))),
        ..Default::default()
    };
    (service, options)
}

async fn ping(cap: &Cap<echo::Client>) -> Result<String, capnp::Error> {
    let mut req = cap.client().ping_request();
    req.get().set_msg("x");
    Ok(req.send().promise.await?.get()?.get_reply()?.to_string()?)
}

#[actix::test]
async fn scenario_56_a_vat_killed_under_a_held_capability_breaks_it_with_disconnected() {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let (service, options) = echo_server_options();
    let server = start_connection(a, options);
    let client = start_connection(b, ConnectionOptions::default());
    {
        let remote: Cap<echo::Client> = Cap::from_raw(client.bootstrap(b""));
        assert_eq!(ping(&remote).await.unwrap(), "echo:x");
        let (tx, rx) = futures::channel::oneshot::channel();
        remote.on_broken(move |e| {
            let _ = tx.send(e);
        });
        server.close("vat killed");
        let e = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
        let e = ping(&remote).await.unwrap_err();
        assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
        assert!(remote.raw().broken_error().is_some());
        // A watcher added now fires at once.
        let (tx, mut rx) = futures::channel::oneshot::channel();
        remote.on_broken(move |e| {
            let _ = tx.send(e);
        });
        assert!(rx.try_recv().unwrap().is_some());
    }
    drop(service);
    capnp_actix::debug::assert_all_released().await;
    assert!(!client.is_open() && !server.is_open());
}

#[actix::test]
async fn scenario_58_after_disconnect_questions_fail_and_nothing_is_left_on_either_side() {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    struct Never;
    impl echo::Server for Never {
        async fn ping(
            self: std::rc::Rc<Self>,
            _: echo::PingParams,
            _: echo::PingResults,
        ) -> Result<(), capnp::Error> {
            futures::future::pending::<()>().await;
            Ok(())
        }
        async fn heartbeat(
            self: std::rc::Rc<Self>,
            params: echo::HeartbeatParams,
            _: echo::HeartbeatResults,
        ) -> Result<(), capnp::Error> {
            let _held = params.get()?.get_callback()?;
            futures::future::pending::<()>().await;
            Ok(())
        }
    }
    let never: Cap<echo::Client> = Cap::new(Never);
    let raw = never.raw().clone();
    let server = start_connection(
        a,
        ConnectionOptions {
            bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(raw.clone()))),
            ..Default::default()
        },
    );
    let client = start_connection(b, ConnectionOptions::default());
    {
        let remote: Cap<echo::Client> = Cap::from_raw(client.bootstrap(b""));
        // A question outstanding, a callback exported by the client.
        let pending = {
            let r = remote.clone();
            tokio::task::spawn_local(async move { ping(&r).await })
        };
        let mut req = remote.client().heartbeat_request();
        req.get()
            .set_callback(capnp_actix::new_client(Recorder(Arc::default())));
        let _hb = req.send();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (c, _) = client.inspect().await.unwrap();
        assert!(c.questions > 0 && c.imports > 0 && c.exports > 0, "{c:?}");
        client.close("client going away");
        let e = pending.await.unwrap().unwrap_err();
        assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
    }
    drop(never);
    // The server released the client's callback and its answers; nothing
    // of either side is left.
    capnp_actix::debug::assert_all_released().await;
    assert!(!client.is_open() && !server.is_open());
}

/// A connected pair: a server offering `bootstrap`, and the client's handle.
fn pair_serving(bootstrap: capnp_actix::CapRef) -> (ConnectionHandle, ConnectionHandle) {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let server = start_connection(
        a,
        ConnectionOptions {
            bootstrap: Some(bootstrap_fn(move |_: &[u8]| Ok(bootstrap.clone()))),
            ..Default::default()
        },
    );
    (server, start_connection(b, ConnectionOptions::default()))
}

#[actix::test]
/// Pipelining through an answer that turns out to be our own object, between
/// two of our vats. The race itself (calls after the answer overtaking
/// those still coming back) is pinned by `tests/embargo_scripted_peer.rs`;
/// here the timing is whatever the sockets give, so this checks the whole
/// path end to end and that embargoes and tables drain.
async fn pipelining_through_an_answer_that_is_our_own_object_between_two_vats() {
    use capnp_actix::schemas::test_api_capnp::maker;
    use support::{call, Log, Maker, Probe};
    let log = Log::default();
    let maker: Cap<maker::Client> = Cap::new(Maker::default());
    let (server, client) = pair_serving(maker.raw().clone());
    {
        let remote: Cap<maker::Client> = Cap::from_raw(client.bootstrap(b""));
        let mine = Probe::cap(&log);
        let mut req = remote.client().hold_request();
        req.get().set_probe(mine.client());
        let pending = req.send();
        let field = pending.pipeline.get_probe();
        // M1: pipelined over the wire; they come back to our probe via the server.
        let mut calls: Vec<_> = (0..100)
            .map(|i| {
                let c = field.clone();
                tokio::task::spawn_local(async move { call(&c, i).await })
            })
            .collect();
        tokio::task::yield_now().await;
        pending.promise.await.unwrap();
        // M2: the field is now known to be our own probe, but these must
        // still arrive after the M1 calls.
        calls.extend((100..200).map(|i| {
            let c = field.clone();
            tokio::task::spawn_local(async move { call(&c, i).await })
        }));
        for (i, h) in calls.into_iter().enumerate() {
            assert_eq!(h.await.unwrap().unwrap(), i as u64);
        }
        assert_eq!(log.calls(), (0..200).collect::<Vec<_>>());
        let (c, dump) = client.inspect().await.unwrap();
        assert_eq!(c.embargoes, 0, "{dump}");
    }
    for _ in 0..200 {
        let (c, _) = client.inspect().await.unwrap();
        let (s, _) = server.inspect().await.unwrap();
        if c.is_empty() && s.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        client.inspect().await.unwrap().0.is_empty(),
        "{:?}",
        client.inspect().await
    );
    assert!(
        server.inspect().await.unwrap().0.is_empty(),
        "{:?}",
        server.inspect().await
    );
    drop(maker);
    close_both(&client, &server).await;
    capnp_actix::debug::assert_all_released().await;
}

#[actix::test]
async fn scenario_02_a_call_on_a_broken_bootstrap_fails_and_releases_its_arguments() {
    use support::{Log, Probe};
    let log = Log::default();
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let server = start_connection(
        a,
        ConnectionOptions {
            bootstrap: Some(bootstrap_fn(|_: &[u8]| {
                Err(capnp::Error::failed("no such service".into()))
            })),
            ..Default::default()
        },
    );
    let client = start_connection(b, ConnectionOptions::default());
    {
        use capnp_actix::schemas::test_api_capnp::maker;
        let broken: Cap<maker::Client> = Cap::from_raw(client.bootstrap(b""));
        let mut req = broken.client().hold_request();
        req.get().set_probe(Probe::cap(&log).client());
        let e = req.send().promise.await.err().unwrap();
        assert!(e.to_string().contains("no such service"), "{e}");
    }
    for _ in 0..400 {
        if log.released() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        log.released(),
        1,
        "the probe passed to the broken bootstrap is released"
    );
    let (c, d) = client.inspect().await.unwrap();
    assert!(c.is_empty(), "{d}");
    let (s, d) = server.inspect().await.unwrap();
    assert!(s.is_empty(), "{d}");
    close_both(&client, &server).await;
    capnp_actix::debug::assert_all_released().await;
}

#[actix::test]
async fn scenario_16_a_pipelined_call_on_a_missing_field_fails_with_an_error() {
    use capnp_actix::schemas::test_api_capnp::maker;
    use support::{call, Maker};
    let maker: Cap<maker::Client> = Cap::new(Maker::default());
    let (server, client) = pair_serving(maker.raw().clone());
    {
        let remote: Cap<maker::Client> = Cap::from_raw(client.bootstrap(b""));
        // `hold` with no probe: the returned field is null.
        let pending = remote.client().hold_request().send();
        let e = call(&pending.pipeline.get_probe(), 1).await.unwrap_err();
        assert!(e.to_string().to_lowercase().contains("null"), "{e}");
        let (c, _) = client.inspect().await.unwrap();
        assert_eq!(c.embargoes, 0, "errors are never embargoed");
    }
    drop(maker);
    close_both(&client, &server).await;
    capnp_actix::debug::assert_all_released().await;
}

#[actix::test]
async fn a_peer_that_never_reads_is_cut_off_and_others_are_unaffected() {
    use capnp_actix::proto::captp::{Conn, ConnLimits, OutContent, OutTarget};
    use capnp_actix::proto::Limits;
    use tokio::io::AsyncWriteExt;
    let (service, mut options) = echo_server_options();
    options.max_outgoing_bytes = 4 << 20;
    let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
    let server = start_connection(a, options.clone());
    // A raw client: bootstrap, then 40 pings of 512 KiB, never reading.
    let mut core: Conn<u32> = Conn::new(ConnLimits::default(), Limits::default());
    let q = core.bootstrap(b"").unwrap();
    let big = "x".repeat(512 * 1024);
    for _ in 0..40 {
        let mut m = capnp::message::Builder::new_default();
        m.init_root::<echo::ping_params::Builder<'_>>()
            .set_msg(&big[..]);
        core.call(
            &OutTarget::Answer {
                question: q,
                path: vec![],
            },
            <echo::Client as capnp::traits::HasTypeId>::TYPE_ID,
            0,
            OutContent::Reader(m.get_root_as_reader().unwrap()),
            &[],
        )
        .unwrap();
    }
    let bytes = core.take_output();
    // Hold the socket open without reading until the test is over.
    let (done, until_done) = futures::channel::oneshot::channel::<()>();
    let peer = tokio::task::spawn_local(async move {
        let _ = b.write_all(&bytes).await;
        let _ = until_done.await;
        drop(b);
    });
    // The server ends the connection because its queue for this peer
    // outgrew `max_outgoing_bytes`, and says so.
    let reason = tokio::time::timeout(Duration::from_secs(10), server.closed())
        .await
        .expect("the server kept queueing for a peer that does not read");
    assert_eq!(reason.kind, capnp::ErrorKind::Overloaded, "{reason}");
    assert!(
        reason.to_string().contains("the peer is not reading"),
        "{reason}"
    );
    assert!(!server.is_open());
    // Another connection to the same service works.
    let (a2, b2) = tokio::net::UnixStream::pair().unwrap();
    let server2 = start_connection(a2, options);
    let client2 = start_connection(b2, ConnectionOptions::default());
    {
        let cap: Cap<echo::Client> = Cap::from_raw(client2.bootstrap(b""));
        assert_eq!(ping(&cap).await.unwrap(), "echo:x");
    }
    drop(service);
    close_both(&client2, &server2).await;
    done.send(()).unwrap();
    peer.await.unwrap();
    capnp_actix::debug::assert_all_released().await;
}
