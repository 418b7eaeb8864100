//! Benchmarks of backbone against raw rdkafka on the same broker, in one run, and of its Avro codec.
//!
//! Run with `cargo run --release -p backbone-bench -- <publish|consume|latency|codec|estate>`. The first three
//! start a broker with the test kit (or use `KAFKA_BOOTSTRAP_SERVERS`) and compare backbone with raw
//! rdkafka doing the same work on the same broker, interleaving the two; `codec` needs no broker nor
//! registry. Each prints a table and a last `RESULT` line.
//!
//! `publish`: the same events through a raw rdkafka `FutureProducer` and through a backbone
//! `Publisher`, with the same producer settings (backbone's durable ones), interleaved over five
//! rounds; prints a table and a last line `RESULT publish ratio=<backbone/raw msgs per s>`.
//!
//! `consume`: one topic (6 partitions) pre-filled once with 200,000 JSON events (~110 bytes, 1,000
//! keys, backbone's headers), then read from the beginning to the end by a fresh consumer group per
//! read: one untimed warm-up read per side (the broker's JIT), then five rounds interleaved. raw = a
//! `StreamConsumer` with backbone's group and fetch-queue settings that decodes each payload with
//! serde_json, touches a field and stores its offset; backbone = a `Consumer` whose handler takes
//! `Json<Order>` and counts. Throughput runs from the first event seen to the last (group join and
//! shutdown excluded, they are the same for both); last line
//! `RESULT consume ratio=<backbone/raw msgs per s>`. `BENCH_RAW_SPLIT=1` adds raw rdkafka shaped like
//! backbone (a queue and a task per partition), outside the ratio.
//!
//! `latency`: end to end, producer to handler, at a fixed 2,000 events/s for 10 s per round after a
//! warm-up, linger 0 on both sides: raw = `FutureProducer` (backbone's durable settings) to a raw
//! `StreamConsumer`; backbone = `Publisher` (`BACKBONE_LINGER_MS=0`) to a `Consumer` handler. Each
//! payload carries its send time (nanoseconds since one `Instant`, the same process), stamped just
//! before the send call. Two rounds per side, interleaved; prints p50/p99/max per side and a last
//! line `RESULT latency p50_ms=<backbone> p99_ms=<backbone> p99_ratio=<backbone p99/raw p99>`.
//!
//! `estate`: the sample estate on the broker, over HTTP (see `estate.rs`); last line
//! `RESULT estate orders_per_s=<POST to VALIDATED> get_p99_ms=<GET /v1/orders/{id} under that load>`.
//!
//! `codec`: one ~126-byte framed Avro event (an `OrderCreated`: uuid string id, customer id, product,
//! quantity, price, timestamp-millis, enum state; its `AvroEvent` written by hand, serde name = record
//! name so decoding takes the schema-aware path), in process: backbone's `Encoder::encode` (and
//! `encode_into` a reused buffer) and `Registry::decode` (schema id 1 seeded with `remember`, no
//! network), against apache-avro's bare `write_ser` / `read_deser` of the body (the floor) and serde_json
//! `to_vec` / `from_slice` of the same struct. Checks both round trips
//! give the original back, warms each case up and sizes its runs to ~1 s, then five runs per case,
//! interleaved; prints ns/op (median, min, max) and a last line
//! `RESULT codec encode_ns=<median encode> decode_ns=<median decode>`.

mod estate;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use backbone::consume::{Consumer, dead_letter_topic};
use backbone::handler::{BoxedHandler, Json, State};
use backbone::publish::headers;
use backbone::publish::producer_config;
use backbone::{Config, Outgoing, Profile, Publisher, Service, ServiceSpec, TopicSpec};
use backbone_testkit::{KafkaCluster, unique};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

const EVENTS: usize = 200_000;
const KEYS: usize = 1_000;
const ROUNDS: usize = 5;
const PAYLOAD: usize = 100;

fn main() -> std::process::ExitCode {
    let what = std::env::args().nth(1).unwrap_or_default();
    match what.as_str() {
        "publish" | "consume" | "latency" | "estate" => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
            match what.as_str() {
                "publish" => runtime.block_on(publish()),
                "consume" => runtime.block_on(consume()),
                "estate" => runtime.block_on(estate::estate()),
                _ => runtime.block_on(latency()),
            }
            std::process::ExitCode::SUCCESS
        }
        "codec" => {
            codec();
            std::process::ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: backbone-bench <publish|consume|latency|codec|estate>");
            std::process::ExitCode::from(2)
        }
    }
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|k| format!("order-{k:06}")).collect()
}

