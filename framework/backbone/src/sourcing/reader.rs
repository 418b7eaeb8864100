//! Reading partitions to their end, as a `read_committed` reader sees them once the transactions
//! below the end have ended: what journal replays and snapshot loads do.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::publish::TRANSACTION_TIMEOUT;
use crate::reader::{self, Isolation};

use super::*;

/// How long one read of a topic to its end may take: waiting for open transactions (a dead
/// instance's is aborted after [`TRANSACTION_TIMEOUT`]) and reading.
const READ_TIMEOUT: Duration = Duration::from_secs(TRANSACTION_TIMEOUT.as_secs() + 50);

/// Reads partitions of a topic from the beginning to their end, as a `read_committed` reader sees
/// them once every transaction below the end has ended. The one poll loop of this module.
pub(super) struct Reader {
    /// Reads, and tells the last stable offset.
    committed: reader::Reader,
    /// Tells the high watermark.
    uncommitted: reader::Reader,
}

impl Reader {
    pub(super) fn new(config: &Config, service: &str, topic: &str) -> Result<Self, SourcingError> {
        let client = |isolation| {
            reader::settings(config.client_config(service), format!("{service}.reader"), isolation, true)
                .create_with_context(reader::ReaderContext)
                .map_err(|e| SourcingError::Client { topic: topic.to_owned(), reason: e.to_string() })
        };
        Ok(Self { committed: client(Isolation::Committed)?, uncommitted: client(Isolation::Uncommitted)? })
    }

    /// Hands every record of `partitions` of `topic` to `each`, from the beginning to at least the
    /// high watermark as it was when called: first waits until no transaction with records below it
    /// is open (the last stable offset has reached it), so a transaction that committed just before
    /// is read whole and one that will abort is never read. Returns how many records it read.
    pub(super) fn read(
        &self,
        topic: &str,
        partitions: &[i32],
        mut each: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<u64, KafkaError> {
        let deadline = Instant::now() + READ_TIMEOUT;
        let left = || deadline.saturating_duration_since(Instant::now());
        let timed_out = || KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut);
        let mut list = TopicPartitionList::new();
        for &partition in partitions {
            let (low, high) = crate::reader::watermarks(&self.uncommitted, topic, partition, left())?;
            if high <= low {
                continue;
            }
            // A read_committed client's watermark query answers the last stable offset. Kafka offers
            // no notification when a transaction ends, so look again until it has.
            while crate::reader::watermarks(&self.committed, topic, partition, left())?.1 < high {
                if left().is_zero() {
                    return Err(timed_out());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            list.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        let mut reading: BTreeSet<i32> = list.elements().iter().map(|e| e.partition()).collect();
        if reading.is_empty() {
            return Ok(0);
        }
        self.committed.assign(&list)?;
        let mut read = 0;
        // End of partition (for read_committed: its last stable offset, now past the high watermark
        // seen above) is reported once a partition is read through.
        let outcome = loop {
            if reading.is_empty() {
                break Ok(read);
            }
            if left().is_zero() {
                break Err(timed_out());
            }
            match self.committed.poll(left()) {
                None => {}
                Some(Ok(message)) => {
                    read += 1;
                    each(&message);
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    reading.remove(&partition);
                }
                // A broker gone: the fetch goes on with the next leader, within the deadline.
                Some(Err(e)) if crate::reader::is_transport(&e) => {}
                Some(Err(e)) => break Err(e),
            }
        };
        self.committed.unassign().ok();
        outcome
    }
}
