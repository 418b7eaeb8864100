//! Event sourcing and running totals: state kept as the events that made it.
//!
//! Three ways to keep keyed state on Kafka; pick by what the state is:
//!
//! | the state is | use | its topic holds | on restart |
//! |---|---|---|---|
//! | the latest value per key (a price, a stock level) | [`Table`](crate::table::Table) | a compacted topic: each record replaces its key | re-reads the topic (or what is newer than its local store) |
//! | an entity whose history matters (an order, an account) | [`Journal`] and an [`Aggregate`] | every change as an event, keyed by the entity id, kept | rebuilds an entity, or all of them (a projection), by replaying its events |
//! | totals over a stream (sales per product, a balance per account) | [`RunningTotals`] | a compacted private snapshot of the totals, committed with the consumed offsets | loads the snapshot, then resumes from the committed offsets |
//!
//! **Journal.** [`Journal::append`] publishes an event keyed by the entity's id, so an entity's
//! events share a partition and keep their order, and resolves with the [`Delivery`] (the
//! read-your-writes token). [`Journal::rebuild`] replays the entity's partition from the beginning
//! (`read_committed`) and folds its events with [`Aggregate::apply`], starting from
//! [`Default`]; [`Journal::project`] does so for every entity of the topic. A replay reads the whole
//! history: fine for an entity or a small topic, a one-off job for a large one. An entity read often
//! wants a [`Table`](crate::table::Table) of its current state beside the journal. Replays wait
//! for open transactions on what they read to end, so an event whose transaction aborts is never
//! applied, and one that committed just before is.
//!
//! **Running totals** (the "keep totals in memory, snapshot them" pattern). [`RunningTotals`] folds
//! each event of a topic into the total of its key, in memory, in an exactly-once consumer
//! ([`Consumer::exactly_once`]). Every transaction (about [`every`](RunningTotalsBuilder::every)
//! events, or every [`interval`](RunningTotalsBuilder::interval)) writes the totals it changed to
//! a compacted private snapshot topic **in the same Kafka transaction as the consumed offsets**
//! (through [`ConsumerHooks::before_commit`]), so the snapshot and the offsets never disagree; an
//! aborted transaction's changes are forgotten in memory too
//! ([`ConsumerHooks::transaction_ended`]), as its events are handled again. When a partition is assigned, its snapshot is read
//! (`read_committed`, once every transaction below its end has ended) before any event of it is
//! handled; the consumer then resumes from the committed offsets. A crash, a kill or a rebalance
//! therefore neither loses nor double-counts an event, and a restart replays only what came after the
//! last commit. Reads ([`RunningTotals::get`], [`RunningTotals::snapshot`]) see the totals as last
//! committed. A total's key is its event's key, and the snapshot has as many partitions as the
//! input (totals of input partition `p` live in snapshot partition `p`), so instances of a service
//! split the totals as they split the input.
//!
//! ```no_run
//! use backbone::consume::dead_letter_topic;
//! use backbone::sourcing::RunningTotals;
//! use backbone::{Config, Service, TopicSpec};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let sales = TopicSpec::public("shop", "sale", 1).partitions(6).build()?;
//! let totals = TopicSpec::private("shop", "sales-totals").partitions(6).compacted().build()?;
//! let spec = Service::new("shop")
//!     .owns(&sales)
//!     .owns(&totals)
//!     .owns(&dead_letter_topic("shop", &sales)?)
//!     .consumes(&sales)
//!     .spec()?;
//! let config = Config::from_env("shop")?;
//! let running = spec.start(&config).await?;
//! // The payload is the sale's amount in cents, as text; the key the product.
//! let fold = |total: &mut i64, amount: String| *total += amount.parse::<i64>().unwrap_or(0);
//! let per_product =
//!     RunningTotals::builder(&config, &spec, &sales, &totals, running.publisher().clone(), fold)
//!         .every(1_000)
//!         .build()?;
//! per_product.run(backbone::shutdown_signal()).await?;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::config::Config;
use crate::consume::{ConsumeError, Consumer, ConsumerHooks};
use crate::handler::{BoxedHandler, Decode, DecodeError, HandlerError, IncomingEvent, Metadata, State};
use crate::publish::{Delivery, Outgoing, PublishError, Publisher, TRANSACTION_TIMEOUT, Transaction};
use crate::schema::Registry;
use crate::service::ServiceSpec;
use crate::table::partition_for;
use crate::topic::{Cleanup, TopicError, TopicSpec, Visibility};

