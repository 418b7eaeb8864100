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
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub(super) event_type: &'a str,
    pub(super) key: Option<&'a [u8]>,
    pub(super) payload: Option<&'a [u8]>,
    pub(super) extra_headers: &'a [(&'a str, &'a [u8])],
    pub(super) partition: Option<i32>,
}

impl<'a> Outgoing<'a> {
    /// An event of type `event_type` with `key` (the entity id: same key, same partition, in order)
    /// and `payload`.
    pub fn new(event_type: &'a str, key: &'a [u8], payload: &'a [u8]) -> Self {
        Self { event_type, key: Some(key), payload: Some(payload), extra_headers: &[], partition: None }
    }

    /// A tombstone: deletes `key` from a compacted topic.
    pub fn tombstone(event_type: &'a str, key: &'a [u8]) -> Self {
        Self { event_type, key: Some(key), payload: None, extra_headers: &[], partition: None }
    }

    /// An event without a key (spread over partitions; no order between events).
    pub fn unkeyed(event_type: &'a str, payload: &'a [u8]) -> Self {
        Self { event_type, key: None, payload: Some(payload), extra_headers: &[], partition: None }
    }

    /// Extra headers, after backbone's own.
    pub fn headers(mut self, headers: &'a [(&'a str, &'a [u8])]) -> Self {
        self.extra_headers = headers;
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
