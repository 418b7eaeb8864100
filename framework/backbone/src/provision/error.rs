//! Why provisioning failed: [`ProvisionError`], and how the admin API's errors map onto it.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::plan::Refusal;

/// Why provisioning failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The admin client could not be created (a configuration problem).
    #[error("could not create the Kafka admin client: {reason}")]
    Client {
        /// What librdkafka said.
        reason: String,
    },
    /// A request to the brokers failed.
    #[error("{operation} failed: {reason}")]
    Broker {
        /// What was being done.
        operation: String,
        /// What went wrong.
        reason: String,
        /// Whether trying again may help (timeouts, unavailable brokers, leader changes).
        retriable: bool,
    },
    /// The principal may not do this; an operator must grant it (ACLs).
    #[error(
        "{operation} failed: {principal} is not authorized ({reason}); the principal needs CREATE, ALTER_CONFIGS and DESCRIBE_CONFIGS on the topics"
    )]
    NotAuthorized {
        /// What was being done.
        operation: String,
        /// Who the brokers saw (`User:orders (SASL SCRAM-SHA-512)`, a client certificate's subject).
        principal: String,
        /// What the broker said.
        reason: String,
    },
    /// The brokers refused the connection itself: wrong SASL credentials, or a TLS handshake that
    /// failed (an untrusted broker certificate, a client certificate the brokers do not trust).
    /// Reported as soon as librdkafka sees it, not after a timeout; never retriable.
    #[error("connecting to the brokers as {principal} failed: {reason}")]
    Unauthenticated {
        /// Who tried to connect.
        principal: String,
        /// What librdkafka reported, and what to check.
        reason: String,
    },
    /// The brokers rejected a request as invalid (a bad config value, a policy).
    #[error("{operation} failed: {reason}")]
    Invalid {
        /// What was being done.
        operation: String,
        /// What the broker said.
        reason: String,
    },
    /// The cluster did not show the result in time.
    #[error("timed out waiting for {waiting_for}")]
    Timeout {
        /// What was awaited.
        waiting_for: String,
    },
    /// A topic was declared twice with different settings.
    #[error("topic `{topic}` is declared twice with different settings; provisioning needs one declaration")]
    Conflicting {
        /// The topic.
        topic: String,
    },
    /// Verify-only provisioning ([`crate::Provisioning::Verify`]) found topics missing or not as
    /// declared: nothing was changed; the topics' owner (the Topic Operator, an operator) must.
    #[error("{}", not_as_declared_message(differences))]
    NotAsDeclared {
        /// What applying would do, topic by topic (creates, config changes, refusals).
        differences: Vec<super::plan::TopicAction>,
    },
    /// The plan has refusals: nothing was applied.
    #[error("{}", refused_message(refusals))]
    Refused {
        /// Every refusal in the plan.
        refusals: Vec<Refusal>,
    },
}

fn not_as_declared_message(differences: &[super::plan::TopicAction]) -> String {
    let mut s = format!(
        "verify-only provisioning: {} topic action(s) needed, none taken (the topics' owner must make them)",
        differences.len()
    );
    for d in differences {
        s.push('\n');
        s.push_str(&d.to_string());
    }
    s
}

fn refused_message(refusals: &[Refusal]) -> String {
    let mut s = format!("nothing applied: {} change(s) need a decision first", refusals.len());
    for r in refusals {
        s.push('\n');
        s.push_str(&r.to_string());
    }
    s
}

impl ProvisionError {
    /// Whether trying again may succeed: broker unavailability and timeouts are retriable;
    /// refusals, authorization failures and invalid declarations are not.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Broker { retriable, .. } => *retriable,
            Self::Timeout { .. } => true,
            Self::Client { .. }
            | Self::NotAuthorized { .. }
            | Self::Unauthenticated { .. }
            | Self::Invalid { .. }
            | Self::Conflicting { .. }
            | Self::NotAsDeclared { .. }
            | Self::Refused { .. } => false,
        }
    }

    /// The same error, naming `principal` if it is an authorization failure that names nobody yet.
    pub(crate) fn naming(mut self, principal: &str) -> Self {
        if let Self::NotAuthorized { principal: p, .. } | Self::Unauthenticated { principal: p, .. } =
            &mut self
            && p.is_empty()
        {
            principal.clone_into(p);
        }
        self
    }

    /// The refusals, if this is [`ProvisionError::Refused`].
    pub fn refusals(&self) -> &[Refusal] {
        match self {
            Self::Refused { refusals } => refusals,
            _ => &[],
        }
    }
}

pub(crate) fn from_kafka(operation: impl Into<String>, e: KafkaError) -> ProvisionError {
    let operation = operation.into();
    match e {
        KafkaError::AdminOp(code) => from_code(operation, code),
        e => match e.rdkafka_error_code() {
            Some(code) => from_code(operation, code),
            None => ProvisionError::Broker {
                operation,
                reason: e.to_string(),
                retriable: matches!(e, KafkaError::Canceled),
            },
        },
    }
}

pub(crate) fn from_code(operation: String, code: RDKafkaErrorCode) -> ProvisionError {
    use RDKafkaErrorCode as C;
    let reason = code.to_string();
    match code {
        C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed | C::GroupAuthorizationFailed => {
            ProvisionError::NotAuthorized { operation, principal: String::new(), reason }
        }
        C::SaslAuthenticationFailed | C::Authentication | C::SSL => ProvisionError::Unauthenticated {
            principal: String::new(),
            reason: format!("{operation}: {reason}"),
        },
        C::InvalidConfig
        | C::InvalidPartitions
        | C::InvalidReplicationFactor
        | C::InvalidReplicaAssignment
        | C::InvalidRequest
        | C::InvalidTopic
        | C::PolicyViolation
        | C::InvalidArgument
        | C::UnsupportedVersion => ProvisionError::Invalid { operation, reason },
        C::OperationTimedOut | C::RequestTimedOut | C::TimedOutQueue => {
            ProvisionError::Broker { operation, reason, retriable: true }
        }
        C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::BrokerNotAvailable
        | C::ReplicaNotAvailable
        | C::NetworkException
        | C::NotController
        | C::NotEnoughReplicas
        | C::KafkaStorageError
        | C::ThrottlingQuotaExceeded
        | C::ReassignmentInProgress
        | C::UnknownTopicOrPartition
        | C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::Resolve
        | C::Retry
        | C::WaitCache
        | C::CoordinatorNotAvailable => ProvisionError::Broker { operation, reason, retriable: true },
        _ => ProvisionError::Broker { operation, reason, retriable: false },
    }
}
