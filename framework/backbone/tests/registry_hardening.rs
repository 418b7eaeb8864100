//! Issue 14, items 8 and 10, against the real broker and real registries (Apicurio's Confluent API):
//! a registry outage holds events (health degraded) instead of dead-lettering them, and a record is
//! decoded only with a schema of its own topic and within apache-avro's allocation limit.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use backbone::consume::{Consumer, dead_letter_headers, dead_letter_topic};
use backbone::handler::{BoxedHandler, Event, HandlerError, State};
use backbone::health::Health;
use backbone::layer::REGISTRY_COMPONENT;
use backbone::schema::{AvroEvent, Encoder, Registry};
use backbone::sourcing::{Aggregate, Journal, SourcingError};
use backbone::table::Table;
use backbone::{Config, Context, Outgoing, Service, TopicSpec};
use backbone_testkit::{SchemaRegistry, shared_kafka, shared_registry, unique};
use rdkafka::consumer::Consumer as _;

mod common;

/// An order, as the topic's contract has it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Order {
    id: String,
    quantity: i32,
}

impl AvroEvent for Order {
    const SCHEMA: &'static str = r#"{"type":"record","name":"OrderPlaced","namespace":"test.hardening","fields":[
        {"name":"id","type":"string"},{"name":"quantity","type":"int"}]}"#;
    fn schema() -> &'static apache_avro::Schema {
        static SCHEMA: OnceLock<apache_avro::Schema> = OnceLock::new();
        backbone::schema::parse_once(&SCHEMA, Self::SCHEMA)
    }
}

/// Another topic's contract with the same fields: its records decode as an `Order` by Avro's
/// rules, which is exactly why its id must not be accepted on the orders topic.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Refund {
    id: String,
    quantity: i32,
}

impl AvroEvent for Refund {
    const SCHEMA: &'static str = r#"{"type":"record","name":"RefundIssued","namespace":"test.hardening","fields":[
        {"name":"id","type":"string"},{"name":"quantity","type":"int"}]}"#;
    fn schema() -> &'static apache_avro::Schema {
        static SCHEMA: OnceLock<apache_avro::Schema> = OnceLock::new();
        backbone::schema::parse_once(&SCHEMA, Self::SCHEMA)
    }
}

#[derive(Clone, Default)]
struct Seen {
    handled: Arc<Mutex<Vec<i32>>>,
    /// Notified when the order with quantity `last` is handled.
    done: Arc<tokio::sync::Notify>,
    last: i32,
}

async fn take(Event(order): Event<Order>, State(seen): State<Seen>) -> Result<(), HandlerError> {
    seen.handled.lock().unwrap().push(order.quantity);
    if order.quantity == seen.last {
        seen.done.notify_one();
    }
    Ok(())
}

fn config(registry_url: &str) -> Config {
    let mut config = common::config(shared_kafka().bootstrap_servers());
    config.schema_registry_url = registry_url.to_owned();
    config
}

/// A service owning `topic` (one partition) and its dead-letter topic, consuming `topic`, started.
async fn service(config: &Config, name: &str) -> (Context, TopicSpec, TopicSpec) {
    let topic = TopicSpec::public(name, "orders", 1).partitions(1).build().unwrap();
    let dlq = dead_letter_topic(name, &topic).unwrap();
    let spec = Service::new(name).owns(&topic).owns(&dlq).consumes(&topic).spec().unwrap();
    let running = spec.start(config).await.unwrap();
    (running.context(), topic, dlq)
}

fn end_offset(topic: &str) -> i64 {
    let c: rdkafka::consumer::BaseConsumer =
        shared_kafka().client_config().set("group.id", unique("wm")).create().expect("consumer");
    c.fetch_watermarks(topic, 0, Duration::from_secs(10)).expect("watermarks").1
}

