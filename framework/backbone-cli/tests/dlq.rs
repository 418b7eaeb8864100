//! `backbone dlq list|replay` against the shared broker: dead letters are written into a dead-letter
//! topic the way the consumer runtime writes them, for an origin topic the test also creates; reading
//! back always stops at the high watermarks, never after a sleep.

use std::process::{Command, Output};
use std::time::Duration;

use backbone::TopicSpec;
use backbone::consume::{dead_letter_headers as h, dead_letter_topic};
use backbone::publish::headers as publish_headers;
use backbone_testkit::{shared_kafka, unique};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `backbone <args>` against the shared broker.
fn backbone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backbone"))
        .args(args)
        .env("KAFKA_BOOTSTRAP_SERVERS", shared_kafka().bootstrap_servers())
        .env_remove("BACKBONE_CONFIG_FILE")
        .env_remove("KAFKA_SECURITY_PROTOCOL")
        .output()
        .expect("run backbone")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A dead letter as the test writes it.
struct Letter {
    key: String,
    payload: Vec<u8>,
    origin_offset: i64,
    kind: &'static str,
    message: String,
    tenant: String,
}

/// A service, an origin topic of another service holding one event, and the service's dead-letter
/// topic for it holding three dead letters (offsets 0, 1, 2).
struct Fixture {
    service: String,
    origin: String,
    dlq: String,
    letters: Vec<Letter>,
}

async fn fixture() -> Fixture {
    let kafka = shared_kafka();
    let service = unique("dlq");
    let origin = TopicSpec::public(unique("shop"), "orders", 1).build().unwrap();
    let dlq = dead_letter_topic(&service, &origin).unwrap();
    let (origin, dlq) = (origin.name().to_owned(), dlq.name().to_owned());
    kafka.create_topic(&origin, 1, 1).await.expect("origin topic");
    kafka.create_topic(&dlq, 1, 1).await.expect("dead-letter topic");
    let producer: FutureProducer = kafka.client_config().create().expect("producer");

    // One event the replays come after.
    let first = FutureRecord::to(&origin).key("order-0").payload("{\"n\":0}");
    producer.send(first, TIMEOUT).await.expect("origin event");

    let kinds = ["handler", "panic", "undecodable"];
    let letters: Vec<Letter> = (1..=3)
        .map(|n| Letter {
            key: format!("order-{n}"),
            payload: format!("{{\"n\":{n}}}").into_bytes(),
            origin_offset: 10 + n,
            kind: kinds[usize::try_from(n - 1).unwrap()],
            message: format!("order {n} is out of stock\nsecond line"),
            tenant: format!("acme-{n}"),
        })
        .collect();
    for letter in &letters {
        let (partition, offset) = ("0".to_owned(), letter.origin_offset.to_string());
        // As the consumer writes them: backbone's publish headers, then the dead-letter ones; plus one
        // header of the original event (the consumer does not copy those yet; replay must keep them).
        let headers = [
            (publish_headers::EVENT_TYPE, "DeadLetter".as_bytes()),
            (publish_headers::PRODUCER, service.as_bytes()),
            ("tenant", letter.tenant.as_bytes()),
            (h::ORIGIN_TOPIC, origin.as_bytes()),
            (h::ORIGIN_PARTITION, partition.as_bytes()),
            (h::ORIGIN_OFFSET, offset.as_bytes()),
            (h::ORIGIN_KEY, letter.key.as_bytes()),
            (h::ERROR_KIND, letter.kind.as_bytes()),
            (h::ERROR_MESSAGE, letter.message.as_bytes()),
            (h::HANDLER, b"reserve".as_slice()),
            (h::ATTEMPTS, b"5".as_slice()),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |hs, (key, value)| hs.insert(Header { key, value: Some(value) }));
        let record = FutureRecord::to(&dlq).key(&letter.key).payload(&letter.payload).headers(headers);
        producer.send(record, TIMEOUT).await.expect("dead letter");
    }
    Fixture { service, origin, dlq, letters }
}

/// Everything in partition 0 of `topic` up to its high watermark now.
fn read_all(topic: &str) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer =
        shared_kafka().client_config().set("group.id", unique("reader")).create().expect("reader");
    let (low, high) = consumer.fetch_watermarks(topic, 0, TIMEOUT).expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(low)).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut messages = Vec::new();
    let mut next = low;
    while next < high {
        let m = consumer.poll(TIMEOUT).expect("a message before the high watermark").expect("message");
        next = m.offset() + 1;
        messages.push(m.detach());
    }
    messages
}

fn high_watermark(topic: &str) -> i64 {
    let consumer: BaseConsumer = shared_kafka().client_config().create().expect("client");
    consumer.fetch_watermarks(topic, 0, TIMEOUT).expect("watermarks").1
}

fn header<'a>(m: &'a OwnedMessage, name: &str) -> Option<&'a [u8]> {
    m.headers().and_then(|hs| hs.iter().find(|x| x.key == name)).and_then(|x| x.value)
}

