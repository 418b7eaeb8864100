//! A small Kafka protocol connection for the requests librdkafka lacks (client quotas): TCP or TLS,
//! `ApiVersions`, SASL (PLAIN, SCRAM-SHA-256/512) as the client configuration says, then one request
//! at a time. Every read is bounded: frames over [`MAX_FRAME`] are refused, every exchange has a
//! timeout.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, ApiVersionsResponse, DescribeAclsRequest,
    DescribeAclsResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use kafka_protocol::messages::{
    ApiVersionsRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ScramMechanism;
use super::error::AdminError;
use super::scram::ScramClient;

/// The largest answer read (quota answers are a few kilobytes).
pub(crate) const MAX_FRAME: usize = 8 * 1024 * 1024;

const CLIENT_ID: &str = "backbone-estate";

/// How to reach and authenticate to the brokers, read from librdkafka's properties (so whatever
/// the estate's `Config` sets for rdkafka applies here too).
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) bootstrap: String,
    tls: bool,
    sasl: Option<Sasl>,
    ca_location: Option<String>,
    certificate_location: Option<String>,
    key_location: Option<String>,
    verify_certificate: bool,
    verify_hostname: bool,
    pub(crate) timeout: Duration,
}

#[derive(Clone)]
struct Sasl {
    mechanism: String,
    username: String,
    password: String,
}

impl Settings {
    /// Reads the connection settings from librdkafka's properties.
    pub(crate) fn from_client_config(
        c: &rdkafka::ClientConfig,
        timeout: Duration,
    ) -> Result<Self, AdminError> {
        let get = |k: &str| c.get(k).map(str::to_owned);
        let bootstrap = get("bootstrap.servers")
            .filter(|b| !b.trim().is_empty())
            .ok_or_else(|| AdminError::Invalid("no bootstrap.servers".into()))?;
        let protocol = get("security.protocol").unwrap_or_else(|| "plaintext".into()).to_ascii_uppercase();
        let (tls, sasl) = match protocol.as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            other => return Err(AdminError::Unsupported(format!("security.protocol {other}"))),
        };
        let sasl = if sasl {
            let mechanism = get("sasl.mechanism").unwrap_or_else(|| "GSSAPI".into()).to_ascii_uppercase();
            if !matches!(mechanism.as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") {
                return Err(AdminError::Unsupported(format!(
                    "SASL mechanism {mechanism} for client quotas (PLAIN and SCRAM-SHA-256/512 are)"
                )));
            }
            Some(Sasl {
                mechanism,
                username: get("sasl.username").unwrap_or_default(),
                password: get("sasl.password").unwrap_or_default(),
            })
        } else {
            None
        };
        if get("ssl.keystore.location").is_some()
            || get("ssl.key.pem").is_some()
            || get("ssl.ca.pem").is_some()
        {
            return Err(AdminError::Unsupported(
                "TLS material given inline or as a keystore (give ssl.ca.location, ssl.certificate.location and \
                 ssl.key.location as PEM files)"
                    .into(),
            ));
        }
        Ok(Self {
            bootstrap,
            tls,
            sasl,
            ca_location: get("ssl.ca.location"),
            certificate_location: get("ssl.certificate.location"),
            key_location: get("ssl.key.location"),
            verify_certificate: get("enable.ssl.certificate.verification").is_none_or(|v| v != "false"),
            verify_hostname: get("ssl.endpoint.identification.algorithm").is_none_or(|v| v != "none"),
            timeout,
        })
    }

    /// The principal the connection authenticates as (`User:<name>`, or `User:ANONYMOUS`).
    pub(crate) fn principal(&self) -> String {
        match &self.sasl {
            Some(s) => format!("User:{}", s.username),
            None => "User:ANONYMOUS".into(),
        }
    }
}

/// A request this connection sends: the crate's `Request` trait needs its `broker` feature (request
/// decoding), which a client does not.
pub(crate) trait Request: Message + Encodable + HeaderVersion {
    /// The API key.
    const KEY: i16;
    /// The answer.
    type Response: Decodable + HeaderVersion;
}

macro_rules! requests {
    ($($request:ty => $response:ty = $key:expr),* $(,)?) => {
        $(impl Request for $request {
            const KEY: i16 = $key;
            type Response = $response;
        })*
    };
}

