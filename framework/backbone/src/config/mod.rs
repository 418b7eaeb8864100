//! Configuration from the environment (and optionally a file), with one clear error per bad value.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `KAFKA_BOOTSTRAP_SERVERS` | `127.0.0.1:9092` | brokers (`backbone dev up` prints it) |
//! | `SCHEMA_REGISTRY_URL` | `http://127.0.0.1:8081/apis/ccompat/v7` | Confluent-compatible registry |
//! | `BACKBONE_PROFILE` | `production` | `development` lowers replication to 1 for a single broker |
//! | `SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO` | | `user:password` for the registry's basic authentication (user info in the URL wins) |
//! | `SCHEMA_REGISTRY_CA_LOCATION` | | PEM file of a CA to trust for an `https://` registry |
//! | `KAFKA_SECURITY_PROTOCOL` | `PLAINTEXT` | `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL` |
//! | `KAFKA_SASL_MECHANISM` | `PLAIN` | `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` |
//! | `KAFKA_SASL_USERNAME` | the service name | the service's principal |
//! | `KAFKA_SASL_PASSWORD` | (required with SASL) | its password |
//! | `KAFKA_SSL_CA_LOCATION` | system CAs | PEM file of the CA(s) that signed the brokers' certificates (`SSL`, `SASL_SSL`) |
//! | `KAFKA_SSL_CERTIFICATE_LOCATION` | | the client's PEM certificate, for mutual TLS (its subject is the principal) |
//! | `KAFKA_SSL_KEY_LOCATION` | | the client certificate's PEM private key (with the certificate) |
//! | `KAFKA_SSL_KEY_PASSWORD` | | the key's password, if it is encrypted |
//! | `KAFKA_SSL_ENDPOINT_IDENTIFICATION` | `https` | `https`: the broker's certificate must name its host; `none` |
//! | `BACKBONE_DELIVERY_TIMEOUT_MS` | `120000` | how long a publish may take before it fails (retriably) |
//! | `BACKBONE_LINGER_MS` | `5` | producer batching delay |
//! | `BACKBONE_PUBLISH_QUEUE` | `100000` | publishes in flight before publishers wait (backpressure) |
//! | `BACKBONE_PROVISIONING` | `apply` | `apply`: create and correct the service's own topics at start-up; `verify`: only check them (another owner, such as Strimzi's Topic Operator, manages them): a missing topic or a difference fails start-up |
//! | `BACKBONE_SHUTDOWN_TIMEOUT_MS` | `30000` | budget for draining and flushing on shutdown |
//! | `BACKBONE_SHUTDOWN_DELAY_MS` | `0` | on a shutdown signal, how long a served service stays up (answering, `/readyz` 503) before it drains: the time a load balancer or Kubernetes takes to stop routing to it |
//! | `KAFKA_PRODUCER_<KEY>` | | any librdkafka producer property, `_` for `.` (`KAFKA_PRODUCER_COMPRESSION_TYPE=zstd`) |
//! | `BACKBONE_UNSAFE_ALLOW_WEAK_DURABILITY` | `false` | allow `acks≠all` or idempotence off (loudly unsafe) |
//! | `BACKBONE_HTTP_ADDR` | `0.0.0.0:8080` | where a service declared with `App` serves HTTP (`/healthz`, `/readyz`, its routes) |
//! | `BACKBONE_INSTANCE_ID` | | a stable identity of this instance (a StatefulSet pod's name): exactly-once consumers use the transactional id `<group>.<instance>`, so a restart fences its predecessor at once |
//! | `BACKBONE_CONFIG_FILE` | | a file of `KEY=VALUE` lines read first; the environment wins |
//!
//! Files named by variables are checked when the configuration is read: a missing or unreadable file,
//! or one that is not PEM, is an error naming the variable and the path. Passwords are [`Secret`]s:
//! `Debug`, `Display` and `Serialize` print `***`, and so do registry URLs' passwords
//! ([`redact_url`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

mod secret;
mod security;
#[cfg(test)]
mod tests;

use secret::serialize_redacted;
pub use secret::{Secret, redact_url};
pub use security::{RegistrySecurity, Security};

/// How durable topics are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Topics as declared: replication 3, `min.insync.replicas` 2 unless declared otherwise.
    #[default]
    Production,
    /// Replication 1 and `min.insync.replicas` 1, to fit a single local broker. Chosen explicitly.
    Development,
}

