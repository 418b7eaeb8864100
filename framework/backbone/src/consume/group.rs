//! The group's context: starts a task per assigned partition, finishes and commits revoked
//! partitions before they move on, reports health.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::eos::Eos;
use super::hooks::ConsumerHooks;
use super::partition::{Cursor, Partition, SetOnDrop, TaskEnded};
use super::worker::Worker;
use crate::health::HealthState;
use crate::native::{PartitionQueue, QueueWakers, WithQueueWakers};

/// The consumer's context: starts a task per assigned partition on its own queue, finishes and
/// commits revoked partitions before they move, reports health.
pub(super) struct GroupContext<S: Clone + Send + Sync + 'static> {
    pub(super) worker: OnceLock<Arc<Worker<S, Self>>>,
    pub(super) eos: Option<Arc<Eos>>,
    pub(super) topic: String,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) partitions: Mutex<HashMap<i32, Partition>>,
    /// Tasks of revoked partitions that did not finish in time and were aborted: a task aborted
    /// while it runs ends only at its next await, so a successor on the same partition waits for it.
    pub(super) aborted: Mutex<HashMap<i32, JoinHandle<()>>>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) budget: Duration,
    pub(super) hooks: Arc<dyn ConsumerHooks>,
    pub(super) health: HealthState,
    pub(super) component: String,
    pub(super) wakers: QueueWakers,
    /// Lag gauges, the group's counters and the readiness lag budget.
    pub(super) lag: super::lag::Lag,
}

impl<S: Clone + Send + Sync + 'static> WithQueueWakers for GroupContext<S> {
    fn queue_wakers(&self) -> &QueueWakers {
        &self.wakers
    }
}

impl<S: Clone + Send + Sync + 'static> GroupContext<S> {
    pub(super) fn lock_partitions(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Partition>> {
        self.partitions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn lock_aborted(&self) -> std::sync::MutexGuard<'_, HashMap<i32, JoinHandle<()>>> {
        self.aborted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Splits each of `partitions` off onto a queue of its own and starts its task.
    fn start_partitions(&self, partitions: &[i32]) {
        let Some(worker) = self.worker.get() else { return };
        let Some(stream) = worker.consumer.upgrade() else { return };
        let mut tasks = self.lock_partitions();
        for &partition in partitions {
            let Some(queue) = PartitionQueue::split(&stream, &self.topic, partition) else {
                tracing::warn!(
                    topic = self.topic,
                    partition,
                    "partition queue not split; events go to the group's queue"
                );
                continue;
            };
            let (revoke, revoked) = watch::channel(false);
            let ended = Arc::new(TaskEnded::default());
            let cursor = Arc::new(Cursor::new());
            if let Some(eos) = &self.eos {
                eos.cursors.lock().unwrap_or_else(PoisonError::into_inner).insert(partition, cursor.clone());
            }
            // A partition given back to us waits for its earlier task (if any) to end, an aborted
            // one included.
            let earlier =
                tasks.remove(&partition).map(|p| p.task).or_else(|| self.lock_aborted().remove(&partition));
            let task = self.runtime.spawn(worker.clone().run(
                queue,
                earlier,
                self.stop.clone(),
                revoked,
                (cursor.clone(), SetOnDrop(ended.clone())),
            ));
            tasks.insert(partition, Partition { revoke, task, ended, cursor });
        }
    }
}

impl<S: Clone + Send + Sync + 'static> ClientContext for GroupContext<S> {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.lag.update(&self.topic, &statistics, &self.lock_partitions());
        self.hooks.statistics(&statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(code) = error.rdkafka_error_code() {
            self.wakers.refusal().note(code);
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.degrade(&self.component, format!("brokers unreachable: {reason}"));
        } else {
            tracing::warn!(%error, reason, "consumer client error");
        }
    }
}