/// Headers of the same sizes as backbone's (event type, producer, correlation id, traceparent), with
/// fixed values: the raw side computes nothing per event.
fn raw_headers(service: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(4)
        .insert(Header { key: headers::EVENT_TYPE, value: Some("OrderCreated") })
        .insert(Header { key: headers::PRODUCER, value: Some(service) })
        .insert(Header { key: headers::CORRELATION_ID, value: Some("4bf92f3577b34da6a3ce929d0e0e4736") })
        .insert(Header {
            key: headers::TRACEPARENT,
            value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        })
}

async fn raw_round(
    producer: &FutureProducer,
    topic: &str,
    keys: &[String],
    payload: &[u8],
    headers: Option<&OwnedHeaders>,
) -> Duration {
    let started = Instant::now();
    let mut pending = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let mut record = FutureRecord::to(topic).key(keys[i % KEYS].as_bytes()).payload(payload);
        if let Some(h) = headers {
            record = record.headers(h.clone());
        }
        match producer.send_result(record) {
            Ok(f) => pending.push(f),
            Err((e, _)) => panic!("raw enqueue failed: {e}"),
        }
    }
    for f in pending {
        f.await.expect("delivery").expect("acknowledged");
    }
    started.elapsed()
}

async fn backbone_round(
    publisher: &Publisher,
    topic: &TopicSpec,
    keys: &[String],
    payload: &[u8],
) -> Duration {
    let started = Instant::now();
    let pending: Vec<_> = (0..EVENTS)
        .map(|i| publisher.publish(topic, Outgoing::new("OrderCreated", keys[i % KEYS].as_bytes(), payload)))
        .collect();
    for f in pending {
        f.await.expect("acknowledged");
    }
    started.elapsed()
}

/// The broker named by `KAFKA_BOOTSTRAP_SERVERS`, or one the test kit starts (stopped on drop).
fn cluster() -> KafkaCluster {
    match std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok().filter(|s| !s.is_empty()) {
        Some(b) => KafkaCluster::external(b),
        None => KafkaCluster::start_single().expect("start a broker"),
    }
}

async fn publish() {
    let cluster = cluster();
    let service = unique("bench");
    let topic = TopicSpec::public(&service, "events", 1).partitions(6).build().expect("topic");
    let raw_topic = format!("{}-raw", topic.name());
    cluster.create_topic(topic.name(), 6, 1).await.expect("create topic");
    cluster.create_topic(&raw_topic, 6, 1).await.expect("create topic");

    let mut config = Config::default();
    config.bootstrap_servers = cluster.bootstrap_servers().to_owned();
    config.publish_queue = EVENTS;
    let spec = Service::new(&service).owns(&topic).spec().expect("spec");
    let publisher = Publisher::new(&config, &spec).expect("publisher");
    let raw: FutureProducer = producer_config(&config, &service).create().expect("raw producer");

    let keys = keys();
    let payload = vec![b'x'; PAYLOAD];
    // Warm both (connections, producer ids, metadata).
    raw_round_n(&raw, &raw_topic, &keys, &payload, 1_000).await;
    for i in 0..1_000 {
        publisher
            .publish(&topic, Outgoing::new("Warmup", keys[i % KEYS].as_bytes(), &payload))
            .await
            .expect("warm-up");
    }

    let raw_headers = raw_headers(&service);
    println!(
        "publish: {EVENTS} events of {PAYLOAD} bytes over {KEYS} keys, 6 partitions, acks=all + idempotence"
    );
    println!(
        "raw = rdkafka FutureProducer, same settings, same key, payload and header sizes; bare = raw without headers"
    );
    println!(
        "{:<6} {:>12} {:>12} {:>14} {:>7} {:>8}",
        "round", "bare msg/s", "raw msg/s", "backbone msg/s", "ratio", "vs bare"
    );
    let (mut bare_total, mut raw_total, mut bb_total) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for round in 1..=ROUNDS {
        // Interleave, rotating who goes first.
        let mut times = [Duration::ZERO; 3];
        for step in 0..3 {
            let who = (round + step) % 3;
            times[who] = match who {
                0 => raw_round(&raw, &raw_topic, &keys, &payload, None).await,
                1 => raw_round(&raw, &raw_topic, &keys, &payload, Some(&raw_headers)).await,
                _ => backbone_round(&publisher, &topic, &keys, &payload).await,
            };
        }
        let [bare, r, b] = times;
        bare_total += bare;
        raw_total += r;
        bb_total += b;
        let (ba, rr, br) = (rate(bare), rate(r), rate(b));
        println!("{round:<6} {ba:>12.0} {rr:>12.0} {br:>14.0} {:>7.3} {:>8.3}", br / rr, br / ba);
    }
    let n = ROUNDS as u32;
    let (ba, rr, br) = (rate(bare_total / n), rate(raw_total / n), rate(bb_total / n));
    println!("{:<6} {ba:>12.0} {rr:>12.0} {br:>14.0} {:>7.3} {:>8.3}", "all", br / rr, br / ba);
    println!("RESULT publish ratio={:.3}", br / rr);
}

