//! The first contact with the brokers, watched. librdkafka reports a refused SASL authentication or
//! a failed TLS handshake only through the client's error callback, while the request that needed
//! the connection just waits out its timeout. [`Connection::metadata`] fetches metadata in short
//! steps and serves that callback between them ([`Watch`]): a refusal ends the wait at once with
//! [`ProvisionError::Unauthenticated`], naming the principal and what was refused.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer as _, ProducerContext};

use super::error::{ProvisionError, from_kafka};
use crate::config::Config;

/// How long one metadata attempt waits before the callback is served again.
const STEP: Duration = Duration::from_millis(200);

/// A client context that keeps the first authentication or TLS failure librdkafka reports.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    failure: Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl Watch {
    fn failure(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        tracing::warn!(error = %error, reason, "Kafka client error");
        let refusal = match code {
            Some(
                code @ (RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::SSL),
            ) => Some(code),
            // A broker that rejects the client's certificate (or its absence, with mutual TLS)
            // answers with a TLS alert after the handshake: librdkafka reports a transport failure
            // (`Receive failed: …SSL routines::sslv3 alert bad certificate…`).
            Some(RDKafkaErrorCode::BrokerTransportFailure)
                if reason.contains("SSL routines") && reason.contains(" alert ") =>
            {
                Some(RDKafkaErrorCode::SSL)
            }
            _ => None,
        };
        if let Some(code) = refusal {
            let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            failure.get_or_insert_with(|| (code, reason.to_owned()));
        }
    }
}

impl ProducerContext for Watch {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// A client that only fetches metadata, watching for refusals.
pub(crate) struct Connection {
    client: BaseProducer<Watch>,
    principal: String,
    tls: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("principal", &self.principal).finish_non_exhaustive()
    }
}

impl Connection {
    /// A client with `config`'s brokers and security, for `service`.
    pub(crate) fn new(config: &Config, service: &str) -> Result<Self, ProvisionError> {
        let mut client = config.client_config(service);
        client.set("allow.auto.create.topics", "false");
        let client = client
            .create_with_context(Watch::default())
            .map_err(|e: KafkaError| ProvisionError::Client { reason: e.to_string() })?;
        Ok(Self { client, principal: config.security.principal(), tls: config.security.is_tls() })
    }

    /// Who the brokers see (for errors).
    pub(crate) fn principal(&self) -> &str {
        &self.principal
    }

    /// Metadata of the whole cluster (blocking), within `timeout`; a refused authentication or TLS
    /// handshake fails as soon as librdkafka reports it.
    pub(crate) fn metadata(&self, timeout: Duration) -> Result<Metadata, ProvisionError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.client.poll(Duration::ZERO);
            if let Some((code, reason)) = self.client.context().failure() {
                return Err(self.refused(code, &reason));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = self.client.client().fetch_metadata(None, left.min(STEP));
            match attempt {
                Ok(md) => return Ok(md),
                Err(e) if left > STEP && is_transient(&e) => {
                    // A failed connection fails the request at once; the reason, if it was a
                    // refusal, arrives as an event: wait for it a little.
                    self.client.poll(STEP);
                    continue;
                }
                Err(e) => {
                    self.client.poll(Duration::ZERO);
                    if let Some((code, reason)) = self.client.context().failure() {
                        return Err(self.refused(code, &reason));
                    }
                    return Err(from_kafka("fetching cluster metadata", e));
                }
            }
        }
    }

    fn refused(&self, code: RDKafkaErrorCode, reason: &str) -> ProvisionError {
        let hint = match code {
            RDKafkaErrorCode::SSL if self.tls => {
                "the TLS handshake failed: check KAFKA_SSL_CA_LOCATION (the CA that signed the brokers' \
                 certificates) and, for mutual TLS, KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION (a \
                 client certificate the brokers trust)"
            }
            _ => {
                "the brokers refused the credentials: check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and \
                 KAFKA_SASL_MECHANISM"
            }
        };
        ProvisionError::Unauthenticated {
            principal: self.principal.clone(),
            reason: format!("{reason} ({code:?}); {hint}"),
        }
    }
}

/// Errors that another attempt may get past (librdkafka reconnects with backoff).
fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::TimedOutQueue
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
        )
    )
}
