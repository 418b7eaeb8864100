//! [`PublishError`]: why a publish failed, and whether trying again may help.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::ConfigError;

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
    #[error("{principal} is not authorized to publish to `{topic}`: {code}")]
    Unauthorized {
        /// The topic.
        topic: String,
        /// Who the brokers saw (`User:stock (SASL PLAIN)`, a client certificate's subject).
        principal: String,
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
                    // A write refused for authorization leaves the transaction abortable; an event
                    // purged by a fatal refusal reports it too.
                    | C::TopicAuthorizationFailed
                    | C::ClusterAuthorizationFailed
                    | C::UnknownProducerId
                    | C::OutOfOrderSequenceNumber
            ),
            Self::Client(_) => true,
            _ => false,
        }
    }

    pub(super) fn from_kafka(topic: &str, timeout: Duration, e: KafkaError) -> Self {
        let topic = topic.to_owned();
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::MessageTimedOut) => Self::TimedOut { topic, timeout },
            Some(
                code @ (RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed),
            ) => Self::Unauthorized { topic, principal: "the principal".to_owned(), code },
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
