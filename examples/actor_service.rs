//! A Cap'n Proto service written as an actix actor.
//!
//! Run it with `cargo run --example actor_service`.
//!
//! `Counter` serves the `Echo` and `Callback` interfaces of
//! `echo_api.capnp` by implementing their generated actor traits
//! (`echo_api_capnp::actors`): each method gets `&mut self`, the actor's
//! `Context`, typed params and results. A call is one message in the
//! actor's mailbox, so calls start in the order they were made and change
//! the state directly. `heartbeat` calls another capability and updates
//! the state when it answers: an actor future gets `&mut self` back.
//!
//! The actor runs under an actix `Supervisor`: a method that panics fails
//! its call (the error names the method), the actor restarts with fresh
//! state, and the capability keeps working. The example checks every reply
//! and exits non-zero on a wrong one.

#[path = "common/logging.rs"]
mod logging;

use std::cell::RefCell;
use std::error::Error;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use capnp_actix::actix::{self, Actor, ActorFutureExt, AsyncContext, Context, Supervised};
use capnp_actix::actix::{Supervisor, WrapFuture};
use capnp_actix::schemas::echo_api_capnp::{actors, callback, echo};
use capnp_actix::{capnp, Cap, Reply};

#[derive(Default)]
struct Counter {
    pings: u64,
    logged: Vec<String>,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Supervised for Counter {
    fn restarting(&mut self, _: &mut Context<Self>) {
        println!(
            "counter: restarting, forgetting {} pings and {:?}",
            self.pings, self.logged
        );
        *self = Counter::default();
    }
}

// Calls on `Echo` and `Callback` go to the methods below.
capnp_actix::serve_actor!(Counter: actors::Echo, actors::Callback);

impl actors::Echo for Counter {
    fn ping(
        &mut self,
        params: echo::PingParams,
        mut results: echo::PingResults,
        _: &mut Context<Self>,
    ) -> Result<Reply<Self>, capnp::Error> {
        let msg = params.get()?.get_msg()?.to_str()?;
        if msg == "crash" {
            panic!("asked to crash");
        }
        self.pings += 1;
        results
            .get()
            .set_reply(format!("echo:{msg} (call {})", self.pings));
        Ok(Reply::Done)
    }

    fn heartbeat(
        &mut self,
        params: echo::HeartbeatParams,
        _: echo::HeartbeatResults,
        _: &mut Context<Self>,
    ) -> Result<Reply<Self>, capnp::Error> {
        let params = params.get()?;
        let msg = params.get_msg()?.to_str()?;
        let mut request = params.get_callback()?.log_request();
        request
            .get()
            .set_msg(format!("{msg}: {} pings so far", self.pings));
        let delivered = request.send().promise;
        // Await the callback, then update the state: `act` is `&mut self`.
        Ok(Reply::later(delivered.into_actor(self).map(
            |delivered, act, _| {
                delivered?;
                act.logged.push("heartbeat delivered".into());
                Ok(())
            },
        )))
    }

    fn get_logger(
        &mut self,
        _: echo::GetLoggerParams,
        mut results: echo::GetLoggerResults,
        ctx: &mut Context<Self>,
    ) -> Result<Reply<Self>, capnp::Error> {
        // The actor itself, as a `Callback`.
        let logger: Cap<callback::Client> = Cap::from_actor(ctx.address());
        results.get().set_callback(logger.client());
        Ok(Reply::Done)
    }
}

impl actors::Callback for Counter {
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

/// The client's side of `heartbeat`: a plain service that keeps what it is
/// told.
struct Keep(Rc<RefCell<Vec<String>>>);

impl callback::Server for Keep {
    async fn log(
        self: Rc<Self>,
        params: callback::LogParams,
        _: callback::LogResults,
    ) -> Result<(), capnp::Error> {
        let msg = params.get()?.get_msg()?.to_string()?;
        println!("callback got {msg:?}");
        self.0.borrow_mut().push(msg);
        Ok(())
    }
}

async fn ping(echo: &echo::Client, msg: &str) -> Result<String, capnp::Error> {
    let mut request = echo.ping_request();
    request.get().set_msg(msg);
    let response = request.send().promise.await?;
    Ok(response.get()?.get_reply()?.to_string()?)
}

fn check(what: &str, ok: bool) -> Result<(), Box<dyn Error>> {
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected {what}").into())
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let service: Cap<echo::Client> = Cap::from_actor(Supervisor::start(|_| Counter::default()));
    let echo = service.client();
    for (n, msg) in ["one", "two"].into_iter().enumerate() {
        let reply = ping(&echo, msg).await?;
        println!("ping({msg:?}) -> {reply:?}");
        check("reply", reply == format!("echo:{msg} (call {})", n + 1))?;
    }

    let kept = Rc::new(RefCell::new(Vec::new()));
    let mut request = echo.heartbeat_request();
    request.get().set_msg("beat");
    request
        .get()
        .set_callback(Cap::<callback::Client>::new(Keep(kept.clone())).client());
    request.send().promise.await?;
    check("callback", *kept.borrow() == ["beat: 2 pings so far"])?;

    // Pipelined: `log` goes before `getLogger` has answered.
    let logger = echo.get_logger_request().send().pipeline.get_callback();
    let mut request = logger.log_request();
    request.get().set_msg("kept in the actor's state");
    request.send().promise.await?;

    let crashed = ping(&echo, "crash").await;
    println!("ping(\"crash\") -> {crashed:?}");
    check(
        "crash",
        crashed.is_err_and(|e| e.extra.contains("Echo.ping panicked")),
    )?;
    let reply = ping(&echo, "three").await?;
    println!("ping(\"three\") -> {reply:?}");
    check("reply after the restart", reply == "echo:three (call 1)")?;

    drop((echo, logger, service));
    capnp_actix::debug::wait_all_released(Duration::from_secs(2))
        .await
        .map_err(|report| format!("still alive after 2 s:\n{report}"))?;
    println!("all capabilities released");
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
