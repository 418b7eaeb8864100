//! Consuming: a handler subscribed to a topic in a consumer group, at least once.
//!
//! - **Consumer groups** named `<service>.<handler>` (overridable), with the cooperative-sticky
//!   assignor: instances of a service share the partitions; when one stops or dies the others take
//!   its partitions over.
//! - **Order per partition, concurrency across partitions**: each assigned partition gets its own
//!   queue (librdkafka's `rd_kafka_queue_get_partition`) and its own task that handles its events one
//!   at a time; at most [`Consumer::concurrency`] handlers run at once.
//! - **At least once**: an offset is stored only after its handler succeeded (or the event was
//!   dead-lettered), never past an event that has not. Stored offsets are committed every second, on
//!   revocation (before the partition moves on) and on shutdown, so a rebalance repeats at most the
//!   events in flight.
//! - **Backpressure**: each partition's queue holds at most [`Consumer::queue`] kilobytes and
//!   messages; when a handler is slow its queue fills and librdkafka stops fetching that partition, so
//!   memory stays bounded whatever the inflow.
//! - **Middleware**: every event goes through tower layers ([`crate::layer`]): tracing span continuing
//!   the producer's trace, correlation id, dead letters, retry with backoff, timeout, panic recovery,
//!   then yours.
//! - **Dead letters**: an event whose handler fails permanently, or past its retry budget, is
//!   published to the service's dead-letter topic for its source ([`dead_letter_topic`]) with
//!   headers naming its origin, and the partition moves on. If the dead-letter write fails, the offset
//!   is not stored, health reports degraded, and the write is retried: nothing is dropped silently.
//! - **Health**: the consumer is *starting* until it has its partitions, then ready; it is degraded
//!   while all brokers are unreachable.
//! - **Graceful shutdown** ([`Consumer::run`]'s future, e.g. [`crate::shutdown_signal`]): stop
//!   fetching, let the events in hand finish within the shutdown budget, commit, leave the group (the
//!   others take over at once, not after a session timeout).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt as _};

use crate::config::Config;
use crate::handler::{BoxedHandler, HandlerContext, HandlerError, IncomingEvent};
use crate::health::HealthState;
use crate::layer::{
    CatchPanicLayer, CorrelationLayer, DeadLetterLayer, EventService, HandlerService, Layers, RetryLayer,
    TimeoutLayer, TracingLayer,
};
pub use crate::layer::{Retry, dead_letter_headers};
use crate::publish::Publisher;
use crate::service::ServiceSpec;
use crate::topic::{TopicError, TopicSpec};

/// The dead-letter topic `service` owns for events it could not handle from `source`:
/// `<service>.private.dlq.<source>`, one partition, kept 14 days.
pub fn dead_letter_topic(service: &str, source: &TopicSpec) -> Result<TopicSpec, TopicError> {
    TopicSpec::private(service, format!("dlq.{}", source.name()))
        .partitions(1)
        .replication(source.replication())
        .min_insync_replicas(source.min_insync_replicas())
        .retention(Duration::from_secs(14 * 24 * 3600))
        .build()
}

/// Why the consumer stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The consumer could not be created or subscribed.
    #[error("consumer for `{topic}`: {reason}")]
    Client {
        /// The topic.
        topic: String,
        /// librdkafka's words.
        reason: String,
    },
    /// The service's declaration does not allow this subscription (or its dead-letter topic).
    #[error(transparent)]
    Topic(#[from] TopicError),
}

