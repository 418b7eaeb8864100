//! Request/response over topics: commands and queries for callers that cannot, or should not, call
//! the answering service directly.
//!
//! A **requester** publishes a request on its request topic; any instance of the **responder**
//! service handles it (a consumer group, at least once) and publishes the reply on its reply topic;
//! the requester instance that asked reads the reply and hands it to the waiting caller.
//!
//! ```text
//!  requester (orders)                              responder (stock)
//!  ──────────────────                              ─────────────────
//!  Requester::request ──▶ orders.public.stock-level-requests-v1 ──▶ responder(…) handler
//!         ▲                                                                 │
//!         └──────────── stock.public.stock-level-replies-v1 ◀──────────────┘
//!            (assigned, every partition, filtered by requester instance id)
//! ```
//!
//! # Who owns which topic
//!
//! backbone's rule is one writer per topic: a service writes only topics it owns, and the ACLs give
//! its principal write access to its own prefix `<owner>.` alone (see [`crate::topic`]). So:
//!
//! - the **request topic** is the requester's: `<requester>.public.<name>-requests-v1`
//!   ([`request_topic`]); the responder reads it, as it may read any public topic;
//! - the **reply topic** is the responder's: `<responder>.public.<name>-replies-v1`
//!   ([`reply_topic`], one partition); every requester reads it and keeps the replies addressed to
//!   its own instance (the `backbone-requester-instance` header).
//!
//! The alternative, each requester owning a private reply topic that responders write as a declared
//! exception, was rejected: it breaks the single-writer rule and the prefix ACLs (the responder's
//! principal would need write access to every requester's prefix), and a private topic is by
//! definition unreadable and unwritable by anyone else. The price of the chosen layout is that each
//! requester instance reads every reply of the responder and drops those of others
//! ([`RequestStats::foreign_replies`]): fine for the request rates this pattern suits (see below),
//! and what makes replies reach the right instance whatever scales or rebalances.
//!
//! It is enforced in code: [`responder`] refuses a reply topic the responder does not own or that is
//! not public, and answers only on that topic: a request whose `backbone-reply-to` names any other
//! topic is refused (dead-lettered) rather than answered somewhere else. [`Requester`] refuses a
//! request topic its service does not own and a reply topic it may not read.
//!
//! Both topics are meant to be small and short-lived: the defaults are one hour of retention and
//! 1 MiB segments (so retention actually applies: Kafka deletes whole closed segments only). Segment
//! size is declared through `compact,delete` (how [`crate::topic`] expresses it); every request and
//! reply is keyed by its unique request id, so compaction never removes anything and retention does
//! the cleaning.
//!
//! # A request's journey
//!
//! 1. [`Requester::request`] makes a request id (a UUID), registers it among the pending requests and
//!    publishes the payload, keyed by the id, with headers ([`headers`]): request id, reply-to (the
//!    reply topic), requester instance and deadline (now + the timeout, Unix milliseconds).
//! 2. A responder instance handles it with a plain `async fn` whose arguments are extractors, as
//!    for events ([`crate::handler`](mod@crate::handler)), plus [`RequestInfo`], and which returns the reply payload
//!    ([`IntoReply`]). A request whose deadline has passed is skipped: its caller has given up.
//! 3. The reply is published on the reply topic with the request id and requester instance.
//! 4. The requester's reply reader, which was assigned every partition of the reply topic at the end
//!    offsets found at start-up (replies are per instance: there is nothing to resume and no group),
//!    routes it to the waiting caller by request id.
//!
//! # Timeouts, bounds and metrics
//!
//! Every request has its own timeout, covering publishing and waiting, of at most [`MAX_DEADLINE`]
//! (five minutes; a responder also takes no deadline from a request's header as further ahead than
//! that, so a far-future one cannot hold a request partition); it ends as
//! [`RequestError::Timeout`] and its pending entry is dropped, so a reply arriving later is counted
//! as late and dropped. A timed-out **command** may still be carried out: make commands idempotent
//! (the request id is a natural idempotency key, [`RequestInfo::id`]).
//!
//! At most [`RequesterBuilder::max_pending`] requests are pending per requester. One more fails at
//! once with [`RequestError::Overloaded`] (retriable) instead of waiting: a queue in front of the
//! bound would only move the unbounded part, while the caller (an HTTP handler answering 503, a
//! batch slowing down) is the one that can shed or pace load. [`Requester::pending`] and
//! [`Requester::stats`] (sent, answered, timed out, overloaded, late and duplicate replies …) are the
//! metrics.
//!
//! # Scaling, rebalances and failures
//!
//! The request id and reply-to travel in headers, so any responder instance can answer any request,
//! and partitions of the request topic move between instances freely. When a responder instance dies
//! mid-request, the request is delivered again to the instance that takes its partition over (at
//! least once), which may answer a request the dead one had already answered but not committed. The
//! requester delivers exactly one answer per request: the first reply wins, later ones are dropped
//! and counted ([`RequestStats::duplicate_replies`]).
//!
//! # Failures in the responder
//!
//! - A **permanent** handler error (a refused command, an undecodable request, a panic) is answered
//!   with an **error reply** (headers `backbone-reply-error` and its kind; the message is the
//!   payload), which the requester returns as [`RequestError::Remote`]. It is not dead-lettered: the
//!   caller is waiting and should learn the outcome now, and the request is transient, only its caller
//!   can decide to send it again.
//! - A **retriable** error is retried in place, with backoff, until the request's deadline; then the
//!   request is dropped unanswered (its caller has timed out). Without a deadline header, the
//!   consumer's usual retry policy and dead letters apply.
//! - A request that cannot be answered at all (no request id, reply-to or requester header; a
//!   reply-to naming another topic) is a poison record: dead-lettered like any event.
//!
//! Responders handle each partition's requests one at a time (see [`crate::consume`]): the request
//! topic's partition count bounds how many requests a responder service works on at once.
//!
//! # When to prefer HTTP
//!
//! Topics add a broker hop each way, durability and a consumer group's redelivery. Prefer a direct
//! HTTP (or gRPC) call for **synchronous queries that need low latency** and have no use for
//! durability or replay: reading a price, a stock level, a user's profile for a page. The caller
//! gets an answer or an error at once, and nothing is stored.
//!
//! Prefer request/response over topics when:
//!
//! - the caller **cannot reach the callee directly** (another network, a partner, an edge site,
//!   firewalls that let only Kafka through);
//! - the request must **survive outages** of the callee: it waits, buffered in the topic, until an
//!   instance is back, within its deadline;
//! - requests and replies must be **auditable** or replayable: they are records on topics, with
//!   correlation ids and trace context;
//! - the callee must **absorb bursts** at its own pace instead of being overrun.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use backbone::consume::dead_letter_topic;
//! use backbone::request::{self, BoxedReplyHandler, Requester};
//! use backbone::{Config, Event, HandlerError, Service};
//!
//! async fn stock_level(Event(sku): Event<String>) -> Result<String, HandlerError> {
//!     Ok(format!("{sku}: 12"))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let requests = request::request_topic("orders", "stock-level").build()?;
//! let replies = request::reply_topic("stock", "stock-level").build()?;
//!
//! // The responder: Stock owns the reply topic and its dead-letter topic, reads Orders' requests.
//! let stock = Service::new("stock")
//!     .owns(&replies)
//!     .owns(&dead_letter_topic("stock", &requests)?)
//!     .consumes(&requests)
//!     .spec()?;
//! let config = Config::from_env("stock")?;
//! let running = stock.start(&config).await?;
//! let handler = BoxedReplyHandler::new(stock_level);
//! let consumer = request::responder(
//!     &config, &stock, &requests, &replies, handler, (), running.publisher().clone(),
//! )?;
//! tokio::spawn(consumer.run(backbone::shutdown_signal()));
//!
//! // The requester: Orders owns the request topic and reads Stock's replies.
//! let orders = Service::new("orders").owns(&requests).consumes(&replies).spec()?;
//! let config = Config::from_env("orders")?;
//! let running = orders.start(&config).await?;
//! let requester = Requester::builder(&config, &orders, &requests, &replies, running.publisher().clone())?
//!     .max_pending(1_000)
//!     .start()
//!     .await?;
//! let reply = requester.request(b"sku-42", Duration::from_secs(5)).await?;
//! assert_eq!(reply.payload(), b"sku-42: 12");
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::Config;
use crate::consume::{ConsumeError, Consumer};
use crate::handler::{
    BoxedHandler, Decode, DecodeError, ExtractError, FromEvent, HandlerContext, HandlerError, IncomingEvent,
    Json,
};
use crate::publish::{Outgoing, PublishError, Publisher};
use crate::service::ServiceSpec;
use crate::topic::{TopicBuilder, TopicError, TopicSpec, Visibility, check_may_read};

