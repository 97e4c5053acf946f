//! Services written as actix actors (`capnp_actix::actor`, the generated
//! traits of `echo_api_capnp::actors`): typed params and results on the
//! actor's own state, one mailbox crossing per call, E-order, actor futures
//! that await other capabilities (`Reply::Later`, `Reply::Atomic`), errors
//! for what the actor does not serve, panics (the call fails naming the
//! method; a supervised actor restarts with fresh state and the capability
//! keeps working), and an interface that extends another
//! (`test_api_capnp::actors::Tally`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capnp_actix::actix::{
    self, Actor, ActorFutureExt, AsyncContext, Context, Handler, Supervised, Supervisor, WrapFuture,
};
use capnp_actix::schemas::calculator_capnp::calculator;
use capnp_actix::schemas::echo_api_capnp::{actors, callback, echo};
use capnp_actix::schemas::test_api_capnp::actors as test_actors;
use capnp_actix::schemas::test_api_capnp::{probe, tally};
use capnp_actix::{capnp, Cap, IncomingCall, Reply};
use futures::channel::oneshot;

/// The actor under test. `handled` counts the messages its mailbox
/// delivered; everything else is what its methods did.
struct Probe {
    handled: u64,
    pings: u64,
    logged: Vec<String>,
    /// Awaited by `createLogger` (an atomic reply).
    gate: Cap<callback::Client>,
    /// Restarts so far, shared with the test.
    restarts: Arc<AtomicUsize>,
}

impl Probe {
    fn new(gate: &Cap<callback::Client>, restarts: &Arc<AtomicUsize>) -> Self {
        Probe {
            handled: 0,
            pings: 0,
            logged: Vec::new(),
            gate: gate.clone(),
            restarts: restarts.clone(),
        }
    }
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Supervised for Probe {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts.fetch_add(1, Ordering::SeqCst);
        *self = Probe::new(&self.gate, &self.restarts);
    }
}

// Written by hand (rather than with `serve_actor!`) to count deliveries.
impl Handler<IncomingCall> for Probe {
    type Result = ();
    fn handle(&mut self, call: IncomingCall, ctx: &mut Context<Self>) {
        self.handled += 1;
        let id = call.interface_id();
        let route = <Self as actors::Echo>::__capnp_actix_route(id)
            .or_else(|| <Self as actors::Callback>::__capnp_actix_route(id));
        call.serve_actor(self, ctx, route);
    }
}

impl actors::Echo for Probe {
    /// `ping(msg)`: counts, and tells what it saw. `panic` panics; `state`
    /// reports the state without counting.
    fn ping(
        &mut self,
        params: echo::PingParams,
        mut results: echo::PingResults,
        _: &mut Context<Self>,
    ) -> Result<Reply<Self>, capnp::Error> {
        let msg = params.get()?.get_msg()?.to_string()?;
        match msg.as_str() {
            "panic" => panic!("ping was told to panic"),
            "state" => {
                let state = format!("{} pings, logged {:?}", self.pings, self.logged);
                results.get().set_reply(state);
            }
            _ => {
                self.pings += 1;
                let reply = format!("{msg} #{} (delivery {})", self.pings, self.handled);
                results.get().set_reply(reply);
            }
        }
        Ok(Reply::Done)
    }

    /// Logs `msg` to the callback given, then records it: a `Later` reply.
    fn heartbeat(
        &mut self,
        params: echo::HeartbeatParams,
        _: echo::HeartbeatResults,
        _: &mut Context<Self>,
    ) -> Result<Reply<Self>, capnp::Error> {
        let params = params.get()?;
        let msg = params.get_msg()?.to_string()?;
        let mut request = params.get_callback()?.log_request();
        request.get().set_msg(&msg[..]);
        let sent = request.send().promise;
        Ok(Reply::later(sent.into_actor(self).map(
            move |sent, act, _| {
                sent?;
                assert!(msg != "panic later", "heartbeat was told to panic");
                act.logged.push(format!("{msg} delivered"));
                Ok(())
            },
        )))
    }