/// Avro's zig-zag varint of `n`.
fn varint(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_10_a_foreign_schema_id_and_a_huge_length_prefix_are_dead_lettered() {
    let registry_url = shared_registry().url();
    let config = config(registry_url);
    let name = unique("item10");
    let (context, topic, dlq) = service(&config, &name).await;
    let publisher = context.publisher();
    let registry = Registry::new(registry_url).unwrap();
    let own = registry.register(&format!("{}-value", topic.name()), Order::SCHEMA).await.unwrap();
    // Another topic's contract, registered under that topic's subject.
    let other = TopicSpec::public(&name, "refunds", 1).build().unwrap();
    let foreign = registry.register(&format!("{}-value", other.name()), Refund::SCHEMA).await.unwrap();
    assert_ne!(own, foreign);

    let orders = Encoder::<Order>::new(own).unwrap();
    let refunds = Encoder::<Refund>::new(foreign).unwrap();
    let order = |q: i32| orders.encode(&Order { id: format!("o-{q}"), quantity: q }).unwrap();
    // The topic's own schema id, then a string whose length prefix claims 100 MiB in a few bytes.
    let mut huge = Vec::new();
    backbone::schema::wire::write_header(&mut huge, own);
    varint(100 << 20, &mut huge);
    huge.extend_from_slice(b"o-2");
    let records: Vec<(&[u8], Vec<u8>)> = vec![
        (b"o-0", order(0)),
        (b"refund", refunds.encode(&Refund { id: "r-1".into(), quantity: 7 }).unwrap()),
        (b"o-1", order(1)),
        (b"huge", huge),
        (b"o-99", order(99)),
    ];
    for (key, payload) in &records {
        publisher.publish(&topic, Outgoing::new("OrderPlaced", key, payload)).await.unwrap();
    }

    let seen = Seen { last: 99, ..Seen::default() };
    let handler = BoxedHandler::named("take", take);
    let consumer = Consumer::new(&context, &topic, handler, seen.clone()).unwrap();
    let done = seen.done.clone();
    tokio::time::timeout(Duration::from_secs(60), consumer.run(async move { done.notified().await }))
        .await
        .expect("the partition flows past both records")
        .unwrap();
    assert_eq!(*seen.handled.lock().unwrap(), [0, 1, 99], "the refund was not handled as an order");

    let dlq_name = dlq.name().to_owned();
    let letters = tokio::task::spawn_blocking(move || common::read_letters(&dlq_name, 2)).await.unwrap();
    assert_eq!(letters.len(), 2, "two dead letters within 30 s");
    let kind = |i: usize| letters[i].header(dead_letter_headers::ERROR_KIND);
    let message = |i: usize| letters[i].header(dead_letter_headers::ERROR_MESSAGE);
    assert_eq!(letters[0].header(dead_letter_headers::ORIGIN_KEY), "refund");
    assert_eq!(kind(0), "foreign-schema-id", "{}", message(0));
    assert!(
        message(0).contains(&format!("schema id {foreign} is not a schema of topic `{}`", topic.name()))
            && message(0).contains(&format!("{}-value", other.name())),
        "{}",
        message(0)
    );
    assert_eq!(letters[1].header(dead_letter_headers::ORIGIN_KEY), "huge");
    assert_eq!(kind(1), "undecodable-payload", "{}", message(1));
    assert!(message(1).contains("maximum allowed: 67108864"), "{}", message(1));
    println!("item 10 dead letters: {} | {}", message(0), message(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_10_a_schema_registered_for_two_topics_is_accepted_on_both() {
    let registry = Registry::new(shared_registry().url()).unwrap();
    let name = unique("item10shared");
    let [first, second, third] = ["first", "second", "third"].map(|t| format!("{name}.public.{t}-v1"));
    let id = registry.register(&format!("{first}-value"), Order::SCHEMA).await.unwrap();
    // Checked for the first topic: the id's subject list ([first-value]) is remembered.
    registry.check_topic(id, &first).await.expect("the first topic's own schema");
    // The same schema registered for the second topic: the registry gives the same id (Apicurio
    // numbers contents). The remembered list lacks the second subject; the registry is asked again.
    let again = registry.register(&format!("{second}-value"), Order::SCHEMA).await.unwrap();
    println!("item 10: the same schema under a second subject has id {again} (first {id})");
    registry.check_topic(again, &second).await.expect("accepted on the second topic");
    registry.check_topic(id, &first).await.expect("still accepted on the first");
    // A topic it was never registered for refuses it.
    let err = registry.check_topic(id, &third).await.unwrap_err();
    assert_eq!(err.kind(), "foreign-schema-id", "{err}");
    assert!(err.to_string().contains(&format!("{first}-value")), "{err}");
}

fn registry_degraded(health: &Health) -> bool {
    health.degraded.contains_key(REGISTRY_COMPONENT)
}

/// A TCP relay on a loopback port to the registry's port `target`, with a gate: while closed, it
/// drops every connection it accepts, as an unreachable registry does for its clients. Services
/// reach the registry through it, so a registry started afresh (the kit's keeps its storage in
/// memory) can be given its schemas back before they see it: as a registry returning with its
/// storage would be.
struct Relay {
    port: u16,
    open: Arc<std::sync::atomic::AtomicBool>,
    target: Arc<std::sync::atomic::AtomicU16>,
    /// Notified for each connection dropped while closed (a permit is kept if nobody waits).
    refused: Arc<tokio::sync::Notify>,
}

impl Relay {
    async fn start(target: u16) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let target = Arc::new(std::sync::atomic::AtomicU16::new(target));
        let refused = Arc::new(tokio::sync::Notify::new());
        let (gate, to, dropped) = (open.clone(), target.clone(), refused.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !gate.load(SeqCst) {
                    dropped.notify_one();
                    continue; // dropped: the client sees its connection closed
                }
                let to = to.load(SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut registry) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut registry).await;
                    }
                });
            }
        });
        Self { port, open, target, refused }
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, std::sync::atomic::Ordering::SeqCst);
    }
}

