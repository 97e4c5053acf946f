//! Writing: everything the core produced during one turn of the actor
//! goes out in one write ([`Flush`]), within the outgoing-bytes bound; when
//! the connection ends, the writer gets a moment of its own to finish.

use std::task::Poll;

use actix::{ActorContext, ActorFuture};

use super::{Connection, MAX_SPARE_BYTES, WRITER_GRACE};
use crate::metrics;
use capnp_actix_proto::captp::TableSizes;

/// The connection's writing: polled in every turn of the actor, it writes
/// what the turn produced (see [`Connection::flush_output`]).
pub(super) struct Flush;

impl ActorFuture<Connection> for Flush {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        act: &mut Connection,
        ctx: &mut actix::Context<Connection>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        if !act.flush.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            act.flush = Some(cx.waker().clone());
        }
        act.flush_output(ctx, cx)
    }
}

impl Connection {
    /// Handles the core's events; what the core produced is written at
    /// the end of the actor's turn ([`Flush`]), so that everything
    /// produced while handling one batch of input goes out in one write.
    pub(super) fn handle_core_events(&mut self, ctx: &mut actix::Context<Self>) {
        while let Some(event) = self.core.next_event() {
            self.on_event(event, ctx);
        }
        if self.unused() {
            self.core.disconnected(capnp::Error::disconnected(
                "the connection was closed: nothing refers to it any more".into(),
            ));
            while let Some(event) = self.core.next_event() {
                self.on_event(event, ctx);
            }
        }
        self.report_tables();
        if self.core.aborted().is_some() {
            self.release_writer();
            ctx.stop();
        } else if self.core.has_output() {
            if let Some(flush) = &self.flush {
                flush.wake_by_ref();
            }
        }
    }

    /// Reports the protocol tables' sizes to the metrics when they
    /// changed (all empty once the connection has ended).
    pub(super) fn report_tables(&mut self) {
        let now = if self.core.aborted().is_some() {
            TableSizes::default()
        } else {
            self.core.table_sizes()
        };
        if now != self.reported_tables {
            metrics::tables(&self.reported_tables, &now);
            self.reported_tables = now;
        }
    }

    /// True when the connection should close for being unused (see
    /// [`ConnectionOptions::close_when_unused`](super::ConnectionOptions::close_when_unused)).
    fn unused(&self) -> bool {
        self.close_when_unused && self.used && self.core.aborted().is_none() && self.holds_nothing()
    }

    /// True when nothing is kept for or from the peer: no question, no
    /// answer (so no call held and no results kept), no import, and every
    /// table of the core empty.
    pub(super) fn holds_nothing(&self) -> bool {
        self.questions.is_empty()
            && self.answers.is_empty()
            && self.imports.is_empty()
            && self.core.table_sizes().is_empty()
    }

    /// Queues the core's output and writes what the stream takes now.
    pub(super) fn flush_output(
        &mut self,
        ctx: &mut actix::Context<Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Poll::Ready(());
        };
        if self.core.has_output() {
            let out = self.core.take_output_pieces();
            if writer.queued() + out.len() > self.max_outgoing && self.core.aborted().is_none() {
                // Only the abort goes out, right after the frame being
                // written: the peer reads the reason as soon as it reads.
                drop(out);
                writer.cut_after_current_frame();
                self.core.abort(capnp::Error::overloaded(format!(
                    "the peer is not reading: more than {} bytes wait to be written",
                    self.max_outgoing
                )));
                self.handle_core_events(ctx);
                return Poll::Ready(());
            }
            metrics::bytes_sent(out.len());
            writer.push(out);
        }
        let core = &mut self.core;
        let written = writer.poll_write(cx, |buffer| {
            if buffer.capacity() <= MAX_SPARE_BYTES {
                core.recycle_output(buffer);
            }
        });
        // What waits to be written counts against the vat's budget too.
        let queued = writer.queued();
        if queued != self.queued_out {
            self.queued_out = queued;
            self.report_holdings();
        }
        match written {
            Poll::Ready(Err(e)) => {
                self.writer = None;
                self.core.disconnected(capnp::Error::disconnected(format!(
                    "connection write failed: {e}"
                )));
                self.handle_core_events(ctx);
                Poll::Ready(())
            }
            _ => Poll::Pending,
        }
    }

    /// Hands the writer, with what is left to write (the abort, if any),
    /// to a task of its own that has a moment to finish and shut the
    /// stream down (so that a peer that does not read cannot hold the
    /// socket and its bytes).
    pub(super) fn release_writer(&mut self) {
        let held = self.held_until_finished.take();
        let leftover = self.leftover.take();
        if let Some(mut writer) = self.writer.take() {
            writer.push(self.core.take_output_pieces());
            actix_rt::spawn(async move {
                let _ = tokio::time::timeout(WRITER_GRACE, writer.finish(leftover)).await;
                drop(held);
            });
        }
    }
}
