//! How clients reach a secured cluster and registry: [`Security`] (SASL PLAIN/SCRAM, TLS with a CA
//! file, mutual TLS) and [`RegistrySecurity`] (basic authentication, a CA file), read from the
//! environment and applied to every librdkafka client and every registry HTTP client.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Serialize;

use super::{ConfigError, Secret, invalid};

/// The `security.protocol` values librdkafka and the brokers share.
const PROTOCOLS: [&str; 4] = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
/// The SASL mechanisms backbone supports (OAUTHBEARER and GSSAPI need more than a password).
const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// How clients authenticate to the brokers and check them: `security.protocol`, SASL credentials,
/// the CA that signed the brokers' certificates and the client's own certificate (mutual TLS).
///
/// Its `Debug` and `Serialize` output show the passwords as `***` ([`Secret`]). [`apply`](Self::apply)
/// hands it to a librdkafka client; [`crate::Config::client_config`] does that for every producer,
/// consumer and admin client the framework makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Security {
    /// `security.protocol`: `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    pub protocol: String,
    /// `sasl.mechanism` (SASL protocols only): `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    /// `sasl.username`: the service's principal.
    pub username: Option<String>,
    /// `sasl.password`.
    pub password: Option<Secret>,
    /// `ssl.ca.location`: a PEM file of the CA(s) that signed the brokers' certificates (TLS
    /// protocols; without it, the system's trusted CAs).
    pub ca_location: Option<PathBuf>,
    /// `ssl.certificate.location`: the client's PEM certificate, for mutual TLS.
    pub certificate_location: Option<PathBuf>,
    /// `ssl.key.location`: the client certificate's PEM private key.
    pub key_location: Option<PathBuf>,
    /// `ssl.key.password`, if the private key is encrypted.
    pub key_password: Option<Secret>,
    /// `ssl.endpoint.identification.algorithm`: `https` (librdkafka's default: the broker's
    /// certificate must name the host connected to) or `none`.
    pub endpoint_identification: Option<String>,
}

impl Default for Security {
    fn default() -> Self {
        Self {
            protocol: "PLAINTEXT".into(),
            mechanism: "PLAIN".into(),
            username: None,
            password: None,
            ca_location: None,
            certificate_location: None,
            key_location: None,
            key_password: None,
            endpoint_identification: None,
        }
    }
}

impl Security {
    /// Whether the protocol authenticates with SASL.
    pub fn is_sasl(&self) -> bool {
        self.protocol.starts_with("SASL")
    }

    /// Whether the protocol encrypts with TLS.
    pub fn is_tls(&self) -> bool {
        self.protocol.ends_with("SSL")
    }

    /// Sets `security.protocol`, the SASL and the TLS properties on a librdkafka client
    /// configuration: the one place secrets are handed to librdkafka.
    pub fn apply(&self, c: &mut rdkafka::ClientConfig) {
        c.set("security.protocol", &self.protocol);
        if self.is_sasl() {
            c.set("sasl.mechanism", &self.mechanism);
            if let Some(u) = &self.username {
                c.set("sasl.username", u);
            }
            if let Some(p) = &self.password {
                c.set("sasl.password", p.expose());
            }
        }
        if self.is_tls() {
            let path = |p: &PathBuf| p.display().to_string();
            if let Some(ca) = &self.ca_location {
                c.set("ssl.ca.location", path(ca));
            }
            if let Some(cert) = &self.certificate_location {
                c.set("ssl.certificate.location", path(cert));
            }
            if let Some(key) = &self.key_location {
                c.set("ssl.key.location", path(key));
            }
            if let Some(p) = &self.key_password {
                c.set("ssl.key.password", p.expose());
            }
            if let Some(algorithm) = &self.endpoint_identification {
                c.set("ssl.endpoint.identification.algorithm", algorithm);
            }
        }
    }

