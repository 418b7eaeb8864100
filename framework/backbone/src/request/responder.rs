//! The responder side: a consumer answering each request on its reply topic: an ordinary handler
//! under the consumer's layers, with a reply step above the retries.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt as _};
use uuid::Uuid;

use crate::consume::{ConsumeError, Consumer};
use crate::handler::{
    BoxedHandler, ExtractError, FromEvent, Handler, HandlerContext, HandlerError, IncomingEvent, Json, Scope,
};
use crate::layer::{EventService, Layers, Retry};
use crate::publish::{Outgoing, Publisher};
use crate::runtime::Context;
use crate::service::ServiceSpec;
use crate::topic::{TopicError, TopicSpec, Visibility};

use super::*;

/// What a request says about itself: its id, where the reply goes, who waits and until when.
/// Also an extractor, for handlers that want their remaining time or an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    id: Uuid,
    reply_to: String,
    requester: String,
    deadline: Option<SystemTime>,
}

impl RequestInfo {
    /// Reads the request headers of `event`.
    pub fn from_event(event: &IncomingEvent) -> Result<Self, ExtractError> {
        let text = |name: &str| -> Result<&str, ExtractError> {
            let value =
                event.header(name).ok_or_else(|| ExtractError::MissingHeader { name: name.to_owned() })?;
            std::str::from_utf8(value)
                .map_err(|e| ExtractError::BadHeader { name: name.to_owned(), reason: e.to_string() })
        };
        let bad = |name: &str, reason: String| ExtractError::BadHeader { name: name.to_owned(), reason };
        let id = Uuid::try_parse(text(headers::REQUEST_ID)?)
            .map_err(|e| bad(headers::REQUEST_ID, e.to_string()))?;
        let deadline = match event.header(headers::DEADLINE) {
            None => None,
            Some(_) => {
                let millis: u64 =
                    text(headers::DEADLINE)?.parse().map_err(|e| bad(headers::DEADLINE, format!("{e}")))?;
                // A request gets MAX_DEADLINE of the responder's time at most, whatever it asks.
                let latest = SystemTime::now() + MAX_DEADLINE;
                let asked = UNIX_EPOCH.checked_add(Duration::from_millis(millis)).unwrap_or(latest);
                Some(asked.min(latest))
            }
        };
        Ok(Self {
            id,
            reply_to: text(headers::REPLY_TO)?.to_owned(),
            requester: text(headers::REQUESTER)?.to_owned(),
            deadline,
        })
    }

    /// The request's id: the key of its reply, and an idempotency key for commands.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The topic the reply goes to.
    pub fn reply_to(&self) -> &str {
        &self.reply_to
    }

    /// The requester instance waiting for the reply.
    pub fn requester(&self) -> &str {
        &self.requester
    }

    /// When the requester stops waiting (by the responder's clock: keep clocks in sync).
    pub fn deadline(&self) -> Option<SystemTime> {
        self.deadline
    }

    /// Time left before the deadline (`None` without one; zero once passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.duration_since(SystemTime::now()).unwrap_or_default())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }
}

impl<S> FromEvent<S> for RequestInfo {
    fn from_event(cx: &HandlerContext<S>) -> Result<Self, ExtractError> {
        Self::from_event(cx.event())
    }
}

/// What a reply handler's output means: the reply payload, or a [`HandlerError`].
pub trait IntoReply {
    /// The reply payload, or why there is none.
    fn into_reply(self) -> Result<Vec<u8>, HandlerError>;
}

impl IntoReply for Vec<u8> {
    fn into_reply(self) -> Result<Vec<u8>, HandlerError> {
        Ok(self)
    }
}

impl IntoReply for String {
    fn into_reply(self) -> Result<Vec<u8>, HandlerError> {
        Ok(self.into_bytes())
    }
}

impl IntoReply for &'static str {
    fn into_reply(self) -> Result<Vec<u8>, HandlerError> {
        Ok(self.as_bytes().to_vec())
    }
}

/// The value encoded as JSON.
impl<T: Serialize> IntoReply for Json<T> {
    fn into_reply(self) -> Result<Vec<u8>, HandlerError> {
        serde_json::to_vec(&self.0).map_err(|e| HandlerError::permanent(e).with_kind("unencodable-reply"))
    }
}

