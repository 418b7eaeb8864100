//! R15 from `docs/reliability.md` with the consumer's default settings, on three brokers (RF 3,
//! `min.insync.replicas` 2): a slow consumer under a flood keeps its *process's* resident memory
//! within a stated bound, not only its fetch queues. The consuming process is a child (this test
//! binary re-run), so no other test's memory counts; the parent reads the child's peak resident set
//! (`VmHWM`) from `/proc/<pid>/status`.

use std::io::BufRead as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backbone::Outgoing;
use backbone::consume::{Consumer, dead_letter_topic};
use backbone::handler::BoxedHandler;
use backbone::{Service, TopicSpec};
use backbone_testkit::{KafkaCluster, unique};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::sync::oneshot;

mod common;

/// The child's environment variable: the cluster's bootstrap servers.
const CHILD: &str = "BACKBONE_R15_DEFAULTS_BOOTSTRAP";
const TEST: &str = "r15_default_settings_keep_the_consuming_process_within_its_memory_bound";

const PARTITIONS: i32 = 3;
/// Events in the flood, each [`PAD`] bytes of payload and more: about 100 MB, twice what the
/// consumer's default queues (16 MiB per partition) hold, so they fill.
const FLOOD: usize = 100_000;
const PAD: usize = 1_000;
/// The publisher's capacity (`Config::publish_queue`): publishes beyond it wait for room.
const PUBLISH_CAPACITY: usize = 1_000;
/// Publishes the flood keeps in flight: more than the capacity, so publishers await.
const IN_FLIGHT: usize = 2_000;
/// Bytes a published record of the flood holds in the producer's queue at most: its key and payload
/// ([`COUNTED_BYTES`]), the framework's headers (~240 B) and librdkafka's message struct (~300 B).
const RECORD_BYTES: usize = PAD + 600;
/// What a fetch queue counts of a flood record (`fetchq_size`, and so `queue_bound_bytes`): its key
/// (`order-<n>`, at most 11 bytes) and payload (`{"n":<n>,"pad":"…"}`, PAD + at most 17).
const COUNTED_BYTES: usize = PAD + 28;
/// What a queued record costs beyond what its queue counts: its headers in the fetched batch (the
/// framework's metadata: at most event type, producer, correlation id and traceparent, ~240 bytes
/// here, less since they went minimal) and
/// librdkafka's per-message struct (`rd_kafka_op_t` with its message, ~400 bytes). Measured: ~750 B
/// per queued message with 1 KB records (peak 107.6 MiB with 48.7 MiB counted in the queues), ~620 B
/// with 100-byte records (peak 88.0 MiB with 11.1 MiB counted, ~97,000 messages queued).
const PER_MESSAGE_OVERHEAD: usize = 768;
/// The process without the flood: the test binary's code and data, the Tokio runtime, two
/// librdkafka clients with their threads and buffers, the registry client (measured: the child's
/// resident set once ready is 19.6 MiB, debug build), plus what the flood itself keeps
/// ([`IN_FLIGHT`] pending publishes with their ~1 KB bodies, 2–3 MB) and the allocator's slack.
const BASE_ALLOWANCE: usize = 32 << 20;

/// The fixed allowance beside the queue and publisher terms: [`BASE_ALLOWANCE`] plus
/// [`PER_MESSAGE_OVERHEAD`] for every record the queues can hold (their byte bound over
/// [`COUNTED_BYTES`]; with 1 KB records that bound binds before the default 100,000 messages per
/// partition do). About 70 MiB with the defaults.
fn allowance(queue_bound_bytes: usize) -> usize {
    BASE_ALLOWANCE + PARTITIONS as usize * queue_bound_bytes / COUNTED_BYTES * PER_MESSAGE_OVERHEAD
}