impl ConsumeError {
    /// Whether starting again may help.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

/// A handler subscribed to one topic. Build it with [`Consumer::new`], tune it with the builder
/// methods, start it with [`Consumer::run`].
pub struct Consumer<S> {
    topic: TopicSpec,
    group: String,
    dead_letters: TopicSpec,
    handler: BoxedHandler<S>,
    layers: Layers<S>,
    state: S,
    publisher: Publisher,
    retry: Retry,
    timeout: Option<Duration>,
    concurrency: usize,
    queue_kbytes: usize,
    queue_messages: usize,
    shutdown_budget: Duration,
    client: ClientConfig,
}

impl<S> std::fmt::Debug for Consumer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("topic", &self.topic.name())
            .field("group", &self.group)
            .field("handler", &self.handler.name())
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl<S: Clone + Send + Sync + 'static> Consumer<S> {
    /// Subscribes `handler` to `topic` for `spec`'s service, in group `<service>.<handler>` (or
    /// `group`). The service must be allowed to read `topic` and must own its dead-letter topic
    /// ([`dead_letter_topic`]); `publisher` writes the dead letters and lends the handler's
    /// [`Publisher`] extractor.
    pub fn new(
        config: &Config,
        spec: &ServiceSpec,
        topic: &TopicSpec,
        handler: BoxedHandler<S>,
        state: S,
        publisher: Publisher,
        group: Option<&str>,
    ) -> Result<Self, ConsumeError> {
        crate::topic::check_may_read(spec.name(), topic)?;
        let dead_letters = dead_letter_topic(spec.name(), topic)?;
        if spec.owned(dead_letters.name()).is_none() {
            return Err(TopicError::InvalidTopic {
                topic: dead_letters.name().to_owned(),
                reason: format!(
                    "service `{}` consumes `{}` but does not declare its dead-letter topic; add \
                     `.owns(&dead_letter_topic(\"{}\", &topic)?)`",
                    spec.name(),
                    topic.name(),
                    spec.name()
                ),
            }
            .into());
        }
        let group = group.map_or_else(|| format!("{}.{}", spec.name(), handler.name()), str::to_owned);
        Ok(Self {
            topic: topic.clone(),
            group,
            dead_letters,
            handler,
            layers: Layers::new(),
            state,
            publisher,
            retry: Retry::default(),
            timeout: None,
            concurrency: 64,
            queue_kbytes: 1024,
            queue_messages: 1000,
            shutdown_budget: config.shutdown_timeout,
            client: config.client_config(spec.name()),
        })
    }

    /// Uses `retry` for retriable handler errors (default: 5 attempts, backoff 100 ms doubling to
    /// 10 s).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Fails (retriably, kind `timeout`) an attempt that takes longer than `limit` (default: none).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Runs at most `handlers` handlers at once across this consumer's partitions (default 64; one
    /// per partition at most, whatever this says, to keep order).
    pub fn concurrency(mut self, handlers: usize) -> Self {
        self.concurrency = handlers.max(1);
        self
    }

    /// Bounds each partition's queue of fetched events to `kbytes` kilobytes and about `messages`
    /// messages (defaults 1024 KiB and 1000): librdkafka stops fetching a partition whose queue is
    /// full. Memory stays within about partitions × `kbytes` (plus one fetch response).
    pub fn queue(mut self, kbytes: usize, messages: usize) -> Self {
        self.queue_kbytes = kbytes.max(1);
        self.queue_messages = messages.max(1);
        self
    }

    /// Adds `layer` around the handler, inside the built-in layers (see [`crate::layer`]).
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<EventService<S>> + Send + Sync + 'static,
        L::Service:
            Service<HandlerContext<S>, Response = (), Error = HandlerError> + Clone + Send + Sync + 'static,
        <L::Service as Service<HandlerContext<S>>>::Future: Send + 'static,
    {
        self.layers = self.layers.layer(layer);
        self
    }

