//! Handlers: plain `async fn`s whose arguments say what they need from an event.
//!
//! As in axum, a handler is any `async fn` (or closure returning a future) whose arguments all
//! implement [`FromEvent`] (extractors, at most 8) and whose output implements [`IntoOutcome`]
//! (`Result<(), HandlerError>`, `Result<(), E>` for an `E` that converts, or `()`):
//!
//! | argument | gives |
//! |---|---|
//! | [`Event<T>`] | the payload decoded with `T`'s [`Decode`] |
//! | [`Json<T>`] | the payload decoded as JSON (`T: DeserializeOwned`) |
//! | [`Key<K>`] | the key decoded with `K`'s [`Decode`] |
//! | [`Metadata`] | topic, partition, offset, timestamp, headers |
//! | [`State<S>`] | a clone of the service's state |
//! | [`Publisher`] | the service's publisher |
//! | [`CorrelationId`] | the causal chain's id |
//! | `Option<E>` | `None` where `E`'s part is absent (a tombstone, no key …) |
//! | `Result<E, ExtractError>` | every extraction failure, to decide yourself |
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//!
//! use backbone::handler::{BoxedHandler, Decode, DecodeError, Event, HandlerContext, IncomingEvent};
//! use backbone::{HandlerError, State};
//!
//! // `#[derive(Event)]` types implement `Decode` (through `AvroEvent`); a plain type, by hand.
//! struct OrderCreated {
//!     quantity: u32,
//! }
//!
//! impl Decode for OrderCreated {
//!     fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
//!         let quantity = std::str::from_utf8(bytes).map_err(DecodeError::new)?;
//!         Ok(Self { quantity: quantity.parse().map_err(DecodeError::new)? })
//!     }
//! }
//!
//! #[derive(Clone, Default)]
//! struct Stock {
//!     reserved: Arc<AtomicU32>,
//! }
//!
//! async fn reserve(Event(order): Event<OrderCreated>, State(s): State<Stock>) -> Result<(), HandlerError> {
//!     s.reserved.fetch_add(order.quantity, Ordering::SeqCst);
//!     Ok(())
//! }
//!
//! // What the consumer runtime does for each event:
//! let stock = Stock::default();
//! let handler = BoxedHandler::new(reserve);
//! assert_eq!(handler.name(), "reserve");
//! let event = IncomingEvent::new("orders.public.order-created-v1", 0, 42).with_payload("3");
//! futures::executor::block_on(handler.call(HandlerContext::new(event, stock.clone())))?;
//! assert_eq!(stock.reserved.load(Ordering::SeqCst), 3);
//! # Ok::<(), HandlerError>(())
//! ```
//!
//! Extraction runs when the handler's future is first polled, left to right; the first failure ends
//! the call with a permanent [`HandlerError`] holding the [`ExtractError`] (a poison record: the
//! runtime dead-letters it with [`ExtractError::kind`] and its message). Everything a handler does,
//! extraction included, happens inside the returned future, so one `catch_unwind` around it catches
//! every panic.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use crate::publish::{PublishError, Publisher, headers};

type BoxError = Box<dyn StdError + Send + Sync>;

/// An event as a handler sees it: where it was read, its key, payload and headers. Owned, so it
/// outlives the consumer's poll; the runtime shares it between retries behind an [`Arc`].
///
/// An event the runtime consumed is kept where librdkafka read it: its key, payload and headers are
/// not copied, and librdkafka parses its headers only if something asks for one. It keeps its
/// consumer's buffers (and the consumer) until it is dropped: a handler that keeps an event past its
/// call (say, in a spawned task) should keep a clone, which is a copy, or the consumer leaves its
/// group on shutdown only once that event is dropped. An event built with [`new`](Self::new)
/// and the `with_` methods, or copied from a message with [`from_message`](Self::from_message), keeps
/// its key, payload and headers in one buffer of its own. Cloning an event copies it that way.
pub struct IncomingEvent {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    body: Body,
}

/// Where an event's key, payload and headers are.
enum Body {
    /// In one buffer of the event's own.
    Copied(Copied),
    /// In the consumed message itself.
    Held(crate::native::Held),
}

/// Key, payload and headers copied into one buffer.
#[derive(Clone, Default)]
struct Copied {
    key: Option<Span>,
    payload: Option<Span>,
    /// Name and value of each header, in order (up to 8 without an allocation of their own).
    headers: smallvec::SmallVec<[(Span, Span); 8]>,
    data: Vec<u8>,
}

impl Copied {
    /// `key`, `payload` and `headers` (name and value bytes, in order) in one buffer.
    fn of<'a>(
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Self {
        let mut copied =
            Self { headers: smallvec::SmallVec::with_capacity(headers.size_hint().0), ..Self::default() };
        copied.key = key.map(|k| copied.push(k));
        copied.payload = payload.map(|p| copied.push(p));
        headers.for_each(|(name, value)| copied.push_header(name, value));
        copied
    }

    fn push_header(&mut self, name: &[u8], value: &[u8]) {
        let name = self.push(name);
        let value = self.push(value);
        self.headers.push((name, value));
    }

    fn push(&mut self, bytes: &[u8]) -> Span {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        (span_index(start), span_index(self.data.len()))
    }

    fn get(&self, (start, end): Span) -> &[u8] {
        &self.data[start as usize..end as usize]
    }
}

/// A range of [`Copied`]'s buffer.
type Span = (u32, u32);

