//! Shared by `hostile_peers.rs` and `floods.rs`: an echo vat on a Unix
//! socket with a well-behaved client, a raw peer that writes whatever bytes
//! it is given and decodes what comes back, builders for RPC messages,
//! a panic counter, the process RSS and a seeded PRNG.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

use capnp::message::{Builder, HeapAllocator, ReaderOptions};
use capnp::traits::{HasTypeId, ImbueMut};
use capnp_actix::restorer::Table;
use capnp_actix::schemas::echo_api_capnp::{callback, echo};
use capnp_actix::schemas::rpc_capnp::{
    cap_descriptor, disembargo, message, message_target, payload, promised_answer, return_,
};
use capnp_actix::vat::{Peer, Vat};
use capnp_actix::{Address, Cap, VatConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::echo_service::{EchoService, Sink};

/// How long any single wait of a test may take before it counts as a hang.
pub const STEP: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Test plumbing.

static SERIAL: Mutex<()> = Mutex::new(());

/// Tests of one binary run one at a time: they measure the RSS of the
/// whole process and count panics process-wide.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The variable that tells a child process which test it runs.
const CHILD: &str = "CAPNP_ACTIX_ISOLATED_TEST";

/// Runs test `name` (which calls this) in a process of its own: the test
/// binary again, filtered to that one test. Tests that measure the RSS do
/// this so that nothing freed by an earlier test in the same process (and
/// kept by the allocator) hides their growth. In the parent, the test
/// waits for the child (one child at a time) and fails with its output if
/// it fails; in the child, `body` runs.
pub fn isolated(name: &str, body: impl FnOnce()) {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        return body();
    }
    let _serial = serial();
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--include-ignored"])
        .args(["--test-threads", "1"])
        .env(CHILD, name)
        .output()
        .expect("running the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed in its own process ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // What the child reported (shown with --nocapture).
    for line in stderr.lines() {
        eprintln!("{line}");
    }
}

/// Runs `f` in a fresh actix system on this thread, failing the test if it
/// takes longer than `limit`.
pub fn run<F: Future>(limit: Duration, f: F) -> F::Output {
    install_panic_counter();
    actix::System::new().block_on(async move {
        match tokio::time::timeout(limit, f).await {
            Ok(out) => out,
            Err(_) => panic!("the test did not finish within {limit:?} (a hang?)"),
        }
    })
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic in the process (then runs the default hook), so that
/// a panic inside the vat, which the runtime would swallow with the actor
/// that panicked, still fails the test.
pub fn install_panic_counter() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info)
        }));
    });
}

/// Panics so far in this process.
pub fn panics() -> usize {
    PANICS.load(Ordering::SeqCst)
}

/// The resident set size of this process, in bytes (`/proc/self/statm`).
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages in statm");
    pages * 4096
}

/// `bytes` in MiB, for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A small seeded PRNG (splitmix64), so that "random" inputs are the same
/// on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

// ---------------------------------------------------------------------------
// The vat under test.

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh private directory under the system's temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "capnp-actix-{name}-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}

/// An echo vat (TLS off) listening on a Unix socket in a temporary
/// directory, serving the echo service under the empty ID and `main`, with
/// a well-behaved client vat connected to it.
pub struct EchoVat {
    pub vat: Vat,
    pub client_vat: Vat,
    /// The well-behaved client's handle on the echo service.
    pub good: Cap<echo::Client>,
    /// How the vat knows the good client.
    pub good_peer: Peer,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pings: usize,
}

impl EchoVat {
    pub async fn start(name: &str) -> EchoVat {
        Self::start_configured(name, |config| config).await
    }

