//! Tables: keyed state materialized from a compacted topic (Goka's group table, Kafka Streams'
//! KTable).
//!
//! Writes go to the topic (publish through the service's [`Publisher`]); the [`Table`] follows it:
//! each record sets its key, a tombstone deletes it. The view is served to the HTTP layer:
//!
//! - **Restore**: when a partition is assigned the table reads it from the start (or, with a local
//!   store, from where the store left off) up to the last record visible at assignment. Until then
//!   the service is not ready ([`HealthState::starting`] has `table:<name>`) and reads of that
//!   partition answer [`NotReady`], for a 503 with `Retry-After`: never stale data silently.
//! - **Partitioned**: the instances of a service share the table's partitions through one consumer
//!   group (`<service>.table.<name>`); an instance holds the partitions it owns and drops those it
//!   loses. [`Table::partition_for`] (the publisher's murmur2 partitioner) tells "not mine"
//!   ([`NotReady::NotOwned`]) from "absent" (`Ok(None)`).
//! - **Read your writes**: [`Publisher::publish`] resolves with a [`Delivery`] (partition and
//!   offset, the consistency token); [`Table::wait_for`] waits, without polling, until the view has
//!   applied it.
//! - **In memory by default**; [`TableBuilder::persistent`] adds a local store (redb: pure Rust, no
//!   dependencies, ACID) holding each partition's entries and the offset applied last, committed
//!   together. A restart reads the store and replays only what is newer: the consumer is sought to
//!   the stored offset + 1 when the partition is assigned (in the assignment itself, see
//!   [`ConsumerHooks::start_offsets`]), since the store, not the group's committed offset, says
//!   what the view holds.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use backbone::consume::dead_letter_topic;
//! use backbone::table::Table;
//! use backbone::{Config, Outgoing, Service, TopicSpec};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let levels = TopicSpec::private("stock", "levels").compacted().build()?;
//! let spec = Service::new("stock")
//!     .owns(&levels)
//!     .owns(&dead_letter_topic("stock", &levels)?)
//!     .consumes(&levels)
//!     .spec()?;
//! let config = Config::from_env("stock")?;
//! let running = spec.start(&config).await?;
//! let table = Table::<String>::builder(&config, &spec, &levels, running.publisher().clone())
//!     .persistent("/var/lib/stock/levels.redb")
//!     .build()?;
//! tokio::spawn({
//!     let table = table.clone();
//!     async move { table.run(backbone::shutdown_signal()).await }
//! });
//!
//! // A write, then a read that sees it.
//! let at = running.publisher().publish(&levels, Outgoing::new("Level", b"sku-1", b"7")).await?;
//! table.wait_for_delivery(at, Duration::from_secs(5)).await?;
//! assert_eq!(table.get("sku-1")?, Some("7".to_owned()));
//! # Ok(())
//! # }
//! ```
//!
//! Records the runtime dead-letters before the table sees them (a schema id the registry does not
//! know) are skipped; if such a record is the last of its partition, that partition stays restoring
//! until the next write to it.
//!
//! Waits are bounded: at most [`TableBuilder::max_waiters`] run at once (more are refused with
//! [`WaitError::Busy`]), and a wait for a partition the topic does not have (a consistency token
//! naming partition 7 of a topic of 6, say) is refused with [`WaitError::NoSuchPartition`] without
//! keeping anything for it.
//!
//! # The partitioner contract
//!
//! Keyed lookups ([`Table::get`], [`Table::wait_until_key`]) look for a key only on the partition
//! murmur2 names for it ([`partition_for`]: the Java client's default partitioner, and
//! librdkafka's `murmur2_random`, which backbone's [`Publisher`] uses). **Every producer writing a
//! keyed topic that a table follows must partition the same way.** librdkafka's default
//! (`consistent_random`, CRC32) does not, nor do most non-Java clients' defaults: set
//! `partitioner=murmur2_random` there (or write explicitly to [`partition_for`]'s partition).
//!
//! A record read from another partition than the one its key belongs on is a *misplaced key*. The
//! table counts it ([`Table::misplaced`], [`TableStats::misplaced`]), warns once per partition in
//! the log, and keeps it in the view of the partition it was read from (so the view still mirrors
//! the topic, [`Table::snapshot`] includes it, and a tombstone written the same way deletes it),
//! indexed as misplaced. A lookup of a key absent from its own partition but present as misplaced
//! on a partition this instance holds fails at once with [`NotReady::Misplaced`] /
//! [`WaitError::Misplaced`] (not retriable; the key, the partition murmur2 names and the one it was
//! read from), instead of answering "absent" or waiting for a record that never comes there. A
//! correctly placed record of the same key wins over a misplaced one. The index costs one key per
//! misplaced entry (bounded as the view is: by the topic's live keys), and is rebuilt from the
//! local store on restart. On a table split between instances, a misplaced key on a partition
//! another instance holds cannot be seen: there the lookup answers as if the key were absent.

mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::config::Config;
use crate::consume::{ConsumeError, Consumer, ConsumerHooks};
use crate::handler::{BoxedHandler, Decode, Event, ExtractError, HandlerError, Metadata, State};
use crate::health::HealthState;
use crate::publish::{Delivery, Publisher};
use crate::service::ServiceSpec;
use crate::topic::TopicSpec;
use store::Store;

/// How long an HTTP client should wait before asking again while a table cannot answer.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How many waits ([`Table::wait_for`], [`Table::sync`], [`Table::wait_until_key`]) a table lets
/// run at once unless told otherwise ([`TableBuilder::max_waiters`]).
pub const DEFAULT_MAX_WAITERS: usize = 10_000;

/// The longest key an error names (longer ones are cut, with `…`).
const KEY_SHOWN: usize = 128;

/// How long one look at a partition's end may take (watermarks, then reading its last records).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a table holds: decoded with [`Decode`] (`String`, `Vec<u8>`, [`crate::Json<T>`], Avro
/// events), cloned out by [`Table::get`].
pub trait TableValue: Decode + Clone + Send + Sync + 'static {}

