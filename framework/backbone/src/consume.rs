//! Consuming: a handler subscribed to a topic in a consumer group, at least once.
//!
//! - **Consumer groups** named `<service>.<handler>` (overridable), with the cooperative-sticky
//!   assignor: instances of a service share the partitions; when one stops or dies the others take
//!   its partitions over.
//! - **Order per partition, concurrency across partitions**: each assigned partition gets its own
//!   queue (librdkafka's `rd_kafka_queue_get_partition`) and its own task that handles its events one
//!   at a time; at most [`Consumer::concurrency`] handlers run at once.
//! - **Cheap per event**: a partition's task takes up to 16 events from its queue at once, and each
//!   event stays where librdkafka read it (key, payload and headers are not copied; headers are
//!   parsed only if something asks for one). In the `consume` benchmark backbone reads about as fast
//!   as a raw rdkafka loop (0.94 to 1.21 times its rate); `native.rs`, the crate's one `unsafe`
//!   module, says how and why.
//! - **At least once**: an offset is stored only after its handler succeeded (or the event was
//!   dead-lettered), never past an event that has not. Stored offsets are committed every second, on
//!   revocation (before the partition moves on) and on shutdown, so a rebalance repeats at most the
//!   events in flight. Within one assignment no event is handled twice: librdkafka can hand one out
//!   again after the pause it applies on every rebalance, and the partition's task skips any offset
//!   below the next one it expects.
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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt as _};

use crate::config::Config;
use crate::handler::{BoxedHandler, Env, HandlerContext, HandlerError, IncomingEvent};
use crate::health::HealthState;
pub use crate::layer::naming::{dead_letter_topic, retry_topic};
use crate::layer::{
    Budget, BudgetLayer, CatchPanic, CatchPanicLayer, Correlation, CorrelationLayer, DeadLetter,
    DeadLetterLayer, EventService, HandlerService, Layers, RetryLayer, RetryService, SchemaLayer, Schemas,
    Timeout, TimeoutLayer, Tracing, TracingLayer,
};
pub use crate::layer::{Retry, dead_letter_headers};
use crate::native::{PartitionQueue, QueueWakers, WithQueueWakers};
use crate::publish::{PublishError, Publisher, TRANSACTION_TIMEOUT, Transaction};
use crate::service::ServiceSpec;
use crate::topic::{TopicError, TopicSpec};
pub use retry::replay_headers;

