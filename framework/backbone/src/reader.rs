//! Readers without a consumer group: a consumer that assigns itself the partitions it reads (never
//! joins its group, never commits), so it takes no partition from a service's consumers and
//! resumes from nowhere. The table's probe of partition ends, the sourcing replays, the requester's
//! reply reader and the test [`Probe`](crate::testing::Probe) are such readers: they share the
//! client settings ([`settings`]), and the last two assign a whole topic at once ([`assign_all`]).
//! (`backbone dlq` in the CLI is one too, with a copy of its own.)

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

/// How long the broker may hold a reader's fetch that finds nothing new (librdkafka's
/// `fetch.wait.max.ms`, 500 ms by default). A reader with end-of-partition events learns it has
/// reached the end only from such an empty fetch, so the default would add half a second to every
/// look at a partition's end (a table's `sync`, a journal's replay).
const EMPTY_FETCH_WAIT: &str = "10";

/// A reader: a consumer with [`ReaderContext`].
pub(crate) type Reader = BaseConsumer<ReaderContext>;

/// A reader's context: librdkafka's default, except that reaching a partition's end is no error
/// to log (readers ask for it; the default context logs each as `Global error: PartitionEOF`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for ReaderContext {}

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
/// event per partition read through if `eof` (and then a short wait on empty fetches, which is how
/// the end is found). Create it with [`ReaderContext`]: `.create_with_context(ReaderContext)`.
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
    if eof {
        client.set("fetch.wait.max.ms", EMPTY_FETCH_WAIT);
    }
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
            Start::End => Offset::Offset(watermarks(consumer, topic, partition, timeout)?.1),
            Start::Beginning => Offset::Beginning,
        };
        list.add_partition_offset(topic, partition, offset)?;
    }
    consumer.assign(&list)?;
    Ok(())
}

/// `partition`'s low and high watermarks, asked of its leader; if that fails (within `timeout`),
/// asked once more after a fresh metadata lookup of `topic`. librdkafka sends the lookup to the
/// leader it last knew, and when that broker died without a word (SIGKILL, a lost machine) it keeps
/// knowing it until its periodic metadata refresh (`topic.metadata.refresh.interval.ms`, 5 minutes):
/// a client that only looks up watermarks (a table's probe) would fail for that long, where the
/// partition had a new leader seconds after the old one died. A new leader answers
/// `OFFSET_NOT_AVAILABLE` until its high watermark has caught up (KIP-207): that answer is asked
/// again, with a short backoff, until `timeout` from the second ask. At most three times `timeout`,
/// plus the metadata lookup's.
pub(crate) fn watermarks<X: ConsumerContext>(
    consumer: &impl Consumer<X>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> KafkaResult<(i64, i64)> {
    let first = match consumer.fetch_watermarks(topic, partition, timeout) {
        Ok(watermarks) => return Ok(watermarks),
        Err(first) => first,
    };
    tracing::debug!(topic, partition, error = %first, "watermarks: looking the leader up again");
    consumer.fetch_metadata(Some(topic), timeout)?;
    let deadline = Instant::now() + timeout;
    let mut answer = consumer.fetch_watermarks(topic, partition, timeout);
    let mut pause = Duration::from_millis(50);
    while let Err(e) = &answer
        && e.rdkafka_error_code() == Some(RDKafkaErrorCode::OffsetNotAvailable)
        && Instant::now() + pause < deadline
    {
        tracing::debug!(topic, partition, "watermarks: the new leader's high watermark is not caught up yet");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
        answer =
            consumer.fetch_watermarks(topic, partition, deadline.saturating_duration_since(Instant::now()));
    }
    answer
}

/// Errors a reader's poll reports while its fetches move to another broker (one died, or
/// leadership moved): librdkafka goes on by itself, so a reader with a deadline polls on.
pub(crate) fn is_transport(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        error,
        KafkaError::MessageConsumption(
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::Resolve
                | C::NotLeaderForPartition
                | C::LeaderNotAvailable
        )
    )
}
