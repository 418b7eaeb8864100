//! Looking at where partitions end: watermarks, and the last record a `read_committed` reader
//! sees.

use std::collections::HashMap;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::view::Shared;

/// How long one look at a partition's end may take (watermarks, then reading its last records).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

impl<V> Shared<V> {
    /// Where each of `partitions` ends now: its watermarks and the last record a `read_committed`
    /// reader sees (transaction markers and aborted records are no records).
    pub(super) fn probe_ends(&self, partitions: &[i32]) -> Result<Vec<End>, KafkaError> {
        let probe = self.probe.lock().unwrap_or_else(PoisonError::into_inner);
        let ends = probe_ends(&probe, &self.topic, partitions);
        if ends.is_err() {
            probe.unassign().ok();
        }
        ends
    }

    /// `partition`'s end for every writer now: the offset its next record will get, records of
    /// transactions still open included (a `read_committed` reader's end stops before the first).
    pub(super) fn written_end(&self, partition: i32) -> Result<i64, KafkaError> {
        let (settings, probe) = &self.probe_written;
        let mut probe = probe.lock().unwrap_or_else(PoisonError::into_inner);
        if probe.is_none() {
            *probe = Some(settings.create_with_context(crate::reader::ReaderContext)?);
        }
        let probe = probe.as_ref().expect("made above");
        crate::reader::watermarks(probe, &self.topic, partition, PROBE_TIMEOUT).map(|(_, high)| high)
    }

    /// `partition`'s high watermark now.
    pub(super) fn high_watermark(&self, partition: i32) -> Result<i64, KafkaError> {
        let probe = self.probe.lock().unwrap_or_else(PoisonError::into_inner);
        crate::reader::watermarks(&*probe, &self.topic, partition, PROBE_TIMEOUT).map(|(_, high)| high)
    }
}

/// Where a partition ends.
#[derive(Debug, Clone, Copy)]
pub(super) struct End {
    pub(super) high: i64,
    /// The last record a `read_committed` reader sees, if any.
    pub(super) last: Option<i64>,
}

/// Reads where `partitions` end, all at once: each from just before its high watermark, further
/// back (16 times as far each round) for those where only transaction markers or aborted records
/// were found.
fn probe_ends(
    probe: &crate::reader::Reader,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<End>, KafkaError> {
    let mut ends = Vec::with_capacity(partitions.len());
    // (index, low watermark) of each partition still looked for.
    let mut open = Vec::new();
    for (i, &partition) in partitions.iter().enumerate() {
        let (low, high) = crate::reader::watermarks(probe, topic, partition, PROBE_TIMEOUT)?;
        ends.push(End { high, last: None });
        if high > low {
            open.push((i, low));
        }
    }
    let mut window = 1_i64;
    while !open.is_empty() {
        let starts: Vec<i64> = open.iter().map(|&(i, low)| (ends[i].high - window).max(low)).collect();
        let mut list = TopicPartitionList::new();
        for (&(i, _), &start) in open.iter().zip(&starts) {
            list.add_partition_offset(topic, partitions[i], Offset::Offset(start))?;
        }
        probe.assign(&list)?;
        let mut reading: HashMap<i32, (usize, i64)> =
            open.iter().zip(&starts).map(|(&(i, _), &start)| (partitions[i], (i, start))).collect();
        let deadline = Instant::now() + PROBE_TIMEOUT;
        while !reading.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KafkaError::MessageConsumption(RDKafkaErrorCode::RequestTimedOut));
            }
            let done = match probe.poll(left) {
                None => None,
                Some(Ok(m)) => match reading.get(&m.partition()) {
                    Some(&(i, from)) if m.offset() >= from => {
                        let high = ends[i].high;
                        if m.offset() < high {
                            ends[i].last = Some(m.offset());
                        }
                        (m.offset() >= high - 1).then_some(m.partition())
                    }
                    _ => None,
                },
                Some(Err(KafkaError::PartitionEOF(partition))) => Some(partition),
                // A broker that went away is reported, and the fetch goes on with the partition's
                // next leader: within the deadline, not a failure.
                Some(Err(e)) if crate::reader::is_transport(&e) => None,
                Some(Err(e)) => return Err(e),
            };
            if let Some(partition) = done {
                reading.remove(&partition);
            }
        }
        // Found, or read from the low watermark: done.
        let mut starts = starts.into_iter();
        open.retain(|&(i, low)| starts.next().is_some_and(|start| ends[i].last.is_none() && start > low));
        window = window.saturating_mul(16);
    }
    probe.unassign()?;
    Ok(ends)
}
