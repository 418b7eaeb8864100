//! Exactly-once consume-transform-produce against real brokers: what a handler publishes and the
//! offsets it consumed commit in one transaction. R14: 100,000 events while the processor is
//! SIGKILLed three times and the transaction coordinator's broker once, on a 3-broker cluster.

use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone::consume::{Consumer, ConsumerHooks, dead_letter_topic};
use backbone::handler::{BoxedHandler, HandlerError, Metadata, State};
use backbone::{Config, Context, Outgoing, Publisher, Service, ServiceSpec, TopicSpec};
use backbone_testkit::oracle::{Oracle, PRODUCER_HEADER, SEQ_HEADER};
use backbone_testkit::{KafkaCluster, shared_kafka, unique};

mod common;

const CHILD: &str = "BACKBONE_EOS_TEST_CHILD";

struct Pipeline {
    config: Config,
    spec: ServiceSpec,
    input: TopicSpec,
    output: TopicSpec,
    group: String,
}

fn pipeline(service: &str, group: &str, bootstrap: &str, replication: i16) -> Pipeline {
    let input = TopicSpec::public(service, "input", 1).partitions(6).build().unwrap();
    let output = TopicSpec::public(service, "output", 1).partitions(6).build().unwrap();
    let dlq = dead_letter_topic(service, &input).unwrap();
    let spec = Service::new(service).owns(&input).owns(&output).owns(&dlq).consumes(&input).spec().unwrap();
    let mut config = common::config(bootstrap);
    if replication == 3 {
        config.profile = backbone::Profile::Production;
    }
    Pipeline { config, spec, input, output, group: group.to_owned() }
}

#[derive(Clone)]
struct Transform {
    output: TopicSpec,
    handled: Arc<AtomicUsize>,
    announce: bool,
}

/// Copies the event to the output topic, key and oracle headers included.
async fn transform(
    meta: Metadata,
    publisher: Publisher,
    State(t): State<Transform>,
) -> Result<(), HandlerError> {
    let producer = meta.header(PRODUCER_HEADER).unwrap_or_default().to_vec();
    let seq = meta.header(SEQ_HEADER).unwrap_or_default().to_vec();
    let headers = [(PRODUCER_HEADER, producer.as_slice()), (SEQ_HEADER, seq.as_slice())];
    let key = meta.key().unwrap_or_default();
    let payload = meta.payload().unwrap_or_default();
    publisher.publish(&t.output, Outgoing::new("Transformed", key, payload).headers(&headers)).await?;
    let n = t.handled.fetch_add(1, Ordering::SeqCst) + 1;
    if t.announce && n % 1_000 == 0 {
        println!("\nHANDLED {n}");
    }
    Ok(())
}

struct Announce;

impl ConsumerHooks for Announce {
    fn assigned(&self, _: &str, partitions: &[i32]) {
        println!("\nASSIGNED {partitions:?}");
    }
}

fn processor(
    p: &Pipeline,
    context: &Context,
    handled: Arc<AtomicUsize>,
    announce: bool,
) -> Consumer<Transform> {
    let state = Transform { output: p.output.clone(), handled, announce };
    let consumer = Consumer::new(context, &p.input, BoxedHandler::named("transform", transform), state)
        .unwrap()
        .in_group(&p.group)
        .exactly_once()
        .client_setting("session.timeout.ms", "6000")
        .client_setting("heartbeat.interval.ms", "1000");
    if announce { consumer.hooks(Announce) } else { consumer }
}

/// Reads the output with `read_committed` until `expected` events (or 120 s), into the oracle.
/// Runs `consumer` until the output holds `expected` events (checked by [`read_output`]), then stops
/// it cleanly; what the output check saw.
async fn process_until_output(
    consumer: Consumer<Transform>,
    p: &Pipeline,
    bootstrap: &str,
    expected: usize,
    oracle: Arc<Mutex<Oracle>>,
) -> usize {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run(async move { stopped.await.unwrap_or_default() }));
    let seen = read_output(p, bootstrap, expected, oracle).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    seen
}

async fn read_output(p: &Pipeline, bootstrap: &str, expected: usize, oracle: Arc<Mutex<Oracle>>) -> usize {
    let mut client = rdkafka::ClientConfig::new();
    client.set("bootstrap.servers", bootstrap).set("isolation.level", "read_committed");
    let report = common::check(client, &p.output, expected, oracle).await;
    println!("output: {report}");
    // Transaction markers take offsets, so offset gaps (poll-skips) are expected on this topic.
    assert!(
        report.lost.is_empty() && report.duplicate.is_empty() && report.reorder.is_empty(),
        "read_committed output equals input, once each, in order per key: {report}"
    );
    report.seen
}

