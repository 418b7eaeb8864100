//! R2 from `docs/reliability.md` on real brokers, with the producer's defaults (idempotence,
//! `acks=all`, 5 requests in flight): a leader SIGKILLed and restarted, a leader frozen with SIGSTOP
//! past the controller's session timeout and thawed, and a produce quota that throttles the
//! publisher, all while keyed oracle events flow. `reliability_mock.rs` has the mock cluster's R2
//! (injected Produce errors, one request in flight).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backbone::{Outgoing, PublishError, Publisher, TopicSpec};
use backbone_testkit::KafkaCluster;
use backbone_testkit::oracle::{Oracle, PRODUCER_HEADER, SEQ_HEADER};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;

mod common;

/// Events published per second at most (the faults take about a minute; a debug build on the shared
/// 2-core machine reaches about 1,800/s, so about 75,000 events flow through them).
const RATE: usize = 3_000;
/// The spec's size: once the faults are over, the publisher goes on until this many were published.
const EVENTS: usize = 100_000;
/// Publishes in flight at most (more wait for acknowledgements).
const WINDOW: usize = 5_000;
/// Keys the events spread over (each key's events must stay in order).
const KEYS: usize = 1_000;
/// A safety cap: the publisher stops here even if the faults have not finished.
const MAX_EVENTS: usize = 150_000;
/// The produce quota, bytes per second per broker. An oracle event is about 250 bytes in a batch
/// (key, the oracle's and backbone's headers), so three brokers let through about 120 events/s,
/// far below [`RATE`].
const QUOTA: u64 = 10_000;
/// How long the quota stays on.
const QUOTA_FOR: Duration = Duration::from_secs(10);

/// Publishes oracle events (key `key-<i % KEYS>`, seq `i / KEYS`) at [`RATE`] per second, at most
/// [`WINDOW`] in flight, until `stop` turns true and [`EVENTS`] were published (or [`MAX_EVENTS`]); reports the running count of
/// acknowledgements on `acked`. Returns how many were published and the errors.
async fn publish_paced(
    publisher: &Publisher,
    topic: &TopicSpec,
    oracle: &Arc<Mutex<Oracle>>,
    mut stop: watch::Receiver<bool>,
    acked: watch::Sender<usize>,
) -> (usize, Vec<PublishError>) {
    let producer = publisher.service().to_owned();
    let mut in_flight = FuturesUnordered::new();
    let mut errors = Vec::new();
    let mut next = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_tick = RATE / 100;
    loop {
        let stopping = (*stop.borrow() && next >= EVENTS) || next >= MAX_EVENTS;
        if stopping && in_flight.is_empty() {
            return (next, errors);
        }
        tokio::select! {
            _ = tick.tick(), if !stopping => {
                for _ in 0..per_tick {
                    if in_flight.len() >= WINDOW || next >= MAX_EVENTS {
                        break;
                    }
                    let (key, seq) = (format!("key-{}", next % KEYS), (next / KEYS) as u64);
                    let producer = producer.clone();
                    in_flight.push(async move {
                        let seq_text = seq.to_string();
                        let headers =
                            [(PRODUCER_HEADER, producer.as_bytes()), (SEQ_HEADER, seq_text.as_bytes())];
                        let event = Outgoing::new("OracleEvent", key.as_bytes(), seq_text.as_bytes())
                            .headers(&headers);
                        (key.clone(), seq, publisher.publish(topic, event).await)
                    });
                    next += 1;
                }
            }
            Some((key, seq, result)) = in_flight.next(), if !in_flight.is_empty() => match result {
                Ok(_) => {
                    oracle.lock().unwrap().acknowledged(&producer, &key, seq);
                    acked.send_modify(|n| *n += 1);
                }
                Err(e) => errors.push(e),
            },
            _ = stop.changed(), if !*stop.borrow() => {}
        }
    }
}

/// Acknowledgements per second over `span`, from the running count.
async fn ack_rate(acked: &watch::Receiver<usize>, span: Duration) -> f64 {
    let (from, started) = (*acked.borrow(), Instant::now());
    // Measuring a rate takes time: there is no event to await instead.
    tokio::time::sleep(span).await;
    (*acked.borrow() - from) as f64 / started.elapsed().as_secs_f64()
}

/// Runs `f` on the cluster on a blocking thread (the kit's calls block: JVM tools, metadata waits).
async fn on_cluster<T: Send + 'static>(
    cluster: &Arc<Mutex<KafkaCluster>>,
    f: impl FnOnce(&mut KafkaCluster) -> T + Send + 'static,
) -> T {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || f(&mut cluster.lock().unwrap())).await.expect("cluster task")
}

