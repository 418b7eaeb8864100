//! librdkafka used directly on the consumer's hot path: each partition's queue read in batches, and
//! its messages kept in place, without copying their key, payload or headers.
//!
//! # Why this module uses `unsafe`
//!
//! rdkafka's safe API costs, per event: a queue lock and an event object (an allocation) for each
//! message taken, a waker registration whenever the queue runs dry, and, for a message to outlive the
//! poll, a copy of its key, payload and headers (after librdkafka's own parse of the headers). A
//! handler takes its event as a `'static` value (it may be retried or shared between layers), so the
//! copy could not be avoided with the borrowed messages rdkafka hands out.
//!
//! This module calls librdkafka's C API for exactly four things, and nothing else in the crate does:
//! - [`PartitionQueue`]: a partition's queue split off the consumer's
//!   (`rd_kafka_queue_get_partition` and `rd_kafka_queue_forward`, as rdkafka's
//!   `split_partition_queue` does), read up to [`BATCH`] messages at a time with
//!   `rd_kafka_consume_batch_queue` (one lock per batch; librdkafka drops a batch's messages that a
//!   pause or seek made outdated, and moves the application position past the batch), and woken by
//!   librdkafka's queue callback (`rd_kafka_queue_cb_event_enable`). The callback's waker is one per
//!   partition for the consumer's whole life, kept in the consumer's context ([`QueueWakers`]),
//!   which rdkafka drops only after librdkafka is torn down: the callback stays set when a queue
//!   handle goes (a new handle for the same partition, after it was revoked and assigned again, may
//!   already have set it), and it can never find its waker gone.
//! - [`Held`]: a message taken from such a queue. It owns its `rd_kafka_message_t` (destroyed when
//!   it drops) and a strong reference to the consumer it came from, because librdkafka must not be
//!   torn down while one of its messages is alive. The reference is dropped after the message.
//! - reading a message's fields, timestamp and headers (`rd_kafka_message_headers`, parsed by
//!   librdkafka once, under a lock, on first use) and storing its offset with its leader epoch
//!   (`rd_kafka_offset_store_message`; rdkafka's `store_offset_from_message` calls the deprecated
//!   `rd_kafka_offset_store`, which drops the epoch). Header names are read as bytes: rdkafka's safe accessor
//!   panics on a name that is not UTF-8, where an event must never bring its partition down.
//! - [`commit_stored`]: an asynchronous commit of the stored offsets whose result comes back as an
//!   offset-commit event on the consumer's main queue, as librdkafka's own auto commits do
//!   (`rd_kafka_commit_queue`). rdkafka's `commit_consumer_state(Async)` asks for no reply at all
//!   (rdkafka configures no `offset_commit_cb`): its failures would go unseen and its latency
//!   unmeasured.

#![allow(unsafe_code)]

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, CString, c_void};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use rdkafka::bindings as rd;
use rdkafka::consumer::{Consumer as _, ConsumerContext, StreamConsumer};

/// Most messages taken from a partition's queue at once (and so held by its task besides the
/// queue's own bound).
pub(crate) const BATCH: usize = 16;

const NO_ERROR: rd::rd_kafka_resp_err_t = rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;

/// A strong reference to a consumer, made once per partition task: cloning it per event touches a
/// reference count of that task's own, not one that every partition's task shares.
#[derive(Clone)]
pub(crate) struct KeepAlive {
    _alive: Arc<dyn Any + Send + Sync>,
}

impl KeepAlive {
    /// Keeps `consumer` alive.
    pub(crate) fn new<C: ConsumerContext + 'static>(consumer: &Arc<StreamConsumer<C>>) -> Self {
        Self { _alive: Arc::new(consumer.clone()) }
    }
}

/// The wakers librdkafka's queue callbacks wake, one per partition, for the consumer's whole life;
/// and the first refusal its partition queues saw.
#[derive(Default)]
pub(crate) struct QueueWakers {
    wakers: Mutex<HashMap<i32, Arc<AtomicWaker>>>,
    refusal: Arc<Refusal>,
}

impl QueueWakers {
    fn of(&self, partition: i32) -> Arc<AtomicWaker> {
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner).entry(partition).or_default().clone()
    }

    /// Where the consumer's refusals are noted.
    pub(crate) fn refusal(&self) -> &Arc<Refusal> {
        &self.refusal
    }
}

