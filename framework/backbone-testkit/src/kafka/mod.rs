//! A real Apache Kafka cluster (KRaft) on loopback: one combined node, or three brokers and a
//! controller-only node; optionally SASL/PLAIN (and SCRAM) with the StandardAuthorizer, and a TLS
//! listener (optionally mutual TLS) with certificates made per run.
//!
//! The module's files: `builder` (how a cluster is asked for and started), `control` (killing,
//! pausing, restarting brokers and waiting on them), `admin` (topics, ACLs and quotas, through the
//! admin API and Kafka's own tools) and `config` (the nodes' properties and logging configuration).
//! [`KafkaClusterBuilder`]'s fields are declared here, beside the cluster, so that `config` renders
//! them without importing `builder`, which imports `config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rdkafka::ClientConfig;

use crate::Result;
use crate::error::TestkitError;
use crate::java::Java;
use crate::process::Managed;
use crate::tls::ClientCertificate;

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
    scram: bool,
    tls: Option<TlsRequest>,
    broker_properties: BTreeMap<String, String>,
    preferred_ports: Vec<u16>,
}

/// A TLS listener asked for: with client certificates required (mutual TLS) or not, and the names
/// to make client certificates for.
#[derive(Debug, Clone, Default)]
struct TlsRequest {
    client_auth: bool,
    clients: Vec<String>,
}

/// What a started cluster's TLS clients need.
#[derive(Debug)]
struct TlsSetup {
    /// `host:port,…` of the SSL listeners.
    bootstrap: String,
    /// `host:port,…` of the SASL_SSL listeners (SASL clusters only).
    sasl_bootstrap: Option<String>,
    ca: PathBuf,
    clients: BTreeMap<String, ClientCertificate>,
}

/// How a test client connects to a cluster the kit started ([`KafkaCluster::client_env`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// SASL/PLAIN on the main listener (`.sasl(…)` or `.scram(…)`).
    Plain,
    /// SASL/SCRAM-SHA-256 on the main listener (`.scram(…)`).
    ScramSha256,
    /// SASL/SCRAM-SHA-512 on the main listener (`.scram(…)`).
    ScramSha512,
    /// TLS on the SSL listener, trusting the run's CA, without a client certificate (`.tls()`).
    Tls,
    /// Mutual TLS on the SSL listener with the user's client certificate (`.mtls(…)`): the brokers
    /// see the principal `User:<user>` (its certificate's CN).
    MutualTls,
    /// SASL/SCRAM-SHA-512 over TLS on the SASL_SSL listener (`.scram(…)` with `.tls()` or `.mtls(…)`).
    ScramSha512OverTls,
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
    scram: bool,
    tls: Option<TlsSetup>,
    broker_count: usize,
    local: Option<Local>,
}

impl KafkaCluster {
    /// An already running cluster at `bootstrap` (PLAINTEXT); the kit starts and stops nothing.
    pub fn external(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            sasl: false,
            scram: false,
            tls: None,
            broker_count: 0,
            local: None,
        }
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

