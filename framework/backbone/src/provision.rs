//! Topic provisioning: compare declared topics with the cluster ([`Provisioner::plan`]), then make
//! the cluster match ([`Provisioner::apply`]), like `terraform plan` and `apply`.
//!
//! ```no_run
//! use backbone::{Config, provision::Provisioner, topic::TopicSpec};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let created = TopicSpec::public("orders", "order-created", 1).partitions(6).build()?;
//! let provisioner = Provisioner::new(&Config::from_env("orders")?, "orders")?;
//! let plan = provisioner.plan(&[created]).await?;
//! print!("{plan}"); // `+ create orders.public.order-created-v1 (partitions 6, replication 3) …`
//! let report = provisioner.apply(&plan).await?;
//! print!("{report}");
//! # Ok(()) }
//! ```
//!
//! # What is safe, and what is refused
//!
//! | the cluster has | plan | apply |
//! |---|---|---|
//! | no such topic | [`Action::Create`] | creates it with the declared partitions, the profile's replication and [`TopicSpec::configs`] |
//! | a managed config differs (drift) | [`Action::AlterConfigs`] | sets it back to the declared value |
//! | fewer partitions than declared | [`Action::Refuse`], or [`Action::AddPartitions`] with [`Provisioner::allow_partition_increase`] | adds partitions (when allowed) |
//! | more partitions than declared | [`Action::Refuse`]: Kafka cannot remove partitions | |
//! | another replication factor | [`Action::Refuse`]: that is a partition reassignment | |
//! | fewer brokers than the replication factor | [`Action::Refuse`]: `BACKBONE_PROFILE=development` fits one broker | |
//!
//! Adding partitions is refused by default because the default partitioner maps a key to
//! `hash(key) % partitions`: with more partitions, a key's new events land on another partition than
//! its old ones, and per-key order is lost for consumers that are still behind.
//!
//! A plan with any refusal is not applied at all: [`Provisioner::apply`] returns
//! [`ProvisionError::Refused`] before it touches the cluster, so a half-applied estate never
//! results from a declaration that needs a human decision.
//!
//! # Development without a broker
//!
//! With [`Config::mock_cluster`] set (by [`crate::dev::MockKafka::config`]), the same plans are made
//! and applied through librdkafka's mock cluster, which answers no admin requests: topics are
//! created with its own API, and configs are recorded by the [`crate::dev::MockKafka`] handle (the
//! mock cluster does not apply them), so planning again shows the topics up to date. Adding
//! partitions is refused there.
//!
//! Only the keys of [`TopicSpec::configs`] are managed. Other topic configs set by operators
//! (`max.message.bytes`, say) are left as they are: rdkafka's `AlterConfigs` replaces a topic's
//! whole dynamic configuration, so apply sends every current topic-level override along with the
//! managed keys.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic, OwnedResourceSpecifier,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::{Config, Profile};
use crate::topic::TopicSpec;

/// How long one admin operation, and waiting for its effect, may take by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates and reconciles declared topics through the Kafka admin API.
///
/// Topics are made durable under the configuration's [`Profile`]: in
/// [`Production`](Profile::Production) as declared, in [`Development`](Profile::Development) with
/// replication 1 for a single local broker.
#[derive(Debug)]
pub struct Provisioner {
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// The in-process mock cluster to create topics through instead of the admin API.
    mock: Option<crate::dev::MockKafka>,
    profile: Profile,
    allow_partition_increase: bool,
    timeout: Duration,
}

