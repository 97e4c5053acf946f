//! Connection governance (issue 13, item 3), against an echo vat (TLS
//! off) with a well-behaved client connected throughout:
//!
//! - `over_the_vat_limit_a_connection_is_told_why_and_closed`;
//! - `over_the_per_address_limit_a_connection_is_told_why_and_closed`
//!   (TCP, counted per client IP address);
//! - `a_silent_connection_is_aborted_at_its_first_message_deadline`;
//! - `an_idle_connection_is_closed_at_the_idle_timeout`;
//! - `the_listener_survives_descriptor_exhaustion` (in its own process,
//!   with a lowered RLIMIT_NOFILE).
//!
//! In each, the peer over the limit reads an abort naming the limit before
//! the end of the stream, and the other connections are still served.

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;
mod hostile;

use std::time::Duration;

use capnp_actix::restorer::Table;
use capnp_actix::schemas::echo_api_capnp::echo;
use capnp_actix::vat::Vat;
use capnp_actix::{Address, Cap, VatConfig};
use hostile::{
    bootstrap, decode, finish, frame_len, isolated, release, run, EchoVat, In, RawPeer, Ret,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use echo_service::{EchoService, Sink};

/// An upper bound for every test.
const LIMIT: Duration = Duration::from_secs(60);

/// A short deadline, so that tests are quick.
const SHORT: Duration = Duration::from_millis(200);

/// Reads the abort the vat sends and then the end of the stream; gives
/// the abort's reason.
async fn expect_abort_then_eof(p: &mut RawPeer) -> String {
    let reason = match p.next().await {
        Some(In::Abort { reason }) => reason,
        other => panic!("expected an abort, got {other:?}"),
    };
    assert!(
        p.next().await.is_none(),
        "the stream goes on after the abort"
    );
    reason
}

/// Bootstraps `main` on `p` (question `q`) and expects its capability:
/// the peer is served. Gives the export's ID.
async fn expect_served(p: &mut RawPeer, q: u32) -> u32 {
    p.send(&bootstrap(q, "main")).await.expect("send bootstrap");
    match p.next().await {
        Some(In::Return {
            answer,
            ret: Ret::Results { caps, .. },
        }) if answer == q => match caps.first() {
            Some(hostile::Desc::SenderHosted(id)) => *id,
            other => panic!("bootstrap gave {other:?}"),
        },
        other => panic!("expected the bootstrap's return, got {other:?}"),
    }
}

#[test]
fn over_the_vat_limit_a_connection_is_told_why_and_closed() {
    run(LIMIT, async {
        let mut env =
            EchoVat::start_configured("gov-vat-limit", |c| c.with_max_connections(2)).await;
        let mut second = env.raw().await;
        env.wait_connections(2).await;
        let mut third = env.raw().await;
        let reason = expect_abort_then_eof(&mut third).await;
        assert!(
            reason.contains("too many connections") && reason.contains("--capnp-max-connections"),
            "{reason}"
        );
        // One that speaks first (its input unread when it is refused)
        // still reads the abort: the connection is not reset.
        let mut eager = env.raw().await;
        let _ = eager.send(&bootstrap(0, "main")).await;
        let reason = expect_abort_then_eof(&mut eager).await;
        assert!(reason.contains("too many connections"), "{reason}");
        env.ping_good().await;
        expect_served(&mut second, 0).await;
        // The place is given back when a connection ends.
        drop(second);
        env.wait_connections(1).await;
        let mut again = env.raw().await;
        expect_served(&mut again, 0).await;
        drop(again);
        env.stop().await;
    });
}

/// Reads frames from a TCP stream until its end (at most `LIMIT`).
async fn tcp_frames(s: &mut tokio::net::TcpStream) -> Vec<In> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut buf)).await;
    let mut out = Vec::new();
    while let Some(n) = frame_len(&buf) {
        out.push(decode(&buf[..n]));
        buf.drain(..n);
    }
    out
}

