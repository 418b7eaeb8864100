//! Configuration from the environment (and optionally a file), with one clear error per bad value.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `KAFKA_BOOTSTRAP_SERVERS` | `127.0.0.1:9092` | brokers (`backbone dev up` prints it) |
//! | `SCHEMA_REGISTRY_URL` | `http://127.0.0.1:8081/apis/ccompat/v7` | Confluent-compatible registry |
//! | `BACKBONE_PROFILE` | `production` | `development` lowers replication to 1 for a single broker |
//! | `KAFKA_SECURITY_PROTOCOL` | `PLAINTEXT` | `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL` |
//! | `KAFKA_SASL_MECHANISM` | `PLAIN` | SASL mechanism |
//! | `KAFKA_SASL_USERNAME` | the service name | the service's principal |
//! | `KAFKA_SASL_PASSWORD` | (required with SASL) | its password |
//! | `BACKBONE_DELIVERY_TIMEOUT_MS` | `120000` | how long a publish may take before it fails (retriably) |
//! | `BACKBONE_LINGER_MS` | `5` | producer batching delay |
//! | `BACKBONE_PUBLISH_QUEUE` | `100000` | publishes in flight before publishers wait (backpressure) |
//! | `BACKBONE_SHUTDOWN_TIMEOUT_MS` | `30000` | budget for draining and flushing on shutdown |
//! | `KAFKA_PRODUCER_<KEY>` | | any librdkafka producer property, `_` for `.` (`KAFKA_PRODUCER_COMPRESSION_TYPE=zstd`) |
//! | `BACKBONE_UNSAFE_ALLOW_WEAK_DURABILITY` | `false` | allow `acks≠all` or idempotence off (loudly unsafe) |
//! | `BACKBONE_HTTP_ADDR` | `0.0.0.0:8080` | where a service declared with `App` serves HTTP (`/healthz`, `/readyz`, its routes) |
//! | `BACKBONE_INSTANCE_ID` | | a stable identity of this instance (a StatefulSet pod's name): exactly-once consumers use the transactional id `<group>.<instance>`, so a restart fences its predecessor at once |
//! | `BACKBONE_CONFIG_FILE` | | a file of `KEY=VALUE` lines read first; the environment wins |

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

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

/// How clients authenticate to the brokers. Its `Debug` prints `***` for the password.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Security {
    /// `security.protocol`.
    pub protocol: String,
    /// `sasl.mechanism` (SASL protocols only).
    pub mechanism: String,
    /// `sasl.username`: the service's principal.
    pub username: Option<String>,
    /// `sasl.password`.
    #[serde(skip)]
    pub password: Option<String>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("protocol", &self.protocol)
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .finish()
    }
}

impl Security {
    fn is_sasl(&self) -> bool {
        self.protocol.starts_with("SASL")
    }
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
    /// Authentication.
    pub security: Security,
    /// How long a publish may take, retries included, before it fails.
    pub delivery_timeout: Duration,
    /// Producer batching delay.
    pub linger: Duration,
    /// Publishes in flight before publishers wait.
    pub publish_queue: usize,
    /// Budget for draining and flushing on shutdown.
    pub shutdown_timeout: Duration,
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
            .field("security", &self.security)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("linger", &self.linger)
            .field("publish_queue", &self.publish_queue)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("producer_overrides", &self.producer_overrides)
            .field("allow_weak_durability", &self.allow_weak_durability)
            .field("http_addr", &self.http_addr)
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

fn serialize_redacted<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url))
}

/// What secrets are printed as.
const REDACTED: &str = "***";

