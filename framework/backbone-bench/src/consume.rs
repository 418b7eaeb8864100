//! `consume`: one pre-filled topic read from its beginning by a raw rdkafka `StreamConsumer` and by a
//! backbone `Consumer`, interleaved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backbone::consume::Consumer;
use backbone::handler::{BoxedHandler, Json, State};
use backbone::publish::producer_config;
use backbone::{Config, Context, TopicSpec};
use backbone_testkit::unique;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::common::{
    Counter, EVENTS, KEYS, READ_TIMEOUT, cluster, consuming_service, cpu_us, dev_config, keys, rate,
    raw_client, raw_consumer, raw_headers, with_cpu,
};

const CONSUME_ROUNDS: usize = 5;
/// Untimed reads per side before the rounds (broker warm-up).
const CONSUME_WARMUP_ROUNDS: usize = 1;

/// The event both consumers decode.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // Decoded in full, as a handler would; only some fields are read.
pub(crate) struct Order {
    id: String,
    customer: String,
    quantity: u32,
    price: u64,
    currency: String,
    status: String,
}

pub(crate) fn order_json(i: usize) -> String {
    format!(
        r#"{{"id":"order-{:06}","customer":"customer-{:06}","quantity":{},"price":{},"currency":"EUR","status":"created"}}"#,
        i % KEYS,
        (i * 7) % 100_000,
        1 + i % 9,
        100 + (i * 37) % 10_000
    )
}

async fn count_order(Json(order): Json<Order>, State(counter): State<Arc<Counter>>) {
    std::hint::black_box(order.quantity);
    counter.seen();
}

/// The raw sides' work per event: decode, touch a field, count; `true` at the last.
fn raw_handle(message: &impl rdkafka::message::Message, counter: &Counter) -> bool {
    let order: Order = serde_json::from_slice(message.payload().expect("payload")).expect("json");
    std::hint::black_box(order.quantity);
    counter.seen()
}

async fn raw_consume_round(config: &Config, service: &str, topic: &str) -> Duration {
    let counter = Counter::new(EVENTS);
    let consumer = raw_consumer(config, service, &unique("raw-group"), topic);
    let read = async {
        loop {
            let message = consumer.recv().await.expect("raw recv");
            let last = raw_handle(&message, &counter);
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

/// Raw rdkafka's fastest safe path: a `BaseConsumer` polled in a tight loop on a thread of its own
/// (no waker, no task switch per message; rust-rdkafka has no safe batch call, and
/// `rd_kafka_consume_batch_queue` would need unsafe code), decoding and storing offsets as the
/// `StreamConsumer` side does.
async fn raw_poll_consume_round(config: &Config, service: &str, topic: &str) -> Duration {
    let consumer: rdkafka::consumer::BaseConsumer = raw_client(config, service, &unique("raw-poll-group"));
    consumer.subscribe(&[topic]).expect("subscribe");
    let read = tokio::task::spawn_blocking(move || {
        let counter = Counter::new(EVENTS);
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "raw poll read the topic in time");
            let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
            let message = message.expect("raw poll");
            let last = raw_handle(&message, &counter);
            consumer.store_offset_from_message(&message).expect("store offset");
            if last {
                break;
            }
        }
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        counter.elapsed()
    });
    read.await.expect("raw poll thread")
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

async fn backbone_consume_round(context: &Context, topic: &TopicSpec) -> Duration {
    let counter = Arc::new(Counter::new(EVENTS));
    let consumer = Consumer::new(context, topic, BoxedHandler::named("count", count_order), counter.clone())
        .expect("consumer")
        .in_group(unique("backbone-group"));
    let done = counter.clone();
    tokio::time::timeout(READ_TIMEOUT, consumer.run(async move { done.done.notified().await }))
        .await
        .expect("backbone read the topic in time")
        .expect("clean stop");
    counter.elapsed()
}

pub(crate) async fn consume() {
    let cluster = cluster();
    let config = dev_config(&cluster, None);
    let (spec, topic, context) = consuming_service(&config, "bench-consume").await;

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
    println!(
        "raw poll = rdkafka BaseConsumer polled in a loop on a thread of its own (the fastest safe path), \
         the same work per event"
    );
    println!(
        "{:<6} {:>12} {:>13} {:>14} {:>7} {:>8}",
        "round", "raw msg/s", "raw poll msg/s", "backbone msg/s", "ratio", "vs poll"
    );
    // One untimed read per side first: the broker's JIT compiles its fetch path during the first
    // reads of a fresh JVM, which would otherwise favour whichever side reads later.
    for _ in 0..CONSUME_WARMUP_ROUNDS {
        let r = raw_consume_round(&config, spec.name(), topic.name()).await;
        let p = raw_poll_consume_round(&config, spec.name(), topic.name()).await;
        let b = backbone_consume_round(&context, &topic).await;
        let (rr, pr, br) = (rate(r), rate(p), rate(b));
        println!("{:<6} {rr:>12.0} {pr:>13.0} {br:>14.0} {:>7.3} {:>8.3}", "warm", br / rr, br / pr);
    }
    // Diagnostics, not part of the result: BENCH_PROFILE_BACKBONE=1 reads with backbone only (for a
    // profiler); BENCH_RAW_SPLIT=1 also reads with raw rdkafka shaped like backbone (a queue and a
    // task per partition), to tell the cost of the shape from the cost of the layers.
    if std::env::var("BENCH_PROFILE_BACKBONE").is_ok() {
        for _ in 0..5 {
            let b = backbone_consume_round(&context, &topic).await;
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
    let mut totals = [Duration::ZERO; 3];
    // Client CPU per side, each round whole (group join and shutdown included, alike for all).
    let mut cpu = [Duration::ZERO; 3];
    for round in 1..=CONSUME_ROUNDS {
        let mut times = [Duration::ZERO; 3];
        for step in 0..3 {
            let who = (round + step) % 3;
            let (time, used) = match who {
                0 => with_cpu(raw_consume_round(&config, spec.name(), topic.name())).await,
                1 => with_cpu(raw_poll_consume_round(&config, spec.name(), topic.name())).await,
                _ => with_cpu(backbone_consume_round(&context, &topic)).await,
            };
            times[who] = time;
            totals[who] += time;
            cpu[who] += used;
        }
        let [rr, pr, br] = times.map(rate);
        println!("{round:<6} {rr:>12.0} {pr:>13.0} {br:>14.0} {:>7.3} {:>8.3}", br / rr, br / pr);
    }
    let n = CONSUME_ROUNDS as u32;
    let [rr, pr, br] = totals.map(|t| rate(t / n));
    println!("{:<6} {rr:>12.0} {pr:>13.0} {br:>14.0} {:>7.3} {:>8.3}", "all", br / rr, br / pr);
    let [cpu_raw, cpu_poll, cpu_bb] = cpu.map(|c| cpu_us(c / n));
    println!(
        "{:<6} {cpu_raw:>12.2} {cpu_poll:>13.2} {cpu_bb:>14.2} {:>7.3} {:>8.3}   (client CPU µs per event)",
        "cpu",
        cpu_bb / cpu_raw,
        cpu_bb / cpu_poll
    );
    println!(
        "RESULT consume ratio={:.3} vs_poll={:.3} msgs_per_s={br:.0} cpu_ratio={:.3} cpu_vs_poll={:.3}",
        br / rr,
        br / pr,
        cpu_bb / cpu_raw,
        cpu_bb / cpu_poll
    );
}