impl IncomingEvent {
    /// An event read from `topic` at `partition` and `offset`, without key, payload, timestamp or
    /// headers (add them with the `with_` methods). For tests and for the runtime.
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        Self {
            topic: topic.into().into(),
            partition,
            offset,
            timestamp: None,
            body: Body::Copied(Copied::default()),
        }
    }

    /// Copies a consumed Kafka message (a `BorrowedMessage` from a poll, or an `OwnedMessage`).
    /// A header without a value becomes an empty one; header names are read as bytes (a name that
    /// is not UTF-8 is kept as it is, where rdkafka's own accessor would panic).
    pub fn from_message<M>(message: &M) -> Self
    where
        M: rdkafka::Message,
        M::Headers: MessageHeaders,
    {
        use rdkafka::message::Headers as _;
        let headers =
            message.headers().into_iter().flat_map(|h| (0..h.count()).filter_map(|i| h.name_and_value(i)));
        let copied = Copied::of(message.key(), message.payload(), headers);
        Self {
            topic: message.topic().into(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            body: Body::Copied(copied),
        }
    }

    /// Keeps a message the runtime consumed where it is (no copy), sharing `topic` (its topic's
    /// name).
    pub(crate) fn held(topic: &Arc<str>, held: crate::native::Held) -> Self {
        Self {
            topic: topic.clone(),
            partition: held.partition(),
            offset: held.offset(),
            timestamp: held.timestamp(),
            body: Body::Held(held),
        }
    }

    /// The consumed message, if the event is one the runtime kept in place.
    pub(crate) fn kept(&self) -> Option<&crate::native::Held> {
        match &self.body {
            Body::Held(held) => Some(held),
            Body::Copied(_) => None,
        }
    }

    fn copied(&mut self) -> &mut Copied {
        if let Body::Held(_) = self.body {
            self.body = Body::Copied(self.copy_body());
        }
        match &mut self.body {
            Body::Copied(copied) => copied,
            Body::Held(_) => unreachable!("copied just above"),
        }
    }

    /// Key, payload and headers copied into a buffer of their own (header names as they are, even
    /// when not UTF-8).
    fn copy_body(&self) -> Copied {
        match &self.body {
            Body::Copied(copied) => copied.clone(),
            Body::Held(_) => {
                Copied::of(self.key(), self.payload(), (0..self.header_count()).map(|i| self.header_at(i)))
            }
        }
    }

    /// With this key.
    pub fn with_key(mut self, key: impl AsRef<[u8]>) -> Self {
        let copied = self.copied();
        copied.key = Some(copied.push(key.as_ref()));
        self
    }

    /// With this payload.
    pub fn with_payload(mut self, payload: impl AsRef<[u8]>) -> Self {
        let copied = self.copied();
        copied.payload = Some(copied.push(payload.as_ref()));
        self
    }

    /// With this timestamp (milliseconds since the Unix epoch).
    pub fn with_timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }

    /// With one more header (after those already there).
    pub fn with_header(mut self, name: impl AsRef<str>, value: impl AsRef<[u8]>) -> Self {
        self.copied().push_header(name.as_ref().as_bytes(), value.as_ref());
        self
    }

    /// The topic it was read from.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition it was read from.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Its offset in the partition.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Its timestamp in milliseconds since the Unix epoch, if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// Its key, if it has one.
    pub fn key(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Copied(c) => c.key.map(|k| c.get(k)),
            Body::Held(held) => held.key(),
        }
    }

    /// Its payload; `None` for a tombstone.
    pub fn payload(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Copied(c) => c.payload.map(|p| c.get(p)),
            Body::Held(held) => held.payload(),
        }
    }

    /// All headers, in order (a name may repeat). A name that is not UTF-8 reads as empty.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> + '_ {
        (0..self.header_count()).map(|i| {
            let (name, value) = self.header_at(i);
            (std::str::from_utf8(name).unwrap_or_default(), value)
        })
    }

    /// All headers, in order, with their names as bytes: Kafka does not require names to be UTF-8
    /// (see [`headers`](Self::headers) for names as text).
    pub fn raw_headers(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        (0..self.header_count()).map(|i| self.header_at(i))
    }

    fn header_count(&self) -> usize {
        match &self.body {
            Body::Copied(c) => c.headers.len(),
            Body::Held(held) => held.header_count(),
        }
    }

    /// The name and value of the header at `index` (below the header count).
    fn header_at(&self, index: usize) -> (&[u8], &[u8]) {
        match &self.body {
            Body::Copied(c) => {
                let (name, value) = c.headers[index];
                (c.get(name), c.get(value))
            }
            Body::Held(held) => held.header_at(index).unwrap_or_default(),
        }
    }

    /// The value of the header called `name`: the last one if it repeats, as Kafka's Java client's
    /// `lastHeader` does.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        (0..self.header_count())
            .rev()
            .map(|i| self.header_at(i))
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }
}

impl Clone for IncomingEvent {
    /// A copy with a buffer of its own (a kept message is not shared).
    fn clone(&self) -> Self {
        Self {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            body: Body::Copied(self.copy_body()),
        }
    }
}

impl PartialEq for IncomingEvent {
    /// Equal when read from the same place with the same key, payload, timestamp and headers.
    fn eq(&self, other: &Self) -> bool {
        self.topic == other.topic
            && self.partition == other.partition
            && self.offset == other.offset
            && self.timestamp == other.timestamp
            && self.key() == other.key()
            && self.payload() == other.payload()
            && self.headers().eq(other.headers())
    }
}

impl Eq for IncomingEvent {}

