//! Consumer groups: their members and assignments (from `DescribeGroups`), their committed offsets
//! (an `OffsetFetch` per group, through a client named with the group's id that never joins it),
//! and the lag of each partition in records and in seconds (the age of the first event not yet
//! handled: the timestamp of the record at the committed offset).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backbone::Config;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::topics::TopicState;
use super::{CLIENT, REQUEST_TIMEOUT};

/// At most this many groups are read (the rest are listed without offsets).
const MAX_GROUPS: usize = 500;
/// At most this many lagging partitions get their oldest event's age per read.
const MAX_PEEKS: usize = 256;
/// How long reading those ages may take per read.
const PEEK_TIME: Duration = Duration::from_millis(1500);

/// A member of a group.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The member id the coordinator gave it.
    pub(crate) id: String,
    /// Its `client.id`.
    pub(crate) client_id: String,
    /// The host it connects from.
    pub(crate) host: String,
    /// Its assigned partitions, by topic.
    pub(crate) assignment: Vec<(String, Vec<i32>)>,
}

/// The lag of one partition for a group.
#[derive(Debug, Clone)]
pub(crate) struct PartitionLag {
    /// The topic.
    pub(crate) topic: String,
    /// The partition.
    pub(crate) partition: i32,
    /// The committed offset (the next one to handle); without a commit, the first offset (backbone's
    /// consumers start from the earliest).
    pub(crate) committed: i64,
    /// Whether the group has committed nothing here yet.
    pub(crate) uncommitted: bool,
    /// The end offset.
    pub(crate) end: i64,
    /// Records not yet handled.
    pub(crate) lag: i64,
    /// How old the first of them is, in seconds (0 when there are none; `None`: not read).
    pub(crate) seconds: Option<f64>,
}

/// A consumer group.
#[derive(Debug, Clone)]
pub(crate) struct GroupState {
    /// Its id.
    pub(crate) name: String,
    /// `Stable`, `PreparingRebalance`, `Empty` …
    pub(crate) state: String,
    /// Its members.
    pub(crate) members: Vec<Member>,
    /// Its committed partitions' lag, by topic and partition.
    pub(crate) lags: Vec<PartitionLag>,
}

impl GroupState {
    /// Records not yet handled, over every partition.
    pub(crate) fn total_lag(&self) -> i64 {
        self.lags.iter().map(|l| l.lag).sum()
    }

    /// The age of the oldest event not yet handled, in seconds.
    pub(crate) fn max_seconds(&self) -> Option<f64> {
        self.lags.iter().filter_map(|l| l.seconds).reduce(f64::max)
    }

    /// The member assigned `topic`'s `partition`.
    pub(crate) fn owner_of(&self, topic: &str, partition: i32) -> Option<&Member> {
        self.members.iter().find(|m| m.assignment.iter().any(|(t, ps)| t == topic && ps.contains(&partition)))
    }
}

/// The groups' clients, kept from one read to the next.
pub(super) struct Groups {
    config: Config,
    /// One client per group, named with its id (`OffsetFetch` goes to the group's coordinator).
    by_group: HashMap<String, BaseConsumer>,
    /// Reads the record at a committed offset (assigned, never committing).
    peek: Option<BaseConsumer>,
    /// Timestamps (ms) of records already peeked, by topic, partition and offset (`None`: no
    /// record there before the end).
    stamps: HashMap<(String, i32, i64), Option<i64>>,
}

impl Groups {
    pub(super) fn new(config: Config) -> Self {
        Self { config, by_group: HashMap::new(), peek: None, stamps: HashMap::new() }
    }

