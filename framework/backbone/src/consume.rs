//! Consuming: a handler subscribed to a topic in a consumer group, at least once.
//!
//! This is the first cut of the consumer runtime; what it guarantees today:
//!
//! - **Consumer groups** named `<service>.<handler>` (overridable), with the cooperative-sticky
//!   assignor: instances of a service share the partitions.
//! - **At least once**: an offset is stored only after its handler succeeded (or the event was
//!   dead-lettered), never past an event that has not; librdkafka commits stored offsets
//!   periodically and on revocation, and [`Consumer::run`] commits synchronously on shutdown.
//! - **Order**: events are handled one at a time, so order per partition holds. (Concurrency across
//!   partitions comes next, with per-partition queues.)
//! - **Retries**: a retriable [`HandlerError`] is retried with exponential backoff up to
//!   `max_attempts`; a panicking handler is an error, not a dead process.
//! - **Dead letters**: an event whose handler fails permanently, or past its retry budget, is
//!   published to the service's dead-letter topic for its source ([`dead_letter_topic`]) with
//!   headers naming its origin, and the partition moves on. If the dead-letter write fails, the offset
//!   is not stored, health reports degraded, and the write is retried: nothing is dropped silently.
//! - **Graceful shutdown**: stop fetching, finish the event in hand, commit, leave the group.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt as _;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message as _};

use crate::config::Config;
use crate::handler::{BoxedHandler, HandlerContext, HandlerError, IncomingEvent};
use crate::publish::{Outgoing, Publisher};
use crate::service::ServiceSpec;
use crate::topic::{TopicError, TopicSpec};

/// Header names on a dead-lettered event.
pub mod dead_letter_headers {
    /// The topic the event came from.
    pub const ORIGIN_TOPIC: &str = "backbone-dlq-origin-topic";
    /// Its partition.
    pub const ORIGIN_PARTITION: &str = "backbone-dlq-origin-partition";
    /// Its offset.
    pub const ORIGIN_OFFSET: &str = "backbone-dlq-origin-offset";
    /// Its key (also the dead letter's key).
    pub const ORIGIN_KEY: &str = "backbone-dlq-origin-key";
    /// What kind of failure (`undecodable`, `handler`, `panic`, …).
    pub const ERROR_KIND: &str = "backbone-dlq-error-kind";
    /// The error message.
    pub const ERROR_MESSAGE: &str = "backbone-dlq-error-message";
    /// The handler that failed.
    pub const HANDLER: &str = "backbone-dlq-handler";
    /// How many times it was tried.
    pub const ATTEMPTS: &str = "backbone-dlq-attempts";
}

/// The dead-letter topic `service` owns for events it could not handle from `source`:
/// `<service>.private.dlq.<source>`, compacted never, kept 14 days.
pub fn dead_letter_topic(service: &str, source: &TopicSpec) -> Result<TopicSpec, TopicError> {
    TopicSpec::private(service, format!("dlq.{}", source.name()))
        .partitions(1)
        .replication(source.replication())
        .min_insync_replicas(source.min_insync_replicas())
        .retention(Duration::from_secs(14 * 24 * 3600))
        .build()
}

/// Why the consumer stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The consumer could not be created or subscribed.
    #[error("consumer for `{topic}`: {reason}")]
    Client {
        /// The topic.
        topic: String,
        /// librdkafka's words.
        reason: String,
    },
    /// The service's declaration does not allow this subscription (or its dead-letter topic).
    #[error(transparent)]
    Topic(#[from] TopicError),
}

impl ConsumeError {
    /// Whether starting again may help.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

/// Retry policy for retriable handler errors.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub initial_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
}

impl Retry {
    /// The backoff after `current`: doubled, capped at `max_backoff`.
    fn next_backoff(&self, current: Duration) -> Duration {
        (current * 2).min(self.max_backoff)
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// A handler subscribed to one topic.
pub struct Consumer<S> {
    service: String,
    topic: TopicSpec,
    dead_letters: TopicSpec,
    handler: BoxedHandler<S>,
    state: S,
    publisher: Publisher,
    retry: Retry,
    shutdown_budget: Duration,
    consumer: StreamConsumer,
}

impl<S> std::fmt::Debug for Consumer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("service", &self.service)
            .field("topic", &self.topic.name())
            .field("handler", &self.handler.name())
            .finish_non_exhaustive()
    }
}

