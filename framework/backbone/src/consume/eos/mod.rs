//! Exactly once, both sides of it: the consumer's transaction state ([`Eos`]), which commits what the
//! handlers published with the offsets they consumed, and the open transaction as the producer side
//! lends it to [`ConsumerHooks::before_commit`] ([`Transaction`], re-exported as
//! `backbone::Transaction` and `backbone::publish::Transaction`).

pub(crate) mod transaction;

pub use transaction::Transaction;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;

use crate::consume::blocking::off_runtime;
use crate::consume::hooks::ConsumerHooks;
use crate::consume::partition::Cursor;
use crate::publish::Publisher;

/// Exactly-once state: the transactional publisher, the gate between events and commits, and the
/// offsets handled in the open transaction.
pub(super) struct Eos {
    pub(super) publisher: Publisher,
    topic: String,
    size: usize,
    timeout: Duration,
    /// Events hold it shared while handled; a commit holds it exclusively.
    pub(super) gate: Arc<tokio::sync::RwLock<()>>,
    /// Next offset per partition, handled in the open transaction.
    next: Mutex<HashMap<i32, i64>>,
    /// Next offset per partition, as last committed (or, before a commit, where its assignment
    /// started).
    committed: Mutex<HashMap<i32, i64>>,
    /// The assigned partitions' cursors, rewound after an aborted transaction.
    pub(super) cursors: Mutex<HashMap<i32, Arc<Cursor>>>,
    pending: std::sync::atomic::AtomicUsize,
    /// Partition tasks with events in hand: when the last goes idle, the open transaction commits
    /// at once (see [`Eos::idle`]).
    busy: std::sync::atomic::AtomicUsize,
    /// Partitions with an event that neither succeeded nor was dead-lettered in the open
    /// transaction: it must abort, not commit past that event.
    doomed: Mutex<Vec<i32>>,
    /// Counts aborted transactions (and fatal failures): a partition task waiting after a doomed
    /// event goes on once it changes.
    pub(super) aborts: watch::Sender<u64>,
    /// An abort failed: this producer cannot go on.
    broken: std::sync::atomic::AtomicBool,
    full: tokio::sync::Notify,
    pub(super) fatal: tokio::sync::Notify,
    hooks: Arc<dyn ConsumerHooks>,
    interval: Duration,
    /// Transactions committed and aborted, their durations and commit latency.
    transactions: Option<crate::observe::TransactionMetrics>,
    /// When the open transaction took its first event.
    opened: Mutex<Option<Instant>>,
}

impl Eos {
    /// Counts committed and aborted transactions in the publisher's metrics, labelled with the
    /// topic and the consumer `group`.
    pub(super) fn counting(mut self, group: &str) -> Self {
        let metrics = self.publisher.health().metrics();
        self.transactions = Some(crate::observe::TransactionMetrics::new(metrics, &self.topic, group));
        self
    }

    pub(super) fn new(
        publisher: Publisher,
        topic: &str,
        (size, interval): (usize, Duration),
        timeout: Duration,
        hooks: Arc<dyn ConsumerHooks>,
    ) -> Self {
        Self {
            hooks,
            interval,
            publisher,
            topic: topic.to_owned(),
            size,
            timeout,
            gate: Arc::new(tokio::sync::RwLock::new(())),
            next: Mutex::new(HashMap::new()),
            committed: Mutex::new(HashMap::new()),
            cursors: Mutex::new(HashMap::new()),
            pending: Default::default(),
            busy: Default::default(),
            doomed: Mutex::new(Vec::new()),
            aborts: watch::channel(0).0,
            broken: Default::default(),
            full: tokio::sync::Notify::new(),
            fatal: tokio::sync::Notify::new(),
            transactions: None,
            opened: Mutex::new(None),
        }
    }

    /// The gate, exclusively, from synchronous code: the group thread (inside a futures executor,
    /// outside tokio) or, when a consumer is dropped there, a runtime thread (when no event holds
    /// the gate any more).
    pub(super) fn write_blocking(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        if tokio::runtime::Handle::try_current().is_ok() {
            futures::executor::block_on(self.gate.write())
        } else {
            self.gate.blocking_write()
        }
    }

    /// The partition's first event in this assignment is at `offset` (unless one came before): where
    /// an aborted transaction rewinds it to when none of its transactions has committed yet.
    pub(super) fn started(&self, partition: i32, offset: i64) {
        self.committed.lock().unwrap_or_else(PoisonError::into_inner).entry(partition).or_insert(offset);
    }

    pub(super) fn handled(&self, partition: i32, offset: i64) {
        self.next.lock().unwrap_or_else(PoisonError::into_inner).insert(partition, offset + 1);
        let pending = self.pending.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if pending == 0 && self.transactions.is_some() {
            self.opened.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(Instant::now);
        }
        if pending + 1 >= self.size {
            self.full.notify_one();
        }
    }

    /// A partition's task took events to handle.
    pub(super) fn busy(&self) {
        self.busy.fetch_add(1, Ordering::AcqRel);
    }

