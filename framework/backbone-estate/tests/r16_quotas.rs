//! R16 of the reliability spec: a greedy service under a produce quota next to a well-behaved one,
//! on a real broker with SASL and the StandardAuthorizer. The quota is declared in the greedy
//! service's spec and applied by `backbone_estate::admin` (the plan/apply of `backbone estate
//! apply`); both services publish through backbone's own publisher (acks=all, idempotent).
//!
//! Expected: the greedy one is throttled to its quota (±20 %), the other keeps its throughput
//! (≥ 90 % of its solo rate).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backbone::service::Quotas;
use backbone::{Config, Outgoing, Publisher, Service, TopicSpec};
use backbone_estate::acl::{AclBinding, Operation, PatternType, ResourceType};
use backbone_estate::admin::Cluster;
use backbone_testkit::{KafkaCluster, password_for};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

/// The greedy service's produce quota: 1 MiB/s.
const QUOTA: u64 = 1024 * 1024;
/// The well-behaved service's own pace: 512 KiB/s, in 16 KiB events every 31.25 ms.
const POLITE_RATE: u64 = 512 * 1024;
const EVENT: usize = 16 * 1024;
/// How long each rate is measured, after a warm-up that lets the throttling settle.
const WARM_UP: Duration = Duration::from_secs(4);
const MEASURE: Duration = Duration::from_secs(10);
/// The broker's quota window, in one-second samples. Kafka's default (11) lets a new client burst
/// up to 10 s of its quota and then throttles it for up to 11 s, so its rate is a saw-tooth with a
/// period near the whole measurement: one 10 s sample saw 0.11 of the quota. With 2 samples the
/// period is about 2 s and 10 s of measurement average five of them; the enforcement is the same.
const QUOTA_SAMPLES: &str = "2";

fn config(kafka: &KafkaCluster, user: &str) -> Config {
    let mut config = Config::default();
    config.bootstrap_servers = kafka.bootstrap_servers().to_owned();
    config.profile = backbone::Profile::Development;
    config.security.protocol = "SASL_PLAINTEXT".into();
    config.security.mechanism = "PLAIN".into();
    config.security.username = Some(user.to_owned());
    config.security.password = Some(password_for(user).into());
    config
}

/// Everything a service needs on its own prefix, and idempotent writes.
fn grants(service: &str) -> Vec<AclBinding> {
    let topic = |op| {
        AclBinding::allow(service, op, ResourceType::Topic, format!("{service}."), PatternType::Prefixed)
    };
    vec![
        topic(Operation::Write),
        topic(Operation::Read),
        topic(Operation::Describe),
        topic(Operation::DescribeConfigs),
        topic(Operation::Create),
        AclBinding::allow(
            service,
            Operation::IdempotentWrite,
            ResourceType::Cluster,
            "kafka-cluster",
            PatternType::Literal,
        ),
    ]
}

/// Starts `service` (provisioning its one topic) and returns its publisher and topic.
async fn start(kafka: &KafkaCluster, service: &str, quotas: Quotas) -> (backbone::Running, TopicSpec) {
    let topic = TopicSpec::private(service, "load").partitions(1).build().unwrap();
    let spec = Service::new(service).owns(&topic).quotas(quotas).spec().unwrap();
    let running = spec.start(&config(kafka, service)).await.expect("the service starts with its grants");
    (running, topic)
}

/// Acknowledged bytes, counted as the acknowledgements come.
#[derive(Clone, Default)]
struct Acked(Arc<AtomicU64>);

