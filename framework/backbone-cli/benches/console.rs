//! Run with `cargo bench -p backbone-cli --bench console`.
//!
//! The console over a large estate: 10 services owning 200 topics (3 partitions, 20 records each),
//! 50 consumer groups with committed offsets on 4 topics each (some behind), 5 dead-letter topics of
//! 40 dead letters, 20 registered subjects; on a real broker and registry started here. The
//! console (`backbone console`, the bench profile's build) reads the cluster every 2 s; each page
//! is asked for 20 times in a row and timed from request to the last byte. The goal: every page
//! under 500 ms.
//!
//! Prints a table and `RESULT console pages= worst_p95_ms= collect_ms= topics= groups=`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use backbone::{Service, TopicSpec};
use backbone_testkit::{KafkaCluster, SchemaRegistry};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const SERVICES: usize = 10;
const TOPICS_PER_SERVICE: usize = 20;
const PARTITIONS: i32 = 3;
const RECORDS: usize = 20;
const GROUPS: usize = 50;
const DEAD_LETTER_TOPICS: usize = 5;
const LETTERS: usize = 40;
const SUBJECTS: usize = 20;
const ROUNDS: usize = 20;
const GOAL: Duration = Duration::from_millis(500);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn dead_letter_headers() -> OwnedHeaders {
    [
        ("backbone-dlq-error-kind", "handler"),
        ("backbone-dlq-error-message", "no such product"),
        ("backbone-dlq-handler", "reserve"),
        ("backbone-dlq-attempts", "3"),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value) }))
}