    /// Passes `label` through the gate, then records it and answers with
    /// the actor itself as a logger: an `Atomic` reply.
    fn create_logger(
        &mut self,
        params: echo::CreateLoggerParams,
        mut results: echo::CreateLoggerResults,
        ctx: &mut Context<Self>,
    ) -> Result<Reply<Self>, capnp::Error> {
        let label = params.get()?.get_label()?.to_string()?;
        let mut request = self.gate.client().log_request();
        request.get().set_msg(&label[..]);
        let me: Cap<callback::Client> = Cap::from_actor(ctx.address());
        let sent = request.send().promise;
        Ok(Reply::atomic(sent.into_actor(self).map(
            move |sent, act, _| {
                sent?;
                act.logged.push(label);
                results.get().set_callback(me.client());
                Ok(())
            },
        )))
    }

    // getLogger is left unimplemented.
}

impl actors::Callback for Probe {
    fn log(
        &mut self,
        params: callback::LogParams,
        _: callback::LogResults,
        _: &mut Context<Self>,
    ) -> Result<Reply<Self>, capnp::Error> {
        self.logged.push(params.get()?.get_msg()?.to_string()?);
        Ok(Reply::Done)
    }
}

/// A callback that answers `log` only once opened.
#[derive(Default)]
struct Gate {
    open: Cell<bool>,
    waiting: RefCell<Vec<oneshot::Sender<()>>>,
    seen: RefCell<Vec<String>>,
}

impl Gate {
    fn open(&self) {
        self.open.set(true);
        for waiter in self.waiting.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
    }
}

struct GateServer(Rc<Gate>);

impl callback::Server for GateServer {
    async fn log(
        self: Rc<Self>,
        params: callback::LogParams,
        _: callback::LogResults,
    ) -> Result<(), capnp::Error> {
        let msg = params.get()?.get_msg()?.to_string()?;
        self.0.seen.borrow_mut().push(msg);
        if !self.0.open.get() {
            let (tx, rx) = oneshot::channel();
            self.0.waiting.borrow_mut().push(tx);
            let _ = rx.await;
        }
        Ok(())
    }
}

/// A probe (supervised or not) and what the test needs around it.
struct Setup {
    echo: echo::Client,
    gate: Rc<Gate>,
    gate_cap: Cap<callback::Client>,
    restarts: Arc<AtomicUsize>,
}

fn setup(supervised: bool) -> Setup {
    let gate = Rc::new(Gate::default());
    let gate_cap: Cap<callback::Client> = Cap::new(GateServer(gate.clone()));
    let restarts = Arc::new(AtomicUsize::new(0));
    let probe = Probe::new(&gate_cap, &restarts);
    let addr = if supervised {
        Supervisor::start(move |_| probe)
    } else {
        probe.start()
    };
    let echo = Cap::<echo::Client>::from_actor(addr).client();
    Setup {
        echo,
        gate,
        gate_cap,
        restarts,
    }
}

async fn ping(echo: &echo::Client, msg: &str) -> Result<String, capnp::Error> {
    let mut request = echo.ping_request();
    request.get().set_msg(msg);
    let response = request.send().promise.await?;
    Ok(response.get()?.get_reply()?.to_string()?)
}

fn heartbeat(
    echo: &echo::Client,
    msg: &str,
    callback: &Cap<callback::Client>,
) -> capnp::capability::RemotePromise<echo::heartbeat_results::Owned> {
    let mut request = echo.heartbeat_request();
    request.get().set_msg(msg);
    request.get().set_callback(callback.client());
    request.send()
}

/// Ends a test: everything the test made is released.
async fn all_released() {
    capnp_actix::debug::wait_all_released(Duration::from_secs(2))
        .await
        .unwrap_or_else(|report| panic!("still alive:\n{report}"));
}

/// Lets the actors run for a while (for asserting that something did not
/// happen).
async fn settle() {
    actix_rt::time::sleep(Duration::from_millis(50)).await;
}

#[actix::test]
async fn typed_params_and_results_on_the_actors_state_one_delivery_per_call() {
    let s = setup(false);
    // Each reply shows the count kept in the actor and the number of
    // messages the mailbox delivered so far: one per call, and the method
    // ran inside that delivery (no second message).
    for n in 1..=3 {
        let reply = ping(&s.echo, "hi").await.unwrap();
        assert_eq!(reply, format!("hi #{n} (delivery {n})"));
    }
    assert_eq!(ping(&s.echo, "state").await.unwrap(), "3 pings, logged []");
    drop(s);
    all_released().await;
}

