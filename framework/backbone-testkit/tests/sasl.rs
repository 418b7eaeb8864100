//! SASL/PLAIN with the StandardAuthorizer: one principal per service, nothing allowed without an ACL.

use std::time::{Duration, Instant};

use backbone_testkit::{AclOperation, AclResource, KafkaCluster, unique};
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

mod common;

/// What a fresh consumer in its own group gets first when it subscribes to `topic`: the payload of
/// the first record, or the consumer error.
fn first_poll(config: ClientConfig, topic: &str) -> Result<Vec<u8>, KafkaError> {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", unique("group"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) => return Ok(msg.payload().unwrap_or_default().to_vec()),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    panic!("neither a record nor an error within 30 s");
}

fn is_authorization_error(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageConsumption(
            RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::GroupAuthorizationFailed
        )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principal_without_acl_is_refused_and_one_with_read_acl_reads() {
    let kafka = KafkaCluster::builder().sasl(["orders", "stock"]).start().expect("start a SASL broker");
    let topic = unique("orders.private");
    kafka.create_topic(&topic, 1, 1).await.expect("the admin creates the topic");
    let sent = common::publish(&kafka, &topic, 0..10, 2).await;

    // `stock` has no ACL at all: it is refused.
    let stock = kafka.client_config_as("stock");
    let t = topic.clone();
    let denied = tokio::task::spawn_blocking(move || first_poll(stock, &t)).await.expect("join");
    let err = denied.expect_err("a principal without ACLs reads nothing");
    assert!(is_authorization_error(&err), "an authorization error, got {err:?}");

    // `orders` gets READ on the topic and on its groups: it reads every event.
    kafka.allow("orders", AclOperation::Read, &AclResource::Topic(topic.clone())).expect("topic ACL");
    kafka.allow("orders", AclOperation::Read, &AclResource::GroupPrefix("group-".into())).expect("group ACL");
    // The ACL reaches the broker through the metadata log: a refusal before it arrives is retried.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let orders = kafka.client_config_as("orders");
        let t = topic.clone();
        match tokio::task::spawn_blocking(move || first_poll(orders, &t)).await.expect("join") {
            Ok(payload) => {
                assert_eq!(payload, b"0", "the first event of the partition");
                break;
            }
            Err(e) if is_authorization_error(&e) && Instant::now() < deadline => continue,
            Err(e) => panic!("the principal with a READ ACL could not read: {e:?}"),
        }
    }
    let reader = common::consumer(kafka.client_config_as("orders"), &topic);
    common::assert_reads_all(&reader, &sent).await;
}
