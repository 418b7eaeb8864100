//! The future of one publish ([`Publish`]): resolves once the broker has acknowledged the event.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use rdkafka::producer::future_producer::DeliveryFuture;
use tokio::sync::OwnedSemaphorePermit;

use crate::topic::TopicSpec;

use super::HEALTH_COMPONENT;
use super::error::PublishError;
use super::outgoing::Delivery;
use super::shared::Inner;

/// The future of one [`Publisher::publish`](super::Publisher::publish): resolves once the broker has
/// acknowledged the event.
///
/// Small when the event was enqueued at call time (the usual case), so holding many in flight is
/// cheap; only a publish that has to wait for its turn or for room carries a boxed state.
#[must_use = "a publish is enqueued at call time, but only awaiting it tells whether it was written"]
pub struct Publish<'a> {
    pub(super) inner: &'a Inner,
    pub(super) topic: &'a TopicSpec,
    pub(super) state: PublishState<'a>,
    /// When the publish was called: `backbone_publish_duration_seconds` runs to the acknowledgement.
    pub(super) started: std::time::Instant,
    /// The producer span, open until the acknowledgement (disabled unless spans are exported).
    pub(super) span: tracing::Span,
}

type Waiting<'a> =
    Pin<Box<dyn Future<Output = Result<(DeliveryFuture, OwnedSemaphorePermit), PublishError>> + Send + 'a>>;

pub(super) enum PublishState<'a> {
    /// Handed to librdkafka; the permit is held until the broker answers.
    Enqueued { delivery: DeliveryFuture, _permit: OwnedSemaphorePermit },
    /// Waiting for our turn or for room.
    Waiting(Waiting<'a>),
    /// Refused before enqueueing (taken when reported).
    Failed(Option<Box<PublishError>>),
}

impl fmt::Debug for Publish<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            PublishState::Enqueued { .. } => "enqueued",
            PublishState::Waiting(_) => "waiting",
            PublishState::Failed(_) => "failed",
        };
        f.debug_struct("Publish").field("topic", &self.topic.name()).field("state", &state).finish()
    }
}

impl Future for Publish<'_> {
    type Output = Result<Delivery, PublishError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                PublishState::Failed(e) => {
                    return Poll::Ready(Err(*e
                        .take()
                        .expect("a publish future is not polled after completion")));
                }
                PublishState::Waiting(w) => match w.as_mut().poll(cx) {
                    Poll::Ready(Ok((delivery, permit))) => {
                        this.state = PublishState::Enqueued { delivery, _permit: permit };
                    }
                    Poll::Ready(Err(e)) => this.state = PublishState::Failed(Some(Box::new(e))),
                    Poll::Pending => return Poll::Pending,
                },
                PublishState::Enqueued { delivery, .. } => {
                    let result = std::task::ready!(Pin::new(delivery).poll(cx));
                    let inner = this.inner;
                    let metrics = inner.metrics.get(this.topic.name());
                    return Poll::Ready(match result {
                        Ok(Ok(d)) => {
                            this.span.record("messaging.destination.partition.id", d.partition);
                            this.span.record("messaging.kafka.offset", d.offset);
                            inner.health.recover(HEALTH_COMPONENT);
                            if let Some(m) = metrics {
                                m.published.increment(1);
                                m.duration.record(this.started.elapsed());
                            }
                            Ok(Delivery { partition: d.partition, offset: d.offset })
                        }
                        Ok(Err((e, _))) => {
                            if let Some(m) = metrics {
                                m.failed.increment(1);
                            }
                            this.span.record("otel.status_code", "error");
                            Err(inner.failed(this.topic, e))
                        }
                        Err(_canceled) => Err(PublishError::Closed),
                    });
                }
            }
        }
    }
}
