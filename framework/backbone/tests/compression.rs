//! Issue 14, item 12: librdkafka is built with zstd (and lz4 and snappy): a zstd batch written by
//! Kafka's own Java producer is consumed, and a publisher set to `compression.type=zstd` round-trips;
//! Kafka's `DumpLogSegments` shows the batches on disk are zstd-compressed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone::consume::{Consumer, dead_letter_topic};
use backbone::handler::{BoxedHandler, Event, HandlerError, State};
use backbone::{Config, Outgoing, Service, TopicSpec};
use backbone_testkit::{shared_kafka, unique};

mod common;

#[derive(Clone, Default)]
struct Seen {
    payloads: Arc<Mutex<Vec<String>>>,
    done: Arc<tokio::sync::Notify>,
    expected: usize,
}

async fn take(Event(payload): Event<String>, State(seen): State<Seen>) -> Result<(), HandlerError> {
    let mut payloads = seen.payloads.lock().unwrap();
    payloads.push(payload);
    if payloads.len() == seen.expected {
        seen.done.notify_one();
    }
    Ok(())
}

/// Consumes `topic` with a backbone consumer of `service` until `expected` events are handled (60 s
/// at most) and returns their payloads.
async fn consume_all(config: &Config, service: &str, topic: &TopicSpec, expected: usize) -> Vec<String> {
    let dlq = dead_letter_topic(service, topic).unwrap();
    let spec = Service::new(service).owns(topic).owns(&dlq).consumes(topic).spec().unwrap();
    let running = spec.start(config).await.unwrap();
    let seen = Seen { expected, ..Seen::default() };
    let consumer =
        Consumer::new(&running.context(), topic, BoxedHandler::named("take", take), seen.clone()).unwrap();
    let done = seen.done.clone();
    tokio::time::timeout(Duration::from_secs(60), consumer.run(async move { done.notified().await }))
        .await
        .unwrap_or_else(|_| panic!("{expected} events within 60 s; got {:?}", seen.payloads.lock().unwrap()))
        .unwrap();
    seen.payloads.lock().unwrap().clone()
}

/// The Java binary running the test kit's broker, and the broker's JVM argument file (Kafka's
/// classpath): Kafka's own tools run with them.
fn kafka_java() -> (PathBuf, PathBuf) {
    let kafka = shared_kafka();
    let dir =
        kafka.work_dir().expect("these tests run Kafka's Java tools: they need the test kit's own broker");
    let pid = kafka.pids()[0];
    let java = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the broker's java binary");
    (java, dir.join("jvm.args"))
}

/// The segment files of the partitions whose directory `matches` in the test kit's broker.
fn segments(matches: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    fn find(dir: &Path, matches: &dyn Fn(&str) -> bool, out: &mut Vec<PathBuf>) {
        for path in std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()) {
            if !path.is_dir() {
                continue;
            }
            if path.file_name().and_then(|n| n.to_str()).is_some_and(matches) {
                let logs = std::fs::read_dir(&path).into_iter().flatten().flatten().map(|e| e.path());
                out.extend(logs.filter(|p| p.extension().is_some_and(|e| e == "log")));
            } else {
                find(&path, matches, out);
            }
        }
    }
    let mut out = Vec::new();
    find(shared_kafka().work_dir().unwrap(), &matches, &mut out);
    out
}