async fn raw_round_n(producer: &FutureProducer, topic: &str, keys: &[String], payload: &[u8], n: usize) {
    for i in 0..n {
        let record = FutureRecord::to(topic).key(keys[i % KEYS].as_bytes()).payload(payload);
        producer.send(record, Duration::from_secs(30)).await.expect("warm-up");
    }
}

fn rate(d: Duration) -> f64 {
    EVENTS as f64 / d.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// consume

const CONSUME_ROUNDS: usize = 5;
/// Untimed reads per side before the rounds (broker warm-up).
const CONSUME_WARMUP_ROUNDS: usize = 1;
/// How long one read of the whole topic may take before the benchmark gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// The event both consumers decode.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // Decoded in full, as a handler would; only some fields are read.
struct Order {
    id: String,
    customer: String,
    quantity: u32,
    price: u64,
    currency: String,
    status: String,
}

fn order_json(i: usize) -> String {
    format!(
        r#"{{"id":"order-{:06}","customer":"customer-{:06}","quantity":{},"price":{},"currency":"EUR","status":"created"}}"#,
        i % KEYS,
        (i * 7) % 100_000,
        1 + i % 9,
        100 + (i * 37) % 10_000
    )
}

/// A development-profile configuration (replication 1, fits one broker) for `cluster`.
fn dev_config(cluster: &KafkaCluster, linger_ms: Option<u64>) -> Config {
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
async fn consuming_service(config: &Config, prefix: &str) -> (ServiceSpec, TopicSpec, Publisher) {
    let service = unique(prefix);
    let topic = TopicSpec::public(&service, "orders", 1).partitions(6).build().expect("topic");
    let dlq = dead_letter_topic(&service, &topic).expect("dead-letter topic");
    let spec = Service::new(&service).owns(&topic).owns(&dlq).consumes(&topic).spec().expect("spec");
    let running = spec.start(config).await.expect("start provisions the topics");
    let publisher = running.publisher().clone();
    (spec, topic, publisher)
}

/// The raw consumer, with the group settings backbone's `Consumer` uses.
fn raw_consumer(config: &Config, service: &str, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = config
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
        .expect("raw consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Counts events seen, from the first to the `total`th, and wakes the waiter at the last.
struct Counter {
    total: usize,
    seen: AtomicUsize,
    first: OnceLock<Instant>,
    last: OnceLock<Instant>,
    done: tokio::sync::Notify,
}

impl Counter {
    fn new(total: usize) -> Self {
        Self {
            total,
            seen: AtomicUsize::new(0),
            first: OnceLock::new(),
            last: OnceLock::new(),
            done: tokio::sync::Notify::new(),
        }
    }

    /// Counts one; `true` at the last.
    fn seen(&self) -> bool {
        self.first.get_or_init(Instant::now);
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.total {
            let _ = self.last.set(Instant::now());
            self.done.notify_one();
            return true;
        }
        false
    }

    /// From the first event to the last.
    fn elapsed(&self) -> Duration {
        let (first, last) = (self.first.get().expect("first"), self.last.get().expect("last"));
        last.duration_since(*first)
    }
}

async fn count_order(Json(order): Json<Order>, State(counter): State<Arc<Counter>>) {
    std::hint::black_box(order.quantity);
    counter.seen();
}

async fn raw_consume_round(config: &Config, service: &str, topic: &str) -> Duration {
    let counter = Counter::new(EVENTS);
    let consumer = raw_consumer(config, service, &unique("raw-group"), topic);
    let read = async {
        loop {
            let message = consumer.recv().await.expect("raw recv");
            let order: Order = serde_json::from_slice(message.payload().expect("payload")).expect("json");
            std::hint::black_box(order.quantity);
            let last = counter.seen();
            consumer.store_offset_from_message(&message).expect("store offset");
            if last {
                break;
            }
        }
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.expect("raw read the topic in time");
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    counter.elapsed()
}

/// Raw rdkafka with backbone's shape: every partition split onto a queue of its own, read by a task
/// of its own (no group: the partitions are assigned directly). Not in the ratio; it shows what
/// the per-partition design costs apart from backbone's layers.
async fn raw_split_consume_round(config: &Config, service: &str, topic: &str) -> Duration {
    let counter = Arc::new(Counter::new(EVENTS));
    let consumer: Arc<StreamConsumer> = Arc::new(
        config
            .client_config(service)
            .set("group.id", unique("raw-split-group"))
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("raw split consumer"),
    );
    let mut list = rdkafka::TopicPartitionList::new();
    let mut tasks = Vec::new();
    for partition in 0..6 {
        list.add_partition_offset(topic, partition, rdkafka::Offset::Beginning).expect("partition");
        let queue = consumer.split_partition_queue(topic, partition).expect("split");
        let (counter, consumer) = (counter.clone(), consumer.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = counter.done.notified() => return,
                    message = queue.recv() => {
                        let message = message.expect("raw split recv");
                        let order: Order =
                            serde_json::from_slice(message.payload().expect("payload")).expect("json");
                        std::hint::black_box(order.quantity);
                        let last = counter.seen();
                        consumer.store_offset_from_message(&message).expect("store offset");
                        if last {
                            counter.done.notify_waiters();
                            return;
                        }
                    }
                }
            }
        }));
    }
    consumer.assign(&list).expect("assign");
    // The consumer's own queue still has to be served.
    let serve = {
        let consumer = consumer.clone();
        tokio::spawn(async move {
            loop {
                let _ = consumer.recv().await;
            }
        })
    };
    tokio::time::timeout(READ_TIMEOUT, futures::future::join_all(tasks))
        .await
        .expect("raw split read the topic in time");
    serve.abort();
    counter.elapsed()
}

async fn backbone_consume_round(
    config: &Config,
    spec: &ServiceSpec,
    topic: &TopicSpec,
    publisher: &Publisher,
) -> Duration {
    let counter = Arc::new(Counter::new(EVENTS));
    let consumer = Consumer::new(
        config,
        spec,
        topic,
        BoxedHandler::named("count", count_order),
        counter.clone(),
        publisher.clone(),
        Some(&unique("backbone-group")),
    )
    .expect("consumer");
    let done = counter.clone();
    tokio::time::timeout(READ_TIMEOUT, consumer.run(async move { done.done.notified().await }))
        .await
        .expect("backbone read the topic in time")
        .expect("clean stop");
    counter.elapsed()
}

async fn consume() {
    let cluster = cluster();
    let config = dev_config(&cluster, None);
    let (spec, topic, publisher) = consuming_service(&config, "bench-consume").await;

    // Fill once, with a fast raw producer and backbone's headers.
    let filling = Instant::now();
    let mut fill_config = config.clone();
    fill_config.publish_queue = EVENTS;
    let producer: FutureProducer = producer_config(&fill_config, spec.name()).create().expect("producer");
    let keys = keys();
    let headers = raw_headers(spec.name());
    let bodies: Vec<String> = (0..EVENTS).map(order_json).collect();
    let mut pending = Vec::with_capacity(EVENTS);
    for (i, body) in bodies.iter().enumerate() {
        let record = FutureRecord::to(topic.name())
            .key(keys[i % KEYS].as_bytes())
            .payload(body.as_bytes())
            .headers(headers.clone());
        match producer.send_result(record) {
            Ok(f) => pending.push(f),
            Err((e, _)) => panic!("fill enqueue failed: {e}"),
        }
    }
    for f in pending {
        f.await.expect("delivery").expect("acknowledged");
    }
    drop(producer);
    let body_len = bodies.iter().map(String::len).sum::<usize>() / EVENTS;
    println!(
        "consume: {EVENTS} JSON events of ~{body_len} bytes over {KEYS} keys with backbone's headers, 6 partitions \
         (filled in {:.1} s); a fresh group reads all from the beginning each time",
        filling.elapsed().as_secs_f64()
    );
    println!(
        "raw = rdkafka StreamConsumer, backbone's group settings, serde_json decode + store_offset; \
         backbone = Consumer with a Json<Order> handler; first event to last; the same fetch-queue \
         settings on both sides"
    );
    println!("{:<6} {:>12} {:>14} {:>7}", "round", "raw msg/s", "backbone msg/s", "ratio");
    // One untimed read per side first: the broker's JIT compiles its fetch path during the first
    // reads of a fresh JVM, which would otherwise favour whichever side reads later.
    for _ in 0..CONSUME_WARMUP_ROUNDS {
        let r = raw_consume_round(&config, spec.name(), topic.name()).await;
        let b = backbone_consume_round(&config, &spec, &topic, &publisher).await;
        let (rr, br) = (rate(r), rate(b));
        println!("{:<6} {rr:>12.0} {br:>14.0} {:>7.3}", "warm", br / rr);
    }
    // Diagnostics, not part of the result: BENCH_PROFILE_BACKBONE=1 reads with backbone only (for a
    // profiler); BENCH_RAW_SPLIT=1 also reads with raw rdkafka shaped like backbone (a queue and a
    // task per partition), to tell the cost of the shape from the cost of the layers.
    if std::env::var("BENCH_PROFILE_BACKBONE").is_ok() {
        for _ in 0..5 {
            let b = backbone_consume_round(&config, &spec, &topic, &publisher).await;
            println!("backbone only: {:.0} msg/s", rate(b));
        }
        return;
    }
    if std::env::var("BENCH_RAW_SPLIT").is_ok() {
        for _ in 0..3 {
            let s = raw_split_consume_round(&config, spec.name(), topic.name()).await;
            println!("raw with a queue and task per partition: {:.0} msg/s", rate(s));
        }
    }
    let (mut raw_total, mut bb_total) = (Duration::ZERO, Duration::ZERO);
    for round in 1..=CONSUME_ROUNDS {
        let mut times = [Duration::ZERO; 2];
        for step in 0..2 {
            let who = (round + step) % 2;
            times[who] = if who == 0 {
                raw_consume_round(&config, spec.name(), topic.name()).await
            } else {
                backbone_consume_round(&config, &spec, &topic, &publisher).await
            };
        }
        let [r, b] = times;
        raw_total += r;
        bb_total += b;
        let (rr, br) = (rate(r), rate(b));
        println!("{round:<6} {rr:>12.0} {br:>14.0} {:>7.3}", br / rr);
    }
    let n = CONSUME_ROUNDS as u32;
    let (rr, br) = (rate(raw_total / n), rate(bb_total / n));
    println!("{:<6} {rr:>12.0} {br:>14.0} {:>7.3}", "all", br / rr);
    println!("RESULT consume ratio={:.3}", br / rr);
}

// ---------------------------------------------------------------------------------------------
// latency

/// Events per second, sent as `LATENCY_BURST` every `1 / (LATENCY_RATE / LATENCY_BURST)` s.
const LATENCY_RATE: usize = 2_000;
const LATENCY_BURST: usize = 2;
const LATENCY_SECONDS: usize = 10;
const LATENCY_WARMUP_SECONDS: usize = 2;
const LATENCY_ROUNDS: usize = 2;

/// What the latency events carry: an order and when it was sent.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // Decoded in full, as a handler would; only some fields are read.
struct Ping {
    id: String,
    quantity: u32,
    price: u64,
    sent_ns: u64,
}

/// Latencies seen by one side, and how many events the current round waits for.
struct Recorder {
    base: Instant,
    samples: Mutex<Vec<u64>>,
    received: AtomicUsize,
    target: AtomicUsize,
    done: tokio::sync::Notify,
}

impl Recorder {
    fn new(base: Instant) -> Self {
        Self {
            base,
            samples: Mutex::new(Vec::new()),
            received: AtomicUsize::new(0),
            target: AtomicUsize::new(usize::MAX),
            done: tokio::sync::Notify::new(),
        }
    }

    fn record(&self, sent_ns: u64) {
        let now = nanos_since(self.base);
        self.samples.lock().expect("samples").push(now.saturating_sub(sent_ns));
        if self.received.fetch_add(1, Ordering::SeqCst) + 1 == self.target.load(Ordering::SeqCst) {
            self.done.notify_one();
        }
    }

    /// Expects `n` events from now on.
    fn expect(&self, n: usize) {
        self.samples.lock().expect("samples").clear();
        self.received.store(0, Ordering::SeqCst);
        self.target.store(n, Ordering::SeqCst);
    }

    /// Waits for the expected events and returns their latencies.
    async fn wait(&self) -> Vec<u64> {
        tokio::time::timeout(READ_TIMEOUT, self.done.notified()).await.expect("every event received");
        std::mem::take(&mut *self.samples.lock().expect("samples"))
    }
}

fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn ping_json(i: usize, base: Instant) -> String {
    format!(
        r#"{{"id":"order-{:06}","quantity":{},"price":{},"sent_ns":{}}}"#,
        i % KEYS,
        1 + i % 9,
        100 + (i * 37) % 10_000,
        nanos_since(base)
    )
}

async fn latency_handler(Json(ping): Json<Ping>, State(recorder): State<Arc<Recorder>>) {
    std::hint::black_box(ping.quantity);
    recorder.record(ping.sent_ns);
}

/// The two ways of sending: the payload is made (and stamped) when the send is first polled, right
/// before the send call.
enum Sender {
    Raw { producer: FutureProducer, topic: String, headers: OwnedHeaders },
    Backbone { publisher: Publisher, topic: TopicSpec },
}

impl Sender {
    async fn send(&self, i: usize, key: &str, base: Instant) {
        let payload = ping_json(i, base);
        match self {
            Self::Raw { producer, topic, headers } => {
                let record =
                    FutureRecord::to(topic).key(key.as_bytes()).payload(&payload).headers(headers.clone());
                let delivery = match producer.send_result(record) {
                    Ok(f) => f,
                    Err((e, _)) => panic!("raw enqueue failed: {e}"),
                };
                delivery.await.expect("delivery").expect("acknowledged");
            }
            Self::Backbone { publisher, topic } => {
                let event = Outgoing::new("OrderCreated", key.as_bytes(), payload.as_bytes());
                publisher.publish(topic, event).await.expect("acknowledged");
            }
        }
    }

    /// Sends `n` events at `LATENCY_RATE` and waits for their acknowledgements.
    async fn paced(&self, n: usize, keys: &[String], base: Instant) {
        let mut ticker =
            tokio::time::interval(Duration::from_secs(1) * LATENCY_BURST as u32 / LATENCY_RATE as u32);
        let mut pending = FuturesUnordered::new();
        let mut sent = 0;
        while sent < n || !pending.is_empty() {
            tokio::select! {
                _ = ticker.tick(), if sent < n => {
                    for _ in 0..LATENCY_BURST.min(n - sent) {
                        pending.push(self.send(sent, &keys[sent % KEYS], base));
                        sent += 1;
                    }
                }
                Some(()) = pending.next(), if !pending.is_empty() => {}
            }
        }
    }
}

/// One round: `n` paced events through `sender`, received by whoever fills `recorder`.
async fn latency_round(sender: &Sender, recorder: &Recorder, n: usize, keys: &[String]) -> Vec<u64> {
    recorder.expect(n);
    sender.paced(n, keys, recorder.base).await;
    let mut samples = recorder.wait().await;
    samples.sort_unstable();
    samples
}

struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

/// Percentiles of sorted nanoseconds, in milliseconds.
fn percentiles(sorted: &[u64]) -> Percentiles {
    let at = |q: f64| {
        let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i] as f64 / 1e6
    };
    Percentiles { p50: at(0.50), p99: at(0.99), max: sorted[sorted.len() - 1] as f64 / 1e6 }
}

