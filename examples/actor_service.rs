//! A Cap'n Proto service living inside your own actix actor.
//!
//! Run it with `cargo run --example actor_service`.
//!
//! There are two ways to serve a capability with capnp-actix:
//!
//! * **A plain service** ([`Cap::new`]): a value implementing a generated
//!   `Server` trait is hosted in a capability actor of its own. Its methods
//!   get `Rc<Self>`, so mutable state needs a `Cell` or `RefCell`.
//! * **Your own actor** ([`Cap::from_actor`]): an actor that implements
//!   `Handler<IncomingCall>` receives every call on the capability as a
//!   message, in order. In `handle` it has `&mut self` and its `Context`:
//!   it updates its state there, then answers with [`IncomingCall::serve`],
//!   giving a short-lived "view" (a value implementing the `Server` trait
//!   built from a snapshot of the state and the actor's address). The view's
//!   methods may run past `handle`, so they reach the actor again through
//!   its address, as any other code would.
//!
//! Here a `Counter` actor serves both the `Echo` and the `Callback`
//! interface through the same address: pings are numbered by the actor
//! (`echo:MSG (call N)`), `getLogger` hands out the actor itself as a
//! `Callback`, and logged lines are kept in the actor's state. A plain
//! service runs beside it for comparison. Finally, a capability is moved to
//! another arbiter (thread) and called there: [`Cap`] is `Send + Sync`,
//! while the generated client is made on the thread that uses it, with
//! [`Cap::client`]. The example checks every reply and exits non-zero on a
//! wrong one.

#[path = "common/logging.rs"]
mod logging;

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message};
use capnp::traits::HasTypeId;
use capnp_actix::schemas::echo_api_capnp::{callback, echo};
use capnp_actix::{Cap, IncomingCall};

type BoxError = Box<dyn Error>;

// ---------------------------------------------------------------------------
// Style 1: the service inside the user's own actor.
// ---------------------------------------------------------------------------

/// The user's actor: it owns the state.
#[derive(Default)]
struct Counter {
    /// Pings answered so far.
    pings: u64,
    /// Calls of any kind received so far.
    calls: u64,
    /// Lines logged through the `Callback` interface.
    logged: Vec<String>,
}

impl Actor for Counter {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        println!("counter actor: stopped after {} calls", self.calls);
    }
}

impl Handler<IncomingCall> for Counter {
    type Result = ();

    fn handle(&mut self, call: IncomingCall, ctx: &mut Self::Context) {
        self.calls += 1;
        let owner = ctx.address();
        match call.interface_id() {
            echo::Client::TYPE_ID => {
                // Method 0 is `ping` (the ordinal in echo_api.capnp).
                if call.method_id() == 0 {
                    self.pings += 1;
                }
                call.serve::<echo::Client, _>(EchoView {
                    call_number: self.pings,
                    owner,
                });
            }
            callback::Client::TYPE_ID => {
                call.serve::<callback::Client, _>(LogView { owner });
            }
            // Anything else: serving it with a view of the wrong interface
            // makes the caller's promise fail with Unimplemented.
            _ => call.serve::<callback::Client, _>(LogView { owner }),
        }
    }
}

/// What the actor knows about a call to `Echo`: the snapshot taken in
/// `handle`, and the way back to the actor.
struct EchoView {
    call_number: u64,
    owner: Addr<Counter>,
}

impl echo::Server for EchoView {
    async fn ping(
        self: Rc<Self>,
        params: echo::PingParams,
        mut results: echo::PingResults,
    ) -> Result<(), capnp::Error> {
        let msg = params.get()?.get_msg()?.to_str()?;
        results
            .get()
            .set_reply(format!("echo:{msg} (call {})", self.call_number));
        Ok(())
    }

    async fn heartbeat(
        self: Rc<Self>,
        params: echo::HeartbeatParams,
        _: echo::HeartbeatResults,
    ) -> Result<(), capnp::Error> {
        // Runs after `handle` returned: ask the actor for its current state.
        let p = params.get()?;
        let msg = p.get_msg()?.to_string()?;
        let callback = p.get_callback()?;
        let stats = self
            .owner
            .send(GetStats)
            .await
            .map_err(|e| capnp::Error::disconnected(format!("counter actor gone: {e}")))?;
        let mut request = callback.log_request();
        request
            .get()
            .set_msg(format!("{msg}: {} pings so far", stats.pings));
        request.send().promise.await?;
        Ok(())
    }

