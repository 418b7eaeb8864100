//! Smoke tests on the shared single-node KRaft broker.

use backbone_testkit::{shared_kafka, unique};

mod common;

#[tokio::test]
async fn round_trip_through_idempotent_producer_and_consumer_group() {
    let kafka = shared_kafka();
    let topic = unique("smoke");
    kafka.create_topic(&topic, 3, 1).await.expect("create topic");
    let sent = common::publish(kafka, &topic, 0..300, 10).await;
    let consumer = common::consumer(kafka.client_config(), &topic);
    common::assert_reads_all(&consumer, &sent).await;
}

#[tokio::test]
async fn a_second_group_reads_the_same_events_independently() {
    let kafka = shared_kafka();
    let topic = unique("smoke");
    kafka.create_topic(&topic, 2, 1).await.expect("create topic");
    let sent = common::publish(kafka, &topic, 0..50, 5).await;
    for _ in 0..2 {
        let consumer = common::consumer(kafka.client_config(), &topic);
        common::assert_reads_all(&consumer, &sent).await;
    }
}