impl<T: Decode + Clone + Send + Sync + 'static> TableValue for T {}

/// The partition the publisher writes `key` to, among `partitions`: murmur2 of the key, made
/// positive, modulo the partition count (librdkafka's `murmur2_random` and the Java client's
/// default partitioner agree).
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    // Java's murmur2 takes the length as an int; keys are far shorter than 4 GiB.
    let mut h: u32 = SEED ^ (key.len() as u32);
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    let partitions = partitions.max(1).unsigned_abs();
    // Less than `partitions`, an i32.
    ((h & 0x7fff_ffff) % partitions) as i32
}

/// Reads a consistency token (`partition:offset`, [`Delivery`]'s text form) back, e.g. from a
/// query parameter.
pub fn parse_token(token: &str) -> Option<Delivery> {
    let (partition, offset) = token.trim().split_once(':')?;
    let (partition, offset) = (partition.parse().ok()?, offset.parse().ok()?);
    (partition >= 0 && offset >= 0).then_some(Delivery { partition, offset })
}

/// A key found on another partition than the one murmur2 names for it: its record was written by
/// a producer that does not use the Java client's partitioner (see the
/// [module docs](self#the-partitioner-contract)). Keyed lookups never look there, so they answer
/// this instead of `None` or waiting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "table `{table}`: key `{key}` was written to partition {actual} of `{topic}`, but murmur2 places \
     it on partition {expected}: its producer does not use the Java client's (murmur2) partitioner"
)]
pub struct MisplacedKey {
    /// The table.
    pub table: String,
    /// The topic.
    pub topic: String,
    /// The key, as text (lossy; cut after 128 characters).
    pub key: String,
    /// The partition murmur2 names, where lookups look.
    pub expected: i32,
    /// The partition the record was read from.
    pub actual: i32,
}

/// Why a table cannot answer a read now. Each but [`NotReady::Misplaced`] is a 503 with
/// `Retry-After` for the HTTP layer ([`NotReady::status`], [`NotReady::retry_after`]); none is
/// "absent".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// The table holds no partitions: not running (yet, or any more), or waiting for the group.
    #[error("table `{table}` is not serving: not running, or no partitions assigned yet")]
    Starting {
        /// The table.
        table: String,
    },
    /// The key's partition is still being restored.
    #[error("table `{table}` is restoring partition {partition}")]
    Restoring {
        /// The table.
        table: String,
        /// The partition.
        partition: i32,
    },
    /// This instance does not hold the key's partition: another instance of the service does.
    #[error("partition {partition} of table `{table}` is held by another instance")]
    NotOwned {
        /// The table.
        table: String,
        /// The partition.
        partition: i32,
    },
    /// The key is absent from its partition but was read from another one: a producer broke the
    /// partitioner contract. Asking again does not help.
    #[error(transparent)]
    Misplaced(Box<MisplacedKey>),
}

impl NotReady {
    /// The HTTP status to answer: 503 Service Unavailable; 500 for [`NotReady::Misplaced`] (the
    /// topic's data breaks the contract: not the client's fault, and not passing).
    pub fn status(&self) -> u16 {
        match self {
            Self::Misplaced(_) => 500,
            _ => 503,
        }
    }

    /// Whether asking again later may answer: all but [`NotReady::Misplaced`].
    pub fn is_retriable(&self) -> bool {
        !matches!(self, Self::Misplaced(_))
    }

    /// The `Retry-After` to answer with.
    pub fn retry_after(&self) -> Duration {
        RETRY_AFTER
    }

    /// [`retry_after`](Self::retry_after) in whole seconds, as the header wants it.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after().as_secs().max(1)
    }
}

/// Why [`Table::wait_for`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The view had not applied the offset within the timeout.
    #[error(
        "table `{table}` has not applied offset {offset} of partition {partition} within {timeout:?} \
         (applied: {applied:?})"
    )]
    Timeout {
        /// The table.
        table: String,
        /// The partition.
        partition: i32,
        /// The offset waited for (-1 for [`Table::wait_until_key`]).
        offset: i64,
        /// The offset applied last, if the partition is held here.
        applied: Option<i64>,
        /// The timeout.
        timeout: Duration,
    },
    /// This instance does not hold the partition: another instance of the service does.
    #[error("partition {partition} of table `{table}` is held by another instance")]
    NotOwned {
        /// The table.
        table: String,
        /// The partition.
        partition: i32,
    },
    /// Where the partition ends could not be looked up ([`Table::sync`]).
    #[error("table `{table}`: cannot see where partition {partition} ends: {reason}")]
    End {
        /// The table.
        table: String,
        /// The partition.
        partition: i32,
        /// Why.
        reason: String,
    },
    /// The partition asked for is not one of the topic's (a consistency token naming a partition
    /// that does not exist, say): refused at once, nothing is kept for it.
    #[error(
        "table `{table}`: `{topic}` has no partition {partition} (its partitions are 0 to {})",
        partitions - 1
    )]
    NoSuchPartition {
        /// The table.
        table: String,
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many partitions the topic has.
        partitions: i32,
    },
    /// As many waits as the table allows ([`TableBuilder::max_waiters`]) are running: refused at
    /// once instead of queued.
    #[error("table `{table}`: {limit} waits are running already; try again later")]
    Busy {
        /// The table.
        table: String,
        /// The bound.
        limit: usize,
    },
    /// The key is absent from its partition but was read from another one: a producer broke the
    /// partitioner contract, and waiting would not find it.
    #[error(transparent)]
    Misplaced(Box<MisplacedKey>),
}

impl WaitError {
    /// Whether waiting again may succeed: not for [`WaitError::NoSuchPartition`] (the caller's
    /// mistake) nor [`WaitError::Misplaced`] (the data's).
    pub fn is_retriable(&self) -> bool {
        !matches!(self, Self::NoSuchPartition { .. } | Self::Misplaced(_))
    }
}