    /// Adds `layers` (shared by a service's consumers) around the handler, inside the built-in ones
    /// and inside layers added before.
    pub fn layers(mut self, layers: &Layers<S>) -> Self {
        self.layers = std::mem::take(&mut self.layers).extend(layers);
        self
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The per-event service: the built-in layers around yours around the handler.
    fn service(&self) -> EventService<S> {
        let handler = self.handler.name();
        let inner = self.layers.apply(BoxCloneSyncService::new(HandlerService::new(self.handler.clone())));
        let inner = BoxCloneSyncService::new(CatchPanicLayer.layer(inner));
        let inner = match self.timeout {
            Some(limit) => BoxCloneSyncService::new(TimeoutLayer::new(limit).layer(inner)),
            None => inner,
        };
        let stack = tower::ServiceBuilder::new()
            .layer(TracingLayer::new(handler))
            .layer(CorrelationLayer)
            .layer(DeadLetterLayer::new(
                self.dead_letters.clone(),
                self.publisher.clone(),
                handler,
                self.retry,
            ))
            .layer(RetryLayer::new(self.retry))
            .service(inner);
        BoxCloneSyncService::new(stack)
    }

    /// Joins the group and handles events until `shutdown` completes (see [`crate::shutdown_signal`]
    /// for SIGTERM and Ctrl-C); then stops fetching, lets the events in hand finish within the
    /// shutdown budget (`BACKBONE_SHUTDOWN_TIMEOUT_MS`), commits and leaves the group.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumeError> {
        let health = self.publisher.health().clone();
        let component = format!("consumer:{}", self.group);
        health.starting(&component, format!("waiting for partitions of `{}`", self.topic.name()));
        let (rebalances, mut rebalanced) = mpsc::unbounded_channel();
        let context = GroupContext {
            consumer: OnceLock::new(),
            topic: self.topic.name().to_owned(),
            rebalances,
            health: health.clone(),
            component: component.clone(),
        };
        let client = |e: KafkaError| ConsumeError::Client {
            topic: self.topic.name().to_owned(),
            reason: e.to_string(),
        };
        let consumer: Arc<StreamConsumer<GroupContext>> = Arc::new(
            self.client
                .clone()
                .set("group.id", &self.group)
                .set("partition.assignment.strategy", "cooperative-sticky")
                .set("enable.auto.commit", "true")
                .set("auto.commit.interval.ms", "1000")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("isolation.level", "read_committed")
                .set("queued.max.messages.kbytes", self.queue_kbytes.to_string())
                .set("queued.min.messages", self.queue_messages.to_string())
                .create_with_context(context)
                .map_err(client)?,
        );
        consumer.context().consumer.set(Arc::downgrade(&consumer)).ok();
        consumer.subscribe(&[self.topic.name()]).map_err(client)?;

        let worker = Arc::new(Worker {
            service: self.service(),
            state: self.state.clone(),
            publisher: self.publisher.clone(),
            permits: Semaphore::new(self.concurrency),
            consumer: Arc::downgrade(&consumer),
        });
        let (stopping, stop) = watch::channel(false);
        let mut partitions: HashMap<i32, Partition> = HashMap::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(change) = rebalanced.recv() => match change {
                    Change::Assigned(queues) => {
                        for (partition, queue) in queues {
                            let (revoke, revoked) = watch::channel(false);
                            // A partition given back to us waits for its earlier task to finish.
                            let earlier = partitions.remove(&partition).map(|p| p.task);
                            let task = tokio::spawn(worker.clone().run(queue, earlier, stop.clone(), revoked));
                            partitions.insert(partition, Partition { revoke, task });
                        }
                    }
                    Change::Revoked(revoked) => {
                        for partition in revoked {
                            if let Some(p) = partitions.get(&partition) {
                                p.revoke.send_replace(true);
                            }
                        }
                    }
                },
                message = consumer.recv() => match message {
                    // Messages fetched before a partition's queue was split off arrive here; handled
                    // in place (rare: the split happens in the assignment callback).
                    Ok(message) => worker.handle(&message).await,
                    Err(e) => tracing::warn!(topic = self.topic.name(), error = %e, "consumer error"),
                },
            }
        }

        stopping.send_replace(true);
        let mut tasks: Vec<_> = partitions.into_values().map(|p| p.task).collect();
        let finishing = futures::future::join_all(tasks.iter_mut());
        if tokio::time::timeout(self.shutdown_budget, finishing).await.is_err() {
            // Events still in hand: their offsets are not stored, the next owner handles them again.
            tracing::warn!(
                topic = self.topic.name(),
                "shutdown budget spent with events in hand; they will be handled again"
            );
            tasks.iter().for_each(JoinHandle::abort);
            futures::future::join_all(tasks).await;
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is also an error here; not a loss.
            tracing::debug!(error = %e, "final commit");
        }
        health.ready(&component);
        drop(worker);
        // Dropping the last reference closes the consumer: it leaves the group, so the others take
        // over at once. Closing waits for the broker, so it runs off the async workers.
        tokio::task::spawn_blocking(move || drop(consumer)).await.ok();
        Ok(())
    }
}

