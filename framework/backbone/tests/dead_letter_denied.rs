//! R9: the dead-letter topic cannot be written (ACL denied). The poison record's offset is not
//! committed, the partition pauses with a clear error, health reports degraded: nothing is dropped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backbone::consume::{Consumer, Retry, dead_letter_topic};
use backbone::handler::{BoxedHandler, HandlerError, Json, Metadata, State};
use backbone::{Publisher, Service, TopicSpec};
use backbone_testkit::{AclOperation, AclResource, KafkaCluster, password_for};
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::{FutureProducer, FutureRecord};

mod common;

/// What the handler saw: (n, offset).
type Seen = Arc<Mutex<Vec<(u32, i64)>>>;

#[derive(serde::Deserialize)]
struct Order {
    n: u32,
}

async fn handle(
    Json(order): Json<Order>,
    meta: Metadata,
    State(seen): State<Seen>,
) -> Result<(), HandlerError> {
    seen.lock().unwrap().push((order.n, meta.offset()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_an_unwritable_dead_letter_topic_pauses_the_partition_and_commits_nothing_past_it() {
    let cluster = KafkaCluster::builder().sasl(["stock"]).start().expect("SASL broker");
    let source = TopicSpec::private("stock", "reservations").partitions(1).build().unwrap();
    let dlq = dead_letter_topic("stock", &source).unwrap();
    cluster.create_topic(source.name(), 1, 1).await.unwrap();
    cluster.create_topic(dlq.name(), 1, 1).await.unwrap();
    // `stock` may read its topic and use its groups, but not write (so neither its dead letters).
    cluster.allow("stock", AclOperation::Read, &AclResource::TopicPrefix("stock.".into())).unwrap();
    cluster.allow("stock", AclOperation::Describe, &AclResource::TopicPrefix("stock.".into())).unwrap();
    cluster.allow("stock", AclOperation::Read, &AclResource::GroupPrefix("stock.".into())).unwrap();

    // The admin writes 3 good events, a poison one (offset 3), then 3 more.
    let admin: FutureProducer = cluster.client_config().create().unwrap();
    for body in
        [r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":2}"#, "{poison", r#"{"n":4}"#, r#"{"n":5}"#, r#"{"n":6}"#]
    {
        admin
            .send(FutureRecord::to(source.name()).key("k").payload(body), Duration::from_secs(10))
            .await
            .unwrap();
    }

    let mut config = common::config(cluster.bootstrap_servers());
    config.security.protocol = "SASL_PLAINTEXT".into();
    config.security.username = Some("stock".into());
    config.security.password = Some(password_for("stock"));
    config.shutdown_timeout = Duration::from_secs(2);
    let spec = Service::new("stock").owns(&source).owns(&dlq).consumes(&source).spec().unwrap();
    let publisher = Publisher::new(&config, &spec).unwrap();
    let health = publisher.health().clone();
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let group = "stock.r9";
    let consumer = Consumer::new(
        &config,
        &spec,
        &source,
        BoxedHandler::named("reserve", handle),
        seen.clone(),
        publisher,
        Some(group),
    )
    .unwrap()
    .retry(Retry {
        max_attempts: 1,
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
    });

    // Stop once health says the dead letters cannot be written.
    let watch = health.clone();
    let degraded = async move {
        let _ = tokio::time::timeout(Duration::from_secs(60), watch.wait_until(|h| !h.is_healthy())).await;
    };
    let started = Instant::now();
    consumer.run(degraded).await.expect("stops");
    assert!(started.elapsed() < Duration::from_secs(60), "health became degraded");

    let snapshot = health.snapshot();
    let reason = snapshot.degraded.values().next().expect("a degraded component").clone();
    assert!(
        reason.contains("dead letter") && reason.contains(source.name()) && reason.contains(":3"),
        "{reason}"
    );
    assert!(reason.contains("paused"), "{reason}");
    let handled: Vec<u32> = seen.lock().unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(handled, vec![0, 1, 2], "nothing past the poison record is handled while paused");

    // The committed offset never passes the poison record.
    let admin_reader: rdkafka::consumer::BaseConsumer =
        cluster.client_config().set("group.id", group).create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(source.name(), 0);
    let committed = admin_reader.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let offset = committed.elements()[0].offset().to_raw().unwrap_or(-1);
    assert_eq!(offset, 3, "committed up to, not past, the poison record");
}
