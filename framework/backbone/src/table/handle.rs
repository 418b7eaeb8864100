//! The table handle: running it, reading it, where it stands.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::consume::Consumer;

use super::view::{Progress, Shared, delete_group};
use super::*;

/// Where a table stands: the partitions it holds and which of them are still restoring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableStatus {
    /// The partitions this instance holds.
    pub owned: BTreeSet<i32>,
    /// Those still restoring.
    pub restoring: BTreeSet<i32>,
    /// Whether the group has assigned partitions (possibly none) at least once.
    pub assigned: bool,
    /// Whether [`Table::run`] is running.
    pub running: bool,
}

impl TableStatus {
    /// Running, assigned, and nothing restoring: what readiness reports.
    pub fn is_ready(&self) -> bool {
        self.running && self.assigned && self.restoring.is_empty()
    }
}

/// Counters since the table was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Records applied from the topic.
    pub applied: u64,
    /// Of those, records applied while their partition was restoring.
    pub restored: u64,
    /// Entries read from the local store (not from the topic) when partitions were assigned.
    pub loaded: u64,
    /// Records (read from the topic, or entries from the local store) whose key murmur2 places on
    /// another partition than the one they were read from: see [`Table::misplaced`].
    pub misplaced: u64,
    /// Waits refused because [`TableBuilder::max_waiters`] were running.
    pub refused_waits: u64,
}

/// A keyed view of a compacted topic; see the [module docs](crate::table). Cheap to clone: clones share
/// the view. Build it with [`Table::builder`], run it with [`Table::run`].
pub struct Table<V> {
    pub(super) shared: Arc<Shared<V>>,
    /// Taken by [`Table::run`].
    pub(super) consumer: Arc<Mutex<Option<TableConsumer<V>>>>,
}

pub(super) type TableConsumer<V> = Consumer<Arc<Shared<V>>>;

impl<V> Clone for Table<V> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone(), consumer: self.consumer.clone() }
    }
}

impl<V> std::fmt::Debug for Table<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.shared.name)
            .field("topic", &self.shared.topic)
            .field("status", &*self.shared.status.borrow())
            .finish_non_exhaustive()
    }
}

impl<V: TableValue> Table<V> {
    /// Follows the topic until `shutdown` completes (see [`crate::shutdown_signal`]), then leaves
    /// the group, makes the store durable and closes it. Reads answer [`NotReady`] afterwards.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), TableError> {
        let shared = &self.shared;
        let consumer = self
            .consumer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| TableError::AlreadyRunning { table: shared.name.clone() })?;
        shared.runtime.get_or_init(tokio::runtime::Handle::current);
        shared.running.store(true, Ordering::Release);
        shared.refresh();
        let outcome = consumer.run(shutdown).await;
        shared.running.store(false, Ordering::Release);
        if let Some(admin) = &shared.forget {
            delete_group(admin, &shared.group).await;
        }
        let dropped: Vec<i32> = shared.write_views().drain().map(|(p, _)| p).collect();
        for partition in dropped {
            shared.publish_progress(partition, Progress::default());
        }
        let store = shared.store.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(store) = store {
            let flushed = tokio::task::spawn_blocking(move || store.flush()).await;
            if let Ok(Err(e)) = flushed {
                tracing::warn!(table = shared.name, error = %e, "table store not flushed");
            }
        }
        shared.refresh();
        outcome.map_err(TableError::from)
    }

    /// The table's consumer group: `<service>.table.<name>`, or for a
    /// [replicated](TableBuilder::replicated) table `<service>.table.<name>.<uuid>`.
    pub fn group(&self) -> &str {
        &self.shared.group
    }

    /// The value of `key`: `Ok(None)` if the topic has none (or a tombstone deleted it), or why
    /// this instance cannot say. A key absent from its partition but read from another one this
    /// instance holds is [`NotReady::Misplaced`].
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<V>, NotReady> {
        let key = key.as_ref();
        let partition = self.partition_for(key);
        let views = self.shared.read_views();
        let misplaced =
            || self.shared.misplaced(&views, key, partition).map(|m| NotReady::Misplaced(Box::new(m)));
        match views.get(&partition) {
            Some(view) if view.caught_up => match view.entries.get(key) {
                Some(value) => Ok(Some(value.clone())),
                None => misplaced().map_or(Ok(None), Err),
            },
            Some(_) => Err(NotReady::Restoring { table: self.shared.name.clone(), partition }),
            None => Err(misplaced().unwrap_or_else(|| self.shared.not_held(partition))),
        }
    }

    /// Every entry this instance holds (its partitions' keys), or why it cannot answer: a partition
    /// still restoring, or none assigned yet.
    pub fn snapshot(&self) -> Result<BTreeMap<Vec<u8>, V>, NotReady> {
        let views = self.shared.read_views();
        if !self.shared.assigned.load(Ordering::Acquire) || !self.shared.running.load(Ordering::Acquire) {
            return Err(NotReady::Starting { table: self.shared.name.clone() });
        }
        if let Some((partition, _)) = views.iter().find(|(_, v)| !v.caught_up) {
            return Err(NotReady::Restoring { table: self.shared.name.clone(), partition: *partition });
        }
        Ok(views.values().flat_map(|v| v.entries.iter().map(|(k, v)| (k.clone(), v.clone()))).collect())
    }
}

