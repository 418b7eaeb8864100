//! A real Apache Kafka cluster (KRaft) on loopback: one combined node, or three brokers and a
//! controller-only node; optionally SASL/PLAIN with the StandardAuthorizer.
//!
//! The module's files: `builder` (how a cluster is asked for and started), `control` (killing,
//! pausing, restarting brokers and waiting on them), `admin` (topics, ACLs and quotas, through the
//! admin API and Kafka's own tools) and `config` (the nodes' properties and logging configuration).
//! [`KafkaClusterBuilder`]'s fields are declared here, beside the cluster, so that `config` renders
//! them without importing `builder`, which imports `config`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use rdkafka::ClientConfig;

use crate::Result;
use crate::error::TestkitError;
use crate::java::Java;
use crate::process::Managed;

mod admin;
mod builder;
mod config;
mod control;

pub use admin::{AclOperation, AclResource};

/// The SASL user that is a super user of a SASL cluster (brokers talk to each other as it).
pub const ADMIN_USER: &str = "admin";

/// The password the kit gives a SASL user: `<name>-secret`.
pub fn password_for(user: &str) -> String {
    format!("{user}-secret")
}

/// How to start a [`KafkaCluster`].
#[derive(Debug, Clone, Default)]
pub struct KafkaClusterBuilder {
    brokers: usize,
    sasl_users: Option<Vec<String>>,
    broker_properties: BTreeMap<String, String>,
    preferred_ports: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Combined,
    Broker,
    Controller,
}

#[derive(Debug)]
struct Node {
    id: i32,
    role: Role,
    props: PathBuf,
    log: PathBuf,
    process: Option<Managed>,
}

/// How to run a Kafka class: the Java binary and an `@argfile` with the classpath and logging config
/// (a short command line in `ps`, whatever the classpath's length).
#[derive(Debug, Clone)]
struct Jvm {
    java: Java,
    argfile: PathBuf,
    /// The cluster's temporary directory, which every node's watchdog removes if the test process
    /// dies without dropping the cluster.
    workdir: PathBuf,
}

/// Flags for short-lived tool JVMs (format, ACLs): start fast, stay small.
const TOOL_FLAGS: [&str; 3] = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m"];

impl Jvm {
    fn command(&self, flags: &[&str], main_class: &str) -> Command {
        let mut cmd = Command::new(&self.java.bin);
        cmd.args(flags).arg(format!("@{}", self.argfile.display())).arg(main_class);
        cmd
    }
}

#[derive(Debug)]
struct Local {
    // Fields drop in declaration order: the processes go before their directory.
    nodes: Vec<Node>,
    jvm: Jvm,
    dir: tempfile::TempDir,
}

/// A Kafka cluster for tests: started by the kit on loopback, or an external one named by
/// `KAFKA_BOOTSTRAP_SERVERS` (see [`crate::shared_kafka`]). Every process it started is killed when
/// it is dropped, and by a watchdog if the test process dies first.
#[derive(Debug)]
pub struct KafkaCluster {
    bootstrap: String,
    sasl: bool,
    broker_count: usize,
    local: Option<Local>,
}

impl KafkaCluster {
    /// An already running cluster at `bootstrap` (PLAINTEXT); the kit starts and stops nothing.
    pub fn external(bootstrap: impl Into<String>) -> Self {
        Self { bootstrap: bootstrap.into(), sasl: false, broker_count: 0, local: None }
    }

    /// `host:port,…` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Whether SASL/PLAIN with ACLs is on.
    pub fn is_sasl(&self) -> bool {
        self.sasl
    }

    /// How many brokers the kit started (0 for an external cluster).
    pub fn broker_count(&self) -> usize {
        self.broker_count
    }

    /// The ids of the brokers the kit started.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.local
            .iter()
            .flat_map(|l| l.nodes.iter())
            .filter(|n| n.role != Role::Controller)
            .map(|n| n.id)
            .collect()
    }

    /// A client configuration with `bootstrap.servers` set; on a SASL cluster it authenticates as
    /// the super user [`ADMIN_USER`].
    pub fn client_config(&self) -> ClientConfig {
        if self.sasl { self.client_config_as(ADMIN_USER) } else { self.plain_config() }
    }

    /// A client configuration that authenticates as `user` (SASL clusters; on others the user is
    /// ignored).
    pub fn client_config_as(&self, user: &str) -> ClientConfig {
        let mut config = self.plain_config();
        if self.sasl {
            config
                .set("security.protocol", "SASL_PLAINTEXT")
                .set("sasl.mechanism", "PLAIN")
                .set("sasl.username", user)
                .set("sasl.password", password_for(user));
        }
        config
    }

    fn plain_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
    }

    /// Process ids of the JVMs the kit started (for leak checks).
    pub fn pids(&self) -> Vec<u32> {
        self.local
            .iter()
            .flat_map(|l| l.nodes.iter())
            .filter_map(|n| n.process.as_ref().map(Managed::pid))
            .collect()
    }

    /// The temporary directory holding the brokers' configuration, logs and data (for leak checks;
    /// `None` for an external cluster). Dropping the cluster removes it, and so do the brokers'
    /// watchdogs if the test process dies with the cluster still alive.
    pub fn work_dir(&self) -> Option<&std::path::Path> {
        self.local.as_ref().map(|l| l.dir.path())
    }

    fn external_error() -> TestkitError {
        TestkitError::Unsupported(
            "this is an external cluster (KAFKA_BOOTSTRAP_SERVERS): the kit did not start it and cannot \
             kill, restart or reconfigure it; start one with KafkaCluster::builder()"
                .into(),
        )
    }

    fn node_mut(&mut self, id: i32) -> Result<&mut Node> {
        let local = self.local.as_mut().ok_or_else(Self::external_error)?;
        local
            .nodes
            .iter_mut()
            .find(|n| n.id == id && n.role != Role::Controller)
            .ok_or_else(|| TestkitError::Unsupported(format!("no broker with id {id}")))
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        if let Some(local) = self.local.as_mut() {
            // Brokers first, then the controller, so none waits on a vanished quorum.
            for node in local.nodes.iter_mut().rev() {
                if let Some(mut p) = node.process.take() {
                    p.kill();
                }
            }
        }
    }
}