    async fn get_logger(
        self: Rc<Self>,
        _: echo::GetLoggerParams,
        mut results: echo::GetLoggerResults,
    ) -> Result<(), capnp::Error> {
        // The actor itself, seen as a `Callback`: calls on it arrive in the
        // same mailbox, tagged with the Callback interface id.
        let logger = Cap::<callback::Client>::from_actor(self.owner.clone());
        results.get().set_callback(logger.client());
        Ok(())
    }
}

/// What the actor knows about a call to `Callback`.
struct LogView {
    owner: Addr<Counter>,
}

impl callback::Server for LogView {
    async fn log(
        self: Rc<Self>,
        params: callback::LogParams,
        _: callback::LogResults,
    ) -> Result<(), capnp::Error> {
        let msg = params.get()?.get_msg()?.to_string()?;
        // State changes go through the actor's mailbox.
        self.owner
            .send(Record(msg))
            .await
            .map_err(|e| capnp::Error::disconnected(format!("counter actor gone: {e}")))?;
        Ok(())
    }
}

/// Keep a logged line.
struct Record(String);

impl Message for Record {
    type Result = ();
}

impl Handler<Record> for Counter {
    type Result = ();
    fn handle(&mut self, Record(line): Record, _: &mut Self::Context) {
        self.logged.push(line);
    }
}

/// The actor's state, as ordinary actix code sees it.
#[derive(Debug, Clone, PartialEq)]
struct Stats {
    pings: u64,
    calls: u64,
    logged: Vec<String>,
}

struct GetStats;

impl Message for GetStats {
    type Result = Stats;
}

impl Handler<GetStats> for Counter {
    type Result = actix::MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        actix::MessageResult(Stats {
            pings: self.pings,
            calls: self.calls,
            logged: self.logged.clone(),
        })
    }
}

/// Stop the actor now (it would otherwise live while any address or
/// capability refers to it: the actor decides its own lifetime).
struct Shutdown;

impl Message for Shutdown {
    type Result = ();
}

impl Handler<Shutdown> for Counter {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

// ---------------------------------------------------------------------------
// Style 2: a plain service in its own capability actor.
// ---------------------------------------------------------------------------

/// The same numbering, kept in the service value itself.
#[derive(Default)]
struct PlainEcho {
    pings: Cell<u64>,
}

impl echo::Server for PlainEcho {
    async fn ping(
        self: Rc<Self>,
        params: echo::PingParams,
        mut results: echo::PingResults,
    ) -> Result<(), capnp::Error> {
        let n = self.pings.get() + 1;
        self.pings.set(n);
        let msg = params.get()?.get_msg()?.to_str()?;
        results.get().set_reply(format!("echo:{msg} (call {n})"));
        Ok(())
    }
}

/// Prints what the service sends to it, and keeps it.
struct PrintLog {
    got: Rc<RefCell<Vec<String>>>,
}

impl callback::Server for PrintLog {
    async fn log(
        self: Rc<Self>,
        params: callback::LogParams,
        _: callback::LogResults,
    ) -> Result<(), capnp::Error> {
        let msg = params.get()?.get_msg()?.to_str()?;
        println!("client callback: got {msg:?}");
        self.got.borrow_mut().push(msg.to_owned());
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The walk-through.
// ---------------------------------------------------------------------------

async fn ping(client: &echo::Client, msg: &str) -> Result<String, capnp::Error> {
    let mut request = client.ping_request();
    request.get().set_msg(msg);
    let response = request.send().promise.await?;
    Ok(response.get()?.get_reply()?.to_str()?.to_owned())
}

fn expect(what: &str, got: &str, want: &str) -> Result<(), BoxError> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want:?}, got {got:?}").into())
    }
}

