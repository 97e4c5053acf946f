//! Raw bytes into one connection's protocol core: framing, decoding and
//! CapTP, with a runtime stand-in that answers what the bytes ask for, so
//! that more of the core runs. It must never panic; a connection it aborts
//! must say why, and must have forgotten every table.

use capnp::any_pointer;
use capnp_actix::proto::captp::{CallTarget, Conn, ConnLimits, Event, InCap, OutCap, OutTarget};
use capnp_actix::proto::content;
use capnp_actix::proto::Limits;

/// What one input did (for corpus selection and test statistics).
#[derive(Debug, Default, Clone, Copy)]
pub struct Fed {
    pub events: usize,
    pub aborted: bool,
}

/// Feeds `data` to a fresh connection. The first byte sets up the run:
/// bit 0 small table limits; bit 1 small reader limits; bit 2 we ask for
/// the peer's bootstrap first; bit 3 we also call its import 0 with two
/// capabilities; bits 4-7 how the rest is cut into reads (0: at once,
/// else chunks of that many bytes).
pub fn feed(data: &[u8]) -> Fed {
    let Some((&setup, input)) = data.split_first() else {
        return Fed::default();
    };
    let tables = if setup & 1 != 0 {
        ConnLimits {
            max_questions: 4,
            max_answers: 4,
            max_exports: 4,
            max_imports: 4,
        }
    } else {
        ConnLimits::default()
    };
    let reader = if setup & 2 != 0 {
        Limits {
            traversal_limit_words: 64,
            nesting_limit: 4,
            max_segments: 4,
            max_frame_words: 64,
        }
    } else {
        Limits::default()
    };
    let mut conn: Conn<u32> = Conn::new(tables, reader);
    let mut peer = Peer::default();
    if setup & 4 != 0 {
        if let Ok(q) = conn.bootstrap(b"") {
            peer.questions.push(q);
            if setup & 8 != 0 {
                let m = content::caps_message(2);
                if let Ok(root) = m.get_root_as_reader::<any_pointer::Reader<'_>>() {
                    let caps = [OutCap::Local(1), OutCap::Promise(2)];
                    let target = OutTarget::Answer {
                        question: q,
                        path: Vec::new(),
                    };
                    if let Ok(q) = conn.call(&target, 0x1234, 0, root, &caps) {
                        peer.questions.push(q);
                    }
                    let _ = conn.call(&OutTarget::Import(0), 0x1234, 1, root, &caps);
                }
            }
        }
    }
    let chunk = match (setup >> 4) as usize {
        0 => input.len().max(1),
        n => n,
    };
    let mut fed = Fed::default();
    for piece in input.chunks(chunk) {
        conn.receive(piece);
        fed.events += peer.drain(&mut conn);
        let _ = conn.take_output();
    }
    // The peer hangs up: everything must end cleanly.
    peer.wind_down(&mut conn);
    fed.events += peer.drain(&mut conn);
    conn.receive_end();
    fed.events += peer.drain(&mut conn);
    let _ = conn.take_output();
    fed.aborted = peer.aborted;
    let reason = conn.aborted().map(|e| e.to_string());
    match reason {
        Some(r) => assert!(!r.trim().is_empty(), "an abort without a reason"),
        None => panic!("the connection is not over after the end of its input"),
    }
    let sizes = conn.table_sizes();
    assert!(sizes.is_empty(), "tables left after the end: {sizes:?}");
    // Input after the end is ignored.
    conn.receive(data);
    assert!(conn.next_event().is_none(), "an event after the end");
    fed
}

/// What the stand-in runtime remembers.
#[derive(Default)]
struct Peer {
    /// Our questions.
    questions: Vec<u32>,
    /// Imports the peer gave us.
    imports: Vec<u32>,
    /// Our next local capability.
    next_local: u32,
    aborted: bool,
}