/// How long one read of a topic to its end may take: waiting for open transactions (a dead
/// instance's is aborted after [`TRANSACTION_TIMEOUT`]) and reading.
const READ_TIMEOUT: Duration = Duration::from_secs(TRANSACTION_TIMEOUT.as_secs() + 50);

/// An entity rebuilt from its events: it starts as [`Default`] and [`apply`](Self::apply) folds
/// each of its events in, in order. `apply` only changes state: deciding whether an event may
/// happen belongs before [`Journal::append`].
pub trait Aggregate: Default {
    /// What happens to the entity, decoded from the journal's payloads.
    type Event: Decode;

    /// Folds `event` into the entity.
    fn apply(&mut self, event: &Self::Event);
}

/// Why a journal or running totals could not be built, read or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourcingError {
    /// The service may not read the topic, or a topic is not declared as it must be.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The consumer of the running totals could not be created or failed.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// A client could not be created.
    #[error("`{topic}`: {reason}")]
    Client {
        /// The topic.
        topic: String,
        /// librdkafka's words.
        reason: String,
    },
    /// Reading the topic to its end failed or timed out (an open transaction, brokers away).
    #[error("reading `{topic}` to its end: {reason}")]
    Read {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// An event in the journal does not decode: the entity cannot be rebuilt.
    #[error("`{topic}` partition {partition} offset {offset}: {reason}")]
    Decode {
        /// The topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// Why.
        reason: String,
    },
    /// [`RunningTotals::run`] was called twice.
    #[error("running totals `{name}` are already running (or have run)")]
    AlreadyRunning {
        /// Their name.
        name: String,
    },
}

impl SourcingError {
    /// Whether trying again may help: a read that failed or timed out.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Read { .. })
    }
}

/// Reads partitions of a topic from the beginning to their end, as a `read_committed` reader sees
/// them once every transaction below the end has ended. The one poll loop of this module.
struct Reader {
    /// Reads, and tells the last stable offset.
    committed: BaseConsumer,
    /// Tells the high watermark.
    uncommitted: BaseConsumer,
}

impl Reader {
    fn new(config: &Config, service: &str, topic: &str) -> Result<Self, SourcingError> {
        let client = |isolation: &str| {
            config
                .client_config(service)
                // Never joined nor committed to (it assigns), but librdkafka assigns only with a group.
                .set("group.id", format!("{service}.reader"))
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true")
                .set("isolation.level", isolation)
                .create::<BaseConsumer>()
                .map_err(|e| SourcingError::Client { topic: topic.to_owned(), reason: e.to_string() })
        };
        Ok(Self { committed: client("read_committed")?, uncommitted: client("read_uncommitted")? })
    }

