//! The consumer runtime against the real broker: at-least-once with retries (R7), dead letters
//! with their origin in headers while the partition keeps flowing, graceful shutdown.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone::consume::{Consumer, Retry, dead_letter_headers, dead_letter_topic};
use backbone::handler::{BoxedHandler, HandlerError, Json, Metadata, State};
use backbone::{Context, Outgoing, Service, TopicSpec};
use backbone_testkit::{shared_cluster, shared_kafka, unique};
use rdkafka::consumer::Consumer as _;

mod common;

#[derive(Clone, Default)]
struct Seen {
    events: Arc<Mutex<Vec<(i32, i64, u32)>>>,
    failures: Arc<AtomicU32>,
    committed_while_failing: Arc<Mutex<Vec<i64>>>,
    group: Arc<Mutex<String>>,
    bootstrap: Arc<Mutex<String>>,
    done: Arc<tokio::sync::Notify>,
}

#[derive(serde::Deserialize)]
struct Order {
    n: u32,
}

fn committed(bootstrap: &str, group: &str, topic: &str) -> i64 {
    let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("offset reader");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
    got.elements()[0].offset().to_raw().unwrap_or(-1)
}

/// Fails retriably three times on event 5, records what was committed meanwhile, then succeeds.
async fn flaky(
    Json(order): Json<Order>,
    meta: Metadata,
    State(seen): State<Seen>,
) -> Result<(), HandlerError> {
    if order.n == 5 && seen.failures.load(Ordering::SeqCst) < 3 {
        seen.failures.fetch_add(1, Ordering::SeqCst);
        let (bootstrap, group, topic) = (
            seen.bootstrap.lock().unwrap().clone(),
            seen.group.lock().unwrap().clone(),
            meta.topic().to_owned(),
        );
        let c = tokio::task::spawn_blocking(move || committed(&bootstrap, &group, &topic)).await.unwrap();
        seen.committed_while_failing.lock().unwrap().push(c);
        return Err(HandlerError::retriable("the stock database is busy"));
    }
    seen.events.lock().unwrap().push((meta.partition(), meta.offset(), order.n));
    if order.n == 9 {
        seen.done.notify_one();
    }
    Ok(())
}

/// A service that owns and consumes a topic of `partitions` partitions, started (topics provisioned).
async fn setup(name: &str, partitions: i32) -> (Context, TopicSpec) {
    setup_with(common::config(shared_kafka().bootstrap_servers()), name, partitions).await
}

/// As [`setup`], with `config`.
async fn setup_with(config: backbone::Config, name: &str, partitions: i32) -> (Context, TopicSpec) {
    let service = unique(name);
    let topic = TopicSpec::public(&service, "orders", 1).partitions(partitions).build().unwrap();
    let dlq = dead_letter_topic(&service, &topic).unwrap();
    let spec = Service::new(&service).owns(&topic).owns(&dlq).consumes(&topic).spec().unwrap();
    let running = spec.start(&config).await.expect("start provisions both topics");
    (running.context(), topic)
}

