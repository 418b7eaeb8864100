//! R17 on a real broker: exactly once when a transaction breaks under the consumer.
//!
//! - An exactly-once handler that never finishes (it waits for something that never comes) is cut
//!   at its event budget, below the transaction timeout: it is dead-lettered exactly once, every
//!   other event's output commits exactly once, and a restarted processor is healthy (the poison
//!   event is not replayed).
//! - A transactional producer fenced under a running processor (another producer takes its
//!   transactional id) is replaced: the processor joins again with a new producer and epoch, its
//!   partitions resume from the last committed offsets, and the output is still exactly once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone::consume::{Consumer, ConsumerHooks, dead_letter_headers, dead_letter_topic};
use backbone::handler::{BoxedHandler, HandlerError, Metadata, State};
use backbone::{Config, Context, Outgoing, Publisher, Service, ServiceSpec, TopicSpec};
use backbone_testkit::oracle::{Oracle, PRODUCER_HEADER, SEQ_HEADER};
use backbone_testkit::{shared_kafka, unique};
use rdkafka::producer::Producer as _;
use tokio::sync::watch;

mod common;

struct Pipeline {
    config: Config,
    spec: ServiceSpec,
    input: TopicSpec,
    output: TopicSpec,
    dead_letters: TopicSpec,
    group: String,
}

fn pipeline(name: &str) -> Pipeline {
    let service = unique(name);
    let input = TopicSpec::public(&service, "input", 1).partitions(3).build().unwrap();
    let output = TopicSpec::public(&service, "output", 1).partitions(3).build().unwrap();
    let dead_letters = dead_letter_topic(&service, &input).unwrap();
    let spec = Service::new(&service)
        .owns(&input)
        .owns(&output)
        .owns(&dead_letters)
        .consumes(&input)
        .spec()
        .unwrap();
    let config = common::config(shared_kafka().bootstrap_servers());
    Pipeline { config, spec, input, output, dead_letters, group: unique(&format!("{name}-group")) }
}

#[derive(Clone)]
struct Copier {
    output: TopicSpec,
    /// Events copied to the output so far.
    handled: watch::Sender<usize>,
    /// Times the poison event was started.
    poison: Arc<AtomicUsize>,
}

const POISON: &[u8] = b"poison";

/// Copies the event to the output; the poison event waits for ever.
async fn copy(meta: Metadata, publisher: Publisher, State(c): State<Copier>) -> Result<(), HandlerError> {
    let key = meta.key().unwrap_or_default();
    if key == POISON {
        c.poison.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    let producer = meta.header(PRODUCER_HEADER).unwrap_or_default().to_vec();
    let seq = meta.header(SEQ_HEADER).unwrap_or_default().to_vec();
    let headers = [(PRODUCER_HEADER, producer.as_slice()), (SEQ_HEADER, seq.as_slice())];
    let payload = meta.payload().unwrap_or_default();
    publisher.publish(&c.output, Outgoing::new("Copied", key, payload).headers(&headers)).await?;
    c.handled.send_modify(|n| *n += 1);
    Ok(())
}

fn processor(p: &Pipeline, context: &Context, state: Copier) -> Consumer<Copier> {
    Consumer::new(context, &p.input, BoxedHandler::named("copy", copy), state)
        .unwrap()
        .in_group(&p.group)
        .exactly_once()
        .client_setting("session.timeout.ms", "6000")
        .client_setting("heartbeat.interval.ms", "1000")
}

fn state(p: &Pipeline) -> Copier {
    common::log_from_env();
    Copier { output: p.output.clone(), handled: watch::channel(0).0, poison: Arc::new(AtomicUsize::new(0)) }
}

/// Runs `consumer` until the read_committed output holds `count` records (120 s at most), then
/// stops it. (Handler calls are no measure: events of aborted transactions are handled again.)
async fn run_until_output(consumer: Consumer<Copier>, p: &Pipeline, count: usize) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run(async move { stopped.await.unwrap_or_default() }));
    let mut client = rdkafka::ClientConfig::new();
    client
        .set("bootstrap.servers", shared_kafka().bootstrap_servers())
        .set("isolation.level", "read_committed");
    let report = common::check(client, &p.output, count, Arc::new(Mutex::new(Oracle::new()))).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(report.seen >= count, "{} of {count} outputs committed within 120 s", report.seen);
}