    /// Hands every record of `partitions` of `topic` to `each`, from the beginning to at least the
    /// high watermark as it was when called: first waits until no transaction with records below it
    /// is open (the last stable offset has reached it), so a transaction that committed just before
    /// is read whole and one that will abort is never read. Returns how many records it read.
    fn read(
        &self,
        topic: &str,
        partitions: &[i32],
        mut each: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<u64, KafkaError> {
        let deadline = Instant::now() + READ_TIMEOUT;
        let left = || deadline.saturating_duration_since(Instant::now());
        let timed_out = || KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut);
        let mut list = TopicPartitionList::new();
        for &partition in partitions {
            let (low, high) = self.uncommitted.fetch_watermarks(topic, partition, left())?;
            if high <= low {
                continue;
            }
            // A read_committed client's watermark query answers the last stable offset. Kafka offers
            // no notification when a transaction ends, so look again until it has.
            while self.committed.fetch_watermarks(topic, partition, left())?.1 < high {
                if left().is_zero() {
                    return Err(timed_out());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            list.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        let mut reading: BTreeSet<i32> = list.elements().iter().map(|e| e.partition()).collect();
        if reading.is_empty() {
            return Ok(0);
        }
        self.committed.assign(&list)?;
        let mut read = 0;
        // End of partition (for read_committed: its last stable offset, now past the high watermark
        // seen above) is reported once a partition is read through.
        let outcome = loop {
            if reading.is_empty() {
                break Ok(read);
            }
            if left().is_zero() {
                break Err(timed_out());
            }
            match self.committed.poll(left()) {
                None => {}
                Some(Ok(message)) => {
                    read += 1;
                    each(&message);
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    reading.remove(&partition);
                }
                Some(Err(e)) => break Err(e),
            }
        };
        self.committed.unassign().ok();
        outcome
    }
}

/// A record as read back.
struct Record {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

/// An entity's events on a topic: appends them keyed by the entity's id, rebuilds entities by
/// replay (see the [module docs](self)). Cheap to clone; clones share one reader, so their replays
/// run one at a time. An entity's partition is found from the topic's declared partition count
/// (as [`crate::table::partition_for`] computes it), like the publisher places it.
pub struct Journal<A> {
    topic: TopicSpec,
    publisher: Publisher,
    reader: Arc<Mutex<Reader>>,
    aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for Journal<A> {
    fn clone(&self) -> Self {
        Self {
            topic: self.topic.clone(),
            publisher: self.publisher.clone(),
            reader: self.reader.clone(),
            aggregate: PhantomData,
        }
    }
}

impl<A> std::fmt::Debug for Journal<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("topic", &self.topic.name()).finish_non_exhaustive()
    }
}

impl<A: Aggregate> Journal<A> {
    /// The journal of `topic` for `spec`'s service, which must be allowed to read it. Appending
    /// needs the service to own it too (`publisher` refuses otherwise); a service that only reads
    /// another's public journal rebuilds and projects.
    pub fn new(
        config: &Config,
        spec: &ServiceSpec,
        topic: &TopicSpec,
        publisher: Publisher,
    ) -> Result<Self, SourcingError> {
        crate::topic::check_may_read(spec.name(), topic)?;
        let reader = Reader::new(config, spec.name(), topic.name())?;
        Ok(Self {
            topic: topic.clone(),
            publisher,
            reader: Arc::new(Mutex::new(reader)),
            aggregate: PhantomData,
        })
    }

    /// The topic.
    pub fn topic(&self) -> &TopicSpec {
        &self.topic
    }

    /// Appends an event of entity `id`: publishes `payload` (of type `event_type`) keyed by `id`,
    /// so the entity's events keep their order, and resolves once acknowledged with where it was
    /// written.
    pub async fn append(
        &self,
        id: impl AsRef<[u8]>,
        event_type: &str,
        payload: &[u8],
    ) -> Result<Delivery, PublishError> {
        self.publisher.publish(&self.topic, Outgoing::new(event_type, id.as_ref(), payload)).await
    }

    /// Appends an Avro event of entity `id` (see [`Publisher::publish_event`]).
    pub async fn append_event<T: crate::schema::AvroEvent>(
        &self,
        id: impl AsRef<[u8]>,
        event: &T,
    ) -> Result<Delivery, PublishError> {
        self.publisher.publish_event(&self.topic, id.as_ref(), event).await
    }

    /// Rebuilds entity `id` from its events, read from the beginning of its partition
    /// (`read_committed`): `None` if it has none. A tombstone (an event without payload) ends the
    /// entity; events after it start it over.
    pub async fn rebuild(&self, id: impl AsRef<[u8]>) -> Result<Option<A>, SourcingError> {
        let id = id.as_ref().to_vec();
        let partition = partition_for(&id, self.topic.partitions());
        let records = self.read(vec![partition], Some(id)).await?;
        Ok(self.fold(records).await?.into_values().next())
    }

    /// Every entity of the topic, rebuilt (a projection), by id.
    pub async fn project(&self) -> Result<BTreeMap<Vec<u8>, A>, SourcingError> {
        let records = self.read((0..self.topic.partitions()).collect(), None).await?;
        self.fold(records).await
    }

    /// The records of `partitions` (only those of `key`, if given), in order per partition.
    async fn read(&self, partitions: Vec<i32>, key: Option<Vec<u8>>) -> Result<Vec<Record>, SourcingError> {
        let (reader, topic) = (self.reader.clone(), self.topic.name().to_owned());
        let read = tokio::task::spawn_blocking(move || {
            let reader = reader.lock().unwrap_or_else(PoisonError::into_inner);
            let mut records = Vec::new();
            reader
                .read(&topic, &partitions, |m| {
                    if key.is_none() || m.key() == key.as_deref() {
                        records.push(Record {
                            partition: m.partition(),
                            offset: m.offset(),
                            key: m.key().map(<[u8]>::to_vec),
                            payload: m.payload().map(<[u8]>::to_vec),
                        });
                    }
                })
                .map(|_| records)
        })
        .await;
        let topic = self.topic.name().to_owned();
        match read {
            Ok(Ok(records)) => Ok(records),
            Ok(Err(e)) => Err(SourcingError::Read { topic, reason: e.to_string() }),
            Err(e) => Err(SourcingError::Read { topic, reason: e.to_string() }),
        }
    }

    /// Folds `records` into their entities.
    async fn fold(&self, records: Vec<Record>) -> Result<BTreeMap<Vec<u8>, A>, SourcingError> {
        let registry = self.publisher.registry();
        let mut entities = BTreeMap::new();
        for record in records {
            let Some(key) = record.key else { continue };
            let Some(payload) = record.payload else {
                entities.remove(&key);
                continue;
            };
            let event = decode::<A::Event>(&payload, registry).await.map_err(|e| SourcingError::Decode {
                topic: self.topic.name().to_owned(),
                partition: record.partition,
                offset: record.offset,
                reason: e.to_string(),
            })?;
            entities.entry(key).or_insert_with(A::default).apply(&event);
        }
        Ok(entities)
    }
}

/// Decodes `payload`, fetching an Avro writer's schema first if it is not cached yet.
async fn decode<T: Decode>(payload: &[u8], registry: &Registry) -> Result<T, DecodeError> {
    match T::decode_with(payload, Some(registry)) {
        Err(_) if registry.prepare(payload).await.is_ok() => T::decode_with(payload, Some(registry)),
        decoded => decoded,
    }
}

/// What a running total can be: kept in memory, written to the snapshot as JSON.
pub trait TotalValue: Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static> TotalValue for T {}

/// Counters of a [`RunningTotals`] since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TotalsStats {
    /// Snapshot records read when partitions were assigned.
    pub loaded: u64,
    /// Input events counted in committed transactions (by this instance).
    pub events: u64,
    /// Totals written to the snapshot in committed transactions.
    pub written: u64,
    /// Committed transactions that changed totals.
    pub transactions: u64,
    /// Input partitions held now, their snapshot loaded.
    pub partitions: usize,
}

/// Per-key totals of a topic, kept in memory, snapshotted with the consumed offsets; see the
/// [module docs](self). Cheap to clone: clones share the totals. Build with
/// [`RunningTotals::builder`], run with [`RunningTotals::run`].
pub struct RunningTotals<V> {
    shared: Arc<Totals<V>>,
    /// Taken by [`RunningTotals::run`].
    consumer: Arc<Mutex<Option<TotalsConsumer<V>>>>,
}

type TotalsConsumer<V> = Consumer<Arc<Totals<V>>>;

impl<V> Clone for RunningTotals<V> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone(), consumer: self.consumer.clone() }
    }
}