    /// [`EchoVat::start`], with the serving vat's configuration changed by
    /// `configure` (limits, budgets).
    pub async fn start_configured(
        name: &str,
        configure: impl FnOnce(VatConfig) -> VatConfig,
    ) -> EchoVat {
        let dir = temp_dir(name);
        let socket = dir.join("vat.socket");
        let config = configure(
            VatConfig::new()
                .with_tls(false)
                .with_listen_address(Address::Unix(socket.clone())),
        );
        let service: Cap<echo::Client> = Cap::new(EchoService::new(
            Duration::from_millis(1),
            Sink::Memory(Default::default()),
        ));
        let raw = service.raw().clone();
        let vat = Vat::start_with(&config, move |uris| {
            let table = Table::new(move |id| uris.sturdy_uri(id));
            table.add(b"", raw.clone());
            table.add(b"main", raw);
            table
        })
        .await
        .expect("the vat starts");
        drop(service);
        let client_vat = Vat::client(&VatConfig::new().with_tls(false))
            .await
            .expect("the client vat starts");
        let uri = vat.sturdy_uri(b"main").expect("a URI");
        let good: Cap<echo::Client> = client_vat.import_as(&uri).await.expect("import");
        let mut env = EchoVat {
            vat,
            client_vat,
            good,
            good_peer: Peer::Anonymous(0),
            dir,
            socket,
            pings: 0,
        };
        env.ping_good().await;
        let list = env.vat.connections().await;
        assert_eq!(
            list.len(),
            1,
            "only the good client: {}",
            env.vat.dump().await
        );
        env.good_peer = list[0].peer.clone();
        env
    }

    /// The good client's ping works (within [`STEP`]).
    pub async fn ping_good(&mut self) {
        self.pings += 1;
        let msg = format!("good {}", self.pings);
        let reply = tokio::time::timeout(STEP, ping(&self.good, &msg))
            .await
            .expect("the good client's ping hangs")
            .unwrap_or_else(|e| panic!("the good client's ping failed: {e}"));
        assert_eq!(reply, format!("echo:{msg}"));
    }