/// Kafka's `DumpLogSegments` over `files`, with `extra` arguments: its output.
fn dump(files: &[PathBuf], extra: &[&str]) -> String {
    assert!(!files.is_empty(), "no segments to dump");
    let (java, args) = kafka_java();
    let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let out = Command::new(java)
        .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m"])
        .arg(format!("@{}", args.display()))
        .arg("kafka.tools.DumpLogSegments")
        .arg("--files")
        .arg(files.join(","))
        .args(extra)
        .output()
        .expect("DumpLogSegments runs");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The compression codecs of the record batches of partition 0 of `topic`, by Kafka's
/// `DumpLogSegments`.
fn codecs_on_disk(topic: &str) -> Vec<String> {
    let partition = format!("{topic}-0");
    let text = dump(&segments(|name| name == partition), &[]);
    let codecs: Vec<String> = text
        .lines()
        .filter_map(|l| l.split("compresscodec: ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or_default().to_owned())
        .collect();
    assert!(!codecs.is_empty(), "DumpLogSegments said: {text}");
    codecs
}

#[test]
fn item_12_librdkafka_is_built_with_zstd_lz4_and_snappy() {
    let native = rdkafka::ClientConfig::new().create_native_config().unwrap();
    let features = native.get("builtin.features").unwrap();
    for codec in ["zstd", "lz4", "snappy", "gzip"] {
        assert!(features.split(',').any(|f| f == codec), "{codec} missing from builtin.features: {features}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_12_a_zstd_batch_from_the_java_producer_is_consumed() {
    let config = common::config(shared_kafka().bootstrap_servers());
    let service = unique("item12java");
    let topic = TopicSpec::public(&service, "events", 1).partitions(1).build().unwrap();
    shared_kafka().create_topic(topic.name(), 1, 1).await.unwrap();

    // Kafka's console producer, zstd, all lines in as few batches as it makes.
    const EVENTS: usize = 50;
    let (java, args) = kafka_java();
    let mut producer = Command::new(java)
        .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m"])
        .arg(format!("@{}", args.display()))
        .arg("org.apache.kafka.tools.ConsoleProducer")
        .args(["--bootstrap-server", shared_kafka().bootstrap_servers(), "--topic", topic.name()])
        // `--compression-codec`, not `--producer-property compression.type=…`, which the tool overrides.
        .args(["--compression-codec", "zstd", "--producer-property", "linger.ms=200"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the console producer starts");
    {
        let mut stdin = producer.stdin.take().unwrap();
        for n in 0..EVENTS {
            writeln!(stdin, "java-zstd-{n}").unwrap();
        }
    } // closing stdin ends the producer once it has sent everything
    let out = tokio::task::spawn_blocking(move || producer.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "console producer: {}", String::from_utf8_lossy(&out.stderr));
    let codecs = tokio::task::spawn_blocking({
        let name = topic.name().to_owned();
        move || codecs_on_disk(&name)
    })
    .await
    .unwrap();
    assert!(codecs.iter().all(|c| c == "zstd"), "batches on disk: {codecs:?}");
    println!("item 12: the Java producer wrote {} zstd batch(es)", codecs.len());

    let payloads = consume_all(&config, &service, &topic, EVENTS).await;
    assert_eq!(payloads, (0..EVENTS).map(|n| format!("java-zstd-{n}")).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_12_a_publisher_set_to_zstd_round_trips() {
    let mut config = common::config(shared_kafka().bootstrap_servers());
    config.producer_overrides.insert("compression.type".into(), "zstd".into());
    let service = unique("item12pub");
    let topic = TopicSpec::public(&service, "events", 1).partitions(1).build().unwrap();
    let dlq = dead_letter_topic(&service, &topic).unwrap();
    let spec = Service::new(&service).owns(&topic).owns(&dlq).spec().unwrap();
    let running = spec.start(&config).await.unwrap();
    const EVENTS: usize = 50;
    let payloads: Vec<String> = (0..EVENTS).map(|n| format!("rust-zstd-{n}")).collect();
    let sends =
        payloads.iter().map(|p| running.publisher().publish(&topic, Outgoing::new("E", b"k", p.as_bytes())));
    for sent in futures::future::join_all(sends).await {
        sent.expect("published with zstd");
    }
    let codecs = tokio::task::spawn_blocking({
        let name = topic.name().to_owned();
        move || codecs_on_disk(&name)
    })
    .await
    .unwrap();
    assert!(codecs.iter().all(|c| c == "zstd"), "batches on disk: {codecs:?}");
    println!("item 12: the publisher wrote {} zstd batch(es)", codecs.len());
    assert_eq!(consume_all(&config, &service, &topic, EVENTS).await, payloads);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_12_committed_offsets_carry_the_leader_epoch() {
    let config = common::config(shared_kafka().bootstrap_servers());
    let service = unique("item12epoch");
    let topic = TopicSpec::public(&service, "events", 1).partitions(1).build().unwrap();
    let dlq = dead_letter_topic(&service, &topic).unwrap();
    let spec = Service::new(&service).owns(&topic).owns(&dlq).spec().unwrap();
    let running = spec.start(&config).await.unwrap();
    for n in 0..5 {
        running
            .publisher()
            .publish(&topic, Outgoing::new("E", b"k", format!("e-{n}").as_bytes()))
            .await
            .unwrap();
    }
    assert_eq!(consume_all(&config, &service, &topic, 5).await.len(), 5);

    // The group's commits as the broker stored them (the consumer committed on leaving).
    let group = format!("\"group\":\"{service}.take\"");
    let text = tokio::task::spawn_blocking(|| {
        dump(&segments(|name| name.starts_with("__consumer_offsets-")), &["--offsets-decoder"])
    })
    .await
    .unwrap();
    let commits: Vec<&str> =
        text.lines().filter(|l| l.contains(&group) && l.contains("\"offset\":")).collect();
    assert!(!commits.is_empty(), "no commit of {group} in __consumer_offsets");
    let last = commits.last().unwrap();
    println!("item 12: last commit {last}");
    assert!(last.contains("\"offset\":5"), "{last}");
    // The topic's partition has had one leader, epoch 0; the deprecated store sent -1 (unknown).
    assert!(last.contains("\"leaderEpoch\":0"), "the commit carries no leader epoch: {last}");
}