impl Provisioner {
    /// An admin client for `service`, with `config`'s brokers, security and profile.
    pub fn new(config: &Config, service: &str) -> Result<Self, ProvisionError> {
        let mut client = config.client_config(service);
        // The admin client is a producer to librdkafka, which would ask brokers to auto-create
        // topics it looks up. Provisioning must only ever create what was declared.
        client.set("allow.auto.create.topics", "false");
        let admin =
            client.create().map_err(|e: KafkaError| ProvisionError::Client { reason: e.to_string() })?;
        Ok(Self {
            admin: Arc::new(admin),
            mock: config.mock_cluster.clone(),
            profile: config.profile,
            allow_partition_increase: false,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Plans [`Action::AddPartitions`] instead of refusing when more partitions are declared than a
    /// topic has. Only for topics whose consumers do not rely on per-key order across the change.
    #[must_use]
    pub fn allow_partition_increase(mut self, allow: bool) -> Self {
        self.allow_partition_increase = allow;
        self
    }

    /// How long each admin operation, and waiting until its effect is visible, may take
    /// (default 30 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The durability profile topics are planned under.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Compares `topics` with the cluster and says what [`apply`](Self::apply) would do, topic by
    /// topic, in declaration order. Changes nothing.
    ///
    /// A topic declared twice with the same settings is planned once; with different settings the
    /// plan fails with [`ProvisionError::Conflicting`].
    pub async fn plan(&self, topics: &[TopicSpec]) -> Result<Plan, ProvisionError> {
        let mut declared: Vec<&TopicSpec> = Vec::new();
        for topic in topics {
            match declared.iter().find(|t| t.name() == topic.name()) {
                Some(other) if *other != topic => {
                    return Err(ProvisionError::Conflicting { topic: topic.name().to_owned() });
                }
                Some(_) => {}
                None => declared.push(topic),
            }
        }
        let cluster = self.metadata().await?;
        let existing: Vec<&str> =
            declared.iter().map(|t| t.name()).filter(|n| cluster.topics.contains_key(*n)).collect();
        let mut configs = self.describe(&existing).await?;
        let mut actions = Vec::new();
        for spec in declared {
            let observed = match cluster.topics.get(spec.name()) {
                Some(meta) => {
                    Some(meta.observed(spec.name(), configs.remove(spec.name()).unwrap_or_default())?)
                }
                None => None,
            };
            actions.extend(decide(
                spec,
                self.profile,
                cluster.brokers,
                observed.as_ref(),
                self.allow_partition_increase,
            ));
        }
        Ok(Plan { actions })
    }

    /// Carries `plan` out: creates missing topics (and waits until they have leaders), adds
    /// partitions, and sets drifted configs back, then waits until the cluster shows the result.
    ///
    /// If the plan has any refusal, nothing is applied and the error is
    /// [`ProvisionError::Refused`]. Applying the same declarations again is a no-op.
    ///
    /// The admin API is not transactional: if one topic fails, others may have been changed; plan
    /// again to see where things stand.
    pub async fn apply(&self, plan: &Plan) -> Result<ApplyReport, ProvisionError> {
        let refusals: Vec<Refusal> = plan.refusals().collect();
        if !refusals.is_empty() {
            return Err(ProvisionError::Refused { refusals });
        }
        let opts =
            AdminOptions::new().operation_timeout(Some(self.timeout)).request_timeout(Some(self.timeout));
        let mut done = Vec::new();
        let mut unchanged = Vec::new();
        let mut expected: BTreeMap<&str, Expected<'_>> = BTreeMap::new();

        // 1. Create missing topics, with their configuration.
        let creates: Vec<NewTopic<'_>> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.action {
                Action::Create { partitions, replication, configs } => {
                    let topic = NewTopic::new(
                        &a.topic,
                        *partitions,
                        TopicReplication::Fixed(i32::from(*replication)),
                    );
                    Some(configs.iter().fold(topic, |t, (k, v)| t.set(k, v)))
                }
                _ => None,
            })
            .collect();
        if let Some(mock) = &self.mock {
            for a in &plan.actions {
                if let Action::Create { partitions, replication, configs } = &a.action {
                    let created = mock.create_topic(
                        &a.topic,
                        *partitions,
                        i32::from(*replication),
                        configs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    );
                    created.map_err(|e| from_mock(format!("creating topic {}", a.topic), e))?;
                }
            }
        } else if !creates.is_empty() {
            let results = self
                .admin
                .create_topics(&creates, &opts)
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
        }
        for a in &plan.actions {
            if let Action::Create { partitions, configs, .. } = &a.action {
                expected.insert(
                    &a.topic,
                    Expected { partitions: *partitions, configs: configs.iter().collect() },
                );
                done.push(a.clone());
            }
        }

        // 2. Add partitions (planned only when allowed).
        let additions: Vec<NewPartitions<'_>> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.action {
                Action::AddPartitions { to, .. } => {
                    Some(NewPartitions::new(&a.topic, usize::try_from(*to).unwrap_or(0)))
                }
                _ => None,
            })
            .collect();
        if !additions.is_empty() && self.mock.is_some() {
            return Err(ProvisionError::Invalid {
                operation: "adding partitions".into(),
                reason: "librdkafka's mock cluster cannot add partitions to a topic".into(),
            });
        }
        if !additions.is_empty() {
            let results = self
                .admin
                .create_partitions(&additions, &opts)
                .await
                .map_err(|e| from_kafka("adding partitions", e))?;
            for result in results {
                result.map_err(|(topic, code)| from_code(format!("adding partitions to {topic}"), code))?;
            }
        }
        for a in &plan.actions {
            if let Action::AddPartitions { to, .. } = &a.action {
                expected.entry(&a.topic).or_default().partitions = *to;
                done.push(a.clone());
            }
        }

