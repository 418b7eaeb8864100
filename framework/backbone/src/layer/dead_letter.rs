//! Dead letters: a failure that comes back up is written to the dead-letter topic with its origin.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use super::BoxFuture;
use super::retry::Retry;
use super::schema::REGISTRY_UNAVAILABLE;
use crate::handler::{HandlerContext, HandlerError, IncomingEvent};
use crate::publish::{Outgoing, PublishError, Publisher};
use crate::topic::TopicSpec;

/// Header names on a dead-lettered event (declared in [`crate::headers::dead_letter`]).
pub use crate::headers::dead_letter as dead_letter_headers;

/// Writes events whose handling failed to a dead-letter topic, with their origin in headers
/// ([`crate::headers::dead_letter`]), the original key and bytes; the event then counts as handled.
///
/// A dead letter is bounded whatever the event: at most [`MAX_COPIED_HEADERS`](Self::MAX_COPIED_HEADERS)
/// of its headers ([`MAX_COPIED_HEADER_BYTES`](Self::MAX_COPIED_HEADER_BYTES) in all) are copied and
/// the error message is cut at [`MAX_ERROR_BYTES`](Self::MAX_ERROR_BYTES). An event too large to be
/// written whole (over the producer's `message.max.bytes`, known before sending, or refused by the
/// broker for the dead-letter topic's `max.message.bytes`) gets a **truncated** dead letter instead:
/// the same origin and error headers, the first [`TRUNCATED_PAYLOAD_BYTES`](Self::TRUNCATED_PAYLOAD_BYTES)
/// of its payload, and headers saying it was truncated and the original sizes
/// ([`crate::headers::dead_letter::TRUNCATED`]). It is written once; the partition flows on.
///
/// If the write fails otherwise, the event is not done (its offset is not stored):
/// - a **retriable** error (timeouts, unavailable leaders …) or a denied write (an ACL, which an
///   operator may grant) is retried with the [`Retry`] backoff, without limit, health degraded
///   (`dead-letters:<topic>`, "cannot write dead letter for `<topic>:<partition>:<offset>` (…);
///   partition paused"); once it succeeds the partition resumes and health recovers;
/// - a **permanent** error (the producer failed fatally, the topic is not the service's, the broker
///   refuses the record as invalid …) cannot be fixed by retrying: health is degraded with a reason
///   starting `fatal:` that names the event and the error, and the write is tried again only every
///   [`PERMANENT_RETRY`](Self::PERMANENT_RETRY) (never a tight loop), the partition paused, until an
///   operator fixes the cause or restarts the service.
///
/// # Exactly once
///
/// With a transactional publisher (the exactly-once consumer's), the dead letter belongs to the
/// open transaction, and a failed write there means the transaction cannot commit (librdkafka
/// refuses further writes until it is aborted; a fenced or fatally failed producer writes nothing
/// more). So the write is **not** retried: unless it was refused before reaching the producer (a
/// topic the service does not own, a closed publisher: permanent, as above), the layer's future
/// resolves at once to a retriable [`HandlerError`] of kind `transaction` naming the event and the
/// error, for the consumer to abort the transaction and handle the events again from the last
/// commit (the consumer must not store offsets past such an event). Only a size error is handled
/// in place (the truncated dead letter is written instead); should the broker's refusal have broken
/// the transaction already, the event is remembered, and its next dead letter is truncated from the
/// start.
#[derive(Debug, Clone)]
pub struct DeadLetterLayer {
    target: Arc<DeadLetterTarget>,
}

/// Where an event was read: topic, partition, offset.
type Position = (Arc<str>, i32, i64);

#[derive(Debug, Clone)]
struct DeadLetterTarget {
    topic: TopicSpec,
    publisher: Publisher,
    handler: Arc<str>,
    retry: Retry,
    component: String,
    /// Events whose whole dead letter was refused for its size (shared by every partition's copy).
    too_large: Arc<std::sync::Mutex<std::collections::VecDeque<Position>>>,
    /// Exactly once: events that ran out of their time budget, and how often (the last few).
    over_budget: Arc<std::sync::Mutex<std::collections::VecDeque<(Position, u32)>>>,
    /// The consumer's failure, dead-letter and paused-partition metrics ([`DeadLetterLayer::counting`]).
    counters: Option<Counters>,
}

