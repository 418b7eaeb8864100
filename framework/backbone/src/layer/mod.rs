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
//! 5. layers around the retries, which see an event's final outcome (a responder's reply step,
//!    [`crate::request::responder`], which hands the request's deadline down to the retries);
//! 6. [`RetryLayer`]: retriable errors are retried with exponential backoff, up to a number of
//!    attempts, or, for an event with a deadline (a request's), until the next backoff would end
//!    past it;
//! 7. [`SchemaLayer`]: the writer's schema of a schema-framed payload is fetched (once per id) and
//!    checked against the topic's before the handler runs; while the registry is unreachable the
//!    event waits, health degraded;
//! 8. [`TimeoutLayer`] (when set): a handler that takes too long fails retriably (kind `timeout`);
//! 9. [`CatchPanicLayer`]: a panicking handler is a permanent error of kind `panic`, not a dead
//!    process;
//! 10. your layers ([`Consumer::layer`](crate::consume::Consumer::layer), or [`Layers`] shared by
//!     every consumer of a service), then the handler.
//!
//! Each layer is public: a stack can be written by hand with `tower::ServiceBuilder`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use crate::handler::{BoxedHandler, HandlerContext, HandlerError};

mod budget;
mod dead_letter;
// The dead-letter and retry topics' names: the consumer declares them, the layers write and read
// them; here so that both depend on them, and they on neither.
pub(crate) mod naming;
mod panic;
mod retry;
mod schema;
#[cfg(test)]
mod tests;
mod timeout;
mod trace;

pub use budget::{Budget, BudgetFuture, BudgetLayer};
pub use dead_letter::{DeadLetter, DeadLetterFuture, DeadLetterLayer, dead_letter_headers};
pub use panic::{CatchPanic, CatchPanicFuture, CatchPanicLayer};
pub use retry::{Retry, RetryFuture, RetryLayer, RetryService};
pub(crate) use schema::check_schema_waiting;
pub use schema::{
    REGISTRY_BACKOFF, REGISTRY_COMPONENT, REGISTRY_MAX_BACKOFF, REGISTRY_UNAVAILABLE, SchemaLayer, Schemas,
};
pub use timeout::{Timeout, TimeoutFuture, TimeoutLayer};
pub use trace::{Correlation, CorrelationLayer, Tracing, TracingLayer};

/// The per-event service, boxed: what layers wrap and what the consumer calls.
pub type EventService<S> = BoxCloneSyncService<HandlerContext<S>, (), HandlerError>;

pub(super) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

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
