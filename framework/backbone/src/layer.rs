//! Middleware for handlers: [tower](https://docs.rs/tower) layers over the per-event service.
//!
//! Every event travels through a stack of [`tower::Service`]s whose request is the
//! [`HandlerContext`] and whose error is a [`HandlerError`]; the handler sits at the bottom
//! ([`HandlerService`]). A [`Consumer`](crate::consume::Consumer) builds this stack, outermost first:
//!
//! 1. [`TracingLayer`]: a span per event (`handler`, `topic`, `partition`, `offset`) that continues the
//!    producer's trace from its `traceparent` header (with [`crate::trace::TraceContextLayer`]
//!    installed), so what the handler publishes stays in the same trace;
//! 2. [`CorrelationLayer`]: the event's correlation id (its header, or `topic:partition:offset`)
//!    becomes the task's, so events the handler publishes carry it;
//! 3. [`DeadLetterLayer`]: a failure that comes back up is written to the dead-letter topic with the
//!    event's origin in headers (bounded: an event too large for it gets a truncated one), and the
//!    event counts as handled; if that write fails retriably it is retried with health degraded, a
//!    permanent failure is a `fatal:` health reason retried slowly, and the event is not done until
//!    it is written (with a transactional publisher, a failed write fails the event instead, for the
//!    consumer to abort the transaction);
//! 4. [`BudgetLayer`] (when set, and always under exactly once): all attempts of an event together
//!    get a time budget; past it the event fails permanently (kind `budget`);
//! 5. [`RetryLayer`]: retriable errors are retried with exponential backoff, up to a budget;
//! 6. [`TimeoutLayer`] (when set): a handler that takes too long fails retriably (kind `timeout`);
//! 7. [`CatchPanicLayer`]: a panicking handler is a permanent error of kind `panic`, not a dead
//!    process;
//! 8. your layers ([`Consumer::layer`](crate::consume::Consumer::layer), or [`Layers`] shared by
//!    every consumer of a service), then the handler.
//!
//! Each layer is public: a stack can be written by hand with `tower::ServiceBuilder`.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt as _;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt as _};

use crate::handler::{BoxedHandler, HandlerContext, HandlerError, IncomingEvent};
use crate::publish::{Outgoing, PublishError, Publisher};
use crate::topic::TopicSpec;

/// The per-event service, boxed: what layers wrap and what the consumer calls.
pub type EventService<S> = BoxCloneSyncService<HandlerContext<S>, (), HandlerError>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The handler as a [`tower::Service`]: the bottom of every stack.
#[derive(Debug)]
pub struct HandlerService<S> {
    handler: BoxedHandler<S>,
}

impl<S> HandlerService<S> {
    /// Wraps `handler`.
    pub fn new(handler: BoxedHandler<S>) -> Self {
        Self { handler }
    }
}

impl<S> Clone for HandlerService<S> {
    fn clone(&self) -> Self {
        Self { handler: self.handler.clone() }
    }
}

impl<S> Service<HandlerContext<S>> for HandlerService<S> {
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<Result<(), HandlerError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, cx: HandlerContext<S>) -> Self::Future {
        self.handler.call(cx)
    }
}

/// Layers to apply to every consumer of a service (say, a metrics layer), in the order added: the
/// first added is outermost. Cheap to clone.
pub struct Layers<S> {
    layers: Vec<WrapFn<S>>,
}

/// One layer, erased: wraps an event service in another.
type WrapFn<S> = Arc<dyn Fn(EventService<S>) -> EventService<S> + Send + Sync>;

impl<S> Default for Layers<S> {
    fn default() -> Self {
        Self { layers: Vec::new() }
    }
}

impl<S> Clone for Layers<S> {
    fn clone(&self) -> Self {
        Self { layers: self.layers.clone() }
    }
}

impl<S> fmt::Debug for Layers<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layers").field("count", &self.layers.len()).finish()
    }
}

impl<S: Send + 'static> Layers<S> {
    /// No layers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `layer` inside the ones added before.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<EventService<S>> + Send + Sync + 'static,
        L::Service:
            Service<HandlerContext<S>, Response = (), Error = HandlerError> + Clone + Send + Sync + 'static,
        <L::Service as Service<HandlerContext<S>>>::Future: Send + 'static,
    {
        self.layers.push(Arc::new(move |inner| BoxCloneSyncService::new(layer.layer(inner))));
        self
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// These layers, then `more`'s inside them.
    pub fn extend(mut self, more: &Layers<S>) -> Self {
        self.layers.extend(more.layers.iter().cloned());
        self
    }

    /// Wraps `service` in these layers.
    pub fn apply(&self, service: EventService<S>) -> EventService<S> {
        self.layers.iter().rev().fold(service, |inner, layer| layer(inner))
    }
}

/// Turns a panicking handler into a permanent [`HandlerError`] of kind `panic`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<I> Layer<I> for CatchPanicLayer {
    type Service = CatchPanic<I>;

    fn layer(&self, inner: I) -> CatchPanic<I> {
        CatchPanic { inner }
    }
}

/// See [`CatchPanicLayer`].
#[derive(Debug, Clone)]
pub struct CatchPanic<I> {
    inner: I,
}

impl<I, R> Service<R> for CatchPanic<I>
where
    I: Service<R, Response = (), Error = HandlerError>,
    I::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = CatchPanicFuture<I::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        // A panic while the future is being created counts too.
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => {
                CatchPanicFuture { call: Some(AssertUnwindSafe(future).catch_unwind()), panic: None }
            }
            Err(panic) => CatchPanicFuture { call: None, panic: Some(panic) },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`CatchPanic`]: the handler's, with a panic turned into an error.
    pub struct CatchPanicFuture<F> {
        #[pin]
        call: Option<futures::future::CatchUnwind<AssertUnwindSafe<F>>>,
        panic: Option<Box<dyn std::any::Any + Send>>,
    }
}

impl<F> fmt::Debug for CatchPanicFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatchPanicFuture").finish_non_exhaustive()
    }
}

impl<F: Future<Output = Result<(), HandlerError>>> Future for CatchPanicFuture<F> {
    type Output = Result<(), HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = match this.call.as_pin_mut() {
            Some(call) => std::task::ready!(call.poll(cx)),
            None => Err(this.panic.take().expect("CatchPanicFuture polled after completion")),
        };
        Poll::Ready(outcome.unwrap_or_else(|panic| {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_owned());
            Err(HandlerError::permanent(format!("handler panicked: {text}")).with_kind("panic"))
        }))
    }
}