/// `backbone_events_failed_total`, `backbone_events_dead_lettered_total` and
/// `backbone_consumer_paused_partitions` (partitions waiting for a dead letter to be written).
#[derive(Debug, Clone)]
struct Counters {
    failed: metrics::Counter,
    dead_lettered: metrics::Counter,
    paused: metrics::Gauge,
}

/// A partition held by a dead letter that cannot be written: counted in the paused gauge until
/// dropped (written, or the task stopped).
struct Paused(metrics::Gauge);

impl Paused {
    fn new(gauge: &metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl DeadLetterLayer {
    /// Exactly once: how many times an event may run out of its time budget before it is
    /// dead-lettered. Each time before that its transaction is aborted and it runs again in a fresh
    /// one (a handler waiting for a partition's previous owner, or a slow dependency, gets another
    /// chance); an event that never finishes is dead-lettered on its third try.
    pub const BUDGET_TRIES: u32 = 3;

    /// Most of an event's headers copied onto its dead letter.
    pub const MAX_COPIED_HEADERS: usize = 64;
    /// Most bytes (names and values) of an event's headers copied onto its dead letter.
    pub const MAX_COPIED_HEADER_BYTES: usize = 16 * 1024;
    /// Longest error message on a dead letter, in bytes.
    pub const MAX_ERROR_BYTES: usize = 4 * 1024;
    /// The payload prefix a truncated dead letter keeps, in bytes.
    pub const TRUNCATED_PAYLOAD_BYTES: usize = 64 * 1024;
    /// The key prefix a truncated dead letter keeps, in bytes.
    pub const TRUNCATED_KEY_BYTES: usize = 1024;
    /// How often a dead letter that failed with a permanent error is tried again.
    pub const PERMANENT_RETRY: Duration = Duration::from_secs(30);

    /// Dead letters of `handler` go to `topic` through `publisher` (which must be allowed to write
    /// it); failed writes are retried as the type's documentation says, with `retry`'s backoff.
    pub fn new(topic: TopicSpec, publisher: Publisher, handler: &str, retry: Retry) -> Self {
        let component = format!("dead-letters:{}", topic.name());
        Self {
            target: Arc::new(DeadLetterTarget {
                topic,
                publisher,
                handler: handler.into(),
                retry,
                component,
                too_large: Arc::default(),
                over_budget: Arc::default(),
                counters: None,
            }),
        }
    }

    /// Counts failures and dead letters in the publisher's metrics, labelled with the consumed
    /// `topic`, the consumer `group` and the handler.
    pub(crate) fn counting(mut self, topic: &str, group: &str) -> Self {
        use crate::observe::{GROUP, HANDLER, TOPIC};
        let target = Arc::make_mut(&mut self.target);
        let metrics = target.publisher.health().metrics();
        let labels = [(TOPIC, topic), (GROUP, group), (HANDLER, &*target.handler)];
        target.counters = Some(Counters {
            failed: metrics.counter("backbone_events_failed_total", &labels),
            dead_lettered: metrics.counter("backbone_events_dead_lettered_total", &labels),
            paused: metrics.gauge("backbone_consumer_paused_partitions", &labels[..2]),
        });
        self
    }
}

impl<I> Layer<I> for DeadLetterLayer {
    type Service = DeadLetter<I>;

    fn layer(&self, inner: I) -> DeadLetter<I> {
        DeadLetter { inner, target: self.target.clone() }
    }
}

/// See [`DeadLetterLayer`].
#[derive(Debug)]
pub struct DeadLetter<I> {
    inner: I,
    target: Arc<DeadLetterTarget>,
}

impl<I: Clone> Clone for DeadLetter<I> {
    /// A copy with a target of its own: each partition's stack then bumps a reference count of its
    /// own for every event, not one that all partitions share.
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), target: Arc::new((*self.target).clone()) }
    }
}

