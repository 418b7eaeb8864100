//! What a table's handler, hooks and handles share: the per-partition views, progress for
//! waits, status and counters.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::health::HealthState;

use super::store::Store;
use super::*;

/// The longest key an error names (longer ones are cut, with `…`).
pub(super) const KEY_SHOWN: usize = 128;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Progress {
    pub(super) owned: bool,
    pub(super) caught_up: bool,
    pub(super) applied: Option<i64>,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) applied: AtomicU64,
    pub(super) restored: AtomicU64,
    pub(super) loaded: AtomicU64,
    pub(super) misplaced: AtomicU64,
    pub(super) refused_waits: AtomicU64,
}

/// A running wait's place among [`TableBuilder::max_waiters`], given back on drop.
pub(super) struct Place<V>(pub(super) Arc<Shared<V>>);

impl<V> Drop for Place<V> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A partition this instance holds.
pub(super) struct View<V> {
    /// Which assignment made it.
    pub(super) generation: u64,
    pub(super) entries: HashMap<Vec<u8>, V>,
    /// Those of `entries`' keys that murmur2 places on another partition (a subset: bounded as the
    /// view is).
    pub(super) misplaced: HashSet<Vec<u8>>,
    /// The offset applied last.
    pub(super) applied: Option<i64>,
    /// The offset the store had applied when the partition was assigned.
    pub(super) stored: Option<i64>,
    /// The store could not be read: start over.
    pub(super) reset: bool,
    /// The last record visible when the partition was assigned (`Some(None)`: none); `None` until
    /// known.
    pub(super) last: Option<Option<i64>>,
    /// When the restore began and the offset applied then: its pace so far estimates the time left.
    pub(super) restoring: Option<(Instant, Option<i64>)>,
    pub(super) caught_up: bool,
    /// Set once the store's entries are in (at once without a store); records wait for it.
    pub(super) loaded: watch::Sender<bool>,
    /// `backbone_table_restore_remaining_records` and `backbone_table_entries` of the partition.
    pub(super) gauges: crate::observe::TableGauges,
}

impl<V> Drop for View<V> {
    fn drop(&mut self) {
        self.gauges.remaining.set(0.0);
        self.gauges.remaining_seconds.set(0.0);
        self.gauges.entries.set(0.0);
    }
}

impl<V> View<V> {
    /// Sets the gauges: entries, and records left to restore (up to the last record visible when
    /// the partition was assigned; 0 once caught up or before that end is known).
    pub(super) fn measure(&self) {
        let remaining = match (self.caught_up, self.last) {
            (false, Some(Some(last))) => (last - self.applied.unwrap_or(-1)).max(0),
            _ => 0,
        };
        self.gauges.remaining.set(remaining as f64);
        let seconds = match self.restoring {
            Some((began, from)) if remaining > 0 => {
                let done = self.applied.unwrap_or(-1) - from.unwrap_or(-1);
                time_left(remaining, done, began.elapsed())
            }
            _ => 0.0,
        };
        self.gauges.remaining_seconds.set(seconds);
        self.gauges.entries.set(self.entries.len() as f64);
    }

    /// Marks the start of the restore (once the partition's end is known): the pace is measured
    /// from here.
    pub(super) fn restore_from_here(&mut self) {
        self.restoring = (!self.caught_up).then(|| (Instant::now(), self.applied));
    }

    pub(super) fn reached(&self) -> bool {
        match self.last {
            None => false,
            Some(None) => true,
            Some(Some(last)) => self.applied.is_some_and(|a| a >= last),
        }
    }

    pub(super) fn progress(&self) -> Progress {
        Progress { owned: true, caught_up: self.caught_up, applied: self.applied }
    }
}

/// The time `remaining` offsets need at the pace of `done` offsets in `elapsed`: NaN (unknown)
/// before any progress.
pub(super) fn time_left(remaining: i64, done: i64, elapsed: Duration) -> f64 {
    if done <= 0 || elapsed.is_zero() {
        return f64::NAN;
    }
    remaining as f64 * elapsed.as_secs_f64() / done as f64
}

