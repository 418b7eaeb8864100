//! Durable, idempotent publishing.
//!
//! A [`Publisher`] belongs to one service and writes only the topics that service owns. Its producer
//! is durable by default, whatever librdkafka's own defaults are:
//!
//! - `acks=all` and `enable.idempotence=true` (librdkafka defaults idempotence to off), at most 5
//!   requests in flight: retries neither duplicate nor reorder;
//! - keyed partitioning with `murmur2_random`, the Java client's partitioner: the same key always
//!   lands on the same partition (per-entity order), and Java services agree on where;
//! - [`Publisher::publish`] resolves only once the broker has acknowledged the write, with the
//!   partition and offset (a consistency token for read-your-writes);
//! - backpressure: at most `publish_queue` publishes are in flight; further publishers wait;
//! - every event carries headers: event type, producing service, correlation id and W3C
//!   `traceparent` (see [`crate::trace`]).
//!
//! Weaker settings are refused at start-up unless the loudly named opt-in is set (R4).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::DeliveryFuture;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, ConfigError};
use crate::health::HealthState;
use crate::service::ServiceSpec;
use crate::topic::TopicSpec;
use crate::trace;

/// Header names backbone puts on every event.
pub mod headers {
    /// The event's type name (`OrderCreated`).
    pub const EVENT_TYPE: &str = "backbone-event-type";
    /// The service that produced the event.
    pub const PRODUCER: &str = "backbone-producer";
    /// The correlation id of the request or event that caused this one.
    pub const CORRELATION_ID: &str = "backbone-correlation-id";
    /// W3C trace context.
    pub const TRACEPARENT: &str = crate::trace::TRACEPARENT;
}

/// The health component name of the publisher.
pub const HEALTH_COMPONENT: &str = "publisher";

/// Where an acknowledged event was written: its partition and offset. It is also the consistency
/// token for read-your-writes: a reader that has applied this offset of this partition has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Delivery {
    /// The partition.
    pub partition: i32,
    /// The offset within the partition.
    pub offset: i64,
}

impl fmt::Display for Delivery {
    /// `partition:offset`, the consistency token's text form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.partition, self.offset)
    }
}

/// An event to publish: its type, key, payload and any extra headers.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    event_type: &'a str,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    extra_headers: &'a [(&'a str, &'a [u8])],
    partition: Option<i32>,
}

impl<'a> Outgoing<'a> {
    /// An event of type `event_type` with `key` (the entity id: same key, same partition, in order)
    /// and `payload`.
    pub fn new(event_type: &'a str, key: &'a [u8], payload: &'a [u8]) -> Self {
        Self { event_type, key: Some(key), payload: Some(payload), extra_headers: &[], partition: None }
    }

    /// A tombstone: deletes `key` from a compacted topic.
    pub fn tombstone(event_type: &'a str, key: &'a [u8]) -> Self {
        Self { event_type, key: Some(key), payload: None, extra_headers: &[], partition: None }
    }

    /// An event without a key (spread over partitions; no order between events).
    pub fn unkeyed(event_type: &'a str, payload: &'a [u8]) -> Self {
        Self { event_type, key: None, payload: Some(payload), extra_headers: &[], partition: None }
    }

    /// Extra headers, after backbone's own.
    pub fn headers(mut self, headers: &'a [(&'a str, &'a [u8])]) -> Self {
        self.extra_headers = headers;
        self
    }