impl<I, S> Service<HandlerContext<S>> for DeadLetter<I>
where
    I: Service<HandlerContext<S>, Response = (), Error = HandlerError>,
    I::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = DeadLetterFuture<I::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, cx: HandlerContext<S>) -> Self::Future {
        let event = cx.event_arc().clone();
        DeadLetterFuture { call: self.inner.call(cx), event, target: self.target.clone(), writing: None }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`DeadLetter`]: the handler's, then (if it failed) the dead letter's write.
    pub struct DeadLetterFuture<F> {
        #[pin]
        call: F,
        event: Arc<IncomingEvent>,
        target: Arc<DeadLetterTarget>,
        writing: Option<BoxFuture<Result<(), HandlerError>>>,
    }
}

impl<F> fmt::Debug for DeadLetterFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterFuture").field("writing", &self.writing.is_some()).finish_non_exhaustive()
    }
}

impl<F: Future<Output = Result<(), HandlerError>>> Future for DeadLetterFuture<F> {
    type Output = Result<(), HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.writing.is_none() {
            // The handler's future is not polled again once it has finished.
            let Err(error) = std::task::ready!(this.call.poll(cx)) else { return Poll::Ready(Ok(())) };
            if error.kind() == REGISTRY_UNAVAILABLE && this.target.publisher.is_transactional() {
                // Not the event's fault: its consumer waits for the registry (see the constant).
                return Poll::Ready(Err(error));
            }
            if error.kind() == "budget"
                && this.target.publisher.is_transactional()
                && this.target.over_budget(this.event) < DeadLetterLayer::BUDGET_TRIES
            {
                // Another try, in a fresh transaction once the consumer has aborted this one.
                return Poll::Ready(Err(error));
            }
            if let Some(counters) = &this.target.counters {
                counters.failed.increment(1);
            }
            let (target, event) = (this.target.clone(), this.event.clone());
            *this.writing = Some(Box::pin(async move { target.write(&event, &error).await }));
        }
        let writing = this.writing.as_mut().expect("set above");
        writing.as_mut().poll(cx)
    }
}

/// Bytes librdkafka counts for a header: its name and value and their length prefixes.
fn header_size(name: usize, value: usize) -> usize {
    name + value + 10
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A dead letter's key, payload and headers, bounded (see [`DeadLetterLayer`]).
pub(super) struct Letter<'a> {
    pub(super) key: &'a [u8],
    pub(super) payload: &'a [u8],
    /// Header names and values; the names of copied headers are owned.
    pub(super) headers: Vec<(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, [u8]>)>,
    pub(super) truncated: bool,
}