/// What the table's handler, hooks and handles share.
pub(super) struct Shared<V> {
    pub(super) name: String,
    pub(super) group: String,
    /// For a replicated table: the client settings to delete its group with once it stops.
    pub(super) forget: Option<(crate::Config, String)>,
    pub(super) topic: String,
    pub(super) partitions: i32,
    pub(super) component: String,
    pub(super) health: HealthState,
    pub(super) registry: crate::schema::Registry,
    pub(super) persistent: bool,
    /// Taken (and closed) when the table stops.
    pub(super) store: Mutex<Option<Arc<Store>>>,
    /// Looks at partition ends: watermarks and the last visible record.
    pub(super) probe: Mutex<crate::reader::Reader>,
    /// Asks where partitions end for every writer (`read_uncommitted`): records in a transaction
    /// still open included. Its settings, and the client, made on first use.
    pub(super) probe_written: (rdkafka::ClientConfig, Mutex<Option<crate::reader::Reader>>),
    /// The last end [`Table::sync`] looked up per partition, and when that lookup began: callers
    /// that arrived before it began share it instead of queueing a lookup each.
    pub(super) syncs: tokio::sync::Mutex<HashMap<i32, (Instant, Option<i64>)>>,
    pub(super) views: RwLock<HashMap<i32, View<V>>>,
    /// Per partition, kept across assignments so waiters see the partition come back. Made for
    /// the declared partitions when the table is built; only an assignment adds one (for a topic
    /// that has more), never a wait.
    pub(super) progress: Mutex<HashMap<i32, watch::Sender<Progress>>>,
    /// The bound on waits running at once, and how many are.
    pub(super) max_waiters: usize,
    pub(super) waiting: AtomicUsize,
    /// Bumped whenever a key that belongs elsewhere enters a view: waits on a key look again.
    pub(super) misplaced_seen: watch::Sender<u64>,
    /// The partitions a misplaced key was warned about (once each).
    pub(super) warned: Mutex<HashSet<i32>>,
    pub(super) status: watch::Sender<TableStatus>,
    pub(super) runtime: OnceLock<tokio::runtime::Handle>,
    pub(super) generation: AtomicU64,
    pub(super) assigned: AtomicBool,
    pub(super) running: AtomicBool,
    pub(super) stats: Counters,
}

/// Deletes a replicated table's group after the table left it, through the cluster's admin
/// (`crate::provision`, which knows the in-process mock cluster has no groups to delete): the group
/// is of one run only, and would otherwise stay behind with its committed offsets. A failure (a
/// missing `DELETE` ACL on the group, say) only costs that, so it is logged, not returned.
pub(super) async fn delete_group((config, service): &(crate::Config, String), group: &str) {
    let deleted = async {
        let admin = crate::provision::admin_for(config, service)?;
        admin.delete_group(group, Duration::from_secs(10)).await
    };
    match deleted.await {
        Ok(()) => tracing::debug!(group, "replicated table's consumer group deleted"),
        Err(e) => tracing::warn!(group, error = %e, "replicated table's consumer group not deleted"),
    }
}

impl<V> Shared<V> {
    pub(super) fn read_views(&self) -> std::sync::RwLockReadGuard<'_, HashMap<i32, View<V>>> {
        self.views.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn write_views(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<i32, View<V>>> {
        self.views.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn store(&self) -> Option<Arc<Store>> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A partition's progress, for a wait: refused for a partition the topic does not have (none
    /// is made for it).
    pub(super) fn progress(&self, partition: i32) -> Result<watch::Receiver<Progress>, WaitError> {
        let progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        match progress.get(&partition) {
            Some(sender) => Ok(sender.subscribe()),
            None => Err(WaitError::NoSuchPartition {
                table: self.name.clone(),
                topic: self.topic.clone(),
                partition,
                partitions: progress.keys().max().map_or(0, |last| last + 1).max(self.partitions),
            }),
        }
    }

    /// Tells a partition's waiters where it stands: for assigned (and revoked) partitions only.
    pub(super) fn publish_progress(&self, partition: i32, now: Progress) {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(partition)
            .or_insert_with(|| watch::channel(Progress::default()).0)
            .send_if_modified(|p| std::mem::replace(p, now) != now);
    }

    /// A place among the waits, or [`WaitError::Busy`] if [`TableBuilder::max_waiters`] run.
    pub(super) fn enter(self: &Arc<Self>) -> Result<Place<V>, WaitError> {
        let entered = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_waiters).then_some(n + 1));
        match entered {
            Ok(_) => Ok(Place(self.clone())),
            Err(_) => {
                self.stats.refused_waits.fetch_add(1, Ordering::Relaxed);
                Err(WaitError::Busy { table: self.name.clone(), limit: self.max_waiters })
            }
        }
    }