impl<V> std::fmt::Debug for RunningTotals<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningTotals")
            .field("name", &self.shared.name)
            .field("stats", &*self.shared.stats.borrow())
            .finish_non_exhaustive()
    }
}

/// How an event changes a total: decodes it, then folds it in (never a half-applied change).
type Fold<V> = Box<dyn Fn(&mut V, &IncomingEvent, &Registry) -> Result<(), DecodeError> + Send + Sync>;

/// Decodes each event as an `E`, then folds it in with `fold`.
fn fold_of<V, E: Decode, F: Fn(&mut V, E) + Send + Sync + 'static>(fold: F) -> Fold<V> {
    Box::new(move |total, event, registry| {
        let payload = event.payload().ok_or_else(|| DecodeError::new("a running total needs a payload"))?;
        fold(total, E::decode_with(payload, Some(registry))?);
        Ok(())
    })
}

/// Builds [`RunningTotals`].
#[must_use = "a builder does nothing until built"]
pub struct RunningTotalsBuilder<V> {
    config: Config,
    spec: ServiceSpec,
    input: TopicSpec,
    snapshot: TopicSpec,
    publisher: Publisher,
    fold: Fold<V>,
    name: Option<String>,
    every: usize,
    interval: Duration,
    settings: Vec<(String, String)>,
}

