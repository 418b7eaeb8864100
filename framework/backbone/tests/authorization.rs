//! A denied ACL fails fast and is not retried (one SASL principal per service, real broker).

use std::time::{Duration, Instant};

use backbone::{Outgoing, PublishError, Service, TopicSpec};
use backbone_testkit::{AclOperation, AclResource, KafkaCluster, password_for};

mod common;

fn config_as(cluster: &KafkaCluster, user: &str) -> backbone::Config {
    let mut c = common::config(cluster.bootstrap_servers());
    c.security.protocol = "SASL_PLAINTEXT".into();
    c.security.username = Some(user.into());
    c.security.password = Some(password_for(user).into());
    c.delivery_timeout = Duration::from_secs(60);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_without_write_acl_is_refused_fast_and_not_retried() {
    let cluster = KafkaCluster::builder().sasl(["stock", "orders"]).start().expect("SASL broker");
    let topic = TopicSpec::public("stock", "stock-levels", 1).partitions(1).build().unwrap();
    cluster.create_topic(topic.name(), 1, 1).await.expect("admin creates the topic");
    let spec = Service::new("stock").owns(&topic).spec().unwrap();

    // `stock` has no ACL yet: the broker refuses, and the publish says so long before the 60 s
    // delivery timeout, as a non-retriable error.
    let publisher = backbone::Publisher::new(&config_as(&cluster, "stock"), &spec).unwrap();
    let started = Instant::now();
    let err = publisher.publish(&topic, Outgoing::new("StockLevel", b"p-1", b"7")).await.unwrap_err();
    let took = started.elapsed();
    eprintln!("denied publish: {err:?} after {took:?}");
    assert!(matches!(err, PublishError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().starts_with("User:stock (SASL PLAIN) is not authorized to publish to"), "{err}");
    assert!(!err.is_retriable());
    assert!(took < Duration::from_secs(15), "fails fast, not after the delivery timeout: {took:?}");

    // With WRITE on its own prefix (what the estate's ACLs grant an owner), it publishes.
    cluster.allow("stock", AclOperation::Write, &AclResource::TopicPrefix("stock.".into())).unwrap();
    cluster.allow("stock", AclOperation::Describe, &AclResource::TopicPrefix("stock.".into())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // A fresh publisher: the ACL reaches the broker through the metadata log.
        let publisher = backbone::Publisher::new(&config_as(&cluster, "stock"), &spec).unwrap();
        match publisher.publish(&topic, Outgoing::new("StockLevel", b"p-1", b"7")).await {
            Ok(d) => {
                assert!(d.offset >= 0);
                break;
            }
            Err(PublishError::Unauthorized { .. }) if Instant::now() < deadline => continue,
            Err(e) => panic!("publishing with a WRITE ACL failed: {e:?}"),
        }
    }
}

async fn count(backbone::Event(_payload): backbone::Event<String>) -> Result<(), backbone::HandlerError> {
    Ok(())
}

/// A consumer whose principal may join its group but not read its topic stops at the first refusal
/// with `ConsumeError::NotAuthorized` naming the principal, the topic and the group, instead of
/// logging the broker's refusal for ever while never getting ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_without_read_acl_stops_fast_naming_the_principal_topic_and_group() {
    use backbone::consume::{ConsumeError, Consumer, dead_letter_topic};
    use backbone::handler::BoxedHandler;

    let cluster = KafkaCluster::builder().sasl(["stock", "orders"]).start().expect("SASL broker");
    let orders = TopicSpec::public("orders", "order", 1).partitions(1).build().unwrap();
    cluster.create_topic(orders.name(), 1, 1).await.expect("admin creates the topic");
    let dlq = dead_letter_topic("stock", &orders).unwrap();
    cluster.create_topic(dlq.name(), 1, 1).await.expect("admin creates the dead-letter topic");
    let spec = Service::new("stock").owns(&dlq).consumes(&orders).spec().unwrap();
    // Its own group and the topic's metadata, but no READ on the topic.
    cluster.allow("stock", AclOperation::Read, &AclResource::GroupPrefix("stock.".into())).unwrap();
    cluster.allow("stock", AclOperation::Describe, &AclResource::Topic(orders.name().into())).unwrap();
    let context = backbone::Context::open(&config_as(&cluster, "stock"), &spec).unwrap();
    let consumer = Consumer::new(&context, &orders, BoxedHandler::named("count", count), ()).unwrap();

    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(60), consumer.run(std::future::pending()))
        .await
        .expect("the consumer stops instead of waiting for ever");
    let took = started.elapsed();
    let err = ended.expect_err("refused");
    eprintln!("refused consumer: {err} after {took:?}");
    assert!(matches!(err, ConsumeError::NotAuthorized { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("User:stock (SASL PLAIN) is not authorized to consume `orders.public.order-v1`")
            && text.contains("group `stock.count`"),
        "{text}"
    );
    assert!(!err.is_retriable());
    assert!(took < Duration::from_secs(15), "fails fast: {took:?}");
}