fn port_of(url: &str) -> u16 {
    url.split(':').nth(2).and_then(|p| p.split('/').next()).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_8_a_registry_outage_holds_events_until_the_registry_is_back() {
    // A registry of this test's own, stopped and started again, reached through a relay.
    let first = tokio::task::spawn_blocking(SchemaRegistry::start).await.unwrap().expect("registry");
    let relay = Relay::start(port_of(first.url())).await;
    let url = first.url().replace(&format!(":{}/", port_of(first.url())), &format!(":{}/", relay.port));
    let mut config = config(&url);
    config.shutdown_timeout = Duration::from_secs(2);
    let name = unique("item8");
    let (context, topic, dlq) = service(&config, &name).await;
    let publisher = context.publisher();
    let subject = format!("{}-value", topic.name());
    let id = Registry::new(first.url()).unwrap().register(&subject, Order::SCHEMA).await.unwrap();
    relay.set_open(false);
    drop(first); // the registry is gone (killed)

    const EVENTS: i32 = 20;
    let orders = Encoder::<Order>::new(id).unwrap();
    for q in 0..EVENTS {
        let payload = orders.encode(&Order { id: format!("o-{q}"), quantity: q }).unwrap();
        publisher.publish(&topic, Outgoing::new("OrderPlaced", b"k", &payload)).await.unwrap();
    }
    let health = publisher.health().clone();
    let seen = Seen { last: EVENTS - 1, ..Seen::default() };
    let group = unique("item8-group");
    let consumer = |seen: &Seen| {
        Consumer::new(&context, &topic, BoxedHandler::named("take", take), seen.clone())
            .unwrap()
            .in_group(&group)
    };

    // 1. The first event waits for the registry, health degraded; a shutdown still ends the wait
    //    within its budget (2 s), and health does not stay degraded by a wait that was dropped.
    let watch = health.clone();
    let degraded_at = Arc::new(Mutex::new(None));
    let noted = degraded_at.clone();
    let stop = async move {
        let seen = watch.wait_until(registry_degraded).await;
        *noted.lock().unwrap() = Some(Instant::now());
        println!("item 8 degraded: {}", seen.degraded[REGISTRY_COMPONENT]);
    };
    tokio::time::timeout(Duration::from_secs(60), consumer(&seen).run(stop))
        .await
        .expect("the consumer stops within its budget while an event waits for the registry")
        .unwrap();
    let stopped_in = degraded_at.lock().unwrap().expect("degraded before stopping").elapsed();
    println!("item 8: stopped {stopped_in:?} after the shutdown began (budget 2 s)");
    assert!(stopped_in < Duration::from_secs(10), "shutdown took {stopped_in:?}");
    assert!(seen.handled.lock().unwrap().is_empty());
    tokio::time::timeout(Duration::from_secs(5), health.wait_until(|h| !registry_degraded(h)))
        .await
        .expect("the dropped wait recovers health");

    // 2. Again, past the old retry budget (~1.5 s) by the time the registry is back (a JVM start):
    //    nothing is dead-lettered, the partition waits.
    let done = seen.done.clone();
    let running = tokio::spawn(consumer(&seen).run(async move { done.notified().await }));
    let waiting = tokio::time::timeout(Duration::from_secs(60), health.wait_until(registry_degraded))
        .await
        .expect("health degraded while the registry is down");
    assert!(waiting.degraded[REGISTRY_COMPONENT].contains("unreachable"), "{waiting:?}");
    let outage = Instant::now();
    let second = tokio::task::spawn_blocking(SchemaRegistry::start).await.unwrap().expect("registry");
    // A fresh registry (in-memory storage): the schema registered again gets the same id.
    let again = Registry::new(second.url()).unwrap().register(&subject, Order::SCHEMA).await.unwrap();
    assert_eq!(again, id, "the fresh registry gave the schema another id");
    relay.target.store(port_of(second.url()), std::sync::atomic::Ordering::SeqCst);
    println!("item 8: registry down for {:?} while the partition waited", outage.elapsed());
    assert_eq!(end_offset(dlq.name()), 0, "nothing dead-lettered during the outage");
    relay.set_open(true);

    // 3. Every event handled, in order, health recovered, still nothing dead-lettered.
    tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the events flow once the registry is back")
        .unwrap()
        .unwrap();
    assert_eq!(*seen.handled.lock().unwrap(), (0..EVENTS).collect::<Vec<_>>());
    assert!(!registry_degraded(&health.snapshot()), "{:?}", health.snapshot());
    assert_eq!(end_offset(dlq.name()), 0, "nothing dead-lettered");
    drop(second);
}

/// Item 8 for tables: a persistent table restarted while the registry is down waits for it to load
/// its store, instead of leaving out the values whose writer schema it has not fetched yet (its
/// store's offsets are past them: a value left out would be missing until its key was written again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_8_a_table_loading_its_store_during_an_outage_waits_and_leaves_nothing_out() {
    const WITHIN: Duration = Duration::from_secs(90);
    let first = tokio::task::spawn_blocking(SchemaRegistry::start).await.unwrap().expect("registry");
    let relay = Relay::start(port_of(first.url())).await;
    let url = first.url().replace(&format!(":{}/", port_of(first.url())), &format!(":{}/", relay.port));
    let config = config(&url);
    let name = unique("item8-table");
    let topic = TopicSpec::private(&name, "orders").partitions(1).compacted().build().unwrap();
    let dlq = dead_letter_topic(&name, &topic).unwrap();
    let spec = Service::new(&name).owns(&topic).owns(&dlq).consumes(&topic).spec().unwrap();
    let running = spec.start(&config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.redb");
    let run = |table: &Table<Order>| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let table = table.clone();
        (
            stop,
            tokio::spawn(async move {
                table
                    .run(async move {
                        stopped.await.ok();
                    })
                    .await
            }),
        )
    };

    // 1. Five orders applied to a persistent table, which is then stopped.
    let subject = format!("{}-value", topic.name());
    let id = Registry::new(first.url()).unwrap().register(&subject, Order::SCHEMA).await.unwrap();
    let orders = Encoder::<Order>::new(id).unwrap();
    let mut last = None;
    for q in 0..5 {
        let payload = orders.encode(&Order { id: format!("o-{q}"), quantity: q }).unwrap();
        let key = format!("k{q}");
        let event = Outgoing::new("OrderPlaced", key.as_bytes(), &payload);
        last = Some(running.publisher().publish(&topic, event).await.unwrap());
    }
    let table = Table::<Order>::builder(&running.context(), &topic).persistent(&path).build().unwrap();
    let (stop, task) = run(&table);
    table.wait_for_delivery(last.unwrap(), WITHIN).await.expect("applied");
    assert_eq!(table.snapshot().unwrap().len(), 5);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    drop(table);
    drop(running);

    // 2. The registry goes; a new instance loads the store meanwhile. Schemas are cached per
    //    registry URL for the process: the same relay named another way has none cached, as a
    //    restarted process would.
    relay.set_open(false);
    drop(first);
    let restarted = self::config(&url.replace("127.0.0.1", "localhost"));
    let running = spec.start(&restarted).await.unwrap();
    let table = Table::<Order>::builder(&running.context(), &topic).persistent(&path).build().unwrap();
    let (stop, task) = run(&table);
    tokio::time::timeout(WITHIN, relay.refused.notified()).await.expect("the load asks the registry");
    assert!(table.get("k0").is_err(), "not ready while the values cannot be decoded");

    // 3. The registry is back (a fresh one, given the schema again: the same id): every value is in.
    let second = tokio::task::spawn_blocking(SchemaRegistry::start).await.unwrap().expect("registry");
    let again = Registry::new(second.url()).unwrap().register(&subject, Order::SCHEMA).await.unwrap();
    assert_eq!(again, id, "the fresh registry gave the schema another id");
    relay.target.store(port_of(second.url()), std::sync::atomic::Ordering::SeqCst);
    relay.set_open(true);
    tokio::time::timeout(WITHIN, table.ready()).await.expect("ready once the registry is back");
    let held = table.snapshot().unwrap();
    assert_eq!(held.len(), 5, "every stored value is in the view: {:?}", held.keys());
    assert_eq!(held[&b"k3"[..]].quantity, 3);
    let stats = table.stats();
    assert_eq!((stats.loaded, stats.restored), (5, 0), "from the store, nothing replayed: {stats:?}");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    drop(second);
}

