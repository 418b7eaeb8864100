//! Replayed dead letters: each consumed topic's **retry topic**, and the consumer that reads it.
//!
//! `backbone dlq replay` does not write a dead letter back to its origin topic: that topic belongs to
//! another service (it would get a second writer), and every consumer group of it, this service's
//! other handlers and other services alike, would see the event again. It writes the dead letter to
//! `<service>.private.retry.<source>` ([`retry_topic`]), a private topic of the service that
//! dead-lettered it, with a header naming the handler that failed ([`replay_headers::HANDLER`]).
//! [`crate::App`] declares that topic next to the dead-letter topic and runs, next to each handler's
//! consumer, a second one on it ([`Consumer::retries`]): group `<group>.retry`, the same handler,
//! layers, retries, budget and delivery guarantee. It handles only the records naming its handler
//! (the others are skipped: offset stored, nothing handled) and dead-letters a replay that fails again
//! to the origin's dead-letter topic, so `backbone dlq list` shows it where it was.
//!
//! The exception: a handler of the service's **own private topic** ([`replays_to_source`]). Its
//! replays go back to that topic (the service is its one writer; no other service reads it), where
//! the consumer owning the key's partition handles them in order with the key's live events, and
//! no retry consumer runs beside it to race it on the same keys. Each consumer of such a topic
//! skips the replays naming another handler.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tower::{Layer, Service};

use super::{ConsumeError, Consumer, NoHooks, replays_to_source, retry_topic};
use crate::handler::{HandlerContext, HandlerError};
use crate::layer::Layers;
use crate::topic::TopicError;

/// Header names on a replayed event (declared in [`crate::headers::replay`]).
pub use crate::headers::replay as replay_headers;

impl<S> Consumer<S> {
    /// The topic it consumes.
    pub(crate) fn topic_name(&self) -> &str {
        self.topic.name()
    }

    /// Whether this consumer's replayed dead letters come back on its own topic, the service's own
    /// private one ([`replays_to_source`]), rather than on a retry topic with [`retries`](Consumer::retries).
    pub fn replays_to_source(&self) -> bool {
        replays_to_source(self.context.spec().name(), &self.topic)
    }
}

/// The layers of a consumer of its service's own private topic: replays naming another handler
/// are skipped (they come back on the topic itself, for that handler only).
pub(super) fn skip_replays_for_others<S: Clone + Send + Sync + 'static>(handler: &str) -> Layers<S> {
    Layers::new().layer(OnlyForLayer { handler: handler.into(), replays_only: false })
}

impl<S: Clone + Send + Sync + 'static> Consumer<S> {
    /// The consumer of this one's retry topic ([`retry_topic`]), which the service must own: group
    /// `<group>.retry`; the same handler, state, layers, retries, timeout, budget, concurrency and
    /// delivery guarantee (a stable transactional id gets `.retry` appended); no hooks (they are
    /// about the source's partitions). It handles only replays naming this handler
    /// ([`replay_headers::HANDLER`]), skips the others, and dead-letters to this consumer's
    /// dead-letter topic. [`crate::App`] runs it next to each handler's consumer; run it next to
    /// yours for `backbone dlq replay` to reach it.
    ///
    /// A replay is handled alongside the source's live events, not in their partition's order: a
    /// handler that keeps per-key state in memory between events, or relies on one writer per key
    /// (its partition's owner), may see a replayed event of a key at the same time as that key's live
    /// ones, on another instance, and without this consumer's hooks. Such state belongs in a topic
    /// of the service's own, and the handlers of those topics have no retry consumer: their replays
    /// come back in order on the topic itself ([`replays_to_source`](Self::replays_to_source)).
    ///
    /// Refused for a consumer of the service's own private topic, whose replays come back on the
    /// topic itself ([`replays_to_source`](Self::replays_to_source)).
    pub fn retries(&self) -> Result<Self, ConsumeError> {
        if self.replays_to_source() {
            return Err(TopicError::InvalidTopic {
                topic: self.topic.name().to_owned(),
                reason: format!(
                    "replays of `{}` go back to it (service `{}`'s own private topic), not to a retry \
                     consumer that would race its live consumer on the same keys",
                    self.topic.name(),
                    self.context.spec().name()
                ),
            }
            .into());
        }
        let topic = retry_topic(self.context.spec().name(), &self.topic)?;
        if self.context.spec().owned(topic.name()).is_none() {
            return Err(TopicError::InvalidTopic {
                topic: topic.name().to_owned(),
                reason: format!(
                    "service `{}` retries events from `{}` but does not declare its retry topic; add \
                     `.owns(&retry_topic(\"{}\", &topic)?)`",
                    self.context.spec().name(),
                    self.topic.name(),
                    self.context.spec().name()
                ),
            }
            .into());
        }
        let only = OnlyForLayer { handler: self.handler.name().into(), replays_only: true };
        Ok(Self {
            topic,
            group: format!("{}.retry", self.group),
            dead_letters: self.dead_letters.clone(),
            handler: self.handler.clone(),
            layers: Layers::new().layer(only).extend(&self.layers),
            around_retries: self.around_retries.clone(),
            state: self.state.clone(),
            retry: self.retry,
            timeout: self.timeout,
            budget: self.budget,
            concurrency: self.concurrency,
            queue_kbytes: self.queue_kbytes,
            queue_messages: self.queue_messages,
            shutdown_budget: self.shutdown_budget,
            client: self.client.clone(),
            hooks: Arc::new(NoHooks),
            transaction_size: self.transaction_size,
            transaction_interval: self.transaction_interval,
            transactional_id: self.transactional_id.as_ref().map(|id| format!("{id}.retry")),
            context: self.context.clone(),
            max_ready_lag: self.max_ready_lag,
        })
    }
}

/// Skips replays naming another handler than `handler`; with `replays_only` (a retry consumer),
/// events that are no replay at all too.
#[derive(Debug, Clone)]
struct OnlyForLayer {
    handler: Arc<str>,
    replays_only: bool,
}

impl<I> Layer<I> for OnlyForLayer {
    type Service = OnlyFor<I>;

    fn layer(&self, inner: I) -> OnlyFor<I> {
        OnlyFor { inner, handler: self.handler.clone(), replays_only: self.replays_only }
    }
}

/// See [`OnlyForLayer`].
#[derive(Debug, Clone)]
struct OnlyFor<I> {
    inner: I,
    handler: Arc<str>,
    replays_only: bool,
}

impl<I, S> Service<HandlerContext<S>> for OnlyFor<I>
where
    I: Service<HandlerContext<S>, Response = (), Error = HandlerError>,
{
    type Response = ();
    type Error = HandlerError;
    type Future = Either<I::Future, Ready<Result<(), HandlerError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, cx: HandlerContext<S>) -> Self::Future {
        let event = cx.event();
        let ours = match event.header(crate::headers::replay::HANDLER) {
            Some(handler) => handler == self.handler.as_bytes(),
            None => !self.replays_only,
        };
        if ours {
            return Either::Left(self.inner.call(cx));
        }
        tracing::debug!(
            topic = event.topic(),
            partition = event.partition(),
            offset = event.offset(),
            handler = &*self.handler,
            "a replay for another handler: skipped"
        );
        Either::Right(ready(Ok(())))
    }
}