/// The child side of R14: a processor in its own process, killed by the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_processor() {
    let Ok(args) = std::env::var(CHILD) else { return };
    // The child's warnings (and the framework's info) go to stderr, which the parent's output
    // shows: what a stalled processor was waiting for is then on record.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,backbone=info"))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init()
        .ok();
    let [bootstrap, service, group, replication]: [&str; 4] =
        args.split('|').collect::<Vec<_>>().try_into().unwrap();
    let p = pipeline(service, group, bootstrap, replication.parse().unwrap());
    let running = p.spec.start(&p.config).await.expect("start");
    processor(&p, &running.context(), Arc::new(AtomicUsize::new(0)), true)
        .run(std::future::pending())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_outputs_commit_with_the_consumed_offsets() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let kafka = shared_kafka();
    let p = pipeline(&unique("eos"), &unique("eos-group"), kafka.bootstrap_servers(), 1);
    let running = p.spec.start(&p.config).await.unwrap();
    let oracle = Arc::new(Mutex::new(Oracle::new()));
    let errors =
        common::publish_oracle(running.publisher(), &p.input, 6_000, 300, 1_000, &oracle, |_| {}).await;
    assert!(errors.is_empty());
    let handled = Arc::new(AtomicUsize::new(0));
    let consumer = processor(&p, &running.context(), handled.clone(), false);
    let seen = process_until_output(consumer, &p, kafka.bootstrap_servers(), 6_000, oracle).await;
    assert_eq!(seen, 6_000);
    assert_eq!(handled.load(Ordering::SeqCst), 6_000, "no event handled twice without a failure");
}

/// Fails the first `aborts` commits (so their transactions abort), counting the outcomes.
struct AbortFirst {
    aborts: usize,
    commits: AtomicUsize,
    aborted: AtomicUsize,
    committed: AtomicUsize,
}

impl ConsumerHooks for AbortFirst {
    fn before_commit(&self, _: &backbone::publish::Transaction<'_>) -> Result<(), backbone::PublishError> {
        if self.commits.fetch_add(1, Ordering::SeqCst) < self.aborts {
            return Err(backbone::PublishError::Client("refused by the test: abort this transaction".into()));
        }
        Ok(())
    }

    fn transaction_ended(&self, committed: bool) {
        let outcome = if committed { &self.committed } else { &self.aborted };
        outcome.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_aborted_transactions_are_handled_again_even_before_any_commit() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let kafka = shared_kafka();
    let p = pipeline(&unique("eos-abort"), &unique("eos-abort-group"), kafka.bootstrap_servers(), 1);
    let running = p.spec.start(&p.config).await.unwrap();
    let oracle = Arc::new(Mutex::new(Oracle::new()));
    let errors =
        common::publish_oracle(running.publisher(), &p.input, 3_000, 300, 1_000, &oracle, |_| {}).await;
    assert!(errors.is_empty());
    let handled = Arc::new(AtomicUsize::new(0));
    // The first three transactions of the assignment abort: nothing is committed yet, so each
    // partition must rewind to where its assignment started.
    let hooks = Arc::new(AbortFirst {
        aborts: 3,
        commits: AtomicUsize::new(0),
        aborted: AtomicUsize::new(0),
        committed: AtomicUsize::new(0),
    });
    let consumer =
        processor(&p, &running.context(), handled.clone(), false).hooks(SharedHooks(hooks.clone()));
    let seen = process_until_output(consumer, &p, kafka.bootstrap_servers(), 3_000, oracle).await;
    assert_eq!(seen, 3_000);
    let (aborted, committed) = (hooks.aborted.load(Ordering::SeqCst), hooks.committed.load(Ordering::SeqCst));
    let handled = handled.load(Ordering::SeqCst);
    println!("aborted {aborted}, committed {committed}, handled {handled} for 3,000 events");
    assert_eq!(aborted, 3, "the first three transactions aborted");
    assert!(committed >= 1);
    assert!(handled > 3_000, "the aborted transactions' events were handled again ({handled})");
}

/// Lends hooks the test keeps a handle on.
struct SharedHooks<H>(Arc<H>);

impl<H: ConsumerHooks> ConsumerHooks for SharedHooks<H> {
    fn before_commit(
        &self,
        transaction: &backbone::publish::Transaction<'_>,
    ) -> Result<(), backbone::PublishError> {
        self.0.before_commit(transaction)
    }

    fn transaction_ended(&self, committed: bool) {
        self.0.transaction_ended(committed);
    }
}

fn spawn_child(p: &Pipeline, bootstrap: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
    let replication = if p.config.profile == backbone::Profile::Production { "3" } else { "1" };
    common::spawn_test_child(
        "child_processor",
        CHILD,
        &[bootstrap, p.spec.name(), p.group.as_str(), replication].join("|"),
    )
}

/// Blocks until the child prints a line containing `what` (or panics after 120 s).
fn wait_line(lines: &std::sync::mpsc::Receiver<String>, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| panic!("the child never printed {what}"));
        eprintln!("child: {line}");
        if line.contains(what) {
            return;
        }
    }
}

fn signal(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill {signal}");
}

