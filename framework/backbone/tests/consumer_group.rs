//! Consumer groups against a real 3-broker cluster, topics with replication 3 and
//! `min.insync.replicas` 2 (the production profile): instances share partitions, fail over and
//! resume without loss (R5: one instance SIGKILLed mid-stream; R6: graceful shutdown and restart;
//! scaling a group 1 → 2 → 3 → 1 while events flow).
//!
//! Every instance appends one line per handled event to its own file (before the handler returns,
//! so a killed process loses no record of what it handled), and the checks read the files:
//! lost (acknowledged, never handled), duplicate, per-key order within each instance, and poll-skip
//! (an offset gap within one instance that no other instance handled).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backbone::consume::{Consumer, ConsumerHooks, dead_letter_topic};
use backbone::handler::{BoxedHandler, HandlerError, Metadata, State};
use backbone::{Config, Context, Publisher, Service, ServiceSpec, TopicSpec};
use backbone_testkit::oracle::{Oracle, PRODUCER_HEADER, SEQ_HEADER};
use backbone_testkit::{shared_cluster, unique};
use tokio::sync::{Notify, oneshot};

mod common;

const CHILD: &str = "BACKBONE_GROUP_TEST_CHILD";
const PARTITIONS: i32 = 6;
/// Low, so a killed instance's partitions move soon (the broker's minimum is 6 s).
const SESSION_TIMEOUT_MS: u64 = 6_000;

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis()
}

/// One instance's record of what it handled.
struct Log {
    instance: String,
    file: Mutex<std::fs::File>,
    handled: AtomicUsize,
    /// (key, seq) handled, for waiting on "everything handled".
    seen: Mutex<HashSet<(String, u64)>>,
    changed: Arc<Notify>,
    assigned: Mutex<BTreeSet<i32>>,
    announce: bool,
    /// Rebalances and commits, timed, for a failure's story.
    journal: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct Shared(Arc<Log>);

impl Shared {
    fn new(dir: &Path, instance: &str, changed: Arc<Notify>, announce: bool) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{instance}.log")))
            .expect("log file");
        Self(Arc::new(Log {
            instance: instance.to_owned(),
            file: Mutex::new(file),
            handled: AtomicUsize::new(0),
            seen: Mutex::new(HashSet::new()),
            changed,
            assigned: Mutex::new(BTreeSet::new()),
            announce,
            journal: Mutex::new(Vec::new()),
        }))
    }

    fn assigned(&self) -> BTreeSet<i32> {
        self.0.assigned.lock().unwrap().clone()
    }

    fn note(&self, what: String) {
        self.0.journal.lock().unwrap().push(format!("{} {} {what}", now_ms(), self.0.instance));
    }
}

impl ConsumerHooks for Shared {
    fn assigned(&self, _: &str, partitions: &[i32]) {
        self.note(format!("assigned {partitions:?}"));
        self.0.assigned.lock().unwrap().extend(partitions);
        if self.0.announce {
            println!("\nASSIGNED {partitions:?}");
        }
        self.0.changed.notify_waiters();
    }

    fn committed(&self, _: &str, offsets: &[(i32, i64)]) {
        self.note(format!("committed {offsets:?}"));
    }

    fn revoked(&self, _: &str, partitions: &[i32]) {
        self.note(format!("revoked {partitions:?}"));
        let mut assigned = self.0.assigned.lock().unwrap();
        partitions.iter().for_each(|p| {
            assigned.remove(p);
        });
        drop(assigned);
        self.0.changed.notify_waiters();
    }
}