        // 3. Set drifted configs back. AlterConfigs is not incremental: every topic-level override
        // not in the request is reset, so the request carries all current ones (described afresh,
        // not as planned) with the managed keys on top.
        let alters: Vec<(&str, &[ConfigChange])> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.action {
                Action::AlterConfigs { changes } => Some((a.topic.as_str(), changes.as_slice())),
                _ => None,
            })
            .collect();
        if !alters.is_empty() {
            let names: Vec<&str> = alters.iter().map(|(t, _)| *t).collect();
            let mut current = self.describe(&names).await?;
            let mut requests: Vec<(&str, BTreeMap<String, String>)> = Vec::new();
            for (topic, changes) in &alters {
                let entries = current.remove(*topic).unwrap_or_default();
                let mut full = BTreeMap::new();
                for e in entries.iter().filter(|e| e.topic_override) {
                    let value = e.value.clone().ok_or_else(|| ProvisionError::Invalid {
                        operation: format!("altering the configuration of {topic}"),
                        reason: format!(
                            "its override of `{}` is sensitive and cannot be read back, so it would be reset; \
                             set the managed keys by hand",
                            e.name
                        ),
                    })?;
                    full.insert(e.name.clone(), value);
                }
                let mut applied = Vec::new();
                for change in *changes {
                    let now = entries.iter().find(|e| e.name == change.key).and_then(|e| e.value.clone());
                    if !now.as_deref().is_some_and(|now| same_value(&change.key, now, &change.desired)) {
                        applied.push(ConfigChange {
                            key: change.key.clone(),
                            current: now,
                            desired: change.desired.clone(),
                        });
                    }
                    full.insert(change.key.clone(), change.desired.clone());
                }
                let wanted = expected.entry(topic).or_default();
                wanted.configs.extend(changes.iter().map(|c| (&c.key, &c.desired)));
                if applied.is_empty() {
                    unchanged.push((*topic).to_owned());
                } else {
                    done.push(TopicAction {
                        topic: (*topic).to_owned(),
                        action: Action::AlterConfigs { changes: applied },
                    });
                    requests.push((topic, full));
                }
            }
            let alter: Vec<AlterConfig<'_>> = requests
                .iter()
                .map(|(topic, full)| {
                    let request = AlterConfig::new(ResourceSpecifier::Topic(topic));
                    full.iter().fold(request, |c, (k, v)| c.set(k.as_str(), v.as_str()))
                })
                .collect();
            if let Some(mock) = &self.mock {
                for (topic, full) in &requests {
                    mock.set_topic_configs(topic, full);
                }
            } else if !alter.is_empty() {
                let results = self
                    .admin
                    .alter_configs(&alter, &opts)
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
            }
        }
        for a in &plan.actions {
            if a.action == Action::UpToDate {
                unchanged.push(a.topic.clone());
            }
        }

        // 4. Wait until every broker answer shows the result, so that a plan made right after is
        // exact (metadata and configs propagate asynchronously in KRaft).
        self.wait_for(&expected).await?;
        Ok(ApplyReport { actions: done, unchanged })
    }

    /// [`plan`](Self::plan), then [`apply`](Self::apply): what a service does at start-up.
    ///
    /// A retriable failure (a topic created by someone else after the plan was made, a broker that
    /// did not know a new topic yet) plans again, up to 5 times in all.
    pub async fn provision(&self, topics: &[TopicSpec]) -> Result<ApplyReport, ProvisionError> {
        let mut attempt = 1u32;
        loop {
            let plan = self.plan(topics).await?;
            match self.apply(&plan).await {
                Err(e) if e.is_retriable() && attempt < 5 => {
                    tracing::info!(error = %e, attempt, "provisioning again from a fresh plan");
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// Waits until every topic of `topics` exists, however long that takes: for topics other
    /// services own and create, so services of an estate may start in any order. Looks again every
    /// second (another process creates them: there is nothing to be told about); warns once with
    /// the missing names.
    pub async fn await_topics(&self, topics: &[TopicSpec]) -> Result<(), ProvisionError> {
        let mut warned = false;
        loop {
            let plan = self.plan(topics).await?;
            let missing: Vec<&str> = topics
                .iter()
                .map(TopicSpec::name)
                .filter(|name| plan.actions_for(name).any(|a| matches!(a, Action::Create { .. })))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if !warned {
                tracing::warn!(?missing, "waiting for topics of other services to exist");
                warned = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Polls metadata and configs until every expectation holds, or the timeout passes.
    async fn wait_for(&self, expected: &BTreeMap<&str, Expected<'_>>) -> Result<(), ProvisionError> {
        if expected.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let pending = self.pending(expected).await?;
            let Some(what) = pending else { return Ok(()) };
            if Instant::now() + pause > deadline {
                return Err(ProvisionError::Timeout { waiting_for: what });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The first expectation that does not hold yet, described; `None` when all hold.
    async fn pending(
        &self,
        expected: &BTreeMap<&str, Expected<'_>>,
    ) -> Result<Option<String>, ProvisionError> {
        let cluster = self.metadata().await?;
        for (topic, wanted) in expected {
            let Some(meta) = cluster.topics.get(*topic) else {
                return Ok(Some(format!("topic {topic} to appear in the cluster metadata")));
            };
            let ready = meta.error.is_none()
                && meta.partitions.iter().all(|p| p.leader >= 0 && p.error.is_none())
                && (wanted.partitions == 0
                    || meta.partitions.len() == usize::try_from(wanted.partitions).unwrap_or(0));
            if !ready {
                return Ok(Some(format!(
                    "topic {topic} to have {} partitions with leaders",
                    wanted.partitions
                )));
            }
        }
        let names: Vec<&str> =
            expected.iter().filter(|(_, w)| !w.configs.is_empty()).map(|(t, _)| *t).collect();
        // Just after a topic is created, the broker asked may not know it yet and answer with no
        // configuration entries (rdkafka 0.39 drops its error): not ready yet, rather than a refusal.
        let described = match self.describe(&names).await {
            Ok(described) => described,
            Err(ProvisionError::Broker { operation, reason, .. })
                if operation.starts_with("describing the configuration of") =>
            {
                return Ok(Some(format!(
                    "{} ({reason})",
                    operation.replacen("describing", "a broker to describe", 1)
                )));
            }
            Err(e) => return Err(e),
        };
        for topic in names {
            let entries = described.get(topic).map_or(&[][..], Vec::as_slice);
            for (&key, &desired) in &expected[topic].configs {
                let current = entries.iter().find(|e| &e.name == key).and_then(|e| e.value.as_deref());
                if !current.is_some_and(|c| same_value(key, c, desired)) {
                    return Ok(Some(format!("topic {topic} to show {key}={desired}")));
                }
            }
        }
        Ok(None)
    }

    /// Brokers and topics, from fresh metadata of the whole cluster. (Asking for named topics
    /// would let a broker with `auto.create.topics.enable` create them.)
    async fn metadata(&self) -> Result<ClusterState, ProvisionError> {
        let admin = Arc::clone(&self.admin);
        let timeout = self.timeout;
        let fetch = move || {
            let md = admin
                .inner()
                .fetch_metadata(None, timeout)
                .map_err(|e| from_kafka("fetching cluster metadata", e))?;
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
        tokio::task::spawn_blocking(fetch).await.map_err(|e| ProvisionError::Broker {
            operation: "fetching cluster metadata".into(),
            reason: e.to_string(),
            retriable: true,
        })?
    }

    /// The configuration entries of each of `topics`.
    async fn describe(&self, topics: &[&str]) -> Result<HashMap<String, Vec<Entry>>, ProvisionError> {
        if topics.is_empty() {
            return Ok(HashMap::new());
        }
        if let Some(mock) = &self.mock {
            // What provisioning recorded: the mock cluster keeps no configs and answers no
            // DescribeConfigs.
            let entries = |topic: &str| {
                let configs = mock.topic_configs(topic).unwrap_or_default();
                let entry = |(name, value)| Entry { name, value: Some(value), topic_override: true };
                configs.into_iter().map(entry).collect()
            };
            return Ok(topics.iter().map(|t| ((*t).to_owned(), entries(t))).collect());
        }
        let specifiers: Vec<ResourceSpecifier<'_>> =
            topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let opts = AdminOptions::new().request_timeout(Some(self.timeout));
        let results = self
            .admin
            .describe_configs(&specifiers, &opts)
            .await
            .map_err(|e| from_kafka("describing topic configs", e))?;
        let mut out = HashMap::new();
        for (topic, result) in topics.iter().zip(results) {
            let resource =
                result.map_err(|code| from_code(format!("describing the configuration of {topic}"), code))?;
            let name = match resource.specifier {
                OwnedResourceSpecifier::Topic(name) => name,
                _ => (*topic).to_owned(),
            };
            // rdkafka does not surface per-resource errors here: an existing topic without entries
            // means the broker refused to describe it.
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
    }
}

/// What [`Provisioner::apply`] waits to see for one topic.
#[derive(Debug, Default)]
struct Expected<'a> {
    /// Partition count (0: not checked).
    partitions: i32,
    configs: BTreeMap<&'a String, &'a String>,
}

/// One configuration entry as described by a broker.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    value: Option<String>,
    /// A topic-level override (as opposed to a broker setting or a default).
    topic_override: bool,
}

/// The cluster as metadata shows it.
#[derive(Debug)]
struct ClusterState {
    brokers: usize,
    topics: HashMap<String, TopicState>,
}

#[derive(Debug)]
struct TopicState {
    error: Option<RDKafkaErrorCode>,
    partitions: Vec<PartitionState>,
}

#[derive(Debug)]
struct PartitionState {
    id: i32,
    leader: i32,
    replicas: usize,
    error: Option<RDKafkaErrorCode>,
}

impl TopicState {
    fn observed(&self, name: &str, entries: Vec<Entry>) -> Result<Observed, ProvisionError> {
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

/// An existing topic as the cluster shows it.
#[derive(Debug, Clone, Default)]
struct Observed {
    partitions: i32,
    replication: i16,
    configs: BTreeMap<String, Option<String>>,
}

/// What to do with one declared topic: the heart of [`Provisioner::plan`], free of I/O.
fn decide(
    spec: &TopicSpec,
    profile: Profile,
    brokers: usize,
    observed: Option<&Observed>,
    allow_partition_increase: bool,
) -> Vec<TopicAction> {
    let topic = spec.name().to_owned();
    let action = |action: Action| TopicAction { topic: topic.clone(), action };
    let replication = spec.effective_replication(profile);
    let desired = spec.configs(profile);
    let too_few_brokers = usize::try_from(replication).unwrap_or(0) > brokers;
    let brokers_refusal = || {
        action(Action::Refuse {
            reason: format!(
                "replication factor {replication} needs at least {replication} brokers, the cluster has {brokers}"
            ),
            advice: if profile == Profile::Production {
                "add brokers, or for a single local broker set BACKBONE_PROFILE=development (replication 1)"
                    .into()
            } else {
                "add brokers".into()
            },
        })
    };
    let Some(observed) = observed else {
        if too_few_brokers {
            return vec![brokers_refusal()];
        }
        return vec![action(Action::Create {
            partitions: spec.partitions(),
            replication,
            configs: desired.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        })];
    };

    let mut actions = Vec::new();
    let (declared, actual) = (spec.partitions(), observed.partitions);
    if declared < actual {
        actions.push(action(Action::Refuse {
            reason: format!("{declared} partitions are declared but the topic has {actual}"),
            advice: format!(
                "Kafka cannot remove partitions: declare {actual}, or create a new versioned topic \
                 ({}) with {declared} and move producers and consumers to it",
                next_version_hint(spec)
            ),
        }));
    } else if declared > actual {
        if allow_partition_increase {
            actions.push(action(Action::AddPartitions { from: actual, to: declared }));
        } else {
            actions.push(action(Action::Refuse {
                reason: format!("{declared} partitions are declared but the topic has {actual}"),
                advice: format!(
                    "adding partitions moves keys to other partitions and breaks per-key order for consumers \
                     still behind; declare {actual}, or create a new versioned topic ({}), or allow it \
                     explicitly (--allow-partition-increase, Provisioner::allow_partition_increase) if no \
                     consumer relies on per-key order",
                    next_version_hint(spec)
                ),
            }));
        }
    }
    if observed.replication != replication {
        actions.push(action(Action::Refuse {
            reason: format!(
                "replication factor is {}, declared {replication} (under the {} profile)",
                observed.replication,
                profile_name(profile)
            ),
            advice: format!(
                "changing replication needs a partition reassignment (kafka-reassign-partitions) by an operator; \
                 reassign the partitions to {replication} replicas, or declare replication {}",
                observed.replication
            ),
        }));
    }
    if too_few_brokers {
        actions.push(brokers_refusal());
    }
    let changes: Vec<ConfigChange> = desired
        .into_iter()
        .filter_map(|(key, wanted)| {
            let current = observed.configs.get(key).cloned().flatten();
            match &current {
                Some(c) if same_value(key, c, &wanted) => None,
                _ => Some(ConfigChange { key: key.to_owned(), current, desired: wanted }),
            }
        })
        .collect();
    if !changes.is_empty() {
        actions.push(action(Action::AlterConfigs { changes }));
    }
    if actions.is_empty() {
        actions.push(action(Action::UpToDate));
    }
    actions
}

/// `…-v<N+1>` for a public topic, a new name for a private one.
fn next_version_hint(spec: &TopicSpec) -> String {
    match spec.name().rsplit_once("-v").and_then(|(base, v)| Some((base, v.parse::<u32>().ok()?))) {
        Some((base, v)) if spec.visibility() == crate::topic::Visibility::Public => {
            format!("{base}-v{}", v + 1)
        }
        _ => format!("a new name next to {}", spec.name()),
    }
}

fn profile_name(profile: Profile) -> &'static str {
    match profile {
        Profile::Production => "production",
        Profile::Development => "development",
    }
}

/// Whether two values of config `key` mean the same (list values compare as sets).
fn same_value(key: &str, a: &str, b: &str) -> bool {
    if key == "cleanup.policy" {
        let set = |s: &str| {
            let mut v: Vec<String> =
                s.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect();
            v.sort();
            v.dedup();
            v
        };
        set(a) == set(b)
    } else {
        a.trim() == b.trim()
    }
}

/// What [`Provisioner::plan`] found and [`Provisioner::apply`] would do.
///
/// Its [`Display`](fmt::Display) is one line per action, in declaration order, then a summary:
///
/// ```text
/// + create orders.public.order-created-v1 (partitions 6, replication 3): cleanup.policy=delete, …
/// ~ alter stock.private.levels min.insync.replicas: 1 -> 2
/// + add partitions orders.private.events: 3 -> 6
/// = orders.public.order-shipped-v1 up to date
/// ! refused orders.private.audit: 3 partitions are declared but the topic has 6; Kafka cannot remove …
/// plan: 1 to create, 1 to alter, 1 to add partitions, 1 up to date, 1 refused
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    actions: Vec<TopicAction>,
}

impl Plan {
    /// Every action, in declaration order. A topic has one [`Action::UpToDate`], or one or more
    /// other actions.
    pub fn actions(&self) -> &[TopicAction] {
        &self.actions
    }

    /// The actions planned for `topic`.
    pub fn actions_for<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a Action> + 'a {
        self.actions.iter().filter(move |a| a.topic == topic).map(|a| &a.action)
    }

    /// Whether applying would change nothing: every topic is up to date.
    pub fn is_noop(&self) -> bool {
        self.actions.iter().all(|a| a.action == Action::UpToDate)
    }

    /// Whether any topic needs a decision that provisioning will not make (see [`Action::Refuse`]).
    pub fn has_refusals(&self) -> bool {
        self.refusals().next().is_some()
    }

    /// The refusals, in declaration order.
    pub fn refusals(&self) -> impl Iterator<Item = Refusal> + '_ {
        self.actions.iter().filter_map(|a| match &a.action {
            Action::Refuse { reason, advice } => {
                Some(Refusal { topic: a.topic.clone(), reason: reason.clone(), advice: advice.clone() })
            }
            _ => None,
        })
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut count = [0usize; 4];
        let mut refused = BTreeSet::new();
        for a in &self.actions {
            match &a.action {
                Action::Create { .. } => count[0] += 1,
                Action::AlterConfigs { .. } => count[1] += 1,
                Action::AddPartitions { .. } => count[2] += 1,
                Action::UpToDate => count[3] += 1,
                Action::Refuse { .. } => {
                    refused.insert(&a.topic);
                }
            }
            writeln!(f, "{a}")?;
        }
        writeln!(
            f,
            "plan: {} to create, {} to alter, {} to add partitions, {} up to date, {} refused",
            count[0],
            count[1],
            count[2],
            count[3],
            refused.len()
        )
    }
}

/// One planned (or applied) action on one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicAction {
    /// The topic's full name.
    pub topic: String,
    /// What to do with it.
    pub action: Action,
}

/// What to do with one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// The topic does not exist: create it.
    Create {
        /// Partition count.
        partitions: i32,
        /// Replication factor under the profile.
        replication: i16,
        /// Topic configuration ([`TopicSpec::configs`]).
        configs: BTreeMap<String, String>,
    },
    /// The topic exists as declared.
    UpToDate,
    /// Managed configuration drifted: set it back (safe, no data moves).
    AlterConfigs {
        /// The keys whose value differs, in key order.
        changes: Vec<ConfigChange>,
    },
    /// More partitions are declared than exist, and the increase was explicitly allowed.
    AddPartitions {
        /// The current partition count.
        from: i32,
        /// The declared partition count.
        to: i32,
    },
    /// The difference cannot be applied safely; a human decides.
    Refuse {
        /// What differs.
        reason: String,
        /// What to do about it.
        advice: String,
    },
}

/// A managed configuration key whose value differs from the declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigChange {
    /// The topic config key (`retention.ms`).
    pub key: String,
    /// Its current value (`None`: the broker did not report one).
    pub current: Option<String>,
    /// The declared value.
    pub desired: String,
}

impl fmt::Display for TopicAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topic = &self.topic;
        match &self.action {
            Action::Create { partitions, replication, configs } => {
                write!(f, "+ create {topic} (partitions {partitions}, replication {replication})")?;
                for (i, (k, v)) in configs.iter().enumerate() {
                    write!(f, "{}{k}={v}", if i == 0 { ": " } else { ", " })?;
                }
                Ok(())
            }
            Action::UpToDate => write!(f, "= {topic} up to date"),
            Action::AlterConfigs { changes } => {
                for (i, c) in changes.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "~ alter {topic} {c}")?;
                }
                Ok(())
            }
            Action::AddPartitions { from, to } => write!(f, "+ add partitions {topic}: {from} -> {to}"),
            Action::Refuse { reason, advice } => write!(f, "! refused {topic}: {reason}; {advice}"),
        }
    }
}

