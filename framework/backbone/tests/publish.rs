//! Publishing against the real broker: acknowledgement, keyed order, headers, ownership, backpressure;
//! and R4 / R13a, which need no broker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone::publish::headers;
use backbone::{Config, ConfigError, Outgoing, PublishError, Publisher, Service, TopicSpec};
use backbone_testkit::oracle::Oracle;
use backbone_testkit::{shared_kafka, unique};
use rdkafka::Message as _;
use rdkafka::message::Headers as _;

mod common;

#[tokio::test]
async fn publish_resolves_with_the_acknowledged_partition_and_offset_and_headers() {
    let kafka = shared_kafka();
    let (service, topic) = common::owned_topic(3);
    kafka.create_topic(topic.name(), 3, 1).await.expect("topic");
    let publisher = common::publisher(&common::config(kafka.bootstrap_servers()), &service, &topic);

    let delivery = backbone::trace::with_correlation_id("req-7", async {
        publisher.publish(&topic, Outgoing::new("OrderCreated", b"order-1", b"payload")).await
    })
    .await
    .expect("acknowledged");

    // Read exactly that partition and offset back.
    let consumer: rdkafka::consumer::BaseConsumer =
        kafka.client_config().set("group.id", unique("g")).create().expect("consumer");
    let msg = read_at(&consumer, topic.name(), delivery);
    assert_eq!((msg.partition(), msg.offset()), (delivery.partition, delivery.offset));
    assert_eq!(msg.key(), Some(&b"order-1"[..]));
    assert_eq!(msg.payload(), Some(&b"payload"[..]));
    // Minimal metadata: the type (the topic `…events-v1` does not name it), the correlation id (not
    // the trace id), traceparent; no producer (the topic's owner).
    assert_eq!(header(&msg, headers::EVENT_TYPE).as_deref(), Some("OrderCreated"));
    assert_eq!(header(&msg, headers::PRODUCER), None);
    assert_eq!(header(&msg, headers::CORRELATION_ID).as_deref(), Some("req-7"));
    assert_eq!(msg.headers().map(|h| h.count()), Some(3));
    let traceparent = header(&msg, headers::TRACEPARENT).expect("traceparent");
    assert!(backbone::trace::TraceContext::parse(&traceparent).is_some(), "valid W3C: {traceparent}");
    assert_eq!(delivery.to_string(), format!("{}:{}", delivery.partition, delivery.offset));

    // Without a correlation id in scope, the event's own trace id names its causal chain.
    let second =
        publisher.publish(&topic, Outgoing::new("OrderCreated", b"order-1", b"again")).await.unwrap();
    assert_eq!(second.partition, delivery.partition);
    let msg = read_at(&consumer, topic.name(), second);
    let traceparent = header(&msg, headers::TRACEPARENT).expect("traceparent");
    assert!(backbone::trace::TraceContext::parse(&traceparent).is_some(), "valid W3C: {traceparent}");
    // It is not written: readers take the trace id.
    assert_eq!(header(&msg, headers::CORRELATION_ID), None);
    assert_eq!(header(&msg, headers::EVENT_TYPE).as_deref(), Some("OrderCreated"));

    // An event of the type the topic is named for (`Events`): traceparent alone.
    let third = publisher.publish(&topic, Outgoing::new("Events", b"order-1", b"third")).await.unwrap();
    let msg = read_at(&consumer, topic.name(), third);
    assert_eq!(msg.headers().map(|h| h.count()), Some(1));
    assert!(header(&msg, headers::TRACEPARENT).is_some());

    // Opting in to the old four.
    let fourth = publisher
        .publish(&topic, Outgoing::new("OrderCreated", b"order-1", b"fourth").full_metadata())
        .await
        .unwrap();
    let msg = read_at(&consumer, topic.name(), fourth);
    assert_eq!(header(&msg, headers::PRODUCER).as_deref(), Some(service.as_str()));
    assert_eq!(msg.headers().map(|h| h.count()), Some(4));
}

/// The record at `delivery` in `topic`, read with `consumer` (assigned there).
fn read_at(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    delivery: backbone::Delivery,
) -> rdkafka::message::OwnedMessage {
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, delivery.partition, rdkafka::Offset::Offset(delivery.offset))
        .expect("tpl");
    rdkafka::consumer::Consumer::assign(consumer, &tpl).expect("assign");
    loop {
        if let Some(m) = consumer.poll(Duration::from_secs(1)) {
            return m.expect("read").detach();
        }
    }
}

/// A header's value as text.
fn header(msg: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    msg.headers()
        .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
        .map(|v| String::from_utf8(v.to_vec()).expect("utf-8"))
}

