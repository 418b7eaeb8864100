//! Testing your service against the real broker: a [`Probe`] watches a topic and answers "was this
//! event published, with this key?", decoding it the way a handler would.
//!
//! Pair it with `backbone-testkit`, which starts a real Kafka and schema registry for the test
//! binary (or uses `KAFKA_BOOTSTRAP_SERVERS` / `SCHEMA_REGISTRY_URL`):
//!
//! ```no_run
//! use std::time::Duration;
//! use backbone::{Outgoing, Service, TopicSpec, testing::{Probe, config}};
//!
//! # async fn demo(kafka_bootstrap: &str, registry_url: &str) -> Result<(), Box<dyn std::error::Error>> {
//! // In a test: let kafka = backbone_testkit::shared_kafka(); kafka.bootstrap_servers() …
//! let config = config(kafka_bootstrap, Some(registry_url));
//! let topic = TopicSpec::public("orders", "order-created", 1).partitions(3).build()?;
//! let running = Service::new("orders").owns(&topic).spec()?.start(&config).await?;
//!
//! let probe = Probe::new(&config, &topic).await?;       // sees what is published from now on
//! running.publisher().publish(&topic, Outgoing::new("OrderCreated", b"order-1", b"{}")).await?;
//! let event = probe.expect_key("order-1", Duration::from_secs(10)).await?;
//! // The topic is named for `OrderCreated`: the type header is left out, the name says it.
//! assert_eq!(event.event_type().as_deref(), Some("OrderCreated"));
//! # Ok(()) }
//! ```
//!
//! A probe reads `read_committed`, outside any consumer group (it assigns every partition itself),
//! so it never takes partitions from the service under test. The runnable example is
//! `framework/backbone/examples/testing.rs`; the sample services' tests use it too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::StreamConsumer;

use crate::config::{Config, Profile};
use crate::handler::{Decode, IncomingEvent};
use crate::reader::{self, AssignError, Isolation, Start};
use crate::schema::Registry;
use crate::topic::TopicSpec;

/// A configuration for tests: the development profile (replication 1, fits one broker) against
/// `bootstrap_servers`, with the schema registry at `registry_url` if given.
pub fn config(bootstrap_servers: &str, registry_url: Option<&str>) -> Config {
    let defaults = Config::default();
    Config {
        bootstrap_servers: bootstrap_servers.to_owned(),
        schema_registry_url: registry_url.map_or(defaults.schema_registry_url.clone(), str::to_owned),
        profile: Profile::Development,
        ..defaults
    }
}

/// Why a probe could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The consumer could not be created, or the topic's partitions not found.
    #[error("probe of `{topic}`: {reason}")]
    Client {
        /// The topic.
        topic: String,
        /// What went wrong.
        reason: String,
    },
    /// Nothing matching arrived in time.
    #[error("probe of `{topic}`: no event {what} within {waited:?} ({seen} other events seen and not taken)")]
    Timeout {
        /// The topic.
        topic: String,
        /// What was awaited.
        what: String,
        /// How long it waited.
        waited: Duration,
        /// Events read and not taken by any expectation.
        seen: usize,
    },
    /// The event arrived but did not decode as the asked type.
    #[error("probe of `{topic}`: event at {partition}:{offset} does not decode: {reason}")]
    Undecodable {
        /// The topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// The decoder's words.
        reason: String,
    },
}

impl ProbeError {
    /// Whether asking again may help (a timeout may, with a longer wait).
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }
}