/// Records the event: `instance partition offset producer key seq millis`.
async fn record(meta: Metadata, State(log): State<Shared>) -> Result<(), HandlerError> {
    let header = |name: &str| {
        meta.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .ok_or_else(|| HandlerError::permanent(format!("no {name} header")))
    };
    let (producer, seq) = (header(PRODUCER_HEADER)?, header(SEQ_HEADER)?);
    let key = String::from_utf8_lossy(meta.key().unwrap_or_default()).into_owned();
    let line = format!(
        "{} {} {} {} {} {} {}\n",
        log.0.instance,
        meta.partition(),
        meta.offset(),
        producer,
        key,
        seq,
        now_ms()
    );
    // One write per line, before the handler returns: a SIGKILL cannot lose a handled event's record.
    log.0.file.lock().unwrap().write_all(line.as_bytes()).expect("write the log");
    log.0.seen.lock().unwrap().insert((key, seq.parse().expect("seq")));
    let n = log.0.handled.fetch_add(1, Ordering::SeqCst) + 1;
    if log.0.announce && n % 1_000 == 0 {
        println!("\nHANDLED {n}");
    }
    log.0.changed.notify_waiters();
    Ok(())
}

struct Estate {
    config: Config,
    spec: ServiceSpec,
    topic: TopicSpec,
    group: String,
}

fn estate_for(service: &str, group: &str, bootstrap: &str) -> Estate {
    let topic = TopicSpec::public(service, "events", 1).partitions(PARTITIONS).build().expect("topic");
    let dlq = dead_letter_topic(service, &topic).expect("dlq");
    let spec = Service::new(service).owns(&topic).owns(&dlq).consumes(&topic).spec().expect("spec");
    Estate { config: common::production_config(bootstrap), spec, topic, group: group.to_owned() }
}

fn consumer(estate: &Estate, context: &Context, log: &Shared) -> Consumer<Shared> {
    Consumer::new(context, &estate.topic, BoxedHandler::named("record", record), log.clone())
        .expect("consumer")
        .in_group(&estate.group)
        .client_setting("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
        .client_setting("heartbeat.interval.ms", "1000")
        .hooks(log.clone())
}

/// An in-process instance: its log and how to stop it gracefully.
struct Instance {
    log: Shared,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start_instance(
    estate: &Estate,
    context: &Context,
    dir: &Path,
    name: &str,
    changed: &Arc<Notify>,
) -> Instance {
    let log = Shared::new(dir, name, changed.clone(), false);
    let consumer = consumer(estate, context, &log);
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        consumer.run(async move { stopped.await.ok().unwrap_or_default() }).await.expect("clean stop");
    });
    Instance { log, stop, task }
}

impl Instance {
    async fn stop(self, within: Duration) {
        self.stop.send(()).ok();
        tokio::time::timeout(within, self.task).await.expect("stops within its budget").expect("no panic");
    }
}

/// The child side of R5: an instance in its own process, killed by the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_instance() {
    let Ok(args) = std::env::var(CHILD) else { return };
    let [bootstrap, service, group, dir, instance]: [&str; 5] =
        args.split('|').collect::<Vec<_>>().try_into().expect("child arguments");
    let estate = estate_for(service, group, bootstrap);
    let running = estate.spec.start(&estate.config).await.expect("start");
    let log = Shared::new(Path::new(dir), instance, Arc::new(Notify::new()), true);
    consumer(&estate, &running.context(), &log).run(std::future::pending()).await.expect("run");
}

/// Waits (on the instances' change notifications) until `condition` holds.
async fn wait_for(changed: &Notify, within: Duration, what: &str, condition: impl Fn() -> bool) {
    let waiting = async {
        loop {
            let notified = changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if condition() {
                return;
            }
            notified.await;
        }
    };
    tokio::time::timeout(within, waiting).await.unwrap_or_else(|_| panic!("{what} within {within:?}"));
}

/// One handled event, as an instance logged it.
#[derive(Debug, Clone)]
struct Handled {
    instance: String,
    partition: i32,
    offset: i64,
    producer: String,
    key: String,
    seq: u64,
    millis: u128,
}

