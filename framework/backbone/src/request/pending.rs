//! The requester's bookkeeping: bounded pending requests, reply routing, metrics.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::reply::{Reply, RequestError};

/// A snapshot of a [`Requester`](super::Requester)'s metrics. Counters only grow; each request ends
/// in exactly one of `answered` (including `remote_errors`), `timed_out`, `overloaded`,
/// `publish_failed`, `cancelled` or closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestStats {
    /// Requests waiting for their reply now.
    pub pending: usize,
    /// Requests published (acknowledged by the broker).
    pub sent: u64,
    /// Requests that got their reply (error replies included).
    pub answered: u64,
    /// Of those, error replies ([`RequestError::Remote`]).
    pub remote_errors: u64,
    /// Requests that got no reply in time.
    pub timed_out: u64,
    /// Requests refused because `max_pending` were pending.
    pub overloaded: u64,
    /// Requests that could not be published.
    pub publish_failed: u64,
    /// Requests whose caller stopped waiting (dropped the future).
    pub cancelled: u64,
    /// Replies for requests no longer pending (timed out, cancelled, or unknown): dropped.
    pub late_replies: u64,
    /// Further replies to requests already answered (a responder instance died after answering, and
    /// another answered again): dropped.
    pub duplicate_replies: u64,
    /// Replies addressed to other requester instances: skipped.
    pub foreign_replies: u64,
    /// Times the reply reader failed (a panic) and was started again.
    pub reader_restarts: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) sent: AtomicU64,
    pub(super) answered: AtomicU64,
    pub(super) remote_errors: AtomicU64,
    pub(super) timed_out: AtomicU64,
    pub(super) overloaded: AtomicU64,
    pub(super) publish_failed: AtomicU64,
    pub(super) cancelled: AtomicU64,
    pub(super) late_replies: AtomicU64,
    pub(super) duplicate_replies: AtomicU64,
    pub(super) foreign_replies: AtomicU64,
    pub(super) reader_restarts: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Pending requests and the ids recently answered (to tell duplicate replies from late ones).
pub(super) struct Ledger {
    pub(super) pending: HashMap<Uuid, oneshot::Sender<Reply>>,
    pub(super) answered: HashSet<Uuid>,
    pub(super) answered_order: VecDeque<Uuid>,
    pub(super) closed: bool,
}

/// Where a reply went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Routed {
    Delivered,
    Duplicate,
    Late,
}

/// The requester's bookkeeping: bounded pending requests, reply routing, counters.
pub(super) struct Routes {
    pub(super) ledger: Mutex<Ledger>,
    pub(super) counters: Counters,
    pub(super) max_pending: usize,
    pub(super) remember: usize,
}

impl Routes {
    pub(super) fn new(max_pending: usize) -> Self {
        Self {
            ledger: Mutex::new(Ledger {
                pending: HashMap::with_capacity(max_pending.min(1 << 16)),
                answered: HashSet::new(),
                answered_order: VecDeque::new(),
                closed: false,
            }),
            counters: Counters::default(),
            max_pending,
            remember: (max_pending * 16).max(10_000),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `id` as pending; refused when `max_pending` are (or the requester is closed).
    pub(super) fn register(&self, id: Uuid) -> Result<oneshot::Receiver<Reply>, RequestError> {
        let mut ledger = self.lock();
        if ledger.closed {
            return Err(RequestError::Closed);
        }
        if ledger.pending.len() >= self.max_pending {
            drop(ledger);
            bump(&self.counters.overloaded);
            return Err(RequestError::Overloaded { max_pending: self.max_pending });
        }
        let (tx, rx) = oneshot::channel();
        ledger.pending.insert(id, tx);
        Ok(rx)
    }

    /// Hands `reply` to its waiting caller, if any: the first reply wins.
    pub(super) fn deliver(&self, reply: Reply) -> Routed {
        let id = reply.id;
        let mut ledger = self.lock();
        let routed = match ledger.pending.remove(&id) {
            // Sent under the lock, so a caller giving up at this moment finds the reply in its
            // receiver (see `give_up`).
            Some(waiting) => {
                waiting.send(reply).ok();
                ledger.answered.insert(id);
                ledger.answered_order.push_back(id);
                while ledger.answered_order.len() > self.remember {
                    if let Some(old) = ledger.answered_order.pop_front() {
                        ledger.answered.remove(&old);
                    }
                }
                Routed::Delivered
            }
            None if ledger.answered.contains(&id) => Routed::Duplicate,
            None => Routed::Late,
        };
        drop(ledger);
        match routed {
            Routed::Delivered => {}
            Routed::Duplicate => bump(&self.counters.duplicate_replies),
            Routed::Late => bump(&self.counters.late_replies),
        }
        routed
    }

    /// Stops waiting for `id`: `true` if it was still pending (no reply came), `false` if a reply
    /// was delivered meanwhile (it is in the receiver).
    pub(super) fn give_up(&self, id: Uuid) -> bool {
        self.lock().pending.remove(&id).is_some()
    }

    /// Refuses new requests and drops the pending ones (their callers get [`RequestError::Closed`]).
    pub(super) fn close(&self) {
        let mut ledger = self.lock();
        ledger.closed = true;
        ledger.pending.clear();
    }

    pub(super) fn stats(&self) -> RequestStats {
        let pending = self.lock().pending.len();
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RequestStats {
            pending,
            sent: get(&c.sent),
            answered: get(&c.answered),
            remote_errors: get(&c.remote_errors),
            timed_out: get(&c.timed_out),
            overloaded: get(&c.overloaded),
            publish_failed: get(&c.publish_failed),
            cancelled: get(&c.cancelled),
            late_replies: get(&c.late_replies),
            duplicate_replies: get(&c.duplicate_replies),
            foreign_replies: get(&c.foreign_replies),
            reader_restarts: get(&c.reader_restarts),
        }
    }

    /// Counts the outcome of a request that got its reply.
    pub(super) fn answered(&self, reply: Reply) -> Result<Reply, RequestError> {
        bump(&self.counters.answered);
        let result = reply.into_result();
        if result.is_err() {
            bump(&self.counters.remote_errors);
        }
        result
    }
}

/// A request in flight: when dropped before it ended (its caller stopped waiting), it stops being
/// pending.
pub(super) struct InFlight<'a> {
    pub(super) routes: &'a Routes,
    pub(super) id: Uuid,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Every ending path has removed the entry already; only a cancellation finds it.
        if self.routes.give_up(self.id) {
            bump(&self.routes.counters.cancelled);
        }
    }
}