    /// Writes to `partition` rather than to the key's (murmur2) partition: for a changelog that
    /// must sit beside the partition it follows (the running totals' snapshot,
    /// [`crate::sourcing`]). Order then holds per key within that partition only.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Why a publish failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The service does not own the topic: only its owner writes it.
    #[error("service `{service}` may not publish to `{topic}`: it is owned by service `{owner}`")]
    NotOwner {
        /// The publishing service.
        service: String,
        /// The topic.
        topic: String,
        /// Its owner.
        owner: String,
    },
    /// The broker refused the service's principal (an ACL): not retried, not retriable.
    #[error("not authorized to publish to `{topic}`: {code}")]
    Unauthorized {
        /// The topic.
        topic: String,
        /// Kafka's error code.
        code: RDKafkaErrorCode,
    },
    /// The broker did not acknowledge within the delivery timeout (retries included). Retriable:
    /// the event may or may not have been written.
    #[error("publishing to `{topic}` was not acknowledged within {timeout:?}")]
    TimedOut {
        /// The topic.
        topic: String,
        /// The delivery timeout.
        timeout: Duration,
    },
    /// The broker rejected the event.
    #[error("publishing to `{topic}` failed: {code}")]
    Rejected {
        /// The topic.
        topic: String,
        /// Kafka's error code.
        code: RDKafkaErrorCode,
    },
    /// The publisher is shut down.
    #[error("the publisher is closed")]
    Closed,
    /// The producer could not be created or failed fatally.
    #[error("producer failure: {0}")]
    Client(String),
    /// The configuration weakens durability without the opt-in (R4).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The event's schema was refused (it breaks its subject's compatibility rule), or the registry
    /// could not be asked, or the event does not fit its schema. Nothing was produced.
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
}

impl PublishError {
    /// Whether publishing the same event again may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::TimedOut { .. } => true,
            Self::Rejected { code, .. } => is_retriable_code(*code),
            Self::Schema(e) => e.is_retriable(),
            _ => false,
        }
    }

    /// Whether the event was refused for its size: larger than the producer's `message.max.bytes`
    /// (refused locally, before sending) or than the topic's `max.message.bytes` (refused by the
    /// broker). Publishing the same event again fails the same way; a smaller one may succeed.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            Self::Rejected {
                code: RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge,
                ..
            }
        )
    }

    /// Whether, on a transactional publisher, the error means the open transaction cannot commit:
    /// it must be aborted (or the producer was fenced or failed fatally), and nothing published in
    /// it any more will be written. Retrying inside the same transaction cannot help.
    pub(crate) fn breaks_transaction(&self) -> bool {
        use RDKafkaErrorCode as C;
        match self {
            Self::Rejected { code, .. } | Self::Unauthorized { code, .. } => matches!(
                code,
                // librdkafka refuses to enqueue once the transaction must abort (`State`) or the
                // producer failed fatally (`Fatal`, mapped to its cause where known); an abort purges
                // what was queued or in flight.
                C::State
                    | C::Fatal
                    | C::Fenced
                    | C::PurgeQueue
                    | C::PurgeInflight
                    | C::InvalidProducerEpoch
                    | C::ProducerFenced
                    | C::InvalidTransactionalState
                    | C::InvalidProducerIdMapping
                    | C::TransactionCoordinatorFenced
                    | C::TransactionalIdAuthorizationFailed
                    | C::UnknownProducerId
                    | C::OutOfOrderSequenceNumber
            ),
            Self::Client(_) => true,
            _ => false,
        }
    }

    fn from_kafka(topic: &str, timeout: Duration, e: KafkaError) -> Self {
        let topic = topic.to_owned();
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::MessageTimedOut) => Self::TimedOut { topic, timeout },
            Some(
                code @ (RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed),
            ) => Self::Unauthorized { topic, code },
            Some(code) => Self::Rejected { topic, code },
            None => Self::Client(e.to_string()),
        }
    }
}

fn is_retriable_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageTimedOut
            | C::RequestTimedOut
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::NotLeaderForPartition
            | C::LeaderNotAvailable
            | C::BrokerNotAvailable
            | C::NetworkException
            | C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::QueueFull
            | C::UnknownTopicOrPartition
    )
}

/// The producer's context: reports client-level errors (all brokers down …) as degraded health.
pub(crate) struct PublishContext {
    health: HealthState,
}

