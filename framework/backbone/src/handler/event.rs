//! The event a handler handles ([`IncomingEvent`]) and what extractors read from
//! ([`HandlerContext`]).

use std::fmt;
use std::sync::Arc;

use crate::headers;
use crate::publish::Publisher;
use crate::trace::{Correlation, CorrelationSource};

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
/// events of a partition). The [`State`](super::State) extractor clones `S`, so keep it cheap to clone too, `Arc`s
/// inside, as with axum's state.
pub struct HandlerContext<S = ()> {
    event: Arc<IncomingEvent>,
    /// State, publisher and registry: one per partition's task, shared by its events.
    env: Arc<Env<S>>,
    /// What a layer above hands down to every attempt at this event (none on the usual path).
    scope: Option<Arc<Scope>>,
}

/// What a layer hands down to every attempt at one event, and reads back from them: a deadline that
/// the retry layer keeps to, and the output of the attempt that succeeded (a reply's payload). The
/// responder's reply step sets one on each request (see [`crate::request`]).
#[derive(Debug, Default)]
pub(crate) struct Scope {
    /// When the event's handling must end; retries stop before it.
    pub(crate) deadline: Option<std::time::SystemTime>,
    output: std::sync::Mutex<Option<Vec<u8>>>,
}

impl Scope {
    /// A scope whose attempts end by `deadline`.
    pub(crate) fn new(deadline: Option<std::time::SystemTime>) -> Arc<Self> {
        Arc::new(Self { deadline, output: Default::default() })
    }

    /// Keeps `output`, the successful attempt's.
    pub(crate) fn put(&self, output: Vec<u8>) {
        *self.output.lock().unwrap_or_else(|e| e.into_inner()) = Some(output);
    }

    /// The output kept, if an attempt succeeded with one.
    pub(crate) fn take(&self) -> Option<Vec<u8>> {
        self.output.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
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
        Self { event: self.event.clone(), env: self.env.clone(), scope: self.scope.clone() }
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
        Self {
            event: event.into(),
            env: Arc::new(Env { state, publisher: None, registry: None }),
            scope: None,
        }
    }

    /// A context for `event` in a partition's shared `env` (the runtime's per-event path: no state,
    /// publisher or registry cloned per event).
    pub(crate) fn in_env(event: Arc<IncomingEvent>, env: &Arc<Env<S>>) -> Self {
        Self { event, env: env.clone(), scope: None }
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

    /// With `scope`, which every attempt at the event then sees.
    pub(crate) fn with_scope(mut self, scope: Arc<Scope>) -> Self {
        self.scope = Some(scope);
        self
    }

    /// The scope a layer above set, if any.
    pub(crate) fn scope(&self) -> Option<&Arc<Scope>> {
        self.scope.as_ref()
    }

    /// When the event's handling must end, if a layer above set a deadline (a request's).
    pub(crate) fn deadline(&self) -> Option<std::time::SystemTime> {
        self.scope.as_ref().and_then(|s| s.deadline)
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

impl IncomingEvent {
    /// The event's type, without the schema registry: its `backbone-event-type` header (written
    /// by older backbone versions on every event, and now when the type adds information) or,
    /// without one and with a payload not framed with a schema id, the type its public topic is
    /// named for ([`crate::topic::declared_event_type`]). `None` for an event whose payload is
    /// framed with a schema id and no header: its type is the schema's record name, which
    /// [`Registry::event_type`](crate::schema::Registry::event_type) reads (cached per schema id, as
    /// decoding does). `None` too when the header is not UTF-8 or nothing names the type.
    pub fn event_type(&self) -> Option<std::borrow::Cow<'_, str>> {
        if let Some(value) = self.header(headers::EVENT_TYPE) {
            return std::str::from_utf8(value).ok().map(std::borrow::Cow::Borrowed);
        }
        if self.payload().is_some_and(|p| crate::schema::wire::split(p).is_ok()) {
            return None;
        }
        crate::topic::declared_event_type(self.topic()).map(std::borrow::Cow::Owned)
    }

    /// The service that produced the event: its `backbone-producer` header when it has one (older
    /// backbone versions wrote it on every event; dead letters still carry it), else the owner
    /// named in its topic's name (a topic's owner alone writes it). `None` when neither is known.
    pub fn producer(&self) -> Option<&str> {
        match self.header(headers::PRODUCER) {
            Some(value) => std::str::from_utf8(value).ok(),
            None => crate::topic::parse_topic_name(self.topic()).map(|(owner, _)| owner),
        }
    }

    /// The correlation id the event carries, by the rule in [`crate::trace`]: its
    /// `backbone-correlation-id` header or, without one, the trace id of a valid `traceparent`.
    /// `Ok(None)` when it carries neither; `Err` when its correlation header is not UTF-8.
    pub(crate) fn carried_correlation(
        &self,
    ) -> Result<Option<std::borrow::Cow<'_, str>>, std::str::Utf8Error> {
        if let Some(value) = self.header(headers::CORRELATION_ID) {
            return std::str::from_utf8(value).map(|id| Some(id.into()));
        }
        Ok(self
            .header(headers::TRACEPARENT)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(crate::trace::TraceContext::parse)
            .map(|t| t.trace_id_hex().into()))
    }
}

/// An event's correlation id, worked out only when asked for, by the rule in [`crate::trace`]: the
/// one it carries ([`IncomingEvent::carried_correlation`]), or `topic:partition:offset` when it
/// carries none (or a correlation header that is not UTF-8).
impl CorrelationSource for IncomingEvent {
    fn correlation_id(&self) -> String {
        match self.carried_correlation() {
            Ok(Some(id)) => id.into_owned(),
            Ok(None) | Err(_) => format!("{}:{}:{}", self.topic(), self.partition(), self.offset()),
        }
    }
}

impl Correlation {
    /// The correlation of an event being handled.
    pub(crate) fn of_event(event: Arc<IncomingEvent>) -> Self {
        Self::lazy(event)
    }
}