    /// Who the brokers see, for error messages: `User:<name>` with SASL, the client certificate's
    /// subject with mutual TLS, otherwise `ANONYMOUS`.
    pub fn principal(&self) -> String {
        if self.is_sasl() {
            return format!("User:{} (SASL {})", self.username.as_deref().unwrap_or("?"), self.mechanism);
        }
        if self.is_tls()
            && let Some(cert) = &self.certificate_location
        {
            return match certificate_subject(cert) {
                Some(subject) => {
                    format!("{subject} (the subject of client certificate {})", cert.display())
                }
                None => format!("the subject of client certificate {}", cert.display()),
            };
        }
        format!("ANONYMOUS (no client credentials over {})", self.protocol)
    }

    /// Reads the security variables (see the table in [`crate::config`]).
    pub(super) fn from_lookup(
        service: &str,
        get: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut s = Self::default();
        if let Some(v) = get("KAFKA_SECURITY_PROTOCOL") {
            if !PROTOCOLS.contains(&v.as_str()) {
                return Err(invalid(
                    "KAFKA_SECURITY_PROTOCOL",
                    &v,
                    "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
                ));
            }
            s.protocol = v;
        }
        if let Some(v) = get("KAFKA_SASL_MECHANISM") {
            if !MECHANISMS.contains(&v.as_str()) {
                return Err(invalid("KAFKA_SASL_MECHANISM", &v, "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"));
            }
            s.mechanism = v;
        }
        if s.is_sasl() {
            s.username = Some(get("KAFKA_SASL_USERNAME").unwrap_or_else(|| service.to_owned()));
            s.password =
                Some(Secret::new(get("KAFKA_SASL_PASSWORD").ok_or_else(|| ConfigError::Missing {
                    variable: "KAFKA_SASL_PASSWORD".into(),
                    expected: format!(
                        "the password of principal `{}` (KAFKA_SECURITY_PROTOCOL is {})",
                        s.username.as_deref().unwrap_or(service),
                        s.protocol
                    ),
                })?));
        }
        let tls_vars = [
            "KAFKA_SSL_CA_LOCATION",
            "KAFKA_SSL_CERTIFICATE_LOCATION",
            "KAFKA_SSL_KEY_LOCATION",
            "KAFKA_SSL_KEY_PASSWORD",
            "KAFKA_SSL_ENDPOINT_IDENTIFICATION",
        ];
        if !s.is_tls() {
            // A TLS setting on a protocol without TLS is a mistake that would otherwise go unnoticed.
            if let Some(var) = tls_vars.iter().find(|v| get(v).is_some()) {
                return Err(invalid(
                    "KAFKA_SECURITY_PROTOCOL",
                    &s.protocol,
                    &format!("SSL or SASL_SSL, since {var} is set (TLS settings need a TLS protocol)"),
                ));
            }
            return Ok(s);
        }
        s.ca_location =
            get("KAFKA_SSL_CA_LOCATION").map(|p| pem_file("KAFKA_SSL_CA_LOCATION", &p)).transpose()?;
        s.certificate_location = get("KAFKA_SSL_CERTIFICATE_LOCATION")
            .map(|p| pem_file("KAFKA_SSL_CERTIFICATE_LOCATION", &p))
            .transpose()?;
        s.key_location =
            get("KAFKA_SSL_KEY_LOCATION").map(|p| pem_file("KAFKA_SSL_KEY_LOCATION", &p)).transpose()?;
        match (&s.certificate_location, &s.key_location) {
            (Some(_), None) => {
                return Err(missing_pair("KAFKA_SSL_KEY_LOCATION", "KAFKA_SSL_CERTIFICATE_LOCATION"));
            }
            (None, Some(_)) => {
                return Err(missing_pair("KAFKA_SSL_CERTIFICATE_LOCATION", "KAFKA_SSL_KEY_LOCATION"));
            }
            _ => {}
        }
        s.key_password = get("KAFKA_SSL_KEY_PASSWORD").map(Secret::new);
        if s.key_password.is_some() && s.key_location.is_none() {
            return Err(missing_pair("KAFKA_SSL_KEY_LOCATION", "KAFKA_SSL_KEY_PASSWORD"));
        }
        if let Some(v) = get("KAFKA_SSL_ENDPOINT_IDENTIFICATION") {
            if !matches!(v.as_str(), "https" | "none") {
                return Err(invalid(
                    "KAFKA_SSL_ENDPOINT_IDENTIFICATION",
                    &v,
                    "`https` (the default) or `none`",
                ));
            }
            s.endpoint_identification = Some(v);
        }
        Ok(s)
    }
}