/// The first time the brokers refused the consumer's principal (a fetch of a topic it may not read,
/// a group it may not join): permanent, so the consumer stops with it instead of logging it for
/// ever.
#[derive(Default)]
pub(crate) struct Refusal {
    first: OnceLock<rdkafka::types::RDKafkaErrorCode>,
    noted: tokio::sync::Notify,
}

impl Refusal {
    /// Whether `code` is a refusal of the principal (an authorization error).
    pub(crate) fn is_refusal(code: rdkafka::types::RDKafkaErrorCode) -> bool {
        use rdkafka::types::RDKafkaErrorCode as C;
        matches!(
            code,
            C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
        )
    }

    /// Notes `code` if it is a refusal (the first one is kept).
    pub(crate) fn note(&self, code: rdkafka::types::RDKafkaErrorCode) {
        if Self::is_refusal(code) && self.first.set(code).is_ok() {
            self.noted.notify_one();
        }
    }

    /// The first refusal, once there is one.
    pub(crate) async fn wait(&self) -> rdkafka::types::RDKafkaErrorCode {
        loop {
            let noted = self.noted.notified();
            if let Some(code) = self.first.get() {
                return *code;
            }
            noted.await;
        }
    }
}

/// A consumer context that keeps its partitions' [`QueueWakers`]: rdkafka drops a client's context
/// after the client itself, so they outlive every callback librdkafka may still make.
pub(crate) trait WithQueueWakers {
    /// The wakers.
    fn queue_wakers(&self) -> &QueueWakers;
}

/// One partition's queue, split off the consumer's and read in batches.
pub(crate) struct PartitionQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    /// Woken by librdkafka when the queue gets a message after being empty.
    waker: Arc<AtomicWaker>,
    consumer: KeepAlive,
    /// Where an authorization error read from the queue is noted.
    refusal: Arc<Refusal>,
}

// SAFETY: librdkafka's queues may be used from any thread (they lock internally).
unsafe impl Send for PartitionQueue {}
// SAFETY: as above; `&self` methods only call librdkafka's thread-safe queue functions.
unsafe impl Sync for PartitionQueue {}

/// librdkafka's queue callback: the queue is no longer empty.
unsafe extern "C" fn wake(_rk: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is a partition's `AtomicWaker` in the consumer context's `QueueWakers`, which
    // lives until after librdkafka is torn down.
    let waker = unsafe { &*opaque.cast::<AtomicWaker>() };
    waker.wake();
}

impl PartitionQueue {
    /// Splits `partition` of `topic` off `consumer`'s queue: its messages come here from now on.
    /// `None` if librdkafka does not know the partition.
    pub(crate) fn split<C: ConsumerContext + WithQueueWakers + 'static>(
        consumer: &Arc<StreamConsumer<C>>,
        topic: &str,
        partition: i32,
    ) -> Option<Self> {
        let topic = CString::new(topic).ok()?;
        let client = consumer.client().native_ptr();
        // SAFETY: a live client (the `Arc` above) and a NUL-terminated topic name; a null result
        // (unknown partition) is handled.
        let queue =
            NonNull::new(unsafe { rd::rd_kafka_queue_get_partition(client, topic.as_ptr(), partition) })?;
        let waker = consumer.context().queue_wakers().of(partition);
        // SAFETY: `queue` is live; forwarding to null stops its messages going to the consumer's
        // queue. The callback's opaque pointer is the partition's waker in the consumer's context,
        // valid until after librdkafka is gone.
        unsafe {
            rd::rd_kafka_queue_forward(queue.as_ptr(), std::ptr::null_mut());
            rd::rd_kafka_queue_cb_event_enable(
                queue.as_ptr(),
                Some(wake),
                Arc::as_ptr(&waker).cast_mut().cast(),
            );
        }
        let refusal = consumer.context().queue_wakers().refusal().clone();
        Some(Self { queue, waker, consumer: KeepAlive::new(consumer), refusal })
    }

    /// Takes up to [`BATCH`] messages without waiting; whether the queue had anything (messages
    /// with an error are logged and dropped, so `into` may still be empty).
    pub(crate) fn take(&self, into: &mut VecDeque<Held>) -> bool {
        let mut taken = [std::ptr::null_mut::<rd::rd_kafka_message_t>(); BATCH];
        // SAFETY: a live queue and an array of `BATCH` slots; librdkafka fills `n` of them with
        // messages the caller owns.
        let n =
            unsafe { rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), 0, taken.as_mut_ptr(), BATCH) };
        let Ok(n) = usize::try_from(n) else {
            tracing::warn!("reading a partition queue failed");
            return false;
        };
        for &message in &taken[..n] {
            let Some(message) = NonNull::new(message) else { continue };
            let held = Held { message, headers: OnceLock::new(), _consumer: self.consumer.clone() };
            let error = held.raw().err;
            if error == NO_ERROR {
                into.push_back(held);
            } else {
                let code = rdkafka::types::RDKafkaErrorCode::from(error);
                tracing::warn!(error = ?code, "partition queue error");
                self.refusal.note(code);
            }
        }
        n > 0
    }

    /// Takes messages, or registers `cx` to be woken when some arrive.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>, into: &mut VecDeque<Held>) -> Poll<()> {
        if self.take(into) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A message that arrived before the registration woke nobody: look again.
        if self.take(into) { Poll::Ready(()) } else { Poll::Pending }
    }
}