impl<V> std::fmt::Debug for RunningTotalsBuilder<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningTotalsBuilder")
            .field("input", &self.input.name())
            .field("snapshot", &self.snapshot.name())
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl<V: TotalValue> RunningTotals<V> {
    /// Totals of `input` per key for `spec`'s service: each event's payload is decoded as an `E`
    /// and folded into its key's total (starting from `V::default()`) with `fold`. `snapshot` is a
    /// private compacted topic the service owns, with as many partitions as `input`; the service
    /// must be allowed to read `input` and own its dead-letter topic
    /// ([`crate::consume::dead_letter_topic`]: events without key or payload, or whose payload does
    /// not decode, go there). `publisher` lends its health and schema registry.
    pub fn builder<E, F>(
        config: &Config,
        spec: &ServiceSpec,
        input: &TopicSpec,
        snapshot: &TopicSpec,
        publisher: Publisher,
        fold: F,
    ) -> RunningTotalsBuilder<V>
    where
        E: Decode,
        F: Fn(&mut V, E) + Send + Sync + 'static,
    {
        RunningTotalsBuilder {
            config: config.clone(),
            spec: spec.clone(),
            input: input.clone(),
            snapshot: snapshot.clone(),
            publisher,
            fold: fold_of(fold),
            name: None,
            every: 1_000,
            interval: Duration::from_millis(100),
            settings: Vec::new(),
        }
    }
}

impl<V: TotalValue> RunningTotalsBuilder<V> {
    /// Names the totals (default: the snapshot topic's name): the consumer group is
    /// `<service>.totals.<name>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Commits (offsets and changed totals, one transaction) about every `events` events (default
    /// 1,000), or every [`interval`](Self::interval), whichever comes first. Larger: fewer snapshot
    /// writes; smaller: less to handle again after a crash.
    pub fn every(mut self, events: usize) -> Self {
        self.every = events.max(1);
        self
    }

    /// Commits at least every `interval` while events come (default 100 ms; see
    /// [`Consumer::transaction_interval`]). Totals read with [`RunningTotals::get`] are at most
    /// this old.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets a librdkafka property on the consumer (see [`Consumer::client_setting`]).
    pub fn client_setting(mut self, key: &str, value: impl Into<String>) -> Self {
        self.settings.push((key.to_owned(), value.into()));
        self
    }

