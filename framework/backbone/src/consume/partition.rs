//! Partition plumbing: a partition's task, how it is told to stop, how it says it has ended, and
//! where it stands ([`Cursor`]).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A partition's task, how to tell it the partition was revoked, whether it has ended, and where it
/// stands.
pub(super) struct Partition {
    pub(super) revoke: watch::Sender<bool>,
    pub(super) task: JoinHandle<()>,
    pub(super) ended: Arc<TaskEnded>,
    pub(super) cursor: Arc<Cursor>,
}

/// Set when a partition's task ends; waited for by the (synchronous) rebalance callback.
#[derive(Default)]
pub(super) struct TaskEnded {
    done: Mutex<bool>,
    changed: Condvar,
}

impl TaskEnded {
    pub(super) fn set(&self) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.changed.notify_all();
    }

    /// Waits until set or `deadline`; whether it was set.
    pub(super) fn wait_until(&self, deadline: Instant) -> bool {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        while !*done {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            done = self.changed.wait_timeout(done, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}

/// Sets [`TaskEnded`] when dropped: however a partition's task ends (returns, is aborted, panics).
pub(super) struct SetOnDrop(pub(super) Arc<TaskEnded>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Where a partition's task stands: the next offset to handle, and how often exactly once rewound it.
///
/// librdkafka may hand an event out twice within one assignment. On every rebalance it pauses all
/// assigned partitions, and a pause restarts the fetcher at the offset after the last event the
/// application took; an event taken while the pause is being applied is not counted as taken yet, so
/// it comes again (confluentinc/librdkafka#2593). Offsets within a partition only grow, so the task
/// skips an event below its cursor: it was handled already.
#[derive(Debug)]
pub(super) struct Cursor {
    /// The next offset to handle; -1 until one is handled.
    pub(super) next: AtomicI64,
    /// Rewinds after aborted transactions (exactly once only).
    rewinds: AtomicU64,
    /// The timestamp (ms since the epoch) of the event in hand or last taken; 0 before one: the age
    /// of the oldest unhandled event while records remain (`backbone_consumer_lag_seconds`).
    pub(super) taken_at: AtomicI64,
}

impl Cursor {
    pub(super) fn new() -> Self {
        Self { next: AtomicI64::new(-1), rewinds: AtomicU64::new(0), taken_at: AtomicI64::new(0) }
    }

    /// Whether the event at `offset` is not behind the cursor (not handled yet).
    pub(super) fn admits(&self, offset: i64) -> bool {
        offset >= self.next.load(Ordering::Acquire)
    }

    /// The event at `offset` was handled.
    pub(super) fn advance(&self, offset: i64) {
        self.next.store(offset + 1, Ordering::Release);
    }

    /// The partition was sought back to `to`.
    pub(super) fn rewind(&self, to: i64) {
        self.next.store(to, Ordering::Release);
        self.rewinds.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn rewinds(&self) -> u64 {
        self.rewinds.load(Ordering::Acquire)
    }

    /// Where a rewound partition resumes.
    pub(super) fn resume_at(&self) -> rdkafka::Offset {
        rdkafka::Offset::Offset(self.next.load(Ordering::Acquire))
    }
}