/// Runs `consumer` until `done` is notified (its handler saw what the test awaits: `awaited`),
/// within 60 s, and checks that it then stopped cleanly.
async fn run_until<S: Clone + Send + Sync + 'static>(
    consumer: Consumer<S>,
    done: &Arc<tokio::sync::Notify>,
    awaited: &str,
) {
    let done = done.clone();
    tokio::time::timeout(Duration::from_secs(60), consumer.run(async move { done.notified().await }))
        .await
        .unwrap_or_else(|_| panic!("{awaited} within 60 s"))
        .expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r7_retriable_failures_are_retried_and_no_offset_passes_the_failing_event() {
    // On the 3-broker cluster, topics with replication 3 and min.insync.replicas 2.
    let config = common::production_config(shared_cluster().bootstrap_servers());
    let (context, topic) = setup_with(config, "r7", 1).await;
    let (config, publisher) = (context.config(), context.publisher());
    for n in 0..10u32 {
        let body = format!(r#"{{"n":{n}}}"#);
        publisher.publish(&topic, Outgoing::new("OrderCreated", b"k", body.as_bytes())).await.unwrap();
    }
    let seen = Seen::default();
    let group = unique("r7-group");
    *seen.group.lock().unwrap() = group.clone();
    *seen.bootstrap.lock().unwrap() = config.bootstrap_servers.clone();
    let retry = Retry {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(1_200),
        max_backoff: Duration::from_secs(2),
    };
    let consumer = Consumer::new(&context, &topic, BoxedHandler::named("flaky", flaky), seen.clone())
        .unwrap()
        .in_group(&group)
        .retry(retry);
    run_until(consumer, &seen.done, "all events handled").await;

    let events = seen.events.lock().unwrap().clone();
    let ns: Vec<u32> = events.iter().map(|e| e.2).collect();
    assert_eq!(ns, (0..10).collect::<Vec<_>>(), "every event handled once, in order");
    assert_eq!(seen.failures.load(Ordering::SeqCst), 3);
    let offset_of_5 = events[5].1;
    let while_failing = seen.committed_while_failing.lock().unwrap().clone();
    assert_eq!(while_failing.len(), 3);
    assert!(
        while_failing.iter().all(|c| *c <= offset_of_5),
        "no committed offset passes event 5 (offset {offset_of_5}) before it succeeds: {while_failing:?}"
    );
    // Meanwhile the events before it were committed (auto-commit runs between the retries).
    assert_eq!(*while_failing.last().unwrap(), offset_of_5, "commits reached, but never passed, event 5");
    // Graceful shutdown committed everything handled.
    let final_commit = committed(&config.bootstrap_servers, &group, topic.name());
    assert_eq!(final_commit, events[9].1 + 1);
}

async fn strict(
    Json(order): Json<Order>,
    State(seen): State<Seen>,
    meta: Metadata,
) -> Result<(), HandlerError> {
    seen.events.lock().unwrap().push((meta.partition(), meta.offset(), order.n));
    if order.n == 99 {
        seen.done.notify_one();
    }
    if order.n == 13 {
        panic!("unlucky order");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_go_to_the_dead_letter_topic_and_the_partition_flows_on() {
    let (context, topic) = setup("dlq", 1).await;
    let publisher = context.publisher();
    let mut bodies: Vec<Vec<u8>> = (0..100u32).map(|n| format!(r#"{{"n":{n}}}"#).into_bytes()).collect();
    bodies[40] = b"{not json".to_vec(); // undecodable
    for (i, body) in bodies.iter().enumerate() {
        let key = format!("order-{i}");
        publisher.publish(&topic, Outgoing::new("OrderCreated", key.as_bytes(), body)).await.unwrap();
    }
    let seen = Seen::default();
    let consumer =
        Consumer::new(&context, &topic, BoxedHandler::named("strict", strict), seen.clone()).unwrap();
    run_until(consumer, &seen.done, "the partition flows past both poison events").await;
    let handled: Vec<u32> = seen.events.lock().unwrap().iter().map(|e| e.2).collect();
    let expected: Vec<u32> = (0..100).filter(|n| *n != 40).collect();
    assert_eq!(handled, expected, "every good event handled in order (13 was handled, then panicked)");

    // Two dead letters, with their origin.
    let dlq = dead_letter_topic(context.spec().name(), &topic).unwrap();
    let dlq_name = dlq.name().to_owned();
    let read = tokio::task::spawn_blocking(move || common::read_letters(&dlq_name, 2)).await.unwrap();
    assert_eq!(read.len(), 2, "two dead letters within 30 s");
    let letters: Vec<_> = read
        .iter()
        .map(|l| {
            let h = |name: &str| l.header(name).to_owned();
            (
                h(dead_letter_headers::ORIGIN_TOPIC),
                h(dead_letter_headers::ORIGIN_OFFSET),
                h(dead_letter_headers::ORIGIN_KEY),
                h(dead_letter_headers::ERROR_KIND),
                h(dead_letter_headers::ERROR_MESSAGE),
                h(dead_letter_headers::HANDLER),
                h(dead_letter_headers::ATTEMPTS),
                l.payload.clone(),
                h(&format!("{}backbone-event-type", dead_letter_headers::ORIGINAL_PREFIX)),
            )
        })
        .collect();
    let (t, off, key, kind, msg, handler, attempts, payload, original_type) = &letters[0];
    assert_eq!(original_type, "OrderCreated", "the original event's headers are kept, prefixed");
    assert_eq!((t.as_str(), off.as_str(), key.as_str()), (topic.name(), "13", "order-13"));
    assert_eq!((kind.as_str(), handler.as_str(), attempts.as_str()), ("panic", "strict", "1"));
    assert!(msg.contains("unlucky order"), "{msg}");
    assert_eq!(payload, &bodies[13]);
    let (t, off, key, _kind, msg, _, _, payload, _) = &letters[1];
    assert_eq!((t.as_str(), off.as_str(), key.as_str()), (topic.name(), "40", "order-40"));
    assert!(!msg.is_empty());
    assert_eq!(payload, &bodies[40], "the dead letter keeps the original bytes");
}

/// How many handlers run at once, at most, and what each partition saw in order.
#[derive(Clone, Default)]
struct Overlap {
    running: Arc<AtomicU32>,
    most: Arc<AtomicU32>,
    handled: Arc<Mutex<std::collections::BTreeMap<i32, Vec<i64>>>>,
    total: Arc<AtomicU32>,
    done: Arc<tokio::sync::Notify>,
}

/// Works a little (a handler's own work, not a wait for an event) while counting who else runs.
async fn busy(meta: Metadata, State(o): State<Overlap>) {
    let now = o.running.fetch_add(1, Ordering::SeqCst) + 1;
    o.most.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2)).await;
    o.running.fetch_sub(1, Ordering::SeqCst);
    o.handled.lock().unwrap().entry(meta.partition()).or_default().push(meta.offset());
    if o.total.fetch_add(1, Ordering::SeqCst) + 1 == 600 {
        o.done.notify_one();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_bounds_the_handlers_running_at_once_and_every_partition_progresses() {
    let (context, topic) = setup("concurrency", 6).await;
    let publisher = context.publisher();
    for n in 0..600u32 {
        let key = format!("order-{}", n % 60);
        publisher.publish(&topic, Outgoing::new("OrderCreated", key.as_bytes(), b"{}")).await.unwrap();
    }
    let overlap = Overlap::default();
    let consumer = Consumer::new(&context, &topic, BoxedHandler::named("busy", busy), overlap.clone())
        .unwrap()
        .in_group(unique("concurrency-group"))
        .concurrency(2);
    run_until(consumer, &overlap.done, "600 events handled").await;

    let most = overlap.most.load(Ordering::SeqCst);
    assert_eq!(most, 2, "at most 2 handlers at once, and 2 did run at once across partitions");
    let handled = overlap.handled.lock().unwrap().clone();
    assert!(handled.len() >= 5, "events of at least 5 of the 6 partitions (60 keys): {:?}", handled.keys());
    for (partition, offsets) in &handled {
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "partition {partition} in order, each once");
    }
    assert_eq!(handled.values().map(Vec::len).sum::<usize>(), 600);
}

/// What a handler saw of one event, kept past the handler (the `Arc` it was given).
#[derive(Clone, Default)]
struct Kept {
    events: Arc<Mutex<Vec<Arc<backbone::handler::IncomingEvent>>>>,
    done: Arc<tokio::sync::Notify>,
}

/// The event itself, shared (as the runtime hands it to the layers).
struct Shared(Arc<backbone::handler::IncomingEvent>);

impl<S> backbone::handler::FromEvent<S> for Shared {
    fn from_event(
        cx: &backbone::handler::HandlerContext<S>,
    ) -> Result<Self, backbone::handler::ExtractError> {
        Ok(Self(cx.event_arc().clone()))
    }
}

async fn keep(Shared(event): Shared, State(kept): State<Kept>) {
    let mut events = kept.events.lock().unwrap();
    events.push(Arc::new((*event).clone()));
    events.push(event);
    if events.len() == 4 {
        kept.done.notify_one();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumed_event_reads_key_payload_timestamp_and_headers_in_place_and_outlives_its_consumer() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let (context, topic) = setup("in-place", 1).await;
    let producer: FutureProducer =
        backbone::publish::producer_config(context.config(), context.spec().name()).create().unwrap();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "a", value: Some("1") })
        .insert(Header { key: "valueless", value: None::<&str> })
        .insert(Header { key: "a", value: Some("2") });
    let record = FutureRecord::to(topic.name())
        .key("order-1")
        .payload("{\"n\":1}")
        .timestamp(1_700_000_000_123)
        .headers(headers);
    producer.send(record, Duration::from_secs(30)).await.expect("delivered");
    // A tombstone: no payload, no headers.
    producer
        .send(FutureRecord::<str, str>::to(topic.name()).key("order-1"), Duration::from_secs(30))
        .await
        .unwrap();

    let kept = Kept::default();
    let consumer = Consumer::new(&context, &topic, BoxedHandler::named("keep", keep), kept.clone())
        .unwrap()
        .in_group(unique("in-place-group"));
    run_until(consumer, &kept.done, "2 events").await;

    // The consumer is closed and dropped: the events kept past it still read.
    let events = kept.events.lock().unwrap().clone();
    let (copy, event, tombstone) = (&events[0], &events[1], &events[3]);
    assert_eq!(event.key(), Some(&b"order-1"[..]));
    assert_eq!(event.payload(), Some(&b"{\"n\":1}"[..]));
    assert_eq!(event.timestamp(), Some(1_700_000_000_123));
    assert_eq!((event.topic(), event.partition(), event.offset()), (topic.name(), 0, 0));
    let all: Vec<(&str, &[u8])> = event.headers().collect();
    assert_eq!(all, [("a", &b"1"[..]), ("valueless", &b""[..]), ("a", &b"2"[..])]);
    assert_eq!(event.headers().len(), 3);
    assert_eq!(event.header("a"), Some(&b"2"[..]), "the last of a repeated header");
    assert_eq!(event.header("absent"), None);
    assert_eq!(**copy, **event, "a clone copies everything");
    assert_eq!((tombstone.payload(), tombstone.headers().len(), tombstone.offset()), (None, 0, 1));
}

/// What a handler makes of an event's metadata.
#[derive(Debug, Clone, PartialEq)]
struct Read {
    offset: i64,
    event_type: Option<String>,
    producer: Option<String>,
    /// The `CorrelationId` extractor's.
    correlation: Option<String>,
    /// The task's (what the handler's own publishes carry).
    task_correlation: Option<String>,
}

#[derive(Clone, Default)]
struct Reads {
    reads: Arc<Mutex<Vec<Read>>>,
    done: Arc<tokio::sync::Notify>,
}

async fn read_metadata(
    Shared(event): Shared,
    correlation: Option<backbone::handler::CorrelationId>,
    State(reads): State<Reads>,
) {
    let mut all = reads.reads.lock().unwrap();
    all.push(Read {
        offset: event.offset(),
        event_type: event.event_type().map(|t| t.into_owned()),
        producer: event.producer().map(str::to_owned),
        correlation: correlation.map(|c| c.0),
        task_correlation: backbone::trace::correlation_id(),
    });
    if all.len() == 4 {
        reads.done.notify_one();
    }
}

/// Events written by older backbone versions (all four metadata headers on every event) and
/// minimal ones (traceparent, plus the type and correlation id only where they add information)
/// are read the same: type, producer and correlation id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_the_old_four_headers_and_minimal_ones_read_the_same() {
    use backbone::headers;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let (context, topic) = setup("both-forms", 1).await;
    let service = context.spec().name().to_owned();
    let producer: FutureProducer =
        backbone::publish::producer_config(context.config(), &service).create().unwrap();
    let legacy = |correlation: &'static str, traceparent: &'static str| {
        OwnedHeaders::new()
            .insert(Header { key: headers::EVENT_TYPE, value: Some("OrderCreated") })
            .insert(Header { key: headers::PRODUCER, value: Some(service.as_str()) })
            .insert(Header { key: headers::CORRELATION_ID, value: Some(correlation) })
            .insert(Header { key: headers::TRACEPARENT, value: Some(traceparent) })
    };
    let (tp1, tp2) = (
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    );
    // Offsets 0 and 1: as older versions wrote them, a correlation id of its own, then the trace id.
    for headers in [legacy("req-9", tp1), legacy("0af7651916cd43dd8448eb211c80319c", tp2)] {
        let record = FutureRecord::to(topic.name()).key("order-1").payload("{}").headers(headers);
        producer.send(record, Duration::from_secs(30)).await.expect("delivered");
    }
    // Offsets 2 and 3: as backbone writes them now.
    let publisher = context.publisher();
    backbone::trace::with_correlation_id("req-9", async {
        publisher.publish(&topic, Outgoing::new("OrderCreated", b"order-1", b"{}")).await
    })
    .await
    .expect("published");
    publisher.publish(&topic, Outgoing::new("OrderCreated", b"order-1", b"{}")).await.expect("published");

    let reads = Reads::default();
    let consumer =
        Consumer::new(&context, &topic, BoxedHandler::named("read-metadata", read_metadata), reads.clone())
            .unwrap()
            .in_group(unique("both-forms-group"));
    run_until(consumer, &reads.done, "4 events").await;

    // What the minimal ones carry on the wire.
    let probe = backbone::testing::Probe::from_beginning(context.config(), &topic).await.expect("probe");
    let mut wire = Vec::new();
    for _ in 0..4 {
        wire.push(probe.next(Duration::from_secs(30)).await.expect("event"));
    }
    let names =
        |e: &backbone::handler::IncomingEvent| e.headers().map(|(n, _)| n.to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&wire[2]), [headers::EVENT_TYPE, headers::CORRELATION_ID, headers::TRACEPARENT]);
    assert_eq!(names(&wire[3]), [headers::EVENT_TYPE, headers::TRACEPARENT]);
    let own_trace_id =
        std::str::from_utf8(wire[3].header(headers::TRACEPARENT).unwrap()).unwrap()[3..35].to_owned();

    let mut reads = reads.reads.lock().unwrap().clone();
    reads.sort_by_key(|r| r.offset);
    let read = |offset: i64, correlation: &str| Read {
        offset,
        event_type: Some("OrderCreated".into()),
        producer: Some(service.clone()),
        correlation: Some(correlation.into()),
        task_correlation: Some(correlation.into()),
    };
    assert_eq!(
        reads,
        [
            read(0, "req-9"),
            read(1, "0af7651916cd43dd8448eb211c80319c"),
            read(2, "req-9"),
            read(3, &own_trace_id),
        ]
    );
}
