//! R1, R3 and R21 (a table's probe) from `docs/reliability.md`, on a real cluster of three brokers
//! (each test starts its own, because it kills brokers).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backbone::Outgoing;
use backbone_testkit::KafkaCluster;
use backbone_testkit::oracle::Oracle;

mod common;

/// The binary's cluster tests run one at a time: two 3-broker clusters beside each other on a
/// 2-core machine slowed R3's brokers enough to push a publish past its bound (11.47 s once).
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// R1: 100,000 keyed events over 1,000 keys with framework defaults, while the leader of a busy
/// partition is SIGKILLed at 1/3 and again at 1/2 of progress (restarted each time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_leader_kills_lose_duplicate_and_reorder_nothing() {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    const EVENTS: usize = 100_000;
    const KEYS: usize = 1_000;
    let cluster = KafkaCluster::start_three().expect("three brokers");
    let bootstrap = cluster.bootstrap_servers().to_owned();
    let client = cluster.client_config();
    let (service, topic) = common::owned_topic(6);
    cluster.create_topic(topic.name(), 6, 3).await.expect("topic, RF 3, min.insync 2");
    let mut config = common::config(&bootstrap);
    config.profile = backbone::Profile::Production;
    let publisher = common::publisher(&config, &service, &topic);

    // The busy partition: the one key-0 lands on (every key gets 100 events).
    let busy =
        publisher.publish(&topic, Outgoing::new("Warmup", b"key-0", b"")).await.expect("warm-up").partition;
    let cluster = Arc::new(Mutex::new(cluster));
    let kill_and_restart = |cluster: Arc<Mutex<KafkaCluster>>, name: String| {
        tokio::task::spawn_blocking(move || {
            let mut c = cluster.lock().unwrap();
            let leader = c.leader_of(&name, busy).expect("leader");
            c.kill_broker(leader).expect("SIGKILL the leader");
            c.restart_broker(leader).expect("restart it");
            leader
        })
    };

    let oracle = Arc::new(Mutex::new(Oracle::new()));
    let mut kills = Vec::new();
    let started = Instant::now();
    let errors = common::publish_oracle(&publisher, &topic, EVENTS, KEYS, 5_000, &oracle, |acked| {
        if (acked == EVENTS / 3 && kills.is_empty()) || (acked == EVENTS / 2 && kills.len() == 1) {
            kills.push(kill_and_restart(cluster.clone(), topic.name().to_owned()));
        }
    })
    .await;
    let elapsed = started.elapsed();
    let mut killed = Vec::new();
    for k in kills {
        killed.push(k.await.expect("kill/restart"));
    }
    assert_eq!(killed.len(), 2, "two leader kills happened");
    assert!(
        errors.is_empty(),
        "every publish resolved Ok: {} errors, e.g. {:?}",
        errors.len(),
        errors.first()
    );

    // The warm-up event has no oracle headers: the read-back awaits the oracle's events only.
    let report = common::check(client, &topic, EVENTS, oracle).await;
    eprintln!("R1: published {EVENTS} in {elapsed:?}, killed leaders {killed:?}; {report}");
    assert_eq!(report.acknowledged, EVENTS);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.seen, EVENTS, "every acknowledged event read once");
}

