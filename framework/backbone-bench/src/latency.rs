//! `latency`: end to end, producer to handler, at a fixed rate: raw rdkafka and backbone, interleaved.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backbone::consume::Consumer;
use backbone::handler::{BoxedHandler, Json, State};
use backbone::publish::producer_config;
use backbone::{Outgoing, Publisher, TopicSpec};
use backbone_testkit::unique;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::{Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::common::{
    KEYS, READ_TIMEOUT, cluster, consuming_service, dev_config, keys, raw_consumer, raw_headers,
};

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
    p999: f64,
    max: f64,
}

/// Percentiles of sorted nanoseconds, in milliseconds.
fn percentiles(sorted: &[u64]) -> Percentiles {
    let at = |q: f64| {
        let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i] as f64 / 1e6
    };
    Percentiles { p50: at(0.50), p99: at(0.99), p999: at(0.999), max: sorted[sorted.len() - 1] as f64 / 1e6 }
}

pub(crate) async fn latency() {
    let cluster = cluster();
    let config = dev_config(&cluster, Some(0));
    assert_eq!(config.linger, Duration::ZERO);
    let (spec, topic, context) = consuming_service(&config, "bench-latency").await;
    let publisher = context.publisher().clone();
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
            &context,
            &topic,
            BoxedHandler::named("latency", latency_handler),
            bb_recorder.clone(),
        )
        .expect("consumer")
        .in_group(unique("backbone-group"));
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
    println!(
        "{:<6} {:<9} {:>8} {:>8} {:>9} {:>8}",
        "round", "side", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
    );
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
            println!("{round:<6} {name:<9} {:>8.2} {:>8.2} {:>9.2} {:>8.2}", p.p50, p.p99, p.p999, p.max);
            all.extend(samples);
        }
    }
    raw_all.sort_unstable();
    bb_all.sort_unstable();
    let (r, b) = (percentiles(&raw_all), percentiles(&bb_all));
    println!("{:<6} {:<9} {:>8.2} {:>8.2} {:>9.2} {:>8.2}", "all", "raw", r.p50, r.p99, r.p999, r.max);
    println!("{:<6} {:<9} {:>8.2} {:>8.2} {:>9.2} {:>8.2}", "all", "backbone", b.p50, b.p99, b.p999, b.max);

    raw_stop.notify_one();
    bb_stop.notify_one();
    raw_task.await.expect("raw consumer task");
    bb_task.await.expect("backbone consumer task").expect("clean stop");
    println!(
        "RESULT latency p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} p99_ratio={:.3} p999_ratio={:.3}",
        b.p50,
        b.p99,
        b.p999,
        b.p99 / r.p99,
        b.p999 / r.p999
    );
}
