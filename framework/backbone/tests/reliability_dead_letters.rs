//! R20 from `docs/reliability.md` against the real broker: dead letters the producer cannot write
//! whole (an event near the maximum message size, one with thousands of headers, one the dead-letter
//! topic's `max.message.bytes` refuses) are written once, truncated or with their headers capped,
//! and the partition flows on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone::consume::{Consumer, Retry, dead_letter_headers as h, dead_letter_topic};
use backbone::handler::{BoxedHandler, HandlerError, Json, State};
use backbone::{Service, TopicSpec};
use backbone_testkit::{shared_kafka, unique};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{oneshot, watch};

mod common;

#[derive(serde::Deserialize)]
struct Order {
    n: u32,
}

/// The good events handled, in order; the watch carries the highest handled.
#[derive(Clone)]
struct Seen {
    handled: Arc<Mutex<Vec<u32>>>,
    count: watch::Sender<u32>,
}

async fn handle(Json(order): Json<Order>, State(seen): State<Seen>) -> Result<(), HandlerError> {
    seen.handled.lock().unwrap().push(order.n);
    seen.count.send_modify(|c| *c = (*c).max(order.n));
    Ok(())
}

/// A record for the test's producer: key, payload and headers.
type Record = (String, Vec<u8>, Option<OwnedHeaders>);

