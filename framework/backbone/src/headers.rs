//! Every Kafka header name backbone writes or reads, declared once.
//!
//! - On published events, minimal by default (each header costs throughput on small events):
//!   - [`TRACEPARENT`] always;
//!   - [`EVENT_TYPE`] only when it adds information: not when the payload is framed with a schema
//!     id (the schema's record name is the type:
//!     [`Registry::event_type`](crate::schema::Registry::event_type)), nor when the topic is a public
//!     one named for that type (`orders.public.order-created-v1` carries `OrderCreated`:
//!     [`crate::topic::declared_event_type`]);
//!   - [`CORRELATION_ID`] only when it differs from the trace id of `traceparent` (readers take the
//!     trace id without it; see [`crate::trace`]);
//!   - [`PRODUCER`] not at all: a topic's only writer is its owner, named in the topic's name
//!     ([`IncomingEvent::producer`](crate::handler::IncomingEvent::producer)).
//!
//!   Dead letters, and events published with
//!   [`Outgoing::full_metadata`](crate::Outgoing::full_metadata), carry all four. Readers take both
//!   forms: events written by older backbone versions, with all four on every event, read the same
//!   ([`IncomingEvent::event_type`](crate::handler::IncomingEvent::event_type),
//!   [`IncomingEvent::producer`](crate::handler::IncomingEvent::producer), the correlation rule).
//! - On requests and replies: [`request`].
//! - On dead letters: [`dead_letter`] (all starting with [`dead_letter::PREFIX`]).
//! - On replayed dead letters: [`replay`].
//!
//! The older paths ([`crate::publish::headers`], [`crate::request::headers`],
//! [`crate::consume::dead_letter_headers`], [`crate::consume::replay_headers`],
//! [`crate::trace::TRACEPARENT`]) re-export these.

/// The event's type name (`OrderCreated`), on published events whose payload and topic do not say
/// it already (see the [module](self) docs).
pub const EVENT_TYPE: &str = "backbone-event-type";
/// The service that produced the event: on dead letters and events published with
/// [`Outgoing::full_metadata`](crate::Outgoing::full_metadata) (older backbone versions wrote it on
/// every event).
pub const PRODUCER: &str = "backbone-producer";
/// The correlation id of the request or event that caused this one, on published events whose
/// correlation id is not their trace id (older backbone versions wrote it on every event).
pub const CORRELATION_ID: &str = "backbone-correlation-id";
/// W3C trace context (`00-<trace id>-<span id>-<flags>`), on every published event.
pub const TRACEPARENT: &str = "traceparent";

/// Header names of requests and replies (besides those backbone puts on every event).
pub mod request {
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

/// Header names on a dead-lettered event.
pub mod dead_letter {
    /// The prefix every dead-letter header shares (`backbone dlq replay` drops them all).
    pub const PREFIX: &str = "backbone-dlq-";
    /// The topic the event came from.
    pub const ORIGIN_TOPIC: &str = "backbone-dlq-origin-topic";
    /// Its partition.
    pub const ORIGIN_PARTITION: &str = "backbone-dlq-origin-partition";
    /// Its offset.
    pub const ORIGIN_OFFSET: &str = "backbone-dlq-origin-offset";
    /// Its key (also the dead letter's key).
    pub const ORIGIN_KEY: &str = "backbone-dlq-origin-key";
    /// What kind of failure (`undecodable`, `handler`, `panic`, `timeout` …).
    pub const ERROR_KIND: &str = "backbone-dlq-error-kind";
    /// The error message (at most [`DeadLetterLayer::MAX_ERROR_BYTES`](crate::layer::DeadLetterLayer::MAX_ERROR_BYTES)).
    pub const ERROR_MESSAGE: &str = "backbone-dlq-error-message";
    /// The handler that failed.
    pub const HANDLER: &str = "backbone-dlq-handler";
    /// How many times it was tried.
    pub const ATTEMPTS: &str = "backbone-dlq-attempts";
    /// Prefix of the original event's headers, each kept as `backbone-dlq-original-<name>` (the dead
    /// letter's own publish headers would otherwise shadow the original's); `backbone dlq replay`
    /// restores them. At most [`DeadLetterLayer::MAX_COPIED_HEADERS`](crate::layer::DeadLetterLayer::MAX_COPIED_HEADERS) of them,
    /// [`DeadLetterLayer::MAX_COPIED_HEADER_BYTES`](crate::layer::DeadLetterLayer::MAX_COPIED_HEADER_BYTES) in all, are copied; a name that is not UTF-8 is
    /// copied lossily.
    pub const ORIGINAL_PREFIX: &str = "backbone-dlq-original-";
    /// How many of the original event's headers were not copied (present only when some were not).
    pub const HEADERS_DROPPED: &str = "backbone-dlq-headers-dropped";
    /// Present (`true`) on a truncated dead letter: the event was too large to be written whole, so
    /// its payload (and a key longer than [`DeadLetterLayer::TRUNCATED_KEY_BYTES`](crate::layer::DeadLetterLayer::TRUNCATED_KEY_BYTES)) is cut to a
    /// prefix. It cannot be replayed as it is.
    pub const TRUNCATED: &str = "backbone-dlq-truncated";
    /// On a truncated dead letter: the original payload's size in bytes.
    pub const ORIGINAL_SIZE: &str = "backbone-dlq-original-size";
    /// On a truncated dead letter: the original key's size in bytes.
    pub const ORIGINAL_KEY_SIZE: &str = "backbone-dlq-original-key-size";
}

/// Header names on a replayed dead letter (besides the original event's own headers), written by
/// `backbone dlq replay` to the service's retry topic ([`crate::consume::retry_topic`]).
pub mod replay {
    /// The handler the replay is for (the dead letter's [`HANDLER`](super::dead_letter::HANDLER)):
    /// the retry consumers of the service's other handlers of the same source skip it.
    pub const HANDLER: &str = "backbone-replay-handler";
    /// Where the replay comes from: `<dead-letter topic>:<offset>`.
    pub const REPLAYED_FROM: &str = "backbone-replayed-from";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_namespaced() {
        let dlq = [
            dead_letter::ORIGIN_TOPIC,
            dead_letter::ORIGIN_PARTITION,
            dead_letter::ORIGIN_OFFSET,
            dead_letter::ORIGIN_KEY,
            dead_letter::ERROR_KIND,
            dead_letter::ERROR_MESSAGE,
            dead_letter::HANDLER,
            dead_letter::ATTEMPTS,
            dead_letter::ORIGINAL_PREFIX,
            dead_letter::HEADERS_DROPPED,
            dead_letter::TRUNCATED,
            dead_letter::ORIGINAL_SIZE,
            dead_letter::ORIGINAL_KEY_SIZE,
        ];
        for name in dlq {
            assert!(name.starts_with(dead_letter::PREFIX), "{name}");
        }
        let others = [
            EVENT_TYPE,
            PRODUCER,
            CORRELATION_ID,
            request::REQUEST_ID,
            request::REPLY_TO,
            request::REQUESTER,
            request::DEADLINE,
            request::REPLY_ERROR,
            replay::HANDLER,
            replay::REPLAYED_FROM,
        ];
        for name in others {
            assert!(name.starts_with("backbone-") && !name.starts_with(dead_letter::PREFIX), "{name}");
        }
        let mut all: Vec<&str> = dlq.into_iter().chain(others).chain([TRACEPARENT]).collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "a header name is declared twice");
    }
}