impl<S: Clone + Send + Sync + 'static> Consumer<S> {
    /// Subscribes `handler` to `topic` for `spec`'s service, in group `<service>.<handler>` (or
    /// `group`). The service must be allowed to read `topic` and must own its dead-letter topic
    /// ([`dead_letter_topic`]); `publisher` writes the dead letters.
    pub fn new(
        config: &Config,
        spec: &ServiceSpec,
        topic: &TopicSpec,
        handler: BoxedHandler<S>,
        state: S,
        publisher: Publisher,
        group: Option<&str>,
    ) -> Result<Self, ConsumeError> {
        crate::topic::check_may_read(spec.name(), topic)?;
        let dead_letters = dead_letter_topic(spec.name(), topic)?;
        if spec.owned(dead_letters.name()).is_none() {
            return Err(TopicError::InvalidTopic {
                topic: dead_letters.name().to_owned(),
                reason: format!(
                    "service `{}` consumes `{}` but does not declare its dead-letter topic; add \
                     `.owns(&dead_letter_topic(\"{}\", &topic)?)`",
                    spec.name(),
                    topic.name(),
                    spec.name()
                ),
            }
            .into());
        }
        let group = group.map_or_else(|| format!("{}.{}", spec.name(), handler.name()), str::to_owned);
        let client = |e: rdkafka::error::KafkaError| ConsumeError::Client {
            topic: topic.name().to_owned(),
            reason: e.to_string(),
        };
        let consumer: StreamConsumer = config
            .client_config(spec.name())
            .set("group.id", &group)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(client)?;
        consumer.subscribe(&[topic.name()]).map_err(client)?;
        Ok(Self {
            service: spec.name().to_owned(),
            topic: topic.clone(),
            dead_letters,
            handler,
            state,
            publisher,
            retry: Retry::default(),
            shutdown_budget: config.shutdown_timeout,
            consumer,
        })
    }

    /// Uses `retry` for retriable handler errors.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Handles events until `shutdown` completes; then lets the event in hand finish within the
    /// shutdown budget (`BACKBONE_SHUTDOWN_TIMEOUT_MS`), commits and leaves the group.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumeError> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let message = tokio::select! {
                biased;
                () = &mut shutdown => break,
                message = self.consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(topic = self.topic.name(), error = %e, "consumer error");
                    continue;
                }
            };
            let handling = self.handle(&message);
            let mut handling = std::pin::pin!(handling);
            tokio::select! {
                () = &mut handling => {}
                () = &mut shutdown => {
                    // Shutting down with an event in hand: it gets the shutdown budget to finish. If it
                    // does not (a paused dead-letter write, a stuck handler), its offset is not stored
                    // and the next owner of the partition handles it again.
                    if tokio::time::timeout(self.shutdown_budget, handling).await.is_err() {
                        tracing::warn!(
                            topic = self.topic.name(),
                            partition = message.partition(),
                            offset = message.offset(),
                            "shutdown budget spent with an event in hand; it will be handled again"
                        );
                    }
                    break;
                }
            }
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is also an error here; not a loss.
            tracing::debug!(error = %e, "final commit");
        }
        // Dropping the consumer closes it: it leaves the group, so the others take over at once.
        Ok(())
    }

    async fn handle(&self, message: &BorrowedMessage<'_>) {
        let event = std::sync::Arc::new(IncomingEvent::from_message(message));
        let correlation = event
            .header(crate::publish::headers::CORRELATION_ID)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map_or_else(
                || format!("{}:{}:{}", event.topic(), event.partition(), event.offset()),
                str::to_owned,
            );
        let mut attempts = 0;
        let mut backoff = self.retry.initial_backoff;
        let failure = loop {
            attempts += 1;
            let cx =
                HandlerContext::new(event.clone(), self.state.clone()).with_publisher(self.publisher.clone());
            // Events the handler publishes carry the incoming event's correlation id.
            let call = crate::trace::with_correlation_id(correlation.clone(), self.handler.call(cx));
            let outcome = AssertUnwindSafe(call).catch_unwind().await.unwrap_or_else(|panic| {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".to_owned());
                Err(HandlerError::permanent(format!("handler panicked: {text}")).with_kind("panic"))
            });
            match outcome {
                Ok(()) => break None,
                Err(e) if e.is_retriable() && attempts < self.retry.max_attempts => {
                    tracing::warn!(handler = self.handler.name(), attempts, error = %e, "retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = self.retry.next_backoff(backoff);
                }
                Err(e) => break Some(e),
            }
        };
        if let Some(error) = failure {
            self.dead_letter(&event, &error, attempts).await;
        }
        if let Err(e) = self.consumer.store_offset_from_message(message) {
            tracing::warn!(error = %e, "storing an offset failed (the partition was probably revoked)");
        }
    }

    /// Writes the dead letter, retrying until it is written: the offset is not stored before.
    async fn dead_letter(&self, event: &IncomingEvent, error: &HandlerError, attempts: u32) {
        use dead_letter_headers as h;
        let partition = event.partition().to_string();
        let offset = event.offset().to_string();
        let attempts = attempts.to_string();
        let message = error.to_string();
        let key = event.key().unwrap_or_default();
        let headers: [(&str, &[u8]); 8] = [
            (h::ORIGIN_TOPIC, event.topic().as_bytes()),
            (h::ORIGIN_PARTITION, partition.as_bytes()),
            (h::ORIGIN_OFFSET, offset.as_bytes()),
            (h::ORIGIN_KEY, key),
            (h::ERROR_KIND, error.kind().as_bytes()),
            (h::ERROR_MESSAGE, message.as_bytes()),
            (h::HANDLER, self.handler.name().as_bytes()),
            (h::ATTEMPTS, attempts.as_bytes()),
        ];
        let payload = event.payload().unwrap_or_default();
        let component = format!("dead-letters:{}", self.dead_letters.name());
        let mut backoff = self.retry.initial_backoff;
        loop {
            let letter = Outgoing::new("DeadLetter", key, payload).headers(&headers);
            match self.publisher.publish(&self.dead_letters, letter).await {
                Ok(_) => {
                    tracing::warn!(topic = event.topic(), partition, offset, %message, "dead-lettered");
                    self.publisher.health().recover(&component);
                    return;
                }
                Err(e) => {
                    self.publisher.health().degrade(
                        &component,
                        format!(
                            "cannot write dead letter for {}:{}:{} ({e}); partition paused",
                            event.topic(),
                            partition,
                            offset
                        ),
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = self.retry.next_backoff(backoff);
                }
            }
        }
    }
}
