//! Streaming calls (`-> stream`, `ByteSink.write` of files.capnp): the
//! caller keeps a window of writes in flight and stays in order; the
//! served side runs them one at a time, in order, and the call ending the
//! stream after them; the first failed write fails every later write and
//! `end` with its error. The scenarios run on a local capability and
//! through a connection over a Unix socket, and end with nothing alive.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capnp_actix::schemas::files_capnp::byte_sink;
use capnp_actix::stream::WindowConfig;
use capnp_actix::vat::{self, Services};
use capnp_actix::{Address, Cap};

/// A sink that records the first byte of each write, taking `delay` per
/// write, noting whether two calls ever ran at once, and failing the write
/// whose first byte is `fail_at`.
struct Recorder {
    probe: Probe,
    running: Cell<bool>,
    delay: Duration,
    fail_at: Option<u8>,
}

/// What a test sees of a [`Recorder`].
#[derive(Clone, Default)]
struct Probe {
    seen: Rc<RefCell<Vec<u8>>>,
    overlapped: Rc<Cell<bool>>,
    done: Arc<AtomicUsize>,
}

impl byte_sink::Server for Recorder {
    async fn write(self: Rc<Self>, params: byte_sink::WriteParams) -> Result<(), capnp::Error> {
        let first = params.get()?.get_bytes()?[0];
        if self.running.replace(true) {
            self.probe.overlapped.set(true);
        }
        self.probe.seen.borrow_mut().push(first);
        tokio::time::sleep(self.delay).await;
        self.running.set(false);
        self.probe.done.fetch_add(1, Ordering::SeqCst);
        if Some(first) == self.fail_at {
            return Err(capnp::Error::failed(format!("disk full at write {first}")));
        }
        Ok(())
    }

    async fn end(
        self: Rc<Self>,
        _: byte_sink::EndParams,
        mut results: byte_sink::EndResults,
    ) -> Result<(), capnp::Error> {
        if self.running.get() {
            self.probe.overlapped.set(true);
        }
        results
            .get()
            .set_size(self.probe.seen.borrow().len() as u64);
        Ok(())
    }
}

fn recorder(delay: Duration, fail_at: Option<u8>) -> (Cap<byte_sink::Client>, Probe) {
    let probe = Probe::default();
    let cap = Cap::new(Recorder {
        probe: probe.clone(),
        running: Cell::new(false),
        delay,
        fail_at,
    });
    (cap, probe)
}

/// Runs `scenario` on a sink `make` gives, then on another one's import
/// over a Unix socket.
async fn both_ways<M, F, Fut>(tag: &str, make: M, scenario: F)
where
    M: Fn() -> (Cap<byte_sink::Client>, Probe),
    F: Fn(byte_sink::Client, Probe) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (local, probe) = make();
    scenario(local.client(), probe).await;
    drop(local);

    let (served, probe) = make();
    let path = std::env::temp_dir().join(format!(
        "capnp-actix-stream-{tag}-{}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let mut services = Services::new();
    services.add("sink", &served);
    drop(served);
    let address = Address::parse(&format!("unix:{}", path.display())).unwrap();
    let listening = vat::serve(&address, services).await.unwrap();
    let conn = vat::connect(listening.address()).await.unwrap();
    let remote: Cap<byte_sink::Client> = Cap::from_raw(conn.bootstrap(b"sink"));
    scenario(remote.client(), probe).await;
    drop(remote);
    conn.close("test over");
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the connection ends");
    listening.stop();
    let _ = std::fs::remove_file(&path);
}

async fn write(sink: &byte_sink::Client, first: u8, len: usize) -> Result<(), capnp::Error> {
    let mut bytes = vec![0u8; len];
    bytes[0] = first;
    let mut request = sink.write_request();
    request.get().set_bytes(&bytes);
    request.send().await
}

async fn end(sink: &byte_sink::Client) -> Result<u64, capnp::Error> {
    Ok(sink.end_request().send().promise.await?.get()?.get_size())
}

async fn released() {
    capnp_actix::debug::wait_all_released(Duration::from_secs(5))
        .await
        .unwrap_or_else(|report| panic!("still alive:\n{report}"));
}

#[actix::test]
async fn writes_stay_in_flight_run_in_order_one_at_a_time_and_end_runs_last() {
    let make = || recorder(Duration::from_millis(5), None);
    both_ways("order", make, |sink, probe| async move {
        // 40 small writes, each taking 5 ms to serve: the window has room
        // for all of them, so every send resolves long before they have run.
        for i in 0..40u8 {
            write(&sink, i, 100).await.unwrap();
        }
        let done_when_sent = probe.done.load(Ordering::SeqCst);
        assert!(
            done_when_sent < 20,
            "sends waited for {done_when_sent} returns"
        );
        assert_eq!(end(&sink).await.unwrap(), 40);
        assert_eq!(*probe.seen.borrow(), (0..40u8).collect::<Vec<_>>());
        assert!(!probe.overlapped.get(), "two writes (or end) ran at once");
    })
    .await;
    released().await;
}

#[actix::test]
async fn the_window_holds_a_fast_writer_back() {
    {
        let (cap, probe) = recorder(Duration::from_millis(2), None);
        assert!(cap.raw().set_stream_window(WindowConfig::fixed(64 * 1024)));
        let sink = cap.client();
        // 64 writes of 16 KiB = 1 MiB through a 64 KiB window: the writer
        // stays a few writes ahead of the sink.
        for i in 0..64u8 {
            write(&sink, i, 16 * 1024).await.unwrap();
            let ahead = i as usize + 1 - probe.done.load(Ordering::SeqCst);
            assert!(
                ahead <= 9,
                "{ahead} writes of 16 KiB in flight in a 64 KiB window"
            );
        }
        assert_eq!(end(&sink).await.unwrap(), 64);
        assert_eq!(cap.raw().stream_window(), Some(64 * 1024));
        // The stream's window is set once.
        assert!(!cap.raw().set_stream_window(WindowConfig::fixed(1)));
    }
    released().await;
}

#[actix::test]
async fn a_failed_write_fails_every_later_write_and_end_with_its_error() {
    let make = || recorder(Duration::from_millis(1), Some(3));
    both_ways("fail", make, |sink, probe| async move {
        // The sends resolve as the window allows; a write's failure shows
        // on the writes sent after it is known.
        for i in 0..20u8 {
            if let Err(e) = write(&sink, i, 100).await {
                assert!(e.to_string().contains("disk full at write 3"), "{e}");
            }
        }
        let ended = end(&sink)
            .await
            .expect_err("end fails after a failed write");
        assert!(
            ended.to_string().contains("disk full at write 3"),
            "{ended}"
        );
        // No write after the failed one ran.
        assert_eq!(*probe.seen.borrow(), [0, 1, 2, 3]);
        let later = write(&sink, 99, 1).await.expect_err("later writes fail");
        assert!(
            later.to_string().contains("disk full at write 3"),
            "{later}"
        );
    })
    .await;
    released().await;
}