    /// `host:port,…` of the TLS listeners (clusters started with `.tls()` or `.mtls(…)`).
    pub fn tls_bootstrap_servers(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.bootstrap.as_str())
    }

    /// The PEM file of the CA that signed the brokers' (and the clients') certificates.
    pub fn ca_location(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca.as_path())
    }

    /// The client certificate and key made for `user` (named in `.mtls(…)`).
    pub fn client_certificate(&self, user: &str) -> Option<&ClientCertificate> {
        self.tls.as_ref()?.clients.get(user)
    }

    /// The environment a backbone service needs to connect as `user` with `auth` (for
    /// `backbone::Config::from_lookup`): `KAFKA_BOOTSTRAP_SERVERS` of the right listener,
    /// `KAFKA_SECURITY_PROTOCOL`, and the SASL or TLS variables. Errors if the cluster was not
    /// started with what `auth` needs.
    pub fn client_env(&self, user: &str, auth: ClientAuth) -> Result<BTreeMap<String, String>> {
        let missing =
            |what: &str| TestkitError::Unsupported(format!("{auth:?} needs a cluster started with {what}"));
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_owned(), v);
        };
        let sasl = |set: &mut dyn FnMut(&str, String), mechanism: &str| {
            set("KAFKA_SASL_MECHANISM", mechanism.to_owned());
            set("KAFKA_SASL_USERNAME", user.to_owned());
            set("KAFKA_SASL_PASSWORD", password_for(user));
        };
        match auth {
            ClientAuth::Plain | ClientAuth::ScramSha256 | ClientAuth::ScramSha512 => {
                if !self.sasl {
                    return Err(missing(".sasl(…) or .scram(…)"));
                }
                let mechanism = match auth {
                    ClientAuth::Plain => "PLAIN",
                    _ if !self.scram => return Err(missing(".scram(…)")),
                    ClientAuth::ScramSha256 => "SCRAM-SHA-256",
                    _ => "SCRAM-SHA-512",
                };
                set("KAFKA_BOOTSTRAP_SERVERS", self.bootstrap.clone());
                set("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT".into());
                sasl(&mut set, mechanism);
            }
            ClientAuth::Tls | ClientAuth::MutualTls => {
                let tls = self.tls.as_ref().ok_or_else(|| missing(".tls() or .mtls(…)"))?;
                set("KAFKA_BOOTSTRAP_SERVERS", tls.bootstrap.clone());
                set("KAFKA_SECURITY_PROTOCOL", "SSL".into());
                set("KAFKA_SSL_CA_LOCATION", tls.ca.display().to_string());
                if auth == ClientAuth::MutualTls {
                    let cert =
                        tls.clients.get(user).ok_or_else(|| missing(&format!(".mtls([\"{user}\", …])")))?;
                    set("KAFKA_SSL_CERTIFICATE_LOCATION", cert.certificate.display().to_string());
                    set("KAFKA_SSL_KEY_LOCATION", cert.key.display().to_string());
                }
            }
            ClientAuth::ScramSha512OverTls => {
                let tls = self.tls.as_ref().ok_or_else(|| missing(".tls() or .mtls(…)"))?;
                let bootstrap =
                    tls.sasl_bootstrap.clone().filter(|_| self.scram).ok_or_else(|| missing(".scram(…)"))?;
                set("KAFKA_BOOTSTRAP_SERVERS", bootstrap);
                set("KAFKA_SECURITY_PROTOCOL", "SASL_SSL".into());
                set("KAFKA_SSL_CA_LOCATION", tls.ca.display().to_string());
                sasl(&mut set, "SCRAM-SHA-512");
            }
        }
        Ok(env)
    }

    /// A librdkafka client configuration for `user` with `auth` (see [`client_env`](Self::client_env)).
    pub fn client_config_with(&self, user: &str, auth: ClientAuth) -> Result<ClientConfig> {
        let mut config = ClientConfig::new();
        for (var, value) in self.client_env(user, auth)? {
            let property = match var.as_str() {
                "KAFKA_BOOTSTRAP_SERVERS" => "bootstrap.servers",
                "KAFKA_SECURITY_PROTOCOL" => "security.protocol",
                "KAFKA_SASL_MECHANISM" => "sasl.mechanism",
                "KAFKA_SASL_USERNAME" => "sasl.username",
                "KAFKA_SASL_PASSWORD" => "sasl.password",
                "KAFKA_SSL_CA_LOCATION" => "ssl.ca.location",
                "KAFKA_SSL_CERTIFICATE_LOCATION" => "ssl.certificate.location",
                "KAFKA_SSL_KEY_LOCATION" => "ssl.key.location",
                _ => continue,
            };
            config.set(property, value);
        }
        Ok(config)
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
