//! What can go wrong in a handler: [`ExtractError`] (an argument could not be made) and
//! [`HandlerError`] (retriable or permanent), and what a handler returns ([`IntoOutcome`]).

use std::error::Error as StdError;
use std::fmt;

use super::BoxError;
use crate::publish::PublishError;

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
    /// The handler takes a [`Publisher`](crate::publish::Publisher) but the context has none (a wiring mistake, not the
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