    /// Every group, its members and the lag of every partition it has committed offsets for, and of
    /// every partition without a commit of the topics it reads (its members' assignments, and
    /// `reads(group)`: the estate's), counted from the first offset.
    pub(super) fn read(
        &mut self,
        client: &BaseConsumer,
        topics: &[TopicState],
        reads: impl Fn(&str) -> Vec<String>,
    ) -> Result<Vec<GroupState>, String> {
        let list = client
            .fetch_group_list(None, REQUEST_TIMEOUT)
            .map_err(|e| format!("listing consumer groups: {e}"))?;
        let mut groups: Vec<GroupState> = list
            .groups()
            .iter()
            .filter(|g| g.protocol_type() == "consumer" || g.protocol_type().is_empty())
            .map(|g| GroupState {
                name: g.name().to_owned(),
                state: g.state().to_owned(),
                members: g
                    .members()
                    .iter()
                    .map(|m| Member {
                        id: m.id().to_owned(),
                        client_id: m.client_id().to_owned(),
                        host: m.client_host().trim_start_matches('/').to_owned(),
                        assignment: m.assignment().map(parse_assignment).unwrap_or_default(),
                    })
                    .collect(),
                lags: Vec::new(),
            })
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        let ends: HashMap<(&str, i32), (i64, i64)> = topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| ((t.name.as_str(), p.id), (p.low, p.high))))
            .collect();
        let mut all = TopicPartitionList::new();
        for t in topics {
            for p in &t.partitions {
                all.add_partition(&t.name, p.id);
            }
        }
        self.by_group.retain(|name, _| groups.iter().any(|g| &g.name == name));
        for group in groups.iter_mut().take(MAX_GROUPS) {
            if all.count() == 0 {
                break;
            }
            let committed = self.committed(&group.name, &all)?;
            for element in committed.elements() {
                let Offset::Offset(offset) = element.offset() else { continue };
                let Some(&(low, high)) = ends.get(&(element.topic(), element.partition())) else { continue };
                let from = offset.clamp(low, high.max(low));
                group.lags.push(PartitionLag {
                    topic: element.topic().to_owned(),
                    partition: element.partition(),
                    committed: offset,
                    uncommitted: false,
                    end: high,
                    lag: (high - from).max(0),
                    seconds: (high <= from).then_some(0.0),
                });
            }
            let mut read: Vec<String> = reads(&group.name);
            read.extend(group.members.iter().flat_map(|m| m.assignment.iter().map(|(t, _)| t.clone())));
            for topic in topics.iter().filter(|t| read.contains(&t.name)) {
                for p in &topic.partitions {
                    if !group.lags.iter().any(|l| l.topic == topic.name && l.partition == p.id) {
                        group.lags.push(PartitionLag {
                            topic: topic.name.clone(),
                            partition: p.id,
                            committed: p.low,
                            uncommitted: true,
                            end: p.high,
                            lag: (p.high - p.low).max(0),
                            seconds: (p.high <= p.low).then_some(0.0),
                        });
                    }
                }
            }
            group.lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        }
        self.ages(&mut groups);
        Ok(groups)
    }

    /// `group`'s committed offsets for `partitions` (unset where it has none).
    fn committed(
        &mut self,
        group: &str,
        partitions: &TopicPartitionList,
    ) -> Result<TopicPartitionList, String> {
        if !self.by_group.contains_key(group) {
            let client: BaseConsumer = self
                .config
                .client_config(CLIENT)
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .create()
                .map_err(|e| format!("a client for group {group}: {e}"))?;
            self.by_group.insert(group.to_owned(), client);
        }
        self.by_group[group]
            .committed_offsets(partitions.clone(), REQUEST_TIMEOUT)
            .map_err(|e| format!("reading group {group}'s committed offsets: {e}"))
    }

    /// Fills in the age of the first unhandled event of lagging partitions: from timestamps already
    /// read, else by reading the record at the committed offset (bounded in partitions and time).
    /// A partition with no record between its committed and end offsets holds only transaction
    /// markers: its lag is 0.
    fn ages(&mut self, groups: &mut [GroupState]) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut wanted: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for lag in groups.iter().flat_map(|g| &g.lags).filter(|l| l.seconds.is_none()) {
            let key = (lag.topic.clone(), lag.partition, lag.committed);
            if !self.stamps.contains_key(&key) && wanted.len() < MAX_PEEKS {
                wanted.insert((lag.topic.clone(), lag.partition), lag.committed);
            }
        }
        if !wanted.is_empty() {
            let found = self.peek(&wanted);
            self.stamps.extend(found);
        }
        let mut used = HashMap::new();
        for lag in groups.iter_mut().flat_map(|g| &mut g.lags).filter(|l| l.seconds.is_none()) {
            let key = (lag.topic.clone(), lag.partition, lag.committed);
            if let Some(&stamp) = self.stamps.get(&key) {
                match stamp {
                    Some(stamp) => lag.seconds = Some(((now - stamp).max(0) as f64) / 1000.0),
                    None => (lag.lag, lag.seconds) = (0, Some(0.0)),
                }
                used.insert(key, stamp);
            }
        }
        self.stamps = used;
    }

    /// The timestamp of the record at each `(topic, partition)`'s offset (`None`: no record up to
    /// the partition's end), for those read within [`PEEK_TIME`].
    fn peek(&mut self, wanted: &BTreeMap<(String, i32), i64>) -> HashMap<(String, i32, i64), Option<i64>> {
        let mut found = HashMap::new();
        if self.peek.is_none() {
            match peek_reader(&self.config) {
                Ok(reader) => self.peek = Some(reader),
                Err(_) => return found,
            }
        }
        let peek = self.peek.as_ref().expect("set above");
        let deadline = Instant::now() + PEEK_TIME;
        // Every partition at once: most have a record at their offset.
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in wanted {
            if tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)).is_err() {
                return found;
            }
        }
        if peek.assign(&tpl).is_err() {
            return found;
        }
        let first_pass = Instant::now() + PEEK_TIME / 2;
        while found.len() < wanted.len() {
            let time = first_pass.saturating_duration_since(Instant::now());
            if time.is_zero() {
                break;
            }
            if let Some(Ok(m)) = peek.poll(time.min(Duration::from_millis(100))) {
                let key = (m.topic().to_owned(), m.partition());
                if let Some(&offset) = wanted.get(&key) {
                    found
                        .entry((key.0, key.1, offset))
                        .or_insert(Some(m.timestamp().to_millis().unwrap_or(0)));
                }
            }
        }
        let _ = peek.unassign();
        // The rest, one topic at a time, so that the end of a partition (reported by partition
        // number only) names its topic: those hold only transaction markers up to their end.
        let mut topics: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for ((topic, partition), offset) in wanted {
            if !found.contains_key(&(topic.clone(), *partition, *offset)) {
                topics.entry(topic).or_default().push((*partition, *offset));
            }
        }
        // A reader of its own: librdkafka reports a partition's end once, and the first reader may
        // have reported these already.
        let Some(ends) = (!topics.is_empty()).then(|| peek_reader(&self.config).ok()).flatten() else {
            return found;
        };
        for (topic, partitions) in topics {
            let mut tpl = TopicPartitionList::new();
            for (partition, offset) in &partitions {
                if tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)).is_err() {
                    return found;
                }
            }
            if ends.assign(&tpl).is_err() {
                return found;
            }
            let mut left = partitions.len();
            while left > 0 {
                let time = deadline.saturating_duration_since(Instant::now());
                if time.is_zero() {
                    break;
                }
                let (partition, stamp) = match ends.poll(time.min(Duration::from_millis(100))) {
                    Some(Ok(m)) if m.topic() == topic => {
                        (m.partition(), Some(m.timestamp().to_millis().unwrap_or(0)))
                    }
                    Some(Err(KafkaError::PartitionEOF(partition))) => (partition, None),
                    Some(_) | None => continue,
                };
                if let Some((_, offset)) = partitions.iter().find(|(p, _)| *p == partition)
                    && !found.contains_key(&(topic.to_owned(), partition, *offset))
                {
                    found.insert((topic.to_owned(), partition, *offset), stamp);
                    left -= 1;
                }
            }
            let _ = ends.unassign();
        }
        found
    }
}