async fn latency() {
    let cluster = cluster();
    let config = dev_config(&cluster, Some(0));
    assert_eq!(config.linger, Duration::ZERO);
    let (spec, topic, publisher) = consuming_service(&config, "bench-latency").await;
    let raw_topic = format!("{}-raw", topic.name());
    cluster.create_topic(&raw_topic, 6, 1).await.expect("create topic");
    let base = Instant::now();
    let keys = keys();

    // Both consumers run throughout; rounds only switch the producer.
    let raw_recorder = Arc::new(Recorder::new(base));
    let bb_recorder = Arc::new(Recorder::new(base));
    // One stop signal each; `notify_one` keeps a permit, so a stop is not lost whenever it comes.
    let (raw_stop, bb_stop) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let raw_task = {
        let consumer = raw_consumer(&config, spec.name(), &unique("raw-group"), &raw_topic);
        let (recorder, stop) = (raw_recorder.clone(), raw_stop.clone());
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = stop.notified() => break,
                    m = consumer.recv() => m.expect("raw recv"),
                };
                let ping: Ping = serde_json::from_slice(message.payload().expect("payload")).expect("json");
                std::hint::black_box(ping.quantity);
                recorder.record(ping.sent_ns);
                consumer.store_offset_from_message(&message).expect("store offset");
            }
            let _ = consumer.commit_consumer_state(CommitMode::Sync);
        })
    };
    let bb_task = {
        let consumer = Consumer::new(
            &config,
            &spec,
            &topic,
            BoxedHandler::named("latency", latency_handler),
            bb_recorder.clone(),
            publisher.clone(),
            Some(&unique("backbone-group")),
        )
        .expect("consumer");
        let stop = bb_stop.clone();
        tokio::spawn(async move { consumer.run(async move { stop.notified().await }).await })
    };

    let raw = Sender::Raw {
        producer: producer_config(&config, spec.name()).create().expect("raw producer"),
        topic: raw_topic.clone(),
        headers: raw_headers(spec.name()),
    };
    let bb = Sender::Backbone { publisher: publisher.clone(), topic: topic.clone() };

    // Warm-up: connections, producer ids, group joins and assignments.
    let warmup = LATENCY_RATE * LATENCY_WARMUP_SECONDS;
    latency_round(&raw, &raw_recorder, warmup, &keys).await;
    latency_round(&bb, &bb_recorder, warmup, &keys).await;

    let n = LATENCY_RATE * LATENCY_SECONDS;
    println!(
        "latency: {LATENCY_RATE} events/s for {LATENCY_SECONDS} s per round ({n} events), linger.ms=0, \
         acks=all + idempotence, 6 partitions, send call to handler"
    );
    println!(
        "raw = FutureProducer -> StreamConsumer (serde_json decode); backbone = Publisher -> Consumer \
         (Json handler); both consumers run throughout"
    );
    println!("{:<6} {:<9} {:>8} {:>8} {:>8}", "round", "side", "p50 ms", "p99 ms", "max ms");
    let (mut raw_all, mut bb_all) = (Vec::new(), Vec::new());
    for round in 1..=LATENCY_ROUNDS {
        for step in 0..2 {
            let backbone_side = (round + step) % 2 == 0;
            let (name, sender, recorder, all) = if backbone_side {
                ("backbone", &bb, &bb_recorder, &mut bb_all)
            } else {
                ("raw", &raw, &raw_recorder, &mut raw_all)
            };
            let samples = latency_round(sender, recorder, n, &keys).await;
            let p = percentiles(&samples);
            println!("{round:<6} {name:<9} {:>8.2} {:>8.2} {:>8.2}", p.p50, p.p99, p.max);
            all.extend(samples);
        }
    }
    raw_all.sort_unstable();
    bb_all.sort_unstable();
    let (r, b) = (percentiles(&raw_all), percentiles(&bb_all));
    println!("{:<6} {:<9} {:>8.2} {:>8.2} {:>8.2}", "all", "raw", r.p50, r.p99, r.max);
    println!("{:<6} {:<9} {:>8.2} {:>8.2} {:>8.2}", "all", "backbone", b.p50, b.p99, b.max);

    raw_stop.notify_one();
    bb_stop.notify_one();
    raw_task.await.expect("raw consumer task");
    bb_task.await.expect("backbone consumer task").expect("clean stop");
    println!("RESULT latency p50_ms={:.3} p99_ms={:.3} p99_ratio={:.3}", b.p50, b.p99, b.p99 / r.p99);
}

