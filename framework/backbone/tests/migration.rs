//! A breaking change of an Orders event (v1 → v2: the price gains a currency) against the real broker
//! and registry: v2 goes to its own topic, and a v1-only reader keeps working throughout, fed by a
//! down-converter (which also ports the v2 events published before it started) or by dual publishing.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backbone::consume::{Consumer, dead_letter_topic};
use backbone::handler::{BoxedHandler, Event, HandlerError, State};
use backbone::migrate;
use backbone::schema::{AvroEvent, SchemaError};
use backbone::{Config, Service, TopicSpec};
use backbone_testkit::{shared_kafka, shared_registry, unique};

mod common;

/// `schemas/orders/order-created-v1.avsc`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename = "OrderCreated", rename_all = "camelCase")]
struct OrderCreatedV1 {
    id: String,
    customer_id: String,
    product: String,
    quantity: i32,
    price: i64,
}

impl AvroEvent for OrderCreatedV1 {
    const SCHEMA: &'static str = include_str!("../../../schemas/orders/order-created-v1.avsc");
    fn schema() -> &'static apache_avro::Schema {
        static SCHEMA: OnceLock<apache_avro::Schema> = OnceLock::new();
        backbone::schema::parse_once(&SCHEMA, Self::SCHEMA)
    }
}

/// `schemas/orders/order-created-v2.avsc`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename = "OrderCreated", rename_all = "camelCase")]
struct OrderCreatedV2 {
    id: String,
    customer_id: String,
    product: String,
    quantity: i32,
    price: Money,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Money {
    amount_minor: i64,
    currency: String,
}

impl AvroEvent for OrderCreatedV2 {
    const SCHEMA: &'static str = include_str!("../../../schemas/orders/order-created-v2.avsc");
    fn schema() -> &'static apache_avro::Schema {
        static SCHEMA: OnceLock<apache_avro::Schema> = OnceLock::new();
        backbone::schema::parse_once(&SCHEMA, Self::SCHEMA)
    }
}

fn down(v2: OrderCreatedV2) -> OrderCreatedV1 {
    OrderCreatedV1 {
        id: v2.id,
        customer_id: v2.customer_id,
        product: v2.product,
        quantity: v2.quantity,
        price: v2.price.amount_minor,
    }
}

fn v2(n: i32) -> OrderCreatedV2 {
    OrderCreatedV2 {
        id: format!("order-{n:03}"),
        customer_id: format!("customer-{}", n % 7),
        product: "apple".into(),
        quantity: 1 + n % 3,
        price: Money { amount_minor: 100 * i64::from(n), currency: "EUR".into() },
    }
}

fn config() -> Config {
    let mut config = common::config(shared_kafka().bootstrap_servers());
    config.schema_registry_url = shared_registry().url().to_owned();
    config
}

#[derive(Clone, Default)]
struct Reader {
    seen: Arc<Mutex<Vec<OrderCreatedV1>>>,
    changed: Arc<tokio::sync::Notify>,
}

async fn read_v1(
    Event(order): Event<OrderCreatedV1>,
    State(reader): State<Reader>,
) -> Result<(), HandlerError> {
    reader.seen.lock().unwrap().push(order);
    reader.changed.notify_waiters();
    Ok(())
}

