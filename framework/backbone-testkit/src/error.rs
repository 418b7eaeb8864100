//! The test kit's error type.

use std::path::PathBuf;

/// Why the test kit could not fetch, start or drive a broker or registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// A tool the kit needs (Java, Maven) is not installed.
    #[error("{tool} not found: {hint}")]
    MissingTool {
        /// The tool that is missing.
        tool: &'static str,
        /// What to install, or which variable to set instead.
        hint: String,
    },
    /// Fetching an artifact from Maven Central failed.
    #[error("fetching {what} from Maven Central failed: {detail}")]
    Fetch {
        /// What was being fetched.
        what: String,
        /// Maven's own words, or the I/O error.
        detail: String,
    },
    /// A process exited, or never became ready, while starting.
    #[error("{what} did not start: {reason}; last lines of {log}:\n{tail}")]
    Start {
        /// The node or registry that failed.
        what: String,
        /// What went wrong.
        reason: String,
        /// Its log file (kept for inspection).
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// An operation on a cluster that does not support it (an external cluster, an unknown broker).
    #[error("{0}")]
    Unsupported(String),
    /// A command the kit ran (an ACL change, say) failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command.
        what: String,
        /// Its output.
        detail: String,
    },
    /// An I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What the kit was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl TestkitError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// The test kit's result type.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;
