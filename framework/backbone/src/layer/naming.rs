//! The names of a consumer's dead-letter and retry topics, and which contract a record of a retry
//! topic follows.
//!
//! The consumer declares these topics ([`crate::consume::Consumer::new`],
//! [`crate::consume::Consumer::retries`]; re-exported as [`crate::consume::dead_letter_topic`] and
//! [`crate::consume::retry_topic`]), the dead-letter layer writes to them and the schema layer
//! checks a replayed record against its source's contract: one place for the names, which the
//! consumer and the layers both depend on, and which depends on neither.

use std::time::Duration;

use crate::topic::{TopicError, TopicSpec};

/// The dead-letter topic `service` owns for events it could not handle from `source`:
/// `<service>.private.dlq.<source>`, one partition, kept 14 days.
pub fn dead_letter_topic(service: &str, source: &TopicSpec) -> Result<TopicSpec, TopicError> {
    TopicSpec::private(service, format!("dlq.{}", source.name()))
        .partitions(1)
        .replication(source.replication())
        .min_insync_replicas(source.min_insync_replicas())
        .retention(Duration::from_secs(14 * 24 * 3600))
        .build()
}

/// The retry topic `service` owns for replays of its dead letters from `source`:
/// `<service>.private.retry.<source>`, one partition (replays keep the dead-letter topic's order),
/// kept 14 days like the dead-letter topic. Written only by `backbone dlq replay`, read only by the
/// service's retry consumers ([`Consumer::retries`](crate::consume::Consumer::retries)).
pub fn retry_topic(service: &str, source: &TopicSpec) -> Result<TopicSpec, TopicError> {
    TopicSpec::private(service, format!("retry.{}", source.name()))
        .partitions(1)
        .replication(source.replication())
        .min_insync_replicas(source.min_insync_replicas())
        .retention(Duration::from_secs(14 * 24 * 3600))
        .build()
}

/// Whether replays of `service`'s dead letters from `source` go back to `source` itself rather
/// than to a retry topic: when `source` is `service`'s own private topic. The service is that
/// topic's single writer and only its own handlers read it, so a replay there keeps the topic's
/// one writer, reaches no other service, and is handled in its key's order with the live events,
/// by the consumer that owns the key's partition (a retry consumer beside it would race the live
/// one on the same keys: two writers of one entity's state). Each of the service's consumers of
/// the topic skips replays naming another handler.
pub fn replays_to_source(service: &str, source: &TopicSpec) -> bool {
    source.is_owned_by(service) && source.visibility() == crate::topic::Visibility::Private
}

/// The topic whose contract a record of `topic` follows: for a retry topic
/// (`<service>.private.retry.<source>`) its source, whose schemas the replayed records carry;
/// otherwise `topic` itself.
pub(crate) fn contract_topic(topic: &str) -> &str {
    match topic.split_once(".private.retry.") {
        Some((service, source)) if !service.contains('.') && !source.is_empty() => source,
        _ => topic,
    }
}