impl fmt::Debug for IncomingEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Bytes<'a>(Option<&'a [u8]>);
        impl fmt::Debug for Bytes<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    None => f.write_str("None"),
                    Some(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
                }
            }
        }
        f.debug_struct("IncomingEvent")
            .field("topic", &&*self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key", &Bytes(self.key()))
            .field("payload", &Bytes(self.payload()))
            .field(
                "headers",
                &self.headers().map(|(n, v)| (n, String::from_utf8_lossy(v))).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The headers of rdkafka's messages (borrowed and owned), read with names as bytes by
/// [`IncomingEvent::from_message`]. Sealed: implemented for rdkafka's two header types only.
pub trait MessageHeaders: rdkafka::message::Headers + sealed::Sealed {
    /// The name and value of header `index` (a header without a value has an empty one).
    fn name_and_value(&self, index: usize) -> Option<(&[u8], &[u8])>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for rdkafka::message::BorrowedHeaders {}
    impl Sealed for rdkafka::message::OwnedHeaders {}
}

impl MessageHeaders for rdkafka::message::BorrowedHeaders {
    fn name_and_value(&self, index: usize) -> Option<(&[u8], &[u8])> {
        crate::native::header_bytes(self, index)
    }
}

impl MessageHeaders for rdkafka::message::OwnedHeaders {
    fn name_and_value(&self, index: usize) -> Option<(&[u8], &[u8])> {
        crate::native::header_bytes(self.as_borrowed(), index)
    }
}

/// A buffer index; an event is far below 4 GiB (Kafka's message.max.bytes is an i32).
fn span_index(i: usize) -> u32 {
    u32::try_from(i).expect("an event under 4 GiB")
}

impl From<&rdkafka::message::OwnedMessage> for IncomingEvent {
    fn from(message: &rdkafka::message::OwnedMessage) -> Self {
        Self::from_message(message)
    }
}

impl From<&rdkafka::message::BorrowedMessage<'_>> for IncomingEvent {
    fn from(message: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        Self::from_message(message)
    }
}

/// What extractors read from: the event, the service's state and its publisher. Cheap to clone: the
/// event is shared, and so are state, publisher and registry (the runtime shares them between all
/// events of a partition). The [`State`] extractor clones `S`, so keep it cheap to clone too, `Arc`s
/// inside, as with axum's state.
pub struct HandlerContext<S = ()> {
    event: Arc<IncomingEvent>,
    /// State, publisher and registry: one per partition's task, shared by its events.
    env: Arc<Env<S>>,
}

/// What every event of a partition sees besides itself.
#[derive(Debug)]
pub(crate) struct Env<S> {
    state: S,
    publisher: Option<Publisher>,
    registry: Option<crate::schema::Registry>,
}

impl<S> Env<S> {
    /// `state`, with the service's publisher and its registry.
    pub(crate) fn new(state: S, publisher: Publisher) -> Arc<Self> {
        let registry = Some(publisher.registry().clone());
        Arc::new(Self { state, publisher: Some(publisher), registry })
    }
}

impl<S> Clone for HandlerContext<S> {
    fn clone(&self) -> Self {
        Self { event: self.event.clone(), env: self.env.clone() }
    }
}

impl<S: fmt::Debug> fmt::Debug for HandlerContext<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerContext")
            .field("event", &self.event)
            .field("state", &self.env.state)
            .field("publisher", &self.env.publisher)
            .field("registry", &self.env.registry)
            .finish()
    }
}

impl<S> HandlerContext<S> {
    /// A context for `event` with `state` and no publisher.
    pub fn new(event: impl Into<Arc<IncomingEvent>>, state: S) -> Self {
        Self { event: event.into(), env: Arc::new(Env { state, publisher: None, registry: None }) }
    }

    /// A context for `event` in a partition's shared `env` (the runtime's per-event path: no state,
    /// publisher or registry cloned per event).
    pub(crate) fn in_env(event: Arc<IncomingEvent>, env: &Arc<Env<S>>) -> Self {
        Self { event, env: env.clone() }
    }

    /// With the service's publisher (what the [`Publisher`] extractor hands out).
    pub fn with_publisher(mut self, publisher: Publisher) -> Self
    where
        S: Clone,
    {
        self.env_mut().publisher = Some(publisher);
        self
    }

    /// With the schema registry that Avro events decode through.
    pub fn with_registry(mut self, registry: crate::schema::Registry) -> Self
    where
        S: Clone,
    {
        self.env_mut().registry = Some(registry);
        self
    }

    /// The environment, unshared first if a clone of this context shares it.
    fn env_mut(&mut self) -> &mut Env<S>
    where
        S: Clone,
    {
        if Arc::get_mut(&mut self.env).is_none() {
            let env = &*self.env;
            self.env = Arc::new(Env {
                state: env.state.clone(),
                publisher: env.publisher.clone(),
                registry: env.registry.clone(),
            });
        }
        Arc::get_mut(&mut self.env).expect("unshared just above")
    }

    /// The schema registry, if one is configured.
    pub fn registry(&self) -> Option<&crate::schema::Registry> {
        self.env.registry.as_ref()
    }

    /// The event.
    pub fn event(&self) -> &IncomingEvent {
        &self.event
    }

    /// The event, shared.
    pub fn event_arc(&self) -> &Arc<IncomingEvent> {
        &self.event
    }

    /// The service's state.
    pub fn state(&self) -> &S {
        &self.env.state
    }

    /// The service's publisher, if it has one.
    pub fn publisher(&self) -> Option<&Publisher> {
        self.env.publisher.as_ref()
    }
}

/// Something a handler argument can be made from. Extraction is synchronous: it works on bytes in
/// hand. What needs I/O first (fetching a writer schema from the registry) the runtime does before
/// the handler is called, so extractors stay cheap and need no boxed future each.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an extractor a handler can take (with state `{S}`)",
    label = "not an extractor",
    note = "handler arguments are extractors: `Event<T>`, `Json<T>`, `Key<K>`, `Metadata`, `State<S>` (the service's state), `Publisher`, `CorrelationId`, an `Option` or `Result<_, ExtractError>` of one, or a type implementing `FromEvent`"
)]
pub trait FromEvent<S>: Sized {
    /// Extracts the value from `cx`, or says why it cannot.
    fn from_event(cx: &HandlerContext<S>) -> Result<Self, ExtractError>;
}