/// `VmHWM` (peak resident set) and `VmRSS` of process `pid`, in bytes.
fn memory_of(pid: u32) -> (usize, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the child's status");
    let field = |name: &str| -> usize {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The number after `name=` in a line of `key=value` words.
fn value(line: &str, name: &str) -> usize {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name}= in {line:?}"))
}

/// R15 with the consumer's defaults (queue 16 MiB and 100,000 messages per partition, concurrency
/// 64): a 10 ms handler on 3 partitions while 100,000 events of ~1 KB arrive, published by the same
/// process through a publisher of capacity [`PUBLISH_CAPACITY`]. The bound on the process's peak
/// resident set:
///
/// `PARTITIONS × Consumer::queue_bound_bytes()` (what the fetch queues may hold, one record batch
/// of overshoot each) `+ PUBLISH_CAPACITY × RECORD_BYTES` (what the producer's queue may hold)
/// `+ allowance` (the process without the flood, and what each queued record costs beyond what
/// its queue counts: see [`allowance`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r15_default_settings_keep_the_consuming_process_within_its_memory_bound() {
    if let Ok(bootstrap) = std::env::var(CHILD) {
        return child(&bootstrap).await;
    }
    let cluster = KafkaCluster::start_three().expect("three brokers");
    let (mut child, mut lines) =
        common::spawn_test_child_with_stdin(TEST, CHILD, cluster.bootstrap_servers());
    let pid = child.id();
    let ready = common::child_says_within(&mut lines, "R15D ready", Duration::from_secs(120)).await;
    let (_, rss_ready) = memory_of(pid);
    let done = common::child_says_within(&mut lines, "R15D done", Duration::from_secs(240)).await;
    let (hwm, rss_done) = memory_of(pid);
    drop(child.stdin.take()); // the child stops its consumer and exits
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().expect("child status");
    assert!(status.success(), "the child failed: {status}");

    let queue_bound = value(&ready, "queue_bound_bytes");
    let allowance = allowance(queue_bound);
    let bound = PARTITIONS as usize * queue_bound + PUBLISH_CAPACITY * RECORD_BYTES + allowance;
    let (ok, waited, failed) = (value(&done, "ok"), value(&done, "waited"), value(&done, "failed"));
    let (max_fetchq, handled) = (value(&done, "max_fetchq"), value(&done, "handled"));
    let mib = |b: usize| b as f64 / f64::from(1 << 20);
    println!(
        "R15 defaults: child VmRSS {:.1} MiB once ready, peak (VmHWM) {:.1} MiB, VmRSS {:.1} MiB after the \
         flood; bound {:.1} MiB = {PARTITIONS} × {:.1} MiB + {PUBLISH_CAPACITY} × {RECORD_BYTES} B + {:.1} MiB; \
         peak beyond the queue and publisher terms {:.1} MiB; max summed fetchq_size {:.1} MiB; published \
         {ok}/{FLOOD} ({waited} waited for room), handled {handled}",
        mib(rss_ready),
        mib(hwm),
        mib(rss_done),
        mib(bound),
        mib(queue_bound),
        mib(allowance),
        mib(hwm.saturating_sub(PARTITIONS as usize * queue_bound + PUBLISH_CAPACITY * RECORD_BYTES)),
        mib(max_fetchq),
    );
    assert_eq!(failed, 0, "every publish Ok");
    assert_eq!(ok, FLOOD);
    assert!(waited > 0, "with {IN_FLIGHT} in flight and capacity {PUBLISH_CAPACITY}, publishers awaited");
    // The test can fail only if the queues were full: most of their 3 × 16 MiB were in use.
    assert!(
        max_fetchq >= PARTITIONS as usize * queue_bound / 2,
        "the fetch queues filled: {max_fetchq} B of {} B",
        PARTITIONS as usize * queue_bound
    );
    assert!(handled < FLOOD / 4, "the flood waited in Kafka, not in memory: handled {handled} of {FLOOD}");
    assert!(hwm <= bound, "the consuming process's peak resident set {hwm} B stays within {bound} B");
}

