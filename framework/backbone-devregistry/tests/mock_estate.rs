//! Development mode end to end, with nothing but Rust: librdkafka's mock cluster
//! (`backbone::dev::MockKafka`) for Kafka and the development registry for schemas. A service starts
//! (its schema registered, its topics provisioned through the mock cluster), publishes an Avro event,
//! and another service's `Consumer` decodes and handles it.
//!
//! This proves the demo mode works; it proves nothing about Kafka. backbone's behaviour is tested
//! against real brokers in `framework/backbone/tests`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use apache_avro::Schema;
use backbone::consume::{Consumer, dead_letter_topic};
use backbone::dev::MockKafka;
use backbone::handler::{BoxedHandler, Event, HandlerError, State};
use backbone::provision::{Action, Provisioner};
use backbone::schema::AvroEvent;
use backbone::{Config, Service, TopicSpec};
use backbone_devregistry::DevRegistry;

/// The event Orders publishes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct OrderCreated {
    id: String,
    quantity: i32,
}

/// A breaking change of it: `quantity` becomes a string.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct OrderCreatedBroken {
    id: String,
    quantity: String,
}

macro_rules! avro_event {
    ($ty:ident, $schema:expr) => {
        impl AvroEvent for $ty {
            const SCHEMA: &'static str = $schema;
            fn schema() -> &'static Schema {
                static SCHEMA: OnceLock<Schema> = OnceLock::new();
                backbone::schema::parse_once(&SCHEMA, Self::SCHEMA)
            }
        }
    };
}
avro_event!(
    OrderCreated,
    r#"{"type":"record","name":"OrderCreated","namespace":"demo.orders","fields":[
        {"name":"id","type":"string"},{"name":"quantity","type":"int"}]}"#
);
avro_event!(
    OrderCreatedBroken,
    r#"{"type":"record","name":"OrderCreated","namespace":"demo.orders","fields":[
        {"name":"id","type":"string"},{"name":"quantity","type":"string"}]}"#
);

/// What the consumer saw.
#[derive(Clone, Default)]
struct Seen {
    orders: Arc<Mutex<Vec<OrderCreated>>>,
    arrived: Arc<tokio::sync::Notify>,
}

async fn reserve(Event(order): Event<OrderCreated>, State(seen): State<Seen>) -> Result<(), HandlerError> {
    seen.orders.lock().unwrap().push(order);
    seen.arrived.notify_one();
    Ok(())
}

fn config(kafka: &MockKafka, registry: &DevRegistry) -> Config {
    let mut config = kafka.config();
    config.schema_registry_url = registry.url().to_owned();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_publishes_and_a_consumer_handles_an_avro_event_on_the_mock_cluster() {
    let kafka = MockKafka::start(1).expect("mock cluster");
    let registry = DevRegistry::start().expect("development registry");
    let config = config(&kafka, &registry);
    let started = std::time::Instant::now();

    let created = TopicSpec::public("orders", "order-created", 1).partitions(3).build().unwrap();
    let orders = Service::new("orders").event::<OrderCreated>(&created).spec().unwrap();
    let orders_running = orders.start(&config).await.expect("orders starts on the mock cluster");
    let start_took = started.elapsed();

    // Provisioned through the mock cluster: planning again finds everything up to date.
    let plan = Provisioner::new(&config, "orders").unwrap().plan(orders.owned_topics()).await.unwrap();
    assert!(plan.actions().iter().all(|a| a.action == Action::UpToDate), "{plan}");
    // Registered in the development registry.
    let versions: serde_json::Value =
        reqwest::get(format!("{}/subjects/{}-value/versions", registry.url(), created.name()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(versions, serde_json::json!([1]));

    let dlq = dead_letter_topic("stock", &created).unwrap();
    let stock = Service::new("stock").owns(&dlq).consumes(&created).spec().unwrap();
    let stock_running = stock.start(&config).await.expect("stock starts");
    let seen = Seen::default();
    let consumer = Consumer::new(
        &stock_running.context(),
        &created,
        BoxedHandler::named("reserve", reserve),
        seen.clone(),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consuming = tokio::spawn(consumer.run(async move {
        let _ = stopped.await;
    }));

    let order = OrderCreated { id: "o-1".into(), quantity: 2 };
    let published = std::time::Instant::now();
    orders_running.publisher().publish_event(&created, b"o-1", &order).await.expect("published");
    let arrived = seen.arrived.clone();
    tokio::time::timeout(Duration::from_secs(30), arrived.notified())
        .await
        .expect("the consumer handles the event within 30 s");
    assert_eq!(*seen.orders.lock().unwrap(), vec![order]);
    eprintln!("start-up {start_took:?}; publish to handled {:?} (group join included)", published.elapsed());

    stop.send(()).unwrap();
    consuming.await.unwrap().expect("the consumer stops cleanly");
    orders_running.shutdown().await.unwrap();
    stock_running.shutdown().await.unwrap();
}

/// As against a real registry (R10): a service whose schema breaks its subject's rule does not start,
/// and nothing is provisioned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_schema_stops_the_service_before_anything_is_provisioned() {
    let kafka = MockKafka::start(1).expect("mock cluster");
    let registry = DevRegistry::start().expect("development registry");
    let config = config(&kafka, &registry);
    let created = TopicSpec::public("orders", "order-created", 1).build().unwrap();
    let v1 = Service::new("orders").event::<OrderCreated>(&created).spec().unwrap();
    v1.start(&config).await.unwrap().shutdown().await.unwrap();

    let other = TopicSpec::private("orders", "state").build().unwrap();
    let broken = Service::new("orders").event::<OrderCreatedBroken>(&created).owns(&other).spec().unwrap();
    let err = broken.start(&config).await.unwrap_err().to_string();
    assert!(err.contains("`quantity`") && err.contains("BACKWARD"), "{err}");
    assert!(kafka.topic_configs(other.name()).is_none(), "nothing provisioned");
}