/// Provisions a service owning `<service>.public.orders-v1` and its dead-letter topic, writes
/// `records` with a plain producer allowed `max_bytes` per record, and runs the service's consumer
/// until it has handled good event `last` (60 s at most). Returns the handled events, the dead letters
/// (all of them) and the dead-letter topic's end offset.
async fn run(
    name: &str,
    records: Vec<Record>,
    last: u32,
    max_bytes: usize,
    dlq_max_message_bytes: Option<usize>,
    exactly_once: bool,
) -> (Vec<u32>, Vec<common::Letter>, i64) {
    let config = common::config(shared_kafka().bootstrap_servers());
    let service = unique(name);
    let topic = TopicSpec::public(&service, "orders", 1).partitions(1).build().unwrap();
    let dlq = dead_letter_topic(&service, &topic).unwrap();
    let spec = Service::new(&service).owns(&topic).owns(&dlq).consumes(&topic).spec().unwrap();
    let running = spec.start(&config).await.expect("start provisions both topics");
    let publisher = running.publisher().clone();
    if let Some(max) = dlq_max_message_bytes {
        let admin: AdminClient<_> = shared_kafka().client_config().create().unwrap();
        let max = max.to_string();
        let alter = AlterConfig::new(ResourceSpecifier::Topic(dlq.name())).set("max.message.bytes", &max);
        let done = admin.alter_configs([&alter], &AdminOptions::new()).await.unwrap();
        assert!(done.iter().all(Result::is_ok), "{done:?}");
    }

    let producer: FutureProducer = shared_kafka()
        .client_config()
        .set("message.max.bytes", max_bytes.to_string())
        .set("compression.type", "none")
        .create()
        .unwrap();
    let records_count = records.len();
    for (key, payload, headers) in records {
        let mut record = FutureRecord::to(topic.name()).key(&key).payload(&payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("written");
    }

    let (count, mut counted) = watch::channel(0);
    let seen = Seen { handled: Arc::default(), count };
    let consumer =
        Consumer::new(&running.context(), &topic, BoxedHandler::named("handle", handle), seen.clone())
            .unwrap()
            .retry(Retry { max_attempts: 1, ..Retry::default() });
    let consumer = if exactly_once { consumer.exactly_once() } else { consumer };
    let (stop, stopped) = oneshot::channel::<()>();
    let consuming = tokio::spawn(consumer.run(async move {
        stopped.await.ok();
    }));
    let flowed = tokio::time::timeout(Duration::from_secs(60), async {
        counted.wait_for(|c| *c >= last).await.ok();
        // Under exactly once the dead letters commit with their transaction, which may be aborted
        // and its events handled again: wait (60 s in all) until one per poison record is committed.
        if exactly_once {
            let name = dlq.name().to_owned();
            // The good events are 0, 2, …, `last`; the others are poison.
            let poison = records_count - usize::try_from(last / 2 + 1).unwrap();
            loop {
                let name = name.clone();
                let letters = tokio::task::spawn_blocking(move || {
                    common::read_committed_to_end(shared_kafka(), &name).len()
                })
                .await
                .unwrap();
                if letters >= poison {
                    break;
                }
            }
        }
    })
    .await;
    stop.send(()).ok();
    consuming.await.unwrap().expect("clean stop");
    assert!(
        flowed.is_ok(),
        "every good event handled within 60 s (the partition flowed on past the poison records); handled {:?}",
        seen.handled.lock().unwrap()
    );

    let name = dlq.name().to_owned();
    let (letters, end) = tokio::task::spawn_blocking(move || {
        let reader: BaseConsumer =
            shared_kafka().client_config().set("group.id", unique("watermarks")).create().unwrap();
        let end = reader.fetch_watermarks(&name, 0, Duration::from_secs(10)).unwrap().1;
        (common::read_committed_to_end(shared_kafka(), &name), end)
    })
    .await
    .unwrap();
    // The publisher still writes (a refused dead letter did not break the idempotent producer).
    let after =
        publisher.publish(&topic, backbone::Outgoing::new("OrderCreated", b"k", br#"{"n":99}"#)).await;
    assert!(after.is_ok(), "{after:?}");
    let handled = seen.handled.lock().unwrap().clone();
    (handled, letters, end)
}

fn good(n: u32) -> Record {
    (format!("order-{n}"), format!(r#"{{"n":{n}}}"#).into_bytes(), None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r20_records_too_large_to_dead_letter_whole_get_one_truncated_dead_letter_and_the_partition_flows_on()
{
    // Offset 1: over the dead-letter producer's `message.max.bytes` (1,000,000), within the topic's
    // (the broker's default, 1,048,588). Offset 3: fits the producer, but the dead-letter topic's
    // `max.message.bytes` is set to 300,000: the broker refuses it.
    const LOCAL: usize = 1_030_000;
    const BROKER: usize = 400_000;
    let undecodable = |size: usize| {
        let mut body = b"{not json".to_vec();
        body.resize(size, b'x');
        body
    };
    let records = vec![
        good(0),
        ("too-large-here".to_owned(), undecodable(LOCAL), None),
        good(2),
        ("too-large-there".to_owned(), undecodable(BROKER), None),
        good(4),
    ];
    let (handled, letters, end) = run("r20size", records, 4, 1_040_000, Some(300_000), false).await;
    assert_eq!(handled, vec![0, 2, 4], "the good events, each once, in order");
    assert_eq!(end, 2, "exactly one dead letter per poison record");
    check_truncated(&letters, LOCAL, BROKER);
}

/// The dead letters of offsets 1 (`local` bytes) and 3 (`broker` bytes): truncated.
fn check_truncated(letters: &[common::Letter], local: usize, broker: usize) {
    assert_eq!(letters.len(), 2, "exactly one dead letter per poison record");
    for (letter, (offset, key, size)) in
        letters.iter().zip([(1, "too-large-here", local), (3, "too-large-there", broker)])
    {
        let what = format!("dead letter of offset {offset}: {:?}", letter.headers);
        assert_eq!(letter.header(h::ORIGIN_OFFSET), offset.to_string(), "{what}");
        assert_eq!(letter.header(h::ORIGIN_KEY), key, "{what}");
        assert_eq!(letter.header(h::ERROR_KIND), "undecodable-payload", "{what}");
        assert_eq!(letter.header(h::TRUNCATED), "true", "{what}");
        assert_eq!(letter.header(h::ORIGINAL_SIZE), size.to_string(), "{what}");
        assert_eq!(letter.payload.len(), backbone::layer::DeadLetterLayer::TRUNCATED_PAYLOAD_BYTES, "{what}");
        assert!(letter.payload.starts_with(b"{not json"), "{what}");
    }
}

/// The same under exactly once: the broker's refusal breaks the open transaction (the dead-letter
/// write fails the event with kind `transaction`); after the abort and rewind the event's dead letter
/// is truncated from the start and commits once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r20_under_exactly_once_records_too_large_to_dead_letter_whole_get_one_truncated_dead_letter() {
    const LOCAL: usize = 1_030_000;
    const BROKER: usize = 400_000;
    let undecodable = |size: usize| {
        let mut body = b"{not json".to_vec();
        body.resize(size, b'x');
        body
    };
    let records = vec![
        good(0),
        ("too-large-here".to_owned(), undecodable(LOCAL), None),
        good(2),
        ("too-large-there".to_owned(), undecodable(BROKER), None),
        good(4),
    ];
    let (handled, letters, _) = run("r20eos", records, 4, 1_040_000, Some(300_000), true).await;
    // Events of an aborted transaction are handled again: each good one at least once, in order.
    let mut distinct = handled.clone();
    distinct.dedup();
    assert!(distinct.ends_with(&[4]) && [0, 2, 4].iter().all(|n| handled.contains(n)), "{handled:?}");
    check_truncated(&letters, LOCAL, BROKER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r20_a_record_with_thousands_of_headers_gets_one_dead_letter_with_its_headers_capped() {
    // 6,000 headers of 150 bytes: about 950 kB, within the producer's limit; copied whole (each
    // renamed `backbone-dlq-original-…`), they would not be.
    const HEADERS: usize = 6_000;
    let mut headers = OwnedHeaders::new_with_capacity(HEADERS);
    for i in 0..HEADERS {
        headers = headers.insert(Header { key: &format!("h{i:04}"), value: Some(&[b'v'; 150][..]) });
    }
    let records = vec![good(0), ("many-headers".to_owned(), b"{not json".to_vec(), Some(headers)), good(2)];
    let (handled, letters, end) = run("r20headers", records, 2, 1_000_000, None, false).await;
    assert_eq!(handled, vec![0, 2], "the good events, each once, in order");
    assert_eq!(end, 1, "exactly one dead letter");
    let letter = &letters[0];
    let copied = letter.headers.iter().filter(|(n, _)| n.starts_with(h::ORIGINAL_PREFIX)).count();
    let what = format!("{copied} headers copied; {:?}", &letter.headers[..12]);
    assert!(copied <= backbone::layer::DeadLetterLayer::MAX_COPIED_HEADERS, "{what}");
    assert_eq!(letter.header(h::HEADERS_DROPPED), (HEADERS - copied).to_string(), "{what}");
    assert_eq!(letter.header(h::ORIGIN_OFFSET), "1", "{what}");
    assert_eq!(letter.header(&format!("{}h0000", h::ORIGINAL_PREFIX)), "v".repeat(150), "{what}");
    assert_eq!(letter.payload, b"{not json", "{what}");
}

/// Issue item A (exactly once): the dead-letter write inside a transaction whose producer was fenced
/// (as after the broker aborted a transaction that outlived its timeout) is not retried in place,
/// which could never succeed: the event fails at once with an error of kind `transaction`, for the
/// exactly-once consumer to abort and handle it again with a new transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_a_a_dead_letter_in_a_fenced_transaction_fails_the_event_at_once() {
    use backbone::handler::{HandlerContext, IncomingEvent, Metadata};
    use backbone::layer::{DeadLetterLayer, HandlerService};
    use tower::{Layer as _, ServiceExt as _};

    let config = common::config(shared_kafka().bootstrap_servers());
    let service = unique("itema");
    let topic = TopicSpec::public(&service, "orders", 1).partitions(1).build().unwrap();
    let dlq = dead_letter_topic(&service, &topic).unwrap();
    let spec = Service::new(&service).owns(&topic).owns(&dlq).consumes(&topic).spec().unwrap();
    let running = spec.start(&config).await.expect("start provisions both topics");
    let health = running.publisher().health().clone();
    let id = unique("itema-txn");
    let fenced = backbone::Publisher::transactional(&config, &spec, health.clone(), &id).await.unwrap();
    // A successor with the same transactional id fences it.
    let _successor = backbone::Publisher::transactional(&config, &spec, health, &id).await.unwrap();

    async fn refuse(_: Metadata) -> Result<(), HandlerError> {
        Err(HandlerError::permanent("no such order"))
    }
    let stack = DeadLetterLayer::new(dlq, fenced, "refuse", Retry::default())
        .layer(HandlerService::new(BoxedHandler::named("refuse", refuse)));
    let event = IncomingEvent::new(topic.name(), 0, 5).with_key("k").with_payload("{}");
    let outcome =
        tokio::time::timeout(Duration::from_secs(30), stack.oneshot(HandlerContext::new(event, ())))
            .await
            .expect("the event ends within 30 s instead of retrying its dead letter in a dead transaction");
    let error = outcome.expect_err("the dead letter was not written: the event fails");
    assert_eq!(error.kind(), "transaction", "{error}");
    assert!(error.is_retriable(), "{error}");
    let text = error.to_string();
    println!("item A: {text}");
    assert!(text.contains(&format!("{}:0:5", topic.name())), "{text}");
}