impl<R: IntoReply, E: Into<HandlerError>> IntoReply for Result<R, E> {
    fn into_reply(self) -> Result<Vec<u8>, HandlerError> {
        self.map_err(Into::into)?.into_reply()
    }
}

/// The whole handler context, for the responder's wrapper (which calls the reply handler with it).
pub(super) struct CallContext<S>(pub(super) HandlerContext<S>);

impl<S: Clone> FromEvent<S> for CallContext<S> {
    fn from_event(cx: &HandlerContext<S>) -> Result<Self, ExtractError> {
        Ok(Self(cx.clone()))
    }
}

/// Checks the responder's side of the ownership rule: it owns `replies`, which is public.
pub(super) fn check_reply_topic(spec: &ServiceSpec, replies: &TopicSpec) -> Result<(), TopicError> {
    if spec.owned(replies.name()).is_none() {
        return Err(TopicError::InvalidTopic {
            topic: replies.name().to_owned(),
            reason: format!(
                "service `{}` answers on `{}` but does not own it: a responder publishes replies on \
                 a topic of its own (`request::reply_topic(\"{}\", …)`, declared with `.owns(…)`)",
                spec.name(),
                replies.name(),
                spec.name()
            ),
        });
    }
    if replies.visibility() != Visibility::Public {
        return Err(TopicError::InvalidTopic {
            topic: replies.name().to_owned(),
            reason: "a reply topic is public: requesters of other services read it".into(),
        });
    }
    Ok(())
}

/// How a responder retries a retriable handler error, unless told otherwise
/// ([`Consumer::retry`]): backoff from 50 ms doubling to 1 s, until the next backoff would end past
/// the request's deadline; five attempts in all for a request without a deadline.
pub const RESPONDER_RETRY: Retry = Retry {
    max_attempts: 5,
    initial_backoff: Duration::from_millis(50),
    max_backoff: Duration::from_secs(1),
};

/// A consumer that answers the requests on `requests` with `handler`, publishing each reply (or
/// error reply) through the context's publisher on `replies`, which the context's service must own
/// and which must be public.
///
/// `handler` is a handler like any other ([`Handler`]): an `async fn` whose arguments are
/// extractors ([`RequestInfo`] among them), which returns the reply payload ([`IntoReply`]). It is
/// named after its function, and the consumer is a [`Consumer`] like any other, in group
/// `<service>.<handler name>`, with its dead-letter topic (which the service must own, see
/// [`crate::consume::dead_letter_topic`]) and its layers: tracing, correlation, retries
/// ([`RESPONDER_RETRY`]), panic recovery, timeout (see [`crate::layer`]). Above the retries the
/// reply step turns the outcome into the reply. Tune it with its builder methods and start it with
/// [`Consumer::run`]. What happens on handler errors, expired requests and malformed ones: see the
/// [module documentation](crate::request).
pub fn responder<H, T, S>(
    context: &Context,
    requests: &TopicSpec,
    replies: &TopicSpec,
    handler: H,
    state: S,
) -> Result<Consumer<S>, ConsumeError>
where
    H: Handler<T, S, Output: IntoReply>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    check_reply_topic(context.spec(), replies)?;
    let name = responder_name::<H>();
    let run = move |CallContext(cx): CallContext<S>| answer(handler.clone(), cx);
    Ok(Consumer::new(context, requests, BoxedHandler::named(name, run), state)?
        .retry(RESPONDER_RETRY)
        .around_retries(reply_step(replies)))
}

/// A request handler's name: its function's last path segment (`my_app::stock_level` →
/// `stock_level`, also for a function declared inside another's body); a closure keeps its full
/// `…::{{closure}}` path. Kept as responders have always been named, so that their consumer groups
/// stay what they were (event handlers declared inside a function body keep their full path).
fn responder_name<H>() -> String {
    let full = std::any::type_name::<H>();
    let path = full.split('<').next().unwrap_or(full);
    match path.ends_with('}') {
        true => full.to_owned(),
        false => path.rsplit("::").next().unwrap_or(path).to_owned(),
    }
}