/// Why a table could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// Its consumer could not be created or failed.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// The local store could not be opened.
    #[error("table store `{path}`: {reason}")]
    Store {
        /// Its path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The client that looks at partition ends could not be created.
    #[error("table `{table}`: {reason}")]
    Client {
        /// The table.
        table: String,
        /// librdkafka's words.
        reason: String,
    },
    /// [`Table::run`] was called twice.
    #[error("table `{table}` is already running (or has run)")]
    AlreadyRunning {
        /// The table.
        table: String,
    },
}

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

/// A keyed view of a compacted topic; see the [module docs](self). Cheap to clone: clones share
/// the view. Build it with [`Table::builder`], run it with [`Table::run`].
pub struct Table<V> {
    shared: Arc<Shared<V>>,
    /// Taken by [`Table::run`].
    consumer: Arc<Mutex<Option<TableConsumer<V>>>>,
}

type TableConsumer<V> = Consumer<Arc<Shared<V>>>;

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

/// Builds a [`Table`].
#[must_use = "a table builder does nothing until built"]
pub struct TableBuilder<V> {
    config: Config,
    spec: ServiceSpec,
    topic: TopicSpec,
    publisher: Publisher,
    name: Option<String>,
    path: Option<PathBuf>,
    settings: Vec<(String, String)>,
    replicated: bool,
    max_waiters: usize,
    value: PhantomData<fn() -> V>,
}

impl<V> std::fmt::Debug for TableBuilder<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableBuilder")
            .field("topic", &self.topic.name())
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<V: TableValue> Table<V> {
    /// A table of `topic` for `spec`'s service, which must be allowed to read it and own its
    /// dead-letter topic ([`crate::consume::dead_letter_topic`]: records whose value does not
    /// decode go there, and their key leaves the view). `publisher` writes the dead letters and lends
    /// its health and schema registry.
    pub fn builder(
        config: &Config,
        spec: &ServiceSpec,
        topic: &TopicSpec,
        publisher: Publisher,
    ) -> TableBuilder<V> {
        TableBuilder {
            config: config.clone(),
            spec: spec.clone(),
            topic: topic.clone(),
            publisher,
            name: None,
            path: None,
            settings: Vec::new(),
            replicated: false,
            max_waiters: DEFAULT_MAX_WAITERS,
            value: PhantomData,
        }
    }
}

impl<V: TableValue> TableBuilder<V> {
    /// Names the table (default: the topic's name): its consumer group is
    /// `<service>.table.<name>`, its health component `table:<name>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Every instance holds every partition (a global table, Kafka Streams' `GlobalKTable`)
    /// instead of sharing them: the table's consumer group is this instance's alone
    /// (`<service>.table.<name>.<uuid>`). For state every instance must answer from (HTTP reads
    /// behind a load balancer, a handler's lookups by another key than its input's); each instance
    /// then reads the whole topic. The group is of this run only, so [`Table::run`] deletes it
    /// once it has left it (on real brokers; the mock cluster of [`crate::dev`] keeps it until the
    /// process ends); one left by a crashed instance expires with the broker's
    /// `offsets.retention.minutes`.
    pub fn replicated(mut self) -> Self {
        self.replicated = true;
        self
    }

