//! Running totals: kept in memory, snapshotted with the consumed offsets.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::message::Message as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::consume::{Consumer, ConsumerHooks};
use crate::handler::{BoxedHandler, Decode, DecodeError, HandlerError, IncomingEvent, Metadata, State};
use crate::publish::{Outgoing, PublishError, Publisher, Transaction};
use crate::runtime::Context;
use crate::schema::Registry;
use crate::topic::{Cleanup, TopicError, TopicSpec, Visibility};

use super::reader::Reader;
use super::*;

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
/// [module docs](crate::sourcing). Cheap to clone: clones share the totals. Build with
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
pub(super) fn fold_of<V, E: Decode, F: Fn(&mut V, E) + Send + Sync + 'static>(fold: F) -> Fold<V> {
    Box::new(move |total, event, registry| {
        let payload = event.payload().ok_or_else(|| DecodeError::new("a running total needs a payload"))?;
        fold(total, E::decode_with(payload, Some(registry))?);
        Ok(())
    })
}

/// Builds [`RunningTotals`].
#[must_use = "a builder does nothing until built"]
pub struct RunningTotalsBuilder<V> {
    context: Context,
    input: TopicSpec,
    snapshot: TopicSpec,
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
    /// Totals of `input` per key for the context's service: each event's payload is decoded as an
    /// `E` and folded into its key's total (starting from `V::default()`) with `fold`. `snapshot` is
    /// a private compacted topic the service owns, with as many partitions as `input`; the service
    /// must be allowed to read `input` and own its dead-letter topic
    /// ([`crate::consume::dead_letter_topic`]: events without key or payload, or whose payload does
    /// not decode, go there). The context's publisher lends its health and schema registry.
    pub fn builder<E, F>(
        context: &Context,
        input: &TopicSpec,
        snapshot: &TopicSpec,
        fold: F,
    ) -> RunningTotalsBuilder<V>
    where
        E: Decode,
        F: Fn(&mut V, E) + Send + Sync + 'static,
    {
        RunningTotalsBuilder {
            context: context.clone(),
            input: input.clone(),
            snapshot: snapshot.clone(),
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
        let spec = self.context.spec();
        let invalid = |reason: String| TopicError::InvalidTopic { topic: snapshot.name().to_owned(), reason };
        if snapshot.visibility() != Visibility::Private || spec.owned(snapshot.name()).is_none() {
            return Err(invalid(format!(
                "the snapshot of running totals must be a private topic of service `{}`, declared with \
                 `.owns(..)`",
                spec.name()
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
        let group = format!("{}.totals.{name}", spec.name());
        let shared = Arc::new(Totals {
            reader: Mutex::new(Reader::new(self.context.config(), spec.name(), snapshot.name())?),
            snapshot: snapshot.clone(),
            fold: self.fold,
            parts: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            stats: watch::channel(TotalsStats::default()).0,
            name,
        });
        let mut consumer = Consumer::new(
            &self.context,
            &self.input,
            BoxedHandler::named("totals", count::<V>),
            shared.clone(),
        )?
        .in_group(group)
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
pub(super) struct Part<V> {
    /// As of the last committed transaction.
    pub(super) committed: HashMap<Vec<u8>, V>,
    /// Changed in the open transaction.
    pub(super) open: HashMap<Vec<u8>, V>,
    /// Events counted in the open transaction.
    pub(super) events: u64,
}

/// What the handler, the hooks and the handles share.
pub(super) struct Totals<V> {
    pub(super) name: String,
    pub(super) snapshot: TopicSpec,
    pub(super) fold: Fold<V>,
    pub(super) reader: Mutex<Reader>,
    pub(super) parts: Mutex<HashMap<i32, Part<V>>>,
    pub(super) stopping: AtomicBool,
    pub(super) stats: watch::Sender<TotalsStats>,
}

impl<V> Totals<V> {
    pub(super) fn lock_parts(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Part<V>>> {
        self.parts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<V: TotalValue> Totals<V> {
    /// Folds one event into its key's total, in the open transaction.
    pub(super) fn count(&self, event: &IncomingEvent, registry: &Registry) -> Result<(), HandlerError> {
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
            std::thread::sleep(crate::backoff::jitter(Duration::from_secs(1)));
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
pub(super) struct Hooks<V>(pub(super) Arc<Totals<V>>);

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