impl<V> Table<V> {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The topic it follows.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The health component that is *starting* until the table has restored: `table:<name>`.
    pub fn component(&self) -> &str {
        &self.shared.component
    }

    /// The partition holding `key` (see [`partition_for`]).
    pub fn partition_for(&self, key: impl AsRef<[u8]>) -> i32 {
        partition_for(key.as_ref(), self.shared.partitions)
    }

    /// Whether this instance holds `partition` (restored or not).
    pub fn owns(&self, partition: i32) -> bool {
        self.shared.read_views().contains_key(&partition)
    }

    /// Where the table stands now.
    pub fn status(&self) -> TableStatus {
        self.shared.status.borrow().clone()
    }

    /// A receiver of [`TableStatus`] changes (partitions gained, lost, restored).
    pub fn subscribe(&self) -> watch::Receiver<TableStatus> {
        self.shared.status.subscribe()
    }

    /// Waits until the status satisfies `condition` (checked now and on every change).
    pub async fn wait_until(&self, condition: impl Fn(&TableStatus) -> bool) -> TableStatus {
        let mut status = self.subscribe();
        let seen = status.wait_for(|s| condition(s)).await;
        // The sender lives as long as `self`.
        seen.map(|s| s.clone()).unwrap_or_else(|_| self.status())
    }

    /// Waits until the table is ready: running, assigned, nothing restoring.
    pub async fn ready(&self) -> TableStatus {
        self.wait_until(TableStatus::is_ready).await
    }

    /// Counters since the table was built.
    pub fn stats(&self) -> TableStats {
        let s = &self.shared.stats;
        TableStats {
            applied: s.applied.load(Ordering::Relaxed),
            restored: s.restored.load(Ordering::Relaxed),
            loaded: s.loaded.load(Ordering::Relaxed),
            misplaced: s.misplaced.load(Ordering::Relaxed),
            refused_waits: s.refused_waits.load(Ordering::Relaxed),
        }
    }

    /// Records read (from the topic, or from the local store) whose key murmur2 places on another
    /// partition than the one they were read from, since the table was built: writes by a producer
    /// that breaks the [partitioner contract](crate::table#the-partitioner-contract). Each partition where
    /// one is seen is also warned about once in the log.
    pub fn misplaced(&self) -> u64 {
        self.shared.stats.misplaced.load(Ordering::Relaxed)
    }

    /// The waits running now (at most [`TableBuilder::max_waiters`]).
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Acquire)
    }

    /// How many partitions the table keeps wait state for: the topic's, never more (for tests).
    #[doc(hidden)]
    pub fn tracked_partitions(&self) -> usize {
        self.shared.progress.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}