impl fmt::Display for ConfigChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.key, self.current.as_deref().unwrap_or("(unset)"), self.desired)
    }
}

/// A topic [`Provisioner::apply`] will not change without a human decision.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusal {
    /// The topic.
    pub topic: String,
    /// What differs.
    pub reason: String,
    /// What to do about it.
    pub advice: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "! refused {}: {}; {}", self.topic, self.reason, self.advice)
    }
}

/// What [`Provisioner::apply`] did.
///
/// Its [`Display`](fmt::Display) is one line per change, then the unchanged topics and a summary:
///
/// ```text
/// + created orders.public.order-created-v1 (partitions 6, replication 3)
/// ~ altered stock.private.levels min.insync.replicas: 1 -> 2
/// + added partitions orders.private.events: 3 -> 6
/// = orders.public.order-shipped-v1 up to date
/// apply: 1 created, 1 altered, 1 with added partitions, 1 up to date
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    actions: Vec<TopicAction>,
    unchanged: Vec<String>,
}

impl ApplyReport {
    /// What was done: [`Action::Create`], [`Action::AddPartitions`] and [`Action::AlterConfigs`]
    /// (with the values found just before altering).
    pub fn actions(&self) -> &[TopicAction] {
        &self.actions
    }

    /// Topics that were already as declared.
    pub fn unchanged(&self) -> &[String] {
        &self.unchanged
    }

