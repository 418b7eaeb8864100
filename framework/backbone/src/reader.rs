//! Readers without a consumer group: a consumer that assigns itself the partitions it reads (never
//! joins its group, never commits), so it takes no partition from a service's consumers and
//! resumes from nowhere. The table's probe of partition ends, the sourcing replays, the requester's
//! reply reader and the test [`Probe`](crate::testing::Probe) are such readers: they share the
//! client settings ([`settings`]), and the last two assign a whole topic at once ([`assign_all`]).
//! (`backbone dlq` in the CLI is one too, with a copy of its own.)

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

/// Which records a reader sees of a transactional producer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// Committed ones only: what a service's consumers see.
    Committed,
    /// Every one, committed or not (its watermark query answers the high watermark, not the last
    /// stable offset).
    Uncommitted,
}

/// `client` (a service's client settings) made a reader's: in group `group`, which librdkafka
/// needs to assign partitions but which is never joined nor committed to; with an end-of-partition
/// event per partition read through if `eof`.
pub(crate) fn settings(
    mut client: ClientConfig,
    group: impl Into<String>,
    isolation: Isolation,
    eof: bool,
) -> ClientConfig {
    let isolation = match isolation {
        Isolation::Committed => "read_committed",
        Isolation::Uncommitted => "read_uncommitted",
    };
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", if eof { "true" } else { "false" })
        .set("isolation.level", isolation);
    client
}

/// Where [`assign_all`] starts each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// At its first record.
    Beginning,
    /// At its high watermark when assigned: what is written from then on.
    End,
}

/// Why [`assign_all`] could not assign a topic.
#[derive(Debug)]
pub(crate) enum AssignError {
    /// The topic does not exist (or has no partitions).
    Missing,
    /// The metadata, a watermark or the assignment failed.
    Kafka(KafkaError),
}

impl From<KafkaError> for AssignError {
    fn from(e: KafkaError) -> Self {
        Self::Kafka(e)
    }
}

/// Assigns `consumer` every partition of `topic`, each from `start`; each look-up (metadata,
/// watermarks) may take `timeout`. Blocking: call it off the async workers.
pub(crate) fn assign_all(
    consumer: &impl Consumer,
    topic: &str,
    start: Start,
    timeout: Duration,
) -> Result<(), AssignError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(AssignError::Missing);
    }
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        let offset = match start {
            Start::End => Offset::Offset(consumer.fetch_watermarks(topic, partition, timeout)?.1),
            Start::Beginning => Offset::Beginning,
        };
        list.add_partition_offset(topic, partition, offset)?;
    }
    consumer.assign(&list)?;
    Ok(())
}
