//! `publish`: the same events through a raw rdkafka `FutureProducer` and through a backbone
//! `Publisher`, interleaved.

use std::time::{Duration, Instant};

use backbone::publish::producer_config;
use backbone::{Config, Outgoing, Publisher, Service, TopicSpec};
use backbone_testkit::unique;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::common::{EVENTS, KEYS, cluster, cpu_us, keys, rate, raw_headers, with_cpu};

const ROUNDS: usize = 5;
pub(crate) const PAYLOAD: usize = 100;

/// Publishes `n` events with the raw producer and waits for every acknowledgement.
pub(crate) async fn raw_round(
    n: usize,
    producer: &FutureProducer,
    topic: &str,
    keys: &[String],
    payload: &[u8],
    headers: Option<&OwnedHeaders>,
) -> Duration {
    let started = Instant::now();
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let mut record = FutureRecord::to(topic).key(keys[i % KEYS].as_bytes()).payload(payload);
        if let Some(h) = headers {
            record = record.headers(h.clone());
        }
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

/// Publishes `n` events with backbone's publisher and waits for every acknowledgement.
pub(crate) async fn backbone_round(
    n: usize,
    publisher: &Publisher,
    topic: &TopicSpec,
    keys: &[String],
    payload: &[u8],
) -> Duration {
    let started = Instant::now();
    let pending: Vec<_> = (0..n)
        .map(|i| publisher.publish(topic, Outgoing::new("OrderCreated", keys[i % KEYS].as_bytes(), payload)))
        .collect();
    for f in pending {
        f.await.expect("acknowledged");
    }
    started.elapsed()
}

pub(crate) async fn publish() {
    let cluster = cluster();
    let service = unique("bench");
    let topic = TopicSpec::public(&service, "order-created", 1).partitions(6).build().expect("topic");
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

    let raw_headers = raw_headers(&service);
    println!(
        "publish: {EVENTS} events of {PAYLOAD} bytes over {KEYS} keys, 6 partitions, acks=all + idempotence"
    );
    println!(
        "raw = rdkafka FutureProducer, same settings, same key, payload and header sizes; bare = raw without headers"
    );
    println!(
        "{:<6} {:>12} {:>12} {:>14} {:>7} {:>8}",
        "round", "bare msg/s", "raw msg/s", "backbone msg/s", "ratio", "vs bare"
    );
    let (mut bare_total, mut raw_total, mut bb_total) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    // Client CPU per side over all rounds: stable where throughput swings with the shared machine.
    let mut cpu = [Duration::ZERO; 3];
    for round in 1..=ROUNDS {
        // Interleave, rotating who goes first.
        let mut times = [Duration::ZERO; 3];
        for step in 0..3 {
            let who = (round + step) % 3;
            let (time, used) = match who {
                0 => with_cpu(raw_round(EVENTS, &raw, &raw_topic, &keys, &payload, None)).await,
                1 => with_cpu(raw_round(EVENTS, &raw, &raw_topic, &keys, &payload, Some(&raw_headers))).await,
                _ => with_cpu(backbone_round(EVENTS, &publisher, &topic, &keys, &payload)).await,
            };
            times[who] = time;
            cpu[who] += used;
        }
        let [bare, r, b] = times;
        bare_total += bare;
        raw_total += r;
        bb_total += b;
        let (ba, rr, br) = (rate(bare), rate(r), rate(b));
        println!("{round:<6} {ba:>12.0} {rr:>12.0} {br:>14.0} {:>7.3} {:>8.3}", br / rr, br / ba);
    }
    let n = ROUNDS as u32;
    let (ba, rr, br) = (rate(bare_total / n), rate(raw_total / n), rate(bb_total / n));
    println!("{:<6} {ba:>12.0} {rr:>12.0} {br:>14.0} {:>7.3} {:>8.3}", "all", br / rr, br / ba);
    let [cpu_bare, cpu_raw, cpu_bb] = cpu.map(|c| cpu_us(c / n));
    println!(
        "{:<6} {cpu_bare:>12.2} {cpu_raw:>12.2} {cpu_bb:>14.2} {:>7.3}   (client CPU µs per event)",
        "cpu",
        cpu_bb / cpu_raw
    );
    println!(
        "RESULT publish ratio={:.3} vs_bare={:.3} msgs_per_s={br:.0} cpu_ratio={:.3} cpu_vs_bare={:.3}",
        br / rr,
        br / ba,
        cpu_bb / cpu_raw,
        cpu_bb / cpu_bare
    );
}

async fn raw_round_n(producer: &FutureProducer, topic: &str, keys: &[String], payload: &[u8], n: usize) {
    for i in 0..n {
        let record = FutureRecord::to(topic).key(keys[i % KEYS].as_bytes()).payload(payload);
        producer.send(record, Duration::from_secs(30)).await.expect("warm-up");
    }
}
