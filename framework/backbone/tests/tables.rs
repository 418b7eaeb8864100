//! Tables against the real broker: tombstones, read-your-writes, restore on restart (in memory: the
//! whole topic; persistent: only what is new), two instances splitting a table by partition, and
//! readiness held back until the restore is done.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use backbone::consume::dead_letter_topic;
use backbone::handler::{Decode, DecodeError};
use backbone::table::{NotReady, Table, TableError, TableStatus, TableValue, WaitError};
use backbone::{Delivery, Outgoing, Publisher, Running, Service, ServiceSpec, TopicSpec};
use backbone_testkit::{shared_kafka, unique};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod common;

/// Every wait in these tests is for an event; this only bounds a broken one.
const WITHIN: Duration = Duration::from_secs(90);

struct Estate {
    spec: ServiceSpec,
    topic: TopicSpec,
    running: Running,
}

impl Estate {
    /// A fresh service owning a compacted topic of `partitions` (and its dead letters), started.
    async fn new(partitions: i32) -> Self {
        let config = common::config(shared_kafka().bootstrap_servers());
        let service = unique("tbl");
        let topic =
            TopicSpec::private(&service, "levels").partitions(partitions).compacted().build().unwrap();
        let dlq = dead_letter_topic(&service, &topic).unwrap();
        let spec = Service::new(&service).owns(&topic).owns(&dlq).consumes(&topic).spec().unwrap();
        let running = spec.start(&config).await.expect("start provisions the topics");
        Self { spec, topic, running }
    }

    fn publisher(&self) -> &Publisher {
        self.running.publisher()
    }

    fn table<V: TableValue>(&self) -> Table<V> {
        self.builder().build().expect("table")
    }

    fn builder<V: TableValue>(&self) -> backbone::table::TableBuilder<V> {
        Table::builder(&self.running.context(), &self.topic).client_setting("heartbeat.interval.ms", "500")
    }

    /// Publishes records `from..to`: key `k<i % keys>`, value `v<i>`, every seventh a tombstone;
    /// keeps `expected` (what the view should hold) up to date.
    async fn write(
        &self,
        from: usize,
        to: usize,
        keys: usize,
        expected: &mut BTreeMap<Vec<u8>, String>,
    ) -> Vec<Delivery> {
        let records: Vec<(String, Option<String>)> =
            (from..to).map(|i| (format!("k{}", i % keys), (i % 7 != 6).then(|| format!("v{i}")))).collect();
        // Publishes take their place in line when called: per key, in this order.
        let publishes = records.iter().map(|(key, value)| {
            let event = match value {
                Some(value) => Outgoing::new("Level", key.as_bytes(), value.as_bytes()),
                None => Outgoing::tombstone("Level", key.as_bytes()),
            };
            self.publisher().publish(&self.topic, event)
        });
        let deliveries: Vec<Delivery> = futures::future::join_all(publishes)
            .await
            .into_iter()
            .map(|d| d.expect("acknowledged"))
            .collect();
        for (key, value) in records {
            match value {
                Some(value) => expected.insert(key.into_bytes(), value),
                None => expected.remove(key.as_bytes()),
            };
        }
        deliveries
    }
}

/// A running table and how to stop it.
struct Instance<V> {
    table: Table<V>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), TableError>>,
}

fn run<V: TableValue>(table: &Table<V>) -> Instance<V> {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn({
        let table = table.clone();
        async move {
            table
                .run(async move {
                    stopped.await.ok();
                })
                .await
        }
    });
    Instance { table: table.clone(), stop, task }
}

impl<V: TableValue> Instance<V> {
    async fn ready(&self) -> TableStatus {
        tokio::time::timeout(WITHIN, self.table.ready()).await.expect("restored in time")
    }

    async fn stop(self) {
        self.stop.send(()).ok();
        tokio::time::timeout(WITHIN, self.task).await.expect("stops").expect("no panic").expect("clean stop");
    }
}