/// Header names of requests and replies (besides those backbone puts on every event).
pub mod headers {
    /// The request's id (a hyphenated UUID), on the request and its reply.
    pub const REQUEST_ID: &str = "backbone-request-id";
    /// The topic the reply goes to (the responder's reply topic), on the request.
    pub const REPLY_TO: &str = "backbone-reply-to";
    /// The requester instance waiting for the reply, on the request and its reply.
    pub const REQUESTER: &str = "backbone-requester-instance";
    /// When the requester stops waiting, Unix milliseconds, on the request.
    pub const DEADLINE: &str = "backbone-request-deadline";
    /// On an error reply: the failure's kind ([`crate::HandlerError::kind`]); the payload is its
    /// message.
    pub const REPLY_ERROR: &str = "backbone-reply-error";
}

/// Retention of request and reply topics by default: an hour, far beyond any sensible timeout.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(3600);
/// Segment size of request and reply topics by default: 1 MiB (the smallest backbone allows), so
/// segments close, and retention applies, soon.
pub const DEFAULT_SEGMENT_BYTES: u64 = 1024 * 1024;
/// The longest a request may wait for its reply: a [`Requester::request`] timeout longer than this
/// is cut to it, and a responder takes a request's deadline (its `backbone-request-deadline`
/// header) as at most this far ahead of its own clock, so a far-future deadline cannot keep it
/// retrying one request (and its partition waiting) longer.
pub const MAX_DEADLINE: Duration = Duration::from_secs(5 * 60);
/// Event type of requests unless [`RequesterBuilder::event_type`] says otherwise.
pub const DEFAULT_REQUEST_TYPE: &str = "Request";
/// Event type of replies.
pub const REPLY_TYPE: &str = "Reply";
/// Event type of error replies.
pub const ERROR_REPLY_TYPE: &str = "ReplyError";

/// The request topic `requester` owns for requests `name`: `<requester>.public.<name>-requests-v1`,
/// 6 partitions (the responders' parallelism), kept [`DEFAULT_RETENTION`] in
/// [`DEFAULT_SEGMENT_BYTES`] segments. Tune it before [`build`](TopicBuilder::build).
pub fn request_topic(requester: &str, name: &str) -> TopicBuilder {
    TopicSpec::public(requester, format!("{name}-requests"), 1)
        .partitions(6)
        .retention(DEFAULT_RETENTION)
        .segment_bytes(DEFAULT_SEGMENT_BYTES)
}

