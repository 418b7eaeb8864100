//! The cluster behind provisioning, as a trait: [`TopicAdmin`] is what [`super::Provisioner`] asks
//! of a cluster (metadata, topic configs, creating topics and partitions, altering configs).
//! [`KafkaAdmin`] answers through the Kafka admin API; a cluster in this process that answers no
//! admin requests (librdkafka's mock cluster, in `dev`) registers itself by its bootstrap servers
//! ([`register_in_process`]) and answers with an admin of its own. So a [`Config`] stays plain
//! configuration: [`admin_for`] picks the admin its bootstrap servers lead to.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic, OwnedResourceSpecifier,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::connect::Connection;
use super::error::{ProvisionError, from_code, from_kafka};
use super::plan::Observed;
use crate::config::Config;

/// What provisioning asks of a cluster. Each operation may take up to `timeout`.
pub(crate) trait TopicAdmin: fmt::Debug + Send + Sync {
    /// Brokers and topics, from fresh metadata of the whole cluster.
    fn metadata(&self, timeout: Duration) -> BoxFuture<'_, Result<ClusterState, ProvisionError>>;

    /// The configuration entries of each of `topics` (not empty).
    fn describe_configs<'a>(
        &'a self,
        topics: &'a [&'a str],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<HashMap<String, Vec<Entry>>, ProvisionError>>;

    /// Creates `topics` (not empty).
    fn create_topics<'a>(
        &'a self,
        topics: &'a [NewTopicSpec<'a>],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>>;

    /// Raises each topic's partition count to the number given (not empty).
    fn create_partitions<'a>(
        &'a self,
        additions: &'a [(&'a str, i32)],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>>;

    /// Sets each topic's whole dynamic configuration to the one given (not empty).
    fn alter_configs<'a>(
        &'a self,
        requests: &'a [(&'a str, BTreeMap<String, String>)],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>>;

    /// Deletes consumer group `group` (which no member may hold any more).
    fn delete_group<'a>(
        &'a self,
        group: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>>;
}

/// A topic to create.
#[derive(Debug)]
pub(crate) struct NewTopicSpec<'a> {
    /// Its full name.
    pub(crate) name: &'a str,
    /// Partition count.
    pub(crate) partitions: i32,
    /// Replication factor.
    pub(crate) replication: i16,
    /// Topic configuration.
    pub(crate) configs: &'a BTreeMap<String, String>,
}

/// One configuration entry as described by a broker.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) value: Option<String>,
    /// A topic-level override (as opposed to a broker setting or a default).
    pub(crate) topic_override: bool,
}

/// The cluster as metadata shows it.
#[derive(Debug)]
pub(crate) struct ClusterState {
    pub(crate) brokers: usize,
    pub(crate) topics: HashMap<String, TopicState>,
}

#[derive(Debug)]
pub(crate) struct TopicState {
    pub(crate) error: Option<RDKafkaErrorCode>,
    pub(crate) partitions: Vec<PartitionState>,
}

#[derive(Debug)]
pub(crate) struct PartitionState {
    pub(crate) id: i32,
    pub(crate) leader: i32,
    pub(crate) replicas: usize,
    pub(crate) error: Option<RDKafkaErrorCode>,
}

impl TopicState {
    /// The topic as planning compares it with its declaration.
    pub(crate) fn observed(&self, name: &str, entries: Vec<Entry>) -> Result<Observed, ProvisionError> {
        if let Some(code) = self.error.filter(|_| self.partitions.is_empty()) {
            return Err(from_code(format!("reading the metadata of {name}"), code));
        }
        // Replication is the number of replicas of partition 0 (every partition has the same
        // number unless someone reassigned by hand).
        let first = self.partitions.iter().find(|p| p.id == 0).or_else(|| self.partitions.first());
        Ok(Observed {
            partitions: i32::try_from(self.partitions.len()).unwrap_or(i32::MAX),
            replication: first.map_or(0, |p| i16::try_from(p.replicas).unwrap_or(i16::MAX)),
            configs: entries.into_iter().map(|e| (e.name, e.value)).collect(),
        })
    }
}

/// A cluster in this process that answers no admin requests, found by its bootstrap servers.
pub(crate) trait InProcessCluster: Send + Sync {
    /// Its admin, with `kafka`, an admin client connected to it, for what it does answer (metadata).
    fn admin(self: Arc<Self>, kafka: KafkaAdmin) -> Arc<dyn TopicAdmin>;
}

/// The in-process clusters, by bootstrap servers; each entry goes with its cluster.
static IN_PROCESS: Mutex<BTreeMap<String, Weak<dyn InProcessCluster>>> = Mutex::new(BTreeMap::new());

/// Makes `cluster` the admin of configurations whose bootstrap servers are `bootstrap`.
pub(crate) fn register_in_process(bootstrap: &str, cluster: Weak<dyn InProcessCluster>) {
    IN_PROCESS.lock().unwrap_or_else(PoisonError::into_inner).insert(bootstrap.to_owned(), cluster);
}

