//! How a request ends: its [`Reply`], or the [`RequestError`] that says why it got none (or got an
//! error reply). The requester and its pending-request bookkeeping both use these.

use std::time::Duration;

use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::handler::{Decode, DecodeError, IncomingEvent};
use crate::publish::PublishError;

use super::headers;

/// Why a request got no reply, or got an error reply.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No reply within the request's timeout. The request may have been carried out; a reply that
    /// comes later is dropped (and counted as late).
    #[error("no reply on `{topic}` within {timeout:?}")]
    Timeout {
        /// The reply topic.
        topic: String,
        /// The request's timeout.
        timeout: Duration,
    },
    /// [`RequesterBuilder::max_pending`](super::RequesterBuilder::max_pending) requests are already
    /// waiting; nothing was sent.
    #[error("{max_pending} requests are already pending; nothing was sent")]
    Overloaded {
        /// The bound.
        max_pending: usize,
    },
    /// The request could not be published.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The responder's handler failed permanently and said why in an error reply.
    #[error("the responder refused the request ({kind}): {message}")]
    Remote {
        /// The failure's kind ([`HandlerError::kind`](crate::HandlerError::kind): `handler`, `undecodable-payload`, `panic` …).
        kind: String,
        /// The failure's message.
        message: String,
    },
    /// The requester was closed.
    #[error("the requester is closed")]
    Closed,
}

impl RequestError {
    /// Whether sending the request again may succeed: after a timeout (for a command, only if it is
    /// idempotent), when overloaded, after a retriable publish failure.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Overloaded { .. } => true,
            Self::Publish(e) => e.is_retriable(),
            Self::Remote { .. } | Self::Closed => false,
        }
    }
}

/// A reply: its payload and headers, as read from the reply topic.
#[derive(Debug, Clone)]
pub struct Reply {
    pub(super) id: Uuid,
    pub(super) event: IncomingEvent,
}

impl Reply {
    /// The id of the request it answers.
    pub fn request_id(&self) -> Uuid {
        self.id
    }

    /// The payload (empty if none).
    pub fn payload(&self) -> &[u8] {
        self.event.payload().unwrap_or_default()
    }

    /// The payload decoded with `T`'s [`Decode`].
    pub fn decode<T: Decode>(&self) -> Result<T, DecodeError> {
        T::decode(self.payload())
    }

    /// The payload decoded as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_slice(self.payload()).map_err(DecodeError::new)
    }

    /// The responding service: the reply's `backbone-producer` header when it has one (replies of
    /// older backbone versions), else the owner of the reply topic it was read from (see
    /// [`IncomingEvent::producer`]).
    pub fn responder(&self) -> Option<&str> {
        self.event.producer()
    }

    /// The whole event: topic, partition, offset, timestamp, every header.
    pub fn event(&self) -> &IncomingEvent {
        &self.event
    }

    /// The reply, or the responder's error as [`RequestError::Remote`].
    pub(super) fn into_result(self) -> Result<Self, RequestError> {
        match self.event.header(headers::REPLY_ERROR) {
            None => Ok(self),
            Some(kind) => Err(RequestError::Remote {
                kind: String::from_utf8_lossy(kind).into_owned(),
                message: String::from_utf8_lossy(self.payload()).into_owned(),
            }),
        }
    }
}
