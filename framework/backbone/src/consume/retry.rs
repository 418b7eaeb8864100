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

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tower::{Layer, Service};

use super::{ConsumeError, Consumer, NoHooks, retry_topic};
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
    /// ones, on another instance, and without this consumer's hooks.
    pub fn retries(&self) -> Result<Self, ConsumeError> {
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
        let only = OnlyForLayer { handler: self.handler.name().into() };
        Ok(Self {
            topic,
            group: format!("{}.retry", self.group),
            dead_letters: self.dead_letters.clone(),
            handler: self.handler.clone(),
            layers: Layers::new().layer(only).extend(&self.layers),
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
        })
    }
}

/// Lets through only replays naming `handler`.
#[derive(Debug, Clone)]
struct OnlyForLayer {
    handler: Arc<str>,
}

impl<I> Layer<I> for OnlyForLayer {
    type Service = OnlyFor<I>;

    fn layer(&self, inner: I) -> OnlyFor<I> {
        OnlyFor { inner, handler: self.handler.clone() }
    }
}

/// See [`OnlyForLayer`].
#[derive(Debug, Clone)]
struct OnlyFor<I> {
    inner: I,
    handler: Arc<str>,
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
        if event.header(crate::headers::replay::HANDLER) == Some(self.handler.as_bytes()) {
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
