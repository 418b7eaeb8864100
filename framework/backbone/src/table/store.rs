//! A table's local store: each partition's entries (raw key and payload, as on the topic) and the
//! offset applied last, written in one redb transaction, so data and offsets never disagree.
//!
//! Commits are atomic but mostly not fsynced (`Durability::None`): Kafka is the source of truth, so
//! losing the last commits in a crash only means replaying them. Every thousandth commit, every
//! second, on revocation and on shutdown a commit is made durable, which persists those before it.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};

/// `(partition, key) → payload`.
const ENTRIES: TableDefinition<'_, (u32, &[u8]), &[u8]> = TableDefinition::new("entries");
/// `partition → offset applied last`.
const OFFSETS: TableDefinition<'_, u32, i64> = TableDefinition::new("offsets");
/// `"topic" → the topic this store follows`.
const META: TableDefinition<'_, &str, &str> = TableDefinition::new("meta");

/// Commits between durable ones, at most.
const DURABLE_EVERY_COMMITS: u64 = 1_000;
/// Time between durable commits, at most (while writes come in).
const DURABLE_EVERY: Duration = Duration::from_secs(1);

/// Raw keys and payloads.
pub(super) type Entries = Vec<(Vec<u8>, Vec<u8>)>;

pub(super) struct Store {
    db: Database,
    /// Commits since the last durable one.
    pending: AtomicU64,
    last_durable: Mutex<Instant>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store at `path` for `topic`; refuses a store that follows another
    /// topic.
    pub(super) fn open(path: &Path, topic: &str) -> Result<Self, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        let db = Database::create(path).map_err(|e| e.to_string())?;
        let init = || -> Result<Option<String>, redb::Error> {
            let txn = db.begin_write()?;
            let other = {
                let mut meta = txn.open_table(META)?;
                let stored = meta.get("topic")?.map(|v| v.value().to_owned());
                if stored.is_none() {
                    meta.insert("topic", topic)?;
                }
                txn.open_table(ENTRIES)?;
                txn.open_table(OFFSETS)?;
                stored.filter(|t| t != topic)
            };
            txn.commit()?;
            Ok(other)
        };
        match init().map_err(|e| e.to_string())? {
            Some(other) => Err(format!("the store holds topic `{other}`, not `{topic}`")),
            None => Ok(Self { db, pending: AtomicU64::new(0), last_durable: Mutex::new(Instant::now()) }),
        }
    }

    /// The offset of `partition` applied last, if any.
    pub(super) fn applied(&self, partition: i32) -> Result<Option<i64>, redb::Error> {
        let txn = self.db.begin_read()?;
        let offsets = txn.open_table(OFFSETS)?;
        Ok(offsets.get(partition.unsigned_abs())?.map(|v| v.value()))
    }

    /// `partition`'s entries: raw keys and payloads.
    pub(super) fn entries(&self, partition: i32) -> Result<Entries, redb::Error> {
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        let (p, empty): (u32, &[u8]) = (partition.unsigned_abs(), &[]);
        let mut out = Vec::new();
        for entry in entries.range((p, empty)..(p + 1, empty))? {
            let (key, value) = entry?;
            out.push((key.value().1.to_vec(), value.value().to_vec()));
        }
        Ok(out)
    }

    /// Applies the record at `offset` of `partition`: `Some((key, Some(value)))` sets `key`,
    /// `Some((key, None))` deletes it (a tombstone); either way, and for `None` (a record without a
    /// key), the offset is recorded, in the same transaction.
    pub(super) fn write(
        &self,
        partition: i32,
        change: Option<(&[u8], Option<&[u8]>)>,
        offset: i64,
    ) -> Result<(), redb::Error> {
        let p = partition.unsigned_abs();
        let durable = self.pending.fetch_add(1, Ordering::AcqRel) + 1 >= DURABLE_EVERY_COMMITS
            || self.lock_last().elapsed() >= DURABLE_EVERY;
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
        {
            let mut entries = txn.open_table(ENTRIES)?;
            match change {
                Some((key, Some(value))) => {
                    entries.insert((p, key), value)?;
                }
                Some((key, None)) => {
                    entries.remove((p, key))?;
                }
                None => {}
            }
            txn.open_table(OFFSETS)?.insert(p, offset)?;
        }
        txn.commit()?;
        if durable {
            self.durable();
        }
        Ok(())
    }

    /// Forgets `partition` (its entries and offset), durably.
    pub(super) fn clear(&self, partition: i32) -> Result<(), redb::Error> {
        let p = partition.unsigned_abs();
        let txn = self.db.begin_write()?;
        {
            let empty: &[u8] = &[];
            txn.open_table(ENTRIES)?.retain_in((p, empty)..(p + 1, empty), |_, _| false)?;
            txn.open_table(OFFSETS)?.remove(p)?;
        }
        txn.commit()?;
        self.durable();
        Ok(())
    }

    /// Makes every commit so far durable.
    pub(super) fn flush(&self) -> Result<(), redb::Error> {
        if self.pending.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        self.durable();
        Ok(())
    }

    fn durable(&self) {
        self.pending.store(0, Ordering::Release);
        *self.lock_last() = Instant::now();
    }

    fn lock_last(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.last_durable.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
