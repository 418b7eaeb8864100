//! `backbone dlq list|replay` against the shared broker: dead letters are written into a dead-letter
//! topic the way the consumer runtime writes them, for an origin topic the test also creates; reading
//! back always stops at the high watermarks, never after a sleep. And end to end: services whose
//! handler dead-letters an event, replayed to that handler alone through its service's retry topic.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backbone::consume::{dead_letter_headers as h, dead_letter_topic, replay_headers, retry_topic};
use backbone::publish::headers as publish_headers;
use backbone::{Event, HandlerError, State, TopicSpec};
use backbone_testkit::{shared_kafka, shared_registry, unique};
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

/// A service, an origin topic of another service holding one event, the service's dead-letter topic
/// for it holding three dead letters (offsets 0, 1, 2), and (if `with_retry`) its empty retry topic.
struct Fixture {
    service: String,
    origin: String,
    dlq: String,
    retry: String,
    letters: Vec<Letter>,
}

async fn fixture() -> Fixture {
    fixture_with(true).await
}

async fn fixture_with(with_retry: bool) -> Fixture {
    let kafka = shared_kafka();
    let service = unique("dlq");
    let origin = TopicSpec::public(unique("shop"), "orders", 1).build().unwrap();
    let dlq = dead_letter_topic(&service, &origin).unwrap();
    let retry = retry_topic(&service, &origin).unwrap();
    let (origin, dlq, retry) = (origin.name().to_owned(), dlq.name().to_owned(), retry.name().to_owned());
    kafka.create_topic(&origin, 1, 1).await.expect("origin topic");
    kafka.create_topic(&dlq, 1, 1).await.expect("dead-letter topic");
    if with_retry {
        kafka.create_topic(&retry, 1, 1).await.expect("retry topic");
    }
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
    Fixture { service, origin, dlq, retry, letters }
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
            "replayed {dlq}:0 -> {retry}:0@0 for reserve\nreplayed {dlq}:2 -> {retry}:0@1 for reserve\n\
             replayed 2 dead letter(s) from {dlq} to {retry}\n",
            dlq = f.dlq,
            retry = f.retry
        )
    );

    assert_eq!(read_all(&f.origin).len(), 1, "nothing written to the origin topic");
    let events = read_all(&f.retry);
    assert_eq!(events.len(), 2, "exactly two replays, to the service's retry topic");
    for (event, (dlq_offset, letter)) in events.iter().zip([(0, &f.letters[0]), (2, &f.letters[2])]) {
        assert_eq!(event.key(), Some(letter.key.as_bytes()));
        assert_eq!(event.payload(), Some(letter.payload.as_slice()));
        let replayed_from = format!("{}:{dlq_offset}", f.dlq);
        assert_eq!(header(event, "backbone-replayed-from"), Some(replayed_from.as_bytes()));
        assert_eq!(
            header(event, replay_headers::HANDLER),
            Some(&b"reserve"[..]),
            "for the handler that failed"
        );
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
    let before = high_watermark(&f.retry);

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
    assert_eq!(high_watermark(&f.retry), before, "nothing was written to the retry topic");

    // Neither does a dry run write anything; it says what would be replayed.
    let dry =
        backbone(&["dlq", "replay", "--service", &f.service, "--topic", &f.origin, "--all", "--dry-run"]);
    let out = text(&dry.stdout);
    assert!(dry.status.success(), "{out}{}", text(&dry.stderr));
    assert!(
        out.contains(&format!("would replay {}:1 -> {} for reserve  key \"order-2\"", f.dlq, f.retry)),
        "{out}"
    );
    assert!(out.ends_with("dry run: 3 dead letter(s) would be replayed; nothing written\n"), "{out}");
    assert_eq!(high_watermark(&f.retry), before);
    assert_eq!(high_watermark(&f.origin), 1, "nor to the origin topic");

    // Offsets are required, and a source without a dead-letter topic is refused.
    let neither = backbone(&["dlq", "replay", "--service", &f.service, "--topic", &f.origin]);
    assert_eq!(neither.status.code(), Some(2), "a usage error");
    let missing = backbone(&["dlq", "replay", "--service", &f.service, "--topic", "nope", "--all"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("does not exist; nothing replayed"), "{}", text(&missing.stderr));
}

#[tokio::test]
async fn dlq_replay_is_refused_for_a_service_without_its_retry_topic() {
    let f = fixture_with(false).await;
    let replay = backbone(&["dlq", "replay", "--service", &f.service, "--topic", &f.origin, "--all"]);
    assert_eq!(replay.status.code(), Some(1));
    let err = text(&replay.stderr);
    assert!(
        err.contains(&format!("retry topic {} does not exist", f.retry))
            && err.contains("upgrade the service")
            && err.contains("nothing replayed"),
        "{err}"
    );
    assert_eq!(high_watermark(&f.origin), 1, "nothing written to the origin topic either");
}

/// What the handlers of the end-to-end test saw: `(handler, payload)`, in order.
#[derive(Clone)]
struct Seen {
    log: Arc<tokio::sync::watch::Sender<Vec<(&'static str, String)>>>,
    /// Whether `first` handles `poison` (a fix deployed before the replay).
    fixed: Arc<AtomicBool>,
}

impl Seen {
    fn new() -> Self {
        Self { log: Arc::new(tokio::sync::watch::channel(Vec::new()).0), fixed: Arc::default() }
    }

    fn record(&self, handler: &'static str, payload: String) {
        self.log.send_modify(|log| log.push((handler, payload)));
    }

    /// The payloads `handler` handled.
    fn of(&self, handler: &str) -> Vec<String> {
        self.log.borrow().iter().filter(|(h, _)| *h == handler).map(|(_, p)| p.clone()).collect()
    }

    /// Waits until `handler` has handled `payload` `times` times.
    async fn wait(&self, handler: &str, payload: &str, times: usize) {
        let mut watching = self.log.subscribe();
        let seen =
            |log: &Vec<(&str, String)>| log.iter().filter(|(h, p)| *h == handler && p == payload).count();
        tokio::time::timeout(TIMEOUT, watching.wait_for(|log| seen(log) >= times))
            .await
            .unwrap_or_else(|_| {
                panic!("{handler} did not handle {payload:?} {times} time(s): {:?}", self.log.borrow())
            })
            .expect("log");
    }
}

/// Fails `poison` permanently until fixed.
async fn first(Event(payload): Event<String>, State(seen): State<Seen>) -> Result<(), HandlerError> {
    if payload == "poison" && !seen.fixed.load(Ordering::SeqCst) {
        return Err(HandlerError::permanent(std::io::Error::other("cannot handle poison yet")));
    }
    seen.record("first", payload);
    Ok(())
}

async fn second(Event(payload): Event<String>, State(seen): State<Seen>) -> Result<(), HandlerError> {
    seen.record("second", payload);
    Ok(())
}

async fn other(Event(payload): Event<String>, State(seen): State<Seen>) -> Result<(), HandlerError> {
    seen.record("other", payload);
    Ok(())
}

fn app_config() -> backbone::Config {
    let mut config = backbone::Config::default();
    config.bootstrap_servers = shared_kafka().bootstrap_servers().to_owned();
    config.schema_registry_url = shared_registry().url().to_owned();
    config.profile = backbone::Profile::Development;
    config
}

/// The committed offset of `group` on partition 0 of `topic` reaches `offset`: its consumer handled
/// (or skipped) everything before it. Consumers commit about every second; nothing signals it, so
/// this asks the broker every 100 ms, within [`TIMEOUT`].
fn wait_committed(group: &str, topic: &str, offset: i64) {
    let consumer: BaseConsumer =
        shared_kafka().client_config().set("group.id", group).create().expect("client");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let committed = consumer.committed_offsets(tpl.clone(), TIMEOUT).expect("committed offsets");
        let at = committed.find_partition(topic, 0).and_then(|p| p.offset().to_raw()).unwrap_or(-1);
        if at >= offset {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "group {group} committed {at} on {topic}, not {offset}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for `count` records in partition 0 of `topic`, from its beginning.
fn wait_records(topic: &str, count: usize) {
    let consumer: BaseConsumer =
        shared_kafka().client_config().set("group.id", unique("reader")).create().expect("reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    for n in 0..count {
        consumer.poll(TIMEOUT).unwrap_or_else(|| panic!("record {n} of {count} in {topic}")).expect("record");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_reaches_only_the_handler_that_failed_and_never_writes_the_origin_topic() {
    use backbone::app::{App, HandlerOptions};
    use backbone::handler::BoxedHandler;

    let kafka = shared_kafka();
    let config = app_config();
    let source = TopicSpec::public(unique("shop"), "orders", 1).build().unwrap();
    kafka.create_topic(source.name(), 1, 1).await.expect("source topic");
    let (service, bystander) = (unique("svc"), unique("other"));
    let seen = Seen::new();

    // A service with two handlers (two consumer groups) of the source, and another service's group.
    let app = App::new(service.clone())
        .consume_with(&source, BoxedHandler::named("first", first), HandlerOptions::new(), |c| c)
        .consume_with(&source, BoxedHandler::named("second", second), HandlerOptions::new(), |c| c);
    let theirs = App::new(bystander.clone()).consume_with(
        &source,
        BoxedHandler::named("other", other),
        HandlerOptions::new(),
        |c| c,
    );
    let ours = app.start(&config, seen.clone()).await.expect("service starts");
    let bystander_app = theirs.start(&config, seen.clone()).await.expect("other service starts");
    ours.ready().await;
    bystander_app.ready().await;

    // `first` dead-letters `poison`; the others handle it.
    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    for payload in ["ok", "poison"] {
        let record = FutureRecord::to(source.name()).key("k").payload(payload);
        producer.send(record, TIMEOUT).await.expect("source event");
    }
    seen.wait("first", "ok", 1).await;
    seen.wait("second", "poison", 1).await;
    seen.wait("other", "poison", 1).await;
    let dlq = dead_letter_topic(&service, &source).unwrap();
    wait_records(dlq.name(), 1);

    let origin_end = high_watermark(source.name());
    let retry = retry_topic(&service, &source).unwrap();
    let replay = |offset: &str| {
        let out = backbone(&[
            "dlq",
            "replay",
            "--service",
            &service,
            "--topic",
            source.name(),
            "--offsets",
            offset,
        ]);
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(
            high_watermark(source.name()),
            origin_end,
            "the origin topic has no new record: one writer"
        );
    };

    // Replayed before the fix: `first` fails it again, and its retry consumer dead-letters it to the
    // origin's dead-letter topic, for `first`, from the retry topic.
    replay("0");
    wait_records(dlq.name(), 2);
    let again = &read_all(dlq.name())[1];
    assert_eq!(header(again, h::HANDLER), Some(&b"first"[..]));
    assert_eq!(header(again, h::ORIGIN_TOPIC), Some(retry.name().as_bytes()));

    // The fix is deployed; that dead letter is replayed.
    seen.fixed.store(true, Ordering::SeqCst);
    replay("1");
    seen.wait("first", "poison", 1).await;
    // `second`'s retry consumer read past both replays without handling them; both retry groups are
    // done.
    let retry_name = retry.name().to_owned();
    let groups = [format!("{service}.first.retry"), format!("{service}.second.retry")];
    tokio::task::spawn_blocking(move || {
        for group in &groups {
            wait_committed(group, &retry_name, 2);
        }
    })
    .await
    .unwrap();
    // A later event of the source: everyone handles it after whatever came before it there.
    producer.send(FutureRecord::to(source.name()).key("k").payload("after"), TIMEOUT).await.expect("event");
    for handler in ["first", "second", "other"] {
        seen.wait(handler, "after", 1).await;
    }
    let mut firsts = seen.of("first");
    firsts.sort();
    assert_eq!(firsts, ["after", "ok", "poison"], "the handler that failed got the replay once");
    assert_eq!(
        seen.of("second"),
        ["ok", "poison", "after"],
        "the service's other handler: once, from the origin"
    );
    assert_eq!(seen.of("other"), ["ok", "poison", "after"], "the other service: once, from the origin");

    ours.shutdown().await.expect("service stops");
    bystander_app.shutdown().await.expect("other service stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_with_two_instances_both_ready_and_the_replay_handled_once() {
    use backbone::app::{App, HandlerOptions};
    use backbone::handler::BoxedHandler;

    let kafka = shared_kafka();
    let config = app_config();
    let source = TopicSpec::public(unique("shop"), "orders", 1).partitions(2).build().unwrap();
    kafka.create_topic(source.name(), 2, 1).await.expect("source topic");
    let service = unique("svc");
    let seen = Seen::new();
    let app = || {
        App::new(service.clone()).consume_with(
            &source,
            BoxedHandler::named("first", first),
            HandlerOptions::new(),
            |c| c,
        )
    };
    let one = app().start(&config, seen.clone()).await.expect("instance one starts");
    let two = app().start(&config, seen.clone()).await.expect("instance two starts");
    // The retry topic has one partition: one instance's retry consumer has none, and is ready all
    // the same.
    for instance in [&one, &two] {
        tokio::time::timeout(Duration::from_secs(60), instance.ready()).await.expect("ready within 60 s");
    }

    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    producer.send(FutureRecord::to(source.name()).key("k").payload("poison"), TIMEOUT).await.expect("event");
    let dlq = dead_letter_topic(&service, &source).unwrap();
    wait_records(dlq.name(), 1);
    seen.fixed.store(true, Ordering::SeqCst);
    let replay = backbone(&["dlq", "replay", "--service", &service, "--topic", source.name(), "--all"]);
    assert!(replay.status.success(), "{}{}", text(&replay.stdout), text(&replay.stderr));
    seen.wait("first", "poison", 1).await;
    let retry = retry_topic(&service, &source).unwrap().name().to_owned();
    let group = format!("{service}.first.retry");
    tokio::task::spawn_blocking(move || wait_committed(&group, &retry, 1)).await.unwrap();
    assert_eq!(seen.of("first"), ["poison"], "handled once, by one instance");

    one.shutdown().await.expect("instance one stops");
    two.shutdown().await.expect("instance two stops");
}

/// A handler of its service's own private topic: no retry topic is declared (a retry consumer
/// would race the live one on the same keys); the replay goes back to the topic itself, where the
/// handler that failed handles it in order and the service's other handler of the topic skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_of_an_own_private_topic_goes_back_to_it_for_the_failing_handler_only() {
    use backbone::app::{App, HandlerOptions};
    use backbone::handler::BoxedHandler;

    let config = app_config();
    let service = unique("svc");
    let commands = TopicSpec::private(&service, "commands").partitions(1).build().unwrap();
    let seen = Seen::new();
    let app = App::new(service.clone())
        .owns(&commands)
        .consume_with(&commands, BoxedHandler::named("first", first), HandlerOptions::new(), |c| c)
        .consume_with(&commands, BoxedHandler::named("second", second), HandlerOptions::new(), |c| c);
    let owned: Vec<String> = app.spec().unwrap().owned_topics().iter().map(|t| t.name().to_owned()).collect();
    assert!(!owned.iter().any(|t| t.contains(".private.retry.")), "no retry topic: {owned:?}");
    let ours = app.start(&config, seen.clone()).await.expect("service starts");
    ours.ready().await;

    let producer: FutureProducer = shared_kafka().client_config().create().expect("producer");
    for payload in ["ok", "poison"] {
        let record = FutureRecord::to(commands.name()).key("k").payload(payload);
        producer.send(record, TIMEOUT).await.expect("command");
    }
    seen.wait("second", "poison", 1).await;
    let dlq = dead_letter_topic(&service, &commands).unwrap();
    wait_records(dlq.name(), 1);

    seen.fixed.store(true, Ordering::SeqCst);
    let before = high_watermark(commands.name());
    let out =
        backbone(&["dlq", "replay", "--service", &service, "--topic", commands.name(), "--offsets", "0"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("-> {}:0@{before}", commands.name())),
        "{}",
        text(&out.stdout)
    );
    let replayed = &read_all(commands.name())[usize::try_from(before).unwrap()];
    assert_eq!(header(replayed, replay_headers::HANDLER), Some(&b"first"[..]));
    seen.wait("first", "poison", 1).await;

    producer.send(FutureRecord::to(commands.name()).key("k").payload("after"), TIMEOUT).await.expect("event");
    for handler in ["first", "second"] {
        seen.wait(handler, "after", 1).await;
    }
    assert_eq!(seen.of("first"), ["ok", "poison", "after"], "the replay, in order with the live events");
    assert_eq!(seen.of("second"), ["ok", "poison", "after"], "the other handler skipped the replay");
    assert_eq!(high_watermark(dlq.name()), 1, "nothing dead-lettered again");
    ours.shutdown().await.expect("service stops");
}