/// Fails a handler that takes longer than a limit: a retriable [`HandlerError`] of kind `timeout`
/// (the handler's future is dropped).
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// A limit of `limit` per attempt.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<I> Layer<I> for TimeoutLayer {
    type Service = Timeout<I>;

    fn layer(&self, inner: I) -> Timeout<I> {
        Timeout { inner, limit: self.limit }
    }
}

/// See [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<I> {
    inner: I,
    limit: Duration,
}

impl<I, R> Service<R> for Timeout<I>
where
    I: Service<R, Response = (), Error = HandlerError>,
{
    type Response = ();
    type Error = HandlerError;
    type Future = TimeoutFuture<I::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        TimeoutFuture { call: tokio::time::timeout(self.limit, self.inner.call(request)), limit: self.limit }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Timeout`]: the handler's, failed with a retriable `timeout` error once the
    /// limit passes (no allocation per event).
    #[derive(Debug)]
    pub struct TimeoutFuture<F> {
        #[pin]
        call: tokio::time::Timeout<F>,
        limit: Duration,
    }
}

impl<F: Future<Output = Result<(), HandlerError>>> Future for TimeoutFuture<F> {
    type Output = Result<(), HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.call.poll(cx).map(|done| {
            done.unwrap_or_else(|_| {
                Err(HandlerError::retriable(format!("handler took longer than {:?}", this.limit))
                    .with_kind("timeout"))
            })
        })
    }
}

/// Bounds the whole of an event's handling, every attempt and backoff of the retry layer beneath
/// included: past the budget the event fails permanently (kind `budget`) and the dead-letter layer
/// above takes it, so one slow or stuck event cannot hold its partition, or an open transaction,
/// indefinitely.
///
/// Exactly-once consumers always have one below the transaction timeout
/// ([`Consumer::event_budget`](crate::consume::Consumer::event_budget)): a handler still running
/// when the broker aborts its transaction would make every later event of the transaction fail and
/// the same event run again after the rewind, for ever.
#[derive(Debug, Clone, Copy)]
pub struct BudgetLayer {
    budget: Option<Duration>,
}

impl BudgetLayer {
    /// At most `budget` per event (`None`: unbounded, the layer does nothing).
    pub fn new(budget: Option<Duration>) -> Self {
        Self { budget }
    }
}

impl<I> Layer<I> for BudgetLayer {
    type Service = Budget<I>;

    fn layer(&self, inner: I) -> Budget<I> {
        Budget { inner, budget: self.budget }
    }
}

/// See [`BudgetLayer`].
#[derive(Debug, Clone)]
pub struct Budget<I> {
    inner: I,
    budget: Option<Duration>,
}

impl<I, R> Service<R> for Budget<I>
where
    I: Service<R, Response = (), Error = HandlerError>,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BudgetFuture<I::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        BudgetFuture {
            call: self.inner.call(request),
            expiry: self.budget.map(tokio::time::sleep),
            budget: self.budget.unwrap_or_default(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Budget`]: the inner service's, failed permanently (kind `budget`) once the
    /// budget has passed (no allocation per event).
    #[derive(Debug)]
    pub struct BudgetFuture<F> {
        #[pin]
        call: F,
        #[pin]
        expiry: Option<tokio::time::Sleep>,
        budget: Duration,
    }
}

impl<F: Future<Output = Result<(), HandlerError>>> Future for BudgetFuture<F> {
    type Output = Result<(), HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(done) = this.call.poll(cx) {
            return Poll::Ready(done);
        }
        match this.expiry.as_pin_mut().map(|expiry| expiry.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(HandlerError::permanent(format!(
                "not handled within its time budget of {:?} (all attempts included)",
                this.budget
            ))
            .with_kind("budget"))),
            _ => Poll::Pending,
        }
    }
}

/// Retry policy for retriable handler errors.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub initial_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
}

impl Retry {
    /// The backoff after `current`: doubled, capped at `max_backoff`.
    pub(crate) fn next_backoff(&self, current: Duration) -> Duration {
        (current * 2).min(self.max_backoff)
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Retries retriable errors with exponential backoff ([`Retry`]); the error that comes out records
/// the attempts made ([`HandlerError::attempts`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryLayer {
    retry: Retry,
}

impl RetryLayer {
    /// Retries as `retry` says.
    pub fn new(retry: Retry) -> Self {
        Self { retry }
    }
}

impl<I: Clone> Layer<I> for RetryLayer {
    type Service = RetryService<I>;

    fn layer(&self, inner: I) -> RetryService<I> {
        RetryService { spare: Arc::new(inner.clone()), inner, retry: self.retry }
    }
}

/// See [`RetryLayer`].
#[derive(Debug)]
pub struct RetryService<I> {
    inner: I,
    /// What retries clone from, behind a reference count of this copy's own: every event's first
    /// attempt takes a reference to it instead of cloning the services beneath (whose shared
    /// reference counts every partition would bump).
    spare: Arc<I>,
    retry: Retry,
}

impl<I: Clone> Clone for RetryService<I> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), spare: Arc::new((*self.spare).clone()), retry: self.retry }
    }
}