fn read_logs(dir: &Path) -> Vec<Handled> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("log dir") {
        let path: PathBuf = entry.expect("entry").path();
        for line in BufReader::new(std::fs::File::open(&path).expect("log")).lines() {
            let line = line.expect("line");
            let f: Vec<&str> = line.split(' ').collect();
            // A line cut by a SIGKILL mid-write is not a record (its offset was not stored either).
            let [instance, partition, offset, producer, key, seq, millis] = f[..] else { continue };
            let (Ok(partition), Ok(offset), Ok(seq), Ok(millis)) =
                (partition.parse(), offset.parse(), seq.parse(), millis.parse())
            else {
                continue;
            };
            out.push(Handled {
                instance: instance.to_owned(),
                partition,
                offset,
                producer: producer.to_owned(),
                key: key.to_owned(),
                seq,
                millis,
            });
        }
    }
    // In handling order across instances (a stable sort keeps each instance's own order).
    out.sort_by_key(|h| h.millis);
    out
}

#[derive(Debug, Default)]
struct Findings {
    lost: usize,
    duplicates: Vec<Handled>,
    reorders: Vec<String>,
    poll_skips: Vec<String>,
}

/// Every record of the events in `duplicates`, first handling included, for the failure message.
fn occurrences<'a>(handled: &'a [Handled], duplicates: &[Handled]) -> Vec<&'a Handled> {
    handled
        .iter()
        .filter(|h| duplicates.iter().any(|d| (&d.producer, &d.key, d.seq) == (&h.producer, &h.key, h.seq)))
        .collect()
}

/// Prints what went wrong and the instances' rebalances and commits, when anything did.
fn story(logs: &[Shared], handled: &[Handled], findings: &Findings) {
    if findings.duplicates.is_empty() && findings.reorders.is_empty() {
        return;
    }
    println!("duplicates: {:#?}", occurrences(handled, &findings.duplicates));
    let mut journal: Vec<String> = logs.iter().flat_map(|l| l.0.journal.lock().unwrap().clone()).collect();
    journal.sort();
    println!("rebalances and commits:\n{}", journal.join("\n"));
}

/// Checks every instance's log against the acknowledged events.
fn check(acked: &Oracle, handled: &[Handled]) -> Findings {
    let mut findings = Findings::default();
    // Lost and duplicates, across instances (the oracle's own report covers lost).
    let mut count: HashMap<(&str, &str, u64), usize> = HashMap::new();
    for h in handled {
        let n = count.entry((&h.producer, &h.key, h.seq)).or_default();
        *n += 1;
        if *n > 1 {
            findings.duplicates.push(h.clone());
        }
    }
    let acked_lost = {
        let mut merged = Oracle::new();
        for (p, k, s) in acked_events(acked) {
            merged.acknowledged(&p, &k, s);
        }
        for h in handled {
            merged.seen(backbone_testkit::oracle::Seen {
                partition: h.partition,
                offset: h.offset,
                producer: h.producer.clone(),
                key: h.key.clone(),
                seq: h.seq,
            });
        }
        merged.report().lost.len()
    };
    findings.lost = acked_lost;
    // Within each instance: per-key seq strictly increasing; an offset gap on a partition must have
    // been handled by another instance.
    let mut by_instance: HashMap<&str, Vec<&Handled>> = HashMap::new();
    for h in handled {
        by_instance.entry(&h.instance).or_default().push(h);
    }
    let handled_by: HashMap<(i32, i64), HashSet<&str>> = handled.iter().fold(HashMap::new(), |mut m, h| {
        m.entry((h.partition, h.offset)).or_default().insert(&h.instance);
        m
    });
    for (instance, events) in &by_instance {
        let mut last_seq: HashMap<&str, u64> = HashMap::new();
        let mut last_offset: HashMap<i32, i64> = HashMap::new();
        for h in events {
            if let Some(prev) = last_seq.insert(&h.key, h.seq)
                && h.seq <= prev
            {
                findings.reorders.push(format!("{instance}: key {} seq {} after {prev}", h.key, h.seq));
            }
            if let Some(prev) = last_offset.insert(h.partition, h.offset) {
                for gap in prev + 1..h.offset {
                    let elsewhere =
                        handled_by.get(&(h.partition, gap)).is_some_and(|who| !who.contains(instance));
                    if !elsewhere {
                        findings
                            .poll_skips
                            .push(format!("{instance}: partition {} skipped {gap}", h.partition));
                    }
                }
            }
        }
    }
    findings
}