impl ClientContext for PublishContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "producer error");
        if matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::AllBrokersDown)) {
            self.health.degrade(HEALTH_COMPONENT, format!("all brokers are down: {reason}"));
        }
    }
}

/// The future of one [`Publisher::publish`]: resolves once the broker has acknowledged the event.
///
/// Small when the event was enqueued at call time (the usual case), so holding many in flight is
/// cheap; only a publish that has to wait for its turn or for room carries a boxed state.
#[must_use = "a publish is enqueued at call time, but only awaiting it tells whether it was written"]
pub struct Publish<'a> {
    publisher: &'a Publisher,
    topic: &'a TopicSpec,
    state: PublishState<'a>,
}

type Waiting<'a> =
    Pin<Box<dyn Future<Output = Result<(DeliveryFuture, OwnedSemaphorePermit), PublishError>> + Send + 'a>>;

enum PublishState<'a> {
    /// Handed to librdkafka; the permit is held until the broker answers.
    Enqueued { delivery: DeliveryFuture, _permit: OwnedSemaphorePermit },
    /// Waiting for our turn or for room.
    Waiting(Waiting<'a>),
    /// Refused before enqueueing (taken when reported).
    Failed(Option<Box<PublishError>>),
}

impl fmt::Debug for Publish<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            PublishState::Enqueued { .. } => "enqueued",
            PublishState::Waiting(_) => "waiting",
            PublishState::Failed(_) => "failed",
        };
        f.debug_struct("Publish").field("topic", &self.topic.name()).field("state", &state).finish()
    }
}

impl Future for Publish<'_> {
    type Output = Result<Delivery, PublishError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                PublishState::Failed(e) => {
                    return Poll::Ready(Err(*e
                        .take()
                        .expect("a publish future is not polled after completion")));
                }
                PublishState::Waiting(w) => match w.as_mut().poll(cx) {
                    Poll::Ready(Ok((delivery, permit))) => {
                        this.state = PublishState::Enqueued { delivery, _permit: permit };
                    }
                    Poll::Ready(Err(e)) => this.state = PublishState::Failed(Some(Box::new(e))),
                    Poll::Pending => return Poll::Pending,
                },
                PublishState::Enqueued { delivery, .. } => {
                    let result = std::task::ready!(Pin::new(delivery).poll(cx));
                    let inner = &*this.publisher.inner;
                    return Poll::Ready(match result {
                        Ok(Ok(d)) => {
                            inner.health.recover(HEALTH_COMPONENT);
                            Ok(Delivery { partition: d.partition, offset: d.offset })
                        }
                        Ok(Err((e, _))) => Err(this.publisher.failed(this.topic, e)),
                        Err(_canceled) => Err(PublishError::Closed),
                    });
                }
            }
        }
    }
}

/// What a publish captures from its caller at call time.
struct Context {
    /// The correlation id in scope, if any; otherwise the trace id (in `traceparent`) is used.
    correlation: Option<String>,
    traceparent: [u8; 55],
}

impl Context {
    fn correlation(&self) -> &[u8] {
        self.correlation.as_deref().map_or(&self.traceparent[3..35], str::as_bytes)
    }
}

/// Keeps publishes in call order: each call takes a ticket at once; a publish enqueues only on its
/// turn, so the order in which futures are polled does not matter.
#[derive(Default)]
struct Turns {
    state: Mutex<TurnState>,
}

#[derive(Default)]
struct TurnState {
    next_ticket: u64,
    next_to_send: u64,
    /// Tickets whose futures were dropped before their turn.
    abandoned: BTreeSet<u64>,
    /// Publishes waiting for their turn, by ticket: a release wakes only the next one.
    waiting: HashMap<u64, std::task::Waker>,
}

impl Turns {
    fn lock(&self) -> std::sync::MutexGuard<'_, TurnState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Ticket<'_> {
        let mut s = self.lock();
        let number = s.next_ticket;
        s.next_ticket += 1;
        Ticket { turns: self, number, finished: false }
    }