fn text(map: &BTreeMap<Vec<u8>, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tombstones_delete_and_a_read_waits_for_its_write() {
    let estate = Estate::new(3).await;
    let table = estate.table::<String>();
    let instance = run(&table);
    let status = instance.ready().await;
    assert_eq!(status.owned, BTreeSet::from([0, 1, 2]), "one instance holds every partition");

    let mut expected = BTreeMap::new();
    for i in 0..20 {
        let key = format!("sku-{i}");
        let at = estate
            .publisher()
            .publish(&estate.topic, Outgoing::new("Level", key.as_bytes(), format!("{i}").as_bytes()))
            .await
            .unwrap();
        expected.insert(key.clone().into_bytes(), i.to_string());
        // The table places keys where the publisher does.
        assert_eq!(table.partition_for(&key), at.partition, "{key}");
        // Read your write: wait for its offset, then the view has it.
        table.wait_for_delivery(at, WITHIN).await.expect("applied");
        assert_eq!(table.get(&key).unwrap(), Some(i.to_string()), "{key}");
    }

    // A tombstone deletes.
    let at = estate.publisher().publish(&estate.topic, Outgoing::tombstone("Level", b"sku-3")).await.unwrap();
    table.wait_for(at.partition, at.offset, WITHIN).await.expect("applied");
    assert_eq!(table.get("sku-3").unwrap(), None);
    expected.remove(&b"sku-3"[..]);
    // An overwrite replaces.
    let at =
        estate.publisher().publish(&estate.topic, Outgoing::new("Level", b"sku-4", b"forty")).await.unwrap();
    table.wait_for_delivery(at, WITHIN).await.expect("applied");
    assert_eq!(table.get("sku-4").unwrap().as_deref(), Some("forty"));
    expected.insert(b"sku-4".to_vec(), "forty".into());
    assert_eq!(text(&table.snapshot().unwrap()), text(&expected));
    assert_eq!(table.get("never-written").unwrap(), None, "absent, not an error");

    // An offset not written yet: the wait ends with a timeout, not a wrong answer.
    let err = table.wait_for(at.partition, at.offset + 1_000, Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, WaitError::Timeout { applied: Some(a), .. } if a >= at.offset), "{err}");
    assert!(estate.running.health().snapshot().is_ready(), "{:?}", estate.running.health().snapshot());
    assert_eq!(table.stats().applied, 22);

    instance.stop().await;
    assert!(matches!(table.get("sku-4"), Err(NotReady::Starting { .. })), "a stopped table does not answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_poll_on_a_key_wakes_on_its_change_and_times_out_without_one() {
    let estate = Estate::new(3).await;
    let table = estate.table::<String>();
    // Started before the table restores: the wait spans the restore.
    let waiting = tokio::spawn({
        let table = table.clone();
        async move { table.wait_until_key("sku-1", |v| v.is_some_and(|v| v == "final"), WITHIN).await }
    });
    let instance = run(&table);
    instance.ready().await;
    // Another key of every partition, then the key's own intermediate and final values.
    for (key, value) in [("sku-2", "x"), ("sku-3", "y"), ("sku-1", "first"), ("sku-1", "final")] {
        estate
            .publisher()
            .publish(&estate.topic, Outgoing::new("Level", key.as_bytes(), value.as_bytes()))
            .await
            .unwrap();
    }
    let seen = tokio::time::timeout(WITHIN, waiting).await.expect("woken").unwrap().expect("seen");
    assert_eq!(seen.as_deref(), Some("final"));
    // Satisfied already: answers at once, even with no time to wait.
    let now = table.wait_until_key("sku-1", |v| v.is_some(), Duration::ZERO).await.unwrap();
    assert_eq!(now.as_deref(), Some("final"));
    // Never satisfied: a timeout, with where the partition stands.
    let started = std::time::Instant::now();
    let err = table.wait_until_key("sku-9", |v| v.is_some(), Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, WaitError::Timeout { offset: -1, .. }), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(300), "waited the whole timeout");
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicated_tables_each_hold_every_partition_and_sync_sees_every_earlier_write() {
    let estate = Estate::new(3).await;
    let (one, two) = (
        estate.builder::<String>().replicated().build().unwrap(),
        estate.builder::<String>().replicated().build().unwrap(),
    );
    let (a, b) = (run(&one), run(&two));
    let all = BTreeSet::from([0, 1, 2]);
    assert_eq!(a.ready().await.owned, all, "the first instance holds every partition");
    assert_eq!(b.ready().await.owned, all, "and so does the second, at the same time");

    // Writes whose offsets the reader is not told: sync looks the partition's end up and waits
    // for it, so a read right after sees them.
    for i in 0..10 {
        let key = format!("sku-{i}");
        estate
            .publisher()
            .publish(&estate.topic, Outgoing::new("Level", key.as_bytes(), i.to_string().as_bytes()))
            .await
            .unwrap();
        let partition = two.partition_for(&key);
        two.sync(partition, WITHIN).await.expect("synced");
        assert_eq!(two.get(&key).unwrap(), Some(i.to_string()), "{key}");
        one.sync(partition, WITHIN).await.expect("synced");
        assert_eq!(one.get(&key).unwrap(), Some(i.to_string()), "{key}");
    }

    // Each instance's group is its own, and of this run only: stopping deletes it.
    let groups = BTreeSet::from([one.group().to_owned(), two.group().to_owned()]);
    assert_eq!(groups.len(), 2, "one group per instance: {groups:?}");
    assert_eq!(groups_known(&estate.spec).await, groups, "both groups are on the broker while they run");
    a.stop().await;
    b.stop().await;
    assert_eq!(groups_known(&estate.spec).await, BTreeSet::new(), "no group left behind");
}

/// The consumer groups of the service's tables the broker lists.
async fn groups_known(spec: &ServiceSpec) -> BTreeSet<String> {
    let prefix = format!("{}.table.", spec.name());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = shared_kafka().client_config().create().expect("a client");
        let list = client.fetch_group_list(None, WITHIN).expect("the group list");
        list.groups().iter().map(|g| g.name().to_owned()).filter(|g| g.starts_with(&prefix)).collect()
    })
    .await
    .expect("no panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_in_memory_table_replays_the_whole_topic_on_restart() {
    let estate = Estate::new(3).await;
    let mut expected = BTreeMap::new();
    estate.write(0, 70, 20, &mut expected).await;

    let first = run(&estate.table::<String>());
    first.ready().await;
    assert_eq!(text(&first.table.snapshot().unwrap()), text(&expected));
    assert_eq!(first.table.stats().restored, 70, "everything there at start is restored");
    first.stop().await;

    estate.write(70, 100, 20, &mut expected).await;
    // Same group: its committed offsets are ignored, the view is rebuilt from the beginning.
    let second = run(&estate.table::<String>());
    second.ready().await;
    assert_eq!(text(&second.table.snapshot().unwrap()), text(&expected), "the same view after a restart");
    let stats = second.table.stats();
    assert_eq!((stats.restored, stats.loaded), (100, 0), "the whole topic replayed: {stats:?}");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_persistent_table_replays_only_what_is_new_on_restart() {
    let estate = Estate::new(3).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("levels.redb");
    let mut expected = BTreeMap::new();
    estate.write(0, 70, 20, &mut expected).await;

    let first = run(&estate.builder::<String>().persistent(&path).build().unwrap());
    first.ready().await;
    assert_eq!(text(&first.table.snapshot().unwrap()), text(&expected));
    assert_eq!(first.table.stats().restored, 70);
    first.stop().await;
    let live_before = expected.len() as u64;

    estate.write(70, 100, 20, &mut expected).await;
    let second = run(&estate.builder::<String>().persistent(&path).build().unwrap());
    second.ready().await;
    assert_eq!(text(&second.table.snapshot().unwrap()), text(&expected), "the same view after a restart");
    let stats = second.table.stats();
    assert_eq!(stats.restored, 30, "only the records written since are replayed: {stats:?}");
    assert!(stats.restored < 100);
    assert_eq!(stats.loaded, live_before, "the rest comes from the store: {stats:?}");

    // It keeps following the topic, store and all.
    let at = estate.write(100, 101, 20, &mut expected).await[0];
    second.table.wait_for_delivery(at, WITHIN).await.expect("applied");
    assert_eq!(text(&second.table.snapshot().unwrap()), text(&expected));
    second.stop().await;

    // A store refuses another topic.
    let other = Estate::new(1).await;
    let err = other.builder::<String>().persistent(&path).build().unwrap_err();
    assert!(err.to_string().contains("holds topic"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_split_a_table_by_partition_and_together_hold_every_key() {
    let estate = Estate::new(6).await;
    let mut expected = BTreeMap::new();
    estate.write(0, 120, 60, &mut expected).await;
    let all: BTreeSet<i32> = (0..6).collect();

    let a = run(&estate.table::<String>());
    assert_eq!(a.ready().await.owned, all);
    let b = run(&estate.table::<String>());

    // Wait, on their status changes, until the two hold every partition between them, restored.
    let (mut sa, mut sb) = (a.table.subscribe(), b.table.subscribe());
    let settled = async {
        loop {
            let (x, y) = (sa.borrow_and_update().clone(), sb.borrow_and_update().clone());
            assert!(x.owned.is_disjoint(&y.owned), "never both: {x:?} {y:?}");
            let union: BTreeSet<i32> = x.owned.union(&y.owned).copied().collect();
            if union == all && x.is_ready() && y.is_ready() && !y.owned.is_empty() {
                return (x, y);
            }
            tokio::select! {
                r = sa.changed() => r.unwrap(),
                r = sb.changed() => r.unwrap(),
            }
        }
    };
    let (x, y) = tokio::time::timeout(WITHIN, settled).await.expect("the group settles");
    assert!(!x.owned.is_empty() && !y.owned.is_empty(), "both hold partitions: {x:?} {y:?}");

    let (va, vb) = (a.table.snapshot().unwrap(), b.table.snapshot().unwrap());
    let (ka, kb): (BTreeSet<_>, BTreeSet<_>) = (va.keys().cloned().collect(), vb.keys().cloned().collect());
    assert!(ka.is_disjoint(&kb), "no key in both");
    let mut union = va.clone();
    union.extend(vb.clone());
    assert_eq!(text(&union), text(&expected), "together they hold every key, with its latest value");
    for key in ka {
        assert!(x.owned.contains(&a.table.partition_for(&key)));
        // The other instance says "not mine", not "absent".
        assert!(matches!(b.table.get(&key), Err(NotReady::NotOwned { .. })));
    }
    for key in kb {
        assert!(y.owned.contains(&b.table.partition_for(&key)));
        let p = b.table.partition_for(&key);
        assert!(matches!(a.table.wait_for(p, 0, WITHIN).await, Err(WaitError::NotOwned { .. })));
    }
    b.stop().await;
    a.stop().await;
}

/// A value whose decoding of the payload `gate` blocks until the test lets it go: a restore caught
/// in the middle.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Gated(String);

static ENTERED: Mutex<Option<oneshot::Sender<()>>> = Mutex::new(None);
static RELEASE: Mutex<Option<std::sync::mpsc::Receiver<()>>> = Mutex::new(None);

impl Decode for Gated {
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes == b"gate"
            && let Some(entered) = ENTERED.lock().unwrap().take()
        {
            entered.send(()).ok();
            let release = RELEASE.lock().unwrap().take();
            if let Some(release) = release {
                release.recv().ok();
            }
        }
        String::decode(bytes).map(Self)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_waits_until_the_view_has_caught_up() {
    let estate = Estate::new(1).await;
    let mut expected = BTreeMap::new();
    estate.write(0, 40, 10, &mut expected).await;
    let gate = estate
        .publisher()
        .publish(&estate.topic, Outgoing::new("Level", b"gate-key", b"gate"))
        .await
        .unwrap();
    expected.insert(b"gate-key".to_vec(), "gate".into());
    let deliveries = estate.write(40, 80, 10, &mut expected).await;
    let last = deliveries.last().copied().unwrap();
    assert!(gate.offset < last.offset);

    let (entered_tx, entered) = oneshot::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    *ENTERED.lock().unwrap() = Some(entered_tx);
    *RELEASE.lock().unwrap() = Some(release_rx);

    let health = estate.running.health().clone();
    let table = estate.table::<Gated>();
    assert!(health.snapshot().starting.contains_key(table.component()), "not ready before it runs");
    assert!(matches!(table.get("k1"), Err(NotReady::Starting { .. })));

    let instance = run(&table);
    tokio::time::timeout(WITHIN, entered).await.expect("the restore reaches the gate").unwrap();
    // Mid-restore: not ready, and reads say so instead of answering from a partial view.
    let now = health.snapshot();
    assert!(now.starting.contains_key(table.component()), "{now:?}");
    assert!(!now.is_ready());
    assert_eq!(table.status().restoring, BTreeSet::from([0]));
    assert!(matches!(table.get("k1"), Err(NotReady::Restoring { partition: 0, .. })));
    assert!(matches!(table.snapshot(), Err(NotReady::Restoring { .. })));
    let err = table.wait_for_delivery(last, Duration::from_millis(100)).await.unwrap_err();
    assert!(matches!(err, WaitError::Timeout { .. }), "{err}");
    let e = table.get("k1").unwrap_err();
    assert_eq!((e.status(), e.retry_after_secs()), (503, 1), "a 503 with Retry-After");

    release.send(()).unwrap();
    instance.ready().await;
    let now =
        tokio::time::timeout(WITHIN, health.wait_until(|h| !h.starting.contains_key(table.component())))
            .await
            .expect("ready");
    assert!(!now.starting.contains_key(table.component()));
    let view: BTreeMap<Vec<u8>, String> =
        table.snapshot().unwrap().into_iter().map(|(k, Gated(v))| (k, v)).collect();
    assert_eq!(text(&view), text(&expected));
    assert_eq!(table.stats().restored, 81, "everything there at start was restored before ready");
    table.wait_for_delivery(last, Duration::from_millis(1)).await.expect("applied, at once");
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transaction_markers_and_aborted_records_at_the_end_do_not_hold_the_restore_back() {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
    let estate = Estate::new(1).await;
    let producer: FutureProducer = shared_kafka()
        .client_config()
        .set("transactional.id", unique("tx"))
        .set("enable.idempotence", "true")
        .create()
        .expect("transactional producer");
    let t = Duration::from_secs(30);
    producer.init_transactions(t).expect("init");
    let send = |key: &'static str, value: &'static str| {
        let record = FutureRecord::to(estate.topic.name()).key(key).payload(value);
        let sending = producer.send(record, t);
        async move { sending.await.expect("sent") }
    };
    // Committed, then aborted: the log ends with a commit marker, aborted records and an abort
    // marker; a read_committed reader's last record is far before the high watermark.
    producer.begin_transaction().unwrap();
    send("a", "1").await;
    send("b", "2").await;
    producer.commit_transaction(t).unwrap();
    producer.begin_transaction().unwrap();
    for _ in 0..40 {
        send("a", "aborted").await;
    }
    producer.abort_transaction(t).unwrap();

    let instance = run(&estate.table::<String>());
    instance.ready().await;
    let view = instance.table.snapshot().unwrap();
    assert_eq!(
        text(&view),
        BTreeMap::from([("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())]),
        "committed records only"
    );
    assert_eq!(instance.table.stats().restored, 2);
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn item_1_waits_for_partitions_the_topic_lacks_are_refused_and_keep_nothing_and_waits_are_bounded() {
    let estate = Estate::new(3).await;
    let table = estate.builder::<String>().max_waiters(4).build().unwrap();
    let instance = run(&table);
    instance.ready().await;
    let tracked = table.tracked_partitions();
    assert_eq!(tracked, 3, "wait state for the topic's partitions only");

    // A consistency token `<n>:0` for n = 3, 4, …: each refused at once with a clear error, and
    // nothing kept for it (before the fix: 503 `NotOwned`, and one channel per partition, forever).
    for n in (3..20_003).chain([i32::MAX]) {
        let err = table.wait_for(n, 0, Duration::ZERO).await.unwrap_err();
        match &err {
            WaitError::NoSuchPartition { partition, partitions, .. } => {
                assert_eq!((*partition, *partitions), (n, 3), "{err}");
            }
            other => panic!("partition {n}: {other}"),
        }
        assert!(!err.is_retriable(), "{err}");
        let err = table.sync(n, Duration::ZERO).await.unwrap_err();
        assert!(matches!(err, WaitError::NoSuchPartition { .. }), "{err}");
    }
    let err = table.wait_for(3, 0, Duration::ZERO).await.unwrap_err();
    assert!(err.to_string().contains("has no partition 3 (its partitions are 0 to 2)"), "{err}");
    assert_eq!(table.tracked_partitions(), tracked, "20,000 refused waits kept nothing");
    assert_eq!(table.waiting(), 0);

    // Four waits that are not satisfied hold the four places: a fifth wait of any kind is refused.
    let mut held: Vec<_> = (0..4)
        .map(|p| {
            let table = table.clone();
            Box::pin(async move { table.wait_for(p % 3, i64::MAX, WITHIN).await })
        })
        .collect();
    for wait in &mut held {
        assert!(futures::poll!(wait.as_mut()).is_pending(), "waiting");
    }
    assert_eq!(table.waiting(), 4);
    let busy = table.wait_for(0, 0, Duration::ZERO).await.unwrap_err();
    assert!(matches!(busy, WaitError::Busy { limit: 4, .. }), "{busy}");
    assert!(busy.is_retriable(), "{busy}");
    let busy = table.wait_until_key("sku-1", |_| true, Duration::ZERO).await.unwrap_err();
    assert!(matches!(busy, WaitError::Busy { .. }), "{busy}");
    let busy = table.sync(1, Duration::ZERO).await.unwrap_err();
    assert!(matches!(busy, WaitError::Busy { .. }), "{busy}");
    assert_eq!(table.stats().refused_waits, 3);

    // A place given back is taken again.
    held.pop();
    assert_eq!(table.waiting(), 3);
    let at = estate.publisher().publish(&estate.topic, Outgoing::new("Level", b"sku-1", b"1")).await.unwrap();
    table.wait_for_delivery(at, WITHIN).await.expect("a place came back");
    drop(held);
    assert_eq!(table.waiting(), 0);
    assert_eq!(table.tracked_partitions(), tracked);
    instance.stop().await;
}

/// The log lines every test of this binary writes, for the tests that count warnings.
fn captured_logs() -> &'static std::sync::Arc<Mutex<Vec<u8>>> {
    use std::sync::{Arc, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let logs = logs.clone();
            move || Capture(logs.clone())
        };
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(writer)
            .try_init()
            .ok();
        logs
    })
}

struct Capture(std::sync::Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r18_misplaced_keys_are_counted_warned_once_per_partition_and_fail_lookups_fast() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let logs = captured_logs();
    let estate = Estate::new(6).await;
    let table = estate.table::<String>();
    let instance = run(&table);
    instance.ready().await;

    // A foreign producer with librdkafka's default partitioner (CRC32), not murmur2.
    let foreign: FutureProducer =
        shared_kafka().client_config().set("partitioner", "consistent_random").create().expect("a producer");
    let send = |key: String, value: Option<&'static str>, partition: Option<i32>| {
        let foreign = &foreign;
        let topic = estate.topic.name().to_owned();
        async move {
            let mut record = FutureRecord::<String, str>::to(&topic).key(&key);
            if let Some(value) = value {
                record = record.payload(value);
            }
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            let delivered = foreign.send(record, WITHIN).await.expect("written");
            (key, delivered.partition, delivered.offset)
        }
    };
    let mut written = Vec::new();
    for i in 0..60 {
        written.push(send(format!("foreign-{i}"), Some("v"), None).await);
    }
    let (misplaced, placed): (Vec<_>, Vec<_>) =
        written.iter().cloned().partition(|(key, partition, _)| table.partition_for(key) != *partition);
    assert!(!misplaced.is_empty() && !placed.is_empty(), "CRC32 and murmur2 disagree on some keys only");
    // And our own, correctly placed, records.
    let mut ours = Vec::new();
    for i in 0..30 {
        let key = format!("ours-{i}");
        let at = estate
            .publisher()
            .publish(&estate.topic, Outgoing::new("Level", key.as_bytes(), b"mine"))
            .await
            .unwrap();
        ours.push((key, at));
    }
    for (_, partition, offset) in &written {
        table.wait_for(*partition, *offset, WITHIN).await.expect("applied");
    }
    for (_, at) in &ours {
        table.wait_for_delivery(*at, WITHIN).await.expect("applied");
    }

    // Counted, record by record.
    assert_eq!(table.misplaced(), misplaced.len() as u64);
    assert_eq!(table.stats().misplaced, misplaced.len() as u64);

    // Lookups of a misplaced key fail at once, naming the key and both partitions.
    for (key, actual, _) in &misplaced {
        let expected = table.partition_for(key);
        match table.get(key) {
            Err(e @ NotReady::Misplaced(_)) => {
                assert_eq!((e.status(), e.is_retriable()), (500, false), "{e}");
                let NotReady::Misplaced(m) = &e else { unreachable!() };
                assert_eq!((m.key.as_str(), m.expected, m.actual), (key.as_str(), expected, *actual));
                assert!(e.to_string().contains(&format!("`{key}` was written to partition {actual}")), "{e}");
            }
            other => panic!("{key}: {other:?}"),
        }
        let started = std::time::Instant::now();
        let err = table.wait_until_key(key, |v| v.is_some(), Duration::from_secs(30)).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "at once, not after 30 s: {:?}",
            started.elapsed()
        );
        assert!(
            matches!(&err, WaitError::Misplaced(m) if m.expected == expected && m.actual == *actual),
            "{err}"
        );
        assert!(!err.is_retriable());
    }
    // A wait already running when the misplaced record arrives fails as soon as it is applied.
    let late = "foreign-late".to_owned();
    let wrong = (table.partition_for(&late) + 1) % 6;
    let waiting = tokio::spawn({
        let (table, late) = (table.clone(), late.clone());
        async move {
            let started = std::time::Instant::now();
            (table.wait_until_key(&late, |v| v.is_some(), Duration::from_secs(30)).await, started.elapsed())
        }
    });
    let (_, partition, offset) = send(late.clone(), Some("v"), Some(wrong)).await;
    table.wait_for(partition, offset, WITHIN).await.expect("applied");
    let (outcome, took) = tokio::time::timeout(WITHIN, waiting).await.expect("woken").unwrap();
    assert!(matches!(outcome, Err(WaitError::Misplaced(_))), "{outcome:?}");
    assert!(took < Duration::from_secs(10), "failed fast, well under the 30 s wait: {took:?}");
    assert_eq!(table.misplaced(), misplaced.len() as u64 + 1);

    // Everything else is still found; the table and the service stay ready.
    for (key, _, _) in &placed {
        assert_eq!(table.get(key).unwrap().as_deref(), Some("v"), "{key}");
    }
    for (key, _) in &ours {
        assert_eq!(table.get(key).unwrap().as_deref(), Some("mine"), "{key}");
        let found = table.wait_until_key(key, |v| v.is_some(), WITHIN).await.unwrap();
        assert_eq!(found.as_deref(), Some("mine"));
    }
    assert_eq!(table.get("never-written").unwrap(), None, "absent is still absent");
    assert!(table.status().is_ready(), "{:?}", table.status());
    assert!(estate.running.health().snapshot().is_ready(), "{:?}", estate.running.health().snapshot());
    // The view still mirrors the topic: a tombstone written the same way deletes the key.
    let (gone, actual, _) = misplaced[0].clone();
    let (_, partition, offset) = send(gone.clone(), None, Some(actual)).await;
    table.wait_for(partition, offset, WITHIN).await.expect("applied");
    assert_eq!(table.get(&gone).unwrap(), None, "deleted: absent, no longer misplaced");

    // Warned once per partition that had misplaced records, not per record.
    let partitions: BTreeSet<i32> = misplaced.iter().map(|(_, p, _)| *p).chain([wrong]).collect();
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("belongs on another partition") && l.contains(estate.topic.name()))
        .collect();
    assert_eq!(warnings.len(), partitions.len(), "{warnings:#?}");
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r18_misplaced_keys_loaded_from_the_local_store_still_fail_lookups() {
    let estate = Estate::new(3).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("levels.redb");
    let first = run(&estate.builder::<String>().persistent(&path).build().unwrap());
    first.ready().await;
    // Written explicitly to another partition than murmur2's, as a foreign producer would.
    let key = "stray";
    let wrong = (first.table.partition_for(key) + 1) % 3;
    let at = estate
        .publisher()
        .publish(&estate.topic, Outgoing::new("Level", key.as_bytes(), b"v").partition(wrong))
        .await
        .unwrap();
    let placed =
        estate.publisher().publish(&estate.topic, Outgoing::new("Level", b"placed", b"p")).await.unwrap();
    first.table.wait_for_delivery(at, WITHIN).await.expect("applied");
    first.table.wait_for_delivery(placed, WITHIN).await.expect("applied");
    assert!(matches!(first.table.get(key), Err(NotReady::Misplaced(_))));
    first.stop().await;

    // The restart reads both from the store, replays nothing, and still knows the stray key.
    let second = run(&estate.builder::<String>().persistent(&path).build().unwrap());
    second.ready().await;
    let stats = second.table.stats();
    assert_eq!((stats.loaded, stats.restored, stats.misplaced), (2, 0, 1), "{stats:?}");
    match second.table.get(key) {
        Err(NotReady::Misplaced(m)) => {
            assert_eq!((m.expected, m.actual), (second.table.partition_for(key), wrong))
        }
        other => panic!("{other:?}"),
    }
    let err = second.table.wait_until_key(key, |v| v.is_some(), Duration::from_secs(30)).await.unwrap_err();
    assert!(matches!(err, WaitError::Misplaced(_)), "{err}");
    assert_eq!(second.table.get("placed").unwrap().as_deref(), Some("p"));
    second.stop().await;
}
