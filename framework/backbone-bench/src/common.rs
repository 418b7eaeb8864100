//! What the broker benchmarks share: the broker, the events' keys and headers, a development
//! configuration, a consuming service, the raw consumer, and rates.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backbone::consume::dead_letter_topic;
use backbone::publish::headers;
use backbone::{Config, Context, Profile, Service, ServiceSpec, TopicSpec};
use backbone_testkit::{KafkaCluster, unique};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};

pub(crate) const EVENTS: usize = 200_000;
pub(crate) const KEYS: usize = 1_000;
/// How long one read of the whole topic may take before the benchmark gives up.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) fn keys() -> Vec<String> {
    (0..KEYS).map(|k| format!("order-{k:06}")).collect()
}

/// Headers of the same sizes as backbone's default metadata on an `OrderCreated` published on the
/// topic named for it (`traceparent` alone: the type is the topic's, the correlation id the trace
/// id, the producer the topic's owner; see `backbone::headers`), with fixed values: the raw side
/// computes nothing per event. `BENCH_LEGACY_HEADERS=1` gives the four headers backbone wrote on
/// every event before (event type, producer, correlation id, traceparent).
pub(crate) fn raw_headers(service: &str) -> OwnedHeaders {
    let traceparent = Header {
        key: headers::TRACEPARENT,
        value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    };
    if std::env::var("BENCH_LEGACY_HEADERS").is_ok_and(|v| v == "1") {
        return OwnedHeaders::new_with_capacity(4)
            .insert(Header { key: headers::EVENT_TYPE, value: Some("OrderCreated") })
            .insert(Header { key: headers::PRODUCER, value: Some(service) })
            .insert(Header { key: headers::CORRELATION_ID, value: Some("4bf92f3577b34da6a3ce929d0e0e4736") })
            .insert(traceparent);
    }
    OwnedHeaders::new_with_capacity(1).insert(traceparent)
}

/// The broker named by `KAFKA_BOOTSTRAP_SERVERS`, or one the test kit starts (stopped on drop).
pub(crate) fn cluster() -> KafkaCluster {
    match std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok().filter(|s| !s.is_empty()) {
        Some(b) => KafkaCluster::external(b),
        None => KafkaCluster::start_single().expect("start a broker"),
    }
}

/// CPU time (user + system, every thread) this process has used so far, from `/proc/self/stat`:
/// what a round costs the client, apart from the broker (another process). Linux counts it in clock
/// ticks of 10 ms (`USER_HZ` = 100); rounds take seconds of CPU, so that is within 1 %.
pub(crate) fn cpu_time() -> Duration {
    proc_stat_cpu(false)
}

/// [`cpu_time`], plus that of the children the process has waited for (fields 16 and 17): a tool
/// run to its end as a subprocess counts.
pub(crate) fn cpu_time_with_children() -> Duration {
    proc_stat_cpu(true)
}

fn proc_stat_cpu(children: bool) -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces): state, ppid, … utime is the 14th field
    // of the line, stime the 15th, cutime and cstime the 16th and 17th.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat format").1.split_whitespace().collect();
    let last = if children { 14 } else { 12 };
    let ticks: u64 = (11..=last).map(|i| fields[i].parse::<u64>().expect("clock ticks")).sum();
    Duration::from_millis(ticks * 10)
}

/// Runs `round`, returning what it returned and the CPU time the process used meanwhile.
pub(crate) async fn with_cpu<T>(round: impl std::future::Future<Output = T>) -> (T, Duration) {
    let before = cpu_time();
    let out = round.await;
    (out, cpu_time().saturating_sub(before))
}

/// CPU microseconds per event.
pub(crate) fn cpu_us(cpu: Duration) -> f64 {
    cpu.as_secs_f64() * 1e6 / EVENTS as f64
}

pub(crate) fn rate(d: Duration) -> f64 {
    EVENTS as f64 / d.as_secs_f64()
}

/// A development-profile configuration (replication 1, fits one broker) for `cluster`.
pub(crate) fn dev_config(cluster: &KafkaCluster, linger_ms: Option<u64>) -> Config {
    let bootstrap = cluster.bootstrap_servers().to_owned();
    let linger = linger_ms.map(|ms| ms.to_string());
    let config = Config::from_lookup("bench", |k| match k {
        "KAFKA_BOOTSTRAP_SERVERS" => Some(bootstrap.clone()),
        "BACKBONE_PROFILE" => Some("development".to_owned()),
        "BACKBONE_LINGER_MS" => linger.clone(),
        _ => None,
    })
    .expect("config");
    assert_eq!(config.profile, Profile::Development);
    config
}

/// A service owning a 6-partition topic and its dead-letter topic, consuming the topic; started
/// (which provisions both topics). Returns the spec, the topic and the service's publisher.
pub(crate) async fn consuming_service(config: &Config, prefix: &str) -> (ServiceSpec, TopicSpec, Context) {
    let service = unique(prefix);
    let topic = TopicSpec::public(&service, "order-created", 1).partitions(6).build().expect("topic");
    let dlq = dead_letter_topic(&service, &topic).expect("dead-letter topic");
    let spec = Service::new(&service).owns(&topic).owns(&dlq).consumes(&topic).spec().expect("spec");
    let running = spec.start(config).await.expect("start provisions the topics");
    (spec, topic, running.context())
}

/// The raw consumer, with the group settings backbone's `Consumer` uses.
pub(crate) fn raw_consumer(config: &Config, service: &str, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = raw_client(config, service, group);
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// A raw consumer of any kind with the group settings backbone's `Consumer` uses, not subscribed.
pub(crate) fn raw_client<C: rdkafka::config::FromClientConfig>(
    config: &Config,
    service: &str,
    group: &str,
) -> C {
    config
        .client_config(service)
        .set("group.id", group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        // backbone's fetch-queue settings: with librdkafka's 1 s `fetch.queue.backoff.ms`, a reader
        // that drains its queue faster than that idles until the backoff ends (raw rounds then
        // swung between ~170,000 and ~1,000,000 msg/s from one round to the next).
        .set("queued.max.messages.kbytes", "16384")
        .set("queued.min.messages", "100000")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .expect("raw consumer")
}

/// Counts events seen, from the first to the `total`th, and wakes the waiter at the last.
pub(crate) struct Counter {
    total: usize,
    seen: AtomicUsize,
    first: OnceLock<Instant>,
    last: OnceLock<Instant>,
    pub(crate) done: tokio::sync::Notify,
}

impl Counter {
    pub(crate) fn new(total: usize) -> Self {
        Self {
            total,
            seen: AtomicUsize::new(0),
            first: OnceLock::new(),
            last: OnceLock::new(),
            done: tokio::sync::Notify::new(),
        }
    }

    /// Counts one; `true` at the last.
    pub(crate) fn seen(&self) -> bool {
        self.first.get_or_init(Instant::now);
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.total {
            let _ = self.last.set(Instant::now());
            self.done.notify_one();
            return true;
        }
        false
    }

    /// From the first event to the last.
    pub(crate) fn elapsed(&self) -> Duration {
        let (first, last) = (self.first.get().expect("first"), self.last.get().expect("last"));
        last.duration_since(*first)
    }
}