    fn is_turn(&self, ticket: u64) -> bool {
        self.lock().next_to_send == ticket
    }

    async fn wait_for(&self, ticket: u64) {
        /// Forgets the waker if the wait is dropped before its turn.
        struct Waiting<'a>(&'a Turns, u64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.lock().waiting.remove(&self.1);
            }
        }
        let _waiting = Waiting(self, ticket);
        std::future::poll_fn(|cx| {
            let mut s = self.lock();
            if s.next_to_send == ticket {
                return Poll::Ready(());
            }
            match s.waiting.entry(ticket) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    if !e.get().will_wake(cx.waker()) {
                        e.insert(cx.waker().clone());
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(cx.waker().clone());
                }
            }
            Poll::Pending
        })
        .await;
    }

    /// Ends `ticket`'s turn (sent, failed or abandoned) and passes the turn on.
    fn release(&self, ticket: u64) {
        let mut s = self.lock();
        if s.next_to_send != ticket {
            s.abandoned.insert(ticket);
            return;
        }
        s.next_to_send += 1;
        loop {
            let next = s.next_to_send;
            if !s.abandoned.remove(&next) {
                break;
            }
            s.next_to_send += 1;
        }
        let next_to_send = s.next_to_send;
        let next = s.waiting.remove(&next_to_send);
        drop(s);
        if let Some(waker) = next {
            waker.wake();
        }
    }
}

/// A place in line; giving it up (drop) passes the turn on.
struct Ticket<'a> {
    turns: &'a Turns,
    number: u64,
    finished: bool,
}

impl Ticket<'_> {
    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.turns.release(self.number);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

struct Inner {
    service: String,
    producer: FutureProducer<PublishContext>,
    owned: HashMap<String, TopicSpec>,
    permits: Arc<Semaphore>,
    turns: Turns,
    capacity: u32,
    delivery_timeout: Duration,
    health: HealthState,
    closed: AtomicBool,
    /// Whether the producer is transactional ([`Publisher::transactional`]).
    transactional: bool,
    /// The producer's `message.max.bytes`: larger events are refused before they are sent.
    max_message_bytes: usize,
    registry: crate::schema::Registry,
    /// Subjects of the event types the service declared, by (topic, record full name).
    subjects: HashMap<(String, String), String>,
}

/// Publishes a service's events, durably. Cheap to clone: clones share one producer.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher").field("service", &self.inner.service).finish_non_exhaustive()
    }
}

/// How long a transaction may stay open before the broker aborts it (a dead instance's open
/// transaction blocks `read_committed` readers of its outputs this long at most).
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// How many publishes may be in flight: `publish_queue`, kept within what librdkafka's queue takes.
fn publish_capacity(config: &Config) -> u32 {
    u32::try_from(config.publish_queue.clamp(1, 10_000_000)).unwrap_or(10_000_000)
}

/// The librdkafka producer properties backbone sets, before `Config::producer_overrides`.
pub fn producer_config(config: &Config, service: &str) -> rdkafka::ClientConfig {
    let mut c = config.client_config(service);
    let capacity = publish_capacity(config);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "5")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", config.linger.as_millis().to_string())
        .set("message.timeout.ms", config.delivery_timeout.as_millis().to_string())
        // One more than the publishers may have in flight, so librdkafka's queue never refuses.
        .set("queue.buffering.max.messages", (capacity + 1).to_string());
    for (k, v) in &config.producer_overrides {
        c.set(k, v);
    }
    // librdkafka refuses idempotence beside acks≠all, more than 5 in flight or no retries. When the
    // opt-in weakens one of those and idempotence was not set explicitly, it goes too.
    if config.allow_weak_durability
        && !config.producer_overrides.contains_key("enable.idempotence")
        && config.check_producer_durability_strict().is_err()
    {
        c.set("enable.idempotence", "false");
    }
    c
}

