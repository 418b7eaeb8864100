//! Development mode without a broker: Kafka in the process, from librdkafka's mock cluster, for
//! demos (`cargo run -p estate`) and quick local runs that should need nothing but Rust.
//!
//! ```no_run
//! use backbone::{Service, dev::MockKafka, topic::TopicSpec};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let kafka = MockKafka::start(1)?;
//! let config = kafka.config(); // bootstrap servers, development profile, topics made through the mock
//! let created = TopicSpec::public("orders", "order-created", 1).partitions(3).build()?;
//! let orders = Service::new("orders").owns(&created).spec()?;
//! let running = orders.start(&config).await?; // provisions `created` in the mock cluster
//! # Ok(()) }
//! ```
//!
//! [`MockKafka`] starts the mock cluster and hands out a [`Config`] with its bootstrap servers,
//! which lead provisioning ([`crate::provision::Provisioner`], and so [`crate::ServiceSpec::start`])
//! to it while it runs: topics are then created through the mock cluster's own API,
//! because the mock cluster answers no admin requests (`CreateTopics`, `DescribeConfigs` and
//! `AlterConfigs` are not among the APIs it serves). Publishers, consumers (groups, commits,
//! cooperative rebalances) and idempotent and transactional producers work as against brokers.
//! Schemas need a registry too: `backbone-devregistry` serves one in the process.
//!
//! # What it is not
//!
//! The mock cluster is **not** a replacement for real brokers, and backbone's own tests run against
//! real Kafka. It keeps data in memory (about 5 MiB per partition, older data pruned silently), does
//! no compaction or retention (topic configs are recorded for provisioning's plans, not applied), no
//! SASL, ACLs or quotas, delivers aborted transactional records to `read_committed` consumers, and a
//! waiting fetch does not wake on new data (end-to-end latency is about `fetch.wait.max.ms`, 500 ms
//! by default). Partitions cannot be added to a topic once created.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::mocking::MockCluster;

use crate::config::{Config, Profile};
use crate::provision::{
    ClusterState, Entry, InProcessCluster, KafkaAdmin, NewTopicSpec, ProvisionError, TopicAdmin,
    register_in_process, unregister_in_process,
};
use crate::topic::TopicSpec;

/// librdkafka's mock cluster, running in this process: a handle that is cheap to clone, `Send` and
/// `Sync` (the cluster itself lives on a thread of its own), and stops the cluster when the last
/// clone is dropped.
#[derive(Clone)]
pub struct MockKafka {
    inner: Arc<Inner>,
}

struct Inner {
    bootstrap: String,
    brokers: i32,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The topics created through this handle, with the configs provisioning declared for them.
    topics: Mutex<HashMap<String, BTreeMap<String, String>>>,
}

/// librdkafka's mock cluster, as [`MockKafka::with_cluster`] lends it.
pub type RawMockCluster = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

/// What the cluster's thread is asked to do: run a function with the cluster
/// ([`MockKafka::with_cluster`]).
type Command = Box<dyn FnOnce(&RawMockCluster) + Send>;

/// The mock cluster refused or failed an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    /// The mock cluster could not be started.
    #[error("could not start librdkafka's mock cluster: {reason}")]
    Start {
        /// Why.
        reason: String,
    },
    /// The topic exists already.
    #[error("topic `{topic}` exists already in the mock cluster")]
    TopicExists {
        /// The topic.
        topic: String,
    },
    /// A topic could not be created.
    #[error("the mock cluster could not create topic `{topic}`: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// The mock cluster has stopped.
    #[error("the mock cluster has stopped")]
    Stopped,
}

impl MockError {
    /// Never: the mock cluster's refusals do not go away by themselves.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

impl MockKafka {
    /// Starts a mock cluster of `brokers` brokers on loopback ports.
    pub fn start(brokers: i32) -> Result<Self, MockError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (commands, inbox) = mpsc::channel::<Command>();
        let thread = std::thread::Builder::new()
            .name("backbone-mock-kafka".into())
            .spawn(move || {
                // The cluster is not `Send`: it lives and dies on this thread.
                let cluster = match MockCluster::new(brokers) {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Until every handle is gone.
                while let Ok(command) = inbox.recv() {
                    command(&cluster);
                }
            })
            .map_err(|e| MockError::Start { reason: e.to_string() })?;
        let bootstrap = match ready_rx.recv() {
            Ok(Ok(bootstrap)) => bootstrap,
            Ok(Err(reason)) => return Err(MockError::Start { reason }),
            Err(_) => return Err(MockError::Start { reason: "its thread ended while starting".into() }),
        };
        tracing::info!(%bootstrap, brokers, "mock Kafka cluster started (development only)");
        let inner = Arc::new(Inner {
            bootstrap,
            brokers,
            commands: Mutex::new(Some(commands)),
            thread: Mutex::new(Some(thread)),
            topics: Mutex::new(HashMap::new()),
        });
        // Provisioning for a configuration with these bootstrap servers goes through this cluster.
        let weak = Arc::downgrade(&inner);
        register_in_process(&inner.bootstrap, weak);
        Ok(Self { inner })
    }