/// Decodes a key or a payload from bytes: how [`Event<T>`] and [`Key<K>`] read theirs.
///
/// Implemented here for `String` (UTF-8) and `Vec<u8>` (the raw bytes), and for [`Json<T>`];
/// Avro events (`#[derive(Event)]`, `#[derive(AvroEvent)]`) implement it through the schema registry.
pub trait Decode: Sized {
    /// Decodes `bytes`.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;

    /// Decodes `bytes` with the consumer's schema registry at hand (writer schemas already
    /// fetched). Defaults to [`decode`](Self::decode); Avro events decode by the writer's schema id.
    fn decode_with(bytes: &[u8], registry: Option<&crate::schema::Registry>) -> Result<Self, DecodeError> {
        let _ = registry;
        Self::decode(bytes)
    }
}

/// Avro events ([`crate::schema::AvroEvent`]) decode from the wire format by the writer's schema id,
/// resolved against their own schema.
impl<T: crate::schema::AvroEvent> Decode for T {
    fn decode(_: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::new("an Avro event decodes through the schema registry, and none is configured"))
    }

    fn decode_with(bytes: &[u8], registry: Option<&crate::schema::Registry>) -> Result<Self, DecodeError> {
        match registry {
            Some(registry) => registry.decode(bytes).map_err(DecodeError::new),
            None => Self::decode(bytes),
        }
    }
}

/// Why bytes could not be decoded.
#[derive(Debug)]
pub struct DecodeError(BoxError);

impl DecodeError {
    /// A decode error with `reason` (an error, or a message).
    pub fn new(reason: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self(reason.into())
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for DecodeError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

impl Decode for String {
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        String::from_utf8(bytes.to_vec()).map_err(DecodeError::new)
    }
}

impl Decode for Vec<u8> {
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(bytes.to_vec())
    }
}

/// The part of an event that is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The key.
    Key,
    /// The payload.
    Payload,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Key => "key",
            Self::Payload => "payload",
        })
    }
}

/// Why a handler argument could not be extracted. Never retriable: the same event fails the same
/// way, so it is a poison record for the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// The event has no payload (a tombstone). `Option<Event<T>>` accepts tombstones.
    #[error("the event has no payload (a tombstone)")]
    MissingPayload,
    /// The event has no key.
    #[error("the event has no key")]
    MissingKey,
    /// The key or payload is there but does not decode.
    #[error("cannot decode the {part} as `{type_name}`: {reason}")]
    Undecodable {
        /// Key or payload.
        part: Part,
        /// The type it should decode as.
        type_name: String,
        /// Why it does not.
        reason: String,
    },
    /// A header the handler needs is absent.
    #[error("the event has no `{name}` header")]
    MissingHeader {
        /// The header's name.
        name: String,
    },
    /// A header is there but malformed.
    #[error("the `{name}` header is invalid: {reason}")]
    BadHeader {
        /// The header's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The handler takes a [`Publisher`] but the context has none (a wiring mistake, not the
    /// event's fault; retrying does not help either).
    #[error("the handler takes a `Publisher` but none is configured")]
    NoPublisher,
    /// The payload is not schema-framed data the registry can resolve (bad magic byte, unknown
    /// schema id, a body that does not decode with its writer's schema).
    #[error("{reason}")]
    Schema {
        /// [`crate::schema::SchemaError::kind`]: `bad-magic-byte`, `unknown-schema-id` …
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A custom extractor refuses the event.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being extracted.
        what: String,
        /// Why it is refused.
        reason: String,
    },
}

impl ExtractError {
    /// Always `false`: extracting from the same event again fails the same way.
    pub fn is_retriable(&self) -> bool {
        false
    }

    /// Whether the part asked for is absent (as opposed to present and malformed): what makes an
    /// `Option<E>` argument `None`.
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            Self::MissingPayload | Self::MissingKey | Self::MissingHeader { .. } | Self::NoPublisher
        )
    }

    /// A short, stable name for the failure (`undecodable-payload`), for dead-letter headers and
    /// metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingPayload => "missing-payload",
            Self::MissingKey => "missing-key",
            Self::Undecodable { part: Part::Key, .. } => "undecodable-key",
            Self::Undecodable { part: Part::Payload, .. } => "undecodable-payload",
            Self::MissingHeader { .. } => "missing-header",
            Self::BadHeader { .. } => "bad-header",
            Self::NoPublisher => "no-publisher",
            Self::Schema { kind, .. } => kind,
            Self::Invalid { .. } => "invalid",
        }
    }
}

/// Why a handler failed, and whether trying the same event again may help.
///
/// Build one with [`HandlerError::retriable`] (a database that is down: the runtime retries, and
/// commits nothing at or past the event until it succeeds) or [`HandlerError::permanent`] (the event
/// can never be handled: dead-lettered). `?` converts [`PublishError`] (retriable as
/// [`PublishError::is_retriable`] says), [`crate::Error`] (likewise) and [`ExtractError`] (permanent).
#[derive(Debug)]
pub struct HandlerError {
    retriable: bool,
    kind: &'static str,
    attempts: u32,
    error: BoxError,
}

impl HandlerError {
    /// A failure that trying again may cure.
    pub fn retriable(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::with(true, error.into())
    }

    /// A failure that trying again cannot cure.
    pub fn permanent(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::with(false, error.into())
    }