    /// Waits (up to [`STEP`]) until the vat's only connection is the good
    /// client's.
    pub async fn only_good_left(&self) {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let list = self.vat.connections().await;
            if list.len() == 1 && list[0].peer == self.good_peer {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "expected only the good client's connection, have {}:\n{}",
                    list.len(),
                    self.vat.dump().await
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits (up to [`STEP`]) until the vat has `n` connections.
    pub async fn wait_connections(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + STEP;
        while self.vat.connections().await.len() != n {
            if tokio::time::Instant::now() > deadline {
                panic!("expected {n} connections, have:\n{}", self.vat.dump().await);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A raw peer connected to the vat.
    pub async fn raw(&self) -> RawPeer {
        RawPeer::connect(&self.socket).await
    }

    /// Stops both vats, checks that nothing stays alive and removes the
    /// temporary directory.
    pub async fn stop(self) {
        let EchoVat {
            vat,
            client_vat,
            good,
            dir,
            ..
        } = self;
        drop(good);
        client_vat.stop();
        vat.stop();
        drop((client_vat, vat));
        capnp_actix::debug::wait_all_released(Duration::from_secs(5))
            .await
            .unwrap_or_else(|r| panic!("still alive after the vats stopped:\n{r}"));
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `echo.ping(msg)` through the runtime.
pub async fn ping(cap: &Cap<echo::Client>, msg: &str) -> Result<String, capnp::Error> {
    let mut req = cap.client().ping_request();
    req.get().set_msg(msg);
    Ok(req.send().promise.await?.get()?.get_reply()?.to_string()?)
}

// ---------------------------------------------------------------------------
// Building messages.

/// The echo interface's ID, and the callback interface's.
pub const ECHO: u64 = <echo::Client as HasTypeId>::TYPE_ID;
pub const CALLBACK: u64 = <callback::Client as HasTypeId>::TYPE_ID;

/// A message as it goes on the wire (standard framing).
pub fn frame(m: &Builder<HeapAllocator>) -> Vec<u8> {
    let mut out = Vec::new();
    capnp::serialize::write_message(&mut out, m).expect("writing to a vector");
    out
}

/// Builds a message from its root.
pub fn build(f: impl FnOnce(message::Builder<'_>)) -> Vec<u8> {
    let mut m = Builder::new_default();
    f(m.init_root());
    frame(&m)
}

/// Frames back to back.
pub fn cat(a: Vec<u8>, b: Vec<u8>) -> Vec<u8> {
    let mut out = a;
    out.extend_from_slice(&b);
    out
}

/// A frame header (segment table) for segments of these sizes in words.
pub fn header(sizes: &[u32]) -> Vec<u8> {
    let mut out = ((sizes.len().max(1) - 1) as u32).to_le_bytes().to_vec();
    for s in sizes {
        out.extend_from_slice(&s.to_le_bytes());
    }
    if !out.len().is_multiple_of(8) {
        out.extend_from_slice(&[0; 4]);
    }
    out
}

/// The largest frame a vat accepts by default, in words (8 Mi).
pub const DEFAULT_MAX_WORDS: u32 = 8 * 1024 * 1024;

/// A capability descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desc {
    None,
    SenderHosted(u32),
    SenderPromise(u32),
    ReceiverHosted(u32),
    ReceiverAnswer(u32),
    Other,
}

fn set_desc(mut b: cap_descriptor::Builder<'_>, d: &Desc) {
    match d {
        Desc::None | Desc::Other => b.set_none(()),
        Desc::SenderHosted(id) => b.set_sender_hosted(*id),
        Desc::SenderPromise(id) => b.set_sender_promise(*id),
        Desc::ReceiverHosted(id) => b.set_receiver_hosted(*id),
        Desc::ReceiverAnswer(q) => b.init_receiver_answer().set_question_id(*q),
    }
}

/// The target of a call or disembargo.
#[derive(Debug, Clone)]
pub enum Target {
    Import(u32),
    Answer(u32, Vec<u16>),
}

fn set_target(b: message_target::Builder<'_>, t: &Target) {
    match t {
        Target::Import(id) => {
            let mut b = b;
            b.set_imported_cap(*id)
        }
        Target::Answer(q, path) => {
            let mut pa: promised_answer::Builder<'_> = b.init_promised_answer();
            pa.set_question_id(*q);
            let mut ops = pa.init_transform(path.len() as u32);
            for (i, f) in path.iter().enumerate() {
                ops.reborrow().get(i as u32).set_get_pointer_field(*f);
            }
        }
    }
}

fn set_caps(p: &mut payload::Builder<'_>, caps: &[Desc]) {
    let mut table = p.reborrow().init_cap_table(caps.len() as u32);
    for (i, d) in caps.iter().enumerate() {
        set_desc(table.reborrow().get(i as u32), d);
    }
}

pub fn bootstrap(question: u32, id: &str) -> Vec<u8> {
    build(|m| {
        let mut b = m.init_bootstrap();
        b.set_question_id(question);
        if !id.is_empty() {
            b.init_deprecated_object_id()
                .set_as::<capnp::text::Owned>(id)
                .expect("set text");
        }
    })
}

/// `echo.ping(msg)` on `target`.
pub fn ping_call(question: u32, target: &Target, msg: &str) -> Vec<u8> {
    build(|m| {
        let mut c = m.init_call();
        c.set_question_id(question);
        set_target(c.reborrow().init_target(), target);
        c.set_interface_id(ECHO);
        c.set_method_id(0);
        let mut p = c.init_params();
        // The cap table first, so that the text is the segment's last
        // object (tests cut it off).
        set_caps(&mut p, &[]);
        p.init_content()
            .init_as::<echo::ping_params::Builder<'_>>()
            .set_msg(msg);
    })
}

/// A placeholder hook, only there to make capnp write a capability
/// pointer (index 0) into a payload's content.
struct Placeholder;
impl callback::Server for Placeholder {}

/// `echo.heartbeat(msg, callback)` on `target`, the callback described by
/// `callback`.
pub fn heartbeat_call(question: u32, target: &Target, msg: &str, callback: Desc) -> Vec<u8> {
    build(|m| {
        let mut c = m.init_call();
        c.set_question_id(question);
        set_target(c.reborrow().init_target(), target);
        c.set_interface_id(ECHO);
        c.set_method_id(1);
        let mut p = c.init_params();
        let mut hooks = Vec::new();
        {
            let mut content = p.reborrow().init_content();
            content.imbue_mut(&mut hooks);
            let mut hb = content.init_as::<echo::heartbeat_params::Builder<'_>>();
            hb.set_msg(msg);
            hb.set_callback(capnp_rpc::new_client::<callback::Client, _>(Placeholder));
        }
        assert_eq!(hooks.len(), 1, "one capability pointer, index 0");
        set_caps(&mut p, &[callback]);
    })
}

/// A successful return with an empty struct as results.
pub fn return_empty(answer: u32) -> Vec<u8> {
    build(|m| {
        let mut r = m.init_return();
        r.set_answer_id(answer);
        r.set_release_param_caps(false);
        let mut p = r.init_results();
        p.reborrow()
            .init_content()
            .init_as::<callback::log_results::Builder<'_>>();
        set_caps(&mut p, &[]);
    })
}

pub fn return_exception(answer: u32, reason: &str) -> Vec<u8> {
    build(|m| {
        let mut r = m.init_return();
        r.set_answer_id(answer);
        r.set_release_param_caps(false);
        r.init_exception().set_reason(reason);
    })
}

pub fn finish(question: u32) -> Vec<u8> {
    build(|m| {
        let mut f = m.init_finish();
        f.set_question_id(question);
        f.set_release_result_caps(false);
    })
}

pub fn release(id: u32, count: u32) -> Vec<u8> {
    build(|m| {
        let mut r = m.init_release();
        r.set_id(id);
        r.set_reference_count(count);
    })
}

pub fn resolve(promise: u32, to: Desc) -> Vec<u8> {
    build(|m| {
        let mut r = m.init_resolve();
        r.set_promise_id(promise);
        set_desc(r.init_cap(), &to);
    })
}

pub fn resolve_broken(promise: u32, reason: &str) -> Vec<u8> {
    build(|m| {
        let mut r = m.init_resolve();
        r.set_promise_id(promise);
        r.init_exception().set_reason(reason);
    })
}

/// `disembargo` with context `senderLoopback` (a request) or
/// `receiverLoopback` (a reply).
pub fn disembargo(target: &Target, embargo: u32, request: bool) -> Vec<u8> {
    build(|m| {
        let mut d = m.init_disembargo();
        set_target(d.reborrow().init_target(), target);
        let mut ctx: disembargo::context::Builder<'_> = d.init_context();
        if request {
            ctx.set_sender_loopback(embargo);
        } else {
            ctx.set_receiver_loopback(embargo);
        }
    })
}

pub fn abort(reason: &str) -> Vec<u8> {
    build(|m| {
        m.init_abort().set_reason(reason);
    })
}

// ---------------------------------------------------------------------------
// Reading messages.

/// What the vat sent, decoded into the parts the tests look at.
#[derive(Debug, Clone)]
pub enum In {
    Abort {
        reason: String,
    },
    Return {
        answer: u32,
        ret: Ret,
    },
    Call {
        question: u32,
        target: Option<u32>,
        interface_id: u64,
        method_id: u16,
        caps: Vec<Desc>,
    },
    Finish {
        question: u32,
    },
    Release {
        id: u32,
        count: u32,
    },
    Resolve {
        promise: u32,
    },
    Disembargo,
    Unimplemented,
    Bootstrap {
        question: u32,
    },
    Other,
}

#[derive(Debug, Clone)]
pub enum Ret {
    /// Results: their cap table, and the first text field of the content
    /// when it is a struct that has one (a ping's reply).
    Results {
        caps: Vec<Desc>,
        text: Option<String>,
    },
    Exception {
        reason: String,
    },
    Canceled,
    Other,
}

fn read_desc(d: cap_descriptor::Reader<'_>) -> Desc {
    match d.which() {
        Ok(cap_descriptor::None(())) => Desc::None,
        Ok(cap_descriptor::SenderHosted(id)) => Desc::SenderHosted(id),
        Ok(cap_descriptor::SenderPromise(id)) => Desc::SenderPromise(id),
        Ok(cap_descriptor::ReceiverHosted(id)) => Desc::ReceiverHosted(id),
        Ok(cap_descriptor::ReceiverAnswer(Ok(a))) => Desc::ReceiverAnswer(a.get_question_id()),
        _ => Desc::Other,
    }
}

fn read_caps(p: payload::Reader<'_>) -> Vec<Desc> {
    p.get_cap_table()
        .map(|t| t.iter().map(read_desc).collect())
        .unwrap_or_default()
}

/// Decodes one frame the vat sent (panics if it is not a valid message:
/// the vat must always write valid ones).
pub fn decode(frame: &[u8]) -> In {
    let mut options = ReaderOptions::new();
    options.traversal_limit_in_words(None);
    let reader = capnp::serialize::read_message(&mut &frame[..], options)
        .expect("the vat writes valid frames");
    let root: message::Reader<'_> = reader.get_root().expect("a message root");
    match root.which() {
        Ok(message::Abort(Ok(e))) => In::Abort {
            reason: e
                .get_reason()
                .ok()
                .and_then(|t| t.to_string().ok())
                .unwrap_or_default(),
        },
        Ok(message::Return(Ok(r))) => {
            let ret = match r.which() {
                Ok(return_::Results(Ok(p))) => {
                    let text = p
                        .get_content()
                        .get_as::<echo::ping_results::Reader<'_>>()
                        .ok()
                        .and_then(|s| s.get_reply().ok())
                        .and_then(|t| t.to_string().ok());
                    Ret::Results {
                        caps: read_caps(p),
                        text,
                    }
                }
                Ok(return_::Exception(Ok(e))) => Ret::Exception {
                    reason: e
                        .get_reason()
                        .ok()
                        .and_then(|t| t.to_string().ok())
                        .unwrap_or_default(),
                },
                Ok(return_::Canceled(())) => Ret::Canceled,
                _ => Ret::Other,
            };
            In::Return {
                answer: r.get_answer_id(),
                ret,
            }
        }
        Ok(message::Call(Ok(c))) => In::Call {
            question: c.get_question_id(),
            target: c.get_target().ok().and_then(|t| match t.which() {
                Ok(message_target::ImportedCap(id)) => Some(id),
                _ => None,
            }),
            interface_id: c.get_interface_id(),
            method_id: c.get_method_id(),
            caps: c.get_params().map(read_caps).unwrap_or_default(),
        },
        Ok(message::Finish(Ok(f))) => In::Finish {
            question: f.get_question_id(),
        },
        Ok(message::Release(Ok(r))) => In::Release {
            id: r.get_id(),
            count: r.get_reference_count(),
        },
        Ok(message::Resolve(Ok(r))) => In::Resolve {
            promise: r.get_promise_id(),
        },
        Ok(message::Disembargo(_)) => In::Disembargo,
        Ok(message::Unimplemented(_)) => In::Unimplemented,
        Ok(message::Bootstrap(Ok(b))) => In::Bootstrap {
            question: b.get_question_id(),
        },
        _ => In::Other,
    }
}

/// The length of the complete frame at the start of `buf`, if it is there.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let word = |at: usize| -> Option<u64> {
        let b = buf.get(at..at + 4)?;
        Some(u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    };
    let count = word(0)? + 1;
    assert!(count < 1024, "the vat wrote a frame of {count} segments");
    let header = ((4 + 4 * count + 7) & !7) as usize;
    let mut words = 0;
    for i in 0..count as usize {
        words += word(4 + 4 * i)?;
    }
    let len = header + words as usize * 8;
    (buf.len() >= len).then_some(len)
}

/// A peer that talks to the vat in raw bytes over a Unix socket.
pub struct RawPeer {
    rd: OwnedReadHalf,
    /// `None` once taken by [`RawPeer::take_writer`].
    wr: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
    eof: bool,
    /// The last messages received (at most [`SEEN`]), for failure messages.
    pub seen: Vec<In>,
}

/// How many received messages a [`RawPeer`] keeps for failure messages.
const SEEN: usize = 32;

impl RawPeer {
    pub async fn connect(path: &Path) -> RawPeer {
        let stream = tokio::time::timeout(STEP, UnixStream::connect(path))
            .await
            .expect("connect hangs")
            .expect("connect");
        Self::from_stream(stream)
    }

    pub fn from_stream(stream: UnixStream) -> RawPeer {
        let (rd, wr) = stream.into_split();
        RawPeer {
            rd,
            wr: Some(wr),
            buf: Vec::new(),
            eof: false,
            seen: Vec::new(),
        }
    }

    /// Writes `bytes`. An error (the vat closed the connection) is given
    /// back rather than failing the test: a vat may close before reading
    /// everything a hostile peer sends.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let wr = self.wr.as_mut().expect("the writing half is ours");
        match tokio::time::timeout(STEP, wr.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => panic!("writing {} bytes to the vat hangs", bytes.len()),
        }
    }

    /// Closes our sending side (the vat sees end of stream and may still
    /// write to us).
    pub async fn close_write(&mut self) {
        if let Some(wr) = self.wr.as_mut() {
            let _ = tokio::time::timeout(STEP, wr.shutdown()).await;
        }
    }

    /// The writing half, for a task that writes on its own (the peer
    /// goes on reading).
    pub fn take_writer(&mut self) -> OwnedWriteHalf {
        self.wr.take().expect("the writing half is ours")
    }

    /// The next complete frame, or `None` at end of stream (an incomplete
    /// frame at end of stream fails the test).
    pub async fn next_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(n) = frame_len(&self.buf) {
                let rest = self.buf.split_off(n);
                return Some(std::mem::replace(&mut self.buf, rest));
            }
            if self.eof {
                assert!(
                    self.buf.is_empty(),
                    "the vat's stream ended inside a frame ({} bytes)",
                    self.buf.len()
                );
                return None;
            }
            let mut chunk = vec![0u8; 256 * 1024];
            let n = match tokio::time::timeout(STEP, self.rd.read(&mut chunk)).await {
                Ok(Ok(n)) => n,
                // A reset after the vat closed with our bytes unread.
                Ok(Err(_)) => 0,
                Err(_) => panic!(
                    "no message and no end of stream from the vat within {STEP:?}; seen: {:?}",
                    self.seen
                ),
            };
            if n == 0 {
                self.eof = true;
            } else {
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }

    /// Everything left to read until the end of the stream (or a reset),
    /// whole frames or not: for a vat that may close inside a frame.
    /// Waits at most [`STEP`] for each read.
    pub async fn rest_raw(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        while !self.eof {
            let mut chunk = vec![0u8; 256 * 1024];
            match tokio::time::timeout(STEP, self.rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => self.eof = true,
                Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("no end of stream from the vat within {STEP:?}"),
            }
        }
        out
    }

    /// The next message, or `None` at end of stream.
    pub async fn next(&mut self) -> Option<In> {
        let frame = self.next_frame().await?;
        let m = decode(&frame);
        if self.seen.len() == SEEN {
            self.seen.remove(0);
        }
        self.seen.push(m.clone());
        Some(m)
    }

    /// The next message, which must not be the end of stream.
    pub async fn expect(&mut self) -> In {
        match self.next().await {
            Some(m) => m,
            None => panic!(
                "the vat closed the connection; seen before: {:?}",
                self.seen
            ),
        }
    }

    /// Reads until the vat's `abort` and returns its reason, after checking
    /// that the reason is not empty, that it contains every one of
    /// `needles` and that the stream ends right after it.
    pub async fn expect_abort(&mut self, needles: &[&str]) -> String {
        loop {
            match self.next().await {
                Some(In::Abort { reason }) => {
                    assert!(!reason.is_empty(), "an abort without a reason");
                    for n in needles {
                        assert!(
                            reason.contains(n),
                            "the abort's reason {reason:?} does not name {n:?}"
                        );
                    }
                    self.expect_eof().await;
                    return reason;
                }
                Some(_) => {}
                None => panic!(
                    "the connection ended without an abort (expected one naming {needles:?}); seen: {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Reads to the end of the stream; nothing but the end may come.
    pub async fn expect_eof(&mut self) {
        if let Some(m) = self.next().await {
            panic!("expected the end of the stream, got {m:?}");
        }
    }

    /// Reads to the end of the stream, keeping what arrives.
    pub async fn drain(&mut self) -> Vec<In> {
        let mut out = Vec::new();
        while let Some(m) = self.next().await {
            out.push(m);
        }
        out
    }

    /// Bootstraps the service `id` with question `question` and returns
    /// the export ID of what the vat sent.
    pub async fn bootstrap(&mut self, question: u32, id: &str) -> u32 {
        self.send(&bootstrap(question, id)).await.expect("send");
        match self.expect().await {
            In::Return {
                answer,
                ret: Ret::Results { caps, .. },
            } if answer == question => match caps.as_slice() {
                [Desc::SenderHosted(e)] | [Desc::SenderPromise(e)] => *e,
                other => panic!("bootstrap returned caps {other:?}"),
            },
            other => panic!("expected the bootstrap's return, got {other:?}"),
        }
    }

    /// Pings `target` with question `question` and returns the reply.
    pub async fn ping(&mut self, question: u32, target: &Target, msg: &str) -> String {
        self.send(&ping_call(question, target, msg))
            .await
            .expect("send");
        match self.expect().await {
            In::Return {
                answer,
                ret: Ret::Results {
                    text: Some(reply), ..
                },
            } if answer == question => reply,
            other => panic!("expected the ping's return, got {other:?}"),
        }
    }
}