    /// Starts a mock cluster of `brokers` brokers with `topics` created as the development profile
    /// provisions them (replication 1): for demos whose topics exist before any service starts, and
    /// for plain rdkafka clients pointed at [`bootstrap_servers`](Self::bootstrap_servers).
    pub fn with_topics(brokers: i32, topics: &[TopicSpec]) -> Result<Self, MockError> {
        let kafka = Self::start(brokers)?;
        for topic in topics {
            kafka.create(topic, Profile::Development)?;
        }
        Ok(kafka)
    }

    /// The cluster's `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.inner.bootstrap
    }

    /// The number of brokers.
    pub fn brokers(&self) -> i32 {
        self.inner.brokers
    }

    /// A configuration for this cluster: [`Config::default`] with its bootstrap servers (which lead
    /// provisioning here while the cluster runs, so topics are created here) and the development
    /// profile (replication 1, so topics fit a one-broker cluster). Set
    /// [`schema_registry_url`](Config::schema_registry_url) for services with Avro events. The
    /// configuration is plain data: keep this handle (or a clone) for as long as the cluster is used.
    pub fn config(&self) -> Config {
        Config {
            bootstrap_servers: self.inner.bootstrap.clone(),
            profile: Profile::Development,
            ..Config::default()
        }
    }

    /// Creates `topic` as provisioning would under `profile`: its partitions, the profile's
    /// replication, its configs recorded. For topics no service provisions (or before services
    /// start); a topic that exists already is left as it is.
    pub fn create(&self, topic: &TopicSpec, profile: Profile) -> Result<(), MockError> {
        let configs: BTreeMap<String, String> =
            topic.configs(profile).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let replication = i32::from(topic.effective_replication(profile));
        match self.create_topic(topic.name(), topic.partitions(), replication, configs.clone()) {
            Err(MockError::TopicExists { .. }) => {
                let mut topics = self.inner.topics.lock().unwrap_or_else(PoisonError::into_inner);
                topics.entry(topic.name().to_owned()).or_insert(configs);
                Ok(())
            }
            other => other,
        }
    }