/// What a service does about its own topics at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provisioning {
    /// Creates missing topics and sets drifted configurations back (what
    /// [`Provisioner::provision`](crate::provision::Provisioner::provision) does).
    #[default]
    Apply,
    /// Checks, never alters: another owner manages the topics (Strimzi's Topic Operator from
    /// `KafkaTopic` resources, say). A missing topic or any difference from the declaration fails
    /// start-up with [`ProvisionError::NotAsDeclared`](crate::provision::ProvisionError::NotAsDeclared),
    /// naming every difference.
    Verify,
}

/// A service's configuration. Build it with [`Config::from_env`], or [`Config::default`] and the
/// fields for tests. Its `Debug` and `Serialize` output carry no secret: the SASL password is
/// `***` (or left out), and so is the password in the registry URL's user info ([`redact_url`]).
#[derive(Clone, Serialize)]
#[non_exhaustive]
pub struct Config {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// The Confluent-compatible schema registry's base URL (it may carry `user:password@` for basic
    /// authentication).
    #[serde(serialize_with = "serialize_redacted")]
    pub schema_registry_url: String,
    /// Durability profile for provisioning.
    pub profile: Profile,
    /// Whether start-up creates and corrects the service's topics, or only checks them.
    pub provisioning: Provisioning,
    /// How the registry client authenticates (basic auth) and which CA it trusts.
    pub registry_security: RegistrySecurity,
    /// Authentication and TLS towards the brokers.
    pub security: Security,
    /// How long a publish may take, retries included, before it fails.
    pub delivery_timeout: Duration,
    /// Producer batching delay.
    pub linger: Duration,
    /// Publishes in flight before publishers wait.
    pub publish_queue: usize,
    /// Budget for draining and flushing on shutdown.
    pub shutdown_timeout: Duration,
    /// On a shutdown signal, how long [`Started::serve`](crate::app::Started::serve) keeps serving,
    /// out of rotation (`/readyz` answers 503), before it stops listening and drains: the time the
    /// platform takes to stop routing requests to it (Kubernetes' endpoints). Not part of
    /// [`shutdown_timeout`](Self::shutdown_timeout).
    pub shutdown_delay: Duration,
    /// Extra librdkafka producer properties; weakening ones are refused unless
    /// [`allow_weak_durability`](Self::allow_weak_durability).
    pub producer_overrides: BTreeMap<String, String>,
    /// The explicit, loudly named opt-in to `acks≠all` or idempotence off.
    pub allow_weak_durability: bool,
    /// Where [`crate::app::App::run`] serves HTTP (`BACKBONE_HTTP_ADDR`, default `0.0.0.0:8080`).
    pub http_addr: std::net::SocketAddr,
    /// A stable identity of this instance (`BACKBONE_INSTANCE_ID`, e.g. a StatefulSet pod's name):
    /// exactly-once consumers declared with [`crate::app::App`] then use the transactional id
    /// `<group>.<instance>`, and a restarted instance fences its predecessor's producer at once.
    /// Two live instances must never share one. `None`: a new id per run.
    pub instance_id: Option<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("schema_registry_url", &redact_url(&self.schema_registry_url))
            .field("profile", &self.profile)
            .field("registry_security", &self.registry_security)
            .field("security", &self.security)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("linger", &self.linger)
            .field("publish_queue", &self.publish_queue)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("shutdown_delay", &self.shutdown_delay)
            .field("producer_overrides", &self.producer_overrides)
            .field("allow_weak_durability", &self.allow_weak_durability)
            .field("http_addr", &self.http_addr)
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            schema_registry_url: "http://127.0.0.1:8081/apis/ccompat/v7".into(),
            profile: Profile::Production,
            provisioning: Provisioning::Apply,
            registry_security: RegistrySecurity::default(),
            security: Security::default(),
            delivery_timeout: Duration::from_secs(120),
            linger: Duration::from_millis(5),
            publish_queue: 100_000,
            shutdown_timeout: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            producer_overrides: BTreeMap::new(),
            allow_weak_durability: false,
            http_addr: std::net::SocketAddr::from(([0, 0, 0, 0], 8080)),
            instance_id: None,
        }
    }
}