/// One attempt at a request: runs `handler` and keeps its reply payload for the reply step.
async fn answer<H, T, S>(handler: H, cx: HandlerContext<S>) -> Result<(), HandlerError>
where
    H: Handler<T, S, Output: IntoReply>,
{
    let scope = cx.scope().cloned();
    let body = handler.run(cx).await?.into_reply()?;
    if let Some(scope) = scope {
        scope.put(body);
    }
    Ok(())
}

/// The reply step, for the layers above a responder's retries ([`answer_request`] for each request).
fn reply_step<S: Clone + Send + Sync + 'static>(replies: &TopicSpec) -> Layers<S> {
    let replies = Arc::new(replies.clone());
    Layers::new().layer(tower::layer::layer_fn(move |attempts: EventService<S>| {
        let replies = replies.clone();
        BoxCloneSyncService::new(tower::service_fn(move |cx| {
            answer_request(attempts.clone(), replies.clone(), cx)
        }))
    }))
}

/// The reply step for one request: reads its headers, skips it past its deadline (its caller has
/// given up), hands the deadline down to the `attempts` (the retries and what they wrap), and turns
/// their outcome into the reply (see the module documentation for every path). A request without
/// request headers, or whose reply-to names another topic, is an error: a poison record.
pub(super) async fn answer_request<I, S>(
    attempts: I,
    replies: Arc<TopicSpec>,
    cx: HandlerContext<S>,
) -> Result<(), HandlerError>
where
    I: Service<HandlerContext<S>, Response = (), Error = HandlerError>,
{
    let request = RequestInfo::from_event(cx.event())?;
    if request.reply_to != replies.name() {
        return Err(HandlerError::permanent(format!(
            "the request asks for its reply on `{}`, but this responder answers on `{}` only",
            request.reply_to,
            replies.name()
        ))
        .with_kind("bad-reply-to"));
    }
    if request.is_expired() {
        tracing::debug!(request = %request.id, "request expired before it was handled; not answered");
        return Ok(());
    }
    let publisher = cx.publisher().cloned().ok_or(ExtractError::NoPublisher)?;
    let scope = Scope::new(request.deadline);
    let outcome = attempts.oneshot(cx.with_scope(scope.clone())).await.map(|()| scope.take());
    reply(&publisher, &replies, &request, outcome).await
}

/// Publishes the reply to `request` that `outcome` (the reply payload, or the error of the last
/// attempt) calls for, if any.
async fn reply(
    publisher: &Publisher,
    replies: &TopicSpec,
    request: &RequestInfo,
    outcome: Result<Option<Vec<u8>>, HandlerError>,
) -> Result<(), HandlerError> {
    let id = request.id.hyphenated().to_string();
    let (event_type, body, kind) = match outcome {
        Ok(Some(body)) => (REPLY_TYPE, body, None),
        Ok(None) => {
            tracing::debug!(request = %id, "a layer ended the request without a reply; not answered");
            return Ok(());
        }
        // Retried until the next backoff would end past the deadline: the caller has given up.
        Err(e) if e.is_retriable() && request.deadline.is_some() => {
            tracing::warn!(request = %id, error = %e, "request not answered by its deadline");
            return Ok(());
        }
        // Without a deadline, the consumer's dead letters apply (its retries did).
        Err(e) if e.is_retriable() => return Err(e),
        Err(e) => {
            tracing::info!(request = %id, error = %e, kind = e.kind(), "answering with an error reply");
            (ERROR_REPLY_TYPE, e.to_string().into_bytes(), Some(e.kind()))
        }
    };
    if request.is_expired() {
        tracing::warn!(request = %id, "request's deadline passed while it was handled; not answered");
        return Ok(());
    }
    let mut reply_headers: Vec<(&str, &[u8])> =
        vec![(headers::REQUEST_ID, id.as_bytes()), (headers::REQUESTER, request.requester.as_bytes())];
    if let Some(kind) = kind {
        reply_headers.push((headers::REPLY_ERROR, kind.as_bytes()));
    }
    publisher
        .publish(replies, Outgoing::new(event_type, id.as_bytes(), &body).headers(&reply_headers))
        .await?;
    Ok(())
}