impl<S: Clone + Send + Sync + 'static> ConsumerContext for GroupContext<S> {
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &rdkafka::TopicPartitionList,
    ) {
        let committed: Vec<(i32, i64)> = offsets
            .elements_for_topic(&self.topic)
            .iter()
            .filter_map(|e| Some((e.partition(), e.offset().to_raw()?)))
            .collect();
        tracing::debug!(topic = self.topic, ?committed, ?result, "offset commit");
        let asked = self.lag.commit_asked.lock().unwrap_or_else(PoisonError::into_inner).take();
        match &result {
            Ok(()) => {
                if let Some(asked) = asked {
                    self.lag.group_metrics.commit_duration.record(asked.elapsed());
                }
            }
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(_) => self.lag.group_metrics.commit_failures.increment(1),
        }
        if result.is_ok() && !committed.is_empty() {
            self.hooks.committed(&self.topic, &committed);
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            // Start offsets go into the assignment itself: fetching starts there, never elsewhere.
            let elements = list.elements_for_topic(&self.topic);
            let partitions: Vec<i32> = elements.iter().map(|e| e.partition()).collect();
            let starts = self.hooks.start_offsets(&self.topic, &partitions);
            for mut element in elements {
                if let Some((_, offset)) = starts.iter().find(|(p, _)| *p == element.partition())
                    && let Err(e) = element.set_offset(*offset)
                {
                    tracing::warn!(error = %e, partition = element.partition(), "start offset not set");
                }
            }
            // Each partition's queue is split off (and its task started) before the assignment
            // takes effect: librdkafka then never forwards a fetched message of it to the group's
            // queue, so every event of a partition is handled by that partition's task, in order.
            self.start_partitions(&partitions);
            return;
        }
        let Rebalance::Revoke(list) = rebalance else { return };
        self.lag.group_metrics.rebalances.increment(1);
        let revoked: Vec<i32> = list.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect();
        // Let the revoked partitions finish their events in hand (within the shutdown budget), so
        // their offsets are stored and committed before the next owner starts: no duplicates.
        let deadline = Instant::now() + self.budget;
        let mut partitions = self.lock_partitions();
        for partition in &revoked {
            if let Some(p) = partitions.get(partition) {
                p.revoke.send_replace(true);
            }
        }
        for partition in &revoked {
            if let Some(p) = partitions.remove(partition)
                && !p.ended.wait_until(deadline)
            {
                tracing::warn!(
                    topic = self.topic,
                    partition,
                    offset = p.cursor.next.load(Ordering::Acquire),
                    "revoked partition did not finish its event in hand in time; it will be handled again"
                );
                p.task.abort();
                // Kept until it has ended: a successor on this partition waits for it.
                self.lock_aborted().insert(*partition, p.task);
            }
        }
        drop(partitions);
        if let Some(eos) = &self.eos {
            // Commit the open transaction (every partition's events in hand finish first), so the
            // next owner starts right after what this one produced.
            let _gate = eos.write_blocking();
            if let Err(e) = eos.commit_locked(consumer) {
                tracing::warn!(error = %e, "transaction on revocation");
            }
            eos.forget(&revoked);
        } else {
            commit_revoked(consumer, &self.topic, &revoked, deadline);
        }
        tracing::info!(topic = self.topic, ?revoked, "partitions revoked");
        self.hooks.revoked(&self.topic, &revoked);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(list) = rebalance else { return };
        let assigned: Vec<i32> = list.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect();
        tracing::info!(topic = self.topic, ?assigned, "partitions assigned");
        self.lag.group_metrics.rebalances.increment(1);
        self.lag.group_metrics.assigned.set(self.lock_partitions().len() as f64);
        self.hooks.assigned(&self.topic, &assigned);
        self.health.recover(&self.component);
        self.health.ready(&self.component);
    }
}

/// Commits the stored offsets before `revoked` partitions move on, retrying a retriable failure until
/// `deadline`: once they are unassigned their stored offsets are gone, and the next owner (possibly
/// this instance again) would repeat what was handled since the last commit.
fn commit_revoked<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    revoked: &[i32],
    deadline: Instant,
) {
    let mut attempt = 0u32;
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        attempt += 1;
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => return,
            // Nothing stored since the last commit: nothing to lose.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => return,
            Err(e) if is_retriable_commit(&e) && Instant::now() < deadline => {
                tracing::info!(topic, ?revoked, attempt, error = %e, "commit on revocation failed; retrying");
                std::thread::sleep(backoff.next_delay());
            }
            Err(e) => {
                tracing::warn!(
                    topic,
                    ?revoked,
                    attempt,
                    error = %e,
                    "commit on revocation failed: events handled since the last commit will be handled again"
                );
                return;
            }
        }
    }
}

/// Whether a failed commit may succeed if tried again.
fn is_retriable_commit(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::RebalanceInProgress
                | C::RequestTimedOut
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
                | C::NetworkException
                | C::OperationTimedOut
                | C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::WaitingForCoordinator
        )
    )
}