/// The reply topic `responder` owns for replies to requests `name`:
/// `<responder>.public.<name>-replies-v1`, one partition (every requester instance reads all of it
/// anyway), kept [`DEFAULT_RETENTION`] in [`DEFAULT_SEGMENT_BYTES`] segments.
pub fn reply_topic(responder: &str, name: &str) -> TopicBuilder {
    TopicSpec::public(responder, format!("{name}-replies"), 1)
        .partitions(1)
        .retention(DEFAULT_RETENTION)
        .segment_bytes(DEFAULT_SEGMENT_BYTES)
}

// ---------------------------------------------------------------------------------------------
// Responder side
// ---------------------------------------------------------------------------------------------

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

type ReplyFn<S> =
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
struct Context<S>(HandlerContext<S>);

impl<S: Clone> FromEvent<S> for Context<S> {
    fn from_event(cx: &HandlerContext<S>) -> Result<Self, ExtractError> {
        Ok(Self(cx.clone()))
    }
}

/// Checks the responder's side of the ownership rule: it owns `replies`, which is public.
fn check_reply_topic(spec: &ServiceSpec, replies: &TopicSpec) -> Result<(), TopicError> {
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
/// error reply) on `replies`, which `spec`'s service must own and which must be public.
///
/// The consumer is a [`Consumer`] like any other, in group `<service>.<handler name>`, with its
/// dead-letter topic (which the service must own, see [`crate::consume::dead_letter_topic`]): tune
/// it with its builder methods and start it with [`Consumer::run`]. What happens on handler errors,
/// expired requests and malformed ones: see the [module documentation](self).
pub fn responder<S: Clone + Send + Sync + 'static>(
    config: &Config,
    spec: &ServiceSpec,
    requests: &TopicSpec,
    replies: &TopicSpec,
    handler: BoxedReplyHandler<S>,
    state: S,
    publisher: Publisher,
) -> Result<Consumer<S>, ConsumeError> {
    check_reply_topic(spec, replies)?;
    let replies = Arc::new(replies.clone());
    let name = handler.name().to_owned();
    let answer = move |Context(cx): Context<S>| respond(handler.clone(), replies.clone(), cx);
    Consumer::new(config, spec, requests, BoxedHandler::named(name, answer), state, publisher, None)
}

/// First retry delay of a retriable handler error (doubling, up to [`MAX_BACKOFF`]).
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest retry delay of a retriable handler error.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Answers one request: see the module documentation for every path.
async fn respond<S: Clone + Send + Sync + 'static>(
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
    let mut backoff = FIRST_BACKOFF;
    let outcome = loop {
        let attempt = std::panic::AssertUnwindSafe(handler.call(cx.clone())).catch_unwind().await;
        match attempt {
            Ok(Ok(body)) => break Ok(body),
            Ok(Err(e)) if e.is_retriable() => {
                // Without a deadline, the consumer's retry policy and dead letters apply.
                let Some(remaining) = request.remaining() else { return Err(e) };
                if remaining <= backoff {
                    tracing::warn!(request = %request.id, error = %e, "request not answered by its deadline");
                    return Ok(());
                }
                tracing::debug!(request = %request.id, error = %e, "retrying the request");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
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

// ---------------------------------------------------------------------------------------------
// Requester side
// ---------------------------------------------------------------------------------------------

/// Why a request got no reply, or got an error reply.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No reply within the request's timeout. The request may have been carried out; a reply that
    /// comes later is dropped (and counted as late).
    #[error("no reply on `{topic}` within {timeout:?}")]
    Timeout {
        /// The reply topic.
        topic: String,
        /// The request's timeout.
        timeout: Duration,
    },
    /// [`RequesterBuilder::max_pending`] requests are already waiting; nothing was sent.
    #[error("{max_pending} requests are already pending; nothing was sent")]
    Overloaded {
        /// The bound.
        max_pending: usize,
    },
    /// The request could not be published.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The responder's handler failed permanently and said why in an error reply.
    #[error("the responder refused the request ({kind}): {message}")]
    Remote {
        /// The failure's kind ([`HandlerError::kind`]: `handler`, `undecodable-payload`, `panic` …).
        kind: String,
        /// The failure's message.
        message: String,
    },
    /// The requester was closed.
    #[error("the requester is closed")]
    Closed,
}

impl RequestError {
    /// Whether sending the request again may succeed: after a timeout (for a command, only if it is
    /// idempotent), when overloaded, after a retriable publish failure.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Overloaded { .. } => true,
            Self::Publish(e) => e.is_retriable(),
            Self::Remote { .. } | Self::Closed => false,
        }
    }
}

/// A reply: its payload and headers, as read from the reply topic.
#[derive(Debug, Clone)]
pub struct Reply {
    id: Uuid,
    event: IncomingEvent,
}

impl Reply {
    /// The id of the request it answers.
    pub fn request_id(&self) -> Uuid {
        self.id
    }

    /// The payload (empty if none).
    pub fn payload(&self) -> &[u8] {
        self.event.payload().unwrap_or_default()
    }

    /// The payload decoded with `T`'s [`Decode`].
    pub fn decode<T: Decode>(&self) -> Result<T, DecodeError> {
        T::decode(self.payload())
    }

    /// The payload decoded as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_slice(self.payload()).map_err(DecodeError::new)
    }

    /// The responding service (its `backbone-producer` header).
    pub fn responder(&self) -> Option<&str> {
        self.event.header(crate::publish::headers::PRODUCER).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The whole event: topic, partition, offset, timestamp, every header.
    pub fn event(&self) -> &IncomingEvent {
        &self.event
    }

    /// The reply, or the responder's error as [`RequestError::Remote`].
    fn into_result(self) -> Result<Self, RequestError> {
        match self.event.header(headers::REPLY_ERROR) {
            None => Ok(self),
            Some(kind) => Err(RequestError::Remote {
                kind: String::from_utf8_lossy(kind).into_owned(),
                message: String::from_utf8_lossy(self.payload()).into_owned(),
            }),
        }
    }
}

