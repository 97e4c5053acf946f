//! The import table: the peer's capabilities we hold, with how many
//! times the peer has sent each to us (what we owe back in `release`).
//! Decides how incoming capability descriptors become [`InCap`]s and
//! when references are given back.

use std::hash::Hash;

use capnp::Error;

use super::build::small_message;
use super::exports::Export;
use super::parse::RawCap;
use super::{protocol_error, Conn, InCap};
use crate::rpc_capnp::message as rpc_message;

pub(super) struct Import {
    pub(super) refs: u32,
    pub(super) promise: bool,
    pub(super) resolved: bool,
}

impl<L: Clone + Eq + Hash, E> Conn<L, E> {
    /// Releases every reference we hold on an import.
    pub fn release_import(&mut self, import: u32) {
        if self.aborted.is_some() {
            return;
        }
        let Some(count) = self.imports.remove(&import).map(|i| i.refs) else {
            return;
        };
        let mut m = small_message();
        {
            let mut r = m.init_root::<rpc_message::Builder<'_>>().init_release();
            r.set_id(import);
            r.set_reference_count(count);
        }
        self.send(&m);
    }

    pub(super) fn import_caps(&mut self, raw: Vec<RawCap>) -> Result<Vec<InCap<L>>, Error> {
        raw.into_iter().map(|d| self.import_cap(d)).collect()
    }

    pub(super) fn import_cap(&mut self, d: RawCap) -> Result<InCap<L>, Error> {
        Ok(match d {
            RawCap::None => InCap::None,
            RawCap::Sender(id, promise) => {
                let at_limit = self.imports.len() >= self.limits.max_imports;
                match self.imports.get_mut(&id) {
                    Some(i) => {
                        i.refs = i.refs.checked_add(1).ok_or_else(|| {
                            protocol_error(format!("import {id} received more than 2^32 times"))
                        })?
                    }
                    None if at_limit => {
                        return Err(Error::overloaded(format!(
                            "peer exported more than {} capabilities on this connection",
                            self.limits.max_imports
                        )))
                    }
                    None => {
                        self.imports.insert(
                            id,
                            Import {
                                refs: 1,
                                promise,
                                resolved: false,
                            },
                        );
                    }
                }
                InCap::Import { id, promise }
            }
            RawCap::Receiver(id) => match self.exports.get(id) {
                Some(Export { cap: Some(l), .. }) => InCap::Local(l.clone()),
                Some(Export {
                    cap: None, error, ..
                }) => InCap::Broken(error.clone().unwrap_or_else(|| {
                    Error::failed("a broken capability sent back to its sender".into())
                })),
                None => {
                    return Err(protocol_error(format!(
                        "descriptor names unknown export {id}"
                    )))
                }
            },
            RawCap::Answer(a, path) => {
                if !self.answers.contains_key(&a) {
                    return Err(protocol_error(format!(
                        "descriptor names unknown answer {a}"
                    )));
                }
                InCap::Answer { answer: a, path }
            }
        })
    }

    /// Gives back one reference per import in `caps` (a payload that will
    /// not be delivered).
    pub(super) fn drop_in_caps(&mut self, caps: &[InCap<L>]) {
        for c in caps {
            if let InCap::Import { id, .. } = c {
                let gone = match self.imports.get_mut(id) {
                    Some(i) => {
                        i.refs -= 1;
                        i.refs == 0
                    }
                    None => false,
                };
                if gone {
                    self.imports.remove(id);
                }
                let mut m = small_message();
                {
                    let mut r = m.init_root::<rpc_message::Builder<'_>>().init_release();
                    r.set_id(*id);
                    r.set_reference_count(1);
                }
                self.send(&m);
            }
        }
    }
}