impl Drop for PartitionQueue {
    fn drop(&mut self) {
        // SAFETY: the handle is live until destroyed here. The callback stays: its waker outlives
        // librdkafka, and a newer handle of the same partition may rely on it.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// A consumed message, kept where librdkafka read it, and the consumer it came from.
pub(crate) struct Held {
    message: NonNull<rd::rd_kafka_message_t>,
    /// librdkafka's parsed headers (null for none), parsed on first use: the parse writes to the
    /// message, so it runs once, under this lock, whichever thread asks first.
    headers: OnceLock<Headers>,
    // Dropped after `Drop::drop` destroyed the message.
    _consumer: KeepAlive,
}

/// A message's parsed headers, owned by the message.
#[derive(Clone, Copy)]
struct Headers(*const rd::rd_kafka_headers_t);

// SAFETY: read-only pointers into a message that outlives every use (see `Held`).
unsafe impl Send for Headers {}
// SAFETY: as above.
unsafe impl Sync for Headers {}

// SAFETY: a consumed message is not changed once taken, but for the header parse, which `headers`
// runs once under a lock; librdkafka lets any thread read and destroy it.
unsafe impl Send for Held {}
// SAFETY: as above.
unsafe impl Sync for Held {}

impl Held {
    fn raw(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: the message is live until `Drop` destroys it.
        unsafe { self.message.as_ref() }
    }

    /// The name of its topic.
    pub(crate) fn topic(&self) -> &str {
        // SAFETY: a consumed message's topic handle lives as long as the message; its name is a
        // NUL-terminated string owned by the handle.
        let name = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(self.raw().rkt)) };
        name.to_str().unwrap_or_default()
    }

    /// Its partition.
    pub(crate) fn partition(&self) -> i32 {
        self.raw().partition
    }

    /// Its offset.
    pub(crate) fn offset(&self) -> i64 {
        self.raw().offset
    }

    /// Its timestamp in milliseconds since the Unix epoch, if it has one.
    pub(crate) fn timestamp(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message.
        let millis = unsafe { rd::rd_kafka_message_timestamp(self.message.as_ptr(), &mut kind) };
        (millis != -1 && kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
            .then_some(millis)
    }

    /// Its key.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        let raw = self.raw();
        // SAFETY: `key_len` bytes at `key`, owned by the live message.
        NonNull::new(raw.key)
            .map(|k| unsafe { std::slice::from_raw_parts(k.as_ptr().cast::<u8>(), raw.key_len) })
    }

    /// Its payload; `None` for a tombstone.
    pub(crate) fn payload(&self) -> Option<&[u8]> {
        let raw = self.raw();
        // SAFETY: `len` bytes at `payload`, owned by the live message.
        NonNull::new(raw.payload)
            .map(|p| unsafe { std::slice::from_raw_parts(p.as_ptr().cast::<u8>(), raw.len) })
    }

    /// Its headers (librdkafka parses them on the first call and keeps them in the message).
    fn headers(&self) -> *const rd::rd_kafka_headers_t {
        let parsed = self.headers.get_or_init(|| {
            let mut headers = std::ptr::null_mut();
            // SAFETY: a live message, parsed once (this lock); librdkafka writes a pointer owned by
            // the message, or leaves it null when there are none.
            let error = unsafe { rd::rd_kafka_message_headers(self.message.as_ptr(), &mut headers) };
            Headers(if error == NO_ERROR { headers } else { std::ptr::null() })
        });
        parsed.0
    }

    /// How many headers it has.
    pub(crate) fn header_count(&self) -> usize {
        let headers = self.headers();
        if headers.is_null() {
            return 0;
        }
        // SAFETY: non-null headers owned by the live message.
        unsafe { rd::rd_kafka_header_cnt(headers) }
    }