/// Forgets the cluster at `bootstrap` if it has stopped (called as it stops).
pub(crate) fn unregister_in_process(bootstrap: &str) {
    let mut clusters = IN_PROCESS.lock().unwrap_or_else(PoisonError::into_inner);
    if clusters.get(bootstrap).is_some_and(|c| c.strong_count() == 0) {
        clusters.remove(bootstrap);
    }
}

fn in_process(config: &Config) -> Option<Arc<dyn InProcessCluster>> {
    IN_PROCESS.lock().unwrap_or_else(PoisonError::into_inner).get(&config.bootstrap_servers)?.upgrade()
}

/// The admin of the cluster `config` points at, for `service`: the Kafka admin API, or the
/// in-process cluster's own.
pub(crate) fn admin_for(config: &Config, service: &str) -> Result<Arc<dyn TopicAdmin>, ProvisionError> {
    let kafka = KafkaAdmin::new(config, service)?;
    let principal = kafka.connection.principal().to_owned();
    let inner = match in_process(config) {
        Some(cluster) => cluster.admin(kafka),
        None => Arc::new(kafka),
    };
    Ok(Arc::new(Named { inner, principal }))
}

/// An admin whose authorization errors name the principal the brokers saw.
#[derive(Debug)]
struct Named {
    inner: Arc<dyn TopicAdmin>,
    principal: String,
}

impl TopicAdmin for Named {
    fn metadata(&self, timeout: Duration) -> BoxFuture<'_, Result<ClusterState, ProvisionError>> {
        Box::pin(async move { self.inner.metadata(timeout).await.map_err(|e| e.naming(&self.principal)) })
    }

    fn describe_configs<'a>(
        &'a self,
        topics: &'a [&'a str],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<HashMap<String, Vec<Entry>>, ProvisionError>> {
        Box::pin(async move {
            self.inner.describe_configs(topics, timeout).await.map_err(|e| e.naming(&self.principal))
        })
    }

    fn create_topics<'a>(
        &'a self,
        topics: &'a [NewTopicSpec<'a>],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            self.inner.create_topics(topics, timeout).await.map_err(|e| e.naming(&self.principal))
        })
    }

    fn create_partitions<'a>(
        &'a self,
        additions: &'a [(&'a str, i32)],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            self.inner.create_partitions(additions, timeout).await.map_err(|e| e.naming(&self.principal))
        })
    }

    fn alter_configs<'a>(
        &'a self,
        requests: &'a [(&'a str, BTreeMap<String, String>)],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            self.inner.alter_configs(requests, timeout).await.map_err(|e| e.naming(&self.principal))
        })
    }

    fn delete_group<'a>(
        &'a self,
        group: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            self.inner.delete_group(group, timeout).await.map_err(|e| e.naming(&self.principal))
        })
    }
}

/// The Kafka admin API.
#[derive(Debug)]
pub(crate) struct KafkaAdmin {
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// Metadata goes through this client, which fails fast on a refused authentication or TLS
    /// handshake (the admin client would wait out its timeout).
    connection: Arc<Connection>,
}

impl KafkaAdmin {
    /// An admin client for `service`, with `config`'s brokers and security.
    pub(crate) fn new(config: &Config, service: &str) -> Result<Self, ProvisionError> {
        let mut client = config.client_config(service);
        // The admin client is a producer to librdkafka, which would ask brokers to auto-create
        // topics it looks up. Provisioning must only ever create what was declared.
        client.set("allow.auto.create.topics", "false");
        let admin =
            client.create().map_err(|e: KafkaError| ProvisionError::Client { reason: e.to_string() })?;
        Ok(Self { admin: Arc::new(admin), connection: Arc::new(Connection::new(config, service)?) })
    }
}

/// Options of the operations that change the cluster.
fn change_options(timeout: Duration) -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout))
}

