//! ACL bindings as plain data: what the manifest asks for and what the cluster reports, compared
//! as values.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kind of resource an ACL applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// A transactional id.
    TransactionalId,
    /// The cluster (its name is always `kafka-cluster`).
    Cluster,
}

/// How an ACL's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PatternType {
    /// The name exactly.
    Literal,
    /// Every name starting with it.
    Prefixed,
}

/// An operation an ACL allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Operation {
    /// Every operation.
    All,
    /// Read (consume, join a group, read committed offsets).
    Read,
    /// Write (produce, write in a transaction).
    Write,
    /// Create (topics).
    Create,
    /// Delete (topics, records, groups).
    Delete,
    /// Alter (partitions, ACLs).
    Alter,
    /// Describe (metadata, offsets, groups).
    Describe,
    /// Read topic configurations.
    DescribeConfigs,
    /// Change topic configurations.
    AlterConfigs,
    /// Produce idempotently (cluster).
    IdempotentWrite,
}

/// Whether an ACL allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Permission {
    /// Allows the operation.
    Allow,
    /// Denies it (wins over any allow).
    Deny,
}

/// One ACL: `principal` may (or may not) do `operation` on the resources `pattern` names, from
/// `host`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// The kind of resource.
    pub resource_type: ResourceType,
    /// The resource's name, or prefix (`kafka-cluster` for the cluster).
    pub resource_name: String,
    /// How the name matches.
    pub pattern_type: PatternType,
    /// The principal, as Kafka writes it: `User:orders`.
    pub principal: String,
    /// The host it applies from (`*`: any).
    pub host: String,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

impl AclBinding {
    /// An ACL allowing service `service`'s principal `operation` on a resource, from any host.
    pub fn allow(
        service: &str,
        operation: Operation,
        resource_type: ResourceType,
        resource_name: impl Into<String>,
        pattern_type: PatternType,
    ) -> Self {
        Self {
            resource_type,
            resource_name: resource_name.into(),
            pattern_type,
            principal: format!("User:{service}"),
            host: "*".to_owned(),
            operation,
            permission: Permission::Allow,
        }
    }
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {} {:?} on {:?} `{}` ({:?}) from {}",
            self.permission,
            self.principal,
            self.operation,
            self.resource_type,
            self.resource_name,
            self.pattern_type,
            self.host
        )
    }
}
