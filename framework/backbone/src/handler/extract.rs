//! Extractors: what a handler's arguments are made from ([`FromEvent`], [`Decode`]), and the ones
//! backbone provides.

use std::error::Error as StdError;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::BoxError;
use super::error::{ExtractError, Part};
use super::event::{HandlerContext, IncomingEvent};
use crate::headers;
use crate::publish::Publisher;

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

/// The id of the causal chain the event belongs to, by the rule in [`crate::trace`]: its
/// `backbone-correlation-id` header or, for events without one, the trace id of its `traceparent`
/// (as the publisher itself defaults), the same id the handler's own publishes carry. Never made
/// up: with neither header it is [`ExtractError::MissingHeader`] (take `Option<CorrelationId>`;
/// the handler's task then falls back to the event's `topic:partition:offset`), since a fresh id
/// per attempt would differ between retries; a correlation header that is not UTF-8 is
/// [`ExtractError::BadHeader`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(pub String);

impl<S> FromEvent<S> for CorrelationId {
    fn from_event(cx: &HandlerContext<S>) -> Result<Self, ExtractError> {
        match cx.event().carried_correlation() {
            Ok(Some(id)) => Ok(Self(id.into_owned())),
            Ok(None) => Err(ExtractError::MissingHeader { name: headers::CORRELATION_ID.to_owned() }),
            Err(e) => Err(ExtractError::BadHeader {
                name: headers::CORRELATION_ID.to_owned(),
                reason: e.to_string(),
            }),
        }
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

/// `alloc::vec::Vec<my_app::OrderCreated>` → `Vec<OrderCreated>`: paths without their modules.
pub(super) fn short_type_name(full: &str) -> String {
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
