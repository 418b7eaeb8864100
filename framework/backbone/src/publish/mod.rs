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
//! - every event carries minimal metadata headers (see [`crate::headers`]): W3C `traceparent`
//!   always; the event type unless the payload's schema id or the topic's name says it; the
//!   correlation id only when it is not the trace id (see [`crate::trace`]); the producing service
//!   only on dead letters and with [`Outgoing::full_metadata`].
//!
//! Weaker settings are refused at start-up unless the loudly named opt-in is set (R4).

mod error;
mod future;
mod order;
mod outgoing;
mod publisher;
mod shared;
#[cfg(test)]
mod tests;

pub use error::PublishError;
pub use future::Publish;
pub(crate) use order::Context;
pub use outgoing::{Delivery, Outgoing};
pub use publisher::{Publisher, TRANSACTION_TIMEOUT, producer_config};
pub(crate) use shared::PublishContext;

// The open transaction of an exactly-once consumer lives with the consumer's side of exactly once.
pub use crate::consume::eos::Transaction;

/// Header names of backbone's metadata on published events (declared in [`crate::headers`]; which
/// are written when is told there).
pub mod headers {
    pub use crate::headers::{CORRELATION_ID, EVENT_TYPE, PRODUCER, TRACEPARENT};
}

/// The health component name of the publisher.
pub const HEALTH_COMPONENT: &str = "publisher";