/// A snapshot of a [`Requester`]'s metrics. Counters only grow; each request ends in exactly one of
/// `answered` (including `remote_errors`), `timed_out`, `overloaded`, `publish_failed`, `cancelled`
/// or closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestStats {
    /// Requests waiting for their reply now.
    pub pending: usize,
    /// Requests published (acknowledged by the broker).
    pub sent: u64,
    /// Requests that got their reply (error replies included).
    pub answered: u64,
    /// Of those, error replies ([`RequestError::Remote`]).
    pub remote_errors: u64,
    /// Requests that got no reply in time.
    pub timed_out: u64,
    /// Requests refused because `max_pending` were pending.
    pub overloaded: u64,
    /// Requests that could not be published.
    pub publish_failed: u64,
    /// Requests whose caller stopped waiting (dropped the future).
    pub cancelled: u64,
    /// Replies for requests no longer pending (timed out, cancelled, or unknown): dropped.
    pub late_replies: u64,
    /// Further replies to requests already answered (a responder instance died after answering, and
    /// another answered again): dropped.
    pub duplicate_replies: u64,
    /// Replies addressed to other requester instances: skipped.
    pub foreign_replies: u64,
    /// Times the reply reader failed (a panic) and was started again.
    pub reader_restarts: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    answered: AtomicU64,
    remote_errors: AtomicU64,
    timed_out: AtomicU64,
    overloaded: AtomicU64,
    publish_failed: AtomicU64,
    cancelled: AtomicU64,
    late_replies: AtomicU64,
    duplicate_replies: AtomicU64,
    foreign_replies: AtomicU64,
    reader_restarts: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Pending requests and the ids recently answered (to tell duplicate replies from late ones).
struct Table {
    pending: HashMap<Uuid, oneshot::Sender<Reply>>,
    answered: HashSet<Uuid>,
    answered_order: VecDeque<Uuid>,
    closed: bool,
}

/// Where a reply went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routed {
    Delivered,
    Duplicate,
    Late,
}

/// The requester's bookkeeping: bounded pending requests, reply routing, counters.
struct Routes {
    table: Mutex<Table>,
    counters: Counters,
    max_pending: usize,
    remember: usize,
}

impl Routes {
    fn new(max_pending: usize) -> Self {
        Self {
            table: Mutex::new(Table {
                pending: HashMap::with_capacity(max_pending.min(1 << 16)),
                answered: HashSet::new(),
                answered_order: VecDeque::new(),
                closed: false,
            }),
            counters: Counters::default(),
            max_pending,
            remember: (max_pending * 16).max(10_000),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `id` as pending; refused when `max_pending` are (or the requester is closed).
    fn register(&self, id: Uuid) -> Result<oneshot::Receiver<Reply>, RequestError> {
        let mut table = self.lock();
        if table.closed {
            return Err(RequestError::Closed);
        }
        if table.pending.len() >= self.max_pending {
            drop(table);
            bump(&self.counters.overloaded);
            return Err(RequestError::Overloaded { max_pending: self.max_pending });
        }
        let (tx, rx) = oneshot::channel();
        table.pending.insert(id, tx);
        Ok(rx)
    }

    /// Hands `reply` to its waiting caller, if any: the first reply wins.
    fn deliver(&self, reply: Reply) -> Routed {
        let id = reply.id;
        let mut table = self.lock();
        let routed = match table.pending.remove(&id) {
            // Sent under the lock, so a caller giving up at this moment finds the reply in its
            // receiver (see `give_up`).
            Some(waiting) => {
                waiting.send(reply).ok();
                table.answered.insert(id);
                table.answered_order.push_back(id);
                while table.answered_order.len() > self.remember {
                    if let Some(old) = table.answered_order.pop_front() {
                        table.answered.remove(&old);
                    }
                }
                Routed::Delivered
            }
            None if table.answered.contains(&id) => Routed::Duplicate,
            None => Routed::Late,
        };
        drop(table);
        match routed {
            Routed::Delivered => {}
            Routed::Duplicate => bump(&self.counters.duplicate_replies),
            Routed::Late => bump(&self.counters.late_replies),
        }
        routed
    }

    /// Stops waiting for `id`: `true` if it was still pending (no reply came), `false` if a reply
    /// was delivered meanwhile (it is in the receiver).
    fn give_up(&self, id: Uuid) -> bool {
        self.lock().pending.remove(&id).is_some()
    }

    /// Refuses new requests and drops the pending ones (their callers get [`RequestError::Closed`]).
    fn close(&self) {
        let mut table = self.lock();
        table.closed = true;
        table.pending.clear();
    }

    fn stats(&self) -> RequestStats {
        let pending = self.lock().pending.len();
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RequestStats {
            pending,
            sent: get(&c.sent),
            answered: get(&c.answered),
            remote_errors: get(&c.remote_errors),
            timed_out: get(&c.timed_out),
            overloaded: get(&c.overloaded),
            publish_failed: get(&c.publish_failed),
            cancelled: get(&c.cancelled),
            late_replies: get(&c.late_replies),
            duplicate_replies: get(&c.duplicate_replies),
            foreign_replies: get(&c.foreign_replies),
            reader_restarts: get(&c.reader_restarts),
        }
    }

    /// Counts the outcome of a request that got its reply.
    fn answered(&self, reply: Reply) -> Result<Reply, RequestError> {
        bump(&self.counters.answered);
        let result = reply.into_result();
        if result.is_err() {
            bump(&self.counters.remote_errors);
        }
        result
    }
}

/// A request in flight: when dropped before it ended (its caller stopped waiting), it stops being
/// pending.
struct InFlight<'a> {
    routes: &'a Routes,
    id: Uuid,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Every ending path has removed the entry already; only a cancellation finds it.
        if self.routes.give_up(self.id) {
            bump(&self.routes.counters.cancelled);
        }
    }
}