impl Peer {
    fn note_caps(&mut self, caps: &[InCap<u32>]) {
        for c in caps {
            if let InCap::Import { id, .. } = c {
                if !self.imports.contains(id) {
                    self.imports.push(*id);
                }
            }
        }
    }

    /// Answers every event; returns how many there were.
    fn drain(&mut self, conn: &mut Conn<u32>) -> usize {
        let mut n = 0;
        while let Some(event) = conn.next_event() {
            n += 1;
            self.on_event(conn, event);
            if n > 100_000 {
                panic!("the core keeps producing events");
            }
        }
        n
    }

    fn on_event(&mut self, conn: &mut Conn<u32>, event: Event<u32>) {
        match event {
            Event::Bootstrap { answer, .. } => {
                self.next_local += 1;
                let m = content::cap_root_message();
                if let Ok(root) = m.get_root_as_reader::<any_pointer::Reader<'_>>() {
                    conn.return_results(answer, root, &[OutCap::Local(self.next_local)]);
                }
            }
            Event::Call {
                answer,
                target,
                method_id,
                params,
                ..
            } => {
                self.note_caps(&params.caps);
                // Echo the parameters back, capabilities included, or fail,
                // by method: both paths run.
                let caps: Vec<OutCap<u32>> = params
                    .caps
                    .iter()
                    .map(|c| match c {
                        InCap::Import { id, .. } => OutCap::Import(*id),
                        InCap::Local(l) => OutCap::Local(*l),
                        InCap::Answer { .. } | InCap::Broken(_) | InCap::None => OutCap::None,
                    })
                    .collect();
                match (method_id % 3, params.content()) {
                    (0, Ok(content)) => conn.return_results(answer, content, &caps),
                    (1, _) => {
                        let m = content::caps_message(2);
                        if let Ok(root) = m.get_root_as_reader::<any_pointer::Reader<'_>>() {
                            let local = match target {
                                CallTarget::Local(l) => l,
                                CallTarget::Answer { .. } => 0,
                            };
                            let caps = [
                                OutCap::Local(local),
                                OutCap::Broken(capnp::Error::failed("broken".into())),
                            ];
                            conn.return_results(answer, root, &caps);
                        }
                    }
                    (_, Err(e)) => conn.return_error(answer, e),
                    (_, Ok(_)) => conn.return_error(answer, capnp::Error::failed("refused".into())),
                }
            }
            // Answered by the core already; this peer keeps no outcomes.
            Event::CallFailed { .. } => {}
            Event::Cancel { answer, .. } => conn.return_canceled(answer),
            Event::Finished { .. } => {}
            Event::Return {
                question, result, ..
            } => {
                self.questions.retain(|q| *q != question);
                if let Ok(p) = result {
                    self.note_caps(&p.caps);
                }
            }
            Event::ReturnTakeFrom { question, .. } | Event::ResultsSentElsewhere { question } => {
                self.questions.retain(|q| *q != question)
            }
            Event::Resolve { to, .. } => {
                if let Ok(c) = to {
                    self.note_caps(&[c]);
                }
            }
            Event::Loopback { embargo, .. } => {
                let import = self.imports.first().copied().unwrap_or(0);
                conn.disembargo_reply(embargo, import);
            }
            Event::EmbargoLifted { .. } | Event::EmbargoBroken { .. } => {}
            Event::ExportedPromise { export, cap } => {
                conn.resolve_export(export, &cap, OutCap::Local(cap.wrapping_add(100)))
            }
            Event::Aborted(e) => {
                assert!(
                    !e.to_string().trim().is_empty(),
                    "an abort without a reason"
                );
                self.aborted = true;
            }
        }
    }

    /// Before hanging up: release imports, finish questions.
    fn wind_down(&mut self, conn: &mut Conn<u32>) {
        for id in std::mem::take(&mut self.imports) {
            conn.release_import(id);
        }
        for q in std::mem::take(&mut self.questions) {
            conn.finish(q);
        }
    }
}
