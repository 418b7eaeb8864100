//! The service author's test helpers against the real broker: a probe sees what is published after
//! it starts (not before), finds an event by key among others, decodes JSON and Avro the way a
//! handler would, and times out with a clear error.

use std::time::Duration;

use backbone::handler::Json;
use backbone::testing::{Probe, ProbeError, config};
use backbone::{Outgoing, Service, TopicSpec};
use backbone_testkit::{shared_kafka, shared_registry, unique};

/// An Avro event bound to its contract.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[avro(schema = "tests/schemas/demo/ping-v1.avsc")]
struct Ping {
    n: i64,
    label: String,
    ok: bool,
    ratio: f64,
    score: f32,
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct Order {
    product: String,
    quantity: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_finds_an_event_by_key_published_after_it_started() {
    let kafka = shared_kafka();
    let config = config(kafka.bootstrap_servers(), None);
    let service = unique("probe");
    let topic = TopicSpec::public(&service, "order-created", 1).partitions(3).build().expect("topic");
    let running =
        Service::new(&service).owns(&topic).spec().expect("spec").start(&config).await.expect("start");
    let publisher = running.publisher().clone();
    let before = Outgoing::new("OrderCreated", b"order-1", br#"{"product":"old","quantity":1}"#);
    publisher.publish(&topic, before).await.expect("published before the probe");

    let probe = Probe::new(&config, &topic).await.expect("probe");
    for (key, body) in [
        ("order-2", r#"{"product":"socks","quantity":2}"#),
        ("order-1", r#"{"product":"jumpers","quantity":3}"#),
    ] {
        let event = Outgoing::new("OrderCreated", key.as_bytes(), body.as_bytes());
        publisher.publish(&topic, event).await.expect("published");
    }
    // The order-1 published before the probe started is not seen: the one after it is.
    let Json(order): Json<Order> =
        probe.expect_event("order-1", Duration::from_secs(30)).await.expect("order-1 after the probe");
    assert_eq!(order, Order { product: "jumpers".into(), quantity: 3 });

    // A probe from the beginning sees the first one too.
    let everything = Probe::from_beginning(&config, &topic).await.expect("probe");
    let first = everything.expect_key("order-1", Duration::from_secs(30)).await.expect("first order-1");
    let Json(old): Json<Order> = everything.decode(&first).await.expect("decodes");
    assert_eq!(old.product, "old");
    // The topic is named for its type: no type header, the name says it; nor producer, nor a
    // correlation header (the correlation id is the trace id).
    assert_eq!(first.event_type().as_deref(), Some("OrderCreated"));
    assert_eq!(first.header("backbone-event-type"), None);
    assert_eq!(first.header("backbone-producer"), None);
    assert_eq!(first.header("backbone-correlation-id"), None);
    assert_eq!(first.producer(), Some(service.as_str()));
    assert!(first.header("traceparent").is_some());

    // Nothing more with that key: a clear timeout, naming what was awaited.
    let err = probe.expect_key("order-9", Duration::from_millis(300)).await.expect_err("no order-9");
    assert!(matches!(err, ProbeError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("order-9"), "{err}");
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_decodes_avro_events_by_their_writer_schema() {
    let (kafka, registry) = (shared_kafka(), shared_registry());
    let config = config(kafka.bootstrap_servers(), Some(registry.url()));
    let service = unique("probe-avro");
    let topic = TopicSpec::public(&service, "order-created", 1).partitions(1).build().expect("topic");
    let running = Service::new(&service)
        .owns(&topic)
        .event::<Ping>(&topic)
        .spec()
        .expect("spec")
        .start(&config)
        .await
        .expect("start registers the schema");
    let probe = Probe::new(&config, &topic).await.expect("probe");
    let sent = Ping { n: 7, label: "seven".into(), ok: true, ratio: 0.5, score: 1.5 };
    running.publisher().publish_event(&topic, b"ping-7", &sent).await.expect("published");
    let event = probe.expect_key("ping-7", Duration::from_secs(30)).await.expect("published");
    let got: Ping = probe.decode(&event).await.expect("decoded");
    assert_eq!(got, sent);
    // Framed with a schema id: no type header; the type is the writer schema's record name.
    assert_eq!(event.header("backbone-event-type"), None);
    assert_eq!(event.event_type(), None);
    let payload = event.payload().expect("payload");
    assert_eq!(
        running.publisher().registry().event_type(payload).await.expect("registry").as_deref(),
        Some("Ping")
    );

    // An unknown topic is a clear error at once.
    let missing = TopicSpec::public(&service, "nothing-here", 1).build().expect("topic");
    let err = Probe::new(&config, &missing).await.expect_err("no such topic");
    assert!(err.to_string().contains("does not exist"), "{err}");
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expectations_may_come_in_any_order_and_take_each_event_once() {
    let kafka = shared_kafka();
    let config = config(kafka.bootstrap_servers(), None);
    let service = unique("probe-order");
    let topic = TopicSpec::public(&service, "event", 1).partitions(1).build().expect("topic");
    let running =
        Service::new(&service).owns(&topic).spec().expect("spec").start(&config).await.expect("start");
    let probe = Probe::new(&config, &topic).await.expect("probe");
    for key in ["a", "b", "c", "a"] {
        running
            .publisher()
            .publish(&topic, Outgoing::new("E", key.as_bytes(), b""))
            .await
            .expect("published");
    }
    let within = Duration::from_secs(30);
    // `c` is read after `a` and `b`; they wait for their own expectations.
    let c = probe.expect_key("c", within).await.expect("c");
    let b = probe.expect_key("b", within).await.expect("b");
    let first_a = probe.expect_key("a", within).await.expect("first a");
    let second_a = probe.expect_key("a", within).await.expect("second a");
    let offsets: Vec<i64> = [&first_a, &b, &c, &second_a].iter().map(|e| e.offset()).collect();
    let base = offsets[0];
    assert_eq!(offsets, vec![base, base + 1, base + 2, base + 3], "each event once, in its place");
    let err = probe.expect_key("a", Duration::from_millis(200)).await.expect_err("no third a");
    assert!(matches!(err, ProbeError::Timeout { seen: 0, .. }), "{err}");
    running.shutdown().await.expect("shutdown");
}