    /// Checks the declarations and creates the consumer.
    pub fn build(self) -> Result<RunningTotals<V>, SourcingError> {
        let snapshot = &self.snapshot;
        let invalid = |reason: String| TopicError::InvalidTopic { topic: snapshot.name().to_owned(), reason };
        if snapshot.visibility() != Visibility::Private || self.spec.owned(snapshot.name()).is_none() {
            return Err(invalid(format!(
                "the snapshot of running totals must be a private topic of service `{}`, declared with \
                 `.owns(..)`",
                self.spec.name()
            ))
            .into());
        }
        if !matches!(snapshot.cleanup(), Cleanup::Compact { .. }) {
            return Err(
                invalid("the snapshot of running totals must be compacted (`.compacted()`)".into()).into()
            );
        }
        if snapshot.partitions() != self.input.partitions() {
            return Err(invalid(format!(
                "the snapshot needs as many partitions as `{}` ({}), has {}",
                self.input.name(),
                self.input.partitions(),
                snapshot.partitions()
            ))
            .into());
        }
        let name = self.name.unwrap_or_else(|| snapshot.name().to_owned());
        let group = format!("{}.totals.{name}", self.spec.name());
        let shared = Arc::new(Totals {
            reader: Mutex::new(Reader::new(&self.config, self.spec.name(), snapshot.name())?),
            snapshot: snapshot.clone(),
            fold: self.fold,
            parts: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            stats: watch::channel(TotalsStats::default()).0,
            name,
        });
        let mut consumer = Consumer::new(
            &self.config,
            &self.spec,
            &self.input,
            BoxedHandler::named("totals", count::<V>),
            shared.clone(),
            self.publisher,
            Some(&group),
        )?
        .transaction_size(self.every)
        .transaction_interval(self.interval)
        .hooks(Hooks(shared.clone()));
        for (key, value) in self.settings {
            consumer = consumer.client_setting(&key, value);
        }
        Ok(RunningTotals { shared, consumer: Arc::new(Mutex::new(Some(consumer))) })
    }
}

impl<V: TotalValue> RunningTotals<V> {
    /// Counts until `shutdown` completes (see [`crate::shutdown_signal`]), then commits what was
    /// counted and leaves the group. The totals held are dropped when it returns.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), SourcingError> {
        let consumer = self
            .consumer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| SourcingError::AlreadyRunning { name: self.shared.name.clone() })?;
        let shared = self.shared.clone();
        let outcome = consumer
            .run(async move {
                shutdown.await;
                // A snapshot load waiting to retry gives up: the consumer is stopping.
                shared.stopping.store(true, Ordering::Release);
            })
            .await;
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.lock_parts().clear();
        self.shared.stats.send_modify(|s| s.partitions = 0);
        outcome.map_err(SourcingError::from)
    }
}

impl<V: Clone> RunningTotals<V> {
    /// The total of `key` as last committed (never one an abort could take back), if this
    /// instance holds its partition and the key has one.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<V> {
        let key = key.as_ref();
        self.shared.lock_parts().values().find_map(|p| p.committed.get(key).cloned())
    }

    /// Every total this instance holds, as last committed.
    pub fn snapshot(&self) -> BTreeMap<Vec<u8>, V> {
        let parts = self.shared.lock_parts();
        parts.values().flat_map(|p| p.committed.iter().map(|(k, v)| (k.clone(), v.clone()))).collect()
    }
}

impl<V> RunningTotals<V> {
    /// Their name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Counters since they were built.
    pub fn stats(&self) -> TotalsStats {
        *self.shared.stats.borrow()
    }

    /// A receiver of [`TotalsStats`] changes: partitions loaded or dropped, transactions committed.
    pub fn subscribe(&self) -> watch::Receiver<TotalsStats> {
        self.shared.stats.subscribe()
    }
}

/// One input partition's totals.
struct Part<V> {
    /// As of the last committed transaction.
    committed: HashMap<Vec<u8>, V>,
    /// Changed in the open transaction.
    open: HashMap<Vec<u8>, V>,
    /// Events counted in the open transaction.
    events: u64,
}