/// A configuration value that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable has a value the framework cannot use.
    #[error("{variable}={value:?} is invalid: expected {expected}")]
    Invalid {
        /// The variable (or setting) name.
        variable: String,
        /// Its value.
        value: String,
        /// What is expected instead.
        expected: String,
    },
    /// A required variable is missing.
    #[error("{variable} is not set: expected {expected}")]
    Missing {
        /// The variable.
        variable: String,
        /// What it should hold.
        expected: String,
    },
    /// A producer setting that weakens durability, without the explicit opt-in.
    #[error(
        "producer setting {setting}={value} weakens durability ({why}); backbone refuses it unless \
         BACKBONE_UNSAFE_ALLOW_WEAK_DURABILITY=true (or Config::allow_weak_durability) says you mean it"
    )]
    UnsafeProducerSetting {
        /// The librdkafka property.
        setting: String,
        /// Its value.
        value: String,
        /// What it would cost.
        why: String,
    },
    /// A file named by a variable (a CA, a certificate, a key) is missing, unreadable or not PEM.
    #[error("{variable}={path}: {reason}", path = path.display())]
    Unreadable {
        /// The variable.
        variable: String,
        /// The file it names.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The configuration file could not be read.
    #[error("configuration file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl ConfigError {
    /// Configuration errors are never retriable: the configuration must change.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

impl Config {
    /// Reads the configuration of `service` from the process environment (and `BACKBONE_CONFIG_FILE`).
    pub fn from_env(service: &str) -> Result<Self, ConfigError> {
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        let mut all = match vars.get("BACKBONE_CONFIG_FILE") {
            Some(path) => read_file(path)?,
            None => BTreeMap::new(),
        };
        all.extend(vars);
        Self::from_lookup(service, |k| all.get(k).cloned())
    }

    /// Reads the configuration of `service` from any lookup of variables (tests use a map).
    pub fn from_lookup(service: &str, get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        if let Some(v) = get("KAFKA_BOOTSTRAP_SERVERS") {
            if v.trim().is_empty() || v.split(',').any(|s| !s.contains(':')) {
                return Err(invalid("KAFKA_BOOTSTRAP_SERVERS", &v, "a comma-separated list of host:port"));
            }
            c.bootstrap_servers = v;
        }
        if let Some(v) = get("SCHEMA_REGISTRY_URL") {
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                return Err(invalid("SCHEMA_REGISTRY_URL", &redact_url(&v), "an http:// or https:// URL"));
            }
            c.schema_registry_url = v.trim_end_matches('/').to_owned();
        }
        if let Some(v) = get("BACKBONE_PROFILE") {
            c.profile = match v.as_str() {
                "production" => Profile::Production,
                "development" => Profile::Development,
                _ => return Err(invalid("BACKBONE_PROFILE", &v, "`production` or `development`")),
            };
        }
        if let Some(v) = get("BACKBONE_PROVISIONING") {
            c.provisioning = match v.as_str() {
                "apply" => Provisioning::Apply,
                "verify" => Provisioning::Verify,
                _ => return Err(invalid("BACKBONE_PROVISIONING", &v, "`apply` or `verify`")),
            };
        }
        c.registry_security = RegistrySecurity::from_lookup(&get)?;
        c.security = Security::from_lookup(service, &get)?;
        if let Some(v) = get("BACKBONE_DELIVERY_TIMEOUT_MS") {
            c.delivery_timeout =
                Duration::from_millis(number(&v, "BACKBONE_DELIVERY_TIMEOUT_MS", 1000, 3_600_000)?);
        }
        if let Some(v) = get("BACKBONE_LINGER_MS") {
            c.linger = Duration::from_millis(number(&v, "BACKBONE_LINGER_MS", 0, 60_000)?);
        }
        if let Some(v) = get("BACKBONE_PUBLISH_QUEUE") {
            c.publish_queue =
                usize::try_from(number(&v, "BACKBONE_PUBLISH_QUEUE", 1, 10_000_000)?).unwrap_or(1);
        }
        if let Some(v) = get("BACKBONE_SHUTDOWN_TIMEOUT_MS") {
            c.shutdown_timeout =
                Duration::from_millis(number(&v, "BACKBONE_SHUTDOWN_TIMEOUT_MS", 0, 3_600_000)?);
        }
        if let Some(v) = get("BACKBONE_SHUTDOWN_DELAY_MS") {
            c.shutdown_delay = Duration::from_millis(number(&v, "BACKBONE_SHUTDOWN_DELAY_MS", 0, 600_000)?);
        }
        if let Some(v) = get("BACKBONE_UNSAFE_ALLOW_WEAK_DURABILITY") {
            c.allow_weak_durability = match v.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(invalid("BACKBONE_UNSAFE_ALLOW_WEAK_DURABILITY", &v, "`true` or `false`")),
            };
        }
        if let Some(v) = get("BACKBONE_HTTP_ADDR") {
            c.http_addr =
                v.parse().map_err(|_| invalid("BACKBONE_HTTP_ADDR", &v, "an address like 0.0.0.0:8080"))?;
        }
        if let Some(v) = get("BACKBONE_INSTANCE_ID") {
            let fine = !v.is_empty()
                && v.len() <= 128
                && v.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'));
            if !fine {
                return Err(invalid("BACKBONE_INSTANCE_ID", &v, "1 to 128 of A-Z a-z 0-9 . _ -"));
            }
            c.instance_id = Some(v);
        }
        // KAFKA_PRODUCER_* → librdkafka properties. The lookup cannot enumerate, so the known
        // property names are probed; anything else goes through Config::producer_overrides in code.
        for key in PRODUCER_PROPERTIES {
            let var = format!("KAFKA_PRODUCER_{}", key.replace('.', "_").to_uppercase());
            if let Some(v) = get(&var) {
                c.producer_overrides.insert((*key).to_owned(), v);
            }
        }
        c.check_producer_durability()?;
        Ok(c)
    }

    /// Refuses producer overrides that weaken durability, unless explicitly allowed (R4).
    pub fn check_producer_durability(&self) -> Result<(), ConfigError> {
        if self.allow_weak_durability {
            return Ok(());
        }
        self.check_producer_durability_strict()
    }

    /// Like [`check_producer_durability`](Self::check_producer_durability), ignoring the opt-in.
    pub fn check_producer_durability_strict(&self) -> Result<(), ConfigError> {
        for (key, value) in &self.producer_overrides {
            let why = match key.as_str() {
                "acks" | "request.required.acks" if !matches!(value.as_str(), "all" | "-1") => {
                    "acknowledged writes can be lost when a leader fails; durable is acks=all"
                }
                "enable.idempotence" if value != "true" => {
                    "retries can duplicate and reorder events; durable is enable.idempotence=true"
                }
                "max.in.flight.requests.per.connection" | "max.in.flight"
                    if value.parse::<u32>().map_or(true, |n| n > 5) =>
                {
                    "more than 5 requests in flight breaks ordering under retries"
                }
                "retries" | "message.send.max.retries" if value == "0" => {
                    "without retries a transient broker error loses the event"
                }
                _ => continue,
            };
            return Err(ConfigError::UnsafeProducerSetting {
                setting: key.clone(),
                value: value.clone(),
                why: why.into(),
            });
        }
        Ok(())
    }

    /// A librdkafka client configuration for `service` with bootstrap servers, security (SASL, TLS:
    /// [`Security::apply`]) and client id. Every producer, consumer and admin client the framework
    /// makes starts from it.
    pub fn client_config(&self, service: &str) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers).set("client.id", service);
        self.security.apply(&mut c);
        c
    }
}

/// Producer properties that may be set through `KAFKA_PRODUCER_<KEY>`.
const PRODUCER_PROPERTIES: &[&str] = &[
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "retries",
    "message.send.max.retries",
    "compression.type",
    "batch.size",
    "batch.num.messages",
    "queue.buffering.max.kbytes",
    "message.max.bytes",
    "socket.keepalive.enable",
    "statistics.interval.ms",
    "debug",
];

fn invalid(variable: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid { variable: variable.into(), value: value.into(), expected: expected.into() }
}

fn number(value: &str, variable: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| invalid(variable, value, &format!("a whole number from {min} to {max}")))
}

fn read_file(path: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::File { path: path.into(), reason: e.to_string() })?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| ConfigError::File {
            path: path.into(),
            reason: format!("line {}: expected KEY=VALUE, found {line:?}", i + 1),
        })?;
        out.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
    }
    Ok(out)
}