/// How the framework's schema registry clients authenticate and check the registry's certificate.
/// Its `Debug` and `Serialize` output show the credentials as `***`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RegistrySecurity {
    /// `user:password` for HTTP basic authentication (`SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`,
    /// Confluent's name). User info in the registry URL itself takes precedence.
    pub basic_auth: Option<Secret>,
    /// A PEM file of the CA(s) to trust for an `https://` registry besides the system's
    /// (`SCHEMA_REGISTRY_CA_LOCATION`).
    pub ca_location: Option<PathBuf>,
}

impl RegistrySecurity {
    /// Basic authentication as `user` with `password`.
    pub fn basic_auth(user: &str, password: &str) -> Self {
        Self { basic_auth: Some(Secret::new(format!("{user}:{password}"))), ca_location: None }
    }

    /// Adds the `Authorization` header (marked sensitive) and the CA to an HTTP client builder.
    pub fn apply(&self, mut builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, ConfigError> {
        if let Some(user_info) = &self.basic_auth {
            let encoded = base64::engine::general_purpose::STANDARD.encode(user_info.expose());
            let mut value = reqwest::header::HeaderValue::try_from(format!("Basic {encoded}"))
                .map_err(|_| invalid("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "***", "user:password"))?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        if let Some(ca) = &self.ca_location {
            let bad = |reason: String| ConfigError::Unreadable {
                variable: "SCHEMA_REGISTRY_CA_LOCATION".into(),
                path: ca.clone(),
                reason,
            };
            let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(builder)
    }

    /// Reads `SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO` and `SCHEMA_REGISTRY_CA_LOCATION` from the
    /// process environment (for tools with a registry client of their own, such as the CLI).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|k: &str| std::env::var(k).ok())
    }

    /// Reads the registry variables from any lookup.
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = Self::default();
        if let Some(v) = get("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO") {
            if !v.contains(':') {
                // The value is a secret: it is not quoted.
                return Err(invalid("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "***", "user:password"));
            }
            r.basic_auth = Some(Secret::new(v));
        }
        r.ca_location = get("SCHEMA_REGISTRY_CA_LOCATION")
            .map(|p| pem_file("SCHEMA_REGISTRY_CA_LOCATION", &p))
            .transpose()?;
        Ok(r)
    }
}

fn missing_pair(variable: &str, because: &str) -> ConfigError {
    ConfigError::Missing {
        variable: variable.into(),
        expected: format!("it goes with {because} (mutual TLS needs the client certificate and its key)"),
    }
}

/// `path`, once it is known to be a readable PEM file.
fn pem_file(variable: &str, path: &str) -> Result<PathBuf, ConfigError> {
    let unreadable = |reason: String| ConfigError::Unreadable {
        variable: variable.into(),
        path: PathBuf::from(path),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    if !text.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(unreadable("not a PEM file (no `-----BEGIN …` line)".into()));
    }
    Ok(PathBuf::from(path))
}

/// The subject of the first certificate in a PEM file, as `CN=…,O=…`.
fn certificate_subject(path: &Path) -> Option<String> {
    let pem = std::fs::read(path).ok()?;
    let cert = openssl::x509::X509::from_pem(&pem).ok()?;
    let parts: Vec<String> = cert
        .subject_name()
        .entries()
        .filter_map(|e| {
            let key = e.object().nid().short_name().ok()?;
            let value = e.data().to_string().ok()?;
            Some(format!("{key}={value}"))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}
