//! The event's context for the handler: its correlation id, and a tracing span continuing the
//! producer's trace.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::handler::{HandlerContext, HandlerError};

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

/// A `tracing` span per event, named `event`: a consumer span in OpenTelemetry's messaging terms
/// (`otel.name` `process <topic>`, `otel.kind` `consumer`, `messaging.system` `kafka`,
/// `messaging.operation.type` `process`, `messaging.destination.name`,
/// `messaging.destination.partition.id`, `messaging.kafka.offset`,
/// `messaging.consumer.group.name`) and the handler's name (`handler`). Its `traceparent` field (the
/// event's header) lets [`crate::trace::TraceContextLayer`] continue the producer's trace.
#[derive(Debug, Clone)]
pub struct TracingLayer {
    handler: Arc<str>,
    group: Arc<str>,
}

impl TracingLayer {
    /// Spans name the handler `handler`.
    pub fn new(handler: &str) -> Self {
        Self { handler: handler.into(), group: "".into() }
    }

    /// Spans name the consumer group `group`.
    pub fn group(mut self, group: &str) -> Self {
        self.group = group.into();
        self
    }
}

impl<I> Layer<I> for TracingLayer {
    type Service = Tracing<I>;

    fn layer(&self, inner: I) -> Tracing<I> {
        Tracing { inner, handler: self.handler.clone(), group: self.group.clone() }
    }
}

/// See [`TracingLayer`].
#[derive(Debug, Clone)]
pub struct Tracing<I> {
    inner: I,
    handler: Arc<str>,
    group: Arc<str>,
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
            otel.name = format_args!("process {}", event.topic()),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = event.topic(),
            messaging.destination.partition.id = event.partition(),
            messaging.kafka.offset = event.offset(),
            messaging.consumer.group.name = &*self.group,
            handler = &*self.handler,
            traceparent = if tracing::dispatcher::has_been_set() {
                event
                    .header(crate::headers::TRACEPARENT)
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
