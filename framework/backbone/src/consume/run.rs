//! Running a [`Consumer`]: joining the group, handing partitions to their tasks, shutting down within
//! the budget, and joining again after an exactly-once producer was fenced.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::blocking::off_runtime;
use super::builder::{ConsumeError, Consumer};
use super::eos::Eos;
use super::group::GroupContext;
use super::partition::Partition;
use super::worker::Worker;
use crate::health::HealthState;
use crate::native::QueueWakers;

impl<S: Clone + Send + Sync + 'static> Consumer<S> {
    /// Joins the group and handles events until `shutdown` completes (see [`crate::shutdown_signal`]
    /// for SIGTERM and Ctrl-C); then stops fetching, lets the events in hand finish within the
    /// shutdown budget (`BACKBONE_SHUTDOWN_TIMEOUT_MS`), commits and leaves the group. The whole
    /// shutdown keeps within the budget whatever Kafka does: what is not done by then is logged
    /// (partition and offset) and left for the next owner.
    ///
    /// Exactly once: if the transactional producer is fenced or fails fatally (the broker aborted a
    /// transaction and bumped the producer's epoch, say), the consumer does not stop for good. Its
    /// open transaction is lost (never committed), so it leaves the group, waits a backoff (2 s
    /// doubling to 30 s, with jitter; health degraded meanwhile) and joins again with a new producer and epoch;
    /// its partitions resume from the last committed offsets.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumeError> {
        let health = self.context.health().clone();
        let component = format!("consumer:{}", self.group);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut failures = 0u32;
        let mut rejoin = crate::backoff::Backoff::new(Duration::from_secs(2), Duration::from_secs(30));
        loop {
            let started = Instant::now();
            match self.run_once(&health, &component, shutdown.as_mut()).await? {
                Ended::Shutdown => break,
                Ended::Refused(code) => {
                    let error = ConsumeError::NotAuthorized {
                        principal: self.context.config().security.principal(),
                        topic: self.topic.name().to_owned(),
                        group: self.group.clone(),
                        code,
                    };
                    tracing::error!(%error, "consumer refused by the brokers");
                    health.degrade(&component, error.to_string());
                    return Err(error);
                }
                Ended::Fenced => {
                    if started.elapsed() > Duration::from_secs(60) {
                        failures = 0;
                        rejoin.reset();
                    }
                    failures += 1;
                    let backoff = rejoin.next_delay();
                    tracing::warn!(
                        topic = self.topic.name(),
                        group = self.group,
                        failures,
                        ?backoff,
                        "exactly once: the transactional producer failed fatally; joining again with a \
                         new producer, from the last committed offsets"
                    );
                    tokio::select! {
                        () = shutdown.as_mut() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
        health.ready(&component);
        Ok(())
    }

    /// One membership of the group: from joining to leaving.
    async fn run_once(
        &self,
        health: &HealthState,
        component: &str,
        mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Ended, ConsumeError> {
        health.starting(component, format!("waiting for partitions of `{}`", self.topic.name()));
        let (strays, mut stray) = mpsc::unbounded_channel();
        let (stopping, stop) = watch::channel(false);
        let eos = match self.transaction_size {
            None => None,
            Some(size) => {
                let id = self
                    .transactional_id
                    .clone()
                    .unwrap_or_else(|| format!("{}.{}", self.group, uuid::Uuid::new_v4().simple()));
                let publisher = self.context.transactional_publisher(&id).await.map_err(|e| {
                    ConsumeError::Client { topic: self.topic.name().to_owned(), reason: e.to_string() }
                })?;
                tracing::info!(topic = self.topic.name(), transactional_id = id, "exactly once");
                let (timeout, every) = (self.context.config().delivery_timeout, self.transaction_interval);
                let hooks = self.hooks.clone();
                Some(Arc::new(
                    Eos::new(publisher, self.topic.name(), (size, every), timeout, hooks)
                        .counting(&self.group),
                ))
            }
        };
        let context = GroupContext {
            worker: OnceLock::new(),
            eos: eos.clone(),
            topic: self.topic.name().to_owned(),
            runtime: tokio::runtime::Handle::current(),
            partitions: Mutex::new(HashMap::new()),
            aborted: Mutex::new(HashMap::new()),
            stop: stop.clone(),
            budget: self.shutdown_budget,
            hooks: self.hooks.clone(),
            health: health.clone(),
            component: component.to_owned(),
            wakers: QueueWakers::default(),
            lag: super::lag::Lag::new(health, self.topic.name(), &self.group, self.max_ready_lag),
        };
        let client = |e: KafkaError| ConsumeError::Client {
            topic: self.topic.name().to_owned(),
            reason: e.to_string(),
        };
        let consumer: Arc<StreamConsumer<GroupContext<S>>> = Arc::new(
            crate::observe::with_statistics(self.client.clone())
                .set("group.id", &self.group)
                .set("partition.assignment.strategy", "cooperative-sticky")
                // Offsets are committed by `commit_stored` (or in transactions): the commit's
                // latency is then measured from when it was asked for.
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("isolation.level", "read_committed")
                .set("queued.max.messages.kbytes", self.queue_kbytes.to_string())
                .set("queued.min.messages", self.queue_messages.to_string())
                .set("max.partition.fetch.bytes", (self.queue_kbytes * 1024).min(1 << 20).to_string())
                // librdkafka waits a second by default before fetching again for a partition whose
                // queue was full: a slow handler's partition would then idle after catching up.
                .set("fetch.queue.backoff.ms", "10")
                .create_with_context(context)
                .map_err(client)?,
        );
        // With exactly once, the handler and the dead letters publish inside the transaction.
        let publisher =
            eos.as_ref().map_or_else(|| self.context.publisher().clone(), |e| e.publisher.clone());
        let worker = Arc::new(Worker {
            service: self.service(&publisher),
            state: self.state.clone(),
            publisher,
            permits: Semaphore::new(self.concurrency),
            consumer: Arc::downgrade(&consumer),
            eos: eos.clone(),
            metrics: crate::observe::HandlerMetrics::new(
                health.metrics(),
                self.topic.name(),
                &self.group,
                self.handler.name(),
            ),
        });
        consumer.context().worker.set(worker.clone()).ok();
        consumer.subscribe(&[self.topic.name()]).map_err(client)?;

        // The group's own queue (rebalances, errors) is served on a thread of its own: the rebalance
        // callback blocks there while revoked partitions finish their events in hand, which must not
        // stall the async workers (a current-thread runtime would deadlock).
        let driver = std::thread::Builder::new()
            .name(format!("backbone-group-{}", self.topic.name()))
            .spawn({
                let consumer = consumer.clone();
                let mut stop = stop.clone();
                move || {
                    futures::executor::block_on(async {
                        loop {
                            tokio::select! {
                                biased;
                                _ = stop.wait_for(|s| *s) => break,
                                message = consumer.recv() => match message {
                                    // Only if a partition's queue could not be split off (warned).
                                    Ok(message) => { strays.send(message.detach()).ok(); }
                                    Err(e) => {
                                        tracing::warn!(error = %e, "consumer error");
                                        if let Some(code) = e.rdkafka_error_code() {
                                            consumer.context().wakers.refusal().note(code);
                                        }
                                    }
                                },
                            }
                        }
                    });
                }
            })
            .map_err(|e| ConsumeError::Client {
                topic: self.topic.name().to_owned(),
                reason: e.to_string(),
            })?;

        let mut committer = match eos.clone() {
            Some(eos) => tokio::spawn(eos.committing(consumer.clone(), stop.clone())),
            None => tokio::spawn(commit_stored(consumer.clone(), stop.clone())),
        };
        let fatal = eos.clone();
        let fenced = async move {
            match fatal {
                Some(eos) => eos.fatal.notified().await,
                None => std::future::pending().await,
            }
        };
        let mut fenced = std::pin::pin!(fenced);
        let refusal = consumer.context().wakers.refusal().clone();
        let refused = refusal.wait();
        let mut refused = std::pin::pin!(refused);
        let ended = loop {
            tokio::select! {
                biased;
                () = shutdown.as_mut() => break Ended::Shutdown,
                () = &mut fenced => break Ended::Fenced,
                code = &mut refused => break Ended::Refused(code),
                Some(message) = stray.recv() => worker.handle_stray(&message).await,
            }
        };

        // Stop fetching; the events in hand get the shutdown budget to finish, less a reserve for
        // committing and leaving the group. Everything below keeps within the budget.
        let deadline = tokio::time::Instant::now() + self.shutdown_budget;
        let reserve = (self.shutdown_budget / 4).min(Duration::from_secs(5));
        stopping.send_replace(true);
        let partitions: Vec<(i32, Partition)> = consumer.context().lock_partitions().drain().collect();
        let aborted: Vec<JoinHandle<()>> =
            consumer.context().lock_aborted().drain().map(|(_, task)| task).collect();
        let (mut tasks, cursors): (Vec<_>, Vec<_>) =
            partitions.into_iter().map(|(partition, p)| (p.task, (partition, p.cursor))).unzip();
        tasks.extend(aborted);
        let finishing = futures::future::join_all(tasks.iter_mut());
        if tokio::time::timeout_at(deadline - reserve, finishing).await.is_err() {
            // Their offsets are not stored: the next owner handles them again.
            let unfinished: Vec<(i32, i64)> = tasks
                .iter()
                .zip(&cursors)
                .filter(|(task, _)| !task.is_finished())
                .map(|(_, (partition, cursor))| (*partition, cursor.next.load(Ordering::Acquire)))
                .collect();
            tracing::warn!(
                topic = self.topic.name(),
                ?unfinished,
                "shutdown budget spent with events in hand at (partition, offset; -1: the first); \
                 they will be handled again by the next owner"
            );
            // A handle that already returned its output must not be polled again.
            let left: Vec<JoinHandle<()>> = tasks.into_iter().filter(|t| !t.is_finished()).collect();
            left.iter().for_each(JoinHandle::abort);
            let _ = tokio::time::timeout_at(deadline - reserve / 2, futures::future::join_all(left)).await;
        }
        if tokio::time::timeout_at(deadline - reserve / 2, &mut committer).await.is_err() {
            committer.abort();
        }
        let topic = self.topic.name().to_owned();
        let last = if ended == Ended::Fenced { None } else { eos.clone() };
        let exactly_once = eos.is_some();
        drop(eos);
        // Committing and closing wait for the broker: they run on a thread of their own, which the
        // budget does not wait for past its end (a blocking task would hold the runtime's shutdown,
        // and so the process, for as long as librdkafka waits for brokers that are gone).
        let closing = off_runtime(move || {
            driver.join().ok();
            if let Some(eos) = last {
                let _gate = eos.write_blocking();
                if let Err(e) = eos.commit_locked(&*consumer) {
                    tracing::warn!(error = %e, "final transaction");
                }
            } else if !exactly_once && let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                // Nothing stored since the last commit is also an error here; not a loss.
                tracing::debug!(error = %e, "final commit");
            }
            // Dropping the last reference closes the consumer: it leaves the group, so the others take
            // over at once. Events that handlers kept past their call hold the consumer too (their
            // bytes are its buffers): then it closes when the last of them is dropped.
            if Arc::strong_count(&consumer) > 1 {
                tracing::warn!(
                    topic,
                    "events kept past their handler still hold the consumer; it leaves the group when \
                     they are dropped (copy what you keep: `IncomingEvent::clone`)"
                );
            }
            drop(consumer);
            tracing::info!(topic, "consumer closed");
        });
        if tokio::time::timeout_at(deadline, closing).await.is_err() {
            tracing::warn!(
                topic = self.topic.name(),
                budget = ?self.shutdown_budget,
                "the consumer did not close within the shutdown budget (brokers unreachable?); left \
                 behind: the group's coordinator ends its membership after the session timeout"
            );
        }
        drop(worker);
        Ok(ended)
    }
}

/// How one membership of the group ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// The shutdown future completed.
    Shutdown,
    /// Exactly once: the transactional producer failed fatally.
    Fenced,
    /// The brokers refused the principal (an authorization error): permanent.
    Refused(rdkafka::types::RDKafkaErrorCode),
}

/// How often an at-least-once consumer commits the offsets of the events it has handled.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// At least once: commits the stored offsets (those of handled events) every [`COMMIT_INTERVAL`],
/// asynchronously, until the consumer stops. The group's commit callback counts failures and
/// records each commit's latency from the moment the oldest commit in flight was asked for. A
/// commit with nothing new to commit costs no request.
async fn commit_stored<S: Clone + Send + Sync + 'static>(
    consumer: Arc<StreamConsumer<GroupContext<S>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(COMMIT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let asked = &consumer.context().lag.commit_asked;
        asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert_with(Instant::now);
        if let Err(e) = crate::native::commit_stored(&consumer) {
            asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            tracing::debug!(error = %e, "offset commit not sent");
        }
    }
}