#[actix::test]
async fn calls_start_in_the_order_they_were_made() {
    let s = setup(false);
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let mut request = s.echo.ping_request();
            request.get().set_msg(&format!("m{i}")[..]);
            request.send().promise
        })
        .collect();
    for (i, call) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        let reply = call
            .unwrap()
            .get()
            .unwrap()
            .get_reply()
            .unwrap()
            .to_string()
            .unwrap();
        assert_eq!(reply, format!("m{i} #{} (delivery {})", i + 1, i + 1));
    }
    drop(s);
    all_released().await;
}

#[actix::test]
async fn a_later_reply_awaits_another_capability_then_changes_the_state() {
    let s = setup(false);
    let beat = heartbeat(&s.echo, "beat", &s.gate_cap);
    // While the callback has not answered, later calls run and see the
    // state without the heartbeat's change.
    assert_eq!(ping(&s.echo, "state").await.unwrap(), "0 pings, logged []");
    assert_eq!(*s.gate.seen.borrow(), ["beat"]);
    s.gate.open();
    beat.promise.await.unwrap();
    assert_eq!(
        ping(&s.echo, "state").await.unwrap(),
        r#"0 pings, logged ["beat delivered"]"#
    );
    drop((s, beat.pipeline));
    all_released().await;
}

#[actix::test]
async fn an_atomic_reply_holds_later_calls_until_it_is_done() {
    let s = setup(false);
    let mut request = s.echo.create_logger_request();
    request.get().set_label("first");
    let created = request.send();
    let mut after = Box::pin(ping(&s.echo, "state"));
    // The ping sent after createLogger waits for it.
    tokio::select! {
        reply = &mut after => panic!("the ping overtook the atomic reply: {reply:?}"),
        () = settle() => {}
    }
    s.gate.open();
    assert_eq!(after.await.unwrap(), r#"0 pings, logged ["first"]"#);
    // Its results: the actor itself, as a logger.
    let logger = created
        .promise
        .await
        .unwrap()
        .get()
        .unwrap()
        .get_callback()
        .unwrap();
    let mut request = logger.log_request();
    request.get().set_msg("through the logger");
    request.send().promise.await.unwrap();
    assert_eq!(
        ping(&s.echo, "state").await.unwrap(),
        r#"0 pings, logged ["first", "through the logger"]"#
    );
    drop((s, logger, created.pipeline));
    all_released().await;
}

#[actix::test]
async fn a_caller_that_gives_up_drops_the_actor_future() {
    let s = setup(false);
    let beat = heartbeat(&s.echo, "abandoned", &s.gate_cap);
    assert_eq!(ping(&s.echo, "state").await.unwrap(), "0 pings, logged []");
    drop(beat);
    settle().await;
    s.gate.open();
    settle().await;
    assert_eq!(ping(&s.echo, "state").await.unwrap(), "0 pings, logged []");
    drop(s);
    all_released().await;
}

#[actix::test]
async fn what_the_actor_does_not_serve_fails_with_unimplemented() {
    let s = setup(false);
    let e = s
        .echo
        .get_logger_request()
        .send()
        .promise
        .await
        .err()
        .expect("getLogger is not implemented");
    assert_eq!(e.kind, capnp::ErrorKind::Unimplemented);
    assert!(e.extra.contains("Echo.getLogger"), "{e}");

    let other = Cap::<echo::Client>::from_client(&s.echo).cast::<calculator::Client>();
    let e = other
        .client()
        .evaluate_request()
        .send()
        .promise
        .await
        .err()
        .expect("the calculator interface is not served");
    assert_eq!(e.kind, capnp::ErrorKind::Unimplemented);
    assert!(e.extra.contains("is not served by this actor"), "{e}");
    // The actor goes on serving.
    assert_eq!(ping(&s.echo, "x").await.unwrap(), "x #1 (delivery 3)");
    drop((s, other));
    all_released().await;
}

#[actix::test]
async fn a_panicking_method_fails_its_call_and_a_supervisor_restarts_the_actor() {
    let s = setup(true);
    assert_eq!(ping(&s.echo, "a").await.unwrap(), "a #1 (delivery 1)");
    // The panicking call and one queued behind it, sent together.
    let crashed = ping(&s.echo, "panic");
    let queued = ping(&s.echo, "b");
    let (crashed, queued) = futures::join!(crashed, queued);
    let e = crashed.expect_err("the panicking call fails");
    assert_eq!(e.kind, capnp::ErrorKind::Failed);
    assert!(
        e.extra
            .starts_with("Echo.ping panicked: ping was told to panic"),
        "{e}"
    );
    assert_eq!(s.restarts.load(Ordering::SeqCst), 1);
    // The call queued behind it was served by the restarted actor, with
    // fresh state, through the same capability.
    assert_eq!(queued.unwrap(), "b #1 (delivery 1)");
    assert_eq!(ping(&s.echo, "c").await.unwrap(), "c #2 (delivery 2)");

    // A panic in an actor future, after it awaited: the same.
    s.gate.open();
    let e = heartbeat(&s.echo, "panic later", &s.gate_cap)
        .promise
        .await
        .err()
        .expect("the panicking heartbeat fails");
    assert!(e.extra.starts_with("Echo.heartbeat panicked"), "{e}");
    assert_eq!(s.restarts.load(Ordering::SeqCst), 2);
    assert_eq!(ping(&s.echo, "d").await.unwrap(), "d #1 (delivery 1)");
    drop(s);
    all_released().await;
}

#[actix::test]
async fn an_unsupervised_actor_that_panics_is_stopped() {
    let s = setup(false);
    let e = ping(&s.echo, "panic").await.unwrap_err();
    assert!(e.extra.starts_with("Echo.ping panicked"), "{e}");
    let e = ping(&s.echo, "after").await.unwrap_err();
    assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
    assert_eq!(s.restarts.load(Ordering::SeqCst), 0);
    drop(s);
    all_released().await;
}

/// `serve_actor!` for an actor serving one interface.
#[derive(Default)]
struct Minimal {
    pings: u64,
}

impl Actor for Minimal {
    type Context = Context<Self>;
}

capnp_actix::serve_actor!(Minimal: actors::Echo);

impl actors::Echo for Minimal {
    fn ping(
        &mut self,
        params: echo::PingParams,
        mut results: echo::PingResults,
        _: &mut Context<Self>,
    ) -> Result<Reply<Self>, capnp::Error> {
        self.pings += 1;
        let msg = params.get()?.get_msg()?.to_str()?;
        results.get().set_reply(format!("{msg} {}", self.pings));
        Ok(Reply::Done)
    }
}

#[actix::test]
async fn serve_actor_routes_the_listed_interfaces_only() {
    let echo = Cap::<echo::Client>::from_actor(Minimal::default().start());
    assert_eq!(ping(&echo.client(), "x").await.unwrap(), "x 1");
    let mut request = echo
        .clone()
        .cast::<callback::Client>()
        .client()
        .log_request();
    request.get().set_msg("not served");
    let e = request
        .send()
        .promise
        .await
        .err()
        .expect("Callback is not served");
    assert_eq!(e.kind, capnp::ErrorKind::Unimplemented);
    assert_eq!(ping(&echo.client(), "y").await.unwrap(), "y 2");
    drop(echo);
    all_released().await;
}

/// An actor serving `Tally`, which extends `Probe`: listing `Tally` serves
/// `Probe`'s methods too, on the same state.
#[derive(Default)]
struct Counted {
    calls: u64,
}

impl Actor for Counted {
    type Context = Context<Self>;
}

capnp_actix::serve_actor!(Counted: test_actors::Tally);

impl test_actors::Probe for Counted {
    fn call(
        &mut self,
        params: probe::CallParams,
        mut results: probe::CallResults,
        _: &mut Context<Self>,
    ) -> Result<Reply<Self>, capnp::Error> {
        self.calls += 1;
        results.get().set_seq(params.get()?.get_seq() * 10);
        Ok(Reply::Done)
    }
}

impl test_actors::Tally for Counted {
    fn count(
        &mut self,
        _: tally::CountParams,
        mut results: tally::CountResults,
        _: &mut Context<Self>,
    ) -> Result<Reply<Self>, capnp::Error> {
        results.get().set_calls(self.calls);
        Ok(Reply::Done)
    }
}

#[actix::test]
async fn an_interface_that_extends_another_serves_both_from_one_actor() {
    let tally = Cap::<tally::Client>::from_actor(Counted::default().start());
    // `call` is Probe's method: the Tally client sends it with Probe's ID.
    let probe = tally.clone().cast::<probe::Client>().client();
    for seq in [1, 2] {
        let mut request = probe.call_request();
        request.get().set_seq(seq);
        let reply = request.send().promise.await.unwrap();
        assert_eq!(reply.get().unwrap().get_seq(), seq * 10);
    }
    let reply = tally.client().count_request().send().promise.await.unwrap();
    assert_eq!(reply.get().unwrap().get_calls(), 2);
    drop((tally, probe));
    all_released().await;
}
