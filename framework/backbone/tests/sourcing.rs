//! Event sourcing and running totals against the real broker: an entity rebuilt by replay equals
//! the fold of its events; a replay waits for an open transaction to end and leaves its events out
//! once aborted; a projection rebuilds every entity of a topic; running totals stay exact
//! while the instance counting them is SIGKILLed twice mid-stream, and a restart loads the snapshot
//! instead of replaying the input.

use std::collections::BTreeMap;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use backbone::consume::dead_letter_topic;
use backbone::handler::{Decode, DecodeError};
use backbone::sourcing::{Aggregate, Journal, RunningTotals, TotalsStats};
use backbone::table::partition_for;
use backbone::{Config, Outgoing, Running, Service, ServiceSpec, TopicSpec};
use backbone_testkit::{shared_kafka, unique};
use serde::{Deserialize, Serialize};

mod common;

/// Every wait in these tests is for an event; this only bounds a broken one.
const WITHIN: Duration = Duration::from_secs(120);

const CHILD: &str = "BACKBONE_TOTALS_TEST_CHILD";

/// A movement of money, `+12` or `-5`, as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Movement(i64);

impl Decode for Movement {
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let text = std::str::from_utf8(bytes).map_err(DecodeError::new)?;
        Ok(Self(text.parse().map_err(DecodeError::new)?))
    }
}

/// An account: its balance and every movement, in order (so a replay out of order shows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Account {
    balance: i64,
    movements: Vec<i64>,
}

impl Aggregate for Account {
    type Event = Movement;

    fn apply(&mut self, event: &Movement) {
        self.balance += event.0;
        self.movements.push(event.0);
    }
}

/// A service owning a journal topic of `partitions`, started.
async fn journal_service(partitions: i32) -> (TopicSpec, Running) {
    let config = common::config(shared_kafka().bootstrap_servers());
    let service = unique("ledger");
    let topic = TopicSpec::public(&service, "account-moved", 1).partitions(partitions).build().unwrap();
    let spec = Service::new(&service).owns(&topic).spec().unwrap();
    let running = spec.start(&config).await.expect("start provisions the topic");
    (topic, running)
}

