//! R9 on a 3-broker SASL cluster (topics with replication 3, `min.insync.replicas` 2): the
//! dead-letter topic cannot be written (ACL denied). The poison record's offset is not committed,
//! the partition pauses with a clear error, health reports degraded: nothing is dropped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backbone::consume::{Consumer, Retry, dead_letter_topic};
use backbone::handler::{BoxedHandler, HandlerError, Json, Metadata, State};
use backbone::{Context, Service, TopicSpec};
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

/// Stock's world for R9: a 3-broker SASL cluster with Stock's topic and its dead-letter topic
/// (replication 3), Stock's ACLs as `grant` sets them, 3 good events, a poison one (offset 3) and 3
/// more written by the admin, and Stock's configuration and declaration.
struct World {
    cluster: KafkaCluster,
    source: TopicSpec,
    dlq: TopicSpec,
    config: backbone::Config,
    spec: backbone::ServiceSpec,
}

async fn world(grant: impl FnOnce(&KafkaCluster, &TopicSpec, &TopicSpec)) -> World {
    let cluster = KafkaCluster::builder().brokers(3).sasl(["stock"]).start().expect("SASL cluster of 3");
    let source = TopicSpec::private("stock", "reservations").partitions(1).build().unwrap();
    let dlq = dead_letter_topic("stock", &source).unwrap();
    cluster.create_topic(source.name(), 1, 3).await.unwrap();
    cluster.create_topic(dlq.name(), 1, 3).await.unwrap();
    grant(&cluster, &source, &dlq);
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
    config.security.password = Some(password_for("stock").into());
    config.shutdown_timeout = Duration::from_secs(2);
    let spec = Service::new("stock").owns(&source).owns(&dlq).consumes(&source).spec().unwrap();
    World { cluster, source, dlq, config, spec }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_an_unwritable_dead_letter_topic_pauses_the_partition_and_commits_nothing_past_it() {
    // `stock` may read its topic and use its groups, but not write (so neither its dead letters).
    let World { cluster, source, dlq: _, config, spec } = world(|cluster, _, _| {
        cluster.allow("stock", AclOperation::Read, &AclResource::TopicPrefix("stock.".into())).unwrap();
        cluster.allow("stock", AclOperation::Describe, &AclResource::TopicPrefix("stock.".into())).unwrap();
        cluster.allow("stock", AclOperation::Read, &AclResource::GroupPrefix("stock.".into())).unwrap();
    })
    .await;
    let context = Context::open(&config, &spec).unwrap();
    let health = context.health().clone();
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let group = "stock.r9";
    let consumer = Consumer::new(&context, &source, BoxedHandler::named("reserve", handle), seen.clone())
        .unwrap()
        .in_group(group)
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

/// R9 at full strength: only the dead-letter topic is denied (the service writes its other topics),
/// then the ACL is granted: the partition resumes, the dead letter is written once, nothing is lost
/// and nothing handled twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_only_the_dead_letter_topic_denied_then_granted_resumes_and_writes_the_letter_once() {
    // `stock` reads and writes its own topic and uses its groups; its dead-letter topic it may read
    // and describe, not write.
    let World { cluster, source, dlq, config, spec } = world(|cluster, source, dlq| {
        for operation in [AclOperation::Read, AclOperation::Write, AclOperation::Describe] {
            cluster.allow("stock", operation, &AclResource::Topic(source.name().into())).unwrap();
        }
        cluster.allow("stock", AclOperation::Describe, &AclResource::Topic(dlq.name().into())).unwrap();
        cluster.allow("stock", AclOperation::Read, &AclResource::GroupPrefix("stock.".into())).unwrap();
    })
    .await;
    let context = Context::open(&config, &spec).unwrap();
    // The service may still write its own topic.
    context
        .publisher()
        .publish(&source, backbone::Outgoing::new("Order", b"k", br#"{"n":7}"#))
        .await
        .expect("the service writes its other topics");
    let health = context.health().clone();
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let group = "stock.r9-granted";
    let consumer = Consumer::new(&context, &source, BoxedHandler::named("reserve", handle), seen.clone())
        .unwrap()
        .in_group(group)
        .retry(Retry {
            max_attempts: 1,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(1),
        });

    // Once health says the dead letter cannot be written, grant the ACL; stop once event 7 (after
    // the poison one) is handled.
    let (watch, seen_by_stop) = (health.clone(), seen.clone());
    let grant = |cluster: &KafkaCluster| {
        cluster.allow("stock", AclOperation::Write, &AclResource::Topic(dlq.name().into())).unwrap();
    };
    let cluster_ref = &cluster;
    let resumed = async move {
        tokio::time::timeout(Duration::from_secs(60), watch.wait_until(|h| !h.is_healthy()))
            .await
            .expect("degraded while the dead letter is denied");
        let reason = watch.snapshot().degraded.values().next().cloned().unwrap_or_default();
        assert!(reason.contains(":3"), "{reason}");
        assert_eq!(seen_by_stop.lock().unwrap().len(), 3, "paused at the poison record");
        grant(cluster_ref);
        tokio::time::timeout(Duration::from_secs(90), watch.wait_until(|h| h.is_healthy()))
            .await
            .expect("healthy again once the ACL is granted");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !seen_by_stop.lock().unwrap().iter().any(|(n, _)| *n == 7) {
            assert!(Instant::now() < deadline, "the partition resumed");
            // Polled with a deadline: the handler has no signal of its own to await.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    consumer.run(resumed).await.expect("stops");

    let handled: Vec<u32> = seen.lock().unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(handled, vec![0, 1, 2, 4, 5, 6, 7], "each good event once, in order");
    let letters = common::read_letters_to_end(&cluster, dlq.name());
    assert_eq!(letters.len(), 1, "the dead letter is written once");
    assert_eq!(letters[0].payload, b"{poison");
    let admin_reader: rdkafka::consumer::BaseConsumer =
        cluster.client_config().set("group.id", group).create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(source.name(), 0);
    let committed = admin_reader.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(committed.elements()[0].offset().to_raw(), Some(8), "committed past every event");
}
