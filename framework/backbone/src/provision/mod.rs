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
//! With a configuration for librdkafka's mock cluster in this process (from
//! `dev::MockKafka::config`, whose bootstrap servers lead provisioning to it), the same plans are
//! made and applied through the mock cluster, which answers no admin requests: topics are created
//! with its own API, and configs are recorded by the `MockKafka` handle (the mock cluster does not
//! apply them), so planning again shows the topics up to date. Adding partitions is refused there.
//!
//! Only the keys of [`TopicSpec::configs`] are managed. Other topic configs set by operators
//! (`max.message.bytes`, say) are left as they are: rdkafka's `AlterConfigs` replaces a topic's
//! whole dynamic configuration, so apply sends every current topic-level override along with the
//! managed keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, Profile};
use crate::service::ServiceSpec;
use crate::topic::TopicSpec;

mod admin;
mod connect;
mod error;
mod plan;
#[cfg(test)]
mod tests;

pub(crate) use admin::{
    ClusterState, Entry, InProcessCluster, KafkaAdmin, NewTopicSpec, TopicAdmin, admin_for,
    register_in_process, unregister_in_process,
};
pub use error::ProvisionError;
pub use plan::{Action, ApplyReport, ConfigChange, Plan, Refusal, TopicAction};
use plan::{decide, same_value};

/// How long one admin operation, and waiting for its effect, may take by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates and reconciles declared topics through the Kafka admin API.
///
/// Topics are made durable under the configuration's [`Profile`]: in
/// [`Production`](Profile::Production) as declared, in [`Development`](Profile::Development) with
/// replication 1 for a single local broker.
#[derive(Debug)]
pub struct Provisioner {
    /// The cluster: the Kafka admin API, or an in-process cluster's own.
    admin: Arc<dyn TopicAdmin>,
    profile: Profile,
    allow_partition_increase: bool,
    timeout: Duration,
    verify_only: bool,
}

impl Provisioner {
    /// An admin client for `service`, with `config`'s brokers, security and profile.
    pub fn new(config: &Config, service: &str) -> Result<Self, ProvisionError> {
        Ok(Self {
            admin: admin::admin_for(config, service)?,
            profile: config.profile,
            allow_partition_increase: false,
            timeout: DEFAULT_TIMEOUT,
            verify_only: config.provisioning == crate::Provisioning::Verify,
        })
    }

