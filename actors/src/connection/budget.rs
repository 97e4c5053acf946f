//! Memory budgets: the bytes a peer can make us hold, counted per
//! connection and for the whole vat.
//!
//! A connection holds, for its peer, the messages of the peer's calls
//! not answered yet (`held`, bounded by
//! [`ConnectionOptions::max_held_call_bytes`](super::ConnectionOptions::max_held_call_bytes):
//! a call beyond fails with Overloaded) and the results it returned that
//! the peer has not finished yet (`retained`, bounded by
//! [`ConnectionOptions::max_retained_result_bytes`](super::ConnectionOptions::max_retained_result_bytes):
//! beyond, the peer is not finishing what it asked for, and the connection
//! is aborted with a reason naming the budget).
//!
//! A connection also holds what it has written that the peer has not
//! taken yet (`queued_out`, bounded by
//! [`ConnectionOptions::max_outgoing_bytes`](super::ConnectionOptions::max_outgoing_bytes)).
//!
//! A [`VatBudget`] bounds the sum of the three over every connection that
//! shares it.
//! While the sum is over the budget, new calls fail with Overloaded on
//! every connection; a connection whose growth takes the sum over it
//! aborts the connection that holds the most, with a reason naming the
//! budget, so that one greedy peer cannot starve the others.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix::{Handler, Message, Recipient};

use super::tables::HashMap;
use super::Connection;
use crate::memory;

/// Default of [`ConnectionOptions::max_retained_result_bytes`](super::ConnectionOptions::max_retained_result_bytes).
pub const DEFAULT_MAX_RETAINED_RESULT_BYTES: usize = 64 << 20;

/// Default of a vat's [`VatBudget`]: what all its peers together may make
/// it hold.
pub const DEFAULT_VAT_BUDGET_BYTES: usize = 1 << 30;

/// The bytes that all the connections sharing it may hold for their
/// peers (calls not answered, results not finished), together. Share one
/// among a vat's connections through
/// [`ConnectionOptions::budget`](super::ConnectionOptions::budget).
pub struct VatBudget {
    limit: usize,
    /// The sum of the holders' bytes (changed under `state`'s lock, read
    /// without it).
    total: AtomicUsize,
    /// The highest `total` since memory was last given back (see
    /// [`crate::memory`]).
    peak: AtomicUsize,
    state: Mutex<BudgetState>,
}

#[derive(Default)]
struct BudgetState {
    holders: HashMap<u64, Holder>,
}

/// Holdings change by at least this much before a connection reports
/// them (or when they fall to nothing), so that small calls do not take
/// the budget's lock twice each.
pub(super) const REPORT_STEP: usize = 64 << 10;

/// One connection's share.
struct Holder {
    bytes: usize,
    /// Tells the connection to shed its load.
    shed: Recipient<ShedLoad>,
}

impl std::fmt::Debug for VatBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VatBudget")
            .field("limit", &self.limit)
            .field("held", &self.held())
            .finish()
    }
}