    fn with(retriable: bool, error: BoxError) -> Self {
        let kind = if let Some(e) = error.downcast_ref::<ExtractError>() {
            e.kind()
        } else if error.is::<PublishError>() {
            "publish"
        } else {
            "handler"
        };
        Self { retriable, kind, attempts: 1, error }
    }

    /// Whether handling the same event again may succeed.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }

    /// A short name for the failure, for dead-letter headers and metrics: the [`ExtractError::kind`]
    /// of an extraction failure, `publish` for a [`PublishError`], `handler` otherwise (unless set
    /// with [`HandlerError::with_kind`]).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// With another [`kind`](Self::kind) (`timeout`, `panic` …).
    pub fn with_kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    /// How many times the event was tried before this error came back (1 unless a retry layer says
    /// otherwise).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// With the number of attempts made (set by [`crate::layer::RetryLayer`]).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// The extraction failure inside, if that is what this is.
    pub fn as_extract(&self) -> Option<&ExtractError> {
        self.downcast_ref()
    }

    /// The error inside, if it is an `E`.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.error.downcast_ref()
    }

    /// The error inside.
    pub fn into_inner(self) -> Box<dyn StdError + Send + Sync> {
        self.error
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl StdError for HandlerError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.error.source()
    }
}

impl From<ExtractError> for HandlerError {
    fn from(e: ExtractError) -> Self {
        Self::permanent(e)
    }
}

impl From<PublishError> for HandlerError {
    fn from(e: PublishError) -> Self {
        Self::with(e.is_retriable(), Box::new(e))
    }
}

impl From<crate::Error> for HandlerError {
    fn from(e: crate::Error) -> Self {
        let retriable = e.is_retriable();
        let kind = match e.kind() {
            crate::error::ErrorKind::Config => "config",
            crate::error::ErrorKind::Topic => "topic",
            crate::error::ErrorKind::Provision => "provision",
            crate::error::ErrorKind::Publish => "publish",
            crate::error::ErrorKind::Schema => "schema",
        };
        Self { retriable, kind, attempts: 1, error: Box::new(e) }
    }
}

/// What a handler's output means: success, or a [`HandlerError`].
#[diagnostic::on_unimplemented(
    message = "a handler cannot return `{Self}`",
    label = "not a handler outcome",
    note = "a handler returns `()`, `Result<(), HandlerError>`, or `Result<(), E>` where `E: Into<HandlerError>` (`PublishError`, `ExtractError`, `backbone::Error` …)"
)]
pub trait IntoOutcome {
    /// The outcome.
    fn into_outcome(self) -> Result<(), HandlerError>;
}

impl IntoOutcome for () {
    fn into_outcome(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<E: Into<HandlerError>> IntoOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), HandlerError> {
        self.map_err(Into::into)
    }
}

/// The payload, decoded with `T`'s [`Decode`]. A tombstone is [`ExtractError::MissingPayload`];
/// take `Option<Event<T>>` to accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<T>(pub T);

impl<T: Decode, S> FromEvent<S> for Event<T> {
    fn from_event(cx: &HandlerContext<S>) -> Result<Self, ExtractError> {
        decode_part(Part::Payload, cx.event().payload(), cx.registry()).map(Self)
    }
}

/// The payload, decoded as JSON. Also a [`Decode`], so `Key<Json<K>>` reads a JSON key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> Decode for Json<T> {
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(bytes).map(Self).map_err(DecodeError::new)
    }
}

impl<T: DeserializeOwned, S> FromEvent<S> for Json<T> {
    fn from_event(cx: &HandlerContext<S>) -> Result<Self, ExtractError> {
        decode_part(Part::Payload, cx.event().payload(), None)
    }
}

/// The key, decoded with `K`'s [`Decode`] (`String`, `Vec<u8>`, `Json<K>`). No key is
/// [`ExtractError::MissingKey`]; take `Option<Key<K>>` to accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key<K>(pub K);

impl<K: Decode, S> FromEvent<S> for Key<K> {
    fn from_event(cx: &HandlerContext<S>) -> Result<Self, ExtractError> {
        decode_part(Part::Key, cx.event().key(), cx.registry()).map(Self)
    }
}

fn decode_part<T: Decode>(
    part: Part,
    bytes: Option<&[u8]>,
    registry: Option<&crate::schema::Registry>,
) -> Result<T, ExtractError> {
    let bytes = bytes.ok_or(match part {
        Part::Key => ExtractError::MissingKey,
        Part::Payload => ExtractError::MissingPayload,
    })?;
    T::decode_with(bytes, registry).map_err(|e| match e.0.downcast_ref::<crate::schema::SchemaError>() {
        Some(schema) if schema.kind() != "undecodable-payload" => {
            ExtractError::Schema { kind: schema.kind(), reason: schema.to_string() }
        }
        _ => ExtractError::Undecodable {
            part,
            type_name: short_type_name(std::any::type_name::<T>()),
            reason: e.to_string(),
        },
    })
}

/// Where the event was read and what it carries besides key and payload: topic, partition, offset,
/// timestamp and headers ([`IncomingEvent`]'s accessors, through `Deref`). Cheap: shares the event.
#[derive(Debug, Clone)]
pub struct Metadata(Arc<IncomingEvent>);

impl Metadata {
    /// The whole event.
    pub fn event(&self) -> &IncomingEvent {
        &self.0
    }
}

impl Deref for Metadata {
    type Target = IncomingEvent;

    fn deref(&self) -> &IncomingEvent {
        &self.0
    }
}

impl<S> FromEvent<S> for Metadata {
    fn from_event(cx: &HandlerContext<S>) -> Result<Self, ExtractError> {
        Ok(Self(cx.event_arc().clone()))
    }
}