impl Reader {
    async fn wait_for(&self, count: usize) {
        let waiting = async {
            loop {
                let changed = self.changed.notified();
                let mut changed = std::pin::pin!(changed);
                changed.as_mut().enable();
                if self.seen.lock().unwrap().len() >= count {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .unwrap_or_else(|_| panic!("the v1 reader saw {} of {count}", self.seen.lock().unwrap().len()));
    }
}

/// The owner (orders), its v1 and v2 topics, and a v1-only reader service (audit) already running.
struct Estate {
    context: backbone::Context,
    v1: TopicSpec,
    v2: TopicSpec,
    publisher: backbone::Publisher,
    reader: Reader,
    stop_reader: tokio::sync::oneshot::Sender<()>,
    reader_task: tokio::task::JoinHandle<()>,
}

async fn estate(name: &str) -> Estate {
    let config = config();
    let owner = unique(name);
    let v1 = TopicSpec::public(&owner, "order-created", 1).partitions(3).build().unwrap();
    let v2 = TopicSpec::public(&owner, "order-created", 2).partitions(3).build().unwrap();
    let converter_dlq = dead_letter_topic(&owner, &v2).unwrap();
    let orders = Service::new(&owner)
        .event::<OrderCreatedV1>(&v1)
        .event::<OrderCreatedV2>(&v2)
        .owns(&converter_dlq)
        .consumes(&v2)
        .spec()
        .unwrap();
    let running = orders.start(&config).await.expect("orders starts: both contracts register");
    let (context, publisher) = (running.context(), running.publisher().clone());

    // The breaking change really is one: v2's schema is refused on v1's subject.
    let err = publisher
        .registry()
        .check(&format!("{}-value", v1.name()), OrderCreatedV2::SCHEMA)
        .await
        .unwrap_err();
    assert!(matches!(err, SchemaError::Incompatible { .. }), "{err}");

    let audit = unique("audit");
    let audit_dlq = dead_letter_topic(&audit, &v1).unwrap();
    let audit_spec = Service::new(&audit).owns(&audit_dlq).consumes(&v1).spec().unwrap();
    let audit_running = audit_spec.start(&config).await.unwrap();
    let reader = Reader::default();
    let consumer =
        Consumer::new(&audit_running.context(), &v1, BoxedHandler::named("read-v1", read_v1), reader.clone())
            .unwrap();
    let (stop_reader, stop) = tokio::sync::oneshot::channel::<()>();
    let reader_task = tokio::spawn(async move {
        consumer.run(async move { stop.await.unwrap_or_default() }).await.unwrap();
    });
    Estate { context, v1, v2, publisher, reader, stop_reader, reader_task }
}

fn ids(orders: &[OrderCreatedV1]) -> Vec<String> {
    let mut ids: Vec<String> = orders.iter().map(|o| o.id.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_converter_keeps_a_v1_reader_served_through_a_breaking_change() {
    let estate = estate("migrate").await;
    // Before the change: v1 events.
    for n in 0..30 {
        let event = down(v2(n));
        estate.publisher.publish_event(&estate.v1, event.id.as_bytes(), &event).await.unwrap();
    }
    estate.reader.wait_for(30).await;

    // The switch: Orders publishes v2 only. Twenty events go out before the converter runs (it ports
    // them: it starts from the beginning of v2), the rest while it runs.
    for n in 30..50 {
        let event = v2(n);
        estate.publisher.publish_event(&estate.v2, event.id.as_bytes(), &event).await.unwrap();
    }
    let converter = migrate::converter(&estate.context, &estate.v2, &estate.v1, down).unwrap();
    let (stop_converter, stop) = tokio::sync::oneshot::channel::<()>();
    let converter_task =
        tokio::spawn(
            async move { converter.run(async move { stop.await.unwrap_or_default() }).await.unwrap() },
        );
    for n in 50..80 {
        let event = v2(n);
        estate.publisher.publish_event(&estate.v2, event.id.as_bytes(), &event).await.unwrap();
    }
    estate.reader.wait_for(80).await;
    stop_converter.send(()).unwrap();
    converter_task.await.unwrap();
    estate.stop_reader.send(()).unwrap();
    estate.reader_task.await.unwrap();

    let seen = estate.reader.seen.lock().unwrap().clone();
    let expected: Vec<OrderCreatedV1> = (0..80).map(|n| down(v2(n))).collect();
    assert_eq!(ids(&seen), ids(&expected), "the v1 reader saw every order, before and after the switch");
    for order in &seen {
        let n: i32 = order.id["order-".len()..].parse().unwrap();
        assert_eq!(order, &down(v2(n)), "converted faithfully");
    }
    assert_eq!(seen.len(), 80, "no order twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_publishing_feeds_both_versions() {
    let estate = estate("dual").await;
    for n in 0..20 {
        let event = v2(n);
        migrate::publish_both(
            &estate.publisher,
            event.id.as_bytes(),
            (&estate.v2, &event),
            (&estate.v1, |e: &OrderCreatedV2| down(e.clone())),
        )
        .await
        .unwrap();
    }
    estate.reader.wait_for(20).await;
    estate.stop_reader.send(()).unwrap();
    estate.reader_task.await.unwrap();
    let seen = estate.reader.seen.lock().unwrap().clone();
    assert_eq!(ids(&seen), ids(&(0..20).map(|n| down(v2(n))).collect::<Vec<_>>()));
}
