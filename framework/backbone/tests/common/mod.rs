//! Helpers for backbone's integration tests.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone::{Config, Outgoing, Profile, PublishError, Publisher, Service, TopicSpec};
use backbone_testkit::oracle::{Oracle, PRODUCER_HEADER, SEQ_HEADER};
use backbone_testkit::unique;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::{Headers as _, Message as _};

/// A configuration pointing at `bootstrap`, development profile (single-broker friendly).
pub fn config(bootstrap: &str) -> Config {
    let mut c = Config::default();
    c.bootstrap_servers = bootstrap.to_owned();
    c.profile = Profile::Development;
    c
}

/// A configuration pointing at the 3-broker cluster at `bootstrap`, production profile (topics with
/// replication 3 and `min.insync.replicas` 2).
pub fn production_config(bootstrap: &str) -> Config {
    let mut c = config(bootstrap);
    c.profile = Profile::Production;
    c
}

/// A fresh service name and a public topic it owns (not yet created).
pub fn owned_topic(partitions: i32) -> (String, TopicSpec) {
    let service = unique("svc");
    let topic = TopicSpec::public(&service, "events", 1).partitions(partitions).build().expect("topic");
    (service, topic)
}

/// A publisher for `service` owning `topic`.
pub fn publisher(config: &Config, service: &str, topic: &TopicSpec) -> Publisher {
    let spec = Service::new(service).owns(topic).spec().expect("spec");
    Publisher::new(config, &spec).expect("publisher")
}

/// Publishes `count` oracle events over `keys` keys (seq = index / keys), at most `window` in flight,
/// recording acknowledgements in `oracle`. `on_ack(acked)` runs after each acknowledgement.
pub async fn publish_oracle(
    publisher: &Publisher,
    topic: &TopicSpec,
    count: usize,
    keys: usize,
    window: usize,
    oracle: &Arc<Mutex<Oracle>>,
    mut on_ack: impl FnMut(usize),
) -> Vec<PublishError> {
    let producer = publisher.service().to_owned();
    let mut in_flight = FuturesUnordered::new();
    let mut errors = Vec::new();
    let mut acked = 0;
    let mut next = 0;
    while next < count || !in_flight.is_empty() {
        while next < count && in_flight.len() < window {
            let (key, seq) = (format!("key-{}", next % keys), (next / keys) as u64);
            let producer = producer.clone();
            in_flight.push(async move {
                let seq_text = seq.to_string();
                let headers = [(PRODUCER_HEADER, producer.as_bytes()), (SEQ_HEADER, seq_text.as_bytes())];
                let event =
                    Outgoing::new("OracleEvent", key.as_bytes(), seq_text.as_bytes()).headers(&headers);
                (key.clone(), seq, publisher.publish(topic, event).await)
            });
            next += 1;
        }
        if let Some((key, seq, result)) = in_flight.next().await {
            match result {
                Ok(_) => {
                    oracle.lock().unwrap().acknowledged(&producer, &key, seq);
                    acked += 1;
                    on_ack(acked);
                }
                Err(e) => errors.push(e),
            }
        }
    }
    errors
}

/// Publishes oracle events `start..start + count` (key `key-<i % keys>`, seq `i / keys`), all in
/// flight at once, recording acknowledgements in `oracle`; returns the errors.
pub async fn publish_oracle_range(
    publisher: &Publisher,
    topic: &TopicSpec,
    start: usize,
    count: usize,
    keys: usize,
    oracle: &Arc<Mutex<Oracle>>,
) -> Vec<PublishError> {
    let producer = publisher.service().to_owned();
    let sends = (start..start + count).map(|i| {
        let (key, seq) = (format!("key-{}", i % keys), (i / keys) as u64);
        let producer = producer.clone();
        async move {
            let seq_text = seq.to_string();
            let headers = [(PRODUCER_HEADER, producer.as_bytes()), (SEQ_HEADER, seq_text.as_bytes())];
            let event = Outgoing::new("OracleEvent", key.as_bytes(), seq_text.as_bytes()).headers(&headers);
            (key.clone(), seq, publisher.publish(topic, event).await)
        }
    });
    let mut errors = Vec::new();
    for (key, seq, result) in futures::future::join_all(sends).await {
        match result {
            Ok(_) => oracle.lock().unwrap().acknowledged(&producer, &key, seq),
            Err(e) => errors.push(e),
        }
    }
    errors
}