/// The movement of event `i`: varied, sometimes negative.
fn movement(i: usize) -> i64 {
    ((i * 7919) % 201) as i64 - 100
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_rebuilt_by_replay_equals_the_fold_of_its_events() {
    let (topic, running) = journal_service(3).await;
    let journal = Journal::<Account>::new(&running.context(), &topic).unwrap();
    // 60 events over 3 accounts, interleaved; each account's own fold kept beside.
    let mut expected: BTreeMap<String, Account> = BTreeMap::new();
    for i in 0..60 {
        let id = format!("acct-{}", i % 3);
        let delivery = journal.append(&id, "AccountMoved", movement(i).to_string().as_bytes()).await.unwrap();
        assert_eq!(delivery.partition, partition_for(id.as_bytes(), 3), "keyed by the entity id");
        expected.entry(id).or_default().apply(&Movement(movement(i)));
    }
    for (id, account) in &expected {
        let rebuilt = journal.rebuild(id).await.unwrap();
        assert_eq!(rebuilt.as_ref(), Some(account), "{id}: replay equals the fold, in order");
        assert_eq!(account.movements.len(), 20);
    }
    assert_eq!(journal.rebuild("acct-none").await.unwrap(), None, "no events, no entity");

    // A later event is seen by the next rebuild; a tombstone ends the entity.
    let at = journal.append("acct-1", "AccountMoved", b"+1000").await.unwrap();
    let rebuilt = journal.rebuild("acct-1").await.unwrap().unwrap();
    assert_eq!(rebuilt.balance, expected["acct-1"].balance + 1000, "{at}");
    running.publisher().publish(&topic, Outgoing::tombstone("AccountClosed", b"acct-1")).await.unwrap();
    assert_eq!(journal.rebuild("acct-1").await.unwrap(), None, "a tombstone ends the entity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_waits_for_open_transactions_and_leaves_aborted_events_out() {
    let (topic, running) = journal_service(1).await;
    let journal = Journal::<Account>::new(&running.context(), &topic).unwrap();
    journal.append("acct-1", "AccountMoved", b"10").await.unwrap();
    // An event written in a transaction that never commits: its producer goes away, the broker
    // aborts the transaction after its timeout.
    let id = unique("txn");
    let transactional = running.context().transactional_publisher(&id).await.unwrap();
    let event = Outgoing::new("AccountMoved", b"acct-1", b"1000000");
    let written = transactional.publish(&topic, event).await.unwrap();
    drop(transactional);
    // Written after the open transaction's event, committed.
    let after = journal.append("acct-1", "AccountMoved", b"5").await.unwrap();
    assert!(after.offset > written.offset);
    let rebuilt = tokio::time::timeout(WITHIN, journal.rebuild("acct-1")).await.unwrap().unwrap();
    assert_eq!(
        rebuilt,
        Some(Account { balance: 15, movements: vec![10, 5] }),
        "the aborted event left out, the later committed one read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_rebuilds_every_entity_of_the_topic() {
    let (topic, running) = journal_service(4).await;
    let journal = Journal::<Account>::new(&running.context(), &topic).unwrap();
    assert!(journal.project().await.unwrap().is_empty(), "an empty journal projects nothing");
    let mut expected: BTreeMap<Vec<u8>, Account> = BTreeMap::new();
    let ids: Vec<String> = (0..500).map(|i| format!("acct-{}", (i * 31) % 23)).collect();
    let payloads: Vec<String> = (0..500).map(|i| movement(i).to_string()).collect();
    // All in flight at once: call order is per-key order.
    let appends = ids.iter().zip(&payloads).map(|(id, p)| journal.append(id, "AccountMoved", p.as_bytes()));
    for delivery in futures::future::join_all(appends).await {
        delivery.expect("acknowledged");
    }
    for (id, p) in ids.iter().zip(&payloads) {
        expected.entry(id.clone().into_bytes()).or_default().apply(&Movement(p.parse().unwrap()));
    }
    let projection = journal.project().await.unwrap();
    assert_eq!(projection.len(), 23, "every entity");
    assert_eq!(projection, expected, "each rebuilt from its own events, in order");
    // Its partitions hold entities of other ids too: the projection and a single rebuild agree.
    let one = journal.rebuild("acct-5").await.unwrap().unwrap();
    assert_eq!(Some(&one), projection.get(b"acct-5".as_slice()));
}

/// A total: how many events and their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Total {
    count: u64,
    sum: i64,
}

struct Estate {
    config: Config,
    spec: ServiceSpec,
    input: TopicSpec,
    snapshot: TopicSpec,
}

fn estate(service: &str, bootstrap: &str) -> Estate {
    let input = TopicSpec::public(service, "payment", 1).partitions(6).build().unwrap();
    let snapshot = TopicSpec::private(service, "payment-totals").partitions(6).compacted().build().unwrap();
    let dlq = dead_letter_topic(service, &input).unwrap();
    let spec = Service::new(service).owns(&input).owns(&snapshot).owns(&dlq).consumes(&input).spec().unwrap();
    Estate { config: common::config(bootstrap), spec, input, snapshot }
}

fn totals(e: &Estate, running: &Running) -> RunningTotals<Total> {
    let fold = |total: &mut Total, Movement(amount)| {
        total.count += 1;
        total.sum += amount;
    };
    RunningTotals::builder(&running.context(), &e.input, &e.snapshot, fold)
        .every(200)
        .interval(Duration::from_millis(250))
        .client_setting("session.timeout.ms", "6000")
        .client_setting("heartbeat.interval.ms", "1000")
        .build()
        .expect("running totals")
}

/// The child side: counts in its own process, reporting its stats on every change, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_counts() {
    let Ok(args) = std::env::var(CHILD) else { return };
    let (bootstrap, service) = args.split_once('|').unwrap();
    let e = estate(service, bootstrap);
    let running = e.spec.start(&e.config).await.expect("start");
    let totals = totals(&e, &running);
    let mut stats = totals.subscribe();
    tokio::spawn(async move {
        loop {
            let s = *stats.borrow_and_update();
            println!("\nSTATS {} {} {}", s.loaded, s.events, s.partitions);
            if stats.changed().await.is_err() {
                return;
            }
        }
    });
    totals.run(std::future::pending()).await.unwrap();
}

/// Waits until the child reports stats `until` accepts; returns them (loaded, events, partitions).
fn child_stats(lines: &Receiver<String>, until: impl Fn(u64, u64, u64) -> bool) -> (u64, u64, u64) {
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines.recv_timeout(left).expect("the child reports its stats");
        let Some((_, stats)) = line.split_once("STATS ") else { continue };
        let n: Vec<u64> = stats.split_whitespace().map(|n| n.parse().unwrap()).collect();
        if until(n[0], n[1], n[2]) {
            return (n[0], n[1], n[2]);
        }
    }
}