/// R3: two of three brokers down (min.insync.replicas 2): every publish returns a retriable error
/// within the 10 s delivery timeout plus librdkafka's timeout-scan granularity, none reports
/// success, and health reports degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_no_quorum_fails_retriably_within_the_delivery_timeout() {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = KafkaCluster::start_three().expect("three brokers");
    let (service, topic) = common::owned_topic(3);
    cluster.create_topic(topic.name(), 3, 3).await.expect("topic");
    let mut config = common::config(cluster.bootstrap_servers());
    config.profile = backbone::Profile::Production;
    config.delivery_timeout = Duration::from_secs(10);
    let publisher = common::publisher(&config, &service, &topic);
    publisher.publish(&topic, Outgoing::new("Warmup", b"k", b"")).await.expect("healthy cluster accepts");
    assert!(publisher.health().snapshot().is_healthy());

    cluster.kill_broker(2).expect("kill broker 2");
    cluster.kill_broker(3).expect("kill broker 3");

    let started = Instant::now();
    let results = futures::future::join_all((0..30).map(|i| {
        let publisher = &publisher;
        let topic = &topic;
        async move {
            let key = format!("key-{i}");
            let t = Instant::now();
            let r = publisher.publish(topic, Outgoing::new("E", key.as_bytes(), b"v")).await;
            (r, t.elapsed())
        }
    }))
    .await;
    eprintln!("R3: 30 publishes answered within {:?}", started.elapsed());
    // librdkafka expires queued messages in a scan that runs once a second (rd_kafka_topic_scan_all
    // from the main thread's 1 s timer), so a message may outlive its timeout by up to 1 s; one
    // more second is the delivery report's way back through the runtime on a busy machine.
    let bound = config.delivery_timeout + Duration::from_secs(1) + Duration::from_secs(1);
    for (result, took) in &results {
        let err = result.as_ref().expect_err("no publish succeeds without a quorum");
        assert!(err.is_retriable(), "retriable: {err:?}");
        assert!(*took < bound, "answered within {bound:?}, took {took:?}: {err}");
    }
    let health = publisher.health().snapshot();
    assert!(!health.is_healthy(), "health reports degraded");
    assert!(health.degraded.contains_key(backbone::publish::HEALTH_COMPONENT), "{health:?}");
}

/// A table's `sync_acknowledged` (what Orders does before writing an order it was asked for with
/// an `Idempotency-Key`) answers after its partition's leader is killed and stays down: the table's
/// probe asks the new leader, not the dead broker until librdkafka's next periodic metadata refresh
/// (`topic.metadata.refresh.interval.ms`, 5 minutes). Found in the compose estate: a killed broker
/// left Orders answering 503 to every keyed POST for 4.5 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_a_table_probe_follows_its_partition_to_a_new_leader() {
    use backbone::table::Table;
    use backbone::{Service, TopicSpec, consume::dead_letter_topic};
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = KafkaCluster::start_three().expect("three brokers");
    let mut config = common::config(cluster.bootstrap_servers());
    config.profile = backbone::Profile::Production;
    let service = backbone_testkit::unique("probe");
    let topic = TopicSpec::private(&service, "levels").partitions(1).compacted().build().unwrap();
    let dlq = dead_letter_topic(&service, &topic).unwrap();
    let spec = Service::new(&service).owns(&topic).owns(&dlq).consumes(&topic).spec().unwrap();
    let running = spec.start(&config).await.expect("start provisions the topics");
    let table = Table::<String>::builder(&running.context(), &topic).build().expect("table");
    let task = tokio::spawn({
        let table = table.clone();
        async move { table.run(std::future::pending()).await }
    });
    tokio::time::timeout(Duration::from_secs(60), table.ready()).await.expect("restored within 60 s");
    running.publisher().publish(&topic, Outgoing::new("Level", b"k", b"v1")).await.expect("acknowledged");
    table.sync_acknowledged(0, Duration::from_secs(30)).await.expect("synced before the kill");

    let leader = cluster.leader_of(topic.name(), 0).expect("leader");
    cluster.kill_broker(leader).expect("SIGKILL the partition's leader");
    let started = Instant::now();
    let synced = table.sync_acknowledged(0, Duration::from_secs(60)).await;
    let took = started.elapsed();
    eprintln!("sync_acknowledged after killing leader {leader}: {synced:?} in {took:?}");
    synced.expect("synced with the new leader");
    // The new leader is elected within the brokers' session timeout (6 s here); the probe's first
    // look at the dead one may wait its 10 s before it looks the leader up again.
    assert!(took < Duration::from_secs(40), "took {took:?}");
    task.abort();
}