fn acked_events(oracle: &Oracle) -> Vec<(String, String, u64)> {
    // The oracle keeps acknowledgements private; its report of an oracle that saw nothing lists them all.
    oracle.report().lost
}

/// Publishes `count` oracle events in the background, `per_tick` every 10 ms (so they flow while the
/// group changes), and resolves to the oracle of acknowledgements.
fn publish_flow(
    publisher: Publisher,
    topic: TopicSpec,
    count: usize,
    per_tick: usize,
) -> tokio::task::JoinHandle<Oracle> {
    tokio::spawn(async move {
        let oracle = Arc::new(Mutex::new(Oracle::new()));
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut published = 0;
        while published < count {
            tick.tick().await;
            let batch = per_tick.min(count - published);
            let errors =
                common::publish_oracle_range(&publisher, &topic, published, batch, 1_000, &oracle).await;
            assert!(errors.is_empty(), "publishing failed: {errors:?}");
            published += batch;
        }
        Arc::try_unwrap(oracle).expect("sole owner").into_inner().unwrap()
    })
}

fn all_seen(logs: &[&Shared], total: usize, earlier: &HashSet<(String, u64)>) -> bool {
    let mut union: HashSet<(String, u64)> = earlier.clone();
    for log in logs {
        union.extend(log.0.seen.lock().unwrap().iter().cloned());
    }
    union.len() >= total
}

