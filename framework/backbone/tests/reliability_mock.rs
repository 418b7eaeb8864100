//! R2 from `docs/reliability.md`: produce-request errors injected by librdkafka's mock cluster
//! (fault injection only; the real-broker tests live beside this one).

use std::sync::{Arc, Mutex};

use backbone_testkit::oracle::Oracle;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

mod common;

/// Publishes 10,000 oracle events through a mock cluster whose Produce requests fail 1 % of the time.
async fn publish_through_faults() -> backbone_testkit::oracle::Report {
    const EVENTS: usize = 10_000;
    let mock = MockCluster::new(3).expect("mock cluster");
    let (service, topic) = common::owned_topic(6);
    mock.create_topic(topic.name(), 6, 3).expect("topic");

    // 1 % of Produce requests fail, cycling through the three retriable errors.
    let faults = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
    ];
    let errors: Vec<RDKafkaRespErr> =
        (0..20_000)
            .map(|i| {
                if i % 100 == 99 { faults[(i / 100) % 3] } else { RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR }
            })
            .collect();
    mock.request_errors(RDKafkaApiKey::Produce, &errors);

    let bootstrap = mock.bootstrap_servers();
    let mut config = common::config(&bootstrap);
    config.linger = std::time::Duration::from_millis(1); // many small requests, so many faults
    config.producer_overrides.insert("max.in.flight.requests.per.connection".into(), "1".into());
    let publisher = common::publisher(&config, &service, &topic);
    let oracle = Arc::new(Mutex::new(Oracle::new()));
    let failed = common::publish_oracle(&publisher, &topic, EVENTS, 100, 500, &oracle, |_| {}).await;
    assert!(failed.is_empty(), "every publish resolved Ok: {:?}", failed.first());

    let mut client = rdkafka::ClientConfig::new();
    client.set("bootstrap.servers", &bootstrap);
    let report = common::check(client, &topic, EVENTS, oracle).await;
    assert_eq!(report.acknowledged, EVENTS);
    report
}

// Why one request in flight: librdkafka's mock broker checks idempotent sequence numbers only for
// *transactional* producers (`rd_kafka_mock_validate_records` in librdkafka 2.12.1 returns early
// without a TransactionalId). With 5 in flight, after an injected error it appends the next in-flight
// batch that a real broker refuses with OUT_OF_ORDER_SEQUENCE_NUMBER, and librdkafka's recovery,
// which relies on that refusal, then sees reorders and (seen once in CI) acknowledged batches that the
// mock never kept. That is the mock's gap, not the producer's: the defaults (5 in flight) are proven
// under real leader failures by R1 on real brokers.

/// With one request in flight the mock's gap cannot bite: nothing lost, duplicated or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_one_percent_produce_errors_keep_order_with_one_request_in_flight() {
    let report = publish_through_faults().await;
    eprintln!("R2 (one in flight): {report}");
    assert!(report.is_clean(), "{report}");
}
