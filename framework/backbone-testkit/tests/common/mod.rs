//! Helpers shared by the smoke tests: a keyed round trip through rdkafka.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::{Duration, Instant};

use backbone_testkit::{KafkaCluster, unique};
use futures::StreamExt as _;
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Publishes one event per seq in `seqs` (payload: the seq) over `keys` keys with an idempotent
/// producer and waits for every acknowledgement; returns (key, seq) pairs in send order.
pub async fn publish(
    kafka: &KafkaCluster,
    topic: &str,
    seqs: Range<usize>,
    keys: usize,
) -> Vec<(String, usize)> {
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let sent: Vec<(String, usize)> = seqs.map(|seq| (format!("key-{}", seq % keys), seq)).collect();
    let deliveries = futures::future::join_all(sent.iter().map(|(key, seq)| {
        let payload = seq.to_string();
        let producer = &producer;
        async move {
            producer.send(FutureRecord::to(topic).key(key).payload(&payload), Duration::from_secs(30)).await
        }
    }))
    .await;
    for d in deliveries {
        d.expect("every publish is acknowledged");
    }
    sent
}

/// A consumer in a fresh group reading `topic` from the beginning.
pub fn consumer(config: ClientConfig, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = config
        .clone()
        .set("group.id", unique("group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Reads until `expected` distinct events arrived (or the deadline), then asserts that every one was
/// read, none twice, and per key in send order.
pub async fn assert_reads_all(consumer: &StreamConsumer, sent: &[(String, usize)]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut total = 0;
    let mut stream = consumer.stream();
    while total < sent.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(remaining, stream.next())
            .await
            .unwrap_or_else(|_| panic!("read {total} of {} events before the deadline", sent.len()))
            .expect("stream ends only on drop")
            .expect("no consumer error");
        let key = String::from_utf8(msg.key().expect("key").to_vec()).expect("utf-8 key");
        let seq: usize =
            std::str::from_utf8(msg.payload().expect("payload")).expect("utf-8").parse().expect("seq");
        seen.entry(key).or_default().push(seq);
        total += 1;
    }
    let expected: BTreeSet<usize> = sent.iter().map(|(_, s)| *s).collect();
    let got: BTreeSet<usize> = seen.values().flatten().copied().collect();
    assert_eq!(got, expected, "every acknowledged event is read");
    assert_eq!(total, sent.len(), "no event is read twice");
    for (key, seqs) in &seen {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "events of {key} arrive in send order: {seqs:?}");
    }
}