/// A partition's task and how to tell it the partition was revoked.
struct Partition {
    revoke: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What every partition's task shares.
struct Worker<S> {
    service: EventService<S>,
    state: S,
    publisher: Publisher,
    permits: Semaphore,
    consumer: Weak<StreamConsumer<GroupContext>>,
}

impl<S: Clone + Send + Sync + 'static> Worker<S> {
    /// Handles one partition's events in order until it is revoked or the consumer stops.
    async fn run(
        self: Arc<Self>,
        queue: StreamPartitionQueue<GroupContext>,
        earlier: Option<JoinHandle<()>>,
        mut stop: watch::Receiver<bool>,
        mut revoked: watch::Receiver<bool>,
    ) {
        if let Some(earlier) = earlier {
            earlier.await.ok();
        }
        loop {
            let message = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                _ = revoked.wait_for(|r| *r) => return,
                message = queue.recv() => message,
            };
            match message {
                Ok(message) => self.handle(&message).await,
                Err(e) => tracing::warn!(error = %e, "partition queue error"),
            }
        }
    }

    /// Runs the event through the layers, then stores its offset (the layers only return once the
    /// event is handled or dead-lettered).
    async fn handle(&self, message: &BorrowedMessage<'_>) {
        let Ok(_permit) = self.permits.acquire().await else { return };
        let event = Arc::new(IncomingEvent::from_message(message));
        let cx = HandlerContext::new(event, self.state.clone()).with_publisher(self.publisher.clone());
        // The dead-letter layer turns failures into dead letters; what reaches here is unexpected.
        if let Err(e) = self.service.clone().oneshot(cx).await {
            tracing::error!(error = %e, "event not handled; its offset is not stored");
            return;
        }
        let Some(consumer) = self.consumer.upgrade() else { return };
        if let Err(e) = consumer.store_offset_from_message(message) {
            tracing::debug!(error = %e, "offset not stored (the partition was revoked)");
        }
    }
}

/// What the rebalance callback tells the run loop.
enum Change {
    Assigned(Vec<(i32, StreamPartitionQueue<GroupContext>)>),
    Revoked(Vec<i32>),
}

/// The consumer's context: splits each assigned partition into its own queue, commits on revocation,
/// reports health.
struct GroupContext {
    consumer: OnceLock<Weak<StreamConsumer<GroupContext>>>,
    topic: String,
    rebalances: mpsc::UnboundedSender<Change>,
    health: HealthState,
    component: String,
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.degrade(&self.component, format!("brokers unreachable: {reason}"));
        } else {
            tracing::warn!(%error, reason, "consumer client error");
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked: Vec<i32> =
                list.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect();
            tracing::info!(topic = self.topic, ?revoked, "partitions revoked");
            // Commit what was handled, so the next owner starts right after it.
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "commit on revocation");
            }
            self.rebalances.send(Change::Revoked(revoked)).ok();
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else { return };
            let queues: Vec<_> = list
                .elements_for_topic(&self.topic)
                .iter()
                .filter_map(|e| {
                    Some((e.partition(), consumer.split_partition_queue(&self.topic, e.partition())?))
                })
                .collect();
            tracing::info!(
                topic = self.topic,
                assigned = ?queues.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
                "partitions assigned"
            );
            self.rebalances.send(Change::Assigned(queues)).ok();
            self.health.recover(&self.component);
            self.health.ready(&self.component);
        }
    }
}