/// `text` with the user info of every URL in it redacted: `http://user:secret@host/…` becomes
/// `http://user:***@host/…`, and user info without a password (`http://token@host`) becomes
/// `***@`. Text without user info is returned as is. For logs, `Debug` output and error messages
/// (registry URLs and the HTTP client's errors, which quote the URL).
pub fn redact_url(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority runs to the path, query or fragment, or to where the URL ends in prose.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | ')' | '"' | '\'' | '>' | ']') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(user_end) => {
                let user_info = &authority[..user_end];
                match user_info.split_once(':') {
                    Some((user, _password)) => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(REDACTED);
                    }
                    None => out.push_str(REDACTED),
                }
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            schema_registry_url: "http://127.0.0.1:8081/apis/ccompat/v7".into(),
            profile: Profile::Production,
            security: Security {
                protocol: "PLAINTEXT".into(),
                mechanism: "PLAIN".into(),
                username: None,
                password: None,
            },
            delivery_timeout: Duration::from_secs(120),
            linger: Duration::from_millis(5),
            publish_queue: 100_000,
            shutdown_timeout: Duration::from_secs(30),
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
        if let Some(v) = get("KAFKA_SECURITY_PROTOCOL") {
            if !["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"].contains(&v.as_str()) {
                return Err(invalid(
                    "KAFKA_SECURITY_PROTOCOL",
                    &v,
                    "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
                ));
            }
            c.security.protocol = v;
        }
        if let Some(v) = get("KAFKA_SASL_MECHANISM") {
            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&v.as_str()) {
                return Err(invalid("KAFKA_SASL_MECHANISM", &v, "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"));
            }
            c.security.mechanism = v;
        }
        if c.security.is_sasl() {
            c.security.username = Some(get("KAFKA_SASL_USERNAME").unwrap_or_else(|| service.to_owned()));
            c.security.password = Some(get("KAFKA_SASL_PASSWORD").ok_or_else(|| ConfigError::Missing {
                variable: "KAFKA_SASL_PASSWORD".into(),
                expected: format!("the password of principal `{service}` (KAFKA_SECURITY_PROTOCOL is SASL)"),
            })?);
        }
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

    /// A librdkafka client configuration for `service` with bootstrap servers, security and client id.
    pub fn client_config(&self, service: &str) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers).set("client.id", service);
        c.set("security.protocol", &self.security.protocol);
        if self.security.is_sasl() {
            c.set("sasl.mechanism", &self.security.mechanism);
            if let Some(u) = &self.security.username {
                c.set("sasl.username", u);
            }
            if let Some(p) = &self.security.password {
                c.set("sasl.password", p);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Config::from_lookup("orders", |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_durable_and_local() {
        let c = from(&[]).unwrap();
        assert_eq!(c.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(c.profile, Profile::Production);
        assert!(!c.allow_weak_durability);
        assert_eq!(c.instance_id, None);
        let c = from(&[("BACKBONE_INSTANCE_ID", "orders-0")]).unwrap();
        assert_eq!(c.instance_id.as_deref(), Some("orders-0"));
    }

    #[test]
    fn every_bad_value_names_its_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("KAFKA_BOOTSTRAP_SERVERS", "localhost")],
                "KAFKA_BOOTSTRAP_SERVERS=\"localhost\" is invalid: expected a comma-separated list of host:port",
            ),
            (&[("BACKBONE_PROFILE", "prod")], "BACKBONE_PROFILE=\"prod\" is invalid"),
            (
                &[("BACKBONE_DELIVERY_TIMEOUT_MS", "soon")],
                "BACKBONE_DELIVERY_TIMEOUT_MS=\"soon\" is invalid: expected a whole number",
            ),
            (&[("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")], "KAFKA_SASL_PASSWORD is not set"),
            (&[("SCHEMA_REGISTRY_URL", "registry:8081")], "SCHEMA_REGISTRY_URL"),
            (&[("BACKBONE_INSTANCE_ID", "orders 0")], "BACKBONE_INSTANCE_ID=\"orders 0\" is invalid"),
        ];
        for (vars, expected) in cases {
            let err = from(vars).unwrap_err().to_string();
            assert!(err.contains(expected), "`{err}` should contain `{expected}`");
        }
    }

    #[test]
    fn item_7_debug_and_serialized_config_carry_no_secret() {
        let c = from(&[
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_PASSWORD", "kafka-s3cret"),
            ("SCHEMA_REGISTRY_URL", "https://svc:registry-s3cret@registry.example:8081/apis/ccompat/v7"),
        ])
        .unwrap();
        // The values are there for the clients ...
        assert_eq!(c.security.password.as_deref(), Some("kafka-s3cret"));
        assert!(c.schema_registry_url.contains("registry-s3cret"));
        // ... and in no printed or serialized form.
        let printed = [
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{:?}", c.security),
            serde_json::to_string(&c).unwrap(),
            serde_json::to_string(&c.security).unwrap(),
        ];
        for text in &printed {
            assert!(!text.contains("s3cret"), "a secret in `{text}`");
        }
        assert!(
            printed[0].contains("https://svc:***@registry.example:8081/apis/ccompat/v7"),
            "{}",
            printed[0]
        );
        assert!(printed[0].contains("password: Some(\"***\")"), "{}", printed[0]);
        // A refused URL is quoted redacted in the error too.
        let err =
            from(&[("SCHEMA_REGISTRY_URL", "ftp://svc:registry-s3cret@host/")]).unwrap_err().to_string();
        assert!(!err.contains("s3cret") && err.contains("ftp://svc:***@host/"), "{err}");
    }

    #[test]
    fn item_7_urls_lose_their_passwords_wherever_they_are_quoted() {
        let cases = [
            ("http://127.0.0.1:8081/apis/ccompat/v7", "http://127.0.0.1:8081/apis/ccompat/v7"),
            ("http://user:pa:ss@host:1/x?q=a@b", "http://user:***@host:1/x?q=a@b"),
            ("https://p@ss:w@rd@host", "https://p@ss:***@host"),
            ("http://token@host/a", "http://***@host/a"),
            (
                "error sending request for url (http://u:secret@10.0.0.1:8081/schemas/ids/7): refused",
                "error sending request for url (http://u:***@10.0.0.1:8081/schemas/ids/7): refused",
            ),
            ("a http://u:s@h) and https://v:t@k", "a http://u:***@h) and https://v:***@k"),
            ("no url @ all", "no url @ all"),
        ];
        for (text, expected) in cases {
            assert_eq!(redact_url(text), expected, "{text}");
        }
    }

    #[test]
    fn sasl_principal_defaults_to_the_service_name() {
        let c = from(&[("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"), ("KAFKA_SASL_PASSWORD", "s")]).unwrap();
        assert_eq!(c.security.username.as_deref(), Some("orders"));
    }
}