#[tokio::test]
async fn same_key_same_partition_in_order() {
    let kafka = shared_kafka();
    let (service, topic) = common::owned_topic(6);
    kafka.create_topic(topic.name(), 6, 1).await.expect("topic");
    let publisher = common::publisher(&common::config(kafka.bootstrap_servers()), &service, &topic);
    for key in ["a", "b", "c", "order-42"] {
        let mut deliveries = Vec::new();
        for i in 0..20 {
            let payload = i.to_string();
            deliveries.push(
                publisher
                    .publish(&topic, Outgoing::new("E", key.as_bytes(), payload.as_bytes()))
                    .await
                    .unwrap(),
            );
        }
        assert!(deliveries.iter().all(|d| d.partition == deliveries[0].partition), "{key}: one partition");
        assert!(deliveries.windows(2).all(|w| w[0].offset < w[1].offset), "{key}: offsets increase");
    }
}

#[tokio::test]
async fn keyed_partitioning_matches_the_java_client() {
    // murmur2 of the key, positive, modulo partitions: what Java's DefaultPartitioner does, so Java
    // and Rust services put an entity on the same partition. Known value: murmur2("order-42").
    let kafka = shared_kafka();
    let (service, topic) = common::owned_topic(6);
    kafka.create_topic(topic.name(), 6, 1).await.expect("topic");
    let publisher = common::publisher(&common::config(kafka.bootstrap_servers()), &service, &topic);
    for key in ["order-1", "order-2", "customer-9", "x"] {
        let d = publisher.publish(&topic, Outgoing::new("E", key.as_bytes(), b"")).await.unwrap();
        assert_eq!(d.partition, java_partition(key.as_bytes(), 6), "key {key}");
    }
}

/// Kafka's Java `Utils.murmur2` and `toPositive(hash) % partitions`.
fn java_partition(key: &[u8], partitions: i32) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let len = key.len();
    let mut h: u32 = SEED ^ len as u32;
    let chunks = key.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % partitions as u32) as i32
}

#[tokio::test]
async fn publishing_to_a_topic_the_service_does_not_own_fails_fast() {
    let kafka = shared_kafka();
    let (service, topic) = common::owned_topic(1);
    let (_, foreign) = common::owned_topic(1);
    let publisher = common::publisher(&common::config(kafka.bootstrap_servers()), &service, &topic);
    let err = publisher.publish(&foreign, Outgoing::new("E", b"k", b"v")).await.unwrap_err();
    assert!(matches!(err, PublishError::NotOwner { .. }), "{err:?}");
    assert!(!err.is_retriable());
    let text = err.to_string();
    assert!(
        text.contains(&service) && text.contains(foreign.name()) && text.contains(foreign.owner()),
        "{text}"
    );
}

#[tokio::test]
async fn a_small_publish_queue_makes_publishers_wait_not_fail() {
    let kafka = shared_kafka();
    let (service, topic) = common::owned_topic(2);
    kafka.create_topic(topic.name(), 2, 1).await.expect("topic");
    let mut config = common::config(kafka.bootstrap_servers());
    config.publish_queue = 8;
    let publisher = common::publisher(&config, &service, &topic);
    let oracle = Arc::new(Mutex::new(Oracle::new()));
    let errors = common::publish_oracle(&publisher, &topic, 2_000, 10, 2_000, &oracle, |_| {}).await;
    assert!(errors.is_empty(), "no publish fails under backpressure: {errors:?}");
    let report = common::check(kafka.client_config(), &topic, 2_000, oracle).await;
    assert!(report.is_clean() && report.acknowledged == 2_000, "{report}");
}

#[tokio::test]
async fn close_flushes_and_then_refuses() {
    let kafka = shared_kafka();
    let (service, topic) = common::owned_topic(1);
    kafka.create_topic(topic.name(), 1, 1).await.expect("topic");
    let publisher = common::publisher(&common::config(kafka.bootstrap_servers()), &service, &topic);
    let p = publisher.clone();
    let t = topic.clone();
    let in_flight = tokio::spawn(async move { p.publish(&t, Outgoing::new("E", b"k", b"v")).await });
    tokio::task::yield_now().await;
    publisher.close(Duration::from_secs(30)).await.expect("close");
    // Whatever was accepted before close is acknowledged; nothing is accepted after.
    if let Ok(result) = in_flight.await.expect("join") {
        assert!(result.offset >= 0);
    }
    let err = publisher.publish(&topic, Outgoing::new("E", b"k", b"v")).await.unwrap_err();
    assert!(matches!(err, PublishError::Closed), "{err:?}");
}

