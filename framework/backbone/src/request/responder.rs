//! The responder side: a consumer answering each request on the requester's reply topic.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde::Serialize;
use uuid::Uuid;

use crate::consume::{ConsumeError, Consumer};
use crate::handler::{
    BoxedHandler, ExtractError, FromEvent, HandlerContext, HandlerError, IncomingEvent, Json,
};
use crate::publish::Outgoing;
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

/// A reply handler: an `async fn` (or closure returning a future) taking up to 8 extractors
/// ([`FromEvent`]) and returning an [`IntoReply`]. `T` is the tuple of argument types.
pub trait ReplyHandler<T, S>: Clone + Send + Sync + Sized + 'static {
    /// Extracts the arguments from `cx`, runs the handler and returns the reply payload.
    fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<Vec<u8>, HandlerError>>;
}

macro_rules! impl_reply_handler {
    ($($ty:ident),*) => {
        impl<F, Fut, R, S, $($ty,)*> ReplyHandler<($($ty,)*), S> for F
        where
            F: Fn($($ty,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoReply,
            S: Send + Sync + 'static,
            $($ty: FromEvent<S> + Send + 'static,)*
        {
            #[allow(non_snake_case)]
            fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<Vec<u8>, HandlerError>> {
                let handler = self.clone();
                Box::pin(async move {
                    $(
                        let $ty = match $ty::from_event(&cx) {
                            Ok(v) => v,
                            Err(e) => return Err(HandlerError::from(e)),
                        };
                    )*
                    drop(cx);
                    handler($($ty,)*).await.into_reply()
                })
            }
        }
    };
}

impl_reply_handler!();
impl_reply_handler!(T1);
impl_reply_handler!(T1, T2);
impl_reply_handler!(T1, T2, T3);
impl_reply_handler!(T1, T2, T3, T4);
impl_reply_handler!(T1, T2, T3, T4, T5);
impl_reply_handler!(T1, T2, T3, T4, T5, T6);
impl_reply_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_reply_handler!(T1, T2, T3, T4, T5, T6, T7, T8);

pub(super) type ReplyFn<S> =
    dyn Fn(HandlerContext<S>) -> BoxFuture<'static, Result<Vec<u8>, HandlerError>> + Send + Sync;

/// A reply handler of any type behind one type, with a name (its consumer group is
/// `<service>.<name>`). Cheap to clone.
pub struct BoxedReplyHandler<S = ()> {
    name: Arc<str>,
    call: Arc<ReplyFn<S>>,
}

impl<S: 'static> BoxedReplyHandler<S> {
    /// Boxes `handler`, named after its function. Name closures with [`named`](Self::named).
    pub fn new<H: ReplyHandler<T, S>, T: 'static>(handler: H) -> Self {
        // `my_app::stock_level` → `stock_level`; closures keep their full `…::{{closure}}` path.
        let full = std::any::type_name::<H>();
        let path = full.split('<').next().unwrap_or(full);
        let name = if path.ends_with('}') { full } else { path.rsplit("::").next().unwrap_or(path) };
        Self::named(name, handler)
    }

    /// Boxes `handler` under `name`.
    pub fn named<H: ReplyHandler<T, S>, T: 'static>(name: impl Into<String>, handler: H) -> Self {
        Self { name: name.into().into(), call: Arc::new(move |cx| handler.call(cx)) }
    }
}

impl<S> BoxedReplyHandler<S> {
    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Handles the request in `cx`: the reply payload or the handler's error.
    pub fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<Vec<u8>, HandlerError>> {
        (self.call)(cx)
    }
}

impl<S> Clone for BoxedReplyHandler<S> {
    fn clone(&self) -> Self {
        Self { name: self.name.clone(), call: self.call.clone() }
    }
}

impl<S> fmt::Debug for BoxedReplyHandler<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxedReplyHandler").field("name", &self.name).finish_non_exhaustive()
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

/// A consumer that answers the requests on `requests` with `handler`, publishing each reply (or
/// error reply) through the context's publisher on `replies`, which the context's service must own
/// and which must be public.
///
/// The consumer is a [`Consumer`] like any other, in group `<service>.<handler name>`, with its
/// dead-letter topic (which the service must own, see [`crate::consume::dead_letter_topic`]): tune
/// it with its builder methods and start it with [`Consumer::run`]. What happens on handler errors,
/// expired requests and malformed ones: see the [module documentation](crate::request).
pub fn responder<S: Clone + Send + Sync + 'static>(
    context: &Context,
    requests: &TopicSpec,
    replies: &TopicSpec,
    handler: BoxedReplyHandler<S>,
    state: S,
) -> Result<Consumer<S>, ConsumeError> {
    check_reply_topic(context.spec(), replies)?;
    let replies = Arc::new(replies.clone());
    let name = handler.name().to_owned();
    let answer = move |CallContext(cx): CallContext<S>| respond(handler.clone(), replies.clone(), cx);
    Consumer::new(context, requests, BoxedHandler::named(name, answer), state)
}

/// First retry delay of a retriable handler error (doubling, up to [`MAX_BACKOFF`], with jitter).
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest retry delay of a retriable handler error.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Answers one request: see the module documentation for every path.
pub(super) async fn respond<S: Clone + Send + Sync + 'static>(
    handler: BoxedReplyHandler<S>,
    replies: Arc<TopicSpec>,
    cx: HandlerContext<S>,
) -> Result<(), HandlerError> {
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
    let mut backoff = crate::backoff::Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let outcome = loop {
        let attempt = std::panic::AssertUnwindSafe(handler.call(cx.clone())).catch_unwind().await;
        match attempt {
            Ok(Ok(body)) => break Ok(body),
            Ok(Err(e)) if e.is_retriable() => {
                // Without a deadline, the consumer's retry policy and dead letters apply.
                let Some(remaining) = request.remaining() else { return Err(e) };
                let delay = backoff.next_delay();
                if remaining <= delay {
                    tracing::warn!(request = %request.id, error = %e, "request not answered by its deadline");
                    return Ok(());
                }
                tracing::debug!(request = %request.id, error = %e, "retrying the request");
                tokio::time::sleep(delay).await;
            }
            Ok(Err(e)) => break Err(e),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                break Err(
                    HandlerError::permanent(format!("the handler panicked: {message}")).with_kind("panic")
                );
            }
        }
    };
    let id = request.id.hyphenated().to_string();
    let (event_type, body, kind) = match outcome {
        Ok(body) => (REPLY_TYPE, body, None),
        Err(e) => {
            tracing::info!(request = %id, error = %e, kind = e.kind(), "answering with an error reply");
            (ERROR_REPLY_TYPE, e.to_string().into_bytes(), Some(e.kind()))
        }
    };
    let mut reply_headers: Vec<(&str, &[u8])> =
        vec![(headers::REQUEST_ID, id.as_bytes()), (headers::REQUESTER, request.requester.as_bytes())];
    if let Some(kind) = kind {
        reply_headers.push((headers::REPLY_ERROR, kind.as_bytes()));
    }
    publisher
        .publish(&replies, Outgoing::new(event_type, id.as_bytes(), &body).headers(&reply_headers))
        .await?;
    Ok(())
}