/// The total quantity of an entity's orders.
#[derive(Debug, Default, Clone, PartialEq)]
struct Ordered(i32);

impl Aggregate for Ordered {
    type Event = Order;

    fn apply(&mut self, event: &Order) {
        self.0 += event.quantity;
    }
}

/// Item 8 for journals: rebuilding an entity whose events' schema cannot be fetched (the registry
/// is down) is a retriable error, not an undecodable journal; and a journal event naming another
/// topic's schema id is refused (item 10), not folded in as if it were the journal's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_8_a_journal_rebuilt_during_an_outage_answers_a_retriable_error() {
    let first = tokio::task::spawn_blocking(SchemaRegistry::start).await.unwrap().expect("registry");
    let relay = Relay::start(port_of(first.url())).await;
    let url = first.url().replace(&format!(":{}/", port_of(first.url())), &format!(":{}/", relay.port));
    let name = unique("item8-journal");
    let (context, topic, _) = service(&config(&url), &name).await;
    let journal = Journal::<Ordered>::new(&context, &topic).unwrap();
    for q in 1..=3 {
        journal.append_event("e-1", &Order { id: "e-1".into(), quantity: q }).await.unwrap();
    }
    assert_eq!(journal.rebuild("e-1").await.unwrap(), Some(Ordered(6)));

    // Another topic's contract, with the same fields, appended under the journal's key.
    let registry = Registry::new(first.url()).unwrap();
    let foreign = registry.register(&format!("{}-value", unique("refunds")), Refund::SCHEMA).await.unwrap();
    let refund = Encoder::<Refund>::new(foreign).unwrap().encode(&Refund { id: "e-2".into(), quantity: 9 });
    context
        .publisher()
        .publish(&topic, Outgoing::new("RefundIssued", b"e-2", &refund.unwrap()))
        .await
        .unwrap();
    let err = journal.rebuild("e-2").await.unwrap_err();
    assert!(!err.is_retriable() && err.to_string().contains("is not a schema of topic"), "{err}");

    // The registry goes; an instance with nothing cached (the relay named another way) rebuilds.
    relay.set_open(false);
    let restarted = self::config(&url.replace("127.0.0.1", "localhost"));
    let (context, _, _) = service(&restarted, &name).await;
    let journal = Journal::<Ordered>::new(&context, &topic).unwrap();
    let err = journal.rebuild("e-1").await.unwrap_err();
    assert!(matches!(err, SourcingError::Registry(_)) && err.is_retriable(), "{err}");
    relay.set_open(true);
    assert_eq!(journal.rebuild("e-1").await.unwrap(), Some(Ordered(6)), "the same entity once it is back");
    drop(first);
}