#[test]
fn r4_weak_producer_settings_are_refused_at_startup() {
    let topic = TopicSpec::public("orders", "order-created", 1).build().unwrap();
    let spec = Service::new("orders").owns(&topic).spec().unwrap();
    for (key, value) in [
        ("acks", "1"),
        ("acks", "0"),
        ("request.required.acks", "1"),
        ("enable.idempotence", "false"),
        ("max.in.flight.requests.per.connection", "10"),
        ("retries", "0"),
    ] {
        let mut config = Config::default();
        config.producer_overrides.insert(key.into(), value.into());
        let err = Publisher::new(&config, &spec).expect_err("refused without the opt-in");
        match &err {
            PublishError::Config(ConfigError::UnsafeProducerSetting { setting, value: v, .. }) => {
                assert_eq!((setting.as_str(), v.as_str()), (key, value));
            }
            other => panic!("expected an unsafe-setting error for {key}={value}, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&format!("{key}={value}"))
                && text.contains("BACKBONE_UNSAFE_ALLOW_WEAK_DURABILITY"),
            "{text}"
        );

        // From the environment too, naming the variable's setting.
        let env = Config::from_lookup("orders", |k| {
            (k == format!("KAFKA_PRODUCER_{}", key.replace('.', "_").to_uppercase()))
                .then(|| value.to_owned())
        });
        assert!(matches!(env, Err(ConfigError::UnsafeProducerSetting { .. })), "{key}: {env:?}");

        // With the explicit opt-in, the producer is built.
        config.allow_weak_durability = true;
        Publisher::new(&config, &spec).expect("allowed with the explicit opt-in");
    }
    // Durable values are fine without the opt-in.
    let mut config = Config::default();
    config.producer_overrides.insert("acks".into(), "all".into());
    config.producer_overrides.insert("enable.idempotence".into(), "true".into());
    Publisher::new(&config, &spec).expect("durable overrides are accepted");
}

#[test]
fn r13a_declaring_another_services_topics_is_refused_at_startup() {
    let order_created = TopicSpec::public("orders", "order-created", 1).build().unwrap();
    let payments = TopicSpec::private("orders", "payments").build().unwrap();

    let write = Service::new("stock").produces(&order_created).spec().unwrap_err().to_string();
    for part in ["stock", "orders", "orders.public.order-created-v1"] {
        assert!(write.contains(part), "`{write}` names {part}");
    }
    let own = Service::new("stock").owns(&payments).spec().unwrap_err().to_string();
    assert!(own.contains("stock") && own.contains("orders.private.payments"), "{own}");

    let read = Service::new("stock").consumes(&payments).spec().unwrap_err().to_string();
    for part in ["stock", "orders", "orders.private.payments", "private"] {
        assert!(read.contains(part), "`{read}` names {part}");
    }
    // Reading a public topic and owning its own topics is fine; the owner may read its private topic.
    Service::new("stock").consumes(&order_created).spec().expect("public topics are readable");
    Service::new("orders").owns(&payments).consumes(&payments).spec().expect("owners read their own");
}

#[tokio::test]
async fn publishes_enqueue_in_call_order_however_they_are_awaited() {
    let kafka = shared_kafka();
    let (service, topic) = common::owned_topic(1);
    kafka.create_topic(topic.name(), 1, 1).await.expect("topic");
    let mut config = common::config(kafka.bootstrap_servers());
    config.publish_queue = 4; // most calls must wait their turn
    let publisher = common::publisher(&config, &service, &topic);
    let payloads: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    let mut futures: Vec<_> = payloads
        .iter()
        .map(|p| Some(publisher.publish(&topic, Outgoing::new("E", b"one-key", p.as_bytes()))))
        .collect();
    // Give up every tenth place in line (never awaited), then await the rest newest first.
    for (i, f) in futures.iter_mut().enumerate() {
        if i % 10 == 5 {
            *f = None;
        }
    }
    let kept: Vec<(usize, _)> =
        futures.into_iter().enumerate().filter_map(|(i, f)| f.map(|f| (i, f))).rev().collect();
    let (indexes, futures): (Vec<usize>, Vec<_>) = kept.into_iter().unzip();
    let deliveries = futures::future::join_all(futures).await;
    let mut by_call: Vec<(usize, i64)> =
        indexes.into_iter().zip(deliveries).map(|(i, d)| (i, d.expect("acknowledged").offset)).collect();
    by_call.sort();
    assert!(by_call.windows(2).all(|w| w[0].1 < w[1].1), "offsets follow call order: {by_call:?}");
}