    /// Creates a topic with `partitions` partitions and `replication` replicas, recording `configs` as
    /// its configuration (the mock cluster does not apply them). Refused, as a broker would, with more
    /// replicas than brokers (the mock cluster itself would quietly make fewer) and for a topic that
    /// exists ([`MockError::TopicExists`]). Blocks briefly while the mock cluster's thread creates it.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<(), MockError> {
        let refuse = |reason: String| Err(MockError::CreateTopic { topic: name.to_owned(), reason });
        if !(1..=self.inner.brokers).contains(&replication) {
            return refuse(format!("replication {replication} with {} broker(s)", self.inner.brokers));
        }
        if partitions < 1 {
            return refuse(format!("{partitions} partitions"));
        }
        let topic = name.to_owned();
        self.with_cluster(move |cluster| cluster.create_topic(&topic, partitions, replication))?.map_err(
            |e| {
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists) {
                    MockError::TopicExists { topic: name.to_owned() }
                } else {
                    MockError::CreateTopic { topic: name.to_owned(), reason: e.to_string() }
                }
            },
        )?;
        self.inner.topics.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_owned(), configs);
        Ok(())
    }

    /// Runs `f` with librdkafka's mock cluster, on the thread it lives on, and returns what `f`
    /// returns: fault injection (`broker_down`, `coordinator`, `request_errors`, …) for tests of
    /// what a client does when the cluster misbehaves.
    pub fn with_cluster<R: Send + 'static>(
        &self,
        f: impl FnOnce(&RawMockCluster) -> R + Send + 'static,
    ) -> Result<R, MockError> {
        let (done, result) = mpsc::channel();
        let command: Command = Box::new(move |cluster| {
            let _ = done.send(f(cluster));
        });
        {
            let commands = self.inner.commands.lock().unwrap_or_else(PoisonError::into_inner);
            commands.as_ref().ok_or(MockError::Stopped)?.send(command).map_err(|_| MockError::Stopped)?;
        }
        result.recv().map_err(|_| MockError::Stopped)
    }

    /// The configuration recorded for `topic` (by [`create_topic`](Self::create_topic) or
    /// provisioning), or `None` for a topic this handle did not create.
    pub fn topic_configs(&self, topic: &str) -> Option<BTreeMap<String, String>> {
        self.inner.topics.lock().unwrap_or_else(PoisonError::into_inner).get(topic).cloned()
    }

    /// Records `configs` on top of `topic`'s configuration (provisioning's "alter configs").
    fn set_topic_configs(&self, topic: &str, configs: &BTreeMap<String, String>) {
        let mut topics = self.inner.topics.lock().unwrap_or_else(PoisonError::into_inner);
        topics
            .entry(topic.to_owned())
            .or_default()
            .extend(configs.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

impl fmt::Debug for MockKafka {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockKafka")
            .field("bootstrap_servers", &self.inner.bootstrap)
            .field("brokers", &self.inner.brokers)
            .finish_non_exhaustive()
    }
}

impl InProcessCluster for Inner {
    fn admin(self: Arc<Self>, kafka: KafkaAdmin) -> Arc<dyn TopicAdmin> {
        Arc::new(MockAdmin { kafka, mock: MockKafka { inner: self } })
    }
}

/// Provisioning's admin of the mock cluster: metadata from the cluster itself (it answers that),
/// the rest through the handle, since the mock cluster answers no `CreateTopics`,
/// `DescribeConfigs` nor `AlterConfigs`.
#[derive(Debug)]
struct MockAdmin {
    kafka: KafkaAdmin,
    mock: MockKafka,
}

impl TopicAdmin for MockAdmin {
    fn metadata(&self, timeout: Duration) -> BoxFuture<'_, Result<ClusterState, ProvisionError>> {
        self.kafka.metadata(timeout)
    }

    fn describe_configs<'a>(
        &'a self,
        topics: &'a [&'a str],
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<HashMap<String, Vec<Entry>>, ProvisionError>> {
        // What provisioning recorded: the mock cluster keeps no configs and answers no
        // DescribeConfigs.
        let entries = |topic: &str| {
            let configs = self.mock.topic_configs(topic).unwrap_or_default();
            let entry = |(name, value)| Entry { name, value: Some(value), topic_override: true };
            configs.into_iter().map(entry).collect()
        };
        let described = topics.iter().map(|t| ((*t).to_owned(), entries(t))).collect();
        Box::pin(std::future::ready(Ok(described)))
    }

    fn create_topics<'a>(
        &'a self,
        topics: &'a [NewTopicSpec<'a>],
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        let created = topics.iter().try_for_each(|t| {
            let configs = t.configs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let created = self.mock.create_topic(t.name, t.partitions, i32::from(t.replication), configs);
            created.map_err(|e| from_mock(format!("creating topic {}", t.name), e))
        });
        Box::pin(std::future::ready(created))
    }

    fn create_partitions<'a>(
        &'a self,
        _additions: &'a [(&'a str, i32)],
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(std::future::ready(Err(ProvisionError::Invalid {
            operation: "adding partitions".into(),
            reason: "librdkafka's mock cluster cannot add partitions to a topic".into(),
        })))
    }

    fn alter_configs<'a>(
        &'a self,
        requests: &'a [(&'a str, BTreeMap<String, String>)],
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        for (topic, full) in requests {
            self.mock.set_topic_configs(topic, full);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn delete_group<'a>(
        &'a self,
        _group: &'a str,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        // The mock cluster answers no DeleteGroups (its groups go with the process), and
        // librdkafka 2.12.1 aborts on dropping an admin client whose request it refused locally as
        // unsupported (`rd_kafka_q_destroy0: assert: rkq->rkq_refcnt > 0`): nothing to do.
        Box::pin(async { Ok(()) })
    }
}

/// A refusal of the mock cluster as provisioning reports it.
fn from_mock(operation: String, e: MockError) -> ProvisionError {
    match e {
        MockError::TopicExists { .. } => ProvisionError::Broker {
            operation,
            reason: "it was created after the plan was made; plan again".into(),
            retriable: true,
        },
        e => ProvisionError::Invalid { operation, reason: e.to_string() },
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        unregister_in_process(&self.bootstrap);
        // Closing the channel ends the thread, which drops (stops) the cluster.
        self.commands.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_created_in_the_mock_cluster_and_their_configs_recorded() {
        let topic = TopicSpec::private("svc", "state").compacted().partitions(3).build().unwrap();
        let kafka = MockKafka::with_topics(1, std::slice::from_ref(&topic)).unwrap();
        kafka.create(&topic, Profile::Development).unwrap(); // already there: left alone
        assert_eq!(kafka.topic_configs(topic.name()).unwrap()["cleanup.policy"], "compact");

        use rdkafka::consumer::Consumer as _;
        let client: rdkafka::consumer::BaseConsumer =
            kafka.config().client_config("svc").create().expect("client");
        let metadata = client.fetch_metadata(Some(topic.name()), std::time::Duration::from_secs(5));
        let metadata = metadata.expect("metadata");
        assert_eq!(metadata.topics()[0].partitions().len(), 3);

        let err = kafka.create_topic("too-many-replicas", 1, 3, BTreeMap::new()).unwrap_err();
        assert!(matches!(err, MockError::CreateTopic { .. }), "{err:?}");
        let err = kafka.create_topic(topic.name(), 3, 1, BTreeMap::new()).unwrap_err();
        assert_eq!(err, MockError::TopicExists { topic: topic.name().to_owned() });
    }
}