impl Publisher {
    /// A publisher for `spec`'s service. Refuses configurations that weaken durability (R4).
    pub fn new(config: &Config, spec: &ServiceSpec) -> Result<Self, PublishError> {
        Self::with_health(config, spec, HealthState::default())
    }

    /// Like [`Publisher::new`], reporting into a shared [`HealthState`].
    pub fn with_health(
        config: &Config,
        spec: &ServiceSpec,
        health: HealthState,
    ) -> Result<Self, PublishError> {
        Self::build(config, spec, health, None)
    }

    /// A transactional publisher with `transactional_id`: what it publishes is visible to
    /// `read_committed` readers only once its transaction commits (used by the exactly-once
    /// consumer). Initializes transactions (fencing earlier producers with the same id) and begins
    /// the first one.
    pub async fn transactional(
        config: &Config,
        spec: &ServiceSpec,
        health: HealthState,
        transactional_id: &str,
    ) -> Result<Self, PublishError> {
        let publisher = Self::build(config, spec, health, Some(transactional_id))?;
        let producer = publisher.inner.producer.clone();
        let timeout = config.delivery_timeout;
        tokio::task::spawn_blocking(move || {
            producer.init_transactions(timeout)?;
            producer.begin_transaction()
        })
        .await
        .map_err(|e| PublishError::Client(e.to_string()))?
        .map_err(|e| PublishError::Client(format!("starting transactions: {e}")))?;
        Ok(publisher)
    }

    /// The producer, for transaction control.
    pub(crate) fn producer(&self) -> &FutureProducer<PublishContext> {
        &self.inner.producer
    }

    /// Whether this publisher is transactional ([`Publisher::transactional`]): what it publishes
    /// belongs to the open transaction, and a failed write there means the transaction must abort.
    pub(crate) fn is_transactional(&self) -> bool {
        self.inner.transactional
    }

