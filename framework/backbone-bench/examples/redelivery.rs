//! Run with `KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run --release -p backbone-bench --example redelivery`
//! (a broker from `backbone dev up`), ideally on a busy machine.
//!
//! Why backbone's partition tasks keep a cursor: raw librdkafka, no backbone. One partition of
//! 300,000 events is read from its own queue while another thread pauses and resumes it (as
//! librdkafka itself does to every assigned partition on each rebalance). A pause restarts the
//! fetcher after the last event the application took, and an event being taken while the pause
//! applies is not counted, so it is handed out again (confluentinc/librdkafka#2593). Prints
//! `RESULT pause cycles=… events=… handed_out_again=… backwards_steps=…`; on a machine with its
//! cores busy, a few events per run come twice.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP_SERVERS").expect("bootstrap");
    let topic = format!("redelivery-{}", std::process::id());
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let admin: rdkafka::admin::AdminClient<_> =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(&topic, 1, rdkafka::admin::TopicReplication::Fixed(1))],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await
        .unwrap();
    // Let the new topic's metadata reach the producer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    const N: usize = 300_000;
    let mut pending = Vec::new();
    for i in 0..N {
        let payload = format!("event-{i:08}-padding-padding-padding");
        pending.push(
            producer.send_result(FutureRecord::<(), _>::to(&topic).payload(&payload).partition(0)).unwrap(),
        );
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
    eprintln!("produced {N}");
    let consumer: Arc<StreamConsumer> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("g-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("fetch.queue.backoff.ms", "10")
            .create()
            .unwrap(),
    );
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning).unwrap();
    let queue = consumer.split_partition_queue(&topic, 0).unwrap();
    consumer.assign(&list).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let pauser = {
        let (consumer, done, list) = (consumer.clone(), done.clone(), list.clone());
        std::thread::spawn(move || {
            let mut cycles = 0u64;
            while !done.load(Ordering::Relaxed) {
                consumer.pause(&list).unwrap();
                std::thread::sleep(Duration::from_micros(500));
                consumer.resume(&list).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                cycles += 1;
            }
            cycles
        })
    };
    let mut seen: HashMap<i64, u32> = HashMap::new();
    let mut events = queue.stream();
    let mut last = -1i64;
    let mut back = 0u64;
    while last < (N as i64 - 1) {
        let m = match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
            Ok(m) => m.unwrap().unwrap(),
            Err(_) => {
                let paused = done.load(Ordering::Relaxed);
                eprintln!("STALL after {} distinct events (last offset {last}); done={paused}", seen.len());
                // Poll the queue directly, bypassing the waker.
                let direct = futures::FutureExt::now_or_never(queue.recv());
                eprintln!("direct poll: {:?}", direct.map(|r| r.map(|m| m.offset())));
                done.store(true, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
                consumer.resume(&list).ok();
                let direct = tokio::time::timeout(Duration::from_secs(5), queue.recv()).await;
                eprintln!("after resume, poll: {:?}", direct.map(|r| r.map(|m| m.offset())));
                std::process::exit(2);
            }
        };
        let o = m.offset();
        if o <= last {
            back += 1;
        }
        last = last.max(o);
        *seen.entry(o).or_default() += 1;
    }
    done.store(true, Ordering::Relaxed);
    let cycles = pauser.join().unwrap();
    let twice = seen.values().filter(|n| **n > 1).count();
    println!("RESULT pause cycles={cycles} events={N} handed_out_again={twice} backwards_steps={back}");
}