    /// The name and value of the header at `index` (a header without a value has an empty one).
    pub(crate) fn header_at(&self, index: usize) -> Option<(&[u8], &[u8])> {
        let headers = self.headers();
        if headers.is_null() {
            return None;
        }
        // SAFETY: non-null headers owned by the live message, valid as long as the message (so as
        // long as `&self`, the lifetime the result gets).
        unsafe { header_get(headers, index) }
    }

    /// Stores its offset for the next commit (the offset after it: the next event to handle), with
    /// the leader epoch it was read under, so the commit carries the epoch too and a consumer
    /// resuming from it is fenced against an outdated leader (KIP-320).
    pub(crate) fn store_offset(&self) -> Result<(), rdkafka::types::RDKafkaErrorCode> {
        // SAFETY: a live message taken from a consumer's queue without an error (`take` keeps only
        // those), as `rd_kafka_offset_store_message` requires; it only reads the message (offset,
        // leader epoch, partition handle) and stores `offset + 1` with the epoch. It returns null
        // on success, or an error object that is ours to destroy, once, here.
        unsafe {
            let error = rd::rd_kafka_offset_store_message(self.message.as_ptr());
            match NonNull::new(error) {
                None => Ok(()),
                Some(error) => {
                    let code = rd::rd_kafka_error_code(error.as_ptr());
                    rd::rd_kafka_error_destroy(error.as_ptr());
                    Err(code.into())
                }
            }
        }
    }
}

/// Commits `consumer`'s stored offsets without waiting: the result reaches its context's
/// `commit_callback` when the consumer's queue is next polled. An error here means the commit was
/// not sent (no group, say).
pub(crate) fn commit_stored<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
) -> Result<(), rdkafka::types::RDKafkaErrorCode> {
    let client = consumer.client().native_ptr();
    // SAFETY: `client` is a live consumer's handle (borrowed for the call). The main-queue handle is
    // ours and destroyed once, here; the commit's reply keeps a reference of its own to the queue.
    // Null offsets mean the stored offsets of the current assignment; no callback and no opaque:
    // the reply is an event served by the consumer's poll.
    unsafe {
        let main = rd::rd_kafka_queue_get_main(client);
        let error = rd::rd_kafka_commit_queue(client, std::ptr::null(), main, None, std::ptr::null_mut());
        rd::rd_kafka_queue_destroy(main);
        if error == NO_ERROR { Ok(()) } else { Err(error.into()) }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: the message is ours (taken from the queue) and destroyed once, here, before the
        // consumer reference goes.
        unsafe { rd::rd_kafka_message_destroy(self.message.as_ptr()) }
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .finish_non_exhaustive()
    }
}

/// The name and value of header `index` of `headers` (rdkafka's borrowed headers, which owned ones
/// lend with `as_borrowed`), the name as bytes: rdkafka's safe accessor (`Headers::try_get`) panics
/// on a name that is not UTF-8. A header without a value has an empty one. `None` past the end.
pub(crate) fn header_bytes(
    headers: &rdkafka::message::BorrowedHeaders,
    index: usize,
) -> Option<(&[u8], &[u8])> {
    // rdkafka's `BorrowedHeaders` is a zero-sized view whose address is librdkafka's headers
    // (`rd_kafka_headers_t`): it makes one with a cast from that pointer and reads through the
    // cast back, which is what this does.
    let raw = std::ptr::from_ref(headers).cast::<rd::rd_kafka_headers_t>();
    // SAFETY: live headers borrowed for `'_`, the lifetime the result gets.
    unsafe { header_get(raw, index) }
}

/// Header `index` of `headers`: its name as bytes and its value (empty without one); `None` past
/// the end.
///
/// # Safety
/// `headers` must be live librdkafka headers for all of `'a`: librdkafka writes pointers into their
/// own storage, and the result borrows it.
unsafe fn header_get<'a>(
    headers: *const rd::rd_kafka_headers_t,
    index: usize,
) -> Option<(&'a [u8], &'a [u8])> {
    let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
    // SAFETY: live headers (the caller's promise); librdkafka only writes the three out-pointers.
    let error = unsafe { rd::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size) };
    if error != NO_ERROR || name.is_null() {
        return None;
    }
    // SAFETY: header names are NUL-terminated strings owned by the headers.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    let value = if value.is_null() || size == 0 {
        &[][..]
    } else {
        // SAFETY: `size` bytes at `value`, owned by the headers.
        unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }
    };
    Some((name, value))
}