// ---------------------------------------------------------------------------------------------
// codec

/// The Avro contract of the codec benchmark's event.
const ORDER_CREATED_SCHEMA: &str = r#"{
  "type": "record", "name": "OrderCreated", "namespace": "bench.orders",
  "fields": [
    {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "customerId", "type": "string"},
    {"name": "product", "type": "string"},
    {"name": "quantity", "type": "int"},
    {"name": "price", "type": "long"},
    {"name": "createdAt", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "state", "type": {"type": "enum", "name": "OrderState",
      "symbols": ["CREATED", "PAID", "SHIPPED", "CANCELLED"]}}
  ]
}"#;

/// The event both codecs write and read. Its serde name is the record's, so backbone decodes it on
/// the schema-aware path.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename = "OrderCreated", rename_all = "camelCase")]
struct OrderEvent {
    id: String,
    customer_id: String,
    product: String,
    quantity: i32,
    /// In cents.
    price: i64,
    /// Milliseconds since the epoch.
    created_at: i64,
    state: OrderState,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum OrderState {
    Created,
    Paid,
    Shipped,
    Cancelled,
}

impl backbone::schema::AvroEvent for OrderEvent {
    const SCHEMA: &'static str = ORDER_CREATED_SCHEMA;
    fn schema() -> &'static apache_avro::Schema {
        static SCHEMA: OnceLock<apache_avro::Schema> = OnceLock::new();
        backbone::schema::parse_once(&SCHEMA, Self::SCHEMA)
    }
}