    /// Keeps the view in a local store at `path` too (a redb file, created if missing), so a
    /// restart replays only what is newer than the store.
    pub fn persistent(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// At most `limit` waits ([`Table::wait_for`], [`Table::sync`], [`Table::wait_until_key`])
    /// at once (default [`DEFAULT_MAX_WAITERS`]); one more is refused at once with
    /// [`WaitError::Busy`]. Each HTTP request waiting for a consistency token or a key holds one.
    pub fn max_waiters(mut self, limit: usize) -> Self {
        self.max_waiters = limit;
        self
    }

    /// Sets a librdkafka property on the table's consumer (see [`Consumer::client_setting`]).
    pub fn client_setting(mut self, key: &str, value: impl Into<String>) -> Self {
        self.settings.push((key.to_owned(), value.into()));
        self
    }

    /// Checks the declaration, opens the store and creates the consumer. The service is not ready
    /// from here until the table has restored.
    pub fn build(self) -> Result<Table<V>, TableError> {
        let name = self.name.unwrap_or_else(|| self.topic.name().to_owned());
        let group = if self.replicated {
            format!("{}.table.{name}.{}", self.spec.name(), uuid::Uuid::new_v4().simple())
        } else {
            format!("{}.table.{name}", self.spec.name())
        };
        let store = match &self.path {
            Some(path) => Some(Arc::new(
                Store::open(path, self.topic.name())
                    .map_err(|reason| TableError::Store { path: path.clone(), reason })?,
            )),
            None => None,
        };
        let probe: BaseConsumer = self
            .config
            .client_config(self.spec.name())
            // Never joined nor committed to (it assigns), but librdkafka assigns only with a group.
            .set("group.id", format!("{group}.probe"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| TableError::Client { table: name.clone(), reason: e.to_string() })?;
        let health = self.publisher.health().clone();
        // Not in the mock cluster, which answers no admin requests (its groups go with the process):
        // librdkafka 2.12.1 aborts on dropping an admin client whose request it refused locally as
        // unsupported (`rd_kafka_q_destroy0: assert: rkq->rkq_refcnt > 0`).
        let forget = (self.replicated && crate::provision::supports_group_deletion(&self.config))
            .then(|| self.config.client_config(self.spec.name()));
        let shared = Arc::new(Shared {
            group: group.clone(),
            forget,
            component: format!("table:{name}"),
            topic: self.topic.name().to_owned(),
            partitions: self.topic.partitions(),
            health,
            registry: self.publisher.registry().clone(),
            persistent: store.is_some(),
            store: Mutex::new(store),
            probe: Mutex::new(probe),
            syncs: tokio::sync::Mutex::new(HashMap::new()),
            views: RwLock::new(HashMap::new()),
            // One per partition of the topic, made here: waits never add any.
            progress: Mutex::new(
                (0..self.topic.partitions()).map(|p| (p, watch::channel(Progress::default()).0)).collect(),
            ),
            max_waiters: self.max_waiters,
            waiting: AtomicUsize::new(0),
            misplaced_seen: watch::channel(0).0,
            warned: Mutex::new(HashSet::new()),
            status: watch::channel(TableStatus::default()).0,
            runtime: OnceLock::new(),
            generation: AtomicU64::new(0),
            assigned: AtomicBool::new(false),
            running: AtomicBool::new(false),
            stats: Counters::default(),
            name,
        });
        shared.health.starting(&shared.component, format!("table `{}` is not running", shared.name));
        let mut consumer = Consumer::new(
            &self.config,
            &self.spec,
            &self.topic,
            BoxedHandler::named("table", apply::<V>),
            shared.clone(),
            self.publisher,
            Some(&group),
        )?
        .hooks(Hooks(shared.clone()));
        for (key, value) in self.settings {
            consumer = consumer.client_setting(&key, value);
        }
        Ok(Table { shared, consumer: Arc::new(Mutex::new(Some(consumer))) })
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
        if let Some(client) = &shared.forget {
            delete_group(client, &shared.group).await;
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
    /// that breaks the [partitioner contract](self#the-partitioner-contract). Each partition where
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

    /// Waits until the view has applied `offset` of `partition` (and the partition has restored),
    /// so a read sees that write or a later one; without polling. Fails at once for a partition
    /// the topic does not have ([`WaitError::NoSuchPartition`]), when
    /// [`TableBuilder::max_waiters`] waits run ([`WaitError::Busy`]) and if another instance holds
    /// the partition; with [`WaitError::Timeout`] after `timeout`.
    pub async fn wait_for(&self, partition: i32, offset: i64, timeout: Duration) -> Result<(), WaitError> {
        let mut progress = self.shared.progress(partition)?;
        let _place = self.shared.enter()?;
        let now = *progress.borrow();
        if !now.owned && matches!(self.shared.not_held(partition), NotReady::NotOwned { .. }) {
            return Err(WaitError::NotOwned { table: self.shared.name.clone(), partition });
        }
        let applied = |p: &Progress| p.owned && p.caught_up && p.applied.is_some_and(|a| a >= offset);
        let seen = matches!(tokio::time::timeout(timeout, progress.wait_for(applied)).await, Ok(Ok(_)));
        if seen {
            Ok(())
        } else {
            Err(WaitError::Timeout {
                table: self.shared.name.clone(),
                partition,
                offset,
                applied: progress.borrow().applied,
                timeout,
            })
        }
    }

    /// [`wait_for`](Self::wait_for) the write at `delivery` (what [`Publisher::publish`] resolved
    /// with).
    pub async fn wait_for_delivery(&self, delivery: Delivery, timeout: Duration) -> Result<(), WaitError> {
        self.wait_for(delivery.partition, delivery.offset, timeout).await
    }

    /// Where `partition` ends now: its high watermark, the offset its next record will get (one
    /// round trip to its leader). A consistency token at or past it names a write that has not
    /// happened.
    pub async fn high_watermark(&self, partition: i32) -> Result<i64, WaitError>
    where
        V: Send + Sync + 'static,
    {
        let shared = self.shared.clone();
        let looked = tokio::task::spawn_blocking(move || {
            let probe = shared.probe.lock().unwrap_or_else(PoisonError::into_inner);
            probe.fetch_watermarks(&shared.topic, partition, PROBE_TIMEOUT).map(|(_, high)| high)
        })
        .await;
        match looked {
            Ok(Ok(high)) => Ok(high),
            Ok(Err(e)) => {
                Err(WaitError::End { table: self.shared.name.clone(), partition, reason: e.to_string() })
            }
            Err(e) => {
                Err(WaitError::End { table: self.shared.name.clone(), partition, reason: e.to_string() })
            }
        }
    }

    /// Waits until the view has applied every record of `partition` a `read_committed` reader
    /// sees now (its end is looked up first): a read then sees every write to it acknowledged or
    /// committed before the call, whoever made it. What a new owner of a key does before trusting
    /// the view with it, e.g. a handler that took over a partition from a stopped instance. Fails
    /// at once for a partition the topic does not have, when [`TableBuilder::max_waiters`] waits
    /// run and if another instance holds the partition, with [`WaitError::End`] if the end cannot
    /// be looked up, and with [`WaitError::Timeout`] after `timeout`.
    pub async fn sync(&self, partition: i32, timeout: Duration) -> Result<(), WaitError>
    where
        V: Send + Sync + 'static,
    {
        let mut progress = self.shared.progress(partition)?;
        let _place = self.shared.enter()?;
        let now = *progress.borrow();
        if !now.owned && matches!(self.shared.not_held(partition), NotReady::NotOwned { .. }) {
            return Err(WaitError::NotOwned { table: self.shared.name.clone(), partition });
        }
        // Lookups go one at a time (one probe consumer); a caller that waited while one ran takes
        // the next one's answer with the callers that waited beside it: it began after they came.
        let arrived = Instant::now();
        let shared = self.shared.clone();
        let end = tokio::time::timeout(timeout, async move {
            let mut syncs = shared.syncs.lock().await;
            if let Some(&(began, last)) = syncs.get(&partition)
                && began >= arrived
            {
                return Ok(Ok(vec![End { high: -1, last }]));
            }
            let began = Instant::now();
            let probed = {
                let shared = shared.clone();
                tokio::task::spawn_blocking(move || {
                    let probe = shared.probe.lock().unwrap_or_else(PoisonError::into_inner);
                    let ends = probe_ends(&probe, &shared.topic, &[partition]);
                    if ends.is_err() {
                        probe.unassign().ok();
                    }
                    ends
                })
                .await
            };
            if let Ok(Ok(ends)) = &probed {
                syncs.insert(partition, (began, ends.first().and_then(|e| e.last)));
            }
            probed
        })
        .await;
        let last = match end {
            Ok(Ok(Ok(ends))) => ends.first().and_then(|e| e.last),
            Ok(Ok(Err(e))) => {
                return Err(WaitError::End {
                    table: self.shared.name.clone(),
                    partition,
                    reason: e.to_string(),
                });
            }
            Ok(Err(e)) => {
                return Err(WaitError::End {
                    table: self.shared.name.clone(),
                    partition,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(WaitError::End {
                    table: self.shared.name.clone(),
                    partition,
                    reason: format!("no answer within {timeout:?}"),
                });
            }
        };
        let applied =
            |p: &Progress| p.owned && p.caught_up && last.is_none_or(|l| p.applied.is_some_and(|a| a >= l));
        if matches!(tokio::time::timeout(timeout, progress.wait_for(applied)).await, Ok(Ok(_))) {
            Ok(())
        } else {
            Err(WaitError::Timeout {
                table: self.shared.name.clone(),
                partition,
                offset: last.unwrap_or(-1),
                applied: progress.borrow().applied,
                timeout,
            })
        }
    }

    /// Waits until `key`'s value (`None`: absent) satisfies `condition`, and returns it: checked
    /// now and again after each change the view applies to the key's partition, without polling
    /// (a long-poll read). A partition still restoring is waited for. Fails at once when
    /// [`TableBuilder::max_waiters`] waits run, if another instance holds the partition, and (as
    /// soon as it is seen) if the key is absent from its partition but was read from another one
    /// this instance holds ([`WaitError::Misplaced`]); with [`WaitError::Timeout`] after `timeout`.
    pub async fn wait_until_key(
        &self,
        key: impl AsRef<[u8]>,
        condition: impl Fn(Option<&V>) -> bool,
        timeout: Duration,
    ) -> Result<Option<V>, WaitError>
    where
        V: Clone,
    {
        let key = key.as_ref();
        let partition = self.partition_for(key);
        let mut progress = self.shared.progress(partition)?;
        let _place = self.shared.enter()?;
        let mut misplaced = self.shared.misplaced_seen.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            progress.borrow_and_update();
            misplaced.borrow_and_update();
            // The value now (if the partition has restored here), and whether the key, absent where
            // it belongs, was read from another partition: then it never comes where lookups look.
            // `condition` runs outside the lock.
            let (now, elsewhere) = {
                let views = self.shared.read_views();
                let elsewhere = || {
                    self.shared.misplaced(&views, key, partition).map(|m| WaitError::Misplaced(Box::new(m)))
                };
                match views.get(&partition) {
                    Some(view) if view.caught_up => {
                        let value = view.entries.get(key).cloned();
                        let misplaced = if value.is_none() { elsewhere() } else { None };
                        (Some(value), misplaced)
                    }
                    Some(_) => (None, None), // restoring
                    None => match self.shared.not_held(partition) {
                        NotReady::NotOwned { .. } => {
                            return Err(elsewhere().unwrap_or_else(|| WaitError::NotOwned {
                                table: self.shared.name.clone(),
                                partition,
                            }));
                        }
                        _ => (None, None),
                    },
                }
            };
            if let Some(value) = now {
                if condition(value.as_ref()) {
                    return Ok(value);
                }
                if let Some(e) = elsewhere {
                    return Err(e);
                }
            }
            let changed = async {
                tokio::select! {
                    changed = progress.changed() => changed.is_ok(),
                    changed = misplaced.changed() => changed.is_ok(),
                }
            };
            if !matches!(tokio::time::timeout_at(deadline, changed).await, Ok(true)) {
                return Err(WaitError::Timeout {
                    table: self.shared.name.clone(),
                    partition,
                    offset: -1,
                    applied: progress.borrow().applied,
                    timeout,
                });
            }
        }
    }
}

/// One partition's progress, for [`Table::wait_for`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    owned: bool,
    caught_up: bool,
    applied: Option<i64>,
}

#[derive(Debug, Default)]
struct Counters {
    applied: AtomicU64,
    restored: AtomicU64,
    loaded: AtomicU64,
    misplaced: AtomicU64,
    refused_waits: AtomicU64,
}

/// A running wait's place among [`TableBuilder::max_waiters`], given back on drop.
struct Place<V>(Arc<Shared<V>>);

impl<V> Drop for Place<V> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A partition this instance holds.
struct View<V> {
    /// Which assignment made it.
    generation: u64,
    entries: HashMap<Vec<u8>, V>,
    /// Those of `entries`' keys that murmur2 places on another partition (a subset: bounded as the
    /// view is).
    misplaced: HashSet<Vec<u8>>,
    /// The offset applied last.
    applied: Option<i64>,
    /// The offset the store had applied when the partition was assigned.
    stored: Option<i64>,
    /// The store could not be read: start over.
    reset: bool,
    /// The last record visible when the partition was assigned (`Some(None)`: none); `None` until
    /// known.
    last: Option<Option<i64>>,
    caught_up: bool,
    /// Set once the store's entries are in (at once without a store); records wait for it.
    loaded: watch::Sender<bool>,
}

impl<V> View<V> {
    fn reached(&self) -> bool {
        match self.last {
            None => false,
            Some(None) => true,
            Some(Some(last)) => self.applied.is_some_and(|a| a >= last),
        }
    }

    fn progress(&self) -> Progress {
        Progress { owned: true, caught_up: self.caught_up, applied: self.applied }
    }
}

/// What the table's handler, hooks and handles share.
struct Shared<V> {
    name: String,
    group: String,
    /// For a replicated table: the client settings to delete its group with once it stops.
    forget: Option<rdkafka::ClientConfig>,
    topic: String,
    partitions: i32,
    component: String,
    health: HealthState,
    registry: crate::schema::Registry,
    persistent: bool,
    /// Taken (and closed) when the table stops.
    store: Mutex<Option<Arc<Store>>>,
    /// Looks at partition ends: watermarks and the last visible record.
    probe: Mutex<BaseConsumer>,
    /// The last end [`Table::sync`] looked up per partition, and when that lookup began: callers
    /// that arrived before it began share it instead of queueing a lookup each.
    syncs: tokio::sync::Mutex<HashMap<i32, (Instant, Option<i64>)>>,
    views: RwLock<HashMap<i32, View<V>>>,
    /// Per partition, kept across assignments so waiters see the partition come back. Made for
    /// the declared partitions when the table is built; only an assignment adds one (for a topic
    /// that has more), never a wait.
    progress: Mutex<HashMap<i32, watch::Sender<Progress>>>,
    /// The bound on waits running at once, and how many are.
    max_waiters: usize,
    waiting: AtomicUsize,
    /// Bumped whenever a key that belongs elsewhere enters a view: waits on a key look again.
    misplaced_seen: watch::Sender<u64>,
    /// The partitions a misplaced key was warned about (once each).
    warned: Mutex<HashSet<i32>>,
    status: watch::Sender<TableStatus>,
    runtime: OnceLock<tokio::runtime::Handle>,
    generation: AtomicU64,
    assigned: AtomicBool,
    running: AtomicBool,
    stats: Counters,
}

/// Deletes a replicated table's group after the table left it: the group is of one run only, and
/// would otherwise stay behind with its committed offsets. A failure (a missing `DELETE` ACL on the
/// group, say) only costs that, so it is logged, not returned.
async fn delete_group(client: &rdkafka::ClientConfig, group: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let deleted = async {
        let admin: AdminClient<DefaultClientContext> = client.create()?;
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let mut results = admin.delete_groups(&[group], &options).await?;
        results.pop().map_or(Ok(()), |r| r.map(drop).map_err(|(_, code)| KafkaError::AdminOp(code)))
    };
    match deleted.await {
        Ok(()) => tracing::debug!(group, "replicated table's consumer group deleted"),
        Err(e) => tracing::warn!(group, error = %e, "replicated table's consumer group not deleted"),
    }
}

impl<V> Shared<V> {
    fn read_views(&self) -> std::sync::RwLockReadGuard<'_, HashMap<i32, View<V>>> {
        self.views.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_views(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<i32, View<V>>> {
        self.views.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn store(&self) -> Option<Arc<Store>> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A partition's progress, for a wait: refused for a partition the topic does not have (none
    /// is made for it).
    fn progress(&self, partition: i32) -> Result<watch::Receiver<Progress>, WaitError> {
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
    fn publish_progress(&self, partition: i32, now: Progress) {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(partition)
            .or_insert_with(|| watch::channel(Progress::default()).0)
            .send_if_modified(|p| std::mem::replace(p, now) != now);
    }

    /// A place among the waits, or [`WaitError::Busy`] if [`TableBuilder::max_waiters`] run.
    fn enter(self: &Arc<Self>) -> Result<Place<V>, WaitError> {
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
    fn misplaced(&self, views: &HashMap<i32, View<V>>, key: &[u8], expected: i32) -> Option<MisplacedKey> {
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
    fn count_misplaced(&self, partition: i32, key: &[u8], expected: i32, records: u64) {
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
    fn not_held(&self, partition: i32) -> NotReady {
        if self.assigned.load(Ordering::Acquire) && self.running.load(Ordering::Acquire) {
            NotReady::NotOwned { table: self.name.clone(), partition }
        } else {
            NotReady::Starting { table: self.name.clone() }
        }
    }

    /// Recomputes the status; on a change, tells subscribers and health.
    fn refresh(&self) {
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

impl<V: TableValue> Shared<V> {
    /// `partitions` are about to be assigned: fresh views, restoring; where to start reading each.
    fn assign(self: &Arc<Self>, partitions: &[i32]) -> Vec<(i32, Offset)> {
        if partitions.is_empty() {
            return Vec::new();
        }
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let store = self.store();
        let mut starts = Vec::with_capacity(partitions.len());
        {
            let mut views = self.write_views();
            for &partition in partitions {
                let (stored, reset) = match store.as_ref().map(|s| s.applied(partition)) {
                    None | Some(Ok(None)) => (None, false),
                    Some(Ok(Some(offset))) => (Some(offset), false),
                    Some(Err(e)) => {
                        tracing::error!(
                            table = self.name,
                            partition,
                            error = %e,
                            "table store unreadable; restoring from the topic"
                        );
                        (None, true)
                    }
                };
                views.insert(
                    partition,
                    View {
                        generation,
                        entries: HashMap::new(),
                        misplaced: HashSet::new(),
                        applied: None,
                        stored,
                        reset,
                        last: None,
                        caught_up: false,
                        loaded: watch::channel(!self.persistent).0,
                    },
                );
                starts.push((partition, stored.map_or(Offset::Beginning, |o| Offset::Offset(o + 1))));
            }
        }
        for &partition in partitions {
            self.publish_progress(partition, Progress { owned: true, ..Progress::default() });
        }
        tracing::info!(table = self.name, ?starts, "restoring partitions");
        self.refresh();
        match self.runtime.get() {
            Some(runtime) => {
                runtime.spawn(self.clone().restore(partitions.to_vec(), generation));
            }
            None => tracing::error!(table = self.name, "partitions assigned to a table that is not running"),
        }
        starts
    }

    /// `partitions` were revoked (their events in hand have finished): drop their keys.
    fn revoke(&self, partitions: &[i32]) {
        {
            let mut views = self.write_views();
            for partition in partitions {
                views.remove(partition);
            }
        }
        if let Some(store) = self.store()
            && let Err(e) = store.flush()
        {
            tracing::warn!(table = self.name, error = %e, "table store not flushed on revocation");
        }
        for &partition in partitions {
            self.publish_progress(partition, Progress::default());
        }
        self.refresh();
    }

    /// Whether any of `partitions` is still held under `generation`.
    fn current(&self, partitions: &[i32], generation: u64) -> bool {
        let views = self.read_views();
        partitions.iter().any(|p| views.get(p).is_some_and(|v| v.generation == generation))
    }

    /// Restores freshly assigned partitions: finds where each ends now, loads the store's entries
    /// (if any), then lets records through; each is restored once its last record is applied.
    async fn restore(self: Arc<Self>, partitions: Vec<i32>, generation: u64) {
        let ends = loop {
            let (shared, asked) = (self.clone(), partitions.clone());
            match tokio::task::spawn_blocking(move || shared.probe_ends(&asked)).await {
                Ok(Ok(ends)) => break ends,
                Ok(Err(e)) => {
                    tracing::warn!(table = self.name, error = %e, "cannot see partition ends; retrying")
                }
                Err(e) => tracing::warn!(table = self.name, error = %e, "partition ends"),
            }
            if !self.current(&partitions, generation) {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        for (partition, end) in partitions.iter().copied().zip(ends) {
            let mut loaded = None;
            if let Some(store) = self.store() {
                let Some((stored, reset)) = self
                    .read_views()
                    .get(&partition)
                    .filter(|v| v.generation == generation)
                    .map(|v| (v.stored, v.reset))
                else {
                    continue;
                };
                // A store ahead of the topic follows an older topic of the same name: start over (the
                // consumer, sought past the end, starts from the beginning too).
                if reset || stored.is_some_and(|s| s >= end.high) {
                    tracing::warn!(
                        table = self.name,
                        partition,
                        ?stored,
                        high = end.high,
                        "table store discarded"
                    );
                    if let Err(e) = blocking(move || store.clear(partition)).await {
                        tracing::error!(table = self.name, partition, error = %e, "table store not cleared");
                    }
                    loaded = Some((None, HashMap::new()));
                } else {
                    loaded = Some((stored, self.load(&store, partition).await));
                }
            }
            let now = {
                let mut views = self.write_views();
                let Some(view) = views.get_mut(&partition).filter(|v| v.generation == generation) else {
                    continue;
                };
                if let Some((stored, entries)) = loaded {
                    self.stats.loaded.fetch_add(entries.len() as u64, Ordering::Relaxed);
                    view.misplaced = entries
                        .keys()
                        .filter(|k| partition_for(k, self.partitions) != partition)
                        .cloned()
                        .collect();
                    if let Some(key) = view.misplaced.iter().next() {
                        let expected = partition_for(key, self.partitions);
                        self.count_misplaced(partition, key, expected, view.misplaced.len() as u64);
                    }
                    view.entries = entries;
                    view.applied = stored;
                }
                view.last = Some(end.last);
                view.caught_up = view.reached();
                view.loaded.send_replace(true);
                if !view.misplaced.is_empty() {
                    self.misplaced_seen.send_modify(|n| *n += 1);
                }
                view.progress()
            };
            tracing::info!(
                table = self.name,
                partition,
                ?end,
                caught_up = now.caught_up,
                "partition end seen"
            );
            self.publish_progress(partition, now);
        }
        self.refresh();
    }

    /// The store's entries of `partition`, decoded (undecodable ones are left out, with a warning).
    async fn load(&self, store: &Arc<Store>, partition: i32) -> HashMap<Vec<u8>, V> {
        let store = store.clone();
        let raw = match blocking(move || store.entries(partition)).await {
            Ok(raw) => raw,
            Err(e) => {
                tracing::error!(table = self.name, partition, error = %e, "table store unreadable");
                Vec::new()
            }
        };
        let mut entries = HashMap::with_capacity(raw.len());
        for (key, payload) in raw {
            let mut decoded = V::decode_with(&payload, Some(&self.registry));
            // An Avro payload whose writer's schema is not cached yet: fetch it, then try again.
            if decoded.is_err() && self.registry.prepare(&payload).await.is_ok() {
                decoded = V::decode_with(&payload, Some(&self.registry));
            }
            match decoded {
                Ok(value) => {
                    entries.insert(key, value);
                }
                Err(e) => tracing::warn!(table = self.name, partition, error = %e, "stored value left out"),
            }
        }
        entries
    }

    /// Where each of `partitions` ends now: its watermarks and the last record a `read_committed`
    /// reader sees (transaction markers and aborted records are no records).
    fn probe_ends(&self, partitions: &[i32]) -> Result<Vec<End>, KafkaError> {
        let probe = self.probe.lock().unwrap_or_else(PoisonError::into_inner);
        let ends = probe_ends(&probe, &self.topic, partitions);
        if ends.is_err() {
            probe.unassign().ok();
        }
        ends
    }

    /// Applies one record: sets its key, or deletes it for a tombstone (and for a value that does
    /// not decode, which is then dead-lettered).
    async fn apply(
        &self,
        meta: &Metadata,
        value: Result<Option<Event<V>>, ExtractError>,
    ) -> Result<(), HandlerError> {
        let (partition, offset) = (meta.partition(), meta.offset());
        let (generation, mut loaded) = {
            let views = self.read_views();
            // Not held (revoked meanwhile): its next owner applies it.
            let Some(view) = views.get(&partition) else { return Ok(()) };
            (view.generation, view.loaded.subscribe())
        };
        if loaded.wait_for(|l| *l).await.is_err() {
            return Ok(()); // revoked while loading
        }
        if self.read_views().get(&partition).and_then(|v| v.applied).is_some_and(|a| offset <= a) {
            return Ok(()); // in the store already
        }
        let key = meta.key().map(<[u8]>::to_vec);
        let (update, failure) = match (&key, value) {
            (None, _) => (None, Some(HandlerError::permanent("a table record needs a key"))),
            (Some(_), Ok(Some(Event(value)))) => (Some(value), None),
            (Some(_), Ok(None)) => (None, None),
            (Some(_), Err(e)) => (None, Some(HandlerError::permanent(e))),
        };
        if let Some(store) = self.store() {
            let (key, payload) = (key.clone(), update.as_ref().and(meta.payload()).map(<[u8]>::to_vec));
            let change =
                move || store.write(partition, key.as_deref().map(|k| (k, payload.as_deref())), offset);
            blocking(change).await.map_err(|e| HandlerError::retriable(format!("table store: {e}")))?;
        }
        // Where lookups look for the key: elsewhere than here, the producer broke the contract.
        let expected = key.as_deref().map(|k| partition_for(k, self.partitions)).filter(|&e| e != partition);
        let mut indexed = false;
        let (now, restored) = {
            let mut views = self.write_views();
            let Some(view) = views.get_mut(&partition).filter(|v| v.generation == generation) else {
                return Ok(());
            };
            if let Some(key) = &key {
                match update {
                    Some(value) => {
                        if expected.is_some() {
                            indexed = view.misplaced.insert(key.clone());
                        }
                        view.entries.insert(key.clone(), value);
                    }
                    None => {
                        view.misplaced.remove(key);
                        view.entries.remove(key);
                    }
                }
            }
            view.applied = Some(view.applied.map_or(offset, |a| a.max(offset)));
            self.stats.applied.fetch_add(1, Ordering::Relaxed);
            let restored = !view.caught_up && view.reached();
            if !view.caught_up {
                self.stats.restored.fetch_add(1, Ordering::Relaxed);
                view.caught_up = restored;
            }
            (view.progress(), restored)
        };
        if let (Some(expected), Some(key)) = (expected, &key) {
            self.count_misplaced(partition, key, expected, 1);
        }
        if indexed {
            self.misplaced_seen.send_modify(|n| *n += 1);
        }
        self.publish_progress(partition, now);
        if restored {
            tracing::info!(table = self.name, partition, offset, "partition restored");
            self.refresh();
        }
        failure.map_or(Ok(()), Err)
    }
}

/// The handler: applies each record to the table.
async fn apply<V: TableValue>(
    meta: Metadata,
    value: Result<Option<Event<V>>, ExtractError>,
    State(table): State<Arc<Shared<V>>>,
) -> Result<(), HandlerError> {
    table.apply(&meta, value).await
}

/// Runs blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, redb::Error> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Where a partition ends.
#[derive(Debug, Clone, Copy)]
struct End {
    high: i64,
    /// The last record a `read_committed` reader sees, if any.
    last: Option<i64>,
}

/// Reads where `partitions` end, all at once: each from just before its high watermark, further
/// back (16 times as far each round) for those where only transaction markers or aborted records
/// were found.
fn probe_ends(probe: &BaseConsumer, topic: &str, partitions: &[i32]) -> Result<Vec<End>, KafkaError> {
    let mut ends = Vec::with_capacity(partitions.len());
    // (index, low watermark) of each partition still looked for.
    let mut open = Vec::new();
    for (i, &partition) in partitions.iter().enumerate() {
        let (low, high) = probe.fetch_watermarks(topic, partition, PROBE_TIMEOUT)?;
        ends.push(End { high, last: None });
        if high > low {
            open.push((i, low));
        }
    }
    let mut window = 1_i64;
    while !open.is_empty() {
        let starts: Vec<i64> = open.iter().map(|&(i, low)| (ends[i].high - window).max(low)).collect();
        let mut list = TopicPartitionList::new();
        for (&(i, _), &start) in open.iter().zip(&starts) {
            list.add_partition_offset(topic, partitions[i], Offset::Offset(start))?;
        }
        probe.assign(&list)?;
        let mut reading: HashMap<i32, (usize, i64)> =
            open.iter().zip(&starts).map(|(&(i, _), &start)| (partitions[i], (i, start))).collect();
        let deadline = Instant::now() + PROBE_TIMEOUT;
        while !reading.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KafkaError::MessageConsumption(RDKafkaErrorCode::RequestTimedOut));
            }
            let done = match probe.poll(left) {
                None => None,
                Some(Ok(m)) => match reading.get(&m.partition()) {
                    Some(&(i, from)) if m.offset() >= from => {
                        let high = ends[i].high;
                        if m.offset() < high {
                            ends[i].last = Some(m.offset());
                        }
                        (m.offset() >= high - 1).then_some(m.partition())
                    }
                    _ => None,
                },
                Some(Err(KafkaError::PartitionEOF(partition))) => Some(partition),
                Some(Err(e)) => return Err(e),
            };
            if let Some(partition) = done {
                reading.remove(&partition);
            }
        }
        // Found, or read from the low watermark: done.
        let mut starts = starts.into_iter();
        open.retain(|&(i, low)| starts.next().is_some_and(|start| ends[i].last.is_none() && start > low));
        window = window.saturating_mul(16);
    }
    probe.unassign()?;
    Ok(ends)
}

/// The table's rebalance hooks.
struct Hooks<V>(Arc<Shared<V>>);

impl<V: TableValue> ConsumerHooks for Hooks<V> {
    fn start_offsets(&self, _topic: &str, partitions: &[i32]) -> Vec<(i32, Offset)> {
        self.0.assign(partitions)
    }

    fn assigned(&self, _topic: &str, _partitions: &[i32]) {
        self.0.assigned.store(true, Ordering::Release);
        self.0.refresh();
    }

    fn revoked(&self, _topic: &str, partitions: &[i32]) {
        self.0.revoke(partitions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_like_the_java_client() {
        // Against the broker's placement: tests/tables.rs.
        for (key, partitions) in [("", 6), ("a", 6), ("ab", 6), ("abc", 6), ("abcd", 6), ("order-42", 6)] {
            assert!((0..partitions).contains(&partition_for(key.as_bytes(), partitions)));
        }
    }

    #[test]
    fn tokens_round_trip() {
        let d = Delivery { partition: 3, offset: 42 };
        assert_eq!(parse_token(&d.to_string()), Some(d));
        assert_eq!(parse_token("3"), None);
        assert_eq!(parse_token("-1:4"), None);
    }

    #[test]
    fn not_ready_is_a_503_with_retry_after() {
        let e = NotReady::Restoring { table: "t".into(), partition: 1 };
        assert_eq!((e.status(), e.retry_after_secs()), (503, 1));
    }
}