impl Acked {
    /// Bytes per second acknowledged over `MEASURE`, after `WARM_UP`.
    async fn rate(&self) -> u64 {
        tokio::time::sleep(WARM_UP).await;
        let (from, at) = (self.0.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(MEASURE).await;
        let bytes = self.0.load(Ordering::Relaxed) - from;
        (bytes as f64 / at.elapsed().as_secs_f64()) as u64
    }
}

/// Publishes as fast as the broker lets it, 16 events (256 KiB) in flight, until `stop`.
async fn greedy(publisher: Publisher, topic: TopicSpec, acked: Acked, stop: Arc<tokio::sync::Notify>) {
    let payload = vec![7u8; EVENT];
    let mut inflight = FuturesUnordered::new();
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        while inflight.len() < 16 {
            inflight.push(publisher.publish(&topic, Outgoing::new("Load", b"k", &payload)));
        }
        tokio::select! {
            () = &mut stopped => return,
            Some(done) = inflight.next() => {
                done.expect("a throttled publish still succeeds");
                acked.0.fetch_add(EVENT as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Publishes at `POLITE_RATE` (one event per tick, each awaited in the background), until `stop`.
async fn polite(publisher: Publisher, topic: TopicSpec, acked: Acked, stop: Arc<tokio::sync::Notify>) {
    let payload = vec![1u8; EVENT];
    let mut tick = tokio::time::interval(Duration::from_secs_f64(EVENT as f64 / POLITE_RATE as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = FuturesUnordered::new();
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = tick.tick() => inflight.push(publisher.publish(&topic, Outgoing::new("Load", b"k", &payload))),
            Some(done) = inflight.next() => {
                done.expect("publish");
                acked.0.fetch_add(EVENT as u64, Ordering::Relaxed);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_a_greedy_service_is_throttled_to_its_quota_and_its_neighbour_keeps_its_rate() {
    let kafka = tokio::task::spawn_blocking(|| {
        KafkaCluster::builder()
            .sasl(["greedy", "polite"])
            .broker_property("quota.window.num", QUOTA_SAMPLES)
            .start()
    })
    .await
    .unwrap()
    .expect("a SASL broker");
    let mut admin = config(&kafka, "admin");
    admin.security.username = Some("admin".into());
    let cluster = Cluster::connect(&admin).await.expect("the admin connects");

    // The estate: the greedy service declares its quota; the other declares none.
    let declared = Quotas { producer_byte_rate: Some(QUOTA), ..Quotas::default() };
    let acls: BTreeSet<AclBinding> = ["greedy", "polite"].iter().flat_map(|s| grants(s)).collect();
    let quotas = BTreeMap::from([("greedy".to_owned(), declared)]);
    let prefixes = vec!["greedy".to_owned(), "polite".to_owned()];
    let plan = cluster.plan(&acls, &quotas, &prefixes, false).await.unwrap();
    cluster.apply(&plan).await.unwrap();
    assert!(cluster.plan(&acls, &quotas, &prefixes, false).await.unwrap().is_empty(), "applied");
    let (greedy_service, greedy_topic) = start(&kafka, "greedy", declared).await;
    let (polite_service, polite_topic) = start(&kafka, "polite", Quotas::default()).await;

    // 1. The well-behaved service alone.
    let stop = Arc::new(tokio::sync::Notify::new());
    let solo = Acked::default();
    let task = tokio::spawn(polite(
        polite_service.publisher().clone(),
        polite_topic.clone(),
        solo.clone(),
        stop.clone(),
    ));
    let solo_rate = solo.rate().await;
    stop.notify_waiters();
    task.await.unwrap();

    // 2. Both at once: the greedy one as fast as it can.
    let stop = Arc::new(tokio::sync::Notify::new());
    let (hog, neighbour) = (Acked::default(), Acked::default());
    let tasks = [
        tokio::spawn(greedy(greedy_service.publisher().clone(), greedy_topic, hog.clone(), stop.clone())),
        tokio::spawn(polite(
            polite_service.publisher().clone(),
            polite_topic,
            neighbour.clone(),
            stop.clone(),
        )),
    ];
    let (greedy_rate, shared_rate) = tokio::join!(hog.rate(), neighbour.rate());
    stop.notify_waiters();
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "R16: greedy {greedy_rate} B/s under a quota of {QUOTA} B/s ({:.2}); neighbour {shared_rate} B/s, \
         solo {solo_rate} B/s ({:.2})",
        greedy_rate as f64 / QUOTA as f64,
        shared_rate as f64 / solo_rate as f64
    );
    let ratio = greedy_rate as f64 / QUOTA as f64;
    assert!((0.8..=1.2).contains(&ratio), "the greedy service at {ratio:.2} of its quota");
    assert!(
        shared_rate as f64 >= 0.9 * solo_rate as f64,
        "the neighbour at {shared_rate} of {solo_rate} B/s"
    );
    drop((greedy_service, polite_service));
}
