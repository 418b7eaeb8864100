//! The reliability oracle (see `docs/reliability.md`): every test event carries `(producer, key,
//! seq)`; the checker reports what Jepsen's Kafka checker names lost, duplicate, reorder and
//! poll-skip.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Header carrying the oracle's producer id.
pub const PRODUCER_HEADER: &str = "oracle-producer";
/// Header carrying the oracle's per-key sequence number.
pub const SEQ_HEADER: &str = "oracle-seq";

/// One event as a reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Producer id (header).
    pub producer: String,
    /// Record key.
    pub key: String,
    /// Sequence number within (producer, key) (header).
    pub seq: u64,
}

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Acknowledged to the sender, never seen.
    pub lost: Vec<(String, String, u64)>,
    /// Seen more than once (handled twice, or written at two offsets).
    pub duplicate: Vec<(String, String, u64)>,
    /// Within one (producer, key), a seq seen after a larger one.
    pub reorder: Vec<(String, String, u64, u64)>,
    /// An offset gap on a partition with no reassignment in between: (partition, from, to).
    pub poll_skip: Vec<(i32, i64, i64)>,
    /// How many acknowledged events there were.
    pub acknowledged: usize,
    /// How many reads there were.
    pub seen: usize,
}

impl Report {
    /// Nothing lost, duplicated, reordered or skipped.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicate.is_empty()
            && self.reorder.is_empty()
            && self.poll_skip.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acknowledged {}, seen {}: lost {}, duplicate {}, reorder {}, poll-skip {}",
            self.acknowledged,
            self.seen,
            self.lost.len(),
            self.duplicate.len(),
            self.reorder.len(),
            self.poll_skip.len()
        )?;
        let sample = |v: &dyn fmt::Debug| format!("{v:?}").chars().take(300).collect::<String>();
        if !self.lost.is_empty() {
            write!(f, "\n  lost e.g. {}", sample(&&self.lost[..self.lost.len().min(5)]))?;
        }
        if !self.duplicate.is_empty() {
            write!(f, "\n  duplicate e.g. {}", sample(&&self.duplicate[..self.duplicate.len().min(5)]))?;
        }
        if !self.reorder.is_empty() {
            write!(f, "\n  reorder e.g. {}", sample(&&self.reorder[..self.reorder.len().min(5)]))?;
        }
        if !self.poll_skip.is_empty() {
            write!(f, "\n  poll-skip e.g. {}", sample(&&self.poll_skip[..self.poll_skip.len().min(5)]))?;
        }
        Ok(())
    }
}

/// Collects acknowledgements and reads, then checks them.
#[derive(Debug, Default)]
pub struct Oracle {
    acked: Vec<(String, String, u64)>,
    seen: Vec<Seen>,
    reassigned: HashSet<i32>,
}

impl Oracle {
    /// A new, empty oracle.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sender was told `(producer, key, seq)` is written.
    pub fn acknowledged(&mut self, producer: &str, key: &str, seq: u64) {
        self.acked.push((producer.to_owned(), key.to_owned(), seq));
    }

    /// A reader handled this event (call in handling order).
    pub fn seen(&mut self, seen: Seen) {
        self.seen.push(seen);
    }

    /// The partition was reassigned: an offset jump on it next is not a poll-skip.
    pub fn reassigned(&mut self, partition: i32) {
        self.reassigned.insert(partition);
    }

    /// Checks everything recorded so far.
    pub fn report(&self) -> Report {
        let mut counts: HashMap<(&str, &str, u64), usize> = HashMap::new();
        let mut last_seq: HashMap<(&str, &str), u64> = HashMap::new();
        let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
        let mut report =
            Report { acknowledged: self.acked.len(), seen: self.seen.len(), ..Report::default() };
        for s in &self.seen {
            let id = (s.producer.as_str(), s.key.as_str(), s.seq);
            *counts.entry(id).or_default() += 1;
            let key = (s.producer.as_str(), s.key.as_str());
            if let Some(prev) = last_seq.get(&key)
                && s.seq < *prev
                && counts[&id] == 1
            {
                report.reorder.push((s.producer.clone(), s.key.clone(), *prev, s.seq));
            }
            let entry = last_seq.entry(key).or_insert(s.seq);
            *entry = (*entry).max(s.seq);
            if let Some(prev) = last_offset.get(&s.partition)
                && s.offset > prev + 1
                && !self.reassigned.contains(&s.partition)
            {
                report.poll_skip.push((s.partition, *prev, s.offset));
            }
            last_offset.insert(s.partition, s.offset);
        }
        for ((p, k, seq), n) in &counts {
            if *n > 1 {
                report.duplicate.push(((*p).to_owned(), (*k).to_owned(), *seq));
            }
        }
        for (p, k, seq) in &self.acked {
            if !counts.contains_key(&(p.as_str(), k.as_str(), *seq)) {
                report.lost.push((p.clone(), k.clone(), *seq));
            }
        }
        report
    }
}

/// Reads every partition of `topic` from the beginning, without a consumer group, until `expected`
/// events were read, or until no event came for `idle` (a stalled output; a slow one that still
/// moves is waited for), and returns them in read order. Events without the oracle's headers are
/// skipped.
pub fn read_topic(config: &ClientConfig, topic: &str, expected: usize, idle: Duration) -> Vec<Seen> {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", "oracle-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("oracle consumer");
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut deadline = Instant::now() + idle;
    let mut out = Vec::with_capacity(expected);
    while out.len() < expected && Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
        // Consumer errors here are transient (a broker restarting drops its connections);
        // librdkafka reconnects and the deadline bounds the wait.
        let Ok(msg) = msg else { continue };
        deadline = Instant::now() + idle;
        let header = |name: &str| {
            msg.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        let (Some(producer), Some(seq)) = (header(PRODUCER_HEADER), header(SEQ_HEADER)) else { continue };
        out.push(Seen {
            partition: msg.partition(),
            offset: msg.offset(),
            producer,
            key: String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned(),
            seq: seq.parse().expect("numeric seq"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(partition: i32, offset: i64, key: &str, seq: u64) -> Seen {
        Seen { partition, offset, producer: "p".into(), key: key.into(), seq }
    }

    #[test]
    fn finds_each_anomaly() {
        let mut o = Oracle::new();
        for seq in 0..4 {
            o.acknowledged("p", "a", seq);
        }
        o.seen(seen(0, 0, "a", 0));
        o.seen(seen(0, 1, "a", 2));
        o.seen(seen(0, 2, "a", 1));
        o.seen(seen(0, 5, "a", 2));
        let r = o.report();
        assert_eq!(r.lost, vec![("p".into(), "a".into(), 3)]);
        assert_eq!(r.duplicate, vec![("p".into(), "a".into(), 2)]);
        assert_eq!(r.reorder, vec![("p".into(), "a".into(), 2, 1)]);
        assert_eq!(r.poll_skip, vec![(0, 2, 5)]);
        assert!(!r.is_clean());
    }

    #[test]
    fn clean_run_is_clean() {
        let mut o = Oracle::new();
        o.acknowledged("p", "a", 0);
        o.acknowledged("p", "a", 1);
        o.seen(seen(0, 0, "a", 0));
        o.seen(seen(0, 1, "a", 1));
        assert!(o.report().is_clean(), "{}", o.report());
    }
}
