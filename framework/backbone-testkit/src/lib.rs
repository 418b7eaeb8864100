//! # backbone-testkit
//!
//! Real parts for tests, the way EmbeddedKafka and Testcontainers serve Java users, without docker:
//!
//! - [`KafkaCluster`]: Apache Kafka (KRaft, version [`KAFKA_VERSION`]) assembled from Maven Central
//!   artifacts and started on free loopback ports in a fresh temporary directory: one combined node,
//!   or three brokers beside a controller-only node; brokers can be SIGKILLed and restarted; SASL/PLAIN
//!   with the StandardAuthorizer and one user per principal on request, SCRAM-SHA-256/512 users, and a
//!   TLS listener (optionally mutual TLS) with a CA and certificates made per run ([`tls`]).
//! - [`SchemaRegistry`]: Apicurio Registry (version [`APICURIO_VERSION`]) serving the Confluent-compatible
//!   API, global compatibility BACKWARD.
//! - [`shared_kafka`] and [`shared_registry`]: one broker and one registry per test binary, shared by
//!   every test in it (random names from [`unique`] keep tests apart). Start a cluster of your own only
//!   to kill or reconfigure brokers.
//!
//! Kafka needs Java 17+, Apicurio Registry Java 21+ (found on `BACKBONE_JAVA_HOME`, `JAVA_HOME`, `PATH`
//! or under `/usr/lib/jvm`), and Maven fetches both once (cached in `~/.m2` and `target/backbone-cache`).
//! With `KAFKA_BOOTSTRAP_SERVERS` / `SCHEMA_REGISTRY_URL` set, the shared instances are those servers
//! and nothing is started.
//!
//! No process outlives the test process: each JVM has a watchdog that kills it when the test process
//! ends, however it ends (see the `process` module's docs).
//!
//! ```no_run
//! # async fn demo() -> backbone_testkit::Result<()> {
//! let kafka = backbone_testkit::shared_kafka();
//! let topic = backbone_testkit::unique("orders");
//! kafka.create_topic(&topic, 3, 1).await?;
//! let producer: rdkafka::producer::FutureProducer = kafka.client_config().create().expect("producer");
//! # Ok(()) }
//! ```

mod error;
mod fetch;
mod java;
mod kafka;
pub mod oracle;
mod process;
mod registry;
pub mod tls;

use std::sync::OnceLock;

pub use error::{Result, TestkitError};
pub use fetch::{APICURIO_VERSION, KAFKA_VERSION};
pub use kafka::{
    ADMIN_USER, AclOperation, AclResource, ClientAuth, KafkaCluster, KafkaClusterBuilder, password_for,
};
pub use registry::SchemaRegistry;

/// The Kafka cluster shared by every test in this test binary: the one named by
/// `KAFKA_BOOTSTRAP_SERVERS`, or a single node started on first use and killed when the process ends.
///
/// # Panics
/// If the broker cannot be started; the message says why (missing Java or Maven, a start failure with
/// the broker's log).
pub fn shared_kafka() -> &'static KafkaCluster {
    static SHARED: OnceLock<KafkaCluster> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        Ok(bootstrap) if !bootstrap.trim().is_empty() => KafkaCluster::external(bootstrap),
        _ => KafkaCluster::start_single()
            .unwrap_or_else(|e| panic!("backbone-testkit: could not start the shared Kafka broker: {e}")),
    })
}

/// The three-broker cluster shared by every test in this test binary that asks for one (topics with
/// replication 3 and `min.insync.replicas` 2, as in production): the one named by
/// `KAFKA_CLUSTER_BOOTSTRAP_SERVERS`, or three brokers and a controller started on first use and
/// killed when the process ends. Tests that kill or pause its brokers start a cluster of their own.
///
/// # Panics
/// If the cluster cannot be started; the message says why.
pub fn shared_cluster() -> &'static KafkaCluster {
    static SHARED: OnceLock<KafkaCluster> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var("KAFKA_CLUSTER_BOOTSTRAP_SERVERS") {
        Ok(bootstrap) if !bootstrap.trim().is_empty() => KafkaCluster::external(bootstrap),
        _ => KafkaCluster::start_three()
            .unwrap_or_else(|e| panic!("backbone-testkit: could not start the shared 3-broker cluster: {e}")),
    })
}

/// The schema registry shared by every test in this test binary: the one named by
/// `SCHEMA_REGISTRY_URL`, or Apicurio Registry started on first use and killed when the process ends.
///
/// # Panics
/// If the registry cannot be started; the message says why.
pub fn shared_registry() -> &'static SchemaRegistry {
    static SHARED: OnceLock<SchemaRegistry> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var("SCHEMA_REGISTRY_URL") {
        Ok(url) if !url.trim().is_empty() => SchemaRegistry::external(url),
        _ => SchemaRegistry::start()
            .unwrap_or_else(|e| panic!("backbone-testkit: could not start the shared schema registry: {e}")),
    })
}

/// A command that runs one of Kafka's own tools, by class (for example
/// `org.apache.kafka.tools.ProducerPerformance`), on the kit's Java and the same Kafka jars as its
/// broker (fetched on first use): what benchmarks compare with. Logging goes to stderr at `WARN`.
pub fn kafka_tool(class: &str) -> Result<std::process::Command> {
    let java = java::java(17, "Kafka's tools")?;
    let classpath = fetch::kafka_classpath()?;
    let mut command = std::process::Command::new(java.bin);
    command.arg("-cp").arg(classpath).arg("-Dlog4j2.level=WARN").arg(class);
    Ok(command)
}

/// A name no other test uses: `<prefix>-<random>`, for topics, groups and subjects.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