/// R14's zombie: a processor paused (SIGSTOP) past its session timeout while a successor takes its
/// partitions over, then resumed (SIGCONT) with its transaction still open. Its late commit is
/// fenced (KIP-447: the group's generation moved on), so the `read_committed` output holds every
/// event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r14_a_zombie_processor_resumed_after_its_successor_took_over_commits_nothing() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let kafka = shared_kafka();
    let bootstrap = kafka.bootstrap_servers().to_owned();
    let p = pipeline(&unique("r14-zombie"), &unique("r14-zombie-group"), &bootstrap, 1);
    let running = p.spec.start(&p.config).await.unwrap();
    let total = 12_000;
    let oracle = Arc::new(Mutex::new(Oracle::new()));
    let errors =
        common::publish_oracle(running.publisher(), &p.input, total, 300, 2_000, &oracle, |_| {}).await;
    assert!(errors.is_empty(), "{errors:?}");

    // The zombie: stopped mid-stream, with a transaction open.
    let (mut zombie, lines) = spawn_child(&p, &bootstrap);
    let lines = tokio::task::spawn_blocking(move || {
        wait_handled(&lines, 2_000);
        lines
    })
    .await
    .unwrap();
    signal(&zombie, "-STOP");

    // Its successor takes every partition once the zombie's session (6 s) has expired.
    let (mut successor, successor_lines) = spawn_child(&p, &bootstrap);
    let successor_lines = tokio::task::spawn_blocking(move || {
        wait_handled(&successor_lines, 1_000);
        successor_lines
    })
    .await
    .unwrap();

    // The zombie wakes with its transaction open: its commit is refused, and it joins again.
    signal(&zombie, "-CONT");
    let lines = tokio::task::spawn_blocking(move || {
        wait_line(&lines, "ASSIGNED");
        lines
    })
    .await
    .unwrap();
    for child in [&mut zombie, &mut successor] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    drop((lines, successor_lines));

    // A last life here until the output is complete: once each, in order.
    let handled = Arc::new(AtomicUsize::new(0));
    let consumer = processor(&p, &running.context(), handled, false);
    let seen = process_until_output(consumer, &p, &bootstrap, total, oracle).await;
    assert_eq!(seen, total);
}

/// Blocks until the child prints `HANDLED n` with n ≥ `at_least`; panics if it prints nothing for
/// 180 s (it reports every 1,000 events: a slow child that moves is waited for, a stalled one not).
fn wait_handled(lines: &std::sync::mpsc::Receiver<String>, at_least: usize) {
    loop {
        let line = lines.recv_timeout(Duration::from_secs(180)).expect("the child reports progress");
        eprintln!("child: {line}");
        if let Some((_, n)) = line.split_once("HANDLED ")
            && n.trim().parse::<usize>().unwrap() >= at_least
        {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r14_exactly_once_survives_processor_kills_and_a_coordinator_kill() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let mut cluster = KafkaCluster::start_three().expect("three brokers");
    let bootstrap = cluster.bootstrap_servers().to_owned();
    let p = pipeline(&unique("r14"), &unique("r14-group"), &bootstrap, 3);
    let running = p.spec.start(&p.config).await.unwrap();
    // R14's 100,000 events: about 8 minutes in a debug build on two busy cores (487 s measured);
    // `BACKBONE_R14_EVENTS=20000` runs a smaller one (kills still after ≥ 20 % each).
    let total: usize =
        std::env::var("BACKBONE_R14_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let oracle = Arc::new(Mutex::new(Oracle::new()));
    let errors =
        common::publish_oracle(running.publisher(), &p.input, total, 1_000, 5_000, &oracle, |_| {}).await;
    assert!(errors.is_empty(), "{errors:?}");

    // Three processor lives, each SIGKILLed after handling ≥ 20 % of the input; during the second,
    // the brokers leading the transaction log are killed and restarted.
    for life in 0..3 {
        let (mut child, lines) = spawn_child(&p, &bootstrap);
        let lines = tokio::task::spawn_blocking(move || {
            wait_handled(&lines, total / 5);
            lines
        })
        .await
        .unwrap();
        if life == 1 {
            let mut leaders: Vec<i32> =
                (0..4).map(|p| cluster.leader_of("__transaction_state", p).expect("coordinator")).collect();
            leaders.sort_unstable();
            leaders.dedup();
            for leader in leaders {
                cluster.kill_broker(leader).expect("kill a transaction coordinator");
                cluster.restart_broker(leader).expect("restart it");
                // One broker down at a time: the next kill waits until this one has caught up.
                cluster
                    .wait_in_sync(&["__transaction_state", "__consumer_offsets"], Duration::from_secs(120))
                    .expect("the restarted broker catches up");
            }
            let _ = tokio::task::spawn_blocking(move || wait_handled(&lines, total / 5 + total / 20)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // A last life, here, until the output is complete.
    let handled = Arc::new(AtomicUsize::new(0));
    let consumer = processor(&p, &running.context(), handled, false);
    let seen = process_until_output(consumer, &p, &bootstrap, total, oracle).await;
    assert_eq!(seen, total);
}
