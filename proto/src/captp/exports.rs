//! The export table: our capabilities the peer holds, with the peer's
//! reference count, keyed both by export id and by the runtime's handle
//! (so that exporting one capability twice uses one entry). Decides when
//! an entry is made, counted and released, how a broken capability is
//! exported (a promise with nothing behind it, resolved at once to its
//! error), and how an exported promise's resolution is sent (`resolve`).

use std::hash::Hash;

use capnp::Error;

use super::build::{small_message, BrokenExport, Written};
use super::{protocol_error, Conn, Event, OutCap};
use crate::exception;
use crate::rpc_capnp::{cap_descriptor, message as rpc_message};

pub(super) struct Export<L> {
    /// `None` for a broken capability sent as a promise.
    pub(super) cap: Option<L>,
    pub(super) refs: u32,
    /// Exported as a promise that has not been resolved yet.
    pub(super) unresolved_promise: bool,
    /// Exported as a promise (resolved or not).
    pub(super) promise: bool,
    /// For a broken capability (`cap` is `None`): its error.
    pub(super) error: Option<Error>,
}

impl<L: Clone + Eq + Hash, E> Conn<L, E> {
    /// The export id of `cap`, if it is exported.
    pub fn export_id(&self, cap: &L) -> Option<u32> {
        self.export_ids.get(cap).copied()
    }

    /// Tells the peer what `promise`, which we exported as `export`
    /// ([`Event::ExportedPromise`]), has become. Nothing is sent if the
    /// peer has released it meanwhile (even if the export id now names
    /// another promise), or if it was resolved already.
    pub fn resolve_export(&mut self, export: u32, promise: &L, to: OutCap<L>) {
        if self.aborted.is_some() {
            return;
        }
        match self.exports.get_mut(export) {
            Some(e) if e.unresolved_promise && e.cap.as_ref() == Some(promise) => {
                e.unresolved_promise = false
            }
            _ => return,
        }
        let mut written = Written::default();
        let mut m = small_message();
        {
            let mut r = m.init_root::<rpc_message::Builder<'_>>().init_resolve();
            r.set_promise_id(export);
            match &to {
                OutCap::Broken(e) => exception::write(e, r.init_exception()),
                cap => self.write_descriptor(r.init_cap(), cap, &mut written),
            }
        }
        self.send(&m);
        self.send_broken_resolves(written.broken);
    }

    /// The export of `cap` (a new entry, or one more reference to the
    /// existing one), and whether it is described as a promise.
    pub(super) fn export(&mut self, cap: L, promise: bool) -> Option<(u32, bool)> {
        if let Some(&id) = self.export_ids.get(&cap) {
            if let Some(e) = self.exports.get_mut(id) {
                // Saturating: past u32::MAX the extra references are
                // simply never released by the peer's count (harmless).
                e.refs = e.refs.saturating_add(1);
                return Some((id, e.unresolved_promise));
            }
        }
        if self.exports.len() >= self.limits.max_exports {
            return None;
        }
        let id = self.exports.insert(Export {
            cap: Some(cap.clone()),
            refs: 1,
            unresolved_promise: promise,
            promise,
            error: None,
        });
        self.export_ids.insert(cap.clone(), id);
        if promise {
            self.events
                .push_back(Event::ExportedPromise { export: id, cap });
        }
        Some((id, promise))
    }

    pub(super) fn release_export(&mut self, id: u32, count: u32) -> Result<(), Error> {
        let Some(e) = self.exports.get_mut(id) else {
            return Err(protocol_error(format!("release of unknown export {id}")));
        };
        if e.refs < count {
            return Err(protocol_error(format!(
                "release of {count} references to export {id}, which has {}",
                e.refs
            )));
        }
        e.refs -= count;
        if e.refs == 0 {
            if let Some(Export { cap: Some(l), .. }) = self.exports.remove(id) {
                self.export_ids.remove(&l);
            }
        }
        Ok(())
    }

    /// A broken capability is exported as a promise (a fresh export entry
    /// with nothing behind it) and resolved to its error right after.
    pub(super) fn write_broken(
        &mut self,
        mut d: cap_descriptor::Builder<'_>,
        e: Error,
        written: &mut Written,
    ) {
        // The entry holds no capability, so it is not in `export_ids`.
        if self.exports.len() >= self.limits.max_exports {
            d.set_none(());
            return;
        }
        let id = self.exports.insert(Export {
            cap: None,
            refs: 1,
            unresolved_promise: false,
            promise: true,
            error: Some(e.clone()),
        });
        d.set_sender_promise(id);
        written.broken.push(BrokenExport {
            export: id,
            error: e,
        });
        written.exports.push(id);
    }
}
