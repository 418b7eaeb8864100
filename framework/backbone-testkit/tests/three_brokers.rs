//! Smoke tests on a cluster of three brokers and a controller-only node (each test starts its own,
//! because it kills brokers).

use backbone_testkit::{KafkaCluster, unique};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_with_replication_three() {
    let kafka = KafkaCluster::start_three().expect("start 3 brokers");
    assert_eq!(kafka.broker_ids(), vec![1, 2, 3]);
    let topic = unique("replicated");
    kafka.create_topic(&topic, 6, 3).await.expect("create topic");
    let sent = common::publish(&kafka, &topic, 0..600, 50).await;
    let consumer = common::consumer(kafka.client_config(), &topic);
    common::assert_reads_all(&consumer, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_restarts_and_nothing_is_lost() {
    let mut kafka = KafkaCluster::start_three().expect("start 3 brokers");
    let topic = unique("durable");
    kafka.create_topic(&topic, 1, 3).await.expect("create topic");
    let mut sent = common::publish(&kafka, &topic, 0..200, 20).await;

    let leader = kafka.leader_of(&topic, 0).expect("leader");
    kafka.kill_broker(leader).expect("kill the leader");
    // With min.insync.replicas=2 and two brokers left, acks=all writes still succeed.
    sent.extend(common::publish(&kafka, &topic, 200..400, 20).await);
    kafka.restart_broker(leader).expect("restart the old leader");
    sent.extend(common::publish(&kafka, &topic, 400..600, 20).await);

    let consumer = common::consumer(kafka.client_config(), &topic);
    common::assert_reads_all(&consumer, &sent).await;
}
