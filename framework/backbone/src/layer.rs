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
//!    event's origin in headers, and the event counts as handled; if that write fails it is retried
//!    with health degraded, and the event is not done until it succeeds;
//! 4. [`RetryLayer`]: retriable errors are retried with exponential backoff, up to a budget;
//! 5. [`TimeoutLayer`] (when set): a handler that takes too long fails retriably (kind `timeout`);
//! 6. [`CatchPanicLayer`]: a panicking handler is a permanent error of kind `panic`, not a dead
//!    process;
//! 7. your layers ([`Consumer::layer`](crate::consume::Consumer::layer), or [`Layers`] shared by
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
use crate::publish::{Outgoing, Publisher};
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
            let mut backoff = REGISTRY_BACKOFF;
            let mut waited = None;
            loop {
                match registry.check_topic(id, event.topic()).await {
                    Ok(()) => break,
                    Err(e) if e.is_retriable() => {
                        let reason = format!(
                            "{e}; partition {}:{} waits at offset {} for schema {id}",
                            event.topic(),
                            event.partition(),
                            event.offset()
                        );
                        tracing::warn!(%reason, retry_in = ?backoff, "schema registry unavailable");
                        if let Some(health) = &health {
                            health.degrade(REGISTRY_COMPONENT, reason);
                        }
                        waited.get_or_insert_with(|| Waiting::new(waiting.clone(), health.clone()));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(REGISTRY_MAX_BACKOFF);
                    }
                    Err(e) => {
                        let kind = e.kind();
                        return Err(HandlerError::permanent(e).with_kind(kind));
                    }
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
    /// The error message.
    pub const ERROR_MESSAGE: &str = "backbone-dlq-error-message";
    /// The handler that failed.
    pub const HANDLER: &str = "backbone-dlq-handler";
    /// How many times it was tried.
    pub const ATTEMPTS: &str = "backbone-dlq-attempts";
    /// Prefix of the original event's headers, each kept as `backbone-dlq-original-<name>` (the dead
    /// letter's own publish headers would otherwise shadow the original's); `backbone dlq replay`
    /// restores them.
    pub const ORIGINAL_PREFIX: &str = "backbone-dlq-original-";
}

/// Writes events whose handling failed to a dead-letter topic, with their origin in headers
/// ([`dead_letter_headers`]), the original key and bytes; the event then counts as handled.
///
/// If the write fails, the event is not done: health is degraded (`dead-letters:<topic>`, "cannot
/// write dead letter for `<topic>:<partition>:<offset>` (…); partition paused") and the write is
/// retried with backoff until it succeeds, so the partition waits and nothing is dropped silently.
#[derive(Debug, Clone)]
pub struct DeadLetterLayer {
    target: Arc<DeadLetterTarget>,
}

#[derive(Debug, Clone)]
struct DeadLetterTarget {
    topic: TopicSpec,
    publisher: Publisher,
    handler: Arc<str>,
    retry: Retry,
    component: String,
}

impl DeadLetterLayer {
    /// Dead letters of `handler` go to `topic` through `publisher` (which must be allowed to write
    /// it); failed writes are retried with `retry`'s backoff, without limit.
    pub fn new(topic: TopicSpec, publisher: Publisher, handler: &str, retry: Retry) -> Self {
        let component = format!("dead-letters:{}", topic.name());
        Self {
            target: Arc::new(DeadLetterTarget {
                topic,
                publisher,
                handler: handler.into(),
                retry,
                component,
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
        writing: Option<BoxFuture<()>>,
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
            let (target, event) = (this.target.clone(), this.event.clone());
            *this.writing = Some(Box::pin(async move { target.write(&event, &error).await }));
        }
        let writing = this.writing.as_mut().expect("set above");
        std::task::ready!(writing.as_mut().poll(cx));
        Poll::Ready(Ok(()))
    }
}

impl DeadLetterTarget {
    async fn write(&self, event: &IncomingEvent, error: &HandlerError) {
        use dead_letter_headers as h;
        let partition = event.partition().to_string();
        let offset = event.offset().to_string();
        let attempts = error.attempts().to_string();
        let message = error.to_string();
        let key = event.key().unwrap_or_default();
        let originals: Vec<(String, &[u8])> =
            event.headers().map(|(name, value)| (format!("{}{name}", h::ORIGINAL_PREFIX), value)).collect();
        let mut headers: Vec<(&str, &[u8])> = vec![
            (h::ORIGIN_TOPIC, event.topic().as_bytes()),
            (h::ORIGIN_PARTITION, partition.as_bytes()),
            (h::ORIGIN_OFFSET, offset.as_bytes()),
            (h::ORIGIN_KEY, key),
            (h::ERROR_KIND, error.kind().as_bytes()),
            (h::ERROR_MESSAGE, message.as_bytes()),
            (h::HANDLER, self.handler.as_bytes()),
            (h::ATTEMPTS, attempts.as_bytes()),
        ];
        headers.extend(originals.iter().map(|(name, value)| (name.as_str(), *value)));
        let payload = event.payload().unwrap_or_default();
        let mut backoff = self.retry.initial_backoff;
        loop {
            let letter = Outgoing::new("DeadLetter", key, payload).headers(&headers);
            match self.publisher.publish(&self.topic, letter).await {
                Ok(_) => {
                    tracing::warn!(topic = event.topic(), partition, offset, %message, "dead-lettered");
                    self.publisher.health().recover(&self.component);
                    return;
                }
                Err(e) => {
                    self.publisher.health().degrade(
                        &self.component,
                        format!(
                            "cannot write dead letter for {}:{}:{} ({e}); partition paused",
                            event.topic(),
                            partition,
                            offset
                        ),
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = self.retry.next_backoff(backoff);
                }
            }
        }
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
