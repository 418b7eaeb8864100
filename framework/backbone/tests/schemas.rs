//! Schema-checked topics against the real broker and a real registry (Apicurio's Confluent API):
//! incompatible schemas refused before anything is produced (R10), unknown schema ids and bad magic
//! bytes dead-lettered while the partition flows (R12), schema evolution both ways.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backbone::consume::{Consumer, dead_letter_headers, dead_letter_topic};
use backbone::handler::{BoxedHandler, Event, HandlerError, Metadata, State};
use backbone::publish::PublishError;
use backbone::schema::{AvroEvent, SchemaError, SubjectStrategy};
use backbone::{Config, Outgoing, Service, TopicSpec};
use backbone_testkit::{shared_cluster, shared_kafka, shared_registry, unique};
use rdkafka::consumer::Consumer as _;

mod common;

macro_rules! avro_event {
    ($ty:ident, $schema:expr) => {
        impl AvroEvent for $ty {
            const SCHEMA: &'static str = $schema;
            fn schema() -> &'static apache_avro::Schema {
                static SCHEMA: OnceLock<apache_avro::Schema> = OnceLock::new();
                backbone::schema::parse_once(&SCHEMA, Self::SCHEMA)
            }
        }
    };
}

/// Version 1 of an order event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct OrderV1 {
    id: String,
    quantity: i32,
}
avro_event!(
    OrderV1,
    r#"{"type":"record","name":"OrderCreated","namespace":"test.orders","fields":[
        {"name":"id","type":"string"},{"name":"quantity","type":"int"}]}"#
);

/// Version 2 adds a field with a default: compatible both ways.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct OrderV2 {
    id: String,
    quantity: i32,
    note: String,
}
avro_event!(
    OrderV2,
    r#"{"type":"record","name":"OrderCreated","namespace":"test.orders","fields":[
        {"name":"id","type":"string"},{"name":"quantity","type":"int"},
        {"name":"note","type":"string","default":"none"}]}"#
);

/// A breaking change: `quantity` becomes a string.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct OrderBroken {
    id: String,
    quantity: String,
}
avro_event!(
    OrderBroken,
    r#"{"type":"record","name":"OrderCreated","namespace":"test.orders","fields":[
        {"name":"id","type":"string"},{"name":"quantity","type":"string"}]}"#
);

fn config() -> Config {
    let mut config = common::config(shared_kafka().bootstrap_servers());
    config.schema_registry_url = shared_registry().url().to_owned();
    config
}