impl TopicAdmin for KafkaAdmin {
    /// (Asking for named topics would let a broker with `auto.create.topics.enable` create them.)
    fn metadata(&self, timeout: Duration) -> BoxFuture<'_, Result<ClusterState, ProvisionError>> {
        let connection = Arc::clone(&self.connection);
        let fetch = move || {
            let md = connection.metadata(timeout)?;
            let topics = md
                .topics()
                .iter()
                .map(|t| {
                    let partitions = t
                        .partitions()
                        .iter()
                        .map(|p| PartitionState {
                            id: p.id(),
                            leader: p.leader(),
                            replicas: p.replicas().len(),
                            error: p.error().map(RDKafkaErrorCode::from),
                        })
                        .collect();
                    let state = TopicState { error: t.error().map(RDKafkaErrorCode::from), partitions };
                    (t.name().to_owned(), state)
                })
                .collect();
            Ok(ClusterState { brokers: md.brokers().len(), topics })
        };
        Box::pin(async move {
            tokio::task::spawn_blocking(fetch).await.map_err(|e| ProvisionError::Broker {
                operation: "fetching cluster metadata".into(),
                reason: e.to_string(),
                retriable: true,
            })?
        })
    }

    fn describe_configs<'a>(
        &'a self,
        topics: &'a [&'a str],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<HashMap<String, Vec<Entry>>, ProvisionError>> {
        Box::pin(async move {
            let specifiers: Vec<ResourceSpecifier<'_>> =
                topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
            let opts = AdminOptions::new().request_timeout(Some(timeout));
            let results = self
                .admin
                .describe_configs(&specifiers, &opts)
                .await
                .map_err(|e| from_kafka("describing topic configs", e))?;
            let mut out = HashMap::new();
            for (topic, result) in topics.iter().zip(results) {
                let resource = result
                    .map_err(|code| from_code(format!("describing the configuration of {topic}"), code))?;
                let name = match resource.specifier {
                    OwnedResourceSpecifier::Topic(name) => name,
                    _ => (*topic).to_owned(),
                };
                // rdkafka does not surface per-resource errors here: an existing topic without
                // entries means the broker refused to describe it.
                if resource.entries.is_empty() {
                    return Err(ProvisionError::Broker {
                        operation: format!("describing the configuration of {name}"),
                        reason: "the broker returned no configuration entries: the principal may lack \
                                 DESCRIBE_CONFIGS on the topic, or the topic was deleted meanwhile"
                            .into(),
                        retriable: false,
                    });
                }
                let entries = resource
                    .entries
                    .into_iter()
                    .map(|e| Entry {
                        topic_override: e.source == ConfigSource::DynamicTopic && !e.is_read_only,
                        name: e.name,
                        value: e.value,
                    })
                    .collect();
                out.insert(name, entries);
            }
            Ok(out)
        })
    }

    fn create_topics<'a>(
        &'a self,
        topics: &'a [NewTopicSpec<'a>],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            let creates: Vec<NewTopic<'_>> = topics
                .iter()
                .map(|t| {
                    let topic = NewTopic::new(
                        t.name,
                        t.partitions,
                        TopicReplication::Fixed(i32::from(t.replication)),
                    );
                    t.configs.iter().fold(topic, |topic, (k, v)| topic.set(k, v))
                })
                .collect();
            let results = self
                .admin
                .create_topics(&creates, &change_options(timeout))
                .await
                .map_err(|e| from_kafka("creating topics", e))?;
            for result in results {
                result.map_err(|(topic, code)| match code {
                    RDKafkaErrorCode::TopicAlreadyExists => ProvisionError::Broker {
                        operation: format!("creating topic {topic}"),
                        reason: "it was created after the plan was made; plan again".into(),
                        retriable: true,
                    },
                    code => from_code(format!("creating topic {topic}"), code),
                })?;
            }
            Ok(())
        })
    }

    fn create_partitions<'a>(
        &'a self,
        additions: &'a [(&'a str, i32)],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            let additions: Vec<NewPartitions<'_>> = additions
                .iter()
                .map(|(topic, to)| NewPartitions::new(topic, usize::try_from(*to).unwrap_or(0)))
                .collect();
            let results = self
                .admin
                .create_partitions(&additions, &change_options(timeout))
                .await
                .map_err(|e| from_kafka("adding partitions", e))?;
            for result in results {
                result.map_err(|(topic, code)| from_code(format!("adding partitions to {topic}"), code))?;
            }
            Ok(())
        })
    }

    fn alter_configs<'a>(
        &'a self,
        requests: &'a [(&'a str, BTreeMap<String, String>)],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            let alter: Vec<AlterConfig<'_>> = requests
                .iter()
                .map(|(topic, full)| {
                    let request = AlterConfig::new(ResourceSpecifier::Topic(topic));
                    full.iter().fold(request, |c, (k, v)| c.set(k.as_str(), v.as_str()))
                })
                .collect();
            let results = self
                .admin
                .alter_configs(&alter, &change_options(timeout))
                .await
                .map_err(|e| from_kafka("altering topic configs", e))?;
            for result in results {
                result.map_err(|(resource, code)| {
                    let topic = match resource {
                        OwnedResourceSpecifier::Topic(topic) => topic,
                        other => format!("{other:?}"),
                    };
                    from_code(format!("altering the configuration of {topic}"), code)
                })?;
            }
            Ok(())
        })
    }

    fn delete_group<'a>(
        &'a self,
        group: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            let options = AdminOptions::new().request_timeout(Some(timeout));
            let operation = || format!("deleting consumer group {group}");
            let mut results =
                self.admin.delete_groups(&[group], &options).await.map_err(|e| from_kafka(operation(), e))?;
            match results.pop() {
                Some(Err((_, code))) => Err(from_code(operation(), code)),
                _ => Ok(()),
            }
        })
    }
}