impl<'a> Letter<'a> {
    /// The dead letter of `event`, which failed with `error` in `handler`: truncated if `truncate`,
    /// or if it would not fit in `max_bytes`.
    pub(super) fn new(
        event: &'a IncomingEvent,
        error: &HandlerError,
        handler: &str,
        truncate: bool,
        max_bytes: usize,
    ) -> Self {
        use std::borrow::Cow;

        use crate::headers::dead_letter as h;
        let key = event.key().unwrap_or_default();
        let payload = event.payload().unwrap_or_default();
        let message = error.to_string();
        let mut headers: Vec<(Cow<'a, str>, Cow<'a, [u8]>)> = vec![
            (h::ORIGIN_TOPIC.into(), Cow::Borrowed(event.topic().as_bytes())),
            (h::ORIGIN_PARTITION.into(), Cow::Owned(event.partition().to_string().into_bytes())),
            (h::ORIGIN_OFFSET.into(), Cow::Owned(event.offset().to_string().into_bytes())),
            (h::ERROR_KIND.into(), Cow::Owned(error.kind().as_bytes().to_vec())),
            (
                h::ERROR_MESSAGE.into(),
                Cow::Owned(cut(&message, DeadLetterLayer::MAX_ERROR_BYTES).as_bytes().to_vec()),
            ),
            (h::HANDLER.into(), Cow::Owned(handler.as_bytes().to_vec())),
            (h::ATTEMPTS.into(), Cow::Owned(error.attempts().to_string().into_bytes())),
        ];
        let (mut copied, mut copied_bytes, mut dropped) = (0, 0, 0usize);
        for (name, value) in event.raw_headers() {
            let size = h::ORIGINAL_PREFIX.len() + name.len() + value.len();
            if copied == DeadLetterLayer::MAX_COPIED_HEADERS
                || copied_bytes + size > DeadLetterLayer::MAX_COPIED_HEADER_BYTES
            {
                dropped += 1;
                continue;
            }
            copied += 1;
            copied_bytes += size;
            let name = format!("{}{}", h::ORIGINAL_PREFIX, String::from_utf8_lossy(name));
            headers.push((Cow::Owned(name), Cow::Borrowed(value)));
        }
        if dropped > 0 {
            headers.push((h::HEADERS_DROPPED.into(), Cow::Owned(dropped.to_string().into_bytes())));
        }
        // What librdkafka counts against `message.max.bytes`: key, payload, our headers, the key
        // header, and the publisher's own (event type, producer, correlation id, traceparent).
        let correlation = crate::trace::correlation_id().map_or(32, |c| c.len());
        let own = headers.iter().map(|(n, v)| header_size(n.len(), v.len())).sum::<usize>()
            + 4 * header_size(32, 0)
            + correlation
            + 55
            + 64;
        let whole = own + 2 * key.len() + header_size(h::ORIGIN_KEY.len(), 0) + payload.len();
        let truncated = truncate || whole > max_bytes;
        let (key, payload) = if truncated {
            headers.push((h::TRUNCATED.into(), Cow::Borrowed(b"true")));
            headers.push((h::ORIGINAL_SIZE.into(), Cow::Owned(payload.len().to_string().into_bytes())));
            if key.len() > DeadLetterLayer::TRUNCATED_KEY_BYTES {
                headers.push((h::ORIGINAL_KEY_SIZE.into(), Cow::Owned(key.len().to_string().into_bytes())));
            }
            (
                &key[..key.len().min(DeadLetterLayer::TRUNCATED_KEY_BYTES)],
                &payload[..payload.len().min(DeadLetterLayer::TRUNCATED_PAYLOAD_BYTES)],
            )
        } else {
            (key, payload)
        };
        headers.insert(3, (h::ORIGIN_KEY.into(), Cow::Borrowed(key)));
        Self { key, payload, headers, truncated }
    }
}

