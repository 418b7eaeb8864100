//! The [`Publisher`]: a service's durable, idempotent producer, and the settings it runs with.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::DeliveryFuture;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::headers;
use crate::health::HealthState;
use crate::service::ServiceSpec;
use crate::topic::TopicSpec;
use crate::trace;

use super::error::PublishError;
use super::future::{Publish, PublishState};
use super::order::{Context, Ticket, Turns};
use super::outgoing::{Delivery, Metadata, Outgoing};
use super::shared::{Inner, PublishContext};

/// Publishes a service's events, durably. Cheap to clone: clones share one producer.
#[derive(Clone)]
pub struct Publisher {
    pub(super) inner: Arc<Inner>,
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

    /// The configured delivery timeout (`BACKBONE_DELIVERY_TIMEOUT_MS`): how long a publish may wait
    /// to be enqueued and acknowledged.
    pub(crate) fn delivery_timeout(&self) -> Duration {
        self.inner.delivery_timeout
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
        let mut client = crate::observe::with_statistics(producer_config(config, spec.name()));
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
            .create_with_context(PublishContext {
                health: health.clone(),
                gauges: (
                    health.metrics().gauge("backbone_producer_queue_messages", &[]),
                    health.metrics().gauge("backbone_producer_throttle_seconds", &[]),
                ),
            })
            .map_err(|e| PublishError::Client(e.to_string()))?;
        let capacity = publish_capacity(config);
        Ok(Self {
            inner: Arc::new(Inner {
                service: spec.name().to_owned(),
                principal: config.security.principal(),
                producer,
                owned: spec.owned_topics().iter().map(|t| (t.name().to_owned(), t.clone())).collect(),
                permits: Arc::new(Semaphore::new(capacity as usize)),
                turns: Turns::default(),
                capacity,
                delivery_timeout: config.delivery_timeout,
                metrics: spec
                    .owned_topics()
                    .iter()
                    .map(|t| {
                        (t.name().to_owned(), crate::observe::PublishMetrics::new(health.metrics(), t.name()))
                    })
                    .collect(),
                health,
                closed: AtomicBool::new(false),
                transactional: transactional_id.is_some(),
                max_message_bytes: client
                    .get("message.max.bytes")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES),
                registry: crate::schema::Registry::for_config(config)?,
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
        let event_type = crate::schema::short_name(&record);
        self.publish(topic, Outgoing::new(event_type, key, &payload).schema_framed()).await
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
        let span = trace::publish_span(topic.name());
        let state = match self.admit(topic) {
            Err(e) => PublishState::Failed(Some(Box::new(e))),
            Ok(()) => {
                // Without a correlation id in scope, the event starts a causal chain of its own: its
                // trace id names it.
                let context = Context::current(&span);
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
        Publish { inner, topic, state, started: std::time::Instant::now(), span }
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
    pub(crate) fn admit(&self, topic: &TopicSpec) -> Result<(), PublishError> {
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
    pub(crate) fn enqueue(
        &self,
        topic: &TopicSpec,
        event: &Outgoing<'_>,
        context: &Context,
    ) -> Result<Option<DeliveryFuture>, PublishError> {
        let inner = &*self.inner;
        let mut headers = metadata_headers(topic.name(), event, context, &inner.service);
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
            Err((e, _)) => Err(inner.failed(topic, e)),
        }
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

/// Backbone's metadata headers for `event` on `topic` (see [`Outgoing`]), with room for its extra
/// headers.
pub(super) fn metadata_headers(
    topic: &str,
    event: &Outgoing<'_>,
    context: &Context,
    service: &str,
) -> OwnedHeaders {
    let full = event.metadata == Metadata::Full;
    let mut headers = OwnedHeaders::new_with_capacity(4 + event.extra_headers.len());
    // The type is known without the header when the payload names its schema, or when the topic is
    // named for it and the payload does not look framed (a reader then trusts the topic's name).
    let type_known = match event.metadata {
        Metadata::Full => false,
        Metadata::SchemaFramed => true,
        Metadata::Minimal => {
            event.payload.is_none_or(|p| crate::schema::wire::split(p).is_err())
                && crate::topic::is_declared_event_type(topic, event.event_type)
        }
    };
    if !type_known {
        headers = headers.insert(Header { key: headers::EVENT_TYPE, value: Some(event.event_type) });
    }
    if full {
        headers = headers.insert(Header { key: headers::PRODUCER, value: Some(service) });
    }
    if full || context.correlation_differs() {
        headers = headers.insert(Header { key: headers::CORRELATION_ID, value: Some(context.correlation()) });
    }
    headers.insert(Header { key: headers::TRACEPARENT, value: Some(&context.traceparent[..]) })
}