    /// The producer's `message.max.bytes` (key, payload and headers together): librdkafka refuses a
    /// larger event before sending it.
    pub(crate) fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes
    }

    fn build(
        config: &Config,
        spec: &ServiceSpec,
        health: HealthState,
        transactional_id: Option<&str>,
    ) -> Result<Self, PublishError> {
        config.check_producer_durability()?;
        if config.allow_weak_durability {
            tracing::warn!(
                service = spec.name(),
                "BACKBONE_UNSAFE_ALLOW_WEAK_DURABILITY is set: acknowledged events may be lost or duplicated"
            );
        }
        let mut client = producer_config(config, spec.name());
        if let Some(id) = transactional_id {
            // A dead instance's open transaction holds back what read_committed readers see (the
            // last stable offset) until the broker aborts it: keep that short. Deliveries must fit
            // inside a transaction.
            let timeout = TRANSACTION_TIMEOUT.as_millis();
            let delivery = config.delivery_timeout.as_millis().min(timeout);
            client
                .set("transactional.id", id)
                .set("transaction.timeout.ms", timeout.to_string())
                .set("message.timeout.ms", delivery.to_string());
        }
        let producer: FutureProducer<PublishContext> = client
            .create_with_context(PublishContext { health: health.clone() })
            .map_err(|e| PublishError::Client(e.to_string()))?;
        let capacity = publish_capacity(config);
        Ok(Self {
            inner: Arc::new(Inner {
                service: spec.name().to_owned(),
                producer,
                owned: spec.owned_topics().iter().map(|t| (t.name().to_owned(), t.clone())).collect(),
                permits: Arc::new(Semaphore::new(capacity as usize)),
                turns: Turns::default(),
                capacity,
                delivery_timeout: config.delivery_timeout,
                health,
                closed: AtomicBool::new(false),
                transactional: transactional_id.is_some(),
                max_message_bytes: client
                    .get("message.max.bytes")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES),
                registry: crate::schema::Registry::new(&config.schema_registry_url)?,
                subjects: spec
                    .events()
                    .iter()
                    .map(|e| ((e.topic.clone(), e.record.clone()), e.subject.clone()))
                    .collect(),
            }),
        })
    }

    /// The publishing service's name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The health this publisher reports into.
    pub fn health(&self) -> &HealthState {
        &self.inner.health
    }

    /// The schema registry Avro events go through (shared with the service's consumers).
    pub fn registry(&self) -> &crate::schema::Registry {
        &self.inner.registry
    }

    /// Publishes an Avro event: encodes `event` in the wire format under its subject (declared with
    /// [`crate::Service::event`], else `<topic>-value`) and publishes it as [`publish`](Self::publish)
    /// does. The first publish of a type registers its schema; a schema that breaks the subject's
    /// compatibility rule is refused with [`PublishError::Schema`] and nothing is produced (R10).
    ///
    /// Call order (see [`publish`](Self::publish)) holds from the moment the event is encoded: the
    /// first publish of a type awaits its registration before taking its place in line.
    pub async fn publish_event<T: crate::schema::AvroEvent>(
        &self,
        topic: &TopicSpec,
        key: &[u8],
        event: &T,
    ) -> Result<Delivery, PublishError> {
        self.admit(topic)?;
        let record = crate::schema::full_name(T::schema());
        let subject = self
            .inner
            .subjects
            .get(&(topic.name().to_owned(), record.clone()))
            .cloned()
            .unwrap_or_else(|| crate::schema::SubjectStrategy::TopicName.subject(topic.name(), &record));
        let encoder = self.inner.registry.encoder::<T>(&subject).await?;
        let payload = encoder.encode(event)?;
        let event_type = record.rsplit('.').next().unwrap_or(&record);
        self.publish(topic, Outgoing::new(event_type, key, &payload)).await
    }

    /// Publishes `event` to `topic` and resolves once the broker has acknowledged it (`acks=all`),
    /// with where it was written. Waits, rather than failing, while `publish_queue` publishes are
    /// already in flight.
    ///
    /// Events are enqueued in **call order**, however the returned futures are later awaited: the
    /// call takes its place in line (and captures the correlation id and trace context) at once, and
    /// enqueues the event right away when there is room. So `publish(a); publish(b)` with the same key
    /// writes `a` before `b` even when both futures are awaited together (`join_all`,
    /// `FuturesUnordered`). A future dropped before its turn gives its place up.
    pub fn publish<'a>(&'a self, topic: &'a TopicSpec, event: Outgoing<'a>) -> Publish<'a> {
        let inner = &*self.inner;
        let state = match self.admit(topic) {
            Err(e) => PublishState::Failed(Some(Box::new(e))),
            Ok(()) => {
                // Without a correlation id in scope, the event starts a causal chain of its own: its
                // trace id names it.
                let trace = trace::current_context().unwrap_or_else(trace::TraceContext::new_root);
                let context =
                    Context { correlation: trace::correlation_id(), traceparent: trace.header_bytes() };
                let mut ticket = inner.turns.take();
                // The fast path, at call time: our turn and room in the queue.
                let fast = if inner.turns.is_turn(ticket.number)
                    && let Ok(permit) = inner.permits.clone().try_acquire_owned()
                {
                    match self.enqueue(topic, &event, &context) {
                        Ok(Some(delivery)) => Some(PublishState::Enqueued { delivery, _permit: permit }),
                        Ok(None) => None, // librdkafka's byte bound: wait below
                        Err(e) => Some(PublishState::Failed(Some(Box::new(e)))),
                    }
                } else {
                    None
                };
                match fast {
                    Some(state) => {
                        ticket.finish();
                        state
                    }
                    None => {
                        PublishState::Waiting(Box::pin(self.enqueue_in_turn(topic, event, context, ticket)))
                    }
                }
            }
        };
        Publish { publisher: self, topic, state }
    }

    /// The slow path: wait for our turn and for room, then enqueue.
    async fn enqueue_in_turn<'a>(
        &'a self,
        topic: &'a TopicSpec,
        event: Outgoing<'a>,
        context: Context,
        mut ticket: Ticket<'a>,
    ) -> Result<(DeliveryFuture, OwnedSemaphorePermit), PublishError> {
        let inner = &*self.inner;
        inner.turns.wait_for(ticket.number).await;
        let permit = inner.permits.clone().acquire_owned().await.map_err(|_| PublishError::Closed)?;
        let deadline = tokio::time::Instant::now() + inner.delivery_timeout;
        loop {
            match self.enqueue(topic, &event, &context) {
                Ok(Some(future)) => {
                    ticket.finish();
                    return Ok((future, permit));
                }
                // Only the byte bound (queue.buffering.max.kbytes) can be hit here; the count bound is
                // held by the permits. librdkafka offers no event for free space, so back off briefly,
                // keeping our turn.
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(None) => {
                    ticket.finish();
                    return Err(PublishError::TimedOut {
                        topic: topic.name().to_owned(),
                        timeout: inner.delivery_timeout,
                    });
                }
                Err(e) => {
                    ticket.finish();
                    return Err(e);
                }
            }
        }
    }

    /// Checks, at call time, that the publisher is open and the service owns the topic.
    fn admit(&self, topic: &TopicSpec) -> Result<(), PublishError> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(PublishError::Closed);
        }
        if !inner.owned.contains_key(topic.name()) {
            return Err(PublishError::NotOwner {
                service: inner.service.clone(),
                topic: topic.name().to_owned(),
                owner: topic.owner().to_owned(),
            });
        }
        Ok(())
    }

    /// Hands the event to librdkafka: `Ok(None)` if its queue is full (nothing enqueued).
    fn enqueue(
        &self,
        topic: &TopicSpec,
        event: &Outgoing<'_>,
        context: &Context,
    ) -> Result<Option<DeliveryFuture>, PublishError> {
        let inner = &*self.inner;
        let mut headers = OwnedHeaders::new_with_capacity(4 + event.extra_headers.len())
            .insert(Header { key: headers::EVENT_TYPE, value: Some(event.event_type) })
            .insert(Header { key: headers::PRODUCER, value: Some(inner.service.as_str()) })
            .insert(Header { key: headers::CORRELATION_ID, value: Some(context.correlation()) })
            .insert(Header { key: headers::TRACEPARENT, value: Some(&context.traceparent[..]) });
        for (k, v) in event.extra_headers {
            headers = headers.insert(Header { key: k, value: Some(*v) });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic.name()).headers(headers);
        if let Some(key) = event.key {
            record = record.key(key);
        }
        if let Some(payload) = event.payload {
            record = record.payload(payload);
        }
        if let Some(partition) = event.partition {
            record = record.partition(partition);
        }
        match inner.producer.send_result(record) {
            Ok(future) => Ok(Some(future)),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Ok(None),
            Err((e, _)) => Err(self.failed(topic, e)),
        }
    }

    fn failed(&self, topic: &TopicSpec, e: KafkaError) -> PublishError {
        use rdkafka::producer::Producer as _;
        // The idempotent producer turns some errors (a denied write among them) into a fatal one:
        // the delivery report then says only `Fatal`; the client knows the underlying code.
        let e = match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Fatal) => match self.inner.producer.client().fatal_error() {
                Some((code, _)) => KafkaError::MessageProduction(code),
                None => e,
            },
            _ => e,
        };
        let err = PublishError::from_kafka(topic.name(), self.inner.delivery_timeout, e);
        if err.is_retriable() {
            self.inner.health.degrade(HEALTH_COMPONENT, err.to_string());
        }
        err
    }

    /// Stops accepting publishes, waits up to `timeout` for those in flight to be acknowledged, and
    /// flushes the producer. Everything acknowledged to a caller is on the brokers before this returns.
    pub async fn close(&self, timeout: Duration) -> Result<(), PublishError> {
        let inner = &*self.inner;
        inner.closed.store(true, Ordering::Release);
        let started = std::time::Instant::now();
        let drained = tokio::time::timeout(timeout, inner.permits.acquire_many(inner.capacity)).await;
        let producer = inner.producer.clone();
        // One budget for both: draining and flushing.
        let remaining = timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        let flushed = tokio::task::spawn_blocking(move || producer.flush(remaining))
            .await
            .map_err(|e| PublishError::Client(e.to_string()))?;
        match (drained, flushed) {
            (Ok(_), Ok(())) => Ok(()),
            (_, Err(e)) => Err(PublishError::Client(format!("flush on close: {e}"))),
            (Err(_), Ok(())) => {
                Err(PublishError::Client(format!("publishes still in flight after {timeout:?}")))
            }
        }
    }
}