pub(crate) mod retry; // Replays of dead letters: the retry topic and its consumer.

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
    /// All attempts of one event together (always set under exactly once).
    budget: Option<Duration>,
    concurrency: usize,
    queue_kbytes: usize,
    queue_messages: usize,
    shutdown_budget: Duration,
    client: ClientConfig,
    hooks: Arc<dyn ConsumerHooks>,
    /// Exactly once: events per transaction (None: at least once).
    transaction_size: Option<usize>,
    /// Exactly once: the longest a transaction stays open.
    transaction_interval: Duration,
    /// Exactly once: a stable transactional id (default `<group>.<uuid>`, new per run).
    transactional_id: Option<String>,
    config: Config,
    spec: ServiceSpec,
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
            budget: None,
            concurrency: 64,
            queue_kbytes: 16 * 1024,
            queue_messages: 100_000,
            shutdown_budget: config.shutdown_timeout,
            client: config.client_config(spec.name()),
            hooks: Arc::new(NoHooks),
            transaction_size: None,
            transaction_interval: Duration::from_millis(100),
            transactional_id: None,
            config: config.clone(),
            spec: spec.clone(),
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

    /// Bounds the whole handling of one event, every retry and backoff included, to `budget`: past it
    /// the event fails permanently (kind `budget`) and is dead-lettered, and its partition moves on
    /// (default: none under at least once).
    ///
    /// Under exactly once every event has a budget, [`MAX_EVENT_BUDGET`] at most and by default,
    /// and an event past it first gets [`DeadLetterLayer::BUDGET_TRIES`] tries in all, each in a
    /// fresh transaction (the open one is aborted), before its dead letter:
    /// an event still being handled when the broker aborts its transaction (after
    /// [`TRANSACTION_TIMEOUT`]) would fail every other event of that transaction, and after the
    /// rewind it would run again, and again.
    pub fn event_budget(mut self, budget: Duration) -> Self {
        self.budget = Some(budget.max(Duration::from_millis(1)));
        self
    }

    /// The budget each event gets (see [`event_budget`](Self::event_budget)).
    pub fn effective_event_budget(&self) -> Option<Duration> {
        match (self.transaction_size, self.budget) {
            (Some(_), budget) => Some(budget.unwrap_or(MAX_EVENT_BUDGET).min(MAX_EVENT_BUDGET)),
            (None, budget) => budget,
        }
    }

    /// Runs at most `handlers` handlers at once across this consumer's partitions (default 64; one
    /// per partition at most, whatever this says, to keep order).
    pub fn concurrency(mut self, handlers: usize) -> Self {
        self.concurrency = handlers.max(1);
        self
    }

    /// Bounds each partition's queue of fetched events to `kbytes` kilobytes and about `messages`
    /// messages (defaults 16 MiB and 100,000): librdkafka stops fetching a partition whose queue is
    /// full, and looks again every 10 ms. Memory stays within partitions × [`queue_bound_bytes`],
    /// plus the up to 16 events each partition's task has taken from its queue, plus librdkafka's
    /// own cost per queued record beyond its key and payload (its message structure and headers:
    /// about 600 to 750 bytes each, measured by R15's default-settings test). With many small
    /// records that overhead dominates: at the default 100,000 messages a partition it can reach
    /// 60 to 75 MB; lower `messages` where memory is tight.
    ///
    /// [`queue_bound_bytes`]: Self::queue_bound_bytes
    pub fn queue(mut self, kbytes: usize, messages: usize) -> Self {
        self.queue_kbytes = kbytes.max(1);
        self.queue_messages = messages.max(1);
        self
    }

    /// The queue bound per partition, in bytes: the queue's size plus one more record batch, as a
    /// fetch may overshoot by one (a broker returns a partition's first batch whole, up to the
    /// topic's `max.message.bytes`, 1 MiB by default).
    pub fn queue_bound_bytes(&self) -> usize {
        self.queue_kbytes * 1024 + (1 << 20)
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

    /// Exactly once, consume-transform-produce: what the handler publishes and the offsets it
    /// consumed commit in one Kafka transaction, about every 750 events (see
    /// [`transaction_size`](Self::transaction_size)) or 100 ms. Readers of the outputs read
    /// `read_committed` (backbone's consumers do). The transactional id is derived per instance
    /// (`<group>.<uuid>`); zombies are fenced by the group's generation (KIP-447), so an instance
    /// that lost its partitions cannot commit what it produced for them.
    pub fn exactly_once(mut self) -> Self {
        self.transaction_size.get_or_insert(750);
        self
    }

    /// Exactly once with a stable transactional id, for instances that have a stable identity (a
    /// StatefulSet's ordinal: `<group>.<ordinal>`): a restarted instance then fences its previous
    /// incarnation's producer at once, instead of the broker aborting its open transaction after
    /// [`TRANSACTION_TIMEOUT`]. Two live instances must never share one (each fences the other).
    pub fn transactional_id(mut self, id: impl Into<String>) -> Self {
        self.transaction_size.get_or_insert(750);
        self.transactional_id = Some(id.into());
        self
    }

    /// Exactly once with about `events` events per transaction.
    pub fn transaction_size(mut self, events: usize) -> Self {
        self.transaction_size = Some(events.max(1));
        self
    }

    /// Exactly once, committing at least every `interval` (default 100 ms) when events were
    /// handled: longer, fewer transactions; shorter, outputs visible sooner. Keep it well under
    /// [`crate::publish::TRANSACTION_TIMEOUT`].
    pub fn transaction_interval(mut self, interval: Duration) -> Self {
        self.transaction_size.get_or_insert(750);
        self.transaction_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Calls `hooks` on rebalances (see [`ConsumerHooks`]).
    pub fn hooks(mut self, hooks: impl ConsumerHooks) -> Self {
        self.hooks = Arc::new(hooks);
        self
    }

    /// Sets a librdkafka consumer property (`session.timeout.ms`, `fetch.max.bytes` …). The
    /// at-least-once settings (`group.id`, offset storing and committing, the assignor, isolation)
    /// are the framework's and are set after this.
    pub fn client_setting(mut self, key: &str, value: impl Into<String>) -> Self {
        self.client.set(key, value);
        self
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The per-event service: the built-in layers around yours around the handler. Its type is
    /// spelled out ([`Stack`]) rather than boxed, so calling it allocates nothing of its own.
    fn service(&self, publisher: &Publisher) -> Stack<S> {
        use tower::util::Either;
        let handler = self.handler.name();
        let bottom = HandlerService::new(self.handler.clone());
        // Your layers (if any) need a boxed service beneath them.
        let bottom = if self.layers.is_empty() {
            Either::Left(bottom)
        } else {
            Either::Right(self.layers.apply(BoxCloneSyncService::new(bottom)))
        };
        tower::ServiceBuilder::new()
            .layer(TracingLayer::new(handler))
            .layer(CorrelationLayer)
            .layer(DeadLetterLayer::new(self.dead_letters.clone(), publisher.clone(), handler, self.retry))
            .layer(BudgetLayer::new(self.effective_event_budget()))
            .layer(RetryLayer::new(self.retry))
            .layer(SchemaLayer::new(self.publisher.registry().clone()))
            .option_layer(self.timeout.map(TimeoutLayer::new))
            .layer(CatchPanicLayer)
            .service(bottom)
    }

    /// Joins the group and handles events until `shutdown` completes (see [`crate::shutdown_signal`]
    /// for SIGTERM and Ctrl-C); then stops fetching, lets the events in hand finish within the
    /// shutdown budget (`BACKBONE_SHUTDOWN_TIMEOUT_MS`), commits and leaves the group. The whole
    /// shutdown keeps within the budget whatever Kafka does: what is not done by then is logged
    /// (partition and offset) and left for the next owner.
    ///
    /// Exactly once: if the transactional producer is fenced or fails fatally (the broker aborted a
    /// transaction and bumped the producer's epoch, say), the consumer does not stop for good. Its
    /// open transaction is lost (never committed), so it leaves the group, waits a backoff (1 s
    /// doubling to 30 s, health degraded meanwhile) and joins again with a new producer and epoch;
    /// its partitions resume from the last committed offsets.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumeError> {
        let health = self.publisher.health().clone();
        let component = format!("consumer:{}", self.group);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            match self.run_once(&health, &component, shutdown.as_mut()).await? {
                Ended::Shutdown => break,
                Ended::Fenced => {
                    if started.elapsed() > Duration::from_secs(60) {
                        failures = 0;
                    }
                    failures += 1;
                    let backoff = Duration::from_secs(1 << failures.min(5)).min(Duration::from_secs(30));
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
                let publisher = Publisher::transactional(&self.config, &self.spec, health.clone(), &id)
                    .await
                    .map_err(|e| ConsumeError::Client {
                        topic: self.topic.name().to_owned(),
                        reason: e.to_string(),
                    })?;
                tracing::info!(topic = self.topic.name(), transactional_id = id, "exactly once");
                let (timeout, every) = (self.config.delivery_timeout, self.transaction_interval);
                let hooks = self.hooks.clone();
                Some(Arc::new(Eos::new(publisher, self.topic.name(), (size, every), timeout, hooks)))
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
        };
        let client = |e: KafkaError| ConsumeError::Client {
            topic: self.topic.name().to_owned(),
            reason: e.to_string(),
        };
        let consumer: Arc<StreamConsumer<GroupContext<S>>> = Arc::new(
            self.client
                .clone()
                .set("group.id", &self.group)
                .set("partition.assignment.strategy", "cooperative-sticky")
                .set("enable.auto.commit", if eos.is_some() { "false" } else { "true" })
                .set("auto.commit.interval.ms", "1000")
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
        let publisher = eos.as_ref().map_or_else(|| self.publisher.clone(), |e| e.publisher.clone());
        let worker = Arc::new(Worker {
            service: self.service(&publisher),
            state: self.state.clone(),
            publisher,
            permits: Semaphore::new(self.concurrency),
            consumer: Arc::downgrade(&consumer),
            eos: eos.clone(),
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
                                    Err(e) => tracing::warn!(error = %e, "consumer error"),
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

        let committer = eos.clone().map(|eos| tokio::spawn(eos.committing(consumer.clone(), stop.clone())));
        let fatal = eos.clone();
        let fenced = async move {
            match fatal {
                Some(eos) => eos.fatal.notified().await,
                None => std::future::pending().await,
            }
        };
        let mut fenced = std::pin::pin!(fenced);
        let ended = loop {
            tokio::select! {
                biased;
                () = shutdown.as_mut() => break Ended::Shutdown,
                () = &mut fenced => break Ended::Fenced,
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
        if let Some(mut committer) = committer
            && tokio::time::timeout_at(deadline - reserve / 2, &mut committer).await.is_err()
        {
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
enum Ended {
    /// The shutdown future completed.
    Shutdown,
    /// Exactly once: the transactional producer failed fatally.
    Fenced,
}

/// Runs `work` on a thread of its own (not the runtime's blocking pool, whose shutdown waits for
/// it): its result, or `None` if it panicked.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("backbone-blocking".into()).spawn(move || {
        let _ = done.send(work());
    });
    match spawned {
        Ok(_) => result.await.ok(),
        Err(e) => {
            tracing::error!(error = %e, "cannot start a thread");
            None
        }
    }
}

/// Lifecycle hooks of a [`Consumer`], called on its group thread (keep them quick). Every method has
/// a default that does nothing.
pub trait ConsumerHooks: Send + Sync + 'static {
    /// `partitions` of `topic` were assigned to this instance; their tasks have started.
    fn assigned(&self, topic: &str, partitions: &[i32]) {
        let _ = (topic, partitions);
    }

    /// `partitions` of `topic` were revoked from this instance, after their events in hand finished
    /// and their offsets were committed.
    fn revoked(&self, topic: &str, partitions: &[i32]) {
        let _ = (topic, partitions);
    }

    /// Offsets were committed: `(partition, next offset to handle)` of `topic`.
    fn committed(&self, topic: &str, offsets: &[(i32, i64)]) {
        let _ = (topic, offsets);
    }

    /// Where to start reading `partitions` of `topic`, about to be assigned to this instance:
    /// `(partition, offset)` for those that should not resume from the group's committed offset (a
    /// [`crate::table::Table`] replays from the beginning, or from its local store's offset). Called
    /// on the group thread before the assignment takes effect, so fetching starts there.
    fn start_offsets(&self, topic: &str, partitions: &[i32]) -> Vec<(i32, rdkafka::Offset)> {
        let _ = (topic, partitions);
        Vec::new()
    }

    /// librdkafka's statistics (every `statistics.interval.ms`, off unless set with
    /// [`Consumer::client_setting`]): fetch queue sizes, lag, broker round trips.
    fn statistics(&self, statistics: &rdkafka::Statistics) {
        let _ = statistics;
    }

    /// Exactly once only: the open transaction is about to commit with the handled offsets; every
    /// event in hand has finished and none starts until it ends. What `transaction` publishes
    /// commits with those offsets or not at all (the running totals' snapshot,
    /// [`crate::sourcing`]); an error aborts the transaction, and its events are handled again.
    /// Called on the committing thread: it holds the consumer up, so enqueue and return.
    fn before_commit(&self, transaction: &Transaction<'_>) -> Result<(), PublishError> {
        let _ = transaction;
        Ok(())
    }

    /// Exactly once only: the transaction [`before_commit`](Self::before_commit) saw ended,
    /// `committed` or aborted. After an abort its partitions are rewound to the last committed
    /// offsets and their events are handled again: forget what they changed in memory.
    fn transaction_ended(&self, committed: bool) {
        let _ = committed;
    }
}

/// No hooks.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl ConsumerHooks for NoHooks {}

/// A partition's task, how to tell it the partition was revoked, whether it has ended, and where it
/// stands.
struct Partition {
    revoke: watch::Sender<bool>,
    task: JoinHandle<()>,
    ended: Arc<TaskEnded>,
    cursor: Arc<Cursor>,
}

/// Set when a partition's task ends; waited for by the (synchronous) rebalance callback.
#[derive(Default)]
struct TaskEnded {
    done: Mutex<bool>,
    changed: Condvar,
}

impl TaskEnded {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.changed.notify_all();
    }

    /// Waits until set or `deadline`; whether it was set.
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        while !*done {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            done = self.changed.wait_timeout(done, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}

/// Sets [`TaskEnded`] when dropped: however a partition's task ends (returns, is aborted, panics).
struct SetOnDrop(Arc<TaskEnded>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// The handler (or, with layers of yours, the handler inside them, boxed once).
type Bottom<S> = tower::util::Either<HandlerService<S>, EventService<S>>;

/// The handler under the built-in layers, outermost first: tracing, correlation, dead letters,
/// budget, retry, schema, timeout (if set), panic recovery.
type Stack<S> = Tracing<
    Correlation<
        DeadLetter<
            Budget<
                RetryService<
                    Schemas<tower::util::Either<Timeout<CatchPanic<Bottom<S>>>, CatchPanic<Bottom<S>>>>,
                >,
            >,
        >,
    >,
>;

/// The longest an event may take under exactly once, all attempts included: half the transaction
/// timeout, so the event's dead letter and the commit fit in the other half.
pub const MAX_EVENT_BUDGET: Duration = Duration::from_secs(TRANSACTION_TIMEOUT.as_secs() / 2);

/// Where a partition's task stands: the next offset to handle, and how often exactly once rewound it.
///
/// librdkafka may hand an event out twice within one assignment. On every rebalance it pauses all
/// assigned partitions, and a pause restarts the fetcher at the offset after the last event the
/// application took; an event taken while the pause is being applied is not counted as taken yet, so
/// it comes again (confluentinc/librdkafka#2593). Offsets within a partition only grow, so the task
/// skips an event below its cursor: it was handled already.
#[derive(Debug)]
struct Cursor {
    /// The next offset to handle; -1 until one is handled.
    next: AtomicI64,
    /// Rewinds after aborted transactions (exactly once only).
    rewinds: AtomicU64,
}

impl Cursor {
    fn new() -> Self {
        Self { next: AtomicI64::new(-1), rewinds: AtomicU64::new(0) }
    }

    /// Whether the event at `offset` is not behind the cursor (not handled yet).
    fn admits(&self, offset: i64) -> bool {
        offset >= self.next.load(Ordering::Acquire)
    }

    /// The event at `offset` was handled.
    fn advance(&self, offset: i64) {
        self.next.store(offset + 1, Ordering::Release);
    }

    /// The partition was sought back to `to`.
    fn rewind(&self, to: i64) {
        self.next.store(to, Ordering::Release);
        self.rewinds.fetch_add(1, Ordering::AcqRel);
    }

    fn rewinds(&self) -> u64 {
        self.rewinds.load(Ordering::Acquire)
    }

    /// Where a rewound partition resumes.
    fn resume_at(&self) -> rdkafka::Offset {
        rdkafka::Offset::Offset(self.next.load(Ordering::Acquire))
    }
}

/// How many events in a row a busy partition handles in the same handler slot before it gives the
/// slot back to partitions waiting for one.
const SLOT_STREAK: u32 = 64;

/// What every partition's task shares.
struct Worker<S: Clone + Send + Sync + 'static> {
    service: Stack<S>,
    state: S,
    publisher: Publisher,
    permits: Semaphore,
    consumer: Weak<StreamConsumer<GroupContext<S>>>,
    eos: Option<Arc<Eos>>,
}

impl<S: Clone + Send + Sync + 'static> Worker<S> {
    /// Handles one partition's events in order until it is revoked or the consumer stops.
    async fn run(
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
        loop {
            if !quiet() && futures::poll!(stopping.as_mut()).is_ready() {
                return;
            }
            if batch.is_empty() {
                // Read before taking: a rewind after this makes the batch suspect.
                rewinds = cursor.rewinds();
                if !queue.take(&mut batch) {
                    (slot, streak) = (None, 0);
                    tokio::select! {
                        biased;
                        () = &mut stopping => return,
                        () = std::future::poll_fn(|cx| queue.poll_take(cx, &mut batch)) => {}
                    }
                }
            }
            let Some(held) = batch.pop_front() else { continue };
            let (partition, offset) = (held.partition(), held.offset());
            if !cursor.admits(offset) {
                tracing::debug!(partition, offset, "event handed out again by librdkafka; skipped");
                continue;
            }
            let topic = topic.get_or_insert_with(|| Arc::from(held.topic()));
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
                let failed = match self.handle(&mut service, &env, event.clone()).await {
                    Ok(()) => {
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
            if self.handle(&mut service, &env, event.clone()).await.is_ok() {
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
    async fn handle(
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
    async fn handle_stray(&self, message: &OwnedMessage) {
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            "event on the group's queue (its partition queue was not split); handled inline"
        );
        let event = Arc::new(IncomingEvent::from_message(message));
        let Ok(_slot) = self.permits.acquire().await else { return };
        if let Some(eos) = &self.eos {
            // As on a partition's task: in the open transaction, with its offset.
            let _in_transaction = eos.gate.read().await;
            eos.started(message.partition(), message.offset());
            if self.handle(&mut self.service.clone(), &self.env(), event).await.is_ok() {
                eos.handled(message.partition(), message.offset());
            } else {
                eos.doom(message.partition());
            }
            return;
        }
        // librdkafka stores offset + 1: the next event to handle.
        if self.handle(&mut self.service.clone(), &self.env(), event).await.is_ok()
            && let Some(consumer) = self.consumer.upgrade()
            && let Err(e) = consumer.store_offset(message.topic(), message.partition(), message.offset())
        {
            tracing::debug!(error = %e, "offset not stored (the partition was revoked)");
        }
    }
}

/// The consumer's context: starts a task per assigned partition on its own queue, finishes and
/// commits revoked partitions before they move, reports health.
struct GroupContext<S: Clone + Send + Sync + 'static> {
    worker: OnceLock<Arc<Worker<S>>>,
    eos: Option<Arc<Eos>>,
    topic: String,
    runtime: tokio::runtime::Handle,
    partitions: Mutex<HashMap<i32, Partition>>,
    /// Tasks of revoked partitions that did not finish in time and were aborted: a task aborted
    /// while it runs ends only at its next await, so a successor on the same partition waits for it.
    aborted: Mutex<HashMap<i32, JoinHandle<()>>>,
    stop: watch::Receiver<bool>,
    budget: Duration,
    hooks: Arc<dyn ConsumerHooks>,
    health: HealthState,
    component: String,
    wakers: QueueWakers,
}

impl<S: Clone + Send + Sync + 'static> WithQueueWakers for GroupContext<S> {
    fn queue_wakers(&self) -> &QueueWakers {
        &self.wakers
    }
}

impl<S: Clone + Send + Sync + 'static> GroupContext<S> {
    fn lock_partitions(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Partition>> {
        self.partitions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_aborted(&self) -> std::sync::MutexGuard<'_, HashMap<i32, JoinHandle<()>>> {
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
        self.hooks.statistics(&statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
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
    loop {
        attempt += 1;
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => return,
            // Nothing stored since the last commit: nothing to lose.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => return,
            Err(e) if is_retriable_commit(&e) && Instant::now() < deadline => {
                tracing::info!(topic, ?revoked, attempt, error = %e, "commit on revocation failed; retrying");
                std::thread::sleep(Duration::from_millis(50 * u64::from(attempt.min(10))));
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

/// Exactly-once state: the transactional publisher, the gate between events and commits, and the
/// offsets handled in the open transaction.
struct Eos {
    publisher: Publisher,
    topic: String,
    size: usize,
    timeout: Duration,
    /// Events hold it shared while handled; a commit holds it exclusively.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// Next offset per partition, handled in the open transaction.
    next: Mutex<HashMap<i32, i64>>,
    /// Next offset per partition, as last committed (or, before a commit, where its assignment
    /// started).
    committed: Mutex<HashMap<i32, i64>>,
    /// The assigned partitions' cursors, rewound after an aborted transaction.
    cursors: Mutex<HashMap<i32, Arc<Cursor>>>,
    pending: std::sync::atomic::AtomicUsize,
    /// Partitions with an event that neither succeeded nor was dead-lettered in the open
    /// transaction: it must abort, not commit past that event.
    doomed: Mutex<Vec<i32>>,
    /// Counts aborted transactions (and fatal failures): a partition task waiting after a doomed
    /// event goes on once it changes.
    aborts: watch::Sender<u64>,
    /// An abort failed: this producer cannot go on.
    broken: std::sync::atomic::AtomicBool,
    full: tokio::sync::Notify,
    fatal: tokio::sync::Notify,
    hooks: Arc<dyn ConsumerHooks>,
    interval: Duration,
}

impl Eos {
    fn new(
        publisher: Publisher,
        topic: &str,
        (size, interval): (usize, Duration),
        timeout: Duration,
        hooks: Arc<dyn ConsumerHooks>,
    ) -> Self {
        Self {
            hooks,
            interval,
            publisher,
            topic: topic.to_owned(),
            size,
            timeout,
            gate: Arc::new(tokio::sync::RwLock::new(())),
            next: Mutex::new(HashMap::new()),
            committed: Mutex::new(HashMap::new()),
            cursors: Mutex::new(HashMap::new()),
            pending: Default::default(),
            doomed: Mutex::new(Vec::new()),
            aborts: watch::channel(0).0,
            broken: Default::default(),
            full: tokio::sync::Notify::new(),
            fatal: tokio::sync::Notify::new(),
        }
    }

    /// The gate, exclusively, from synchronous code: the group thread (inside a futures executor,
    /// outside tokio) or, when a consumer is dropped there, a runtime thread (when no event holds
    /// the gate any more).
    fn write_blocking(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        if tokio::runtime::Handle::try_current().is_ok() {
            futures::executor::block_on(self.gate.write())
        } else {
            self.gate.blocking_write()
        }
    }

    /// The partition's first event in this assignment is at `offset` (unless one came before): where
    /// an aborted transaction rewinds it to when none of its transactions has committed yet.
    fn started(&self, partition: i32, offset: i64) {
        self.committed.lock().unwrap_or_else(PoisonError::into_inner).entry(partition).or_insert(offset);
    }

    fn handled(&self, partition: i32, offset: i64) {
        self.next.lock().unwrap_or_else(PoisonError::into_inner).insert(partition, offset + 1);
        if self.pending.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1 >= self.size {
            self.full.notify_one();
        }
    }

    fn is_doomed(&self) -> bool {
        !self.doomed.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    /// An event of `partition` failed without a dead letter: abort the open transaction at once.
    fn doom(&self, partition: i32) {
        tracing::warn!(
            topic = self.topic,
            partition,
            "event neither handled nor dead-lettered: aborting the transaction"
        );
        self.doomed.lock().unwrap_or_else(PoisonError::into_inner).push(partition);
        self.full.notify_one();
    }

    fn forget(&self, partitions: &[i32]) {
        for map in [&self.next, &self.committed] {
            let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
            partitions.iter().for_each(|p| {
                map.remove(p);
            });
        }
        let mut cursors = self.cursors.lock().unwrap_or_else(PoisonError::into_inner);
        partitions.iter().for_each(|p| {
            cursors.remove(p);
        });
    }

    /// Commits a transaction when it is full, or every 100 ms, until the consumer stops.
    async fn committing<C: rdkafka::consumer::Consumer<GroupContext<S>> + Send + Sync + 'static, S>(
        self: Arc<Self>,
        consumer: Arc<C>,
        mut stop: watch::Receiver<bool>,
    ) where
        S: Clone + Send + Sync + 'static,
    {
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = self.full.notified() => {}
                _ = tick.tick() => {}
            }
            if self.pending.load(std::sync::atomic::Ordering::Acquire) == 0 && !self.is_doomed() {
                continue;
            }
            let gate = self.gate.clone().write_owned().await;
            let (eos, consumer) = (self.clone(), consumer.clone());
            // Off the runtime's blocking pool: a commit waits for the broker, and the runtime's
            // shutdown would wait for it.
            let result = off_runtime(move || eos.commit_locked(&*consumer)).await;
            drop(gate);
            let component = format!("transactions:{}", self.topic);
            match result {
                Some(Ok(())) => self.publisher.health().recover(&component),
                Some(Err(e)) if !is_fatal(&e) && !self.broken.load(Ordering::Acquire) => {
                    tracing::warn!(error = %e, "transaction aborted; events handled again")
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "transactions failed fatally");
                    self.publisher.health().degrade(
                        &component,
                        format!("transactions failed fatally ({e}); joining again with a new producer"),
                    );
                    self.fatal.notify_one();
                    self.aborts.send_modify(|n| *n += 1);
                    return;
                }
                None => tracing::error!("transaction thread panicked"),
            }
        }
    }

    /// Commits the open transaction with the handled offsets, then begins the next. The caller
    /// holds the gate exclusively. A commit that must abort is aborted and the partitions are
    /// rewound to the last committed offsets (their events are handled again, in a new
    /// transaction); a fatal error (fenced) is returned for the consumer to stop.
    fn commit_locked<C: ConsumerContext, K: rdkafka::consumer::Consumer<C>>(
        &self,
        consumer: &K,
    ) -> Result<(), KafkaError> {
        use rdkafka::producer::Producer as _;
        let doomed = std::mem::take(&mut *self.doomed.lock().unwrap_or_else(PoisonError::into_inner));
        if self.pending.load(Ordering::Acquire) == 0 && doomed.is_empty() {
            return Ok(());
        }
        let offsets = self.next.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let producer = self.publisher.producer();
        let mut list = rdkafka::TopicPartitionList::new();
        for (partition, offset) in &offsets {
            list.add_partition_offset(&self.topic, *partition, rdkafka::Offset::Offset(*offset))?;
        }
        let metadata = consumer.group_metadata().ok_or(KafkaError::Global(RDKafkaErrorCode::State))?;
        let deadline = Instant::now() + self.timeout;
        let mut outcome = if doomed.is_empty() {
            self.hooks.before_commit(&Transaction::new(&self.publisher)).map_err(|e| {
                tracing::warn!(error = %e, "before_commit hook failed: aborting the transaction");
                KafkaError::MessageProduction(RDKafkaErrorCode::Fail)
            })
        } else {
            // An event failed without a dead letter: committing would skip it.
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::Fail))
        };
        if outcome.is_ok() {
            outcome = loop {
                match producer.send_offsets_to_transaction(&list, &metadata, self.timeout) {
                    Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    other => break other,
                }
            };
        }
        if outcome.is_ok() {
            outcome = loop {
                match producer.commit_transaction(self.timeout) {
                    Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    other => break other,
                }
            };
        }
        match outcome {
            Ok(()) => {
                self.committed.lock().unwrap_or_else(PoisonError::into_inner).extend(offsets);
                self.pending.store(0, Ordering::Release);
                self.hooks.transaction_ended(true);
                producer.begin_transaction()
            }
            Err(e) if !is_fatal(&e) => {
                if let Err(failed) = producer.abort_transaction(self.timeout).and_then(|()| {
                    self.hooks.transaction_ended(false);
                    producer.begin_transaction()
                }) {
                    // This producer cannot go on: the consumer joins again with a new one.
                    tracing::error!(error = %failed, "cannot abort the transaction");
                    self.broken.store(true, Ordering::Release);
                    self.aborts.send_modify(|n| *n += 1);
                    return Err(failed);
                }
                let committed = self.committed.lock().unwrap_or_else(PoisonError::into_inner).clone();
                let cursors = self.cursors.lock().unwrap_or_else(PoisonError::into_inner);
                let mut rewound: Vec<i32> = offsets.keys().copied().chain(doomed).collect();
                rewound.sort_unstable();
                rewound.dedup();
                for partition in &rewound {
                    // Every partition with events in the transaction has a start (`started`). (A
                    // seek to the stored offset is not one librdkafka accepts: it fails with
                    // `Local: Invalid argument`, and the aborted events were never handled again.)
                    let Some(&to) = committed.get(partition) else {
                        tracing::error!(partition, "no offset to rewind to after an aborted transaction");
                        continue;
                    };
                    // First the cursor (its task then distrusts an event it is taking), then the seek.
                    if let Some(cursor) = cursors.get(partition) {
                        cursor.rewind(to);
                    }
                    if let Err(e) =
                        consumer.seek(&self.topic, *partition, rdkafka::Offset::Offset(to), self.timeout)
                    {
                        tracing::warn!(partition, error = %e, "rewinding after an aborted transaction");
                    }
                }
                drop(cursors);
                *self.next.lock().unwrap_or_else(PoisonError::into_inner) = committed;
                self.pending.store(0, Ordering::Release);
                self.aborts.send_modify(|n| *n += 1);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether a transaction error ends this producer (fenced, or fatal): the consumer must stop.
fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(e) => e.is_fatal() && !e.txn_requires_abort(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_skips_what_was_handled_and_follows_a_rewind() {
        let cursor = Cursor::new();
        assert!(cursor.admits(0), "a fresh cursor takes any offset");
        assert!(cursor.admits(41));
        cursor.advance(41);
        assert!(!cursor.admits(41), "an event handed out again is skipped");
        assert!(!cursor.admits(7));
        assert!(cursor.admits(42));
        // Offsets may jump (transaction markers, aborted records): later ones are taken.
        assert!(cursor.admits(45));
        cursor.advance(45);

        let before = cursor.rewinds();
        cursor.rewind(40);
        assert_ne!(cursor.rewinds(), before, "a rewind is seen by a task that took an event before it");
        assert!(cursor.admits(40), "after a rewind the rewound events are taken again");
        assert!(!cursor.admits(39));
        assert_eq!(cursor.resume_at(), rdkafka::Offset::Offset(40));
    }
}