struct Shared {
    routes: Routes,
    publisher: Publisher,
    requests: TopicSpec,
    reply_to: String,
    instance: String,
    event_type: String,
}

/// Stops the reply reader when the last [`Requester`] clone goes.
struct Reader {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Sends requests and waits for their replies. Cheap to clone: clones share the pending requests,
/// the reply reader and the metrics. Build one with [`Requester::builder`].
#[derive(Clone)]
pub struct Requester {
    shared: Arc<Shared>,
    reader: Arc<Reader>,
}

impl fmt::Debug for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requester")
            .field("requests", &self.shared.requests.name())
            .field("reply_to", &self.shared.reply_to)
            .field("instance", &self.shared.instance)
            .finish_non_exhaustive()
    }
}

/// Configures and starts a [`Requester`].
#[must_use = "a requester builder does nothing until started"]
pub struct RequesterBuilder {
    client: rdkafka::ClientConfig,
    publisher: Publisher,
    requests: TopicSpec,
    replies: TopicSpec,
    max_pending: usize,
    event_type: String,
}

impl fmt::Debug for RequesterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequesterBuilder")
            .field("requests", &self.requests.name())
            .field("replies", &self.replies.name())
            .field("max_pending", &self.max_pending)
            .finish_non_exhaustive()
    }
}

/// How long start-up waits for the reply topic's metadata and end offsets.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

impl Requester {
    /// A requester for `spec`'s service, which must own `requests` and may read `replies` (the
    /// responder's reply topic); `publisher` (the service's) publishes the requests.
    pub fn builder(
        config: &Config,
        spec: &ServiceSpec,
        requests: &TopicSpec,
        replies: &TopicSpec,
        publisher: Publisher,
    ) -> Result<RequesterBuilder, ConsumeError> {
        if spec.owned(requests.name()).is_none() {
            return Err(TopicError::InvalidTopic {
                topic: requests.name().to_owned(),
                reason: format!(
                    "service `{}` sends requests on `{}` but does not own it: a requester publishes on \
                     a topic of its own (`request::request_topic(\"{}\", …)`, declared with `.owns(…)`)",
                    spec.name(),
                    requests.name(),
                    spec.name()
                ),
            }
            .into());
        }
        check_may_read(spec.name(), replies)?;
        Ok(RequesterBuilder {
            client: config.client_config(spec.name()),
            publisher,
            requests: requests.clone(),
            replies: replies.clone(),
            max_pending: 10_000,
            event_type: DEFAULT_REQUEST_TYPE.to_owned(),
        })
    }

    /// Sends `payload` and waits up to `timeout` (publishing included; at most [`MAX_DEADLINE`])
    /// for its reply.
    ///
    /// Fails at once with [`RequestError::Overloaded`] when `max_pending` requests are pending.
    /// Dropping the future stops waiting (the request may still be answered; the reply is dropped).
    pub async fn request(&self, payload: &[u8], timeout: Duration) -> Result<Reply, RequestError> {
        let timeout = timeout.min(MAX_DEADLINE);
        let shared = &*self.shared;
        let routes = &shared.routes;
        let id = Uuid::new_v4();
        let deadline = tokio::time::Instant::now() + timeout;
        let deadline_millis = (SystemTime::now() + timeout)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut rx = routes.register(id)?;
        let _in_flight = InFlight { routes, id };
        let timed_out = || {
            bump(&routes.counters.timed_out);
            RequestError::Timeout { topic: shared.reply_to.clone(), timeout }
        };

        let id_text = id.hyphenated().to_string();
        let deadline_text = deadline_millis.to_string();
        let request_headers = [
            (headers::REQUEST_ID, id_text.as_bytes()),
            (headers::REPLY_TO, shared.reply_to.as_bytes()),
            (headers::REQUESTER, shared.instance.as_bytes()),
            (headers::DEADLINE, deadline_text.as_bytes()),
        ];
        let event = Outgoing::new(&shared.event_type, id_text.as_bytes(), payload).headers(&request_headers);
        match tokio::time::timeout_at(deadline, shared.publisher.publish(&shared.requests, event)).await {
            Ok(Ok(_)) => bump(&routes.counters.sent),
            Ok(Err(e)) => {
                routes.give_up(id);
                bump(&routes.counters.publish_failed);
                return Err(RequestError::Publish(e));
            }
            // Perhaps written: a reply may yet come (and be counted late), or be here already.
            Err(_) if routes.give_up(id) => return Err(timed_out()),
            Err(_) => {}
        }
        match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(Ok(reply)) => routes.answered(reply),
            Ok(Err(_)) => Err(RequestError::Closed),
            Err(_) if routes.give_up(id) => Err(timed_out()),
            // Delivered while the timeout fired: the reply is in the receiver.
            Err(_) => match rx.try_recv() {
                Ok(reply) => routes.answered(reply),
                Err(_) => Err(RequestError::Closed),
            },
        }
    }

    /// Requests waiting for their reply now.
    pub fn pending(&self) -> usize {
        self.shared.routes.lock().pending.len()
    }

    /// The metrics, now.
    pub fn stats(&self) -> RequestStats {
        self.shared.routes.stats()
    }

    /// This requester instance's id: replies carrying another are not for it.
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// Stops the reply reader; pending requests end with [`RequestError::Closed`], new ones are
    /// refused. Also happens when the last clone is dropped.
    pub async fn close(&self) {
        self.reader.stop.send_replace(true);
        let task = self.reader.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            task.await.ok();
        }
        self.shared.routes.close();
    }
}

