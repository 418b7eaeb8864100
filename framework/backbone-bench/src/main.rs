//! Benchmarks of backbone against raw rdkafka on the same broker, in one run.
//!
//! Run with `cargo run --release -p backbone-bench -- publish` (starts a broker with the test kit,
//! or uses `KAFKA_BOOTSTRAP_SERVERS`).
//!
//! `publish`: the same events through a raw rdkafka `FutureProducer` and through a backbone
//! `Publisher`, with the same producer settings (backbone's durable ones), interleaved over three
//! rounds; prints a table and a last line `RESULT publish ratio=<backbone/raw msgs per s>`.

use std::time::{Duration, Instant};

use backbone::publish::producer_config;
use backbone::{Config, Outgoing, Publisher, Service, TopicSpec};
use backbone_testkit::{KafkaCluster, unique};
use rdkafka::producer::{FutureProducer, FutureRecord};

const EVENTS: usize = 200_000;
const KEYS: usize = 1_000;
const ROUNDS: usize = 3;
const PAYLOAD: usize = 100;

fn main() -> std::process::ExitCode {
    let what = std::env::args().nth(1).unwrap_or_default();
    match what.as_str() {
        "publish" => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
            runtime.block_on(publish());
            std::process::ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: backbone-bench publish");
            std::process::ExitCode::from(2)
        }
    }
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|k| format!("order-{k:06}")).collect()
}

async fn raw_round(producer: &FutureProducer, topic: &str, keys: &[String], payload: &[u8]) -> Duration {
    let started = Instant::now();
    let mut pending = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let record = FutureRecord::to(topic).key(keys[i % KEYS].as_bytes()).payload(payload);
        match producer.send_result(record) {
            Ok(f) => pending.push(f),
            Err((e, _)) => panic!("raw enqueue failed: {e}"),
        }
    }
    for f in pending {
        f.await.expect("delivery").expect("acknowledged");
    }
    started.elapsed()
}

async fn backbone_round(
    publisher: &Publisher,
    topic: &TopicSpec,
    keys: &[String],
    payload: &[u8],
) -> Duration {
    let started = Instant::now();
    let pending: Vec<_> = (0..EVENTS)
        .map(|i| publisher.publish(topic, Outgoing::new("OrderCreated", keys[i % KEYS].as_bytes(), payload)))
        .collect();
    for f in pending {
        f.await.expect("acknowledged");
    }
    started.elapsed()
}

async fn publish() {
    let external = std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok().filter(|s| !s.is_empty());
    let cluster = match &external {
        Some(b) => KafkaCluster::external(b.clone()),
        None => KafkaCluster::start_single().expect("start a broker"),
    };
    let service = unique("bench");
    let topic = TopicSpec::public(&service, "events", 1).partitions(6).build().expect("topic");
    let raw_topic = format!("{}-raw", topic.name());
    cluster.create_topic(topic.name(), 6, 1).await.expect("create topic");
    cluster.create_topic(&raw_topic, 6, 1).await.expect("create topic");

    let mut config = Config::default();
    config.bootstrap_servers = cluster.bootstrap_servers().to_owned();
    config.publish_queue = EVENTS;
    let spec = Service::new(&service).owns(&topic).spec().expect("spec");
    let publisher = Publisher::new(&config, &spec).expect("publisher");
    let raw: FutureProducer = producer_config(&config, &service).create().expect("raw producer");

    let keys = keys();
    let payload = vec![b'x'; PAYLOAD];
    // Warm both (connections, producer ids, metadata).
    raw_round_n(&raw, &raw_topic, &keys, &payload, 1_000).await;
    for i in 0..1_000 {
        publisher
            .publish(&topic, Outgoing::new("Warmup", keys[i % KEYS].as_bytes(), &payload))
            .await
            .expect("warm-up");
    }

    println!(
        "publish: {EVENTS} events of {PAYLOAD} bytes over {KEYS} keys, 6 partitions, acks=all + idempotence"
    );
    println!("{:<6} {:>14} {:>14} {:>7}", "round", "raw msg/s", "backbone msg/s", "ratio");
    let (mut raw_total, mut bb_total) = (Duration::ZERO, Duration::ZERO);
    for round in 1..=ROUNDS {
        // Interleave, alternating who goes first.
        let (r, b) = if round % 2 == 1 {
            let r = raw_round(&raw, &raw_topic, &keys, &payload).await;
            (r, backbone_round(&publisher, &topic, &keys, &payload).await)
        } else {
            let b = backbone_round(&publisher, &topic, &keys, &payload).await;
            (raw_round(&raw, &raw_topic, &keys, &payload).await, b)
        };
        raw_total += r;
        bb_total += b;
        let (rr, br) = (rate(r), rate(b));
        println!("{round:<6} {rr:>14.0} {br:>14.0} {:>7.3}", br / rr);
    }
    let (rr, br) = (rate(raw_total / ROUNDS as u32), rate(bb_total / ROUNDS as u32));
    println!("{:<6} {rr:>14.0} {br:>14.0} {:>7.3}", "all", br / rr);
    println!("RESULT publish ratio={:.3}", br / rr);
}

async fn raw_round_n(producer: &FutureProducer, topic: &str, keys: &[String], payload: &[u8], n: usize) {
    for i in 0..n {
        let record = FutureRecord::to(topic).key(keys[i % KEYS].as_bytes()).payload(payload);
        producer.send(record, Duration::from_secs(30)).await.expect("warm-up");
    }
}

fn rate(d: Duration) -> f64 {
    EVENTS as f64 / d.as_secs_f64()
}