/// A reader that is assigned partitions, never commits, reports partition ends, and is bounded in
/// memory (one small fetch per partition, a small local queue).
fn peek_reader(config: &Config) -> Result<BaseConsumer, KafkaError> {
    config
        .client_config(CLIENT)
        .set("group.id", "backbone-console.peek")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("max.partition.fetch.bytes", "65536")
        .set("fetch.max.bytes", "1048576")
        .set("queued.max.messages.kbytes", "4096")
        .create()
}

/// Whether consumer group `group` is the estate's declared group `declared`, or one of its
/// per-instance groups (`<declared>.<instance>`: replicated tables, request replies).
pub(crate) fn is_group_of(group: &str, declared: &str) -> bool {
    group == declared || group.strip_prefix(declared).is_some_and(|rest| rest.starts_with('.'))
}

/// Parses a consumer protocol assignment (`ConsumerProtocolAssignment`, any version: its topics and
/// partitions come first). A malformed one gives what parsed before the fault.
pub(crate) fn parse_assignment(bytes: &[u8]) -> Vec<(String, Vec<i32>)> {
    struct Cursor<'a>(&'a [u8]);
    impl Cursor<'_> {
        fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
            let (head, rest) = self.0.split_first_chunk::<N>()?;
            self.0 = rest;
            Some(*head)
        }
        fn i16(&mut self) -> Option<i16> {
            self.take::<2>().map(i16::from_be_bytes)
        }
        fn i32(&mut self) -> Option<i32> {
            self.take::<4>().map(i32::from_be_bytes)
        }
        fn string(&mut self) -> Option<String> {
            let len = usize::try_from(self.i16()?).ok()?;
            let (text, rest) = (self.0.get(..len)?, self.0.get(len..)?);
            self.0 = rest;
            Some(String::from_utf8_lossy(text).into_owned())
        }
    }
    let mut cursor = Cursor(bytes);
    let mut topics = Vec::new();
    let Some(_version) = cursor.i16() else { return topics };
    let Some(count) = cursor.i32() else { return topics };
    for _ in 0..count.clamp(0, 10_000) {
        let Some(topic) = cursor.string() else { break };
        let Some(n) = cursor.i32() else { break };
        let mut partitions = Vec::new();
        for _ in 0..n.clamp(0, 100_000) {
            match cursor.i32() {
                Some(p) => partitions.push(p),
                None => break,
            }
        }
        partitions.sort_unstable();
        topics.push((topic, partitions));
    }
    topics
}
