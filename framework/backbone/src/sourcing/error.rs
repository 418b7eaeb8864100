//! Why a journal or running totals could not be built, read or run.

use crate::consume::ConsumeError;
use crate::topic::TopicError;

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
    /// The schema registry could not be reached to decode the journal's events: try again later.
    #[error("reading the journal: {0}")]
    Registry(crate::schema::SchemaError),
    /// [`RunningTotals::run`](super::RunningTotals::run) was called twice.
    #[error("running totals `{name}` are already running (or have run)")]
    AlreadyRunning {
        /// Their name.
        name: String,
    },
}

impl SourcingError {
    /// Whether trying again may help: a read that failed or timed out, or a registry that could
    /// not be reached.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Read { .. } | Self::Registry(_))
    }
}
