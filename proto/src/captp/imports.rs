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

#[cfg(test)]
mod tests {
    use capnp::message::Builder;
    use capnp::ErrorKind;

    use super::super::{Conn, ConnLimits, Event};
    use crate::captp::OutContent;
    use crate::rpc_capnp::message as rpc_message;
    use crate::{frame, Limits};

    /// A frame from the peer: a call on our export 0 (question `q`) whose
    /// params carry `n` copies of the peer's capability 7.
    fn call_passing_import_7(q: u32, n: u32) -> Vec<u8> {
        let mut m = Builder::new_default();
        {
            let mut c = m.init_root::<rpc_message::Builder<'_>>().init_call();
            c.set_question_id(q);
            c.reborrow().init_target().set_imported_cap(0);
            let mut params = c.init_params();
            let mut table = params.reborrow().init_cap_table(n);
            for i in 0..n {
                table.reborrow().get(i).set_sender_hosted(7);
            }
            params.init_content().set_as("params").unwrap();
        }
        let mut out = Vec::new();
        frame::encode(&m.get_segments_for_output(), &mut out);
        out
    }

    /// SECURITY.md: an import count that would overflow aborts. Reaching
    /// 2^32 references through the wire takes 2^32 descriptors, so the
    /// count is set just below it; the last references arrive from the
    /// peer.
    #[test]
    fn an_import_count_that_would_overflow_aborts() {
        let mut c: Conn<u32> = Conn::new(ConnLimits::default(), Limits::default());
        let mut m = Builder::new_default();
        m.init_root::<rpc_message::Builder<'_>>()
            .init_bootstrap()
            .set_question_id(0);
        let mut f = Vec::new();
        frame::encode(&m.get_segments_for_output(), &mut f);
        c.receive(&f);
        let Some(Event::Bootstrap { answer, .. }) = c.next_event() else {
            panic!("no bootstrap")
        };
        let root = crate::content::cap_root_message();
        c.return_results(
            answer,
            OutContent::Reader(root.get_root_as_reader().unwrap()),
            &[crate::captp::OutCap::Local(1)],
        );
        c.receive(&call_passing_import_7(1, 1));
        assert!(c.aborted().is_none(), "{:?}", c.aborted());
        c.imports.get_mut(&7).unwrap().refs = u32::MAX - 1;
        // One more reference reaches u32::MAX: still counted.
        c.receive(&call_passing_import_7(2, 1));
        assert!(c.aborted().is_none(), "{:?}", c.aborted());
        assert_eq!(c.imports[&7].refs, u32::MAX);
        // The next would overflow.
        c.receive(&call_passing_import_7(3, 1));
        let e = c.aborted().expect("aborted").clone();
        assert_eq!(e.kind, ErrorKind::Failed, "{e}");
        assert!(
            e.extra.contains("import 7 received more than 2^32 times"),
            "{e}"
        );
    }
}