    /// Makes [`provision`](Self::provision) check, never alter (the configuration's
    /// [`Provisioning::Verify`](crate::Provisioning::Verify) sets it): any difference from the
    /// declaration, a missing topic included, is [`ProvisionError::NotAsDeclared`].
    #[must_use]
    pub fn verify_only(mut self, verify: bool) -> Self {
        self.verify_only = verify;
        self
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
        let mut done = Vec::new();
        let mut unchanged = Vec::new();
        let mut expected: BTreeMap<&str, Expected<'_>> = BTreeMap::new();

        // 1. Create missing topics, with their configuration.
        let creates: Vec<NewTopicSpec<'_>> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.action {
                Action::Create { partitions, replication, configs } => Some(NewTopicSpec {
                    name: &a.topic,
                    partitions: *partitions,
                    replication: *replication,
                    configs,
                }),
                _ => None,
            })
            .collect();
        if !creates.is_empty() {
            self.admin.create_topics(&creates, self.timeout).await?;
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
        let additions: Vec<(&str, i32)> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.action {
                Action::AddPartitions { to, .. } => Some((a.topic.as_str(), *to)),
                _ => None,
            })
            .collect();
        if !additions.is_empty() {
            self.admin.create_partitions(&additions, self.timeout).await?;
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
            if !requests.is_empty() {
                self.admin.alter_configs(&requests, self.timeout).await?;
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
    ///
    /// Verify-only ([`verify_only`](Self::verify_only)): plans once and applies nothing; the report
    /// lists every topic as unchanged, or the error names every difference.
    pub async fn provision(&self, topics: &[TopicSpec]) -> Result<ApplyReport, ProvisionError> {
        if self.verify_only {
            let plan = self.plan(topics).await?;
            if !plan.is_noop() {
                let differences = plan.actions.into_iter().filter(|a| a.action != Action::UpToDate).collect();
                return Err(ProvisionError::NotAsDeclared { differences });
            }
            let unchanged = plan.actions.into_iter().map(|a| a.topic).collect();
            return Ok(ApplyReport { actions: Vec::new(), unchanged });
        }
        let mut attempt = 1u32;
        // 200 ms, doubling to 800 ms (the 4th and last wait), with jitter.
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_millis(800));
        loop {
            let plan = self.plan(topics).await?;
            match self.apply(&plan).await {
                Err(e) if e.is_retriable() && attempt < 5 => {
                    tracing::info!(error = %e, attempt, "provisioning again from a fresh plan");
                    tokio::time::sleep(backoff.next_delay()).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// Waits until every topic of `topics` exists, however long that takes: for topics other
    /// services own and create, so services of an estate may start in any order. Looks again about
    /// every second (jittered) (another process creates them: there is nothing to be told about); warns once with
    /// the missing names.
    pub async fn await_topics(&self, topics: &[TopicSpec]) -> Result<(), ProvisionError> {
        let mut warned = false;
        loop {
            // Existence is in the metadata. Not a plan: planning describes the topics' configs, and
            // a consumer may not (the estate grants READ and DESCRIBE on another service's public
            // topic, not DESCRIBE_CONFIGS), so under ACLs a plan here failed start-up.
            let cluster = self.metadata().await?;
            let missing: Vec<&str> = topics
                .iter()
                .map(TopicSpec::name)
                .filter(|name| !cluster.topics.contains_key(*name))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if !warned {
                tracing::warn!(?missing, "waiting for topics of other services to exist");
                warned = true;
            }
            tokio::time::sleep(crate::backoff::jitter(Duration::from_secs(1))).await;
        }
    }

    /// Polls metadata and configs until every expectation holds, or the timeout passes.
    async fn wait_for(&self, expected: &BTreeMap<&str, Expected<'_>>) -> Result<(), ProvisionError> {
        if expected.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.timeout;
        let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        loop {
            let pending = self.pending(expected).await?;
            let Some(what) = pending else { return Ok(()) };
            let pause = backoff.next_delay();
            if Instant::now() + pause > deadline {
                return Err(ProvisionError::Timeout { waiting_for: what });
            }
            tokio::time::sleep(pause).await;
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

    /// Brokers and topics, from fresh metadata of the whole cluster.
    async fn metadata(&self) -> Result<ClusterState, ProvisionError> {
        self.admin.metadata(self.timeout).await
    }

    /// The configuration entries of each of `topics`.
    async fn describe(&self, topics: &[&str]) -> Result<HashMap<String, Vec<Entry>>, ProvisionError> {
        if topics.is_empty() {
            return Ok(HashMap::new());
        }
        self.admin.describe_configs(topics, self.timeout).await
    }
}

/// What [`Provisioner::apply`] waits to see for one topic.
#[derive(Debug, Default)]
struct Expected<'a> {
    /// Partition count (0: not checked).
    partitions: i32,
    configs: BTreeMap<&'a String, &'a String>,
}

/// Provisions `spec`'s own topics, then waits until every topic it reads from other services
/// exists ([`Provisioner::await_topics`]): a service that may start before the services it reads
/// from calls this before [`crate::app::App::run`], instead of failing to subscribe.
pub async fn provision_and_await_inputs(config: &Config, spec: &ServiceSpec) -> Result<(), ProvisionError> {
    let provisioner = Provisioner::new(config, spec.name())?;
    provisioner.provision(spec.owned_topics()).await?;
    let inputs: Vec<TopicSpec> =
        spec.consumed_topics().iter().filter(|t| spec.owned(t.name()).is_none()).cloned().collect();
    provisioner.await_topics(&inputs).await
}
