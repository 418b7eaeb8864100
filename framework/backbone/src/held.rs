//! A consumed message kept in place, without copying its key, payload or headers.
//!
//! # Why this module uses `unsafe`
//!
//! rdkafka hands out a consumed message as a `BorrowedMessage<'a>`, borrowed from the consumer that
//! read it. The message's memory is not the consumer's: it is owned by the message itself (an
//! `rd_kafka_event_t` reference-counted by rdkafka, freed when the message drops). The lifetime only
//! says that the consumer must outlive the message, because librdkafka must not be torn down while
//! one of its messages is alive.
//!
//! A handler takes its event as a `'static` value (it may outlive the poll, be retried, be shared
//! between layers), so without this module every event would be copied: two allocations and a pass
//! over every header per event, plus librdkafka's own parse of the headers, which it does lazily and
//! only when asked. [`Held`] instead keeps the message together with a strong reference to the
//! consumer it came from, which keeps the consumer alive at least as long as the message: that is
//! what the lifetime promised, now kept at run time. The message field is declared first, so it
//! drops before the consumer reference.
//!
//! The headers are read through librdkafka's C API directly: rdkafka's safe accessor panics on a
//! header name that is not UTF-8, where an event must never bring its partition down.

#![allow(unsafe_code)]

use std::any::Any;
use std::ffi::CStr;
use std::sync::Arc;

use rdkafka::bindings as rd;
use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message as _};

/// A consumed message and the consumer it came from.
pub(crate) struct Held {
    // Declared first: drops before `_consumer` (fields drop in declaration order).
    message: BorrowedMessage<'static>,
    _consumer: Consumer,
}

/// A strong reference to a consumer, made once per partition task: cloning it per event touches a
/// reference count of that task's own, not one that every partition's task shares.
#[derive(Clone)]
pub(crate) struct Consumer {
    _alive: Arc<dyn Any + Send + Sync>,
}

impl Consumer {
    /// Keeps `consumer` alive.
    pub(crate) fn new<C: ConsumerContext + 'static>(consumer: &Arc<StreamConsumer<C>>) -> Self {
        Self { _alive: Arc::new(consumer.clone()) }
    }
}

impl Held {
    /// Keeps `message`, read from the consumer `consumer` keeps alive (one of its partition queues
    /// included), alive on its own.
    ///
    /// The message must come from that consumer: the signature ties the borrow to it, and the crate
    /// only calls this with the message just taken from one of that consumer's queues.
    pub(crate) fn new<'a>(message: BorrowedMessage<'a>, consumer: &'a Consumer) -> Self {
        // SAFETY: `BorrowedMessage<'a>` and `BorrowedMessage<'static>` are the same type but for the
        // lifetime, which only expresses that the consumer outlives the message (see the module's
        // docs). `Held` keeps that consumer alive until after the message is dropped, and never
        // hands out the message for longer than it lives itself.
        let message =
            unsafe { std::mem::transmute::<BorrowedMessage<'a>, BorrowedMessage<'static>>(message) };
        Self { message, _consumer: consumer.clone() }
    }

    /// The message, for as long as `self` lives.
    pub(crate) fn message(&self) -> &BorrowedMessage<'_> {
        &self.message
    }

    /// The message's headers (librdkafka parses them on the first call and keeps them).
    fn headers(&self) -> *const rd::rd_kafka_headers_t {
        let mut headers = std::ptr::null_mut();
        // SAFETY: the message pointer is valid while `self.message` lives; librdkafka writes a
        // pointer owned by the message (or leaves it null when there are no headers).
        let error = unsafe { rd::rd_kafka_message_headers(self.message.ptr(), &mut headers) };
        if error == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR { headers } else { std::ptr::null() }
    }

    /// How many headers it has.
    pub(crate) fn header_count(&self) -> usize {
        let headers = self.headers();
        if headers.is_null() {
            return 0;
        }
        // SAFETY: a non-null headers pointer owned by the live message.
        unsafe { rd::rd_kafka_header_cnt(headers) }
    }

    /// The name and value of the header at `index` (a header without a value has an empty one).
    pub(crate) fn header_at(&self, index: usize) -> Option<(&[u8], &[u8])> {
        let headers = self.headers();
        if headers.is_null() {
            return None;
        }
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
        // SAFETY: a non-null headers pointer owned by the live message; librdkafka writes pointers
        // into the headers' own storage, valid as long as the message (so as long as `&self`).
        let error = unsafe { rd::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size) };
        if error != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            return None;
        }
        // SAFETY: librdkafka's header names are NUL-terminated strings owned by the headers.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        let value = if value.is_null() || size == 0 {
            &[][..]
        } else {
            // SAFETY: `size` bytes at `value`, owned by the headers.
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }
        };
        Some((name, value))
    }

    /// Its key.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        self.message.key()
    }

    /// Its payload.
    pub(crate) fn payload(&self) -> Option<&[u8]> {
        self.message.payload()
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("topic", &self.message.topic())
            .field("partition", &self.message.partition())
            .field("offset", &self.message.offset())
            .finish_non_exhaustive()
    }
}