const CODEC_ROUNDS: usize = 5;
/// Roughly how long one timed run of an operation lasts.
const CODEC_RUN: Duration = Duration::from_millis(1_000);
const CODEC_WARMUP: Duration = Duration::from_millis(300);

/// Warms `op` up and returns how many iterations make a run of about `CODEC_RUN`.
fn size_run(op: &mut dyn FnMut()) -> u64 {
    let started = Instant::now();
    let mut warm = 0u64;
    while started.elapsed() < CODEC_WARMUP {
        for _ in 0..1_000 {
            op();
        }
        warm += 1_000;
    }
    let per_op = started.elapsed().as_secs_f64() / warm as f64;
    ((CODEC_RUN.as_secs_f64() / per_op) as u64).clamp(10_000, 100_000_000)
}

/// Nanoseconds per operation over `n` calls of `op`.
fn time_run(op: &mut dyn FnMut(), n: u64) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        op();
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

/// One benchmarked operation.
type CodecOp<'a> = dyn FnMut() + 'a;

fn median(runs: &[f64]) -> f64 {
    let mut sorted = runs.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn codec() {
    use backbone::schema::{AvroEvent as _, Encoder, Registry, SchemaId};
    use std::hint::black_box;

    let order = OrderEvent {
        id: "3f2c8e1a-9b7d-4c5e-a1f0-6d2b8c4e9a17".to_owned(),
        customer_id: "customer-004217".to_owned(),
        product: "Mechanical keyboard, 104 keys, brown switches, US layout".to_owned(),
        quantity: 2,
        price: 12_999,
        created_at: 1_767_225_600_123,
        state: OrderState::Paid,
    };
    let id = SchemaId(1);
    let encoder = Encoder::<OrderEvent>::new(id).expect("encoder");
    let registry = Registry::new("http://127.0.0.1:9").expect("registry");
    registry.remember(id, ORDER_CREATED_SCHEMA).expect("remember the schema");

    // Both round trips give the original back.
    let avro = encoder.encode(&order).expect("encode");
    assert_eq!(registry.decode::<OrderEvent>(&avro).expect("decode"), order, "Avro round trip");
    let json = serde_json::to_vec(&order).expect("json encode");
    assert_eq!(serde_json::from_slice::<OrderEvent>(&json).expect("json decode"), order, "JSON round trip");

    println!(
        "codec: one OrderCreated event, {} bytes framed Avro (5-byte header + {} body), {} bytes JSON; \
         schema id 1 remembered by the registry client (no network)",
        avro.len(),
        avro.len() - 5,
        json.len()
    );
    // The floor: apache-avro's own schema-aware paths on the bare body, no framing and no caches.
    let raw_writer = apache_avro::writer::datum::GenericDatumWriter::builder(OrderEvent::schema())
        .build()
        .expect("writer");
    let raw_reader = apache_avro::reader::datum::GenericDatumReader::builder(OrderEvent::schema())
        .build()
        .expect("reader");
    let body = &avro[5..];
    let mut raw_buf = Vec::with_capacity(256);

    let mut buf = Vec::with_capacity(256);
    let cases: [(&str, Box<CodecOp<'_>>); 7] = [
        ("backbone encode", Box::new(|| drop(black_box(encoder.encode(black_box(&order)).expect("encode"))))),
        (
            "backbone encode_into",
            Box::new(|| {
                buf.clear();
                encoder.encode_into(black_box(&order), &mut buf).expect("encode");
                black_box(&buf);
            }),
        ),
        (
            "backbone decode",
            Box::new(|| drop(black_box(registry.decode::<OrderEvent>(black_box(&avro)).expect("decode")))),
        ),
        (
            "avro write_ser (raw)",
            Box::new(|| {
                raw_buf.clear();
                raw_writer.write_ser(&mut raw_buf, black_box(&order)).expect("write_ser");
                black_box(&raw_buf);
            }),
        ),
        (
            "avro read_deser (raw)",
            Box::new(|| {
                let mut input = black_box(body);
                drop(black_box(raw_reader.read_deser::<OrderEvent>(&mut input).expect("read_deser")))
            }),
        ),
        ("json encode", Box::new(|| drop(black_box(serde_json::to_vec(black_box(&order)).expect("json"))))),
        (
            "json decode",
            Box::new(|| {
                drop(black_box(serde_json::from_slice::<OrderEvent>(black_box(&json)).expect("json")))
            }),
        ),
    ];
    println!(
        "{:<21} {:>10} {:>9} {:>9} {:>9}   (ns/op; {CODEC_ROUNDS} runs of ~{} s each)",
        "op",
        "iterations",
        "median",
        "min",
        "max",
        CODEC_RUN.as_secs_f64()
    );
    // Warm up and size every case, then interleave the runs so that noise hits all alike.
    let (names, mut ops): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
    let sizes: Vec<u64> = ops.iter_mut().map(|op| size_run(op)).collect();
    let mut runs = vec![Vec::with_capacity(CODEC_ROUNDS); ops.len()];
    for _ in 0..CODEC_ROUNDS {
        for (i, op) in ops.iter_mut().enumerate() {
            runs[i].push(time_run(op, sizes[i]));
        }
    }
    let mut medians = Vec::new();
    for ((name, n), runs) in names.iter().zip(&sizes).zip(&runs) {
        let (min, max) = runs.iter().fold((f64::MAX, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        let m = median(runs);
        println!("{name:<21} {n:>10} {m:>9.0} {min:>9.0} {max:>9.0}");
        medians.push(m);
    }
    println!("RESULT codec encode_ns={:.0} decode_ns={:.0}", medians[0], medians[2]);
}