/// A dead letter as read back: its headers (by name), key and payload.
pub struct Letter {
    pub headers: Vec<(String, String)>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Letter {
    /// The value of header `name` (lossy UTF-8), or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }
}

/// Reads `count` records from partition 0 of `topic` from the beginning (blocking; 30 s at most).
pub fn read_letters(topic: &str, count: usize) -> Vec<Letter> {
    read_letters_on(backbone_testkit::shared_kafka(), topic, count)
}

/// Reads `count` records from partition 0 of `topic` on `cluster` from the beginning (blocking; 30 s
/// at most).
pub fn read_letters_on(cluster: &backbone_testkit::KafkaCluster, topic: &str, count: usize) -> Vec<Letter> {
    read_records(cluster, topic, count, Read::Count)
}

/// Every record of partition 0 of `topic` on `cluster`, read from the beginning to its end (blocking;
/// 30 s at most).
pub fn read_letters_to_end(cluster: &backbone_testkit::KafkaCluster, topic: &str) -> Vec<Letter> {
    read_records(cluster, topic, usize::MAX, Read::ToEnd)
}

/// Every committed record of partition 0 of `topic` on `cluster` (`read_committed`: none of an
/// aborted transaction), read from the beginning to its end (blocking; 30 s at most).
pub fn read_committed_to_end(cluster: &backbone_testkit::KafkaCluster, topic: &str) -> Vec<Letter> {
    read_records(cluster, topic, usize::MAX, Read::CommittedToEnd)
}

/// How far [`read_records`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Until the count (or 30 s), waiting for more.
    Count,
    /// To the partition's end.
    ToEnd,
    /// To the partition's end, `read_committed`.
    CommittedToEnd,
}

fn read_records(
    cluster: &backbone_testkit::KafkaCluster,
    topic: &str,
    count: usize,
    read: Read,
) -> Vec<Letter> {
    let reader: rdkafka::consumer::BaseConsumer = cluster
        .client_config()
        .set("group.id", unique("dlq-reader"))
        .set("enable.partition.eof", if read == Read::Count { "false" } else { "true" })
        .set(
            "isolation.level",
            if read == Read::CommittedToEnd { "read_committed" } else { "read_uncommitted" },
        )
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning).unwrap();
    reader.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut letters = Vec::new();
    while letters.len() < count && std::time::Instant::now() < deadline {
        let m = match reader.poll(Duration::from_millis(500)) {
            None => continue,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(m) => m.unwrap(),
        };
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        letters.push(Letter {
            headers,
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
        });
    }
    letters
}

/// Reads `topic` back into the oracle and returns its report.
pub async fn check(
    client: rdkafka::ClientConfig,
    topic: &TopicSpec,
    expected: usize,
    oracle: Arc<Mutex<Oracle>>,
) -> backbone_testkit::oracle::Report {
    let name = topic.name().to_owned();
    let seen = tokio::task::spawn_blocking(move || {
        backbone_testkit::oracle::read_topic(&client, &name, expected, Duration::from_secs(120))
    })
    .await
    .expect("reader");
    let mut oracle = oracle.lock().unwrap();
    for s in seen {
        oracle.seen(s);
    }
    oracle.report()
}

/// Re-runs this test binary's test `test` as a child process, with `key=value` in its environment
/// (the child test does its work only when it finds it), and forwards the child's stdout lines.
pub fn spawn_test_child(
    test: &str,
    key: &str,
    value: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    spawn_child(test, key, value, false)
}

