//! What is published ([`Outgoing`]) and where it was written ([`Delivery`], the consistency token).

use std::fmt;

/// Where an acknowledged event was written: its partition and offset. It is also the consistency
/// token for read-your-writes: a reader that has applied this offset of this partition has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Delivery {
    /// The partition.
    pub partition: i32,
    /// The offset within the partition.
    pub offset: i64,
}

impl fmt::Display for Delivery {
    /// `partition:offset`, the consistency token's text form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.partition, self.offset)
    }
}

/// An event to publish: its type, key, payload and any extra headers.
///
/// Backbone's metadata headers are minimal by default (see [`crate::headers`]): `traceparent`
/// always; the event type only when neither the payload's schema id
/// ([`schema_framed`](Self::schema_framed)) nor the name of the public topic it goes to
/// ([`crate::topic::declared_event_type`]) says it; the correlation id only when it differs from the
/// trace id; the producer never (a topic's writer is its owner, named in the topic's name).
/// [`full_metadata`](Self::full_metadata) writes all four, as backbone did before.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub(super) event_type: &'a str,
    pub(super) key: Option<&'a [u8]>,
    pub(super) payload: Option<&'a [u8]>,
    pub(super) extra_headers: &'a [(&'a str, &'a [u8])],
    pub(super) partition: Option<i32>,
    pub(super) metadata: Metadata,
}

/// Which of backbone's metadata headers an event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metadata {
    /// `traceparent`, the event type, and the correlation id when it is not the trace id.
    Minimal,
    /// Like `Minimal` without the event type: the payload's schema id names it.
    SchemaFramed,
    /// All four: event type, producer, correlation id and `traceparent`.
    Full,
}

impl<'a> Outgoing<'a> {
    /// An event of type `event_type` with `key` (the entity id: same key, same partition, in order)
    /// and `payload`.
    pub fn new(event_type: &'a str, key: &'a [u8], payload: &'a [u8]) -> Self {
        Self {
            event_type,
            key: Some(key),
            payload: Some(payload),
            extra_headers: &[],
            partition: None,
            metadata: Metadata::Minimal,
        }
    }

    /// A tombstone: deletes `key` from a compacted topic.
    pub fn tombstone(event_type: &'a str, key: &'a [u8]) -> Self {
        Self {
            event_type,
            key: Some(key),
            payload: None,
            extra_headers: &[],
            partition: None,
            metadata: Metadata::Minimal,
        }
    }

    /// An event without a key (spread over partitions; no order between events).
    pub fn unkeyed(event_type: &'a str, payload: &'a [u8]) -> Self {
        Self {
            event_type,
            key: None,
            payload: Some(payload),
            extra_headers: &[],
            partition: None,
            metadata: Metadata::Minimal,
        }
    }

    /// Extra headers, after backbone's own.
    pub fn headers(mut self, headers: &'a [(&'a str, &'a [u8])]) -> Self {
        self.extra_headers = headers;
        self
    }

    /// Declares the payload framed in the schema registry's wire format (a magic byte and the
    /// writer's schema id, as [`Publisher::publish_event`](crate::Publisher::publish_event) writes
    /// it): the schema's record name is the event's type, so the `backbone-event-type` header is
    /// left out. Consumers learn the type from the schema id
    /// ([`Registry::event_type`](crate::schema::Registry::event_type)).
    pub fn schema_framed(mut self) -> Self {
        if self.metadata == Metadata::Minimal {
            self.metadata = Metadata::SchemaFramed;
        }
        self
    }

    /// Writes all four metadata headers (event type, producer, correlation id, `traceparent`), as
    /// backbone did by default before its headers went minimal: for consumers that need them
    /// (dead letters are written this way).
    pub fn full_metadata(mut self) -> Self {
        self.metadata = Metadata::Full;
        self
    }

    /// Writes to `partition` rather than to the key's (murmur2) partition: for a changelog that
    /// must sit beside the partition it follows (the running totals' snapshot,
    /// [`crate::sourcing`]). Order then holds per key within that partition only.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}
