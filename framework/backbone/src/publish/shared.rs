//! What every clone of a [`Publisher`](super::Publisher) shares: the producer (with its context,
//! which reports client-level errors as health), the owned topics, the in-flight permits and turns;
//! and how a failed write is reported. Both the publisher and its [`Publish`](super::Publish)
//! futures use it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use tokio::sync::Semaphore;

use crate::health::HealthState;
use crate::topic::TopicSpec;

use super::HEALTH_COMPONENT;
use super::error::PublishError;
use super::order::Turns;

/// The producer's context: reports client-level errors (all brokers down …) as degraded health.
pub(crate) struct PublishContext {
    pub(super) health: HealthState,
    /// `backbone_producer_queue_messages` and `backbone_producer_throttle_seconds`.
    pub(super) gauges: (metrics::Gauge, metrics::Gauge),
}

impl ClientContext for PublishContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.gauges.0.set(statistics.msg_cnt as f64);
        // The brokers' average throttle time (ms) over the last interval, the largest of them.
        let throttle = statistics.brokers.values().filter_map(|b| b.throttle.as_ref()).map(|w| w.avg).max();
        self.gauges.1.set(throttle.unwrap_or(0) as f64 / 1000.0);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "producer error");
        if matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::AllBrokersDown)) {
            self.health.degrade(HEALTH_COMPONENT, format!("all brokers are down: {reason}"));
        }
    }
}

/// What the clones of one publisher share.
pub(super) struct Inner {
    pub(super) service: String,
    /// Who the brokers see ([`crate::config::Security::principal`]), named in refusals.
    pub(super) principal: String,
    pub(super) producer: FutureProducer<PublishContext>,
    pub(super) owned: HashMap<String, TopicSpec>,
    pub(super) permits: Arc<Semaphore>,
    pub(super) turns: Turns,
    pub(super) capacity: u32,
    pub(super) delivery_timeout: Duration,
    pub(super) health: HealthState,
    pub(super) closed: AtomicBool,
    /// Whether the producer is transactional ([`Publisher::transactional`](super::Publisher::transactional)).
    pub(super) transactional: bool,
    /// The producer's `message.max.bytes`: larger events are refused before they are sent.
    pub(super) max_message_bytes: usize,
    pub(super) registry: crate::schema::Registry,
    /// Subjects of the event types the service declared, by (topic, record full name).
    pub(super) subjects: HashMap<(String, String), String>,
    /// Counters and latency of each owned topic.
    pub(super) metrics: HashMap<String, crate::observe::PublishMetrics>,
}

impl Inner {
    /// The error a write to `topic` failed with, as the caller sees it; a retriable one also
    /// degrades the publisher's health.
    pub(super) fn failed(&self, topic: &TopicSpec, e: KafkaError) -> PublishError {
        use rdkafka::producer::Producer as _;
        // The idempotent producer turns some errors (a denied write among them) into a fatal one:
        // the delivery report then says only `Fatal`, or, for an event still queued when it
        // happened, that the queue was purged (`PurgeQueue`, `PurgeInflight`). The client knows the
        // underlying code. (A purge without a fatal error, an aborted transaction's, stays as is.)
        let e = match e.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::Fatal | RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight,
            ) => match self.producer.client().fatal_error() {
                Some((code, _)) => KafkaError::MessageProduction(code),
                None => e,
            },
            _ => e,
        };
        let mut err = PublishError::from_kafka(topic.name(), self.delivery_timeout, e);
        if let PublishError::Unauthorized { principal, .. } = &mut err {
            principal.clone_from(&self.principal);
        }
        if err.is_retriable() {
            self.health.degrade(HEALTH_COMPONENT, err.to_string());
        }
        err
    }
}