    /// Whether nothing was changed.
    pub fn is_noop(&self) -> bool {
        self.actions.is_empty()
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut count = [0usize; 3];
        for a in &self.actions {
            let topic = &a.topic;
            match &a.action {
                Action::Create { partitions, replication, .. } => {
                    count[0] += 1;
                    writeln!(f, "+ created {topic} (partitions {partitions}, replication {replication})")?;
                }
                Action::AlterConfigs { changes } => {
                    count[1] += 1;
                    for c in changes {
                        writeln!(f, "~ altered {topic} {c}")?;
                    }
                }
                Action::AddPartitions { from, to } => {
                    count[2] += 1;
                    writeln!(f, "+ added partitions {topic}: {from} -> {to}")?;
                }
                Action::UpToDate | Action::Refuse { .. } => {}
            }
        }
        for topic in &self.unchanged {
            writeln!(f, "= {topic} up to date")?;
        }
        writeln!(
            f,
            "apply: {} created, {} altered, {} with added partitions, {} up to date",
            count[0],
            count[1],
            count[2],
            self.unchanged.len()
        )
    }
}

/// Why provisioning failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The admin client could not be created (a configuration problem).
    #[error("could not create the Kafka admin client: {reason}")]
    Client {
        /// What librdkafka said.
        reason: String,
    },
    /// A request to the brokers failed.
    #[error("{operation} failed: {reason}")]
    Broker {
        /// What was being done.
        operation: String,
        /// What went wrong.
        reason: String,
        /// Whether trying again may help (timeouts, unavailable brokers, leader changes).
        retriable: bool,
    },
    /// The principal may not do this; an operator must grant it (ACLs).
    #[error(
        "{operation} failed: not authorized ({reason}); the principal needs CREATE, ALTER_CONFIGS and DESCRIBE_CONFIGS on the topics"
    )]
    NotAuthorized {
        /// What was being done.
        operation: String,
        /// What the broker said.
        reason: String,
    },
    /// The brokers rejected a request as invalid (a bad config value, a policy).
    #[error("{operation} failed: {reason}")]
    Invalid {
        /// What was being done.
        operation: String,
        /// What the broker said.
        reason: String,
    },
    /// The cluster did not show the result in time.
    #[error("timed out waiting for {waiting_for}")]
    Timeout {
        /// What was awaited.
        waiting_for: String,
    },
    /// A topic was declared twice with different settings.
    #[error("topic `{topic}` is declared twice with different settings; provisioning needs one declaration")]
    Conflicting {
        /// The topic.
        topic: String,
    },
    /// The plan has refusals: nothing was applied.
    #[error("{}", refused_message(refusals))]
    Refused {
        /// Every refusal in the plan.
        refusals: Vec<Refusal>,
    },
}