async fn check_output(p: &Pipeline, expected: usize, oracle: Arc<Mutex<Oracle>>) {
    let mut client = rdkafka::ClientConfig::new();
    client
        .set("bootstrap.servers", shared_kafka().bootstrap_servers())
        .set("isolation.level", "read_committed");
    let report = common::check(client, &p.output, expected, oracle).await;
    println!("output: {report}");
    assert!(
        report.lost.is_empty() && report.duplicate.is_empty() && report.reorder.is_empty(),
        "read_committed output equals input, once each, in order per key: {report}"
    );
    assert_eq!(report.seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r17_an_exactly_once_handler_past_its_transaction_is_dead_lettered_once_and_the_rest_flows() {
    let p = pipeline("r17");
    let running = p.spec.start(&p.config).await.unwrap();
    let publisher = running.publisher();
    let oracle = Arc::new(Mutex::new(Oracle::new()));
    // 600 events over 30 keys (every partition), the poison event, 600 more.
    assert!(common::publish_oracle_range(publisher, &p.input, 0, 600, 30, &oracle).await.is_empty());
    publisher.publish(&p.input, Outgoing::new("Poison", POISON, b"never handled")).await.unwrap();
    assert!(common::publish_oracle_range(publisher, &p.input, 600, 600, 30, &oracle).await.is_empty());

    let first = state(&p);
    let consumer = processor(&p, &running.context(), first.clone());
    let budget = consumer.effective_event_budget().expect("exactly once always has a budget");
    assert!(budget < backbone::publish::TRANSACTION_TIMEOUT, "{budget:?}");
    let started = std::time::Instant::now();
    run_until_output(consumer, &p, 1_200).await;
    println!("1,200 events and a poison one in {:?} (budget {budget:?})", started.elapsed());

    let letters = common::read_committed_to_end(shared_kafka(), p.dead_letters.name());
    assert_eq!(letters.len(), 1, "the poison event is dead-lettered exactly once");
    assert_eq!(letters[0].key.as_deref(), Some(POISON));
    assert_eq!(letters[0].header(dead_letter_headers::ERROR_KIND), "budget");
    let tries = first.poison.load(Ordering::SeqCst);

    // A restart is healthy: the poison event is not handled again, later events flow.
    assert!(common::publish_oracle_range(publisher, &p.input, 1_200, 300, 30, &oracle).await.is_empty());
    let second = state(&p);
    let consumer = processor(&p, &running.context(), second.clone());
    run_until_output(consumer, &p, 1_500).await;
    check_output(&p, 1_500, oracle).await;
    assert_eq!(second.poison.load(Ordering::SeqCst), 0, "the poison event is not replayed after a restart");
    assert_eq!(
        common::read_committed_to_end(shared_kafka(), p.dead_letters.name()).len(),
        1,
        "still one dead letter"
    );
    println!("poison tried {tries} time(s) in the first life");
}

/// Counts the memberships' assignments.
struct Assignments(Arc<AtomicUsize>);

impl ConsumerHooks for Assignments {
    fn assigned(&self, _: &str, partitions: &[i32]) {
        if !partitions.is_empty() {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r17_a_fenced_transactional_producer_is_replaced_and_the_output_stays_exactly_once() {
    let p = pipeline("r17-fenced");
    let running = p.spec.start(&p.config).await.unwrap();
    let publisher = running.publisher();
    let oracle = Arc::new(Mutex::new(Oracle::new()));
    let total = 4_000;
    assert!(common::publish_oracle_range(publisher, &p.input, 0, total, 40, &oracle).await.is_empty());

    let id = format!("{}.0", p.group);
    let copying = state(&p);
    let assignments = Arc::new(AtomicUsize::new(0));
    let consumer = processor(&p, &running.context(), copying.clone())
        .transactional_id(&id)
        .hooks(Assignments(assignments.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run(async move { stopped.await.unwrap_or_default() }));

    // Once a quarter is copied, another producer takes the transactional id: the processor's
    // producer is fenced in the middle of its transactions.
    let mut seen = copying.handled.subscribe();
    tokio::time::timeout(Duration::from_secs(120), seen.wait_for(|n| *n >= total / 4))
        .await
        .expect("a quarter copied within 120 s")
        .unwrap();
    let usurper: rdkafka::producer::BaseProducer =
        shared_kafka().client_config().set("transactional.id", &id).create().unwrap();
    tokio::task::spawn_blocking(move || usurper.init_transactions(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the usurper fences the processor's producer");

    // Events are handled again after the rewind, so the count passes the total: wait for the output.
    let mut client = rdkafka::ClientConfig::new();
    client
        .set("bootstrap.servers", shared_kafka().bootstrap_servers())
        .set("isolation.level", "read_committed");
    let report = common::check(client, &p.output, total, oracle).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    println!("output: {report}; memberships: {}", assignments.load(Ordering::SeqCst));
    assert!(
        report.lost.is_empty() && report.duplicate.is_empty() && report.reorder.is_empty(),
        "read_committed output equals input, once each, in order per key: {report}"
    );
    assert_eq!(report.seen, total);
    assert!(
        assignments.load(Ordering::SeqCst) >= 2,
        "the processor joined again with a new producer after being fenced"
    );
    assert!(running.health().snapshot().is_ready(), "health recovered: {:?}", running.health().snapshot());
}