#[tokio::test]
async fn list_shows_each_dead_letter_with_its_origin_and_error() {
    let f = fixture().await;
    let list = backbone(&["dlq", "list", "--service", &f.service]);
    let out = text(&list.stdout);
    assert!(list.status.success(), "{out}{}", text(&list.stderr));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "one line per dead letter:\n{out}");
    for (offset, (line, letter)) in lines.iter().zip(&f.letters).enumerate() {
        assert!(line.starts_with(&format!("{} {offset}  ", f.dlq)), "{line}");
        for part in [
            format!("origin {}:0:{}", f.origin, letter.origin_offset),
            format!("key {:?}", letter.key),
            format!("kind {}", letter.kind),
            "attempts 5".to_owned(),
            // One line per letter: the message's newline is escaped.
            format!("error {:?}", letter.message),
        ] {
            assert!(line.contains(&part), "`{line}` should contain `{part}`");
        }
    }

    // JSON lines, for one source topic, with the brokers given on the command line.
    let json = Command::new(env!("CARGO_BIN_EXE_backbone"))
        .args(["dlq", "list", "--json", "--service", &f.service, "--topic", &f.origin])
        .args(["--bootstrap-servers", shared_kafka().bootstrap_servers()])
        .env("KAFKA_BOOTSTRAP_SERVERS", "nowhere.invalid:1")
        .env_remove("BACKBONE_CONFIG_FILE")
        .env_remove("KAFKA_SECURITY_PROTOCOL")
        .output()
        .unwrap();
    assert!(json.status.success(), "{}", text(&json.stderr));
    let objects: Vec<serde_json::Value> = text(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(objects.len(), 3);
    assert_eq!(objects[1]["dlq_topic"], f.dlq.as_str());
    assert_eq!(objects[1]["dlq_offset"], 1);
    assert_eq!(objects[1]["origin_topic"], f.origin.as_str());
    assert_eq!(objects[1]["origin_offset"], 12);
    assert_eq!(objects[1]["key"], "order-2");
    assert_eq!(objects[1]["error_kind"], "panic");
    assert_eq!(objects[1]["error_message"], f.letters[1].message.as_str());
    assert_eq!(objects[1]["handler"], "reserve");
    assert_eq!(objects[1]["attempts"], 5);

    // A service without dead letters: said plainly, exit 0.
    let none = backbone(&["dlq", "list", "--service", &unique("clean")]);
    assert!(none.status.success());
    assert!(text(&none.stdout).starts_with("no dead letters: service clean-"), "{}", text(&none.stdout));
}

#[tokio::test]
async fn replay_republishes_exactly_the_chosen_letters_in_dlq_order() {
    let f = fixture().await;
    // Given out of order: replayed in dead-letter offset order all the same.
    let replay =
        backbone(&["dlq", "replay", "--service", &f.service, "--topic", &f.origin, "--offsets", "2,0"]);
    let out = text(&replay.stdout);
    assert!(replay.status.success(), "{out}{}", text(&replay.stderr));
    assert_eq!(
        out,
        format!(
            "replayed {dlq}:0 -> {origin}:0@1\nreplayed {dlq}:2 -> {origin}:0@2\n\
             replayed 2 dead letter(s) from {dlq} to {origin}\n",
            dlq = f.dlq,
            origin = f.origin
        )
    );

    let events = read_all(&f.origin);
    assert_eq!(events.len(), 3, "the original event and exactly two replays");
    for (event, (dlq_offset, letter)) in events[1..].iter().zip([(0, &f.letters[0]), (2, &f.letters[2])]) {
        assert_eq!(event.key(), Some(letter.key.as_bytes()));
        assert_eq!(event.payload(), Some(letter.payload.as_slice()));
        let replayed_from = format!("{}:{dlq_offset}", f.dlq);
        assert_eq!(header(event, "backbone-replayed-from"), Some(replayed_from.as_bytes()));
        assert_eq!(header(event, "tenant"), Some(letter.tenant.as_bytes()), "other headers are kept");
        let names: Vec<&str> = event.headers().unwrap().iter().map(|x| x.key).collect();
        assert!(
            !names.iter().any(|n| n.starts_with("backbone-dlq-")),
            "dead-letter headers dropped: {names:?}"
        );
    }
}

#[tokio::test]
async fn offsets_not_in_the_dlq_are_refused_before_anything_is_written() {
    let f = fixture().await;
    let before = high_watermark(&f.origin);

    let replay =
        backbone(&["dlq", "replay", "--service", &f.service, "--topic", &f.origin, "--offsets", "1,7-8"]);
    assert_eq!(replay.status.code(), Some(1));
    let err = text(&replay.stderr);
    assert!(
        err.contains(&format!("no dead letter at offset(s) 7, 8 in {} (it holds offsets 0 to 2)", f.dlq))
            && err.contains("nothing replayed"),
        "{err}"
    );
    assert_eq!(text(&replay.stdout), "");
    assert_eq!(high_watermark(&f.origin), before, "nothing was written to the origin topic");

    // Neither does a dry run write anything; it says what would be replayed.
    let dry =
        backbone(&["dlq", "replay", "--service", &f.service, "--topic", &f.origin, "--all", "--dry-run"]);
    let out = text(&dry.stdout);
    assert!(dry.status.success(), "{out}{}", text(&dry.stderr));
    assert!(out.contains(&format!("would replay {}:1 -> {}  key \"order-2\"", f.dlq, f.origin)), "{out}");
    assert!(out.ends_with("dry run: 3 dead letter(s) would be replayed; nothing written\n"), "{out}");
    assert_eq!(high_watermark(&f.origin), before);

    // Offsets are required, and a source without a dead-letter topic is refused.
    let neither = backbone(&["dlq", "replay", "--service", &f.service, "--topic", &f.origin]);
    assert_eq!(neither.status.code(), Some(2), "a usage error");
    let missing = backbone(&["dlq", "replay", "--service", &f.service, "--topic", "nope", "--all"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("does not exist; nothing replayed"), "{}", text(&missing.stderr));
}