impl<I, S> Service<HandlerContext<S>> for RetryService<I>
where
    I: Service<HandlerContext<S>, Response = (), Error = HandlerError> + Clone + Send + 'static,
    I::Future: Send + 'static,
    S: Clone + Send + Sync + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = RetryFuture<I::Future, I, S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, cx: HandlerContext<S>) -> Self::Future {
        // The first attempt uses the service that was made ready; later ones a ready clone.
        if self.retry.max_attempts <= 1 {
            return RetryFuture { first: self.inner.call(cx), again: None, rest: None };
        }
        let first = self.inner.call(cx.clone());
        RetryFuture { first, again: Some((self.spare.clone(), cx, self.retry)), rest: None }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RetryService`]: the first attempt unboxed; the retries, if it fails
    /// retriably, in a boxed future of their own.
    pub struct RetryFuture<F, I, S> {
        #[pin]
        first: F,
        again: Option<(Arc<I>, HandlerContext<S>, Retry)>,
        rest: Option<BoxFuture<Result<(), HandlerError>>>,
    }
}

impl<F, I, S> fmt::Debug for RetryFuture<F, I, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryFuture").field("retrying", &self.rest.is_some()).finish_non_exhaustive()
    }
}

impl<F, I, S> Future for RetryFuture<F, I, S>
where
    F: Future<Output = Result<(), HandlerError>>,
    I: Service<HandlerContext<S>, Response = (), Error = HandlerError> + Clone + Send + 'static,
    I::Future: Send + 'static,
    S: Clone + Send + Sync + 'static,
{
    type Output = Result<(), HandlerError>;

    fn poll(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.rest.is_none() {
            // The first attempt is not polled again once it has finished.
            match std::task::ready!(this.first.poll(task)) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if e.is_retriable() && this.again.is_some() => {
                    let (inner, cx, retry) = this.again.take().expect("checked");
                    *this.rest = Some(Box::pin(retry_after((*inner).clone(), cx, retry, e)));
                }
                Err(e) => return Poll::Ready(Err(e.with_attempts(1))),
            }
        }
        this.rest.as_mut().expect("set above").as_mut().poll(task)
    }
}

/// The attempts after a first one that failed retriably with `first`.
async fn retry_after<I, S>(
    inner: I,
    cx: HandlerContext<S>,
    retry: Retry,
    first: HandlerError,
) -> Result<(), HandlerError>
where
    I: Service<HandlerContext<S>, Response = (), Error = HandlerError> + Clone,
    S: Clone,
{
    let mut outcome = Err(first);
    let mut attempts = 1;
    let mut backoff = retry.initial_backoff;
    loop {
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retriable() && attempts < retry.max_attempts => {
                tracing::warn!(attempts, error = %e, "retrying");
                tokio::time::sleep(backoff).await;
                backoff = retry.next_backoff(backoff);
                attempts += 1;
                outcome = inner.clone().oneshot(cx.clone()).await;
            }
            Err(e) => return Err(e.with_attempts(attempts)),
        }
    }
}

/// Sets the task's correlation id for the handler: the event's `backbone-correlation-id` header, or
/// `topic:partition:offset` when it has none. Events the handler publishes carry it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CorrelationLayer;

impl<I> Layer<I> for CorrelationLayer {
    type Service = Correlation<I>;

    fn layer(&self, inner: I) -> Correlation<I> {
        Correlation { inner }
    }
}

/// See [`CorrelationLayer`].
#[derive(Debug, Clone)]
pub struct Correlation<I> {
    inner: I,
}

impl<I, S> Service<HandlerContext<S>> for Correlation<I>
where
    I: Service<HandlerContext<S>, Response = (), Error = HandlerError>,
    I::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = tokio::task::futures::TaskLocalFuture<crate::trace::Correlation, I::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, cx: HandlerContext<S>) -> Self::Future {
        // Worked out from the event only if the handler asks (by publishing): no allocation here.
        let correlation = crate::trace::Correlation::of_event(cx.event_arc().clone());
        crate::trace::scope_correlation(correlation, self.inner.call(cx))
    }
}

/// A `tracing` span per event, named `event`, with the handler's name and the event's topic,
/// partition and offset; its `traceparent` field (the event's header) lets
/// [`crate::trace::TraceContextLayer`] continue the producer's trace.
#[derive(Debug, Clone)]
pub struct TracingLayer {
    handler: Arc<str>,
}

impl TracingLayer {
    /// Spans name the handler `handler`.
    pub fn new(handler: &str) -> Self {
        Self { handler: handler.into() }
    }
}

impl<I> Layer<I> for TracingLayer {
    type Service = Tracing<I>;

    fn layer(&self, inner: I) -> Tracing<I> {
        Tracing { inner, handler: self.handler.clone() }
    }
}

/// See [`TracingLayer`].
#[derive(Debug, Clone)]
pub struct Tracing<I> {
    inner: I,
    handler: Arc<str>,
}

impl<I, S> Service<HandlerContext<S>> for Tracing<I>
where
    I: Service<HandlerContext<S>, Response = (), Error = HandlerError>,
    I::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = tracing::instrument::Instrumented<I::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, cx: HandlerContext<S>) -> Self::Future {
        use tracing::Instrument as _;
        let event = cx.event();
        // The macro works its fields out only for an enabled span, or for `log` when no tracing
        // subscriber was ever set (tracing's `log` feature, which axum's default features turn on):
        // the event's headers are parsed only when a subscriber may want the trace context.
        let span = tracing::info_span!(
            "event",
            handler = &*self.handler,
            topic = event.topic(),
            partition = event.partition(),
            offset = event.offset(),
            traceparent = if tracing::dispatcher::has_been_set() {
                event
                    .header(crate::trace::TRACEPARENT)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .unwrap_or("")
            } else {
                ""
            },
        );
        let call = {
            let _entered = span.enter();
            self.inner.call(cx)
        };
        call.instrument(span)
    }
}

/// Fetches the writer's schema of a schema-framed payload (once per schema id) before the handler
/// runs, so decoding an Avro event stays synchronous and per-message work is cached codecs only.
///
/// - The writer's schema must be one of the topic's ([`Registry::check_topic`]): a record naming
///   another subject's schema id is a permanent error of kind `foreign-schema-id`, and an id the
///   registry does not know one of kind `unknown-schema-id` (both dead-lettered, R12).
/// - While the registry cannot be reached (or answers 5xx), the event waits: it is asked again with
///   backoff (from [`REGISTRY_BACKOFF`] up to [`REGISTRY_MAX_BACKOFF`]) for as long as it takes, its
///   partition waits behind it, and health is degraded (component [`REGISTRY_COMPONENT`]) until the
///   registry answers; nothing is dead-lettered for an outage. The wait is plain async code: stopping
///   the partition (shutdown, revocation) drops it.
///
/// [`Registry::check_topic`]: crate::schema::Registry::check_topic
#[derive(Debug, Clone)]
pub struct SchemaLayer {
    registry: crate::schema::Registry,
}

/// The health component degraded while the schema registry cannot be reached.
pub const REGISTRY_COMPONENT: &str = "schema-registry";

/// The [`HandlerError::kind`] of an event whose schema could not be checked because the registry
/// is unreachable, under exactly once: the event is not dead-lettered; its consumer aborts the open
/// transaction and its partition waits for the registry outside any transaction (a wait inside one
/// would outlive the transaction's timeout).
pub const REGISTRY_UNAVAILABLE: &str = "registry-unavailable";

/// The first wait before asking an unreachable registry again; it doubles each time.
pub const REGISTRY_BACKOFF: Duration = Duration::from_millis(200);

/// The longest wait between two questions to an unreachable registry: how late, at most, a partition
/// notices that the registry is back.
pub const REGISTRY_MAX_BACKOFF: Duration = Duration::from_secs(5);

impl SchemaLayer {
    /// Resolves writer schemas through `registry`.
    pub fn new(registry: crate::schema::Registry) -> Self {
        Self { registry }
    }
}

impl<I> Layer<I> for SchemaLayer {
    type Service = Schemas<I>;

    fn layer(&self, inner: I) -> Schemas<I> {
        Schemas { inner, registry: self.registry.clone(), accepted: Arc::default(), waiting: Arc::default() }
    }
}

/// Schema ids found to belong to a topic, with the topics (a consumer reads one).
type Accepted = Arc<std::sync::RwLock<std::collections::HashMap<crate::schema::SchemaId, Vec<Arc<str>>>>>;

/// See [`SchemaLayer`].
#[derive(Debug, Clone)]
pub struct Schemas<I> {
    inner: I,
    registry: crate::schema::Registry,
    /// Ids checked against their topic already: their events go straight through. Bounded by the
    /// ids the registry holds for the topic's subjects (refused ids are not kept here).
    accepted: Accepted,
    /// How many of this layer's events wait for the registry: the last one to stop waiting (it got
    /// its answer, or its partition was stopped) recovers health.
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

/// One event waiting for the registry; health recovers when the last such event stops waiting,
/// however it stops (answered, or dropped with its partition).
struct Waiting {
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    health: Option<crate::health::HealthState>,
}

impl Waiting {
    fn new(waiting: Arc<std::sync::atomic::AtomicUsize>, health: Option<crate::health::HealthState>) -> Self {
        waiting.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self { waiting, health }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.waiting.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1
            && let Some(health) = &self.health
        {
            health.recover(REGISTRY_COMPONENT);
        }
    }
}

fn is_accepted(accepted: &Accepted, id: crate::schema::SchemaId, topic: &str) -> bool {
    let accepted = accepted.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    accepted.get(&id).is_some_and(|topics| topics.iter().any(|t| **t == *topic))
}

impl<I, S> Service<HandlerContext<S>> for Schemas<I>
where
    I: Service<HandlerContext<S>, Response = (), Error = HandlerError> + Clone + Send + 'static,
    I::Future: Send + 'static,
    S: Send + Sync + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = futures::future::Either<I::Future, BoxFuture<Result<(), HandlerError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, cx: HandlerContext<S>) -> Self::Future {
        use futures::future::Either;
        let event = cx.event();
        let Some(id) = event
            .payload()
            .and_then(|p| crate::schema::wire::split(p).ok())
            .map(|(id, _)| id)
            .filter(|id| !is_accepted(&self.accepted, *id, event.topic()))
        else {
            // Not framed, or its schema is known for this topic already: straight through, nothing boxed.
            return Either::Left(self.inner.call(cx));
        };
        // The ready service goes with this call; a clone stays for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (registry, accepted, waiting) =
            (self.registry.clone(), self.accepted.clone(), self.waiting.clone());
        Either::Right(Box::pin(async move {
            let event = cx.event();
            let health = cx.publisher().map(|p| p.health().clone());
            let transactional = cx.publisher().is_some_and(crate::publish::Publisher::is_transactional);
            let mut waited = None;
            let checked = if transactional {
                // Inside a transaction no wait: the consumer aborts it and waits outside.
                registry.check_topic(id, crate::consume::retry::contract_topic(event.topic())).await
            } else {
                check_schema_waiting(&registry, id, event, health.as_ref(), "", || {
                    waited.get_or_insert_with(|| Waiting::new(waiting.clone(), health.clone()));
                })
                .await
            };
            match checked {
                Ok(()) => {}
                Err(e) if e.is_retriable() => {
                    return Err(HandlerError::retriable(e).with_kind(REGISTRY_UNAVAILABLE));
                }
                Err(e) => {
                    let kind = e.kind();
                    return Err(HandlerError::permanent(e).with_kind(kind));
                }
            }
            drop(waited);
            {
                let mut accepted = accepted.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                let topics = accepted.entry(id).or_default();
                if !topics.iter().any(|t| **t == *event.topic()) {
                    topics.push(event.topic().into());
                }
            }
            inner.call(cx).await
        }))
    }
}

/// Checks `event`'s writer schema `id` against its topic's contract, waiting while the registry is
/// unreachable: backoff [`REGISTRY_BACKOFF`] doubling to [`REGISTRY_MAX_BACKOFF`], `health` degraded
/// ([`REGISTRY_COMPONENT`]) with a reason naming the partition and offset (then `note`), and
/// `waiting` called before each wait. The first answer that is not "unreachable".
pub(crate) async fn check_schema_waiting(
    registry: &crate::schema::Registry,
    id: crate::schema::SchemaId,
    event: &IncomingEvent,
    health: Option<&crate::health::HealthState>,
    note: &str,
    mut waiting: impl FnMut(),
) -> Result<(), crate::schema::SchemaError> {
    let mut backoff = REGISTRY_BACKOFF;
    loop {
        match registry.check_topic(id, crate::consume::retry::contract_topic(event.topic())).await {
            Err(e) if e.is_retriable() => {
                let reason = format!(
                    "{e}; partition {}:{} waits at offset {} for schema {id}{note}",
                    event.topic(),
                    event.partition(),
                    event.offset()
                );
                tracing::warn!(%reason, retry_in = ?backoff, "schema registry unavailable");
                if let Some(health) = health {
                    health.degrade(REGISTRY_COMPONENT, reason);
                }
                waiting();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(REGISTRY_MAX_BACKOFF);
            }
            answer => return answer,
        }
    }
}

/// Header names on a dead-lettered event.
pub mod dead_letter_headers {
    /// The topic the event came from.
    pub const ORIGIN_TOPIC: &str = "backbone-dlq-origin-topic";
    /// Its partition.
    pub const ORIGIN_PARTITION: &str = "backbone-dlq-origin-partition";
    /// Its offset.
    pub const ORIGIN_OFFSET: &str = "backbone-dlq-origin-offset";
    /// Its key (also the dead letter's key).
    pub const ORIGIN_KEY: &str = "backbone-dlq-origin-key";
    /// What kind of failure (`undecodable`, `handler`, `panic`, `timeout` …).
    pub const ERROR_KIND: &str = "backbone-dlq-error-kind";
    /// The error message (at most [`DeadLetterLayer::MAX_ERROR_BYTES`](super::DeadLetterLayer::MAX_ERROR_BYTES)).
    pub const ERROR_MESSAGE: &str = "backbone-dlq-error-message";
    /// The handler that failed.
    pub const HANDLER: &str = "backbone-dlq-handler";
    /// How many times it was tried.
    pub const ATTEMPTS: &str = "backbone-dlq-attempts";
    /// Prefix of the original event's headers, each kept as `backbone-dlq-original-<name>` (the dead
    /// letter's own publish headers would otherwise shadow the original's); `backbone dlq replay`
    /// restores them. At most [`DeadLetterLayer::MAX_COPIED_HEADERS`](super::DeadLetterLayer::MAX_COPIED_HEADERS)
    /// of them, [`DeadLetterLayer::MAX_COPIED_HEADER_BYTES`](super::DeadLetterLayer::MAX_COPIED_HEADER_BYTES)
    /// in all, are copied; a name that is not UTF-8 is copied lossily.
    pub const ORIGINAL_PREFIX: &str = "backbone-dlq-original-";
    /// How many of the original event's headers were not copied (present only when some were not).
    pub const HEADERS_DROPPED: &str = "backbone-dlq-headers-dropped";
    /// Present (`true`) on a truncated dead letter: the event was too large to be written whole, so
    /// its payload (and a key longer than [`DeadLetterLayer::TRUNCATED_KEY_BYTES`](super::DeadLetterLayer::TRUNCATED_KEY_BYTES))
    /// is cut to a prefix. It cannot be replayed as it is.
    pub const TRUNCATED: &str = "backbone-dlq-truncated";
    /// On a truncated dead letter: the original payload's size in bytes.
    pub const ORIGINAL_SIZE: &str = "backbone-dlq-original-size";
    /// On a truncated dead letter: the original key's size in bytes.
    pub const ORIGINAL_KEY_SIZE: &str = "backbone-dlq-original-key-size";
}

/// Writes events whose handling failed to a dead-letter topic, with their origin in headers
/// ([`dead_letter_headers`]), the original key and bytes; the event then counts as handled.
///
/// A dead letter is bounded whatever the event: at most [`MAX_COPIED_HEADERS`](Self::MAX_COPIED_HEADERS)
/// of its headers ([`MAX_COPIED_HEADER_BYTES`](Self::MAX_COPIED_HEADER_BYTES) in all) are copied and
/// the error message is cut at [`MAX_ERROR_BYTES`](Self::MAX_ERROR_BYTES). An event too large to be
/// written whole (over the producer's `message.max.bytes`, known before sending, or refused by the
/// broker for the dead-letter topic's `max.message.bytes`) gets a **truncated** dead letter instead:
/// the same origin and error headers, the first [`TRUNCATED_PAYLOAD_BYTES`](Self::TRUNCATED_PAYLOAD_BYTES)
/// of its payload, and headers saying it was truncated and the original sizes
/// ([`dead_letter_headers::TRUNCATED`]). It is written once; the partition flows on.
///
/// If the write fails otherwise, the event is not done (its offset is not stored):
/// - a **retriable** error (timeouts, unavailable leaders …) or a denied write (an ACL, which an
///   operator may grant) is retried with the [`Retry`] backoff, without limit, health degraded
///   (`dead-letters:<topic>`, "cannot write dead letter for `<topic>:<partition>:<offset>` (…);
///   partition paused"); once it succeeds the partition resumes and health recovers;
/// - a **permanent** error (the producer failed fatally, the topic is not the service's, the broker
///   refuses the record as invalid …) cannot be fixed by retrying: health is degraded with a reason
///   starting `fatal:` that names the event and the error, and the write is tried again only every
///   [`PERMANENT_RETRY`](Self::PERMANENT_RETRY) (never a tight loop), the partition paused, until an
///   operator fixes the cause or restarts the service.
///
/// # Exactly once
///
/// With a transactional publisher (the exactly-once consumer's), the dead letter belongs to the
/// open transaction, and a failed write there means the transaction cannot commit (librdkafka
/// refuses further writes until it is aborted; a fenced or fatally failed producer writes nothing
/// more). So the write is **not** retried: unless it was refused before reaching the producer (a
/// topic the service does not own, a closed publisher: permanent, as above), the layer's future
/// resolves at once to a retriable [`HandlerError`] of kind `transaction` naming the event and the
/// error, for the consumer to abort the transaction and handle the events again from the last
/// commit (the consumer must not store offsets past such an event). Only a size error is handled
/// in place (the truncated dead letter is written instead); should the broker's refusal have broken
/// the transaction already, the event is remembered, and its next dead letter is truncated from the
/// start.
#[derive(Debug, Clone)]
pub struct DeadLetterLayer {
    target: Arc<DeadLetterTarget>,
}

/// Where an event was read: topic, partition, offset.
type Position = (Arc<str>, i32, i64);

#[derive(Debug, Clone)]
struct DeadLetterTarget {
    topic: TopicSpec,
    publisher: Publisher,
    handler: Arc<str>,
    retry: Retry,
    component: String,
    /// Events whose whole dead letter was refused for its size (shared by every partition's copy).
    too_large: Arc<std::sync::Mutex<std::collections::VecDeque<Position>>>,
    /// Exactly once: events that ran out of their time budget, and how often (the last few).
    over_budget: Arc<std::sync::Mutex<std::collections::VecDeque<(Position, u32)>>>,
}

impl DeadLetterLayer {
    /// Exactly once: how many times an event may run out of its time budget before it is
    /// dead-lettered. Each time before that its transaction is aborted and it runs again in a fresh
    /// one (a handler waiting for a partition's previous owner, or a slow dependency, gets another
    /// chance); an event that never finishes is dead-lettered on its third try.
    pub const BUDGET_TRIES: u32 = 3;

    /// Most of an event's headers copied onto its dead letter.
    pub const MAX_COPIED_HEADERS: usize = 64;
    /// Most bytes (names and values) of an event's headers copied onto its dead letter.
    pub const MAX_COPIED_HEADER_BYTES: usize = 16 * 1024;
    /// Longest error message on a dead letter, in bytes.
    pub const MAX_ERROR_BYTES: usize = 4 * 1024;
    /// The payload prefix a truncated dead letter keeps, in bytes.
    pub const TRUNCATED_PAYLOAD_BYTES: usize = 64 * 1024;
    /// The key prefix a truncated dead letter keeps, in bytes.
    pub const TRUNCATED_KEY_BYTES: usize = 1024;
    /// How often a dead letter that failed with a permanent error is tried again.
    pub const PERMANENT_RETRY: Duration = Duration::from_secs(30);

    /// Dead letters of `handler` go to `topic` through `publisher` (which must be allowed to write
    /// it); failed writes are retried as the type's documentation says, with `retry`'s backoff.
    pub fn new(topic: TopicSpec, publisher: Publisher, handler: &str, retry: Retry) -> Self {
        let component = format!("dead-letters:{}", topic.name());
        Self {
            target: Arc::new(DeadLetterTarget {
                topic,
                publisher,
                handler: handler.into(),
                retry,
                component,
                too_large: Arc::default(),
                over_budget: Arc::default(),
            }),
        }
    }
}

impl<I> Layer<I> for DeadLetterLayer {
    type Service = DeadLetter<I>;

    fn layer(&self, inner: I) -> DeadLetter<I> {
        DeadLetter { inner, target: self.target.clone() }
    }
}

/// See [`DeadLetterLayer`].
#[derive(Debug)]
pub struct DeadLetter<I> {
    inner: I,
    target: Arc<DeadLetterTarget>,
}

impl<I: Clone> Clone for DeadLetter<I> {
    /// A copy with a target of its own: each partition's stack then bumps a reference count of its
    /// own for every event, not one that all partitions share.
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), target: Arc::new((*self.target).clone()) }
    }
}

impl<I, S> Service<HandlerContext<S>> for DeadLetter<I>
where
    I: Service<HandlerContext<S>, Response = (), Error = HandlerError>,
    I::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = DeadLetterFuture<I::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, cx: HandlerContext<S>) -> Self::Future {
        let event = cx.event_arc().clone();
        DeadLetterFuture { call: self.inner.call(cx), event, target: self.target.clone(), writing: None }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`DeadLetter`]: the handler's, then (if it failed) the dead letter's write.
    pub struct DeadLetterFuture<F> {
        #[pin]
        call: F,
        event: Arc<IncomingEvent>,
        target: Arc<DeadLetterTarget>,
        writing: Option<BoxFuture<Result<(), HandlerError>>>,
    }
}

impl<F> fmt::Debug for DeadLetterFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterFuture").field("writing", &self.writing.is_some()).finish_non_exhaustive()
    }
}

impl<F: Future<Output = Result<(), HandlerError>>> Future for DeadLetterFuture<F> {
    type Output = Result<(), HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.writing.is_none() {
            // The handler's future is not polled again once it has finished.
            let Err(error) = std::task::ready!(this.call.poll(cx)) else { return Poll::Ready(Ok(())) };
            if error.kind() == REGISTRY_UNAVAILABLE && this.target.publisher.is_transactional() {
                // Not the event's fault: its consumer waits for the registry (see the constant).
                return Poll::Ready(Err(error));
            }
            if error.kind() == "budget"
                && this.target.publisher.is_transactional()
                && this.target.over_budget(this.event) < DeadLetterLayer::BUDGET_TRIES
            {
                // Another try, in a fresh transaction once the consumer has aborted this one.
                return Poll::Ready(Err(error));
            }
            let (target, event) = (this.target.clone(), this.event.clone());
            *this.writing = Some(Box::pin(async move { target.write(&event, &error).await }));
        }
        let writing = this.writing.as_mut().expect("set above");
        writing.as_mut().poll(cx)
    }
}

/// Bytes librdkafka counts for a header: its name and value and their length prefixes.
fn header_size(name: usize, value: usize) -> usize {
    name + value + 10
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A dead letter's key, payload and headers, bounded (see [`DeadLetterLayer`]).
struct Letter<'a> {
    key: &'a [u8],
    payload: &'a [u8],
    /// Header names and values; the names of copied headers are owned.
    headers: Vec<(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, [u8]>)>,
    truncated: bool,
}

impl<'a> Letter<'a> {
    /// The dead letter of `event`, which failed with `error` in `handler`: truncated if `truncate`,
    /// or if it would not fit in `max_bytes`.
    fn new(
        event: &'a IncomingEvent,
        error: &HandlerError,
        handler: &str,
        truncate: bool,
        max_bytes: usize,
    ) -> Self {
        use std::borrow::Cow;

        use dead_letter_headers as h;
        let key = event.key().unwrap_or_default();
        let payload = event.payload().unwrap_or_default();
        let message = error.to_string();
        let mut headers: Vec<(Cow<'a, str>, Cow<'a, [u8]>)> = vec![
            (h::ORIGIN_TOPIC.into(), Cow::Borrowed(event.topic().as_bytes())),
            (h::ORIGIN_PARTITION.into(), Cow::Owned(event.partition().to_string().into_bytes())),
            (h::ORIGIN_OFFSET.into(), Cow::Owned(event.offset().to_string().into_bytes())),
            (h::ERROR_KIND.into(), Cow::Owned(error.kind().as_bytes().to_vec())),
            (
                h::ERROR_MESSAGE.into(),
                Cow::Owned(cut(&message, DeadLetterLayer::MAX_ERROR_BYTES).as_bytes().to_vec()),
            ),
            (h::HANDLER.into(), Cow::Owned(handler.as_bytes().to_vec())),
            (h::ATTEMPTS.into(), Cow::Owned(error.attempts().to_string().into_bytes())),
        ];
        let (mut copied, mut copied_bytes, mut dropped) = (0, 0, 0usize);
        for (name, value) in event.raw_headers() {
            let size = h::ORIGINAL_PREFIX.len() + name.len() + value.len();
            if copied == DeadLetterLayer::MAX_COPIED_HEADERS
                || copied_bytes + size > DeadLetterLayer::MAX_COPIED_HEADER_BYTES
            {
                dropped += 1;
                continue;
            }
            copied += 1;
            copied_bytes += size;
            let name = format!("{}{}", h::ORIGINAL_PREFIX, String::from_utf8_lossy(name));
            headers.push((Cow::Owned(name), Cow::Borrowed(value)));
        }
        if dropped > 0 {
            headers.push((h::HEADERS_DROPPED.into(), Cow::Owned(dropped.to_string().into_bytes())));
        }
        // What librdkafka counts against `message.max.bytes`: key, payload, our headers, the key
        // header, and the publisher's own (event type, producer, correlation id, traceparent).
        let correlation = crate::trace::correlation_id().map_or(32, |c| c.len());
        let own = headers.iter().map(|(n, v)| header_size(n.len(), v.len())).sum::<usize>()
            + 4 * header_size(32, 0)
            + correlation
            + 55
            + 64;
        let whole = own + 2 * key.len() + header_size(h::ORIGIN_KEY.len(), 0) + payload.len();
        let truncated = truncate || whole > max_bytes;
        let (key, payload) = if truncated {
            headers.push((h::TRUNCATED.into(), Cow::Borrowed(b"true")));
            headers.push((h::ORIGINAL_SIZE.into(), Cow::Owned(payload.len().to_string().into_bytes())));
            if key.len() > DeadLetterLayer::TRUNCATED_KEY_BYTES {
                headers.push((h::ORIGINAL_KEY_SIZE.into(), Cow::Owned(key.len().to_string().into_bytes())));
            }
            (
                &key[..key.len().min(DeadLetterLayer::TRUNCATED_KEY_BYTES)],
                &payload[..payload.len().min(DeadLetterLayer::TRUNCATED_PAYLOAD_BYTES)],
            )
        } else {
            (key, payload)
        };
        headers.insert(3, (h::ORIGIN_KEY.into(), Cow::Borrowed(key)));
        Self { key, payload, headers, truncated }
    }
}

impl DeadLetterTarget {
    /// Writes the dead letter of `event`; an error only where the write must not be retried here
    /// (a transactional publisher; see [`DeadLetterLayer`]).
    async fn write(&self, event: &IncomingEvent, error: &HandlerError) -> Result<(), HandlerError> {
        let position = format!("{}:{}:{}", event.topic(), event.partition(), event.offset());
        let mut truncate = self.was_too_large(event);
        let mut backoff = self.retry.initial_backoff;
        loop {
            let letter =
                Letter::new(event, error, &self.handler, truncate, self.publisher.max_message_bytes());
            let headers: Vec<(&str, &[u8])> = letter.headers.iter().map(|(n, v)| (&**n, &**v)).collect();
            let outgoing = Outgoing::new("DeadLetter", letter.key, letter.payload).headers(&headers);
            let publish = self.publisher.publish(&self.topic, outgoing);
            // A correlation id taken from the event's header is copied among its headers already; a
            // long one would not fit a truncated letter's bounds.
            let outcome = if letter.truncated
                && crate::trace::correlation_id()
                    .is_some_and(|c| c.len() > DeadLetterLayer::TRUNCATED_KEY_BYTES)
            {
                crate::trace::with_correlation_id(position.clone(), publish).await
            } else {
                publish.await
            };
            let e = match outcome {
                Ok(_) => {
                    tracing::warn!(
                        topic = event.topic(),
                        partition = event.partition(),
                        offset = event.offset(),
                        truncated = letter.truncated,
                        error = %error,
                        "dead-lettered"
                    );
                    self.publisher.health().recover(&self.component);
                    return Ok(());
                }
                Err(e) => e,
            };
            if e.is_too_large() && !letter.truncated {
                tracing::warn!(event = position, error = %e, "dead letter too large; writing a truncated one");
                self.remember_too_large(event);
                truncate = true;
                continue;
            }
            // Refused before reaching librdkafka (not the service's topic, the publisher closed):
            // the transaction is untouched, and the error is permanent, as without transactions.
            let refused_before = matches!(e, PublishError::NotOwner { .. } | PublishError::Closed);
            if self.publisher.is_transactional() && !refused_before {
                // The transaction cannot commit now: the consumer aborts it and handles the events
                // again, rather than this write spinning inside it.
                let why = if e.breaks_transaction() {
                    "the transaction must abort"
                } else {
                    "a failed write aborts the transaction"
                };
                tracing::warn!(event = position, error = %e, "dead letter not written; {why}");
                return Err(HandlerError::retriable(format!(
                    "cannot write dead letter for {position} to `{}` ({e}): {why}",
                    self.topic.name()
                ))
                .with_kind("transaction"));
            }
            if e.is_retriable() || matches!(e, PublishError::Unauthorized { .. }) {
                self.publisher.health().degrade(
                    &self.component,
                    format!("cannot write dead letter for {position} ({e}); partition paused"),
                );
                tokio::time::sleep(backoff).await;
                backoff = self.retry.next_backoff(backoff);
            } else {
                tracing::error!(event = position, error = %e, "dead letter cannot be written: permanent error");
                self.publisher.health().degrade(
                    &self.component,
                    format!(
                        "fatal: cannot write dead letter for {position} to `{}` ({e}): a permanent error; \
                         partition paused, retried every {:?}",
                        self.topic.name(),
                        DeadLetterLayer::PERMANENT_RETRY
                    ),
                );
                tokio::time::sleep(DeadLetterLayer::PERMANENT_RETRY).await;
            }
        }
    }

    /// Whether the whole dead letter of `event` was refused for its size before.
    fn was_too_large(&self, event: &IncomingEvent) -> bool {
        let seen = self.too_large.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.iter().any(|(t, p, o)| &**t == event.topic() && *p == event.partition() && *o == event.offset())
    }

    /// Counts one more time `event` ran out of its budget (the last 64 events are remembered);
    /// how many times it has now.
    fn over_budget(&self, event: &IncomingEvent) -> u32 {
        let mut seen = self.over_budget.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let at =
            |(t, p, o): &Position| &**t == event.topic() && *p == event.partition() && *o == event.offset();
        if let Some((_, times)) = seen.iter_mut().find(|(position, _)| at(position)) {
            *times += 1;
            return *times;
        }
        if seen.len() == 64 {
            seen.pop_front();
        }
        seen.push_back(((event.topic().into(), event.partition(), event.offset()), 1));
        1
    }

    /// Remembers (the last few) events whose whole dead letter was refused for its size.
    fn remember_too_large(&self, event: &IncomingEvent) {
        let mut seen = self.too_large.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() == 64 {
            seen.pop_front();
        }
        seen.push_back((event.topic().into(), event.partition(), event.offset()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Metadata;

    fn context(offset: i64) -> HandlerContext<()> {
        HandlerContext::new(IncomingEvent::new("orders.public.order-created-v1", 0, offset), ())
    }

    #[tokio::test]
    async fn a_panic_is_an_error_of_kind_panic() {
        async fn boom(_: Metadata) -> Result<(), HandlerError> {
            panic!("no stock table")
        }
        let service = CatchPanicLayer.layer(HandlerService::new(BoxedHandler::new(boom)));
        let err = service.oneshot(context(1)).await.unwrap_err();
        assert_eq!(err.kind(), "panic");
        assert!(!err.is_retriable());
        assert!(err.to_string().contains("no stock table"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_bounds_every_attempt_together_and_fails_permanently() {
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = calls.clone();
        let slow = move |_: Metadata| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3)).await;
                Err::<(), _>(HandlerError::retriable("still down"))
            }
        };
        let retry = Retry {
            max_attempts: 100,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
        };
        let service = BudgetLayer::new(Some(Duration::from_secs(10)))
            .layer(RetryLayer::new(retry).layer(HandlerService::new(BoxedHandler::named("slow", slow))));
        let started = tokio::time::Instant::now();
        let err = service.oneshot(context(3)).await.unwrap_err();
        assert_eq!(err.kind(), "budget");
        assert!(!err.is_retriable(), "past its budget the event is dead-lettered, not retried");
        assert_eq!(started.elapsed(), Duration::from_secs(10), "cut at the budget, not after 100 attempts");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3, "attempts at 0, 4 and 8 s");

        // Within the budget, the inner outcome stands; without one, the layer does nothing.
        let quick = |_: Metadata| async { Ok::<(), HandlerError>(()) };
        let within = BudgetLayer::new(Some(Duration::from_secs(1)))
            .layer(HandlerService::new(BoxedHandler::named("quick", quick)));
        within.oneshot(context(4)).await.unwrap();
        let unbounded =
            BudgetLayer::new(None).layer(HandlerService::new(BoxedHandler::named("quick", quick)));
        unbounded.oneshot(context(5)).await.unwrap();
    }

    #[tokio::test]
    async fn retries_stop_at_the_budget_and_count_attempts() {
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = calls.clone();
        let flaky = move |_: Metadata| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err::<(), _>(HandlerError::retriable("database down"))
            }
        };
        let retry = Retry {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        };
        let service = RetryLayer::new(retry).layer(HandlerService::new(BoxedHandler::named("flaky", flaky)));
        let err = service.oneshot(context(7)).await.unwrap_err();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(err.attempts(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_handler_times_out_retriably() {
        async fn slow(_: Metadata) -> Result<(), HandlerError> {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
        let service =
            TimeoutLayer::new(Duration::from_secs(1)).layer(HandlerService::new(BoxedHandler::new(slow)));
        let err = service.oneshot(context(2)).await.unwrap_err();
        assert_eq!(err.kind(), "timeout");
        assert!(err.is_retriable());
        assert!(err.to_string().contains("longer than 1s"), "{err}");

        // Within the limit, the handler's own outcome passes through untouched.
        async fn quick(_: Metadata) -> Result<(), HandlerError> {
            Err(HandlerError::permanent("no such order"))
        }
        let service =
            TimeoutLayer::new(Duration::from_secs(1)).layer(HandlerService::new(BoxedHandler::new(quick)));
        let err = service.oneshot(context(3)).await.unwrap_err();
        assert!(!err.is_retriable());
        assert_eq!(err.to_string(), "no such order");
    }

    #[tokio::test]
    async fn the_correlation_id_is_the_header_or_the_position() {
        async fn echo(_: Metadata) -> Result<(), HandlerError> {
            Err(HandlerError::permanent(crate::trace::correlation_id().unwrap_or_default()))
        }
        let service = CorrelationLayer.layer(HandlerService::new(BoxedHandler::new(echo)));
        let err = service.clone().oneshot(context(5)).await.unwrap_err();
        assert_eq!(err.to_string(), "orders.public.order-created-v1:0:5");
        let tagged = HandlerContext::new(
            IncomingEvent::new("t", 0, 1).with_header(crate::publish::headers::CORRELATION_ID, "req-9"),
            (),
        );
        assert_eq!(service.oneshot(tagged).await.unwrap_err().to_string(), "req-9");
    }

    #[test]
    fn a_dead_letter_is_bounded_and_truncated_when_too_large() {
        use dead_letter_headers as h;
        let header = |letter: &Letter<'_>, name: &str| {
            letter
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let mut event = IncomingEvent::new("t", 2, 9).with_key("k").with_payload(vec![7u8; 900_000]);
        for i in 0..5_000 {
            event = event.with_header(format!("h{i}"), [1u8; 100]);
        }
        let error = HandlerError::permanent("x".repeat(100_000)).with_kind("undecodable");
        // Fits: the payload is whole; the headers and the message are cut anyway.
        let letter = Letter::new(&event, &error, "reserve", false, 1_000_000);
        assert!(!letter.truncated);
        assert_eq!(letter.payload.len(), 900_000);
        let copied = letter.headers.iter().filter(|(n, _)| n.starts_with(h::ORIGINAL_PREFIX)).count();
        assert!(copied <= DeadLetterLayer::MAX_COPIED_HEADERS, "{copied}");
        assert_eq!(header(&letter, h::HEADERS_DROPPED).unwrap(), (5_000 - copied).to_string());
        assert_eq!(header(&letter, h::ERROR_MESSAGE).unwrap().len(), DeadLetterLayer::MAX_ERROR_BYTES);
        assert_eq!(header(&letter, h::ORIGIN_OFFSET).unwrap(), "9");
        assert_eq!(header(&letter, h::TRUNCATED), None);

        // Over the producer's limit: truncated from the start, saying so and how large it was.
        let letter = Letter::new(&event, &error, "reserve", false, 500_000);
        assert!(letter.truncated);
        assert_eq!(letter.payload.len(), DeadLetterLayer::TRUNCATED_PAYLOAD_BYTES);
        assert_eq!(header(&letter, h::TRUNCATED).unwrap(), "true");
        assert_eq!(header(&letter, h::ORIGINAL_SIZE).unwrap(), "900000");
        assert_eq!(header(&letter, h::ORIGIN_KEY).unwrap(), "k");
        // Or when asked (the broker refused the whole one).
        let small = IncomingEvent::new("t", 0, 1).with_key("k".repeat(5_000)).with_payload("p");
        let letter = Letter::new(&small, &error, "reserve", true, 1_000_000);
        assert!(letter.truncated);
        assert_eq!(letter.key.len(), DeadLetterLayer::TRUNCATED_KEY_BYTES);
        assert_eq!(header(&letter, h::ORIGINAL_KEY_SIZE).unwrap(), "5000");
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_dead_letter_error_is_a_fatal_reason_and_retried_slowly() {
        // The service does not own the dead-letter topic: every write fails the same way.
        let config = crate::Config { bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
        let spec = crate::Service::new("stock").spec().unwrap();
        let publisher = Publisher::new(&config, &spec).unwrap();
        let health = publisher.health().clone();
        let dlq = TopicSpec::private("orders", "dlq.t").build().unwrap();
        let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = attempts.clone();
        let failing = move |_: Metadata| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err::<(), _>(HandlerError::permanent("no such order")) }
        };
        let component = format!("dead-letters:{}", dlq.name());
        let service = DeadLetterLayer::new(dlq, publisher, "reserve", Retry::default())
            .layer(HandlerService::new(BoxedHandler::named("reserve", failing)));
        let write = tokio::spawn(service.oneshot(context(4)));
        tokio::time::sleep(Duration::from_secs(95)).await;
        assert!(!write.is_finished(), "the event is not done while its dead letter is unwritten");
        let reason = health.snapshot().degraded.get(&component).cloned();
        let reason = reason.unwrap_or_else(|| format!("{:?}", health.snapshot()));
        assert!(reason.starts_with("fatal:"), "{reason}");
        assert!(reason.contains("orders.public.order-created-v1:0:4"), "{reason}");
        assert!(reason.contains("may not publish"), "{reason}");
        write.abort();
    }

    #[tokio::test]
    async fn shared_layers_apply_outermost_first() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tag = |name: &'static str| {
            let log = log.clone();
            tower::util::MapRequestLayer::new(move |cx: HandlerContext<()>| {
                log.lock().unwrap().push(name);
                cx
            })
        };
        let layers = Layers::new().layer(tag("outer")).layer(tag("inner"));
        async fn ok(_: Metadata) {}
        let service = layers.apply(BoxCloneSyncService::new(HandlerService::new(BoxedHandler::new(ok))));
        service.oneshot(context(0)).await.unwrap();
        assert_eq!(*log.lock().unwrap(), ["outer", "inner"]);
    }
}
