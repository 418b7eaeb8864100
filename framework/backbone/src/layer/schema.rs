//! The writer's schema, fetched (and checked against the topic's) before the handler runs.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use super::BoxFuture;
use super::naming::contract_topic;
use crate::handler::{HandlerContext, HandlerError, IncomingEvent};

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

/// The first wait before asking an unreachable registry again; it doubles each time (with jitter).
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
                registry.check_topic(id, contract_topic(event.topic())).await
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
/// unreachable: backoff [`REGISTRY_BACKOFF`] doubling to [`REGISTRY_MAX_BACKOFF`] (with jitter), `health` degraded
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
    let mut backoff = crate::backoff::Backoff::new(REGISTRY_BACKOFF, REGISTRY_MAX_BACKOFF);
    loop {
        match registry.check_topic(id, contract_topic(event.topic())).await {
            Err(e) if e.is_retriable() => {
                let reason = format!(
                    "{e}; partition {}:{} waits at offset {} for schema {id}{note}",
                    event.topic(),
                    event.partition(),
                    event.offset()
                );
                let delay = backoff.next_delay();
                tracing::warn!(%reason, retry_in = ?delay, "schema registry unavailable");
                if let Some(health) = health {
                    health.degrade(REGISTRY_COMPONENT, reason);
                }
                waiting();
                tokio::time::sleep(delay).await;
            }
            answer => return answer,
        }
    }
}