/// A clone of the service's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State<S>(pub S);

impl<S: Clone> FromEvent<S> for State<S> {
    fn from_event(cx: &HandlerContext<S>) -> Result<Self, ExtractError> {
        Ok(Self(cx.state().clone()))
    }
}

/// The service's publisher (a clone: clones share one producer). [`ExtractError::NoPublisher`]
/// when the context has none.
impl<S> FromEvent<S> for Publisher {
    fn from_event(cx: &HandlerContext<S>) -> Result<Self, ExtractError> {
        cx.publisher().cloned().ok_or(ExtractError::NoPublisher)
    }
}

/// The id of the causal chain the event belongs to: its `backbone-correlation-id` header or, for
/// events without one, the trace id of its `traceparent` (as the publisher itself defaults). Never
/// made up: with neither header it is [`ExtractError::MissingHeader`] (take
/// `Option<CorrelationId>`), since a fresh id per attempt would differ between retries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(pub String);

impl<S> FromEvent<S> for CorrelationId {
    fn from_event(cx: &HandlerContext<S>) -> Result<Self, ExtractError> {
        let event = cx.event();
        if let Some(value) = event.header(headers::CORRELATION_ID) {
            return match std::str::from_utf8(value) {
                Ok(id) => Ok(Self(id.to_owned())),
                Err(e) => Err(ExtractError::BadHeader {
                    name: headers::CORRELATION_ID.to_owned(),
                    reason: e.to_string(),
                }),
            };
        }
        event
            .header(headers::TRACEPARENT)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(crate::trace::TraceContext::parse)
            .map(|t| Self(t.trace_id_hex()))
            .ok_or_else(|| ExtractError::MissingHeader { name: headers::CORRELATION_ID.to_owned() })
    }
}

/// `None` when `E`'s part is absent ([`ExtractError::is_missing`]); a part that is there but
/// malformed still fails, so a corrupt payload is never mistaken for a tombstone.
impl<E: FromEvent<S>, S> FromEvent<S> for Option<E> {
    fn from_event(cx: &HandlerContext<S>) -> Result<Self, ExtractError> {
        match E::from_event(cx) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_missing() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Every extraction failure, for the handler to decide about.
impl<E: FromEvent<S>, S> FromEvent<S> for Result<E, ExtractError> {
    fn from_event(cx: &HandlerContext<S>) -> Result<Self, ExtractError> {
        Ok(E::from_event(cx))
    }
}

/// An event handler: implemented for `async fn`s (and closures returning futures) taking up to 8
/// [`FromEvent`] arguments and returning an [`IntoOutcome`]. `T` is the tuple of argument types; it
/// only tells the implementations apart.
pub trait Handler<T, S>: Clone + Send + Sync + Sized + 'static {
    /// Handles the event in `cx`: extracts the arguments, then runs the handler. An extraction
    /// failure is a permanent [`HandlerError`] with the [`ExtractError`] inside.
    fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<(), HandlerError>>;
}

macro_rules! impl_handler {
    ($($ty:ident),*) => {
        impl<F, Fut, R, S, $($ty,)*> Handler<($($ty,)*), S> for F
        where
            F: Fn($($ty,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoOutcome,
            S: Send + Sync + 'static,
            $($ty: FromEvent<S> + Send + 'static,)*
        {
            #[allow(non_snake_case)]
            fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<(), HandlerError>> {
                let handler = self.clone();
                Box::pin(async move {
                    $(
                        let $ty = match $ty::from_event(&cx) {
                            Ok(v) => v,
                            Err(e) => return Err(HandlerError::from(e)),
                        };
                    )*
                    drop(cx);
                    handler($($ty,)*).await.into_outcome()
                })
            }
        }
    };
}

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);

trait ErasedHandler<S>: Send + Sync {
    fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<(), HandlerError>>;
}

struct Erased<H, T> {
    handler: H,
    _arguments: PhantomData<fn() -> T>,
}

impl<H: Handler<T, S>, T: 'static, S> ErasedHandler<S> for Erased<H, T> {
    fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<(), HandlerError>> {
        self.handler.call(cx)
    }
}

/// A handler of any type behind one type, with a name, so the runtime can keep several. Cheap to
/// clone.
pub struct BoxedHandler<S = ()> {
    name: Arc<str>,
    inner: Arc<dyn ErasedHandler<S>>,
}

impl<S: 'static> BoxedHandler<S> {
    /// Boxes `handler`, named after its function (`reserve`). A closure's name is its full path
    /// ending in `{{closure}}`: give closures a name with [`BoxedHandler::named`].
    pub fn new<H: Handler<T, S>, T: 'static>(handler: H) -> Self {
        let full = std::any::type_name::<H>();
        let name = if full.contains('{') { full.to_owned() } else { short_type_name(full) };
        Self::named(name, handler)
    }

    /// Boxes `handler` under `name`.
    pub fn named<H: Handler<T, S>, T: 'static>(name: impl Into<String>, handler: H) -> Self {
        Self { name: name.into().into(), inner: Arc::new(Erased { handler, _arguments: PhantomData }) }
    }
}

impl<S> BoxedHandler<S> {
    /// The handler's name, for diagnostics (and, later, consumer groups and dead-letter headers).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Handles the event in `cx` (see [`Handler::call`]).
    pub fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<(), HandlerError>> {
        self.inner.call(cx)
    }
}

impl<S> Clone for BoxedHandler<S> {
    fn clone(&self) -> Self {
        Self { name: self.name.clone(), inner: self.inner.clone() }
    }
}

