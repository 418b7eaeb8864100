//! Why a dlq command failed, and the Kafka failures among those.

use std::fmt;

use rdkafka::error::KafkaError;

/// Why a dlq command failed.
#[derive(Debug)]
pub(crate) enum DlqError {
    /// Configuration, or a name that breaks backbone's naming rules.
    Backbone(backbone::Error),
    /// Kafka refused or failed a request.
    Kafka { what: String, reason: String },
    /// The replay was refused before anything was written.
    Refused(String),
    /// A replay write failed; those before it were written, none after it.
    ReplayFailed { letter: String, target: String, reason: String, replayed: usize, chosen: usize },
}

impl fmt::Display for DlqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Backbone(e) => e.fmt(f),
            Self::Kafka { what, reason } => write!(f, "{what}: {reason}"),
            Self::Refused(why) => write!(f, "{why}; nothing replayed"),
            Self::ReplayFailed { letter, target, reason, replayed, chosen } => write!(
                f,
                "replaying {letter} to {target} failed: {reason}; {replayed} of {chosen} dead letter(s) \
                 were replayed before it (listed above), the rest were not attempted"
            ),
        }
    }
}

impl std::error::Error for DlqError {}

impl<E: Into<backbone::Error>> From<E> for DlqError {
    fn from(e: E) -> Self {
        Self::Backbone(e.into())
    }
}

/// A Kafka failure while doing `what`.
pub(super) fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> DlqError {
    let what = what.into();
    move |e| DlqError::Kafka { what, reason: e.to_string() }
}
