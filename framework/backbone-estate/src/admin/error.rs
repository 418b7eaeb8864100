//! What can go wrong administering a cluster: one error type for ACLs, SCRAM users and quotas.

use std::time::Duration;

use crate::acl::AclBinding;

/// One ACL the broker refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingFailure {
    /// The binding.
    pub binding: AclBinding,
    /// Kafka's name for the error (`INVALID_REQUEST`, …).
    pub code: String,
    /// The broker's message.
    pub message: String,
}

/// An error administering the cluster. [`is_retriable`](Self::is_retriable) tells whether trying the
/// same call again may succeed; an authorization or authentication refusal never will.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No broker could be reached (or a connection broke).
    #[error("cannot reach the brokers at {bootstrap}: {detail}")]
    Connect {
        /// The bootstrap servers tried.
        bootstrap: String,
        /// Why.
        detail: String,
    },
    /// The brokers refused the credentials.
    #[error("the brokers refused to authenticate `{principal}` with {mechanism}: {detail}")]
    Authentication {
        /// The principal the client authenticated as.
        principal: String,
        /// The SASL mechanism.
        mechanism: String,
        /// The broker's message.
        detail: String,
    },
    /// The principal may not do this (`CLUSTER_AUTHORIZATION_FAILED` and the like). Not retriable:
    /// it needs an ACL (or the super user), not another try.
    #[error(
        "`{principal}` is not authorized to {operation} ({code}): it needs that permission on the cluster \
         (ALTER for ACLs, ALTER_CONFIGS for quotas and SCRAM users, DESCRIBE or DESCRIBE_CONFIGS to read \
         them) or to be a super user; not retried"
    )]
    Unauthorized {
        /// The principal the client authenticated as.
        principal: String,
        /// What was refused (`create ACLs`, `alter client quotas`, …).
        operation: String,
        /// Kafka's name for the error.
        code: String,
    },
    /// Some ACLs were refused, each with its own reason; the others were applied.
    #[error("{} ACL(s) refused: {}", failures.len(), describe_failures(failures))]
    Bindings {
        /// What was being done (`create ACLs`, `delete ACLs`).
        operation: String,
        /// The refused bindings.
        failures: Vec<BindingFailure>,
    },
    /// The broker answered a request with an error.
    #[error("{operation} failed: {code}: {message}")]
    Broker {
        /// What was being done.
        operation: String,
        /// Kafka's name for the error.
        code: String,
        /// The broker's message.
        message: String,
        /// Whether Kafka calls the error retriable.
        retriable: bool,
    },
    /// No answer in time.
    #[error("{operation}: no answer within {after:?}")]
    Timeout {
        /// What was being done.
        operation: String,
        /// How long it waited.
        after: Duration,
    },
    /// The configuration asks for something this client cannot do (yet).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The connection's bytes made no sense (a frame too large, an undecodable answer).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A value cannot be sent (a name with a NUL byte, a quota out of range, …).
    #[error("invalid request: {0}")]
    Invalid(String),
}

fn describe_failures(failures: &[BindingFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("[{}: {} {}]", f.binding, f.code, f.message))
        .collect::<Vec<_>>()
        .join(", ")
}

impl AdminError {
    /// Whether the same call may succeed if tried again.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } => true,
            Self::Broker { retriable, .. } => *retriable,
            Self::Bindings { .. }
            | Self::Authentication { .. }
            | Self::Unauthorized { .. }
            | Self::Unsupported(_)
            | Self::Protocol(_)
            | Self::Invalid(_) => false,
        }
    }

    /// An error for Kafka error `code` answered to `operation` by `principal`'s request: the
    /// authorization errors become [`AdminError::Unauthorized`].
    pub(crate) fn from_code(
        principal: &str,
        operation: &str,
        code: &str,
        message: &str,
        retriable: bool,
    ) -> Self {
        if is_authorization_code(code) {
            Self::Unauthorized {
                principal: principal.to_owned(),
                operation: operation.to_owned(),
                code: code.to_owned(),
            }
        } else if code == "SASL_AUTHENTICATION_FAILED" || code == "_AUTHENTICATION" {
            Self::Authentication {
                principal: principal.to_owned(),
                mechanism: String::from("SASL"),
                detail: message.to_owned(),
            }
        } else {
            Self::Broker {
                operation: operation.to_owned(),
                code: code.to_owned(),
                message: message.to_owned(),
                retriable,
            }
        }
    }
}

/// Whether `code` (Kafka's name, in either spelling: `CLUSTER_AUTHORIZATION_FAILED` or
/// `ClusterAuthorizationFailed`) is an authorization refusal.
pub(crate) fn is_authorization_code(code: &str) -> bool {
    let normalized: String = code.chars().filter(|c| *c != '_').collect::<String>().to_ascii_lowercase();
    normalized.ends_with("authorizationfailed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_refusals_are_never_retriable_and_name_the_principal() {
        let e = AdminError::from_code("User:stock", "create ACLs", "CLUSTER_AUTHORIZATION_FAILED", "", true);
        assert!(matches!(e, AdminError::Unauthorized { .. }), "{e:?}");
        assert!(!e.is_retriable());
        let text = e.to_string();
        assert!(text.contains("User:stock") && text.contains("create ACLs"), "{text}");
        assert!(is_authorization_code("ClusterAuthorizationFailed"));
        assert!(!is_authorization_code("REQUEST_TIMED_OUT"));
        let t = AdminError::from_code("User:a", "x", "REQUEST_TIMED_OUT", "slow", true);
        assert!(t.is_retriable());
    }
}
