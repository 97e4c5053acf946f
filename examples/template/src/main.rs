//! A counter service with its own schema (`schema/counter.capnp`), written
//! as an actix actor, served over TCP and called through its sturdy URI.
//!
//! `cargo run -- serve` serves it until Ctrl-C or SIGTERM, then shuts
//! down gracefully. `cargo run` serves it and calls it, printing:
//!
//! ```text
//! serving at capnp://insecure@127.0.0.1:PORT/Y291bnRlcg
//! add(5) -> 5
//! add(3) on a local counter -> 3
//! addFrom(the local counter) -> 8
//! ```

use std::time::Duration;

use capnp_actix::actix::{self, Actor, ActorFutureExt, Context, WrapFuture};
use capnp_actix::vat::{self, Vat};
use capnp_actix::{capnp, Address, Cap, Reply, VatConfig};

// capnpc's code for the schema, with the actor traits in `counter_capnp::actors`.
capnp_actix::capnp::generated_code!(mod counter_capnp);
use counter_capnp::{actors, counter};

/// The service: an actor whose state is the total.
#[derive(Default)]
struct Total(i64);

impl Actor for Total {
    type Context = Context<Self>;
}

capnp_actix::serve_actor!(Total: actors::Counter);

impl actors::Counter for Total {
    fn add(
        &mut self,
        params: counter::AddParams,
        mut results: counter::AddResults,
        _: &mut Context<Self>,
    ) -> Result<Reply<Self>, capnp::Error> {
        self.0 += params.get()?.get_amount();
        results.get().set_total(self.0);
        Ok(Reply::Done)
    }

    fn add_from(
        &mut self,
        params: counter::AddFromParams,
        mut results: counter::AddFromResults,
        _: &mut Context<Self>,
    ) -> Result<Reply<Self>, capnp::Error> {
        let mut request = params.get()?.get_other()?.add_request();
        request.get().set_amount(0);
        let asked = request.send().promise;
        // Once the other counter answers, the actor gets `&mut self` back.
        Ok(Reply::later(asked.into_actor(self).map(
            move |answer, this, _| {
                this.0 += answer?.get()?.get_total();
                results.get().set_total(this.0);
                Ok(())
            },
        )))
    }
}

async fn add(counter: &counter::Client, amount: i64) -> Result<i64, capnp::Error> {
    let mut request = counter.add_request();
    request.get().set_amount(amount);
    Ok(request.send().promise.await?.get()?.get_total())
}

async fn run(serve_only: bool) -> Result<(), Box<dyn std::error::Error>> {
    // One call starts a vat serving a counter under the name "counter".
    // Without TLS (as here) the service ID is the name; drop
    // `with_tls(false)` for TLS, and the ID becomes a secret derived from
    // the vat's key (give it a key file to keep URIs across restarts).
    let config = VatConfig::new()
        .with_tls(false)
        .with_listen_address(Address::parse("tcp:127.0.0.1:0")?);
    let served: Cap<counter::Client> = Cap::from_actor(Total::default().start());
    let (vat, uris) = Vat::builder(&config)
        .serve("counter", served)
        .start()
        .await?;
    let uri = &uris["counter"];
    // Installed before the server says it is up, so no signal is missed.
    let signal = vat::shutdown_signal();
    println!("serving at {uri}");
    if serve_only {
        // Until Ctrl-C or SIGTERM; then calls running get 5 s to finish
        // and every client is told the vat is shutting down.
        signal.await;
        vat.shutdown(Duration::from_secs(5)).await;
        return Ok(());
    }

    // A client: import the URI and call the counter over the connection.
    let remote: Cap<counter::Client> = Cap::from_raw(vat::import(uri).await?);
    let remote = remote.client();
    println!("add(5) -> {}", add(&remote, 5).await?);

    // Pass it a capability of ours: it calls back over the same connection.
    let local = Cap::<counter::Client>::from_actor(Total::default().start()).client();
    println!("add(3) on a local counter -> {}", add(&local, 3).await?);
    let mut request = remote.add_from_request();
    request.get().set_other(local);
    let total = request.send().promise.await?.get()?.get_total();
    println!("addFrom(the local counter) -> {total}");

    vat.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let serve_only = std::env::args().nth(1).as_deref() == Some("serve");
    match actix::System::new().block_on(run(serve_only)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capnp-actix-template: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
