//! The plan, free of I/O: what to do with each declared topic given what the cluster shows
//! ([`decide`]), and how plans and apply reports read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::Profile;
use crate::topic::TopicSpec;

/// An existing topic as the cluster shows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    pub(crate) partitions: i32,
    pub(crate) replication: i16,
    pub(crate) configs: BTreeMap<String, Option<String>>,
}

/// What to do with one declared topic: the heart of [`Provisioner::plan`](super::Provisioner::plan), free of I/O.
pub(super) fn decide(
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
pub(super) fn same_value(key: &str, a: &str, b: &str) -> bool {
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

/// What [`Provisioner::plan`](super::Provisioner::plan) found and [`Provisioner::apply`](super::Provisioner::apply) would do.
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub(super) actions: Vec<TopicAction>,
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct TopicAction {
    /// The topic's full name.
    pub topic: String,
    /// What to do with it.
    #[serde(flatten)]
    pub action: Action,
}

/// What to do with one topic (as JSON: `{"action": "create", …}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

/// A topic [`Provisioner::apply`](super::Provisioner::apply) will not change without a human decision.
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

/// What [`Provisioner::apply`](super::Provisioner::apply) did.
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
    pub(super) actions: Vec<TopicAction>,
    pub(super) unchanged: Vec<String>,
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