fn refused_message(refusals: &[Refusal]) -> String {
    let mut s = format!("nothing applied: {} change(s) need a decision first", refusals.len());
    for r in refusals {
        s.push('\n');
        s.push_str(&r.to_string());
    }
    s
}

impl ProvisionError {
    /// Whether trying again may succeed: broker unavailability and timeouts are retriable;
    /// refusals, authorization failures and invalid declarations are not.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Broker { retriable, .. } => *retriable,
            Self::Timeout { .. } => true,
            Self::Client { .. }
            | Self::NotAuthorized { .. }
            | Self::Invalid { .. }
            | Self::Conflicting { .. }
            | Self::Refused { .. } => false,
        }
    }

    /// The refusals, if this is [`ProvisionError::Refused`].
    pub fn refusals(&self) -> &[Refusal] {
        match self {
            Self::Refused { refusals } => refusals,
            _ => &[],
        }
    }
}

fn from_mock(operation: String, e: crate::dev::MockError) -> ProvisionError {
    match e {
        crate::dev::MockError::TopicExists { .. } => ProvisionError::Broker {
            operation,
            reason: "it was created after the plan was made; plan again".into(),
            retriable: true,
        },
        e => ProvisionError::Invalid { operation, reason: e.to_string() },
    }
}

fn from_kafka(operation: impl Into<String>, e: KafkaError) -> ProvisionError {
    let operation = operation.into();
    match e {
        KafkaError::AdminOp(code) => from_code(operation, code),
        e => match e.rdkafka_error_code() {
            Some(code) => from_code(operation, code),
            None => ProvisionError::Broker {
                operation,
                reason: e.to_string(),
                retriable: matches!(e, KafkaError::Canceled),
            },
        },
    }
}