    /// Whether `key`, expected on `expected`, was read from another partition this instance holds.
    pub(super) fn misplaced(
        &self,
        views: &HashMap<i32, View<V>>,
        key: &[u8],
        expected: i32,
    ) -> Option<MisplacedKey> {
        let (&actual, _) = views
            .iter()
            .find(|(p, v)| **p != expected && !v.misplaced.is_empty() && v.misplaced.contains(key))?;
        let mut shown: String = String::from_utf8_lossy(key).chars().take(KEY_SHOWN + 1).collect();
        if shown.chars().count() > KEY_SHOWN {
            shown = shown.chars().take(KEY_SHOWN).chain(['…']).collect();
        }
        Some(MisplacedKey {
            table: self.name.clone(),
            topic: self.topic.clone(),
            key: shown,
            expected,
            actual,
        })
    }

    /// Counts a record of `partition` whose key murmur2 places on `expected`; warns once per
    /// partition.
    pub(super) fn count_misplaced(&self, partition: i32, key: &[u8], expected: i32, records: u64) {
        self.stats.misplaced.fetch_add(records, Ordering::Relaxed);
        if self.warned.lock().unwrap_or_else(PoisonError::into_inner).insert(partition) {
            tracing::warn!(
                table = self.name,
                topic = self.topic,
                partition,
                key = %String::from_utf8_lossy(&key[..key.len().min(KEY_SHOWN)]),
                expected,
                "a record's key belongs on another partition (murmur2): its producer does not use the \
                 Java client's partitioner; lookups of such keys fail (warned once per partition)"
            );
        }
    }

    /// Why a partition this instance does not hold cannot be read.
    pub(super) fn not_held(&self, partition: i32) -> NotReady {
        if self.assigned.load(Ordering::Acquire) && self.running.load(Ordering::Acquire) {
            NotReady::NotOwned { table: self.name.clone(), partition }
        } else {
            NotReady::Starting { table: self.name.clone() }
        }
    }

    /// Recomputes the status; on a change, tells subscribers and health.
    pub(super) fn refresh(&self) {
        let (owned, restoring) = {
            let views = self.read_views();
            let owned: BTreeSet<i32> = views.keys().copied().collect();
            let restoring = views.iter().filter(|(_, v)| !v.caught_up).map(|(p, _)| *p).collect();
            (owned, restoring)
        };
        let now = TableStatus {
            owned,
            restoring,
            assigned: self.assigned.load(Ordering::Acquire),
            running: self.running.load(Ordering::Acquire),
        };
        let reason = if !now.running {
            format!("table `{}` is not running", self.name)
        } else if !now.assigned {
            format!("waiting for partitions of `{}`", self.topic)
        } else {
            format!("restoring partitions {:?} of `{}`", now.restoring, self.topic)
        };
        let ready = now.is_ready();
        let changed = self.status.send_if_modified(|s| {
            if *s == now {
                return false;
            }
            *s = now;
            true
        });
        if changed {
            if ready {
                self.health.ready(&self.component);
            } else {
                self.health.starting(&self.component, reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::time_left;
    use std::time::Duration;

    #[test]
    fn time_left_follows_the_pace_so_far_and_is_unknown_before_any_progress() {
        // 1,000 offsets in 2 s: 9,000 more take 18 s.
        assert_eq!(time_left(9_000, 1_000, Duration::from_secs(2)), 18.0);
        assert_eq!(time_left(1, 4, Duration::from_millis(100)), 0.025);
        assert!(time_left(9_000, 0, Duration::from_secs(2)).is_nan());
        assert!(time_left(9_000, 10, Duration::ZERO).is_nan());
    }
}