#[test]
fn over_the_per_address_limit_a_connection_is_told_why_and_closed() {
    run(LIMIT, async {
        let config = VatConfig::new()
            .with_tls(false)
            .with_listen_address(Address::Tcp {
                host: "127.0.0.1".into(),
                port: 0,
            })
            .with_max_connections_per_peer(2);
        let service: Cap<echo::Client> = Cap::new(EchoService::new(
            Duration::from_millis(1),
            Sink::Memory(Default::default()),
        ));
        let raw = service.raw().clone();
        let vat = Vat::start_with(&config, move |uris| {
            let table = Table::new(move |id| uris.sturdy_uri(id));
            table.add(b"main", raw);
            table
        })
        .await
        .expect("the vat starts");
        let Some(Address::Tcp { port, .. }) = vat.address().cloned() else {
            panic!("a TCP address");
        };
        let connect = || tokio::net::TcpStream::connect(("127.0.0.1", port));
        let mut first = connect().await.expect("connect");
        let _second = connect().await.expect("connect");
        let deadline = tokio::time::Instant::now() + LIMIT;
        while vat.connections().await.len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "two connections");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut third = connect().await.expect("connect");
        let got = tcp_frames(&mut third).await;
        match got.as_slice() {
            [In::Abort { reason }] => assert!(
                reason.contains("per client address")
                    && reason.contains("--capnp-max-connections-per-peer"),
                "{reason}"
            ),
            other => panic!("expected one abort then the end, got {other:?}"),
        }
        // The first connection is still served.
        first.write_all(&bootstrap(0, "main")).await.expect("send");
        first.shutdown().await.expect("shutdown");
        let got = tcp_frames(&mut first).await;
        assert!(
            matches!(
                got.first(),
                Some(In::Return {
                    answer: 0,
                    ret: Ret::Results { .. }
                })
            ),
            "{got:?}"
        );
        drop(service);
        vat.stop();
    });
}

#[test]
fn a_silent_connection_is_aborted_at_its_first_message_deadline() {
    run(LIMIT, async {
        let mut env = EchoVat::start_configured("gov-first-message", |c| {
            c.with_first_message_deadline(Some(SHORT))
        })
        .await;
        let mut talker = env.raw().await;
        expect_served(&mut talker, 0).await;
        let mut silent = env.raw().await;
        let reason = expect_abort_then_eof(&mut silent).await;
        assert!(
            reason.contains("first-message deadline (200 ms)"),
            "{reason}"
        );
        // Past the deadline, the ones that spoke are still served.
        env.ping_good().await;
        expect_served(&mut talker, 1).await;
        drop(talker);
        env.stop().await;
    });
}

#[test]
fn an_idle_connection_is_closed_at_the_idle_timeout() {
    run(LIMIT, async {
        let mut env =
            EchoVat::start_configured("gov-idle", |c| c.with_idle_timeout(Some(SHORT))).await;
        let mut idle = env.raw().await;
        let export = expect_served(&mut idle, 0).await;
        // Holding nothing any more: closed once silent for the timeout.
        idle.send(&finish(0)).await.expect("send finish");
        idle.send(&release(export, 1)).await.expect("send release");
        let reason = expect_abort_then_eof(&mut idle).await;
        assert!(reason.contains("idle timeout"), "{reason}");
        // The good client holds a capability: it stays.
        env.ping_good().await;
        env.only_good_left().await;
        env.stop().await;
    });
}

/// Lowers the soft limit on open descriptors to `n`.
fn limit_descriptors(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = n.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

#[test]
fn the_listener_survives_descriptor_exhaustion() {
    isolated("the_listener_survives_descriptor_exhaustion", || {
        limit_descriptors(256);
        run(LIMIT, async {
            let mut env = EchoVat::start("gov-descriptors").await;
            // Take every descriptor left.
            let mut held = Vec::new();
            while let Ok(f) = std::fs::File::open("/dev/null") {
                held.push(f);
            }
            // One for a client, whose connection waits in the backlog: the
            // vat's accept fails for want of a descriptor.
            held.pop();
            let stream = tokio::net::UnixStream::connect(&env.socket)
                .await
                .expect("connect while the vat is out of descriptors");
            let mut waiting = RawPeer::from_stream(stream);
            tokio::time::sleep(SHORT).await;
            drop(held);
            // The listening socket was kept: the waiting client is served,
            // and so is a new one.
            expect_served(&mut waiting, 0).await;
            let mut late = env.raw().await;
            expect_served(&mut late, 0).await;
            env.ping_good().await;
            drop((waiting, late));
            env.stop().await;
        });
    });
}