/// Waits until the stats satisfy `condition`.
async fn stats_until(totals: &RunningTotals<Total>, condition: impl Fn(&TotalsStats) -> bool) -> TotalsStats {
    let mut stats = totals.subscribe();
    let seen = tokio::time::timeout(WITHIN, stats.wait_for(|s| condition(s))).await;
    *seen.expect("in time").expect("totals alive")
}

fn text(totals: &BTreeMap<Vec<u8>, Total>) -> BTreeMap<String, Total> {
    totals.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_totals_stay_exact_across_kills_and_restarts_load_the_snapshot() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let started = std::time::Instant::now();
    let bootstrap = shared_kafka().bootstrap_servers().to_owned();
    let e = estate(&unique("totals"), &bootstrap);
    let running = e.spec.start(&e.config).await.unwrap();

    // The input: 10,000 payments over 40 accounts.
    const EVENTS: usize = 10_000;
    const KEYS: usize = 40;
    let mut expected: BTreeMap<String, Total> = BTreeMap::new();
    let records: Vec<(String, String)> =
        (0..EVENTS).map(|i| (format!("acct-{}", i % KEYS), movement(i).to_string())).collect();
    let publishes = records.iter().map(|(key, amount)| {
        running.publisher().publish(&e.input, Outgoing::new("Payment", key.as_bytes(), amount.as_bytes()))
    });
    for delivery in futures::future::join_all(publishes).await {
        delivery.expect("acknowledged");
    }
    for (key, amount) in &records {
        let total = expected.entry(key.clone()).or_default();
        total.count += 1;
        total.sum += amount.parse::<i64>().unwrap();
    }

    // Two lives in child processes, each SIGKILLed after committing at least 2,000 events of its own.
    let mut committed_before = 0;
    for life in 0..2 {
        let (mut child, lines) =
            common::spawn_test_child("child_counts", CHILD, &format!("{bootstrap}|{}", e.spec.name()));
        let (loaded, events) = tokio::task::spawn_blocking(move || {
            let (loaded, _, _) = child_stats(&lines, |_, _, partitions| partitions == 6);
            let (_, events, _) = child_stats(&lines, |_, events, _| events >= 2_000);
            (loaded, events)
        })
        .await
        .unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        println!("life {life}: loaded {loaded} snapshot records, committed {events} events, then SIGKILL");
        if life == 0 {
            assert_eq!(loaded, 0, "nothing to load the first time");
        } else {
            assert!(loaded >= KEYS as u64, "the restarted instance loaded the snapshot: {loaded}");
        }
        committed_before += events;
    }
    assert!(committed_before < EVENTS as u64, "killed mid-stream");

    // A third life, here, until the totals are complete.
    let third = totals(&e, &running);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let third = third.clone();
        async move { third.run(async move { stopped.await.unwrap_or_default() }).await }
    });
    let at_start = stats_until(&third, |s| s.partitions == 6).await;
    assert!(at_start.loaded >= KEYS as u64, "loaded the snapshot: {at_start:?}");
    let mut stats = third.subscribe();
    let complete = |third: &RunningTotals<Total>| text(&third.snapshot()) == expected;
    tokio::time::timeout(WITHIN, async {
        while !complete(&third) {
            stats.changed().await.expect("totals alive");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("totals never complete: {:?} vs {expected:?}", text(&third.snapshot())));
    let end = third.stats();
    println!("life 2: {end:?}");
    // At most the events the killed lives had not committed (they may have committed more after
    // their last report): the input was not replayed from the start.
    assert!(end.events + committed_before <= EVENTS as u64, "{end:?} after {committed_before}");
    assert_eq!(third.get("acct-7"), expected.get("acct-7").copied());
    stop.send(()).unwrap();
    tokio::time::timeout(WITHIN, task).await.expect("stops").unwrap().unwrap();
    assert!(third.snapshot().is_empty(), "a stopped instance holds nothing");

    // A fourth life has nothing to count: the snapshot alone gives every total.
    let fourth = totals(&e, &running);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let fourth = fourth.clone();
        async move { fourth.run(async move { stopped.await.unwrap_or_default() }).await }
    });
    let loaded = stats_until(&fourth, |s| s.partitions == 6).await;
    assert_eq!(text(&fourth.snapshot()), expected, "the snapshot holds the exact totals");
    assert_eq!(loaded.events, 0);
    stop.send(()).unwrap();
    tokio::time::timeout(WITHIN, task).await.expect("stops").unwrap().unwrap();
    assert_eq!(fourth.stats().events, 0, "nothing replayed: {:?}", fourth.stats());
    println!("running totals: {EVENTS} events, 2 kills, {:?}", started.elapsed());
}
