//! SASL/PLAIN with the StandardAuthorizer: one principal per service, nothing allowed without an ACL.

use std::time::{Duration, Instant};

use backbone_testkit::{AclOperation, AclResource, KafkaCluster, unique};
use futures::StreamExt as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::Message as _;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principal_without_acl_is_refused_and_one_with_read_acl_reads() {
    let kafka = KafkaCluster::builder().sasl(["orders", "stock"]).start().expect("start a SASL broker");
    let topic = unique("orders.private");
    kafka.create_topic(&topic, 1, 1).await.expect("admin creates the topic");
    let sent = common::publish(&kafka, &topic, 0..10, 2).await;

    // `stock` has no ACL at all: its fetch is refused, not retried into silence.
    let denied = common::consumer(kafka.client_config_as("stock"), &topic);
    let first = tokio::time::timeout(Duration::from_secs(30), denied.stream().next())
        .await
        .expect("the refusal arrives")
        .expect("stream item");
    match first {
        Err(KafkaError::MessageConsumption(code)) | Err(KafkaError::MessageConsumptionFatal(code)) => {
            assert!(
                matches!(code, RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::GroupAuthorizationFailed),
                "authorization error, got {code:?}"
            );
        }
        other => panic!("expected an authorization error, got {other:?}"),
    }

    // `orders` gets READ on the topic and its groups: it reads every event.
    kafka.allow("orders", AclOperation::Read, &AclResource::Topic(topic.clone())).expect("topic ACL");
    kafka.allow("orders", AclOperation::Read, &AclResource::GroupPrefix("group-".into())).expect("group ACL");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The ACL reaches the broker through the metadata log; a consumer made before that sees a refusal.
        let reader = common::consumer(kafka.client_config_as("orders"), &topic);
        let first = tokio::time::timeout(Duration::from_secs(20), reader.stream().next()).await;
        match first {
            Ok(Some(Ok(msg))) => {
                assert!(msg.payload().is_some());
                drop(reader);
                break;
            }
            _ if Instant::now() < deadline => continue,
            other => panic!("the reader with a READ ACL could not read: {other:?}"),
        }
    }
    let reader = common::consumer(kafka.client_config_as("orders"), &topic);
    common::assert_reads_all(&reader, &sent).await;
}