fn from_code(operation: String, code: RDKafkaErrorCode) -> ProvisionError {
    use RDKafkaErrorCode as C;
    let reason = code.to_string();
    match code {
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication => ProvisionError::NotAuthorized { operation, reason },
        C::InvalidConfig
        | C::InvalidPartitions
        | C::InvalidReplicationFactor
        | C::InvalidReplicaAssignment
        | C::InvalidRequest
        | C::InvalidTopic
        | C::PolicyViolation
        | C::InvalidArgument
        | C::UnsupportedVersion => ProvisionError::Invalid { operation, reason },
        C::OperationTimedOut | C::RequestTimedOut | C::TimedOutQueue => {
            ProvisionError::Broker { operation, reason, retriable: true }
        }
        C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::BrokerNotAvailable
        | C::ReplicaNotAvailable
        | C::NetworkException
        | C::NotController
        | C::NotEnoughReplicas
        | C::KafkaStorageError
        | C::ThrottlingQuotaExceeded
        | C::ReassignmentInProgress
        | C::UnknownTopicOrPartition
        | C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::Resolve
        | C::Retry
        | C::WaitCache
        | C::CoordinatorNotAvailable => ProvisionError::Broker { operation, reason, retriable: true },
        _ => ProvisionError::Broker { operation, reason, retriable: false },
    }
}

