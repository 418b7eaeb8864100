//! A partition's task: takes its events from its queue and runs them, in order, through the
//! per-event service.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::consumer::{Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tower::{Service, ServiceExt as _};

use super::eos::Eos;
use super::partition::{Cursor, SetOnDrop};
use super::stack::Stack;
use crate::handler::{Env, HandlerContext, IncomingEvent};
use crate::native::PartitionQueue;
use crate::publish::Publisher;

/// How many events in a row a busy partition handles in the same handler slot before it gives the
/// slot back to partitions waiting for one.
const SLOT_STREAK: u32 = 64;

/// What every partition's task shares; `C` is the consumer's context (the group's,
/// [`super::group::GroupContext`]).
pub(super) struct Worker<S: Clone + Send + Sync + 'static, C: ConsumerContext + 'static> {
    pub(super) service: Stack<S>,
    pub(super) state: S,
    pub(super) publisher: Publisher,
    pub(super) permits: Semaphore,
    pub(super) consumer: Weak<StreamConsumer<C>>,
    pub(super) eos: Option<Arc<Eos>>,
    /// The handler's counters and histogram; each partition's task clones them once.
    pub(super) metrics: crate::observe::HandlerMetrics,
}

impl<S: Clone + Send + Sync + 'static, C: ConsumerContext + 'static> Worker<S, C> {
    /// Handles one partition's events in order until it is revoked or the consumer stops.
    pub(super) async fn run(
        self: Arc<Self>,
        queue: PartitionQueue,
        earlier: Option<JoinHandle<()>>,
        mut stop: watch::Receiver<bool>,
        mut revoked: watch::Receiver<bool>,
        (cursor, ended): (Arc<Cursor>, SetOnDrop),
    ) {
        let _ended = ended;
        if let Some(earlier) = earlier {
            earlier.await.ok();
        }
        let Some(consumer) = self.consumer.upgrade() else { return };
        // Each partition has its own copy of the layers, one environment (state, publisher) and one
        // topic name for all its events.
        let mut service = self.service.clone();
        let env = self.env();
        let mut topic: Option<Arc<str>> = None;
        // The handler's metric handles, made once per consumer: an atomic addition per event, no
        // lookup, no lock.
        let metrics = &self.metrics;
        // Made once, polled on every wait: no waiter registration per event. While neither has
        // changed (an atomic load on these clones), events go first and `stopping` is polled only
        // when the queue is empty.
        let (stop_seen, revoked_seen) = (stop.clone(), revoked.clone());
        let quiet = move || {
            matches!(stop_seen.has_changed(), Ok(false)) && matches!(revoked_seen.has_changed(), Ok(false))
        };
        let stopping = async {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = revoked.wait_for(|r| *r) => {}
            }
        };
        let mut stopping = std::pin::pin!(stopping);
        // Events taken from the queue (up to `native::BATCH`), handled one by one.
        let mut batch = VecDeque::with_capacity(crate::native::BATCH);
        // Exactly once: rewinds seen when the batch was taken.
        let mut rewinds = cursor.rewinds();
        // A handler slot (of `concurrency`), kept from one event to the next while events are
        // waiting, for up to `SLOT_STREAK` events; given back before the task waits for more, so an
        // idle partition holds none.
        let mut slot = None;
        let mut streak = 0;
        // Exactly once: whether this task counts as busy in the transaction (idle ones let it
        // commit early); given back however the task ends.
        let mut activity = Activity { eos: self.eos.as_deref(), busy: false };
        loop {
            if !quiet() && futures::poll!(stopping.as_mut()).is_ready() {
                return;
            }
            if batch.is_empty() {
                // Read before taking: a rewind after this makes the batch suspect.
                rewinds = cursor.rewinds();
                if !queue.take(&mut batch) {
                    (slot, streak) = (None, 0);
                    activity.idle();
                    tokio::select! {
                        biased;
                        () = &mut stopping => return,
                        () = std::future::poll_fn(|cx| queue.poll_take(cx, &mut batch)) => {}
                    }
                }
            }
            let Some(held) = batch.pop_front() else { continue };
            activity.busy();
            let (partition, offset) = (held.partition(), held.offset());
            if !cursor.admits(offset) {
                tracing::debug!(partition, offset, "event handed out again by librdkafka; skipped");
                continue;
            }
            let topic = topic.get_or_insert_with(|| Arc::from(held.topic()));
            metrics.consumed.increment(1);
            if let Some(at) = held.timestamp() {
                cursor.taken_at.store(at, std::sync::atomic::Ordering::Release);
            }
            if streak >= SLOT_STREAK {
                // Let the partitions waiting for a slot have one (the semaphore is fair).
                (slot, streak) = (None, 0);
            }
            if slot.is_none() {
                let Ok(permit) = self.permits.acquire().await else { return };
                slot = Some(permit);
            }
            streak += 1;
            // Kept in place, not copied; the runtime keeps a reference to store its offset after.
            let event = Arc::new(IncomingEvent::held(topic, held));
            if let Some(eos) = &self.eos {
                // In the open transaction: the committer waits for events in hand.
                let _in_transaction = eos.gate.read().await;
                if cursor.rewinds() != rewinds {
                    // An aborted transaction rewound the partition while this batch was being
                    // taken or handled: it may be from before the rewind. Seek again from here, so
                    // every event taken after this comes from the rewound position, and let these
                    // come again.
                    batch.clear();
                    if let Err(e) = consumer.seek(topic, partition, cursor.resume_at(), Duration::ZERO) {
                        tracing::warn!(partition, error = %e, "rewinding after an aborted transaction");
                    }
                    continue;
                }
                eos.started(partition, offset);
                let started = std::time::Instant::now();
                let outcome = self.handle(&mut service, &env, event.clone()).await;
                metrics.duration.record(started.elapsed());
                let failed = match outcome {
                    Ok(()) => {
                        metrics.handled.increment(1);
                        cursor.advance(offset);
                        eos.handled(partition, offset);
                        continue;
                    }
                    Err(kind) => kind,
                };
                // Neither handled nor dead-lettered (the transaction broke under it): the open
                // transaction must not commit past it. Abort it, and wait for the rewind.
                let mut aborts = eos.aborts.subscribe();
                eos.doom(partition);
                drop(_in_transaction);
                (slot, streak) = (None, 0);
                tokio::select! {
                    biased;
                    () = &mut stopping => return,
                    _ = aborts.changed() => {}
                }
                if failed == crate::layer::REGISTRY_UNAVAILABLE {
                    // Outside any transaction now: wait here until the registry answers.
                    tokio::select! {
                        biased;
                        () = &mut stopping => return,
                        () = self.await_registry(&event) => {}
                    }
                }
                continue;
            }
            let started = std::time::Instant::now();
            let outcome = self.handle(&mut service, &env, event.clone()).await;
            metrics.duration.record(started.elapsed());
            if outcome.is_ok() {
                metrics.handled.increment(1);
                cursor.advance(offset);
                if let Some(held) = event.kept()
                    && let Err(e) = held.store_offset()
                {
                    tracing::debug!(error = %e, "offset not stored (the partition was revoked)");
                }
            }
        }
    }

    /// Runs the event through the layers: done (handled or dead-lettered, so its offset may be
    /// stored), or the kind of the failure that left it neither.
    /// The caller holds a handler slot.
    pub(super) async fn handle(
        &self,
        service: &mut Stack<S>,
        env: &Arc<Env<S>>,
        event: Arc<IncomingEvent>,
    ) -> Result<(), &'static str> {
        let cx = HandlerContext::in_env(event, env);
        // The dead-letter layer turns failures into dead letters; what reaches here is unexpected.
        let outcome = match service.ready().await {
            Ok(ready) => ready.call(cx).await,
            Err(e) => Err(e),
        };
        outcome.map_err(|e| {
            tracing::error!(error = %e, "event not handled; its offset is not stored");
            e.kind()
        })
    }

    /// Exactly once: waits (outside any transaction) until the registry can check `event`'s
    /// schema, health degraded meanwhile; backoff 200 ms doubling to 5 s.
    async fn await_registry(&self, event: &IncomingEvent) {
        let Some((id, _)) = event.payload().and_then(|p| crate::schema::wire::split(p).ok()) else { return };
        let (registry, health) = (self.publisher.registry(), self.publisher.health());
        let note = ", outside its transaction";
        let _ = crate::layer::check_schema_waiting(registry, id, event, Some(health), note, || {}).await;
        health.recover(crate::layer::REGISTRY_COMPONENT);
    }

    /// The handlers' state and publisher, to share between the events of a partition.
    fn env(&self) -> Arc<Env<S>> {
        Env::new(self.state.clone(), self.publisher.clone())
    }

    /// Handles a message that arrived on the group's queue and stores its offset.
    pub(super) async fn handle_stray(&self, message: &OwnedMessage) {
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            "event on the group's queue (its partition queue was not split); handled inline"
        );
        let event = Arc::new(IncomingEvent::from_message(message));
        self.metrics.consumed.increment(1);
        let Ok(_slot) = self.permits.acquire().await else { return };
        if let Some(eos) = &self.eos {
            // As on a partition's task: in the open transaction, with its offset.
            let _in_transaction = eos.gate.read().await;
            eos.started(message.partition(), message.offset());
            if self.handle(&mut self.service.clone(), &self.env(), event).await.is_ok() {
                self.metrics.handled.increment(1);
                eos.handled(message.partition(), message.offset());
            } else {
                eos.doom(message.partition());
            }
            return;
        }
        // librdkafka stores offset + 1: the next event to handle.
        let handled = self.handle(&mut self.service.clone(), &self.env(), event).await.is_ok();
        if handled {
            self.metrics.handled.increment(1);
        }
        if handled
            && let Some(consumer) = self.consumer.upgrade()
            && let Err(e) = consumer.store_offset(message.topic(), message.partition(), message.offset())
        {
            tracing::debug!(error = %e, "offset not stored (the partition was revoked)");
        }
    }
}

/// Whether a partition's task has events in hand, for the exactly-once commit ([`Eos::busy`],
/// [`Eos::idle`]); idle again when dropped.
struct Activity<'a> {
    eos: Option<&'a Eos>,
    busy: bool,
}

impl Activity<'_> {
    fn busy(&mut self) {
        if !self.busy
            && let Some(eos) = self.eos
        {
            self.busy = true;
            eos.busy();
        }
    }

    fn idle(&mut self) {
        if self.busy
            && let Some(eos) = self.eos
        {
            self.busy = false;
            eos.idle();
        }
    }
}

impl Drop for Activity<'_> {
    fn drop(&mut self) {
        self.idle();
    }
}