    /// A partition's task handled all it had and waits for more. When no partition has events in
    /// hand, the open transaction commits now instead of at the next tick: at a moderate rate an
    /// event's outputs become visible a commit's round trip after it was handled, not up to an
    /// interval later. Under load some partition is always busy, and transactions fill up to their
    /// size or interval as before.
    pub(super) fn idle(&self) {
        if self.busy.fetch_sub(1, Ordering::AcqRel) == 1 && self.pending.load(Ordering::Acquire) > 0 {
            self.full.notify_one();
        }
    }

    fn is_doomed(&self) -> bool {
        !self.doomed.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    /// An event of `partition` failed without a dead letter: abort the open transaction at once.
    pub(super) fn doom(&self, partition: i32) {
        tracing::warn!(
            topic = self.topic,
            partition,
            "event neither handled nor dead-lettered: aborting the transaction"
        );
        self.doomed.lock().unwrap_or_else(PoisonError::into_inner).push(partition);
        self.full.notify_one();
    }

    pub(super) fn forget(&self, partitions: &[i32]) {
        for map in [&self.next, &self.committed] {
            let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
            partitions.iter().for_each(|p| {
                map.remove(p);
            });
        }
        let mut cursors = self.cursors.lock().unwrap_or_else(PoisonError::into_inner);
        partitions.iter().for_each(|p| {
            cursors.remove(p);
        });
    }

    /// Commits a transaction when it is full, when every partition is idle ([`Eos::idle`]), or every
    /// interval (100 ms by default), until the consumer stops.
    pub(super) async fn committing<
        C: rdkafka::consumer::Consumer<X> + Send + Sync + 'static,
        X: ConsumerContext + 'static,
    >(
        self: Arc<Self>,
        consumer: Arc<C>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = self.full.notified() => {}
                _ = tick.tick() => {}
            }
            if self.pending.load(std::sync::atomic::Ordering::Acquire) == 0 && !self.is_doomed() {
                continue;
            }
            let gate = self.gate.clone().write_owned().await;
            let (eos, consumer) = (self.clone(), consumer.clone());
            // Off the runtime's blocking pool: a commit waits for the broker, and the runtime's
            // shutdown would wait for it.
            let result = off_runtime(move || eos.commit_locked(&*consumer)).await;
            drop(gate);
            let component = format!("transactions:{}", self.topic);
            match result {
                Some(Ok(())) => self.publisher.health().recover(&component),
                Some(Err(e)) if !is_fatal(&e) && !self.broken.load(Ordering::Acquire) => {
                    tracing::warn!(error = %e, "transaction aborted; events handled again")
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "transactions failed fatally");
                    self.publisher.health().degrade(
                        &component,
                        format!("transactions failed fatally ({e}); joining again with a new producer"),
                    );
                    self.fatal.notify_one();
                    self.aborts.send_modify(|n| *n += 1);
                    return;
                }
                None => tracing::error!("transaction thread panicked"),
            }
        }
    }

    /// Commits the open transaction with the handled offsets, then begins the next. The caller
    /// holds the gate exclusively. A commit that must abort is aborted and the partitions are
    /// rewound to the last committed offsets (their events are handled again, in a new
    /// transaction); a fatal error (fenced) is returned for the consumer to stop.
    pub(super) fn commit_locked<C: ConsumerContext, K: rdkafka::consumer::Consumer<C>>(
        &self,
        consumer: &K,
    ) -> Result<(), KafkaError> {
        use rdkafka::producer::Producer as _;
        let doomed = std::mem::take(&mut *self.doomed.lock().unwrap_or_else(PoisonError::into_inner));
        if self.pending.load(Ordering::Acquire) == 0 && doomed.is_empty() {
            return Ok(());
        }
        let offsets = self.next.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let producer = self.publisher.producer();
        let mut list = rdkafka::TopicPartitionList::new();
        for (partition, offset) in &offsets {
            list.add_partition_offset(&self.topic, *partition, rdkafka::Offset::Offset(*offset))?;
        }
        let metadata = consumer.group_metadata().ok_or(KafkaError::Global(RDKafkaErrorCode::State))?;
        let began = Instant::now();
        let deadline = began + self.timeout;
        let mut outcome = if doomed.is_empty() {
            self.hooks.before_commit(&Transaction::new(&self.publisher)).map_err(|e| {
                tracing::warn!(error = %e, "before_commit hook failed: aborting the transaction");
                KafkaError::MessageProduction(RDKafkaErrorCode::Fail)
            })
        } else {
            // An event failed without a dead letter: committing would skip it.
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::Fail))
        };
        if outcome.is_ok() {
            let mut metadata = metadata;
            outcome = loop {
                // Each call gets at most SEND_OFFSETS_CALL (a timed-out call is retriable, and retried
                // until the deadline): a call that hangs is then found out that much later, not only
                // after the whole delivery timeout.
                let call = self.timeout.min(SEND_OFFSETS_CALL);
                let Some((sent, given)) = send_offsets_bounded(producer, &list, metadata, call) else {
                    tracing::error!(
                        topic = self.topic,
                        timeout = ?call,
                        "sending the offsets to the transaction did not return within its timeout \
                         (librdkafka #5456: the group coordinator it looks for is gone); this producer \
                         is left behind and the consumer joins again with a new one"
                    );
                    self.broken.store(true, Ordering::Release);
                    self.aborts.send_modify(|n| *n += 1);
                    return Err(KafkaError::Global(RDKafkaErrorCode::OperationTimedOut));
                };
                metadata = given;
                match sent {
                    Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    other => break other,
                }
            };
        }
        if outcome.is_ok() {
            outcome = loop {
                match producer.commit_transaction(self.timeout) {
                    Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    other => break other,
                }
            };
        }
        match outcome {
            Ok(()) => {
                self.committed.lock().unwrap_or_else(PoisonError::into_inner).extend(offsets);
                self.pending.store(0, Ordering::Release);
                let opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(metrics) = &self.transactions {
                    metrics.committed.increment(1);
                    metrics.commit.record(began.elapsed());
                    metrics.duration.record(opened.map_or(Duration::ZERO, |o| o.elapsed()));
                }
                self.hooks.transaction_ended(true);
                producer.begin_transaction()
            }
            Err(e) if !is_fatal(&e) => {
                if let Err(failed) = producer.abort_transaction(self.timeout).and_then(|()| {
                    self.opened.lock().unwrap_or_else(PoisonError::into_inner).take();
                    if let Some(metrics) = &self.transactions {
                        metrics.aborted.increment(1);
                    }
                    self.hooks.transaction_ended(false);
                    producer.begin_transaction()
                }) {
                    // This producer cannot go on: the consumer joins again with a new one.
                    tracing::error!(error = %failed, "cannot abort the transaction");
                    self.broken.store(true, Ordering::Release);
                    self.aborts.send_modify(|n| *n += 1);
                    return Err(failed);
                }
                let committed = self.committed.lock().unwrap_or_else(PoisonError::into_inner).clone();
                let cursors = self.cursors.lock().unwrap_or_else(PoisonError::into_inner);
                let mut rewound: Vec<i32> = offsets.keys().copied().chain(doomed).collect();
                rewound.sort_unstable();
                rewound.dedup();
                for partition in &rewound {
                    // Every partition with events in the transaction has a start (`started`). (A
                    // seek to the stored offset is not one librdkafka accepts: it fails with
                    // `Local: Invalid argument`, and the aborted events were never handled again.)
                    let Some(&to) = committed.get(partition) else {
                        tracing::error!(partition, "no offset to rewind to after an aborted transaction");
                        continue;
                    };
                    // First the cursor (its task then distrusts an event it is taking), then the seek.
                    if let Some(cursor) = cursors.get(partition) {
                        cursor.rewind(to);
                    }
                    if let Err(e) =
                        consumer.seek(&self.topic, *partition, rdkafka::Offset::Offset(to), self.timeout)
                    {
                        tracing::warn!(partition, error = %e, "rewinding after an aborted transaction");
                    }
                }
                drop(cursors);
                *self.next.lock().unwrap_or_else(PoisonError::into_inner) = committed;
                self.pending.store(0, Ordering::Release);
                self.aborts.send_modify(|n| *n += 1);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

/// The most one `send_offsets_to_transaction` call is given (the delivery timeout when shorter).
const SEND_OFFSETS_CALL: Duration = Duration::from_secs(30);

/// How long past its own timeout `send_offsets_to_transaction` may take before it counts as hung.
const HANG_MARGIN: Duration = Duration::from_secs(5);

/// `producer.send_offsets_to_transaction`, on a thread of its own, waited for up to its timeout
/// plus [`HANG_MARGIN`]; `None` if it has not returned by then. librdkafka (2.12, and 2.14 still:
/// issues #5456 and #5511) never times out its coordinator request when the group coordinator it
/// cached is gone (a broker killed): the call then blocks for good, and with it the consumer's
/// commits. The thread, and the producer it holds, are then left behind: nothing can interrupt the
/// call.
/// The group metadata comes back with the result (it cannot be cloned).
fn send_offsets_bounded(
    producer: &rdkafka::producer::FutureProducer<crate::publish::PublishContext>,
    offsets: &rdkafka::TopicPartitionList,
    metadata: rdkafka::consumer::ConsumerGroupMetadata,
    timeout: Duration,
) -> Option<(Result<(), KafkaError>, rdkafka::consumer::ConsumerGroupMetadata)> {
    use rdkafka::producer::Producer as _;
    let (sent, result) = std::sync::mpsc::sync_channel(1);
    let (producer, offsets) = (producer.clone(), offsets.clone());
    std::thread::Builder::new()
        .name("backbone-send-offsets".into())
        .spawn(move || {
            let outcome = producer.send_offsets_to_transaction(&offsets, &metadata, timeout);
            let _ = sent.send((outcome, metadata));
        })
        .ok()?;
    result.recv_timeout(timeout + HANG_MARGIN).ok()
}

/// Whether a transaction error ends this producer (fenced, or fatal): the consumer must stop.
fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(e) => e.is_fatal() && !e.txn_requires_abort(),
        _ => false,
    }
}