impl VatBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<VatBudget> {
        Arc::new(VatBudget {
            limit,
            total: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            state: Mutex::new(BudgetState::default()),
        })
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes held now, by every connection sharing the budget.
    pub fn held(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// True while the connections hold more than the budget.
    pub fn exhausted(&self) -> bool {
        self.held() > self.limit
    }

    /// While the budget is exhausted, what is said to a peer refused for
    /// it: "this vat's memory budget is exhausted (… held …, budget …)".
    pub fn exhausted_reason(&self) -> Option<String> {
        self.exhausted().then(|| {
            format!(
                "this vat's memory budget is exhausted ({} bytes held for its peers, budget {})",
                self.held(),
                self.limit
            )
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connection `conn` now holds `bytes`. Over the budget, and if this
    /// connection grew, the connection that holds the most is told to
    /// shed its load (it may be this one).
    pub(super) fn update(&self, conn: u64, bytes: usize, shed: &Recipient<ShedLoad>) {
        let mut s = self.lock();
        let before = match s.holders.get_mut(&conn) {
            Some(h) => std::mem::replace(&mut h.bytes, bytes),
            None => {
                s.holders.insert(
                    conn,
                    Holder {
                        bytes,
                        shed: shed.clone(),
                    },
                );
                0
            }
        };
        let total = self.total.load(Ordering::Relaxed) - before + bytes;
        self.total.store(total, Ordering::Relaxed);
        self.after_change(total);
        if bytes <= before || total <= self.limit {
            return;
        }
        let Some((&id, biggest)) = s.holders.iter().max_by_key(|(_, h)| h.bytes) else {
            return;
        };
        let message = ShedLoad {
            holds: biggest.bytes,
            total,
            limit: self.limit,
        };
        let shed = biggest.shed.clone();
        // The biggest holder is forgotten now, so that the next growth
        // picks another if it does not shed fast enough.
        if let Some(h) = s.holders.remove(&id) {
            self.total.fetch_sub(h.bytes, Ordering::Relaxed);
        }
        drop(s);
        shed.do_send(message);
    }

    /// Counts `bytes` against the budget until the [`Reservation`] is
    /// dropped: what a peer makes the vat hold outside a connection (a
    /// TLS handshake in progress). Not shed by the budget: whoever
    /// reserves checks [`VatBudget::exhausted`] first.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Reservation {
        // Under the lock: `update` reads and stores the total under it.
        let _state = self.lock();
        let total = self.total.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.after_change(total);
        Reservation {
            budget: self.clone(),
            bytes,
        }
    }

    /// Connection `conn` has ended: its share goes.
    pub(super) fn remove(&self, conn: u64) {
        let mut s = self.lock();
        if let Some(h) = s.holders.remove(&conn) {
            let total = self.total.load(Ordering::Relaxed) - h.bytes;
            self.total.store(total, Ordering::Relaxed);
            self.after_change(total);
        }
    }

    /// Keeps the peak of what is held, and gives memory back once the
    /// holdings have fallen by [`memory::TRIM_STEP`] from it.
    fn after_change(&self, total: usize) {
        crate::metrics::vat_held(total);
        let peak = self.peak.fetch_max(total, Ordering::Relaxed).max(total);
        if peak >= total + memory::TRIM_STEP {
            self.peak.store(total, Ordering::Relaxed);
            memory::release_free_memory_soon();
        }
    }
}

/// Bytes counted against a [`VatBudget`] until dropped (see
/// [`VatBudget::reserve`]).
pub struct Reservation {
    budget: Arc<VatBudget>,
    bytes: usize,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reservation({} bytes)", self.bytes)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let _state = self.budget.lock();
        let total = self.budget.total.fetch_sub(self.bytes, Ordering::Relaxed) - self.bytes;
        self.budget.after_change(total);
    }
}

/// Tells the connection that holds the most of an exhausted
/// [`VatBudget`] to end.
pub(super) struct ShedLoad {
    holds: usize,
    total: usize,
    limit: usize,
}

impl Message for ShedLoad {
    type Result = ();
}

impl Handler<ShedLoad> for Connection {
    type Result = ();
    fn handle(&mut self, msg: ShedLoad, ctx: &mut Self::Context) {
        self.core.abort(capnp::Error::overloaded(format!(
            "this vat's memory budget is exhausted ({} bytes held for its peers, budget {}), \
             and this connection holds the most ({} bytes of calls not answered, results \
             not finished and output not taken)",
            msg.total, msg.limit, msg.holds
        )));
        self.handle_core_events(ctx);
    }
}

impl Connection {
    /// What this connection holds for its peer, in bytes.
    pub(super) fn holds(&self) -> usize {
        self.held_bytes + self.retained_bytes + self.queued_out
    }

    /// Tells the vat's budget what this connection holds now, when it
    /// has changed by [`REPORT_STEP`] since the last report or fallen to
    /// nothing.
    pub(super) fn report_holdings(&mut self) {
        let Some(budget) = &self.budget else {
            return;
        };
        let holds = self.holds();
        if holds.abs_diff(self.reported) >= REPORT_STEP || (holds == 0 && self.reported != 0) {
            self.reported = holds;
            budget.update(self.id, holds, &self.shed);
        }
    }

    /// A new call from the peer while the vat's budget is exhausted fails
    /// with this error.
    pub(super) fn vat_overloaded(&self) -> Option<capnp::Error> {
        self.budget
            .as_ref()?
            .exhausted_reason()
            .map(capnp::Error::overloaded)
    }

    /// Results of the peer's call `answer` (`bytes` long) were returned
    /// and are kept until the peer finishes the call. Beyond
    /// [`ConnectionOptions::max_retained_result_bytes`](super::ConnectionOptions::max_retained_result_bytes)
    /// (one answer is always kept), the peer is not finishing its calls:
    /// the connection is aborted.
    pub(super) fn retain(&mut self, answer: u32, bytes: usize) {
        if self.retained_answers > 0
            && self.retained_bytes.saturating_add(bytes) > self.max_retained
        {
            self.core.abort(capnp::Error::overloaded(format!(
                "the peer has not finished {} calls whose results hold {} bytes, and another \
                 of {bytes} bytes would exceed this connection's budget for results not \
                 finished ({} bytes)",
                self.retained_answers, self.retained_bytes, self.max_retained
            )));
            return;
        }
        // Kept with the answer's entry, which lives until the finish.
        let Some(entry) = self.answers.get_mut(&answer) else {
            return;
        };
        if entry.retained == 0 {
            self.retained_answers += 1;
        }
        self.retained_bytes = self.retained_bytes - entry.retained + bytes;
        entry.retained = bytes;
        self.report_holdings();
    }

    /// The results of the peer's call (`bytes` of them, from its entry)
    /// are no longer kept.
    pub(super) fn unretain(&mut self, bytes: usize) {
        if bytes > 0 {
            self.retained_answers -= 1;
            self.retained_bytes -= bytes;
            self.report_holdings();
        }
    }
}