#[tokio::main]
async fn main() {
    let kafka = tokio::task::spawn_blocking(KafkaCluster::start_single).await.unwrap().expect("a broker");
    let registry = tokio::task::spawn_blocking(SchemaRegistry::start).await.unwrap().expect("a registry");
    let started = Instant::now();

    // The estate: services and their public topics, as specs the console reads.
    let mut specs = Vec::new();
    let mut topics = Vec::new();
    for s in 0..SERVICES {
        let name = format!("svc{s}");
        let mut service = Service::new(&name);
        for t in 0..TOPICS_PER_SERVICE {
            let topic =
                TopicSpec::public(&name, format!("event{t}"), 1).partitions(PARTITIONS).build().unwrap();
            service = service.owns(&topic);
            topics.push(topic);
        }
        specs.push(service.spec().unwrap().to_json());
    }
    let dir = tempfile::tempdir().unwrap();
    let spec_file = dir.path().join("estate.json");
    std::fs::write(&spec_file, format!("[{}]", specs.join(","))).unwrap();
    let dead_letters: Vec<String> = (0..DEAD_LETTER_TOPICS)
        .map(|i| format!("svc{i}.private.dlq.svc{}.public.event0-v1", (i + 1) % SERVICES))
        .collect();
    for topic in &topics {
        kafka.create_topic(topic.name(), PARTITIONS, 1).await.unwrap();
    }
    for topic in &dead_letters {
        kafka.create_topic(topic, 1, 1).await.unwrap();
    }

    // Records, dead letters (with the headers the consumer runtime writes), committed offsets.
    let producer: FutureProducer = kafka.client_config().set("linger.ms", "20").create().unwrap();
    let mut sends = Vec::new();
    let keys: Vec<String> = (0..RECORDS.max(LETTERS)).map(|r| format!("k{r}")).collect();
    for topic in &topics {
        for key in &keys[..RECORDS] {
            let record = FutureRecord::to(topic.name()).key(key).payload("{\"n\":1}");
            sends.push(producer.send_result(record).unwrap());
        }
    }
    for topic in &dead_letters {
        for key in &keys[..LETTERS] {
            let record = FutureRecord::to(topic).key(key).payload("{\"n\":1}").headers(dead_letter_headers());
            sends.push(producer.send_result(record).unwrap());
        }
    }
    for send in sends {
        send.await.unwrap().unwrap();
    }
    for g in 0..GROUPS {
        let group: BaseConsumer =
            kafka.client_config().set("group.id", format!("group{g}")).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        let behind = if g % 5 == 0 { 3 } else { 0 };
        for t in 0..4 {
            let topic = &topics[(g * 4 + t) % topics.len()];
            for p in 0..PARTITIONS {
                let at = (RECORDS as i64 / PARTITIONS as i64 - behind).max(0);
                tpl.add_partition_offset(topic.name(), p, Offset::Offset(at)).unwrap();
            }
        }
        group.commit(&tpl, CommitMode::Sync).unwrap();
    }
    let client = backbone::schema::Registry::new(registry.url()).unwrap();
    for i in 0..SUBJECTS {
        let schema = format!(
            r#"{{"type":"record","name":"Event{i}","fields":[{{"name":"id","type":"string"}},{{"name":"n","type":"long"}}]}}"#
        );
        client.register(&format!("svc{}.public.event{i}-v1-value", i % SERVICES), &schema).await.unwrap();
    }
    eprintln!("estate made in {:.1}s", started.elapsed().as_secs_f64());

    // The console.
    let mut console = tokio::process::Command::new(env!("CARGO_BIN_EXE_backbone"))
        .args(["console", "--spec"])
        .arg(&spec_file)
        .args(["--listen", "127.0.0.1:0", "--refresh", "2"])
        .env("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers())
        .env("SCHEMA_REGISTRY_URL", registry.url())
        .env("BACKBONE_PROFILE", "development")
        .env_remove("KAFKA_SECURITY_PROTOCOL")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("backbone console");
    let mut lines = BufReader::new(console.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().expect("the console's address");
    let base =
        line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    // The first full read: the topics page then marks each declared topic, and its footer says how
    // long the read took.
    let deadline = Instant::now() + Duration::from_secs(120);
    let collect_ms = loop {
        let page = http.get(format!("{base}/topics")).send().await.unwrap().text().await.unwrap();
        if page.contains("as declared") {
            let footer = page.rsplit(" in ").next().unwrap_or_default();
            break footer.split(" ms").next().and_then(|n| n.trim().parse::<u64>().ok()).unwrap_or(0);
        }
        assert!(Instant::now() < deadline, "the console did not read the cluster within 120 s");
        tokio::time::sleep(Duration::from_millis(250)).await; // the collector's pace: nothing to await
    };

    let pages = [
        "/".to_owned(),
        "/topics".to_owned(),
        "/groups".to_owned(),
        "/dead-letters".to_owned(),
        format!("/dead-letters/{}", dead_letters[0]),
        format!("/dead-letters/{}/7", dead_letters[0]),
        "/schemas".to_owned(),
        "/schemas/svc1.public.event1".to_owned(),
    ];
    println!("{:<52} {:>9} {:>9} {:>9} {:>9}", "page", "p50 ms", "p95 ms", "max ms", "KiB");
    let mut worst = Duration::ZERO;
    for page in &pages {
        let mut times = Vec::with_capacity(ROUNDS);
        let mut size = 0;
        for _ in 0..ROUNDS {
            let at = Instant::now();
            let response = http.get(format!("{base}{page}")).send().await.unwrap();
            assert!(response.status().is_success(), "{page}: {}", response.status());
            size = response.bytes().await.unwrap().len();
            times.push(at.elapsed());
        }
        times.sort();
        let p95 = percentile(&times, 0.95);
        worst = worst.max(p95);
        println!(
            "{page:<52} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3,
            size as f64 / 1024.0
        );
    }
    let all_topics = topics.len() + dead_letters.len();
    // A later read: the clients exist, the ages are known.
    let page = http.get(format!("{base}/topics")).send().await.unwrap().text().await.unwrap();
    let footer = page.rsplit(" in ").next().unwrap_or_default();
    let later_ms = footer.split(" ms").next().and_then(|n| n.trim().parse::<u64>().ok()).unwrap_or(0);
    println!(
        "collector: a read of {all_topics} topics ({} partitions) and {GROUPS} groups: the first {collect_ms} ms \
         (clients made, drift checked), a later one {later_ms} ms",
        topics.len() * PARTITIONS as usize + dead_letters.len()
    );
    println!(
        "RESULT console pages={} worst_p95_ms={:.1} collect_ms={later_ms} first_collect_ms={collect_ms} topics={all_topics} groups={GROUPS} \
         goal_ms={} met={}",
        pages.len(),
        worst.as_secs_f64() * 1e3,
        GOAL.as_millis(),
        worst < GOAL
    );
    let _ = console.kill().await;
}
