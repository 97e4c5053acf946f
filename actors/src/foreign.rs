//! Capabilities of other runtimes ("foreign hooks"), such as those the
//! capnp-rpc crate's `new_client` makes.
//!
//! A foreign hook is `!Send` and stays on the thread it was made on. It is
//! served there by a proxy actor, so that the capability can travel like
//! any other. Identity is kept: the same hook always gets the same proxy,
//! and on its own thread the proxy turns back into the original hook.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::thread::ThreadId;

use capnp::private::capability::ClientHook;
use futures::future::{select, Either};
use futures::FutureExt;

use crate::call::Call;
use crate::cap::{next_id, CapRef, Kind, Node};
use crate::error;
use crate::host::{spawn_host_with, CallBody, Host};
use crate::payload::payload_from_reader;

/// A proxy's node and the original hook, by hook identity.
type ProxyTable = HashMap<usize, (Weak<Node>, Box<dyn ClientHook>)>;

thread_local! {
    /// Foreign hooks of this thread that have a proxy: hook identity
    /// (`get_ptr`) to the proxy's node and the original hook.
    static PROXIES: RefCell<ProxyTable> = RefCell::new(HashMap::new());
}

/// The proxy capability for a foreign hook (made on first use).
pub(crate) fn wrap(hook: Box<dyn ClientHook>) -> CapRef {
    let key = hook.get_ptr();
    if let Some(node) = PROXIES.with(|p| p.borrow().get(&key).and_then(|(w, _)| w.upgrade())) {
        return CapRef { node };
    }
    let id = next_id();
    let original = hook.add_ref();
    let cap = spawn_host_with(ForeignHost { hook, key, id }, id, |proxy| Kind::Foreign {
        proxy,
        thread: std::thread::current().id(),
        key,
    });
    PROXIES.with(|p| {
        p.borrow_mut()
            .insert(key, (Arc::downgrade(&cap.node), original))
    });
    cap
}

/// On the hook's own thread, the original hook behind a proxy.
pub(crate) fn original(thread: ThreadId, key: usize) -> Option<Box<dyn ClientHook>> {
    if std::thread::current().id() != thread {
        return None;
    }
    PROXIES.with(|p| p.borrow().get(&key).map(|(_, h)| h.add_ref()))
}

/// Serves calls by making them on the foreign hook.
pub(crate) struct ForeignHost {
    hook: Box<dyn ClientHook>,
    key: usize,
    id: u64,
}

impl Drop for ForeignHost {
    fn drop(&mut self) {
        // Forget the mapping, unless a newer proxy for the same hook has
        // replaced it already.
        let (key, id) = (self.key, self.id);
        let _ = PROXIES.try_with(|p| {
            let mut p = p.borrow_mut();
            let ours = p
                .get(&key)
                .is_some_and(|(w, _)| w.upgrade().is_none_or(|n| n.id == id));
            if ours {
                p.remove(&key);
            }
        });
    }
}

impl Host for ForeignHost {
    fn dispatch(&self, call: Call) -> CallBody {
        let Call {
            interface_id,
            method_id,
            params,
            completer,
            ..
        } = call;
        let mut request = self.hook.new_call(interface_id, method_id, None);
        let copied = params.with_root(|root| request.hook.get().set_as(root));
        drop(params);
        if let Err(e) = copied {
            completer.complete(Err(e));
            return CallBody::Done(futures::future::ready(()).boxed_local());
        }
        let promise = request.hook.send().promise;
        CallBody::Done(
            async move {
                let cancelled = completer.cancelled();
                match select(promise, cancelled).await {
                    Either::Left((Ok(response), _)) => {
                        match response.hook.get().and_then(payload_from_reader) {
                            Ok(p) => completer.complete_payload(p),
                            Err(e) => completer.complete(Err(e)),
                        }
                    }
                    Either::Left((Err(e), _)) => completer.complete(Err(e)),
                    Either::Right(((), _)) => completer.complete(Err(error::cancelled())),
                }
            }
            .boxed_local(),
        )
    }
}