/// R2 on real brokers with the default 5 requests in flight. Events are paced at [`RATE`] per
/// second at most rather than sent as fast as possible, so that they keep flowing through every
/// fault: about 75,000 events pass through the faults on the shared 2-core machine in a debug
/// build, and the publisher then goes on to the spec's [`EVENTS`] (up to [`MAX_EVENTS`] on a faster
/// machine, whose faults see more).
/// Each fault hits the leader of the partition key-0 lands on, with up to [`WINDOW`] publishes in
/// flight: (a) SIGKILL, restart once the controller moved its partitions, wait until its replicas
/// caught up; (b) SIGSTOP until the controller fenced it and moved its partitions (6 s), SIGCONT,
/// wait until it caught up; (c) a produce quota of [`QUOTA`] on the publisher's client id for
/// [`QUOTA_FOR`], then lifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_default_in_flight_survives_leader_kill_pause_and_quota_losing_duplicating_and_reordering_nothing()
{
    let begun = Instant::now();
    let cluster = KafkaCluster::start_three().expect("three brokers");
    let cluster_took = begun.elapsed();
    let client = cluster.client_config();
    let (service, topic) = common::owned_topic(6);
    cluster.create_topic(topic.name(), 6, 3).await.expect("topic, RF 3, min.insync 2");
    let mut config = common::config(cluster.bootstrap_servers());
    config.profile = backbone::Profile::Production;
    assert!(config.producer_overrides.is_empty(), "the framework's producer defaults");
    let publisher = common::publisher(&config, &service, &topic);
    let producer_config = backbone::publish::producer_config(&config, &service);
    for (key, want) in
        [("enable.idempotence", "true"), ("acks", "all"), ("max.in.flight.requests.per.connection", "5")]
    {
        assert_eq!(producer_config.get(key), Some(want), "{key}");
    }

    // The busy partition: the one key-0 lands on; each fault hits its leader.
    let busy =
        publisher.publish(&topic, Outgoing::new("Warmup", b"key-0", b"")).await.expect("warm-up").partition;
    let cluster = Arc::new(Mutex::new(cluster));
    let oracle = Arc::new(Mutex::new(Oracle::new()));
    let (stop_tx, stop) = watch::channel(false);
    let (acked_tx, acked) = watch::channel(0usize);
    let started = Instant::now();

    let name = topic.name().to_owned();
    let faults = async {
        let mut acked = acked.clone();
        acked.wait_for(|n| *n >= 1_000).await.expect("publisher running");
        let baseline = ack_rate(&acked, Duration::from_secs(4)).await;

        // (a) SIGKILL the leader; once the controller moved its partitions, restart it and wait
        // until its replicas caught up.
        let name_a = name.clone();
        let killed = on_cluster(&cluster, move |c| {
            let leader = c.leader_of(&name_a, busy).expect("leader");
            c.kill_broker(leader).expect("SIGKILL the leader");
            c.wait_leader_moved(&name_a, busy, leader, Duration::from_secs(60)).expect("a new leader");
            c.restart_broker(leader).expect("restart it");
            c.wait_in_sync(&[&name_a], Duration::from_secs(90)).expect("in sync after the restart");
            leader
        })
        .await;
        let after_kill = (*acked.borrow(), started.elapsed());

        // (b) SIGSTOP the leader until the controller fenced it and moved its partitions (past
        // `broker.session.timeout.ms`, 6 s), then SIGCONT it and wait until it caught up.
        let name_b = name.clone();
        let (paused, frozen) = on_cluster(&cluster, move |c| {
            let leader = c.leader_of(&name_b, busy).expect("leader");
            c.pause_broker(leader).expect("SIGSTOP the leader");
            let frozen = Instant::now();
            let moved = c.wait_leader_moved(&name_b, busy, leader, Duration::from_secs(60));
            let frozen = frozen.elapsed();
            c.resume_broker(leader).expect("SIGCONT");
            moved.expect("a new leader while it was frozen");
            c.wait_in_sync(&[&name_b], Duration::from_secs(90)).expect("in sync after the pause");
            (leader, frozen)
        })
        .await;
        let after_pause = (*acked.borrow(), started.elapsed());

        // (c) A produce quota on the publisher's client id, then lifted.
        let client_id = service.clone();
        on_cluster(&cluster, move |c| c.set_produce_quota(&client_id, Some(QUOTA)).expect("quota on")).await;
        let throttled = ack_rate(&acked, QUOTA_FOR).await;
        let client_id = service.clone();
        on_cluster(&cluster, move |c| c.set_produce_quota(&client_id, None).expect("quota off")).await;
        let lifted = *acked.borrow();
        acked.wait_for(|n| *n >= lifted + 2 * RATE).await.expect("publisher running");
        stop_tx.send_replace(true);
        (baseline, killed, after_kill, paused, frozen, after_pause, throttled)
    };
    let ((published, errors), (baseline, killed, after_kill, paused, frozen, after_pause, throttled)) =
        tokio::join!(publish_paced(&publisher, &topic, &oracle, stop, acked_tx), faults);
    let elapsed = started.elapsed();

    eprintln!(
        "R2 (5 in flight): published {published} in {elapsed:?}; {baseline:.0}/s unthrottled; killed leader \
         {killed} (acked, at, once it was back in sync: {after_kill:?}), paused leader {paused} for \
         {frozen:?} (acked, at, once in sync: {after_pause:?}); {throttled:.0}/s under a quota of {QUOTA} B/s per broker"
    );
    assert!(
        errors.is_empty(),
        "every publish resolved Ok: {} errors, e.g. {:?}",
        errors.len(),
        errors.first()
    );
    assert!(
        throttled < baseline / 3.0,
        "the quota throttled the publisher: {throttled:.0}/s under it, {baseline:.0}/s without"
    );

    let checking = Instant::now();
    let report = common::check(client, &topic, published, oracle).await;
    eprintln!(
        "R2 (5 in flight): {report} (cluster started in {cluster_took:?}, read back in {:?})",
        checking.elapsed()
    );
    assert!(published >= EVENTS, "the spec's {EVENTS} events: {published}");
    assert_eq!(report.acknowledged, published);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.seen, published, "every acknowledged event read once");
}