async fn run() -> Result<(), BoxError> {
    let counter = Counter::default().start();
    // Another arbiter: a thread with its own event loop, in this system.
    let arbiter = actix::Arbiter::new();
    {
        // --- The actor-hosted service ---
        let service = Cap::<echo::Client>::from_actor(counter.clone());
        let client = service.client();
        for (i, msg) in ["one", "two"].into_iter().enumerate() {
            let reply = ping(&client, msg).await?;
            println!("actor service: ping({msg:?}) -> {reply:?}");
            expect(
                "actor ping",
                &reply,
                &format!("echo:{msg} (call {})", i + 1),
            )?;
        }

        // The view asks the actor for its state while it runs.
        let got = Rc::new(RefCell::new(Vec::new()));
        let printer: Cap<callback::Client> = Cap::new(PrintLog { got: got.clone() });
        let mut request = client.heartbeat_request();
        request.get().set_msg("beat");
        request.get().set_callback(printer.client());
        request.send().promise.await?;
        let got = got.borrow().join("\n");
        expect("heartbeat callback", &got, "beat: 2 pings so far")?;

        // The actor hands out itself as a logger; pipelined, as in the
        // tutorial: `log` is sent before `getLogger` has answered.
        let logger = client.get_logger_request().send().pipeline.get_callback();
        let mut request = logger.log_request();
        request.get().set_msg("kept in the actor's state");
        request.send().promise.await?;

        // --- A plain service, side by side ---
        let plain: Cap<echo::Client> = Cap::new(PlainEcho::default());
        let plain_client = plain.client();
        let reply = ping(&plain_client, "one").await?;
        println!("plain service: ping(\"one\") -> {reply:?}");
        expect("plain ping", &reply, "echo:one (call 1)")?;

        // --- Moving capabilities to another arbiter ---
        let (done_tx, done_rx) = futures::channel::oneshot::channel();
        let moved_actor = service.clone();
        let moved_plain = plain.clone();
        let main_thread = std::thread::current().id();
        // Only the `Cap`s cross threads. Calls made with a generated client
        // are futures that stay on their thread (capnp's hooks are not
        // `Send`), so the closure sent over spawns them locally there.
        let spawned = arbiter.spawn_fn(move || {
            actix::spawn(async move {
                let outcome = async {
                    if std::thread::current().id() == main_thread {
                        return Err("the arbiter runs on the main thread".to_string());
                    }
                    // Clients are made on the thread that uses them.
                    let actor_client = moved_actor.client();
                    let plain_client = moved_plain.client();
                    let a = ping(&actor_client, "from the arbiter")
                        .await
                        .map_err(|e| e.to_string())?;
                    let p = ping(&plain_client, "from the arbiter")
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok((a, p))
                }
                .await;
                // Everything the arbiter held is dropped before we report.
                drop((moved_actor, moved_plain));
                let _ = done_tx.send(outcome);
            });
        });
        if !spawned {
            return Err("could not reach the new arbiter".into());
        }
        let (a, p) = done_rx.await??;
        println!("arbiter thread: actor service -> {a:?}");
        println!("arbiter thread: plain service -> {p:?}");
        expect(
            "actor ping from arbiter",
            &a,
            "echo:from the arbiter (call 3)",
        )?;
        expect(
            "plain ping from arbiter",
            &p,
            "echo:from the arbiter (call 2)",
        )?;

        // A service hosted on the other arbiter, called from here.
        let remote: Cap<echo::Client> = Cap::new_on(&arbiter.handle(), PlainEcho::default);
        let reply = ping(&remote.client(), "hosted over there").await?;
        println!("main thread: service on the arbiter -> {reply:?}");
        expect("ping to arbiter", &reply, "echo:hosted over there (call 1)")?;
    }

    // --- What the actor saw ---
    let stats = counter.send(GetStats).await?;
    println!(
        "counter actor: {} pings, {} calls, logged {:?}",
        stats.pings, stats.calls, stats.logged
    );
    let want = Stats {
        pings: 3,
        // ping x2, heartbeat, getLogger, log, ping from the arbiter
        calls: 6,
        logged: vec!["kept in the actor's state".to_string()],
    };
    if stats != want {
        return Err(format!("counter actor state: expected {want:?}, got {stats:?}").into());
    }

    counter.send(Shutdown).await?;
    drop(counter);
    capnp_actix::debug::wait_all_released(Duration::from_secs(2))
        .await
        .map_err(|report| format!("capabilities or actors still alive after 2 s:\n{report}"))?;
    println!("all capabilities released");
    // The other arbiter hosted a service until the release above; its
    // thread is no longer needed.
    arbiter.stop();
    Ok(())
}

fn main() -> ExitCode {
    logging::init();
    match actix::System::new().block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("actor_service: {e}");
            ExitCode::FAILURE
        }
    }
}