/// Watches one topic for a test. See the [module docs](self).
pub struct Probe {
    consumer: Arc<StreamConsumer>,
    topic: String,
    registry: Option<Registry>,
    /// Events read but not yet matched, oldest first: a later expectation looks here first, so
    /// expecting `b` before `a` finds both whatever order they arrived in.
    unmatched: std::sync::Mutex<std::collections::VecDeque<IncomingEvent>>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl Probe {
    /// A probe that sees what is published to `topic` from now on: it starts at the current end of
    /// every partition.
    pub async fn new(config: &Config, topic: &TopicSpec) -> Result<Self, ProbeError> {
        Self::start(config, topic.name(), true).await
    }

    /// A probe that sees everything `topic` holds, from the beginning of every partition.
    pub async fn from_beginning(config: &Config, topic: &TopicSpec) -> Result<Self, ProbeError> {
        Self::start(config, topic.name(), false).await
    }

    async fn start(config: &Config, topic: &str, at_end: bool) -> Result<Self, ProbeError> {
        let client = |reason: String| ProbeError::Client { topic: topic.to_owned(), reason };
        let group = format!("backbone-probe-{}", uuid::Uuid::new_v4().simple());
        let consumer: StreamConsumer =
            reader::settings(config.client_config("backbone-probe"), group, Isolation::Committed, false)
                .create()
                .map_err(|e| client(e.to_string()))?;
        let registry = if config.schema_registry_url.is_empty() {
            None
        } else {
            Some(Registry::for_config(config).map_err(|e| client(e.to_string()))?)
        };
        let probe = Self {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
            registry,
            unmatched: std::sync::Mutex::new(std::collections::VecDeque::new()),
        };
        // Metadata and watermarks are blocking calls: off the async workers.
        let consumer = probe.consumer.clone();
        let name = topic.to_owned();
        let start = if at_end { Start::End } else { Start::Beginning };
        let assigned = tokio::task::spawn_blocking(move || {
            reader::assign_all(&*consumer, &name, start, Duration::from_secs(10))
        })
        .await
        .map_err(|e| client(e.to_string()))?;
        match assigned {
            Ok(()) => Ok(probe),
            Err(AssignError::Missing) => {
                Err(client("the topic does not exist (or has no partitions)".to_owned()))
            }
            Err(AssignError::Kafka(e)) => Err(client(e.to_string())),
        }
    }

    /// The topic watched.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next event, whatever it is, within `timeout`.
    pub async fn next(&self, timeout: Duration) -> Result<IncomingEvent, ProbeError> {
        self.expect("at all", timeout, |_| true).await
    }

    /// The first event (from here on) with key `key`, within `timeout`.
    pub async fn expect_key(
        &self,
        key: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<IncomingEvent, ProbeError> {
        let key = key.as_ref();
        let what = format!("with key {:?}", String::from_utf8_lossy(key));
        self.expect(&what, timeout, |e| e.key() == Some(key)).await
    }

    /// The first event (from here on) with key `key`, decoded as `T` the way a handler's
    /// `Event<T>` would (Avro through the registry, by the writer's schema id).
    pub async fn expect_event<T: Decode>(
        &self,
        key: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<T, ProbeError> {
        let event = self.expect_key(key, timeout).await?;
        self.decode(&event).await
    }

    /// Decodes `event`'s payload as `T` (fetching its writer schema first, if it is schema-framed).
    pub async fn decode<T: Decode>(&self, event: &IncomingEvent) -> Result<T, ProbeError> {
        let undecodable = |reason: String| ProbeError::Undecodable {
            topic: self.topic.clone(),
            partition: event.partition(),
            offset: event.offset(),
            reason,
        };
        let payload = event.payload().ok_or_else(|| undecodable("a tombstone (no payload)".to_owned()))?;
        if let Some(registry) = &self.registry
            && crate::schema::wire::split(payload).is_ok()
        {
            registry.prepare(payload).await.map_err(|e| undecodable(e.to_string()))?;
        }
        T::decode_with(payload, self.registry.as_ref()).map_err(|e| undecodable(e.to_string()))
    }

    /// The first event for which `matches` holds, within `timeout`; `what` names it in the error.
    /// Events read earlier that no expectation took are searched first (oldest first), so each
    /// event is returned at most once and expectations may come in any order.
    pub async fn expect(
        &self,
        what: &str,
        timeout: Duration,
        mut matches: impl FnMut(&IncomingEvent) -> bool,
    ) -> Result<IncomingEvent, ProbeError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        {
            let mut unmatched = self.unmatched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(at) = unmatched.iter().position(&mut matches) {
                return Ok(unmatched.remove(at).expect("position is in range"));
            }
        }
        loop {
            let message = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => message,
                Ok(Err(e)) => {
                    return Err(ProbeError::Client { topic: self.topic.clone(), reason: e.to_string() });
                }
                Err(_) => {
                    return Err(ProbeError::Timeout {
                        topic: self.topic.clone(),
                        what: what.to_owned(),
                        waited: started.elapsed(),
                        seen: self.unmatched.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len(),
                    });
                }
            };
            let event = IncomingEvent::from_message(&message);
            if matches(&event) {
                return Ok(event);
            }
            self.unmatched.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push_back(event);
        }
    }
}