requests! {
    ApiVersionsRequest => ApiVersionsResponse = 18,
    SaslHandshakeRequest => SaslHandshakeResponse = 17,
    SaslAuthenticateRequest => SaslAuthenticateResponse = 36,
    DescribeAclsRequest => DescribeAclsResponse = 29,
    DescribeClientQuotasRequest => DescribeClientQuotasResponse = 48,
    AlterClientQuotasRequest => AlterClientQuotasResponse = 49,
    DescribeLogDirsRequest => DescribeLogDirsResponse = 35,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One authenticated connection to a broker.
pub(crate) struct Connection {
    io: Box<dyn Io>,
    correlation: i32,
    /// The broker's supported versions per API key.
    versions: HashMap<i16, (i16, i16)>,
    settings: Settings,
}

impl Connection {
    /// Connects to the first bootstrap server that answers, and authenticates.
    pub(crate) async fn open(settings: &Settings) -> Result<Self, AdminError> {
        let mut last = String::from("no server");
        for server in settings.bootstrap.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match Self::open_one(settings, server).await {
                Ok(c) => return Ok(c),
                Err(AdminError::Connect { detail, .. }) => last = format!("{server}: {detail}"),
                Err(e) => return Err(e),
            }
        }
        Err(AdminError::Connect { bootstrap: settings.bootstrap.clone(), detail: last })
    }

    async fn open_one(settings: &Settings, server: &str) -> Result<Self, AdminError> {
        let connect = |detail: String| AdminError::Connect { bootstrap: server.to_owned(), detail };
        let tcp = tokio::time::timeout(settings.timeout, TcpStream::connect(server))
            .await
            .map_err(|_| connect(format!("no connection within {:?}", settings.timeout)))?
            .map_err(|e| connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if settings.tls {
            let host = server.rsplit_once(':').map_or(server, |(h, _)| h).trim_matches(['[', ']']);
            let connector = tls_connector(settings)?;
            let tls = tokio::time::timeout(settings.timeout, connector.connect(host, tcp))
                .await
                .map_err(|_| connect(format!("no TLS handshake within {:?}", settings.timeout)))?
                .map_err(|e| AdminError::Authentication {
                    principal: settings.principal(),
                    mechanism: "TLS".into(),
                    detail: format!("the TLS handshake with {server} failed: {e}"),
                })?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut conn = Self { io, correlation: 0, versions: HashMap::new(), settings: settings.clone() };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let answer = conn.call_version(&request, 3).await?;
        if answer.error_code != 0 {
            return Err(conn.broker_error("ApiVersions", answer.error_code, None));
        }
        conn.versions = answer.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        if let Some(sasl) = settings.sasl.clone() {
            conn.authenticate(&sasl).await?;
        }
        Ok(conn)
    }

    /// The principal the connection authenticated as.
    pub(crate) fn principal(&self) -> String {
        self.settings.principal()
    }

    /// Sends `request` at the highest version both sides support, and returns the answer.
    pub(crate) async fn call<R: Request>(&mut self, request: &R) -> Result<R::Response, AdminError> {
        let (min, max) = self.versions.get(&R::KEY).copied().ok_or_else(|| {
            AdminError::Unsupported(format!("the broker does not support API key {}", R::KEY))
        })?;
        let version = max.min(R::VERSIONS.max);
        if version < min.max(R::VERSIONS.min) {
            return Err(AdminError::Unsupported(format!("no common version of API key {}", R::KEY)));
        }
        self.call_version(request, version).await
    }

    async fn call_version<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, AdminError> {
        let timeout = self.settings.timeout;
        let what = format!("API key {} v{version}", R::KEY);
        tokio::time::timeout(timeout, self.exchange(request, version))
            .await
            .map_err(|_| AdminError::Timeout { operation: what, after: timeout })?
    }

    async fn exchange<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response, AdminError> {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version)).map_err(encode_error)?;
        request.encode(&mut body, version).map_err(encode_error)?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(
            i32::try_from(body.len()).map_err(|_| AdminError::Invalid("a request too large".into()))?,
        );
        frame.extend_from_slice(&body);
        let io_error = |e: std::io::Error| AdminError::Connect {
            bootstrap: self.settings.bootstrap.clone(),
            detail: format!("the connection broke: {e}"),
        };
        self.io.write_all(&frame).await.map_err(io_error)?;
        self.io.flush().await.map_err(io_error)?;
        let mut size = [0u8; 4];
        self.io.read_exact(&mut size).await.map_err(io_error)?;
        let size = i32::from_be_bytes(size);
        let size = usize::try_from(size).ok().filter(|s| *s <= MAX_FRAME).ok_or_else(|| {
            AdminError::Protocol(format!("an answer of {size} bytes (at most {MAX_FRAME})"))
        })?;
        let mut answer = vec![0u8; size];
        self.io.read_exact(&mut answer).await.map_err(io_error)?;
        let mut answer = Bytes::from(answer);
        let header = ResponseHeader::decode(&mut answer, R::Response::header_version(version))
            .map_err(decode_error)?;
        if header.correlation_id != self.correlation {
            return Err(AdminError::Protocol(format!(
                "an answer to request {} where {} was expected",
                header.correlation_id, self.correlation
            )));
        }
        let response = R::Response::decode(&mut answer, version).map_err(decode_error)?;
        if answer.has_remaining() {
            tracing::debug!(left = answer.remaining(), "bytes left after an answer");
        }
        Ok(response)
    }

    async fn authenticate(&mut self, sasl: &Sasl) -> Result<(), AdminError> {
        let refused = |detail: String| AdminError::Authentication {
            principal: format!("User:{}", sasl.username),
            mechanism: sasl.mechanism.clone(),
            detail,
        };
        let handshake =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(sasl.mechanism.clone()));
        let answer = self.call(&handshake).await?;
        if answer.error_code != 0 {
            let enabled: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(refused(format!(
                "the broker does not enable {} (it enables {enabled:?})",
                sasl.mechanism
            )));
        }
        match sasl.mechanism.as_str() {
            "PLAIN" => {
                let token = format!("\0{}\0{}", sasl.username, sasl.password).into_bytes();
                let answer = self
                    .call(&SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)))
                    .await?;
                if answer.error_code != 0 {
                    return Err(refused(answer.error_message.map(|m| m.to_string()).unwrap_or_default()));
                }
            }
            mechanism => {
                let mechanism = if mechanism == "SCRAM-SHA-256" {
                    ScramMechanism::Sha256
                } else {
                    ScramMechanism::Sha512
                };
                let mut scram = ScramClient::new(mechanism, &sasl.username, &sasl.password);
                let first = scram.client_first();
                let answer = self
                    .call(&SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(first)))
                    .await?;
                if answer.error_code != 0 {
                    return Err(refused(answer.error_message.map(|m| m.to_string()).unwrap_or_default()));
                }
                let last = scram.client_final(&answer.auth_bytes).map_err(refused)?;
                let answer =
                    self.call(&SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(last))).await?;
                if answer.error_code != 0 {
                    return Err(refused(answer.error_message.map(|m| m.to_string()).unwrap_or_default()));
                }
                scram.verify_server_final(&answer.auth_bytes).map_err(refused)?;
            }
        }
        Ok(())
    }

    /// The error for Kafka error `code` answered to `operation`.
    pub(crate) fn broker_error(&self, operation: &str, code: i16, message: Option<&StrBytes>) -> AdminError {
        let error = kafka_protocol::ResponseError::try_from_code(code);
        let name = error.map_or_else(|| code.to_string(), |e| screaming(&format!("{e:?}")));
        let message = message
            .map(|m| m.to_string())
            .unwrap_or_else(|| error.map(|e| e.to_string()).unwrap_or_default());
        AdminError::from_code(
            &self.principal(),
            operation,
            &name,
            &message,
            error.is_some_and(|e| e.is_retriable()),
        )
    }
}

