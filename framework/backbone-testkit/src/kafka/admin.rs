//! Administering a cluster: topics through the admin API; ACLs and quotas through Kafka's own tools
//! (`AclCommand`, `ConfigCommand`) as the super user.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use super::{KafkaCluster, TOOL_FLAGS};
use crate::error::{Result, TestkitError};

/// A resource an ACL applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AclResource {
    /// One topic, by exact name.
    Topic(String),
    /// Every topic whose name starts with the prefix.
    TopicPrefix(String),
    /// One consumer group, by exact name.
    Group(String),
    /// Every consumer group whose name starts with the prefix.
    GroupPrefix(String),
    /// One transactional id, by exact name.
    TransactionalId(String),
    /// The cluster (for `IdempotentWrite`, `Create`, `Describe`, …).
    Cluster,
}

/// An operation an ACL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AclOperation {
    /// Fetch from a topic, join a group.
    Read,
    /// Produce to a topic, write a transactional id.
    Write,
    /// Create topics.
    Create,
    /// Describe a resource (metadata, offsets).
    Describe,
    /// Describe and alter configs.
    DescribeConfigs,
    /// Idempotent produce (on the cluster).
    IdempotentWrite,
    /// Every operation.
    All,
}

impl AclOperation {
    fn as_arg(self) -> &'static str {
        match self {
            Self::Read => "Read",
            Self::Write => "Write",
            Self::Create => "Create",
            Self::Describe => "Describe",
            Self::DescribeConfigs => "DescribeConfigs",
            Self::IdempotentWrite => "IdempotentWrite",
            Self::All => "All",
        }
    }
}

impl KafkaCluster {
    /// Creates a topic and waits until its leaders are known.
    pub async fn create_topic(&self, name: &str, partitions: i32, replication: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create().map_err(|e| {
            TestkitError::Command { what: "creating an admin client".into(), detail: e.to_string() }
        })?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin.create_topics([&topic], &opts).await.map_err(|e| TestkitError::Command {
            what: format!("creating topic {name}"),
            detail: e.to_string(),
        })?;
        for r in results {
            r.map_err(|(t, e)| TestkitError::Command {
                what: format!("creating topic {t}"),
                detail: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) the produce quota `producer_byte_rate` of the clients whose
    /// `client.id` is `client_id`, in bytes per second per broker, through Kafka's own
    /// `ConfigCommand` (`kafka.admin.ConfigCommand` in Kafka 4.1). A broker throttles a client past
    /// its quota: it answers with a `throttle_time_ms` and stops reading the connection that long.
    pub fn set_produce_quota(&self, client_id: &str, bytes_per_second: Option<u64>) -> Result<()> {
        let local = self.local.as_ref().ok_or_else(Self::external_error)?;
        let mut cmd = local.jvm.command(&TOOL_FLAGS, "kafka.admin.ConfigCommand");
        cmd.args(["--bootstrap-server", &self.bootstrap]);
        if self.sasl {
            cmd.arg("--command-config").arg(local.dir.path().join("admin.properties"));
        }
        cmd.args(["--alter", "--entity-type", "clients", "--entity-name", client_id]);
        match bytes_per_second {
            Some(rate) => cmd.args(["--add-config", &format!("producer_byte_rate={rate}")]),
            None => cmd.args(["--delete-config", "producer_byte_rate"]),
        };
        let out = cmd.output().map_err(TestkitError::io("running ConfigCommand"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(TestkitError::Command {
                what: format!("setting the produce quota of client {client_id} to {bytes_per_second:?}"),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }

    /// Adds an ACL allowing `principal` (a user name, without `User:`) `operation` on `resource`,
    /// through Kafka's own `AclCommand` as the super user.
    pub fn allow(&self, principal: &str, operation: AclOperation, resource: &AclResource) -> Result<()> {
        let local = self.local.as_ref().ok_or_else(Self::external_error)?;
        if !self.sasl {
            return Err(TestkitError::Unsupported("ACLs need a cluster started with .sasl(…)".into()));
        }
        let admin_props = local.dir.path().join("admin.properties");
        let mut cmd = local.jvm.command(&TOOL_FLAGS, "org.apache.kafka.tools.AclCommand");
        cmd.args(["--bootstrap-server", &self.bootstrap, "--command-config"])
            .arg(&admin_props)
            .args(["--add", "--allow-principal", &format!("User:{principal}")])
            .args(["--operation", operation.as_arg()]);
        let (flag, name, prefixed) = match resource {
            AclResource::Topic(t) => ("--topic", t.as_str(), false),
            AclResource::TopicPrefix(t) => ("--topic", t.as_str(), true),
            AclResource::Group(g) => ("--group", g.as_str(), false),
            AclResource::GroupPrefix(g) => ("--group", g.as_str(), true),
            AclResource::TransactionalId(t) => ("--transactional-id", t.as_str(), false),
            AclResource::Cluster => ("--cluster", "", false),
        };
        cmd.arg(flag);
        if !name.is_empty() {
            cmd.arg(name);
        }
        if prefixed {
            cmd.args(["--resource-pattern-type", "prefixed"]);
        }
        let out = cmd.output().map_err(TestkitError::io("running AclCommand"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(TestkitError::Command {
                what: format!("allowing {principal} {operation:?} on {resource:?}"),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }
}