fn spawn_child(estate: &Estate, dir: &Path, instance: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
    let args = [
        estate.config.bootstrap_servers.as_str(),
        estate.spec.name(),
        estate.group.as_str(),
        dir.to_str().expect("utf-8 dir"),
        instance,
    ]
    .join("|");
    common::spawn_test_child("child_instance", CHILD, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_an_instance_killed_mid_stream_loses_nothing_and_the_survivor_takes_over() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let kafka = shared_cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    let estate = estate_for(&unique("r5"), &unique("r5-group"), kafka.bootstrap_servers());
    let running = estate.spec.start(&estate.config).await.expect("start");
    let publisher = running.publisher().clone();
    let context = running.context();
    let changed = Arc::new(Notify::new());

    // Instance a in a child process, b here; both hold partitions before the events flow.
    let (mut a, mut a_says) = spawn_child(&estate, dir.path(), "a");
    common::child_says(&mut a_says, "ASSIGNED").await;
    let b = start_instance(&estate, &context, dir.path(), "b", &changed);
    wait_for(&changed, Duration::from_secs(60), "b is assigned partitions", || !b.log.assigned().is_empty())
        .await;

    const TOTAL: usize = 50_000;
    let flow = publish_flow(publisher.clone(), estate.topic.clone(), TOTAL, 250);
    // Kill a once it has handled 10,000 (b has handled about as many: ~20,000 in all).
    loop {
        let n: usize = common::child_says(&mut a_says, "HANDLED").await.parse().expect("count");
        if n >= 10_000 {
            break;
        }
    }
    a.kill().expect("SIGKILL the child");
    let killed = Instant::now();
    let killed_ms = now_ms();
    a.wait().expect("reap the child");

    // The survivor owns every partition within session.timeout.ms + 5 s.
    let takeover = Duration::from_millis(SESSION_TIMEOUT_MS) + Duration::from_secs(5);
    wait_for(&changed, takeover, "b owns all partitions", || b.log.assigned().len() == PARTITIONS as usize)
        .await;
    let took = killed.elapsed();

    let acked = flow.await.expect("publishing");
    let by_a: HashSet<(String, u64)> =
        read_logs(dir.path()).into_iter().filter(|h| h.instance == "a").map(|h| (h.key, h.seq)).collect();
    wait_for(&changed, Duration::from_secs(120), "every event handled", || all_seen(&[&b.log], TOTAL, &by_a))
        .await;
    b.stop(Duration::from_secs(20)).await;

    let handled = read_logs(dir.path());
    let findings = check(&acked, &handled);
    // The uncommitted window: what a handled in its last auto-commit interval (1 s), with a margin.
    let a_tail = handled.iter().filter(|h| h.instance == "a" && h.millis + 2_000 >= killed_ms).count();
    let a_total = handled.iter().filter(|h| h.instance == "a").count();
    println!(
        "R5: handled {} ({} by a before SIGKILL), duplicates {}, a's last 2 s {}, takeover {:?}",
        handled.len(),
        a_total,
        findings.duplicates.len(),
        a_tail,
        took
    );
    assert_eq!(findings.lost, 0, "nothing acknowledged is lost");
    assert!(
        findings.poll_skips.is_empty(),
        "poll-skips: {:?}",
        &findings.poll_skips[..findings.poll_skips.len().min(5)]
    );
    assert!(
        findings.reorders.is_empty(),
        "per-key order within an instance: {:?}",
        &findings.reorders[..findings.reorders.len().min(5)]
    );
    assert!(
        findings.duplicates.iter().all(|d| d.instance == "b"),
        "only the survivor repeats events (a's uncommitted tail)"
    );
    assert!(
        findings.duplicates.len() <= a_tail,
        "duplicates ({}) within the uncommitted window (a handled {a_tail} in its last 2 s)",
        findings.duplicates.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_graceful_shutdown_mid_stream_then_restart_repeats_nothing() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    common::log_from_env();
    let kafka = shared_cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    let estate = estate_for(&unique("r6"), &unique("r6-group"), kafka.bootstrap_servers());
    let running = estate.spec.start(&estate.config).await.expect("start");
    let publisher = running.publisher().clone();
    let context = running.context();
    let changed = Arc::new(Notify::new());

    let a = start_instance(&estate, &context, dir.path(), "a", &changed);
    wait_for(&changed, Duration::from_secs(60), "a is assigned", || !a.log.assigned().is_empty()).await;
    let b = start_instance(&estate, &context, dir.path(), "b", &changed);
    wait_for(&changed, Duration::from_secs(60), "b is assigned", || !b.log.assigned().is_empty()).await;

    const TOTAL: usize = 20_000;
    let flow = publish_flow(publisher.clone(), estate.topic.clone(), TOTAL, 100);
    let a_log = a.log.clone();
    wait_for(&changed, Duration::from_secs(60), "a handles 4,000", || {
        a_log.0.handled.load(Ordering::SeqCst) >= 4_000
    })
    .await;
    // Graceful shutdown: in-flight events finish, offsets are committed, a leaves the group.
    let stopping = Instant::now();
    a.stop(estate.config.shutdown_timeout + Duration::from_secs(5)).await;
    wait_for(&changed, Duration::from_secs(3), "b takes over within 3 s", || {
        b.log.assigned().len() == PARTITIONS as usize
    })
    .await;
    let takeover = stopping.elapsed();

    // Restart a: the group rebalances again, cooperatively.
    let a2 = start_instance(&estate, &context, dir.path(), "a2", &changed);
    wait_for(&changed, Duration::from_secs(60), "a2 is assigned", || !a2.log.assigned().is_empty()).await;
    let acked = flow.await.expect("publishing");
    wait_for(&changed, Duration::from_secs(120), "every event handled", || {
        all_seen(&[&a_log, &b.log, &a2.log], TOTAL, &HashSet::new())
    })
    .await;
    let logs = [a_log.clone(), b.log.clone(), a2.log.clone()];
    a2.stop(Duration::from_secs(20)).await;
    b.stop(Duration::from_secs(20)).await;

    let handled = read_logs(dir.path());
    let findings = check(&acked, &handled);
    println!(
        "R6: handled {}, duplicates {}, takeover {takeover:?}",
        handled.len(),
        findings.duplicates.len()
    );
    story(&logs, &handled, &findings);
    assert_eq!(findings.lost, 0);
    assert!(
        findings.duplicates.is_empty(),
        "no event handled twice: {:#?}",
        occurrences(&handled, &findings.duplicates[..findings.duplicates.len().min(5)])
    );
    assert!(findings.poll_skips.is_empty(), "{:?}", findings.poll_skips);
    assert!(findings.reorders.is_empty(), "{:?}", findings.reorders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_a_group_1_2_3_1_while_50000_events_flow_loses_nothing_and_keeps_key_order() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    common::log_from_env();
    let kafka = shared_cluster();
    let dir = tempfile::tempdir().expect("temp dir");
    let estate = estate_for(&unique("scale"), &unique("scale-group"), kafka.bootstrap_servers());
    let running = estate.spec.start(&estate.config).await.expect("start");
    let publisher = running.publisher().clone();
    let context = running.context();
    let changed = Arc::new(Notify::new());
    const TOTAL: usize = 50_000;

    let first = start_instance(&estate, &context, dir.path(), "i1", &changed);
    wait_for(&changed, Duration::from_secs(60), "i1 is assigned", || !first.log.assigned().is_empty()).await;
    let flow = publish_flow(publisher.clone(), estate.topic.clone(), TOTAL, 25);
    let logs: Arc<Mutex<Vec<Shared>>> = Arc::new(Mutex::new(vec![first.log.clone()]));
    let total = {
        let logs = logs.clone();
        move || logs.lock().unwrap().iter().map(|l| l.0.handled.load(Ordering::SeqCst)).sum::<usize>()
    };

    wait_for(&changed, Duration::from_secs(60), "10,000 handled", || total() >= 10_000).await;
    let second = start_instance(&estate, &context, dir.path(), "i2", &changed);
    logs.lock().unwrap().push(second.log.clone());
    wait_for(&changed, Duration::from_secs(60), "20,000 handled", || total() >= 20_000).await;
    let third = start_instance(&estate, &context, dir.path(), "i3", &changed);
    logs.lock().unwrap().push(third.log.clone());
    wait_for(&changed, Duration::from_secs(60), "30,000 handled", || total() >= 30_000).await;
    let (i2, i3) = (second.log.assigned().len(), third.log.assigned().len());
    second.stop(Duration::from_secs(20)).await;
    third.stop(Duration::from_secs(20)).await;

    let acked = flow.await.expect("publishing");
    wait_for(&changed, Duration::from_secs(120), "every event handled", || {
        let logs = logs.lock().unwrap();
        all_seen(&logs.iter().collect::<Vec<_>>(), TOTAL, &HashSet::new())
    })
    .await;
    let i1_at_end = first.log.assigned().len();
    first.stop(Duration::from_secs(20)).await;

    let handled = read_logs(dir.path());
    let findings = check(&acked, &handled);
    let per_instance: BTreeSet<(String, usize)> = ["i1", "i2", "i3"]
        .iter()
        .map(|i| ((*i).to_owned(), handled.iter().filter(|h| h.instance == *i).count()))
        .collect();
    println!(
        "scaling: handled {} {per_instance:?}, duplicates {}, i2/i3 held {i2}/{i3} partitions",
        handled.len(),
        findings.duplicates.len()
    );
    story(&logs.lock().unwrap(), &handled, &findings);
    assert_eq!(findings.lost, 0);
    assert!(findings.reorders.is_empty(), "{:?}", findings.reorders);
    assert!(findings.poll_skips.is_empty(), "{:?}", findings.poll_skips);
    assert!(
        findings.duplicates.is_empty(),
        "graceful scaling repeats nothing: {:?}",
        findings.duplicates.len()
    );
    assert_eq!(i1_at_end, PARTITIONS as usize, "back to one instance holding every partition");
    assert!(per_instance.iter().all(|(_, n)| *n > 0), "every instance handled events: {per_instance:?}");
}