/// `ClusterAuthorizationFailed` as Kafka writes it: `CLUSTER_AUTHORIZATION_FAILED`.
fn screaming(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn encode_error(e: impl std::fmt::Display) -> AdminError {
    AdminError::Invalid(format!("encoding a request: {e}"))
}

fn decode_error(e: impl std::fmt::Display) -> AdminError {
    AdminError::Protocol(format!("decoding an answer: {e}"))
}

fn tls_connector(s: &Settings) -> Result<tokio_native_tls::TlsConnector, AdminError> {
    let read = |what: &str, path: &str| {
        std::fs::read(path).map_err(|e| AdminError::Invalid(format!("reading the {what} {path}: {e}")))
    };
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(ca) = &s.ca_location {
        let pem = read("CA file", ca)?;
        let cert = native_tls::Certificate::from_pem(&pem)
            .map_err(|e| AdminError::Invalid(format!("the CA file {ca}: {e}")))?;
        builder.add_root_certificate(cert);
    }
    match (&s.certificate_location, &s.key_location) {
        (Some(cert), Some(key)) => {
            let identity = native_tls::Identity::from_pkcs8(
                &read("client certificate", cert)?,
                &read("client key", key)?,
            )
            .map_err(|e| AdminError::Invalid(format!("the client certificate {cert} and key {key}: {e}")))?;
            builder.identity(identity);
        }
        (None, None) => {}
        _ => {
            return Err(AdminError::Invalid("a client certificate needs both its file and its key's".into()));
        }
    }
    builder
        .danger_accept_invalid_certs(!s.verify_certificate)
        .danger_accept_invalid_hostnames(!s.verify_hostname);
    let connector = builder.build().map_err(|e| AdminError::Invalid(format!("a TLS configuration: {e}")))?;
    Ok(tokio_native_tls::TlsConnector::from(connector))
}

#[cfg(test)]
mod tests_with_a_server;

#[cfg(test)]
mod tests {
    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(super::screaming("ClusterAuthorizationFailed"), "CLUSTER_AUTHORIZATION_FAILED");
    }
}
