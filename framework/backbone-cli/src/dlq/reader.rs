//! The reader of dead-letter topics: assigned partitions, no consumer group joined, nothing committed;
//! it reads a topic from its beginning to the end offsets seen when it starts.

use std::time::{Duration, Instant};

use backbone::Config;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use super::letter::Letter;
use super::{CLIENT, DlqError, error::kafka};

/// The consumer group named for reading (offsets are assigned, never committed; the group is not
/// joined).
const READ_GROUP: &str = "backbone-cli.dlq";
/// How long metadata and watermark requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading may go without a message before it is called stuck.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A reader that is assigned partitions and never commits.
pub(crate) fn reader(config: &Config) -> Result<BaseConsumer, DlqError> {
    config
        .client_config(CLIENT)
        .set("group.id", READ_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(kafka(format!("connecting to {}", config.bootstrap_servers)))
}

/// The partitions of every topic whose name `matches`, from metadata of the whole cluster (asking for
/// a named topic would let a broker with `auto.create.topics.enable` create it). Sorted by name.
pub(crate) fn topics(
    consumer: &BaseConsumer,
    matches: impl Fn(&str) -> bool,
) -> Result<Vec<(String, Vec<i32>)>, DlqError> {
    let metadata =
        consumer.fetch_metadata(None, REQUEST_TIMEOUT).map_err(kafka("fetching cluster metadata"))?;
    let mut found: Vec<(String, Vec<i32>)> = metadata
        .topics()
        .iter()
        .filter(|t| matches(t.name()))
        .map(|t| (t.name().to_owned(), t.partitions().iter().map(|p| p.id()).collect()))
        .collect();
    found.sort();
    Ok(found)
}

/// Reads `topic`'s `partitions` from their beginning to the end offsets they have now, handing each
/// dead letter to `visit` in partition order, offset order within a partition. Stops at the captured
/// high watermarks (or the end of a partition, whichever comes first), so it never waits for more.
pub(crate) fn read_topic(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    mut visit: impl FnMut(Letter),
) -> Result<(), DlqError> {
    for &partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(kafka(format!("fetching the end offsets of {topic}[{partition}]")))?;
        read_range(consumer, topic, partition, low..high, STALL_TIMEOUT, |m| visit(Letter::of(m, true)))?;
    }
    consumer.unassign().map_err(kafka(format!("unassigning {topic}")))
}

/// Reads `topic`'s `partition` over `offsets` (from its start, up to its end, exclusive), handing
/// each record to `visit`; stops at the range's end, at the partition's end, or with an error after
/// `stall` without a record. Leaves the partition assigned.
pub(crate) fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offsets: std::ops::Range<i64>,
    stall: Duration,
    mut visit: impl FnMut(&BorrowedMessage<'_>),
) -> Result<(), DlqError> {
    let (low, high) = (offsets.start, offsets.end);
    if low >= high {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(low))
        .map_err(kafka(format!("assigning {topic}[{partition}]")))?;
    consumer.assign(&tpl).map_err(kafka(format!("assigning {topic}[{partition}]")))?;
    let mut progress = Instant::now();
    let mut next = low;
    while next < high {
        match consumer.poll(Duration::from_millis(250)) {
            None if progress.elapsed() > stall => {
                return Err(DlqError::Kafka {
                    what: format!("reading {topic}[{partition}]"),
                    reason: format!(
                        "no progress for {}s at offset {next} (end offset {high})",
                        stall.as_secs()
                    ),
                });
            }
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(kafka(format!("reading {topic}[{partition}]"))(e)),
            Some(Ok(m)) => {
                progress = Instant::now();
                next = m.offset() + 1;
                if m.offset() >= high {
                    break;
                }
                visit(&m);
            }
        }
    }
    Ok(())
}