/// The consuming process: a service with the default consumer settings floods its own topic.
async fn child(bootstrap: &str) {
    let mut config = common::config(bootstrap);
    config.profile = backbone::Profile::Production;
    config.publish_queue = PUBLISH_CAPACITY;
    let service = unique("r15d");
    let topic = TopicSpec::public(&service, "orders", 1).partitions(PARTITIONS).build().unwrap();
    let dlq = dead_letter_topic(&service, &topic).unwrap();
    let spec = Service::new(&service).owns(&topic).owns(&dlq).consumes(&topic).spec().unwrap();
    // The topics exist, every replica in sync, before the service starts: provisioning's own wait
    // after creating a topic described its configuration through a broker that did not know it yet
    // once (empty entries, a permanent error), which is not what this test is about.
    let kit = KafkaCluster::external(bootstrap);
    for t in [&topic, &dlq] {
        kit.create_topic(t.name(), t.partitions(), 3).await.expect("topic, RF 3");
    }
    tokio::task::block_in_place(|| kit.wait_in_sync(&[topic.name(), dlq.name()], Duration::from_secs(60)))
        .expect("every replica in sync");
    let running = spec.start(&config).await.expect("start checks both topics");
    let publisher = running.publisher().clone();

    let observed =
        Arc::new(common::Observed { topic: topic.name().to_owned(), ..common::Observed::default() });
    let handled = Arc::new(AtomicU64::new(0));
    let consumer =
        Consumer::new(&running.context(), &topic, BoxedHandler::named("slow", common::slow), handled.clone())
            .unwrap()
            // Statistics only observe the queues; every queue setting stays the default.
            .client_setting("statistics.interval.ms", "500")
            .hooks(common::Watcher(observed.clone()));
    println!("R15D ready queue_bound_bytes={}", consumer.queue_bound_bytes());
    let (stop, stopped) = oneshot::channel::<()>();
    let running_consumer = tokio::spawn(consumer.run(async move {
        stopped.await.ok();
    }));
    tokio::time::timeout(Duration::from_secs(60), observed.assigned.notified())
        .await
        .expect("partitions assigned within 60 s");

    let pad = "x".repeat(PAD);
    let started = Instant::now();
    let (mut next, mut ok, mut waited, mut failed) = (0, 0, 0, 0);
    let mut in_flight = FuturesUnordered::new();
    while next < FLOOD || !in_flight.is_empty() {
        while next < FLOOD && in_flight.len() < IN_FLIGHT {
            let (publisher, topic, pad) = (&publisher, &topic, &pad);
            in_flight.push(async move {
                let key = format!("order-{next}");
                let body = format!(r#"{{"n":{next},"pad":"{pad}"}}"#);
                let publish =
                    publisher.publish(topic, Outgoing::new("OrderCreated", key.as_bytes(), body.as_bytes()));
                let had_to_wait = format!("{publish:?}").contains(r#"state: "waiting""#);
                (publish.await.is_ok(), had_to_wait)
            });
            next += 1;
        }
        if let Some((success, had_to_wait)) = in_flight.next().await {
            waited += usize::from(had_to_wait);
            if success {
                ok += 1;
            } else {
                failed += 1;
            }
        }
    }
    eprintln!("R15D: flood published in {:?}", started.elapsed());

    // The queues fill while the flood goes on; two more statistics reports see where they stand.
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), observed.report.notified())
            .await
            .expect("statistics every 500 ms");
    }
    println!(
        "R15D done ok={ok} waited={waited} failed={failed} max_fetchq={} handled={}",
        observed.max_fetchq_bytes.load(Ordering::SeqCst),
        handled.load(Ordering::SeqCst)
    );

    // The parent closes stdin once it has read this process's memory.
    tokio::task::spawn_blocking(|| for _ in std::io::stdin().lock().lines().map_while(Result::ok) {})
        .await
        .unwrap();
    stop.send(()).ok();
    tokio::time::timeout(config.shutdown_timeout + Duration::from_secs(5), running_consumer)
        .await
        .expect("the consumer stops within its shutdown budget")
        .unwrap()
        .expect("clean stop");
}