fn end_offset(topic: &str) -> i64 {
    let c: rdkafka::consumer::BaseConsumer =
        shared_kafka().client_config().set("group.id", unique("wm")).create().expect("consumer");
    c.fetch_watermarks(topic, 0, Duration::from_secs(10)).expect("watermarks").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r10_an_incompatible_schema_is_refused_before_anything_is_produced() {
    let config = config();
    let service = unique("r10");
    let topic = TopicSpec::public(&service, "orders", 1).partitions(1).build().unwrap();
    let spec = Service::new(&service).event::<OrderV1>(&topic).spec().unwrap();
    let running = spec.start(&config).await.expect("v1 registers and the service starts");
    let publisher = running.publisher();
    publisher.publish_event(&topic, b"o-1", &OrderV1 { id: "o-1".into(), quantity: 2 }).await.unwrap();
    let before = end_offset(topic.name());
    assert_eq!(before, 1);

    // Publishing a type whose schema breaks BACKWARD: refused, named, not retriable, nothing written.
    let err = publisher
        .publish_event(&topic, b"o-2", &OrderBroken { id: "o-2".into(), quantity: "two".into() })
        .await
        .unwrap_err();
    let subject = format!("{}-value", topic.name());
    match &err {
        PublishError::Schema(SchemaError::Incompatible { subject: s, reason }) => {
            assert_eq!(s, &subject);
            assert!(
                reason.contains("quantity") && reason.contains("int") && reason.contains("string"),
                "{reason}"
            );
        }
        other => panic!("expected an incompatible-schema refusal, got {other:?}"),
    }
    assert!(!err.is_retriable(), "a refusal is final: no retry loop");
    let text = err.to_string();
    assert!(text.contains(&subject), "{text}");
    println!("R10 refusal: {text}");
    assert_eq!(end_offset(topic.name()), before, "the topic's end offset did not move");

    // Declared at start-up instead: the service does not start.
    let broken = Service::new(&service).event::<OrderBroken>(&topic).spec().unwrap();
    let err = broken.start(&config).await.unwrap_err();
    assert!(err.as_schema().is_some_and(|e| matches!(e, SchemaError::Incompatible { .. })), "{err}");
    assert_eq!(end_offset(topic.name()), before);

    // A compatible evolution (a field added with a default) is accepted.
    publisher
        .publish_event(&topic, b"o-3", &OrderV2 { id: "o-3".into(), quantity: 1, note: "gift".into() })
        .await
        .expect("a compatible schema registers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_evolve_both_ways_and_record_name_subjects_work() {
    let config = config();
    let service = unique("evolve");
    let topic = TopicSpec::public(&service, "orders", 1).partitions(1).build().unwrap();
    let spec = Service::new(&service).owns(&topic).spec().unwrap();
    let publisher = backbone::Publisher::new(&config, &spec).unwrap();
    let registry = publisher.registry().clone();
    let subject = format!("{}-value", topic.name());
    let v1 = registry.encoder::<OrderV1>(&subject).await.unwrap();
    let v2 = registry.encoder::<OrderV2>(&subject).await.unwrap();
    assert_ne!(v1.id(), v2.id());

    let old = v1.encode(&OrderV1 { id: "a".into(), quantity: 3 }).unwrap();
    let new = v2.encode(&OrderV2 { id: "b".into(), quantity: 4, note: "rush".into() }).unwrap();
    for bytes in [&old, &new] {
        registry.prepare(bytes).await.unwrap();
    }
    // A new reader reads old data: the added field takes its default.
    assert_eq!(
        registry.decode::<OrderV2>(&old).unwrap(),
        OrderV2 { id: "a".into(), quantity: 3, note: "none".into() }
    );
    // An old reader reads new data: the added field is skipped.
    assert_eq!(registry.decode::<OrderV1>(&new).unwrap(), OrderV1 { id: "b".into(), quantity: 4 });
    // Same schema: the fast path.
    assert_eq!(registry.decode::<OrderV1>(&old).unwrap(), OrderV1 { id: "a".into(), quantity: 3 });

    // RecordNameStrategy: the subject is the record's full name.
    let name =
        SubjectStrategy::RecordName.subject(topic.name(), &backbone::schema::full_name(OrderV1::schema()));
    assert_eq!(name, "test.orders.OrderCreated");
}

#[derive(Clone, Default)]
struct Seen {
    handled: Arc<Mutex<Vec<i32>>>,
    done: Arc<tokio::sync::Notify>,
}

async fn take(
    Event(order): Event<OrderV1>,
    _: Metadata,
    State(seen): State<Seen>,
) -> Result<(), HandlerError> {
    seen.handled.lock().unwrap().push(order.quantity);
    if order.quantity == 99 {
        seen.done.notify_one();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_unknown_schema_ids_and_bad_magic_bytes_are_dead_lettered_and_the_partition_flows() {
    // On the 3-broker cluster, topics with replication 3 and min.insync.replicas 2.
    let mut config = common::production_config(shared_cluster().bootstrap_servers());
    config.schema_registry_url = shared_registry().url().to_owned();
    let service = unique("r12");
    let topic = TopicSpec::public(&service, "orders", 1).partitions(1).build().unwrap();
    let dlq = dead_letter_topic(&service, &topic).unwrap();
    let spec = Service::new(&service).event::<OrderV1>(&topic).owns(&dlq).consumes(&topic).spec().unwrap();
    let running = spec.start(&config).await.unwrap();
    let publisher = running.publisher().clone();

    // 100 good events; at 30 a frame with a schema id the registry never issued, at 60 a bad magic byte.
    for n in 0..100 {
        match n {
            30 => {
                let mut frame = vec![0, 0x3b, 0x9a, 0xc9, 0xff]; // id 999_999_999
                frame.extend_from_slice(b"\x02a\x04");
                publisher.publish(&topic, Outgoing::new("OrderCreated", b"bad-id", &frame)).await.unwrap();
            }
            60 => {
                publisher
                    .publish(&topic, Outgoing::new("OrderCreated", b"bad-magic", b"\x01junk"))
                    .await
                    .unwrap();
            }
            _ => {
                let key = format!("o-{n}");
                publisher
                    .publish_event(&topic, key.as_bytes(), &OrderV1 { id: key.clone(), quantity: n })
                    .await
                    .unwrap();
            }
        }
    }
    let seen = Seen::default();
    let consumer =
        Consumer::new(&running.context(), &topic, BoxedHandler::named("take", take), seen.clone()).unwrap();
    let done = seen.done.clone();
    tokio::time::timeout(Duration::from_secs(60), consumer.run(async move { done.notified().await }))
        .await
        .expect("the partition flows past both poison records")
        .unwrap();
    let handled = seen.handled.lock().unwrap().clone();
    let expected: Vec<i32> = (0..100).filter(|n| *n != 30 && *n != 60).collect();
    assert_eq!(handled, expected, "every good event, in order");

    let dlq_name = dlq.name().to_owned();
    let read = tokio::task::spawn_blocking(move || common::read_letters_on(shared_cluster(), &dlq_name, 2))
        .await
        .unwrap();
    assert_eq!(read.len(), 2, "two dead letters within 30 s");
    let letters: Vec<_> = read
        .iter()
        .map(|l| {
            let h = |name: &str| l.header(name).to_owned();
            (
                h(dead_letter_headers::ORIGIN_KEY),
                h(dead_letter_headers::ERROR_KIND),
                h(dead_letter_headers::ERROR_MESSAGE),
            )
        })
        .collect();
    assert_eq!((letters[0].0.as_str(), letters[0].1.as_str()), ("bad-id", "unknown-schema-id"));
    assert!(letters[0].2.contains("999999999"), "{}", letters[0].2);
    assert_eq!((letters[1].0.as_str(), letters[1].1.as_str()), ("bad-magic", "bad-magic-byte"));
}
