//! R19 on a real broker: a service told to stop while every broker is gone and a partition is
//! stuck on an error (its dead letter cannot be written) still stops within its shutdown budget,
//! and nothing panics. The test owns its runtime, so the time measured includes the runtime's own
//! shutdown, as when a service's `main` returns: work left on the runtime's blocking pool would
//! hold it (and the process) for as long as librdkafka waits for brokers that are gone.

use std::time::{Duration, Instant};

use backbone::app::App;
use backbone::handler::{HandlerError, Metadata, State};
use backbone::{Outgoing, TopicSpec};
use backbone_testkit::{KafkaCluster, unique};
use tokio::sync::watch;

mod common;

#[derive(Clone)]
struct Stuck {
    /// Set by the handler once it holds an event.
    entered: watch::Sender<usize>,
    /// Set by the test once the broker is gone: the handler then fails its event.
    gone: watch::Receiver<bool>,
}

/// Fails every event permanently, once the broker is gone: its dead letter cannot be written.
async fn fail_when_gone(_: Metadata, State(s): State<Stuck>) -> Result<(), HandlerError> {
    s.entered.send_modify(|n| *n += 1);
    let mut gone = s.gone.clone();
    let _ = gone.wait_for(|g| *g).await;
    Err(HandlerError::permanent("refused by the test"))
}

#[test]
fn r19_stop_with_every_broker_gone_and_a_partition_stuck_ends_within_the_budget() {
    let mut cluster = KafkaCluster::start_single().expect("a broker");
    let budget = Duration::from_secs(5);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let service = unique("r19");
    let topic = TopicSpec::public(&service, "events", 1).partitions(3).build().unwrap();
    let mut config = common::config(cluster.bootstrap_servers());
    config.shutdown_timeout = budget;
    let (entered, mut entered_seen) = watch::channel(0);
    let (gone, gone_seen) = watch::channel(false);
    let state = Stuck { entered, gone: gone_seen };

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (started, listener) = runtime.block_on(async {
        let started = App::<Stuck>::new(&service)
            .owns(&topic)
            .consume(&topic, fail_when_gone)
            .start(&config, state)
            .await
            .expect("starts");
        tokio::time::timeout(Duration::from_secs(60), started.ready()).await.expect("ready within 60 s");
        // One partition's task holds an event; the other two are idle (they stop at once).
        started
            .publisher()
            .publish(&topic, Outgoing::new("Event", b"key", b"payload"))
            .await
            .expect("published");
        tokio::time::timeout(Duration::from_secs(60), entered_seen.wait_for(|n| *n >= 1))
            .await
            .expect("the handler holds the event")
            .unwrap();
        (started, tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
    });
    let server = runtime.spawn(started.serve(listener, async move {
        let _ = stopped.await;
    }));

    // Every broker gone; then the handlers fail, and their dead letters cannot be written.
    let id = cluster.broker_ids()[0];
    cluster.kill_broker(id).expect("SIGKILL the broker");
    gone.send_replace(true);

    let stopping = Instant::now();
    stop.send(()).unwrap();
    let outcome = runtime.block_on(async { tokio::time::timeout(budget * 4, server).await });
    drop(runtime);
    let took = stopping.elapsed();
    println!("stopped in {took:?} (budget {budget:?}): {outcome:?}");
    let outcome = outcome.expect("serve returned").expect("serve did not panic");
    if let Err(e) = &outcome {
        assert!(!e.to_string().contains("panicked"), "no task panicked: {e}");
    }
    assert!(took <= budget + Duration::from_secs(5), "stopped in {took:?}, budget {budget:?} + 5 s");
}