fn spawn_child(
    test: &str,
    key: &str,
    value: &str,
    stdin: bool,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(key, value)
        .stdin(if stdin { std::process::Stdio::piped() } else { std::process::Stdio::inherit() })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the child {test}: {e}"));
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let (lines, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits (60 s at most) for the child to print a line containing `prefix` and returns the rest.
pub async fn child_says(lines: &mut std::sync::mpsc::Receiver<String>, prefix: &'static str) -> String {
    let taken = std::mem::replace(lines, std::sync::mpsc::channel().1);
    let (rest, back) = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let timeout = deadline.saturating_duration_since(std::time::Instant::now());
            let line =
                taken.recv_timeout(timeout).unwrap_or_else(|_| panic!("the child never printed {prefix}"));
            if let Some((_, rest)) = line.split_once(prefix) {
                return (rest.trim().to_owned(), taken);
            }
        }
    })
    .await
    .expect("reader");
    *lines = back;
    rest
}

/// Like [`spawn_test_child`], with the child's stdin piped: the child can wait for it to close
/// (the parent dropping `child.stdin`, or dying) before it exits.
pub fn spawn_test_child_with_stdin(
    test: &str,
    key: &str,
    value: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    spawn_child(test, key, value, true)
}

/// Like [`child_says`], waiting up to `timeout`; returns the whole line.
pub async fn child_says_within(
    lines: &mut std::sync::mpsc::Receiver<String>,
    prefix: &'static str,
    timeout: Duration,
) -> String {
    let taken = std::mem::replace(lines, std::sync::mpsc::channel().1);
    let (line, back) = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = taken
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("the child never printed {prefix} within {timeout:?}"));
            if line.contains(prefix) {
                return (line, taken);
            }
        }
    })
    .await
    .expect("reader");
    *lines = back;
    line
}

/// Logs the framework's events to the test's output when `RUST_LOG` asks for them.
pub fn log_from_env() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init()
        .ok();
}

/// 10 ms per event: a slow handler, for flood tests (R15).
pub async fn slow(
    _: backbone::handler::Metadata,
    backbone::handler::State(handled): backbone::handler::State<Arc<std::sync::atomic::AtomicU64>>,
) {
    tokio::time::sleep(Duration::from_millis(10)).await;
    handled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// What a consumer's statistics and rebalance hooks saw ([`Watcher`]).
#[derive(Default)]
pub struct Observed {
    /// The topic watched.
    pub topic: String,
    /// The largest sum over the topic's partitions of `fetchq_size` (bytes) seen in one report.
    pub max_fetchq_bytes: std::sync::atomic::AtomicU64,
    /// Statistics reports so far.
    pub reports: std::sync::atomic::AtomicU64,
    /// Notified (all waiters) on each report.
    pub report: tokio::sync::Notify,
    /// Notified once partitions are assigned.
    pub assigned: tokio::sync::Notify,
}

/// Hooks that fill an [`Observed`].
pub struct Watcher(pub Arc<Observed>);

impl backbone::consume::ConsumerHooks for Watcher {
    fn assigned(&self, _topic: &str, partitions: &[i32]) {
        if !partitions.is_empty() {
            self.0.assigned.notify_one();
        }
    }

    fn statistics(&self, statistics: &rdkafka::Statistics) {
        use std::sync::atomic::Ordering::SeqCst;
        if let Some(topic) = statistics.topics.get(&self.0.topic) {
            let bytes: u64 =
                topic.partitions.iter().filter(|(p, _)| **p >= 0).map(|(_, p)| p.fetchq_size).sum();
            self.0.max_fetchq_bytes.fetch_max(bytes, SeqCst);
        }
        self.0.reports.fetch_add(1, SeqCst);
        self.0.report.notify_waiters();
    }
}