impl RequesterBuilder {
    /// At most `requests` pending at once (default 10,000); more fail with
    /// [`RequestError::Overloaded`].
    pub fn max_pending(mut self, requests: usize) -> Self {
        self.max_pending = requests.max(1);
        self
    }

    /// The event type of requests (default [`DEFAULT_REQUEST_TYPE`]).
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = event_type.into();
        self
    }

    /// Sets a librdkafka property of the reply reader (`fetch.wait.max.ms` …).
    pub fn client_setting(mut self, key: &str, value: impl Into<String>) -> Self {
        self.client.set(key, value);
        self
    }

    /// Assigns the reply reader every partition of the reply topic at its current end, and returns
    /// once it is in place: every reply to a request sent afterwards is seen. The reply topic must
    /// exist (its owner, the responder service, provisions it at start-up).
    pub async fn start(self) -> Result<Requester, ConsumeError> {
        let topic = self.replies.name().to_owned();
        let failed = |reason: String| ConsumeError::Client { topic: topic.clone(), reason };
        let instance = Uuid::new_v4().simple().to_string();
        let consumer: StreamConsumer = self
            .client
            .clone()
            // librdkafka assigns only within a group. This one is never joined (assign, not subscribe)
            // and commits nothing: replies are per instance, so there is nothing to share or resume.
            .set("group.id", format!("{}.replies.{instance}", self.publisher.service()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| failed(e.to_string()))?;
        let consumer = tokio::task::spawn_blocking({
            let topic = topic.clone();
            let owner = self.replies.owner().to_owned();
            move || -> Result<StreamConsumer, String> {
                let metadata =
                    consumer.fetch_metadata(Some(&topic), METADATA_TIMEOUT).map_err(|e| e.to_string())?;
                let partitions: Vec<i32> = metadata
                    .topics()
                    .iter()
                    .filter(|t| t.name() == topic && t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect();
                if partitions.is_empty() {
                    return Err(format!(
                        "the reply topic does not exist (yet): its owner `{owner}` provisions it when it starts"
                    ));
                }
                let mut assignment = TopicPartitionList::new();
                for partition in partitions {
                    let (_, end) = consumer
                        .fetch_watermarks(&topic, partition, METADATA_TIMEOUT)
                        .map_err(|e| e.to_string())?;
                    assignment
                        .add_partition_offset(&topic, partition, Offset::Offset(end))
                        .map_err(|e| e.to_string())?;
                }
                consumer.assign(&assignment).map_err(|e| e.to_string())?;
                Ok(consumer)
            }
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)?;

        let shared = Arc::new(Shared {
            routes: Routes::new(self.max_pending),
            publisher: self.publisher,
            requests: self.requests,
            reply_to: topic,
            instance,
            event_type: self.event_type,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(supervise_replies(shared.clone(), Arc::new(consumer), stopped, read_replies));
        Ok(Requester { shared, reader: Arc::new(Reader { stop, task: Mutex::new(Some(task)) }) })
    }
}

/// Runs the reply reader until stopped, starting it again should it end otherwise (a panic): a
/// requester's callers must never wait on a reader that is gone. When it stops, pending requests
/// end with [`RequestError::Closed`].
async fn supervise_replies<R, F>(
    shared: Arc<Shared>,
    consumer: Arc<StreamConsumer>,
    stop: watch::Receiver<bool>,
    read: R,
) where
    R: Fn(Arc<Shared>, Arc<StreamConsumer>, watch::Receiver<bool>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        let reader = tokio::spawn(read(shared.clone(), consumer.clone(), stop.clone()));
        match reader.await {
            Ok(()) => break,
            Err(e) if *stop.borrow() => {
                tracing::warn!(topic = shared.reply_to, error = %e, "reply reader ended while stopping");
                break;
            }
            Err(e) => {
                // The reply it was reading is lost (its caller times out); the others still come.
                bump(&shared.routes.counters.reader_restarts);
                tracing::error!(topic = shared.reply_to, error = %e, "reply reader failed; starting it again");
            }
        }
    }
    shared.routes.close();
    tokio::task::spawn_blocking(move || drop(consumer)).await.ok();
}

/// The reply reader: routes the replies addressed to this instance until stopped.
async fn read_replies(shared: Arc<Shared>, consumer: Arc<StreamConsumer>, mut stop: watch::Receiver<bool>) {
    use crate::handler::MessageHeaders as _;
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(topic = shared.reply_to, error = %e, "reply reader error");
                continue;
            }
        };
        // Names read as bytes: one that is not UTF-8 is merely not ours.
        let (mut requester, mut id) = (None, None);
        if let Some(h) = message.headers() {
            for (name, value) in (0..h.count()).filter_map(|i| h.name_and_value(i)) {
                if name == headers::REQUESTER.as_bytes() {
                    requester = Some(value);
                } else if name == headers::REQUEST_ID.as_bytes() {
                    id = Some(value);
                }
            }
        }
        if requester != Some(shared.instance.as_bytes()) {
            bump(&shared.routes.counters.foreign_replies);
            continue;
        }
        let Some(id) = id.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| Uuid::try_parse(v).ok())
        else {
            tracing::warn!(offset = message.offset(), "a reply without a valid request id; dropped");
            bump(&shared.routes.counters.late_replies);
            continue;
        };
        shared.routes.deliver(Reply { id, event: IncomingEvent::from_message(&message) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_event(reply_to: &str, deadline: Option<SystemTime>) -> IncomingEvent {
        let mut event = IncomingEvent::new("orders.public.stock-level-requests-v1", 0, 7)
            .with_key("k")
            .with_payload("sku-1")
            .with_header(headers::REQUEST_ID, Uuid::new_v4().hyphenated().to_string())
            .with_header(headers::REPLY_TO, reply_to)
            .with_header(headers::REQUESTER, "instance-1");
        if let Some(d) = deadline {
            let millis = d.duration_since(UNIX_EPOCH).unwrap().as_millis().to_string();
            event = event.with_header(headers::DEADLINE, millis);
        }
        event
    }

    fn reply(id: Uuid) -> Reply {
        Reply {
            id,
            event: IncomingEvent::new("stock.public.stock-level-replies-v1", 0, 0).with_payload("ok"),
        }
    }

    #[test]
    fn topics_follow_the_naming_and_ownership_rules() {
        let requests = request_topic("orders", "stock-level").build().unwrap();
        let replies = reply_topic("stock", "stock-level").build().unwrap();
        assert_eq!(requests.name(), "orders.public.stock-level-requests-v1");
        assert_eq!(replies.name(), "stock.public.stock-level-replies-v1");
        assert_eq!(replies.partitions(), 1);
        let configs = replies.configs(crate::Profile::Production);
        assert_eq!(configs["retention.ms"], "3600000");
        assert_eq!(configs["segment.bytes"], "1048576");

        // The responder must own the reply topic.
        let dlq = crate::consume::dead_letter_topic("stock", &requests).unwrap();
        let stock = crate::Service::new("stock").owns(&dlq).consumes(&requests).spec().unwrap();
        let err = check_reply_topic(&stock, &replies).unwrap_err().to_string();
        assert!(err.contains("does not own it"), "{err}");
        let private = TopicSpec::private("stock", "replies").build().unwrap();
        let stock = crate::Service::new("stock").owns(&private).spec().unwrap();
        assert!(check_reply_topic(&stock, &private).unwrap_err().to_string().contains("public"));

        // The requester must own the request topic.
        let config = Config { bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
        let orders = crate::Service::new("orders").consumes(&replies).spec().unwrap();
        let publisher = Publisher::new(&config, &orders).unwrap();
        let err = Requester::builder(&config, &orders, &requests, &replies, publisher).unwrap_err();
        assert!(err.to_string().contains("does not own it"), "{err}");
    }

    #[test]
    fn request_headers_are_read_and_checked() {
        let deadline = SystemTime::now() + Duration::from_secs(60);
        let info = RequestInfo::from_event(&request_event("r", Some(deadline))).unwrap();
        assert_eq!((info.reply_to(), info.requester()), ("r", "instance-1"));
        assert!(!info.is_expired());
        assert!(info.remaining().unwrap() > Duration::from_secs(50));

        let past = RequestInfo::from_event(&request_event("r", Some(UNIX_EPOCH))).unwrap();
        assert!(past.is_expired());

        let err = RequestInfo::from_event(&IncomingEvent::new("t", 0, 0)).unwrap_err();
        assert_eq!(err.kind(), "missing-header");
        let bad = IncomingEvent::new("t", 0, 0).with_header(headers::REQUEST_ID, "not-a-uuid");
        assert_eq!(RequestInfo::from_event(&bad).unwrap_err().kind(), "bad-header");
    }

    #[test]
    fn item_9_a_far_future_deadline_is_capped() {
        for asked in
            [SystemTime::now() + Duration::from_secs(24 * 3600), UNIX_EPOCH + Duration::from_millis(u64::MAX)]
        {
            let info = RequestInfo::from_event(&request_event("r", Some(asked))).unwrap();
            let remaining = info.remaining().unwrap();
            assert!(
                remaining <= MAX_DEADLINE && remaining > MAX_DEADLINE - Duration::from_secs(60),
                "{remaining:?}"
            );
        }
        // The largest number the header can hold, as text.
        let event = request_event("r", None).with_header(headers::DEADLINE, u64::MAX.to_string());
        let remaining = RequestInfo::from_event(&event).unwrap().remaining().unwrap();
        assert!(remaining <= MAX_DEADLINE, "{remaining:?}");
        // A near deadline stays as it is.
        let near =
            RequestInfo::from_event(&request_event("r", Some(SystemTime::now() + Duration::from_secs(5))))
                .unwrap();
        assert!(near.remaining().unwrap() <= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn item_9_a_huge_request_timeout_is_capped_not_a_panic() {
        // No broker: the publish never completes, and the (paused) clock runs to the capped timeout.
        let requests = request_topic("orders", "stock-level").build().unwrap();
        let config = Config { bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
        let orders = crate::Service::new("orders").owns(&requests).spec().unwrap();
        let (stop, _) = watch::channel(false);
        let requester = Requester {
            shared: Arc::new(Shared {
                routes: Routes::new(1),
                publisher: Publisher::new(&config, &orders).unwrap(),
                requests,
                reply_to: "stock.public.stock-level-replies-v1".into(),
                instance: "i".into(),
                event_type: DEFAULT_REQUEST_TYPE.into(),
            }),
            reader: Arc::new(Reader { stop, task: Mutex::new(None) }),
        };
        let started = tokio::time::Instant::now();
        let err = requester.request(b"sku-1", Duration::MAX).await.unwrap_err();
        assert!(matches!(err, RequestError::Timeout { timeout, .. } if timeout == MAX_DEADLINE), "{err}");
        assert_eq!(started.elapsed(), MAX_DEADLINE);
    }

    #[tokio::test]
    async fn item_5_a_reply_reader_that_panics_is_started_again() {
        let requests = request_topic("orders", "stock-level").build().unwrap();
        let config = Config { bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
        let orders = crate::Service::new("orders").owns(&requests).spec().unwrap();
        let shared = Arc::new(Shared {
            routes: Routes::new(4),
            publisher: Publisher::new(&config, &orders).unwrap(),
            requests,
            reply_to: "stock.public.stock-level-replies-v1".into(),
            instance: "i".into(),
            event_type: DEFAULT_REQUEST_TYPE.into(),
        });
        let consumer: StreamConsumer =
            config.client_config("orders").set("group.id", "never-joined").create().unwrap();
        let (stop, stopped) = watch::channel(false);
        let pending = shared.routes.register(Uuid::new_v4()).unwrap();
        // The first two readers panic (as rdkafka's header accessor did); the third waits for stop.
        let runs = Arc::new(AtomicU64::new(0));
        let counted = runs.clone();
        let read = move |_: Arc<Shared>, _: Arc<StreamConsumer>, mut stop: watch::Receiver<bool>| {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                assert!(run >= 2, "reader {run} fails");
                stop.wait_for(|s| *s).await.ok();
            }
        };
        let supervisor = tokio::spawn(supervise_replies(shared.clone(), Arc::new(consumer), stopped, read));
        let restarted = tokio::time::timeout(Duration::from_secs(10), async {
            while shared.routes.stats().reader_restarts < 2 {
                tokio::task::yield_now().await;
            }
        });
        restarted.await.expect("both failures seen within 10 s");
        assert!(!supervisor.is_finished(), "the reader runs again");
        assert!(!shared.routes.lock().closed, "pending requests still wait for their replies");
        stop.send_replace(true);
        supervisor.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        // Stopped: pending callers end (Closed) rather than hang.
        assert!(pending.await.is_err());
    }

    #[test]
    fn replies_convert_from_handler_outputs() {
        assert_eq!("a".into_reply().unwrap(), b"a");
        assert_eq!(String::from("b").into_reply().unwrap(), b"b");
        assert_eq!(Json(serde_json::json!({"n": 1})).into_reply().unwrap(), br#"{"n":1}"#);
        let err = Result::<String, _>::Err(HandlerError::permanent("no such sku")).into_reply().unwrap_err();
        assert!(!err.is_retriable());
    }

    fn responder_context(event: IncomingEvent) -> HandlerContext<()> {
        let spec = crate::Service::new("stock").spec().unwrap();
        let config = Config { bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
        HandlerContext::new(event, ()).with_publisher(Publisher::new(&config, &spec).unwrap())
    }

    #[tokio::test]
    async fn expired_requests_are_skipped_and_unanswerable_ones_refused() {
        async fn answer(crate::Event(sku): crate::Event<String>) -> String {
            panic!("must not be called for {sku}")
        }
        let replies = Arc::new(reply_topic("stock", "stock-level").build().unwrap());
        let handler = BoxedReplyHandler::new(answer);
        assert_eq!(handler.name(), "answer");

        // Past its deadline: not handled, not answered (nothing is published), offset stored.
        let expired = request_event(replies.name(), Some(UNIX_EPOCH));
        respond(handler.clone(), replies.clone(), responder_context(expired)).await.unwrap();

        // Reply-to naming another topic, or no request headers: a poison record.
        let elsewhere = request_event("orders.public.order-created-v1", None);
        let err = respond(handler.clone(), replies.clone(), responder_context(elsewhere)).await.unwrap_err();
        assert_eq!(err.kind(), "bad-reply-to");
        assert!(!err.is_retriable());
        let bare = IncomingEvent::new("t", 0, 0).with_payload("sku-1");
        let err = respond(handler, replies, responder_context(bare)).await.unwrap_err();
        assert_eq!(err.kind(), "missing-header");
    }

    #[test]
    fn the_first_reply_wins_and_the_bound_holds() {
        let routes = Routes::new(2);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut rx_a = routes.register(a).unwrap();
        let _rx_b = routes.register(b).unwrap();
        assert!(matches!(routes.register(c), Err(RequestError::Overloaded { max_pending: 2 })));

        assert_eq!(routes.deliver(reply(a)), Routed::Delivered);
        assert_eq!(routes.deliver(reply(a)), Routed::Duplicate);
        assert_eq!(rx_a.try_recv().unwrap().request_id(), a);
        // b times out; its reply comes late.
        assert!(routes.give_up(b));
        assert_eq!(routes.deliver(reply(b)), Routed::Late);
        assert_eq!(routes.deliver(reply(c)), Routed::Late);

        let stats = routes.stats();
        assert_eq!((stats.pending, stats.overloaded), (0, 1));
        assert_eq!((stats.duplicate_replies, stats.late_replies), (1, 2));

        // Closed: pending callers see the sender gone, new requests are refused.
        let mut rx = routes.register(c).unwrap();
        routes.close();
        assert!(rx.try_recv().is_err());
        assert!(matches!(routes.register(Uuid::new_v4()), Err(RequestError::Closed)));
    }

    #[test]
    fn error_replies_become_remote_errors() {
        let id = Uuid::new_v4();
        let event = IncomingEvent::new("t", 0, 0)
            .with_payload("no such sku")
            .with_header(headers::REPLY_ERROR, "handler");
        let err = Reply { id, event }.into_result().unwrap_err();
        assert!(
            matches!(&err, RequestError::Remote { kind, message } if kind == "handler" && message == "no such sku")
        );
        assert!(!err.is_retriable());
        assert!(RequestError::Timeout { topic: "t".into(), timeout: Duration::from_secs(1) }.is_retriable());
        assert!(RequestError::Overloaded { max_pending: 1 }.is_retriable());
    }
}
