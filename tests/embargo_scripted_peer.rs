//! Scenario 13 against a scripted peer, so that the timing is forced: the
//! peer answers first and only later forwards the calls that were
//! pipelined through the answer. Without an embargo, calls made after the
//! answer would overtake them.

mod support;

use std::time::Duration;

use capnp_actix::connection::{start_connection, ConnectionOptions};
use capnp_actix::proto::captp::{
    CallTarget, Conn, ConnLimits, Event, InCap, OutCap, OutContent, OutTarget,
};
use capnp_actix::proto::Limits;
use capnp_actix::schemas::test_api_capnp::{maker, probe};
use capnp_actix::Cap;
use support::{call, Log, Probe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The scripted peer: serves a "maker" whose `hold` returns the probe it
/// is given, but forwards calls pipelined on that answer only after a
/// delay, and reflects the disembargo only after forwarding them.
async fn scripted_peer(mut sock: tokio::net::UnixStream) {
    let mut core: Conn<u32> = Conn::new(ConnLimits::default(), Limits::default());
    let mut buf = vec![0u8; 64 * 1024];
    let mut held_calls = Vec::new(); // (our answer, interface, method, params content bytes)
    let mut probe_import = None;
    let mut hold_answer = None;
    let mut loopback = None;
    let mut forwarded: Vec<(u32, u32)> = Vec::new(); // (our question, their answer)
    let mut deadline = None;
    loop {
        let n = tokio::select! {
            r = sock.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = tokio::time::sleep(Duration::from_millis(5)) => 0,
        };
        core.receive(&buf[..n]);
        while let Some(e) = core.next_event() {
            match e {
                Event::Bootstrap { answer, .. } => {
                    let m = capnp_actix::proto::content::cap_root_message();
                    core.return_results(
                        answer,
                        OutContent::Reader(m.get_root_as_reader().unwrap()),
                        &[OutCap::Local(1)],
                    );
                }
                // `maker.hold` is method 1 (`probe.call` is method 0); it
                // comes pipelined on the bootstrap answer or on the import.
                Event::Call {
                    answer,
                    method_id: 1,
                    params,
                    ..
                } => {
                    // `hold(probe)`: remember the probe; answer later.
                    if let [InCap::Import { id, .. }] = params.caps.as_slice() {
                        probe_import = Some(*id);
                    }
                    hold_answer = Some(answer);
                }
                Event::Call {
                    answer,
                    target: CallTarget::Answer { path, .. },
                    interface_id,
                    method_id,
                    params,
                } if path == [0] => {
                    let mut m = capnp::message::Builder::new_default();
                    m.set_root(params.content().unwrap()).unwrap();
                    held_calls.push((answer, interface_id, method_id, m));
                }
                Event::Return {
                    question, result, ..
                } => {
                    if let Some(&(_, theirs)) = forwarded.iter().find(|(q, _)| *q == question) {
                        let payload = result.unwrap();
                        core.return_results(theirs, payload.content().unwrap(), &[]);
                    }
                }
                Event::Loopback { embargo, .. } => loopback = Some(embargo),
                Event::Aborted(_) => return,
                _ => {}
            }
        }
        // Once the pipelined calls are in, answer `hold` with the caller's
        // own probe, and start the delay.
        if let (Some(a), Some(p), true) = (hold_answer, probe_import, held_calls.len() == 50) {
            // `hold` results: a struct whose field `probe` (pointer 0) is
            // capability 0, which we describe as the caller's own probe.
            let mut results = capnp::message::Builder::new_default();
            {
                let mut table = Vec::new();
                let mut root: capnp::any_pointer::Builder<'_> = results.init_root();
                capnp::traits::ImbueMut::imbue_mut(&mut root, &mut table);
                let any_probe: probe::Client = capnp_rpc::new_client(Probe::new(&Log::default()));
                root.init_as::<maker::hold_results::Builder<'_>>()
                    .set_probe(any_probe);
            }
            core.return_results(
                a,
                OutContent::Reader(results.get_root_as_reader().unwrap()),
                &[OutCap::Import(p)],
            );
            hold_answer = None;
            deadline = Some(tokio::time::Instant::now() + Duration::from_millis(100));
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            deadline = None;
            let p = probe_import.unwrap();
            for (theirs, iid, mid, m) in held_calls.drain(..) {
                let q = core
                    .call(
                        &OutTarget::Import(p),
                        iid,
                        mid,
                        OutContent::Reader(m.get_root_as_reader().unwrap()),
                        &[],
                    )
                    .unwrap();
                forwarded.push((q, theirs));
            }
            if let Some(e) = loopback.take() {
                core.disembargo_reply(e, p);
            }
        }
        let out = core.take_output();
        if !out.is_empty() && sock.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[actix::test]
async fn scenario_13_calls_after_the_return_wait_for_calls_pipelined_before_it() {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let peer = tokio::task::spawn_local(scripted_peer(a));
    let client = start_connection(b, ConnectionOptions::default());
    let log = Log::default();
    {
        let remote: Cap<maker::Client> = Cap::from_raw(client.bootstrap(b""));
        let mine = Probe::cap(&log);
        let mut req = remote.client().hold_request();
        req.get().set_probe(mine.client());
        let pending = req.send();
        let field = pending.pipeline.get_probe();
        // 50 calls pipelined on the field before the answer.
        let mut calls: Vec<_> = (0..50)
            .map(|i| {
                let c = field.clone();
                tokio::task::spawn_local(async move { call(&c, i).await })
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(5), pending.promise)
            .await
            .expect("hold answered")
            .unwrap();
        // The answer says the field is our own probe. These calls must still
        // wait for the 50 above, which the peer forwards only later.
        calls.extend((50..100).map(|i| {
            let c = field.clone();
            tokio::task::spawn_local(async move { call(&c, i).await })
        }));
        for (i, h) in calls.into_iter().enumerate() {
            let r = tokio::time::timeout(Duration::from_secs(5), h)
                .await
                .expect("call hung");
            assert_eq!(r.unwrap().unwrap(), i as u64);
        }
        assert_eq!(
            log.calls(),
            (0..100).collect::<Vec<_>>(),
            "E-order broken across the embargo"
        );
        let (sizes, dump) = client.inspect().await.unwrap();
        assert_eq!(sizes.embargoes, 0, "{dump}");
    }
    client.close("done");
    let _ = peer.await;
}