/// Item 8 under exactly once: a registry outage longer than the event budget (and so than any
/// transaction may stay open) dead-letters nothing. The event's transaction is aborted, and its
/// partition waits for the registry outside any transaction, health degraded; then every event is
/// handled once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_8_under_exactly_once_an_outage_past_the_event_budget_dead_letters_nothing() {
    let registry = shared_registry();
    let relay = Relay::start(port_of(registry.url())).await;
    let url = registry.url().replace(&format!(":{}/", port_of(registry.url())), &format!(":{}/", relay.port));
    let config = config(&url);
    let name = unique("item8-eos");
    let (context, topic, dlq) = service(&config, &name).await;
    let publisher = context.publisher();
    let subject = format!("{}-value", topic.name());
    let id = Registry::new(registry.url()).unwrap().register(&subject, Order::SCHEMA).await.unwrap();
    relay.set_open(false);

    const EVENTS: i32 = 20;
    let orders = Encoder::<Order>::new(id).unwrap();
    for q in 0..EVENTS {
        let payload = orders.encode(&Order { id: format!("o-{q}"), quantity: q }).unwrap();
        publisher.publish(&topic, Outgoing::new("OrderPlaced", b"k", &payload)).await.unwrap();
    }
    let health = publisher.health().clone();
    let seen = Seen { last: EVENTS - 1, ..Seen::default() };
    let consumer = Consumer::new(&context, &topic, BoxedHandler::named("take", take), seen.clone())
        .unwrap()
        .in_group(unique("item8-eos-group"))
        .exactly_once();
    let budget = consumer.effective_event_budget().unwrap();
    let done = seen.done.clone();
    let running = tokio::spawn(consumer.run(async move { done.notified().await }));
    tokio::time::timeout(Duration::from_secs(60), health.wait_until(registry_degraded))
        .await
        .expect("health degraded while the registry is unreachable");
    // The outage under test: longer than an event may take inside a transaction.
    tokio::time::sleep(budget + Duration::from_secs(2)).await;
    assert_eq!(end_offset(dlq.name()), 0, "nothing dead-lettered during the outage");
    assert!(seen.handled.lock().unwrap().is_empty());
    relay.set_open(true);

    tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the events flow once the registry is back")
        .unwrap()
        .unwrap();
    assert_eq!(*seen.handled.lock().unwrap(), (0..EVENTS).collect::<Vec<_>>());
    assert!(!registry_degraded(&health.snapshot()), "{:?}", health.snapshot());
    assert_eq!(end_offset(dlq.name()), 0, "nothing dead-lettered");
}