/// Provisions `spec`'s own topics, then waits until every topic it reads from other services
/// exists ([`Provisioner::await_topics`]): a service that may start before the services it reads
/// from calls this before [`crate::app::App::run`], instead of failing to subscribe.
pub async fn provision_and_await_inputs(
    config: &Config,
    spec: &crate::service::ServiceSpec,
) -> Result<(), ProvisionError> {
    let provisioner = Provisioner::new(config, spec.name())?;
    provisioner.provision(spec.owned_topics()).await?;
    let inputs: Vec<TopicSpec> =
        spec.consumed_topics().iter().filter(|t| spec.owned(t.name()).is_none()).cloned().collect();
    provisioner.await_topics(&inputs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(spec: &TopicSpec, profile: Profile) -> Observed {
        Observed {
            partitions: spec.partitions(),
            replication: spec.effective_replication(profile),
            configs: spec.configs(profile).into_iter().map(|(k, v)| (k.to_owned(), Some(v))).collect(),
        }
    }

    fn plan(actions: Vec<TopicAction>) -> Plan {
        Plan { actions }
    }

    #[test]
    fn missing_topics_are_created_with_the_profiles_durability() {
        let t = TopicSpec::private("orders", "events").partitions(3).build().unwrap();
        let dev = decide(&t, Profile::Development, 1, None, false);
        let Action::Create { partitions, replication, configs } = &dev[0].action else { panic!("{dev:?}") };
        assert_eq!((*partitions, *replication), (3, 1));
        assert_eq!(configs["min.insync.replicas"], "1");
        let prod = decide(&t, Profile::Production, 3, None, false);
        assert!(
            matches!(&prod[0].action, Action::Create { replication: 3, configs, .. } if configs["min.insync.replicas"] == "2")
        );
    }

    #[test]
    fn too_few_brokers_is_refused_with_the_development_hint() {
        let t = TopicSpec::private("orders", "events").build().unwrap();
        let p = plan(decide(&t, Profile::Production, 1, None, false));
        assert!(p.has_refusals() && !p.is_noop());
        let text = p.to_string();
        assert!(text.contains("! refused orders.private.events: replication factor 3 needs at least 3 brokers, the cluster has 1"), "{text}");
        assert!(text.contains("BACKBONE_PROFILE=development"), "{text}");
    }

    #[test]
    fn matching_topics_are_up_to_date() {
        let t = TopicSpec::private("orders", "events").compacted().build().unwrap();
        let p = plan(decide(&t, Profile::Development, 1, Some(&observed(&t, Profile::Development)), false));
        assert!(p.is_noop() && !p.has_refusals());
        assert_eq!(
            p.to_string(),
            "= orders.private.events up to date\nplan: 0 to create, 0 to alter, 0 to add partitions, 1 up to date, 0 refused\n"
        );
    }

    #[test]
    fn config_drift_is_an_alter() {
        let t = TopicSpec::private("orders", "events").build().unwrap();
        let mut o = observed(&t, Profile::Production);
        o.configs.insert("retention.ms".into(), Some("1000".into()));
        o.configs.insert("cleanup.policy".into(), Some("delete".into()));
        o.configs.remove("min.insync.replicas");
        let p = plan(decide(&t, Profile::Production, 3, Some(&o), false));
        assert_eq!(
            p.to_string(),
            "~ alter orders.private.events min.insync.replicas: (unset) -> 2\n\
             ~ alter orders.private.events retention.ms: 1000 -> 604800000\n\
             plan: 0 to create, 1 to alter, 0 to add partitions, 0 up to date, 0 refused\n"
        );
        assert!(!p.is_noop() && !p.has_refusals());
    }

    #[test]
    fn list_values_compare_as_sets() {
        let t =
            TopicSpec::private("orders", "x").compacted().retention(Duration::from_secs(1)).build().unwrap();
        let mut o = observed(&t, Profile::Production);
        o.configs.insert("cleanup.policy".into(), Some("delete, compact".into()));
        assert!(plan(decide(&t, Profile::Production, 3, Some(&o), false)).is_noop());
    }

    #[test]
    fn partition_and_replication_changes_are_refused_with_advice() {
        let t = TopicSpec::public("orders", "created", 1).partitions(6).build().unwrap();
        let mut fewer = observed(&t, Profile::Production);
        fewer.partitions = 12;
        let text = plan(decide(&t, Profile::Production, 3, Some(&fewer), false)).to_string();
        assert!(text.contains("! refused orders.public.created-v1: 6 partitions are declared but the topic has 12; Kafka cannot remove partitions: declare 12, or create a new versioned topic (orders.public.created-v2)"), "{text}");

        let mut more = observed(&t, Profile::Production);
        more.partitions = 3;
        let text = plan(decide(&t, Profile::Production, 3, Some(&more), false)).to_string();
        assert!(
            text.contains("adding partitions moves keys to other partitions and breaks per-key order"),
            "{text}"
        );
        let allowed = plan(decide(&t, Profile::Production, 3, Some(&more), true));
        assert_eq!(allowed.actions()[0].action, Action::AddPartitions { from: 3, to: 6 });
        assert!(allowed.to_string().starts_with("+ add partitions orders.public.created-v1: 3 -> 6\n"));

        let mut rf = observed(&t, Profile::Production);
        rf.replication = 1;
        let p = plan(decide(&t, Profile::Production, 3, Some(&rf), true));
        let refusals: Vec<Refusal> = p.refusals().collect();
        assert_eq!(refusals.len(), 1, "{p}");
        assert_eq!(refusals[0].reason, "replication factor is 1, declared 3 (under the production profile)");
        assert!(refusals[0].advice.contains("kafka-reassign-partitions"));
        assert!(p.to_string().ends_with("1 refused\n"), "{p}");
    }

    #[test]
    fn errors_classify_and_convert() {
        let refused = ProvisionError::Refused {
            refusals: vec![Refusal { topic: "t".into(), reason: "r".into(), advice: "a".into() }],
        };
        assert!(!refused.is_retriable());
        assert_eq!(
            refused.to_string(),
            "nothing applied: 1 change(s) need a decision first\n! refused t: r; a"
        );
        let timeout = from_kafka("creating topics", KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut));
        assert!(timeout.is_retriable(), "{timeout:?}");
        assert!(!from_code("x".into(), RDKafkaErrorCode::TopicAuthorizationFailed).is_retriable());
        assert!(matches!(
            from_code("x".into(), RDKafkaErrorCode::InvalidConfig),
            ProvisionError::Invalid { .. }
        ));
        let e = crate::Error::from(refused);
        assert_eq!(e.kind(), crate::error::ErrorKind::Provision);
        assert!(!e.is_retriable());
        assert_eq!(e.as_provision().map(|p| p.refusals().len()), Some(1));
    }
}