impl DeadLetterTarget {
    /// Writes the dead letter of `event`; an error only where the write must not be retried here
    /// (a transactional publisher; see [`DeadLetterLayer`]).
    async fn write(&self, event: &IncomingEvent, error: &HandlerError) -> Result<(), HandlerError> {
        let position = format!("{}:{}:{}", event.topic(), event.partition(), event.offset());
        let mut truncate = self.was_too_large(event);
        let mut backoff = self.retry.initial_backoff;
        let mut paused = None;
        loop {
            let letter =
                Letter::new(event, error, &self.handler, truncate, self.publisher.max_message_bytes());
            let headers: Vec<(&str, &[u8])> = letter.headers.iter().map(|(n, v)| (&**n, &**v)).collect();
            // Dead letters are rare: they keep all of backbone's metadata headers.
            let outgoing =
                Outgoing::new("DeadLetter", letter.key, letter.payload).headers(&headers).full_metadata();
            let publish = self.publisher.publish(&self.topic, outgoing);
            // A correlation id taken from the event's header is copied among its headers already; a
            // long one would not fit a truncated letter's bounds.
            let outcome = if letter.truncated
                && crate::trace::correlation_id()
                    .is_some_and(|c| c.len() > DeadLetterLayer::TRUNCATED_KEY_BYTES)
            {
                crate::trace::with_correlation_id(position.clone(), publish).await
            } else {
                publish.await
            };
            let e = match outcome {
                Ok(_) => {
                    if let Some(counters) = &self.counters {
                        counters.dead_lettered.increment(1);
                    }
                    tracing::warn!(
                        topic = event.topic(),
                        partition = event.partition(),
                        offset = event.offset(),
                        truncated = letter.truncated,
                        error = %error,
                        "dead-lettered"
                    );
                    self.publisher.health().recover(&self.component);
                    return Ok(());
                }
                Err(e) => e,
            };
            if e.is_too_large() && !letter.truncated {
                tracing::warn!(event = position, error = %e, "dead letter too large; writing a truncated one");
                self.remember_too_large(event);
                truncate = true;
                continue;
            }
            // Refused before reaching librdkafka (not the service's topic, the publisher closed):
            // the transaction is untouched, and the error is permanent, as without transactions.
            let refused_before = matches!(e, PublishError::NotOwner { .. } | PublishError::Closed);
            if self.publisher.is_transactional() && !refused_before {
                // The transaction cannot commit now: the consumer aborts it and handles the events
                // again, rather than this write spinning inside it.
                let why = if e.breaks_transaction() {
                    "the transaction must abort"
                } else {
                    "a failed write aborts the transaction"
                };
                tracing::warn!(event = position, error = %e, "dead letter not written; {why}");
                return Err(HandlerError::retriable(format!(
                    "cannot write dead letter for {position} to `{}` ({e}): {why}",
                    self.topic.name()
                ))
                .with_kind("transaction"));
            }
            if e.is_retriable() || matches!(e, PublishError::Unauthorized { .. }) {
                self.publisher.health().degrade(
                    &self.component,
                    format!("cannot write dead letter for {position} ({e}); partition paused"),
                );
                if let (None, Some(c)) = (&paused, &self.counters) {
                    paused = Some(Paused::new(&c.paused));
                }
                tokio::time::sleep(backoff).await;
                backoff = self.retry.next_backoff(backoff);
            } else {
                tracing::error!(event = position, error = %e, "dead letter cannot be written: permanent error");
                self.publisher.health().degrade(
                    &self.component,
                    format!(
                        "fatal: cannot write dead letter for {position} to `{}` ({e}): a permanent error; \
                         partition paused, retried every {:?}",
                        self.topic.name(),
                        DeadLetterLayer::PERMANENT_RETRY
                    ),
                );
                if let (None, Some(c)) = (&paused, &self.counters) {
                    paused = Some(Paused::new(&c.paused));
                }
                tokio::time::sleep(DeadLetterLayer::PERMANENT_RETRY).await;
            }
        }
    }

    /// Whether the whole dead letter of `event` was refused for its size before.
    fn was_too_large(&self, event: &IncomingEvent) -> bool {
        let seen = self.too_large.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.iter().any(|(t, p, o)| &**t == event.topic() && *p == event.partition() && *o == event.offset())
    }

    /// Counts one more time `event` ran out of its budget (the last 64 events are remembered);
    /// how many times it has now.
    fn over_budget(&self, event: &IncomingEvent) -> u32 {
        let mut seen = self.over_budget.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let at =
            |(t, p, o): &Position| &**t == event.topic() && *p == event.partition() && *o == event.offset();
        if let Some((_, times)) = seen.iter_mut().find(|(position, _)| at(position)) {
            *times += 1;
            return *times;
        }
        if seen.len() == 64 {
            seen.pop_front();
        }
        seen.push_back(((event.topic().into(), event.partition(), event.offset()), 1));
        1
    }

    /// Remembers (the last few) events whose whole dead letter was refused for its size.
    fn remember_too_large(&self, event: &IncomingEvent) {
        let mut seen = self.too_large.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() == 64 {
            seen.pop_front();
        }
        seen.push_back((event.topic().into(), event.partition(), event.offset()));
    }
}
