//! A [`Consumer`] and its builder methods: what it consumes, in which group, with which layers,
//! retries, budgets, bounds and delivery guarantee; and the per-event service it builds (a [`Stack`]).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use super::hooks::{ConsumerHooks, NoHooks};
use super::stack::Stack;
use crate::handler::{BoxedHandler, HandlerContext, HandlerError};
use crate::layer::Retry;
use crate::layer::naming::{dead_letter_topic, replays_to_source};
use crate::layer::{
    BudgetLayer, CatchPanicLayer, CorrelationLayer, DeadLetterLayer, EventService, HandlerService, Layers,
    RetryLayer, SchemaLayer, TimeoutLayer, TracingLayer,
};
use crate::publish::{Publisher, TRANSACTION_TIMEOUT};
use crate::runtime::Context;
use crate::topic::{TopicError, TopicSpec};

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
    /// The brokers refused the service's principal: it may not read the topic, or join its group
    /// (a missing ACL). Permanent: the consumer stops at the first refusal rather than retrying.
    #[error(
        "{principal} is not authorized to consume `{topic}` in group `{group}` ({code:?}); the \
         principal needs READ and DESCRIBE on the topic and READ on the group"
    )]
    NotAuthorized {
        /// The principal the brokers saw.
        principal: String,
        /// The topic.
        topic: String,
        /// The consumer group.
        group: String,
        /// Kafka's error code.
        code: rdkafka::types::RDKafkaErrorCode,
    },
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
    pub(super) topic: TopicSpec,
    pub(super) group: String,
    pub(super) dead_letters: TopicSpec,
    pub(super) handler: BoxedHandler<S>,
    pub(super) layers: Layers<S>,
    /// Layers between the budget and the retries, which see each event's final outcome (a
    /// responder's reply step).
    pub(super) around_retries: Layers<S>,
    pub(super) state: S,
    pub(super) retry: Retry,
    pub(super) timeout: Option<Duration>,
    /// All attempts of one event together (always set under exactly once).
    pub(super) budget: Option<Duration>,
    pub(super) concurrency: usize,
    pub(super) queue_kbytes: usize,
    pub(super) queue_messages: usize,
    pub(super) shutdown_budget: Duration,
    pub(super) client: ClientConfig,
    pub(super) hooks: Arc<dyn ConsumerHooks>,
    /// Exactly once: events per transaction (None: at least once).
    pub(super) transaction_size: Option<usize>,
    /// Exactly once: the longest a transaction stays open.
    pub(super) transaction_interval: Duration,
    /// Exactly once: a stable transactional id (default `<group>.<uuid>`, new per run).
    pub(super) transactional_id: Option<String>,
    /// The service's context: its publisher writes the dead letters and is the handlers'.
    pub(super) context: Context,
    /// Most records of lag with which the consumer is ready (None: lag does not count).
    pub(super) max_ready_lag: Option<u64>,
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
    /// Subscribes `handler` to `topic` for the context's service, in group `<service>.<handler>`
    /// (change it with [`in_group`](Self::in_group)). The service must be allowed to read `topic`
    /// and must own its dead-letter topic ([`dead_letter_topic`]); the context's publisher writes
    /// the dead letters and lends the handler's [`Publisher`] extractor.
    pub fn new(
        context: &Context,
        topic: &TopicSpec,
        handler: BoxedHandler<S>,
        state: S,
    ) -> Result<Self, ConsumeError> {
        let (config, spec) = (context.config(), context.spec());
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
        let group = format!("{}.{}", spec.name(), handler.name());
        // Replays come back on the source itself: those for another handler are not this one's.
        let layers = match replays_to_source(spec.name(), topic) {
            true => super::retry::skip_replays_for_others(handler.name()),
            false => Layers::new(),
        };
        Ok(Self {
            topic: topic.clone(),
            group,
            dead_letters,
            handler,
            layers,
            around_retries: Layers::new(),
            state,
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
            context: context.clone(),
            max_ready_lag: None,
        })
    }

    /// Adds `layers` above the retries (inside the budget): they see each event's final outcome,
    /// every attempt made (the responder's reply step, [`crate::request::responder`]).
    pub(crate) fn around_retries(mut self, layers: Layers<S>) -> Self {
        self.around_retries = std::mem::take(&mut self.around_retries).extend(&layers);
        self
    }

    /// Consumes in consumer group `group` instead of `<service>.<handler>`.
    pub fn in_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
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

    /// Makes the consumer not ready (`/readyz` 503, component `lag:<group>`) while its lag, the
    /// records behind on all its partitions together, exceeds `records` (default: off, lag does not
    /// count). Lag is measured from librdkafka's statistics, every `statistics.interval.ms`
    /// ([`crate::observe::STATISTICS_INTERVAL`] unless set with
    /// [`client_setting`](Self::client_setting)), so readiness follows it within that interval.
    /// Pick a budget a healthy instance never exceeds (minutes of traffic, not seconds): a replica
    /// out of rotation still consumes, it only stops getting HTTP traffic.
    pub fn max_ready_lag(mut self, records: u64) -> Self {
        self.max_ready_lag = Some(records);
        self
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
    pub(super) fn service(&self, publisher: &Publisher) -> Stack<S> {
        use tower::util::Either;
        let handler = self.handler.name();
        let bottom = HandlerService::new(self.handler.clone());
        // Your layers (if any) need a boxed service beneath them.
        let bottom = if self.layers.is_empty() {
            Either::Left(bottom)
        } else {
            Either::Right(self.layers.apply(BoxCloneSyncService::new(bottom)))
        };
        let retries = self.context.health().metrics().counter(
            "backbone_events_retried_total",
            &[
                (crate::observe::TOPIC, self.topic.name()),
                (crate::observe::GROUP, &self.group),
                (crate::observe::HANDLER, handler),
            ],
        );
        let retried = tower::ServiceBuilder::new()
            .layer(RetryLayer::new(self.retry).counting(retries))
            .layer(SchemaLayer::new(self.context.registry().clone()))
            .option_layer(self.timeout.map(TimeoutLayer::new))
            .layer(CatchPanicLayer)
            .service(bottom);
        // Layers around the retries (a responder's) need a boxed service beneath them too.
        let retried = if self.around_retries.is_empty() {
            Either::Left(retried)
        } else {
            Either::Right(self.around_retries.apply(BoxCloneSyncService::new(retried)))
        };
        tower::ServiceBuilder::new()
            .layer(TracingLayer::new(handler).group(&self.group))
            .layer(CorrelationLayer)
            .layer(
                DeadLetterLayer::new(self.dead_letters.clone(), publisher.clone(), handler, self.retry)
                    .counting(self.topic.name(), &self.group),
            )
            .layer(BudgetLayer::new(self.effective_event_budget()))
            .service(retried)
    }
}

/// The longest an event may take under exactly once, all attempts included: half the transaction
/// timeout, so the event's dead letter and the commit fit in the other half.
pub const MAX_EVENT_BUDGET: Duration = Duration::from_secs(TRANSACTION_TIMEOUT.as_secs() / 2);