/// What the handler, the hooks and the handles share.
struct Totals<V> {
    name: String,
    snapshot: TopicSpec,
    fold: Fold<V>,
    reader: Mutex<Reader>,
    parts: Mutex<HashMap<i32, Part<V>>>,
    stopping: AtomicBool,
    stats: watch::Sender<TotalsStats>,
}

impl<V> Totals<V> {
    fn lock_parts(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Part<V>>> {
        self.parts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<V: TotalValue> Totals<V> {
    /// Folds one event into its key's total, in the open transaction.
    fn count(&self, event: &IncomingEvent, registry: &Registry) -> Result<(), HandlerError> {
        let key = event.key().ok_or_else(|| HandlerError::permanent("a running total needs a key"))?;
        let mut parts = self.lock_parts();
        let Some(part) = parts.get_mut(&event.partition()) else {
            return Err(HandlerError::retriable(format!("partition {} is not held", event.partition())));
        };
        let mut total = part.open.get(key).or_else(|| part.committed.get(key)).cloned().unwrap_or_default();
        (self.fold)(&mut total, event, registry).map_err(HandlerError::permanent)?;
        part.open.insert(key.to_vec(), total);
        part.events += 1;
        Ok(())
    }

    /// Reads the snapshot of `partitions`, retrying until it succeeds or the consumer stops.
    fn load(&self, partitions: &[i32]) {
        let topic = self.snapshot.name();
        while !self.stopping.load(Ordering::Acquire) {
            let mut loaded: HashMap<i32, HashMap<Vec<u8>, V>> =
                partitions.iter().map(|&p| (p, HashMap::new())).collect();
            let mut undecodable = None;
            let read =
                self.reader.lock().unwrap_or_else(PoisonError::into_inner).read(topic, partitions, |m| {
                    let (Some(totals), Some(key)) = (loaded.get_mut(&m.partition()), m.key()) else { return };
                    match m.payload().map(serde_json::from_slice::<V>) {
                        None => {
                            totals.remove(key);
                        }
                        Some(Ok(total)) => {
                            totals.insert(key.to_vec(), total);
                        }
                        Some(Err(e)) => undecodable = Some(format!("offset {}: {e}", m.offset())),
                    }
                });
            match (read, undecodable) {
                (Ok(records), None) => {
                    let held = {
                        let mut parts = self.lock_parts();
                        for (partition, committed) in loaded {
                            parts.insert(partition, Part { committed, open: HashMap::new(), events: 0 });
                        }
                        parts.len()
                    };
                    tracing::info!(totals = self.name, ?partitions, records, "snapshot loaded");
                    self.stats.send_modify(|s| {
                        s.loaded += records;
                        s.partitions = held;
                    });
                    return;
                }
                (Err(e), _) => {
                    tracing::warn!(totals = self.name, error = %e, "snapshot not loaded; retrying")
                }
                // Exact or not at all: a total that does not decode (its type changed?) stops the
                // partitions here, loudly, rather than counting from zero.
                (Ok(_), Some(e)) => {
                    tracing::error!(totals = self.name, error = e, "snapshot does not decode")
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// The handler: folds each event into its total.
async fn count<V: TotalValue>(
    meta: Metadata,
    publisher: Publisher,
    State(totals): State<Arc<Totals<V>>>,
) -> Result<(), HandlerError> {
    totals.count(&meta, publisher.registry())
}

/// The consumer hooks: load on assignment, write the changes in each transaction, keep or forget
/// them when it ends, drop revoked partitions.
struct Hooks<V>(Arc<Totals<V>>);

impl<V: TotalValue> ConsumerHooks for Hooks<V> {
    fn start_offsets(&self, _topic: &str, partitions: &[i32]) -> Vec<(i32, Offset)> {
        // Before the assignment takes effect: no event of these partitions is handled before their
        // totals are in. They resume from the group's committed offsets.
        if !partitions.is_empty() {
            self.0.load(partitions);
        }
        Vec::new()
    }

    fn revoked(&self, _topic: &str, partitions: &[i32]) {
        let held = {
            let mut parts = self.0.lock_parts();
            partitions.iter().for_each(|p| {
                parts.remove(p);
            });
            parts.len()
        };
        self.0.stats.send_modify(|s| s.partitions = held);
    }

    fn before_commit(&self, transaction: &Transaction<'_>) -> Result<(), PublishError> {
        let parts = self.0.lock_parts();
        for (&partition, part) in parts.iter() {
            for (key, total) in &part.open {
                let payload = serde_json::to_vec(total)
                    .map_err(|e| PublishError::Client(format!("a running total does not serialize: {e}")))?;
                let record = Outgoing::new("RunningTotal", key, &payload).partition(partition);
                transaction.publish(&self.0.snapshot, record)?;
            }
        }
        Ok(())
    }

    fn transaction_ended(&self, committed: bool) {
        let (mut written, mut events) = (0, 0);
        for part in self.0.lock_parts().values_mut() {
            if committed {
                written += part.open.len() as u64;
                events += part.events;
                part.committed.extend(part.open.drain());
            } else {
                part.open.clear();
            }
            part.events = 0;
        }
        if written > 0 {
            self.0.stats.send_modify(|s| {
                s.events += events;
                s.written += written;
                s.transactions += 1;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals() -> Arc<Totals<i64>> {
        let config = Config::default();
        let parts = (0..2).map(|p| (p, Part { committed: HashMap::new(), open: HashMap::new(), events: 0 }));
        Arc::new(Totals {
            name: "t".into(),
            snapshot: TopicSpec::private("svc", "totals").compacted().build().unwrap(),
            fold: fold_of(|total: &mut i64, amount: String| *total += amount.parse::<i64>().unwrap()),
            reader: Mutex::new(Reader::new(&config, "svc", "svc.private.totals").unwrap()),
            parts: Mutex::new(parts.collect()),
            stopping: AtomicBool::new(false),
            stats: watch::channel(TotalsStats::default()).0,
        })
    }

    fn event(partition: i32, key: &str, payload: &str) -> IncomingEvent {
        IncomingEvent::new("svc.public.in-v1", partition, 0).with_key(key).with_payload(payload)
    }

    fn committed(totals: &Totals<i64>, key: &str) -> Option<i64> {
        totals.lock_parts().values().find_map(|p| p.committed.get(key.as_bytes()).copied())
    }

    #[test]
    fn an_aborted_transaction_forgets_its_changes_a_committed_one_keeps_them() {
        let totals = totals();
        let hooks = Hooks(totals.clone());
        let registry = Registry::new(&Config::default().schema_registry_url).unwrap();
        let count = |p, key, amount| totals.count(&event(p, key, amount), &registry);
        count(0, "a", "5").unwrap();
        count(1, "b", "2").unwrap();
        count(0, "a", "1").unwrap();
        assert_eq!(committed(&totals, "a"), None, "nothing committed yet");
        hooks.transaction_ended(true);
        assert_eq!((committed(&totals, "a"), committed(&totals, "b")), (Some(6), Some(2)));
        let stats = *totals.stats.borrow();
        assert_eq!((stats.events, stats.written, stats.transactions), (3, 2, 1));

        // Counted, then aborted: the events will be handled again, from the committed total.
        count(0, "a", "100").unwrap();
        hooks.transaction_ended(false);
        count(0, "a", "100").unwrap();
        hooks.transaction_ended(true);
        assert_eq!(committed(&totals, "a"), Some(106), "counted once");
        assert_eq!(totals.stats.borrow().events, 4);

        // An event that does not decode changes nothing (it is dead-lettered).
        let not_utf8 = IncomingEvent::new("svc.public.in-v1", 0, 0).with_key("c").with_payload([0xff]);
        assert!(!totals.count(&not_utf8, &registry).unwrap_err().is_retriable());
        hooks.transaction_ended(true);
        assert_eq!(committed(&totals, "c"), None);
        // An event of a partition not held is retried, not counted.
        assert!(count(5, "d", "1").unwrap_err().is_retriable());
    }
}
