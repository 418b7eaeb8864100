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
//! 2. A responder instance handles it with an ordinary handler ([`crate::handler::Handler`]): a
//!    plain `async fn` whose arguments are extractors, as for events, plus [`RequestInfo`], and
//!    which returns the reply payload ([`IntoReply`]). It runs under the consumer's usual layers
//!    (tracing, correlation, retries, panic recovery, timeout: [`crate::layer`]); above the
//!    retries, the responder's reply step reads the request headers, skips a request whose
//!    deadline has passed (its caller has given up), hands the deadline down to the retries and
//!    turns the outcome into the reply.
//! 3. The reply is published on the reply topic with the request id and requester instance,
//!    unless the deadline passed meanwhile.
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
//! - A **retriable** error is retried by the consumer's retry layer, with backoff
//!   ([`RESPONDER_RETRY`] unless [`Consumer::retry`](crate::consume::Consumer::retry) says
//!   otherwise), until the next backoff would end past the request's deadline; then the request is
//!   dropped unanswered (its caller has timed out). Without a deadline header, the retry policy's
//!   attempts and the consumer's dead letters apply.
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
//! use backbone::request::{self, Requester};
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
//! let consumer = request::responder(&running.context(), &requests, &replies, stock_level, ())?;
//! tokio::spawn(consumer.run(backbone::shutdown_signal()));
//!
//! // The requester: Orders owns the request topic and reads Stock's replies.
//! let orders = Service::new("orders").owns(&requests).consumes(&replies).spec()?;
//! let config = Config::from_env("orders")?;
//! let running = orders.start(&config).await?;
//! let requester = Requester::builder(&running.context(), &requests, &replies)?
//!     .max_pending(1_000)
//!     .start()
//!     .await?;
//! let reply = requester.request(b"sku-42", Duration::from_secs(5)).await?;
//! assert_eq!(reply.payload(), b"sku-42: 12");
//! # Ok(())
//! # }
//! ```

mod pending;
mod reply;
mod requester;
mod responder;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::topic::{TopicBuilder, TopicSpec};

pub use pending::RequestStats;
pub use reply::{Reply, RequestError};
pub use requester::{Requester, RequesterBuilder};
pub use responder::{IntoReply, RESPONDER_RETRY, RequestInfo, responder};

/// Header names of requests and replies (declared in [`crate::headers::request`]).
pub use crate::headers::request as headers;

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