/// The open transaction of an exactly-once consumer (see [`crate::consume::Consumer::exactly_once`]),
/// lent to [`crate::consume::ConsumerHooks::before_commit`] while the consumer commits: what is
/// published here commits with the consumed offsets, or not at all.
pub struct Transaction<'a> {
    publisher: &'a Publisher,
}

impl fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction").field("service", &self.publisher.inner.service).finish()
    }
}

impl<'a> Transaction<'a> {
    /// The transaction `publisher` (a transactional one) has open.
    pub(crate) fn new(publisher: &'a Publisher) -> Self {
        Self { publisher }
    }

    /// Adds `event` to the transaction. Synchronous: it enqueues the event and returns; the commit
    /// waits for its acknowledgement, and a write that fails aborts the whole transaction (the
    /// consumer then handles its events again). Fails at once if the service does not own `topic`.
    pub fn publish(&self, topic: &TopicSpec, event: Outgoing<'_>) -> Result<(), PublishError> {
        let publisher = self.publisher;
        publisher.admit(topic)?;
        let trace = trace::current_context().unwrap_or_else(trace::TraceContext::new_root);
        let context = Context { correlation: trace::correlation_id(), traceparent: trace.header_bytes() };
        let deadline = std::time::Instant::now() + publisher.inner.delivery_timeout;
        loop {
            // The delivery future may go: the commit flushes, and fails if a write did.
            match publisher.enqueue(topic, &event, &context)? {
                Some(_delivery) => return Ok(()),
                // librdkafka's byte bound (no event says when there is room): back off briefly.
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                None => {
                    return Err(PublishError::TimedOut {
                        topic: topic.name().to_owned(),
                        timeout: publisher.inner.delivery_timeout,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(code: RDKafkaErrorCode) -> PublishError {
        PublishError::Rejected { topic: "t".into(), code }
    }

    #[test]
    fn size_and_transaction_errors_are_told_apart() {
        use RDKafkaErrorCode as C;
        // librdkafka's local refusal and the broker's share code 10; a batch over the topic's limit is 18.
        let local = PublishError::from_kafka(
            "t",
            Duration::from_secs(1),
            KafkaError::MessageProduction(C::MessageSizeTooLarge),
        );
        assert!(local.is_too_large() && !local.is_retriable(), "{local}");
        assert!(rejected(C::MessageBatchTooLarge).is_too_large());
        assert!(!rejected(C::NotEnoughReplicas).is_too_large());
        assert!(
            !PublishError::TimedOut { topic: "t".into(), timeout: Duration::from_secs(1) }.is_too_large()
        );

        for code in [C::State, C::Fatal, C::PurgeQueue, C::InvalidProducerEpoch, C::ProducerFenced] {
            assert!(rejected(code).breaks_transaction(), "{code:?}");
        }
        assert!(!rejected(C::MessageSizeTooLarge).breaks_transaction());
        assert!(!PublishError::Closed.breaks_transaction());
    }
}