impl<S> fmt::Debug for BoxedHandler<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxedHandler").field("name", &self.name).finish_non_exhaustive()
    }
}

/// `alloc::vec::Vec<my_app::OrderCreated>` → `Vec<OrderCreated>`: paths without their modules.
fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut path_start = 0;
    let mut rest = full;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("::") {
            out.truncate(path_start);
            rest = after;
            continue;
        }
        out.push(c);
        if matches!(c, '<' | '>' | ',' | ' ' | '(' | ')' | '[' | ']' | ';' | '&' | '*') {
            path_start = out.len();
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    type Seen = Arc<Mutex<Vec<String>>>;

    fn order_event() -> IncomingEvent {
        IncomingEvent::new("orders.public.order-created-v1", 3, 42)
            .with_key("order-1")
            .with_payload("two widgets")
            .with_timestamp(1_700_000_000_000)
            .with_header(headers::EVENT_TYPE, "OrderCreated")
            .with_header(headers::CORRELATION_ID, "req-7")
    }

    async fn reserve(
        Event(order): Event<String>,
        Key(k): Key<String>,
        meta: Metadata,
        State(s): State<Arc<AtomicUsize>>,
    ) -> Result<(), HandlerError> {
        assert_eq!(order, "two widgets");
        assert_eq!(k, "order-1");
        assert_eq!(meta.topic(), "orders.public.order-created-v1");
        assert_eq!((meta.partition(), meta.offset()), (3, 42));
        assert_eq!(meta.timestamp(), Some(1_700_000_000_000));
        assert_eq!(meta.header(headers::EVENT_TYPE), Some(&b"OrderCreated"[..]));
        assert_eq!(meta.header("absent"), None);
        s.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[tokio::test]
    async fn a_boxed_handler_sees_payload_key_metadata_and_state() {
        let calls = Arc::new(AtomicUsize::new(0));
        let handler = BoxedHandler::new(reserve);
        assert_eq!(handler.name(), "reserve");
        let cx = HandlerContext::new(order_event(), calls.clone());
        handler.call(cx.clone()).await.unwrap();
        handler.clone().call(cx).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct OrderCreated {
        id: String,
        quantity: u32,
    }

    #[tokio::test]
    async fn json_decodes_and_bad_json_names_the_reason() {
        let good = IncomingEvent::new("t", 0, 0).with_payload(r#"{"id":"o-1","quantity":2}"#);
        let Json(order) = Json::<OrderCreated>::from_event(&HandlerContext::new(good, ())).unwrap();
        assert_eq!(order, OrderCreated { id: "o-1".into(), quantity: 2 });

        let bad = IncomingEvent::new("t", 0, 0).with_payload(r#"{"id":"o-1"}"#);
        let err = Json::<OrderCreated>::from_event(&HandlerContext::new(bad.clone(), ())).unwrap_err();
        assert_eq!(err.kind(), "undecodable-payload");
        assert!(!err.is_retriable());
        let message = err.to_string();
        assert!(message.contains("Json<OrderCreated>"), "{message}");
        assert!(message.contains("missing field `quantity`"), "{message}");

        // Through a handler: a permanent failure with the extraction error inside.
        async fn handle(Json(_): Json<OrderCreated>) {}
        let err = BoxedHandler::new(handle).call(HandlerContext::new(bad, ())).await.unwrap_err();
        assert!(!err.is_retriable());
        assert_eq!(err.kind(), "undecodable-payload");
        assert!(matches!(err.as_extract(), Some(ExtractError::Undecodable { part: Part::Payload, .. })));
        assert!(err.to_string().contains("missing field `quantity`"));
    }

    #[tokio::test]
    async fn absent_parts_give_none_and_malformed_ones_still_fail() {
        async fn handle(
            State(seen): State<Seen>,
            event: Option<Event<String>>,
            key: Option<Key<String>>,
            cid: Option<CorrelationId>,
            publisher: Option<Publisher>,
        ) {
            seen.lock().unwrap().push(format!(
                "{:?} {:?} {:?} {}",
                event.map(|e| e.0),
                key.map(|k| k.0),
                cid.map(|c| c.0),
                publisher.is_some()
            ));
        }
        let seen = Seen::default();
        let tombstone = IncomingEvent::new("t", 0, 0);
        BoxedHandler::new(handle).call(HandlerContext::new(tombstone, seen.clone())).await.unwrap();
        assert_eq!(seen.lock().unwrap().as_slice(), ["None None None false"]);

        let corrupt = IncomingEvent::new("t", 0, 1).with_payload(vec![0xff, 0xfe]);
        let err =
            BoxedHandler::new(handle).call(HandlerContext::new(corrupt.clone(), seen)).await.unwrap_err();
        assert_eq!(err.kind(), "undecodable-payload");
        assert!(err.to_string().contains("as `String`"), "{err}");

        // Every failure, when asked for.
        let cx = HandlerContext::new(corrupt, ());
        let r = Result::<Event<String>, ExtractError>::from_event(&cx).unwrap();
        assert_eq!(r.unwrap_err().kind(), "undecodable-payload");
        let r = Result::<Key<String>, ExtractError>::from_event(&cx).unwrap();
        assert_eq!(r.unwrap_err(), ExtractError::MissingKey);
    }

    #[tokio::test]
    async fn errors_keep_whether_they_are_retriable() {
        async fn down() -> Result<(), HandlerError> {
            Err(HandlerError::retriable("database unavailable"))
        }
        async fn refused() -> Result<(), HandlerError> {
            Err(HandlerError::permanent("order exceeds the limit"))
        }
        async fn timed_out() -> Result<(), PublishError> {
            Err(PublishError::TimedOut { topic: "t".into(), timeout: std::time::Duration::from_secs(1) })
        }
        async fn closed() -> Result<(), PublishError> {
            Err(PublishError::Closed)
        }
        let call = |h: BoxedHandler| h.call(HandlerContext::new(IncomingEvent::new("t", 0, 0), ()));

        let err = call(BoxedHandler::new(down)).await.unwrap_err();
        assert!(err.is_retriable());
        assert_eq!((err.kind(), err.to_string().as_str()), ("handler", "database unavailable"));

        let err = call(BoxedHandler::new(refused)).await.unwrap_err();
        assert!(!err.is_retriable());

        let err = call(BoxedHandler::new(timed_out)).await.unwrap_err();
        assert!(err.is_retriable());
        assert_eq!(err.kind(), "publish");
        assert!(matches!(err.downcast_ref::<PublishError>(), Some(PublishError::TimedOut { .. })));

        let err = call(BoxedHandler::new(closed)).await.unwrap_err();
        assert!(!err.is_retriable());
        assert_eq!(err.with_kind("shutdown").kind(), "shutdown");

        let err = HandlerError::from(crate::Error::from(PublishError::TimedOut {
            topic: "t".into(),
            timeout: std::time::Duration::from_secs(1),
        }));
        assert!(err.is_retriable());
        assert_eq!(err.kind(), "publish");
    }

    #[tokio::test]
    async fn zero_argument_and_unit_handlers_work() {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        async fn tick() {
            CALLS.fetch_add(1, Ordering::SeqCst);
        }
        async fn tock() -> Result<(), HandlerError> {
            CALLS.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        let cx = HandlerContext::new(IncomingEvent::new("t", 0, 0), ());
        BoxedHandler::new(tick).call(cx.clone()).await.unwrap();
        BoxedHandler::new(tock).call(cx.clone()).await.unwrap();

        // A closure, named explicitly.
        let closure = BoxedHandler::named("inline", |_meta: Metadata| async {
            CALLS.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(closure.name(), "inline");
        closure.call(cx).await.unwrap();
        assert_eq!(CALLS.load(Ordering::SeqCst), 3);
        assert!(BoxedHandler::<()>::new(|| async {}).name().ends_with("{{closure}}"));
    }

    #[test]
    fn correlation_id_comes_from_its_header_or_the_trace_id() {
        let extract =
            |event: IncomingEvent| CorrelationId::from_event(&HandlerContext::new(event, ())).map(|c| c.0);
        assert_eq!(extract(order_event()).unwrap(), "req-7");

        let traced = IncomingEvent::new("t", 0, 0)
            .with_header(headers::TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(extract(traced).unwrap(), "4bf92f3577b34da6a3ce929d0e0e4736");

        let err = extract(IncomingEvent::new("t", 0, 0)).unwrap_err();
        assert_eq!(err.kind(), "missing-header");
        assert!(err.is_missing());

        let bad = IncomingEvent::new("t", 0, 0).with_header(headers::CORRELATION_ID, vec![0xff]);
        assert_eq!(extract(bad).unwrap_err().kind(), "bad-header");
    }

    #[tokio::test]
    async fn a_publisher_argument_gets_the_contexts_publisher() {
        async fn forward(publisher: Publisher, State(seen): State<Seen>) {
            seen.lock().unwrap().push(publisher.service().to_owned());
        }
        let seen = Seen::default();
        let event = IncomingEvent::new("t", 0, 0);
        let err = BoxedHandler::new(forward).call(HandlerContext::new(event.clone(), seen.clone())).await;
        assert_eq!(err.unwrap_err().kind(), "no-publisher");

        let spec = crate::Service::new("stock").spec().unwrap();
        // Creating a producer does not connect; nothing is published.
        let config = crate::Config { bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
        let publisher = Publisher::new(&config, &spec).unwrap();
        let cx = HandlerContext::new(event, seen.clone()).with_publisher(publisher);
        BoxedHandler::new(forward).call(cx).await.unwrap();
        assert_eq!(seen.lock().unwrap().as_slice(), ["stock"]);
    }

    #[test]
    fn events_copy_consumed_messages() {
        use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};
        let headers = OwnedHeaders::new()
            .insert(Header { key: "a", value: Some(&b"1"[..]) })
            .insert(Header { key: "null", value: None::<&[u8]> })
            .insert(Header { key: "a", value: Some(&b"2"[..]) });
        let message = OwnedMessage::new(
            Some(b"body".to_vec()),
            Some(b"k".to_vec()),
            "orders.public.order-created-v1".into(),
            Timestamp::CreateTime(1_700_000_000_000),
            2,
            7,
            Some(headers),
        );
        let event = IncomingEvent::from(&message);
        let expected = IncomingEvent::new("orders.public.order-created-v1", 2, 7)
            .with_key("k")
            .with_payload("body")
            .with_timestamp(1_700_000_000_000)
            .with_header("a", "1")
            .with_header("null", "")
            .with_header("a", "2");
        assert_eq!(event, expected);
        assert_eq!(event.header("a"), Some(&b"2"[..]), "the last of a repeated header");

        let bare = OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, None);
        let event = IncomingEvent::from_message(&bare);
        assert_eq!((event.key(), event.payload(), event.timestamp()), (None, None, None));
        assert_eq!(event.headers().len(), 0);
    }

    #[test]
    fn type_names_lose_their_module_paths() {
        assert_eq!(short_type_name("alloc::vec::Vec<my_app::events::OrderCreated>"), "Vec<OrderCreated>");
        assert_eq!(short_type_name("backbone::handler::Json<(u8, a::B)>"), "Json<(u8, B)>");
        assert_eq!(short_type_name("String"), "String");
    }
}
