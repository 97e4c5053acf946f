//! Persistence: capabilities that can be saved as sturdy refs.
//!
//! A capability supports persistence when it answers `Persistent.save`
//! (interface `0xc8cb212fcd9f5691`, method 0) with its sturdy URI, as
//! Text in the `sturdyRef` field. [`with_sturdy_ref`] adds that to any
//! capability; [`save`] asks a capability for its URI. A capability
//! without persistence answers `save` with Unimplemented.

use std::rc::Rc;

use actix::{Actor, Context, Handler};
use capnp::capability::FromClientHook;
use capnp_actix_actors::{Cap, CapRef, IncomingCall};
use capnp_actix_schemas::persistent_capnp::persistent;

use crate::uri::SturdyUri;

/// The interface ID of `Persistent` (`persistent.capnp`).
pub const PERSISTENT_INTERFACE_ID: u64 = 0xc8cb_212f_cd9f_5691;

/// `Persistent` with untyped `SturdyRef` and `Owner` parameters, as it
/// travels on the wire.
pub type PersistentClient =
    persistent::Client<capnp::any_pointer::Owned, capnp::any_pointer::Owned>;

/// Serves `Persistent.save` for one URI.
struct Saver {
    uri: String,
}

impl persistent::Server<capnp::any_pointer::Owned, capnp::any_pointer::Owned> for Saver {
    async fn save(
        self: Rc<Self>,
        _: persistent::SaveParams<capnp::any_pointer::Owned, capnp::any_pointer::Owned>,
        mut results: persistent::SaveResults<capnp::any_pointer::Owned, capnp::any_pointer::Owned>,
    ) -> Result<(), capnp::Error> {
        results
            .get()
            .init_sturdy_ref()
            .set_as::<capnp::text::Owned>(self.uri.as_str())
    }
}

/// Answers `save` itself; forwards every other call to the wrapped
/// capability (pipelining included).
struct SturdyRefWrapper {
    inner: CapRef,
    uri: String,
}

impl Actor for SturdyRefWrapper {
    type Context = Context<Self>;
}

impl Handler<IncomingCall> for SturdyRefWrapper {
    type Result = ();
    fn handle(&mut self, call: IncomingCall, _: &mut Context<Self>) {
        if call.interface_id() == PERSISTENT_INTERFACE_ID && call.method_id() == 0 {
            call.serve::<PersistentClient, _>(Saver {
                uri: self.uri.clone(),
            });
        } else {
            call.forward(&self.inner);
        }
    }
}

/// `cap`, made persistent: `Persistent.save` on the result gives `uri`,
/// and every other call goes to `cap`. The wrapper lives on the current
/// arbiter.
///
/// # Panics
///
/// Outside an actix system, with a message saying how to start one.
pub fn with_sturdy_ref(cap: impl Into<CapRef>, uri: &SturdyUri) -> CapRef {
    let wrapper = SturdyRefWrapper {
        inner: cap.into(),
        uri: uri.to_string(),
    };
    let addr = capnp_actix_actors::system::spawn_checked("with_sturdy_ref", || wrapper.start());
    Cap::<capnp::capability::Client>::from_actor(addr)
        .raw()
        .clone()
}

/// Asks `cap` for its sturdy URI (`Persistent.save`). A capability that
/// does not support persistence fails with Unimplemented; a reply that is
/// not a URI fails with a clear error.
pub async fn save(cap: &CapRef) -> Result<SturdyUri, capnp::Error> {
    let client: PersistentClient = Cap::<PersistentClient>::from_raw(cap.clone()).client();
    let response = client.save_request().send().promise.await?;
    let text = response
        .get()?
        .get_sturdy_ref()?
        .get_as::<capnp::text::Reader>()?
        .to_str()?
        .to_string();
    text.parse().map_err(|e| {
        capnp::Error::failed(format!("Persistent.save returned a bad sturdy ref: {e}"))
    })
}

/// `save` for a generated client.
pub async fn save_client<C: FromClientHook>(client: &C) -> Result<SturdyUri, capnp::Error> {
    let cap = Cap::<capnp::capability::Client>::from_client(&capnp::capability::Client::new(
        client.as_client_hook().add_ref(),
    ));
    save(cap.raw()).await
}
