//! Topics as code: declarations, the naming convention, validation and ownership.
//!
//! # Naming convention
//!
//! The owner is part of every name, so that prefixed ACLs can enforce ownership:
//!
//! | visibility | name | who may write | who may read |
//! |---|---|---|---|
//! | public | `<owner>.public.<event>-v<N>` | the owner | everyone |
//! | private | `<owner>.private.<name>` | the owner | the owner |
//!
//! The owner's principal gets every operation on the prefix `<owner>.`; every other principal gets
//! READ on the prefix `<owner>.public.`. A public topic carries its contract version: a breaking
//! change goes to a new topic, `…-v2`. Owners are lower-case ASCII letters, digits and dashes,
//! starting with a letter; names may also use dots.
//!
//! # Durability
//!
//! A topic is durable unless declared otherwise: replication factor 3, `min.insync.replicas` 2 and
//! unclean leader election off. The [development profile](crate::config::Profile::Development)
//! lowers replication to 1 so a single `backbone dev up` broker can hold everything; it is chosen
//! explicitly in configuration, never guessed.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Profile;

/// Kafka's limit on topic name length.
const MAX_TOPIC_NAME: usize = 249;
/// `flush.messages` when every record is fsynced before it is acknowledged.
const FLUSH_EVERY_MESSAGE: &str = "1";
/// Kafka's default `flush.messages` (never force a flush; rely on replication).
const FLUSH_DEFAULT: &str = "9223372036854775807";
/// Default segment size of compacted topics: small, because the active segment is never compacted.
pub const DEFAULT_COMPACTED_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Default retention of delete-policy topics: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Who may read a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// A contract: its owner writes it, every service may read it.
    Public,
    /// Internal state: only its owner reads and writes it.
    Private,
}

/// How Kafka cleans a topic up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy", deny_unknown_fields)]
pub enum Cleanup {
    /// Delete whole segments older than `retention` (`None`: keep forever).
    Delete {
        /// How long records are kept.
        #[serde(with = "opt_millis")]
        retention: Option<Duration>,
    },
    /// Keep the latest record per key (a tombstone deletes the key).
    Compact {
        /// Segment size; the active segment is never compacted, so small topics want small segments.
        segment_bytes: u64,
    },
    /// Compact, and also delete records older than `retention`.
    CompactDelete {
        /// How long records are kept.
        #[serde(with = "opt_millis")]
        retention: Option<Duration>,
        /// Segment size.
        segment_bytes: u64,
    },
}

mod opt_millis {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_i64(-1),
        }
    }

    /// Milliseconds, or -1 for "forever" (Kafka's own convention).
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match <i64 as serde::Deserialize>::deserialize(d)? {
            -1 => Ok(None),
            ms if ms >= 0 => Ok(Some(Duration::from_millis(ms.unsigned_abs()))),
            ms => Err(serde::de::Error::custom(format!(
                "retention is milliseconds, or -1 for forever, not {ms}"
            ))),
        }
    }
}

/// A declared topic: its name, owner, visibility and configuration.
///
/// Build one with [`TopicSpec::public`] or [`TopicSpec::private`]:
///
/// ```
/// use backbone::topic::TopicSpec;
///
/// let created = TopicSpec::public("orders", "order-created", 1).partitions(6).build()?;
/// assert_eq!(created.name(), "orders.public.order-created-v1");
///
/// let reservations = TopicSpec::private("stock", "reservations").compacted().build()?;
/// assert_eq!(reservations.name(), "stock.private.reservations");
/// # Ok::<(), backbone::topic::TopicError>(())
/// ```
///
/// A spec serializes to JSON and deserializes back through the same validation as
/// [`TopicBuilder::build`]: a hand-edited declaration that breaks a rule is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTopicSpec")]
pub struct TopicSpec {
    name: String,
    owner: String,
    visibility: Visibility,
    partitions: i32,
    replication: i16,
    min_insync_replicas: i16,
    cleanup: Cleanup,
    sync_flush: bool,
    global_order: bool,
}

/// Builds a [`TopicSpec`]; [`build`](Self::build) validates it.
#[derive(Debug, Clone)]
#[must_use = "a topic builder does nothing until built"]
pub struct TopicBuilder {
    owner: String,
    base: String,
    version: Option<u32>,
    visibility: Visibility,
    partitions: i32,
    replication: i16,
    min_insync_replicas: i16,
    cleanup: Cleanup,
    sync_flush: bool,
    global_order: bool,
}

impl TopicSpec {
    /// A public contract topic of `owner`, carrying events `event`, contract version `version`
    /// (`<owner>.public.<event>-v<version>`).
    pub fn public(owner: impl Into<String>, event: impl Into<String>, version: u32) -> TopicBuilder {
        TopicBuilder::new(owner.into(), event.into(), Some(version), Visibility::Public)
    }

    /// A private topic of `owner` (`<owner>.private.<name>`).
    pub fn private(owner: impl Into<String>, name: impl Into<String>) -> TopicBuilder {
        TopicBuilder::new(owner.into(), name.into(), None, Visibility::Private)
    }

    /// The full topic name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service that owns (and alone writes) this topic.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Public contract or private state.
    pub fn visibility(&self) -> Visibility {
        self.visibility
    }

    /// Whether `service` owns this topic.
    pub fn is_owned_by(&self, service: &str) -> bool {
        self.owner == service
    }

    /// Declared partition count.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// Whether the topic was declared for global order (a single partition).
    pub fn is_global_order(&self) -> bool {
        self.global_order
    }

    /// Declared replication factor (before a profile lowers it).
    pub fn replication(&self) -> i16 {
        self.replication
    }

    /// Declared `min.insync.replicas` (before a profile lowers it).
    pub fn min_insync_replicas(&self) -> i16 {
        self.min_insync_replicas
    }

    /// Cleanup policy.
    pub fn cleanup(&self) -> Cleanup {
        self.cleanup
    }

    /// Whether every record is flushed to disk before it is acknowledged (`flush.messages=1`).
    pub fn is_sync_flush(&self) -> bool {
        self.sync_flush
    }

    /// The replication factor under `profile`.
    pub fn effective_replication(&self, profile: Profile) -> i16 {
        match profile {
            Profile::Production => self.replication,
            Profile::Development => 1,
        }
    }

    /// The topic configuration the framework manages, under `profile`: every key here is created
    /// with the topic and compared for drift.
    pub fn configs(&self, profile: Profile) -> BTreeMap<&'static str, String> {
        let mut c = BTreeMap::new();
        let min_isr = match profile {
            Profile::Production => self.min_insync_replicas,
            Profile::Development => 1,
        };
        c.insert("min.insync.replicas", min_isr.to_string());
        c.insert("unclean.leader.election.enable", "false".to_owned());
        c.insert(
            "flush.messages",
            if self.sync_flush { FLUSH_EVERY_MESSAGE } else { FLUSH_DEFAULT }.to_owned(),
        );
        let millis = |r: Option<Duration>| r.map_or_else(|| "-1".to_owned(), |d| d.as_millis().to_string());
        match self.cleanup {
            Cleanup::Delete { retention } => {
                c.insert("cleanup.policy", "delete".to_owned());
                c.insert("retention.ms", millis(retention));
            }
            Cleanup::Compact { segment_bytes } => {
                c.insert("cleanup.policy", "compact".to_owned());
                c.insert("segment.bytes", segment_bytes.to_string());
            }
            Cleanup::CompactDelete { retention, segment_bytes } => {
                c.insert("cleanup.policy", "compact,delete".to_owned());
                c.insert("retention.ms", millis(retention));
                c.insert("segment.bytes", segment_bytes.to_string());
            }
        }
        c
    }
}

impl fmt::Display for TopicSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl TopicBuilder {
    fn new(owner: String, base: String, version: Option<u32>, visibility: Visibility) -> Self {
        Self {
            owner,
            base,
            version,
            visibility,
            partitions: 6,
            replication: 3,
            min_insync_replicas: 2,
            cleanup: Cleanup::Delete { retention: Some(DEFAULT_RETENTION) },
            sync_flush: false,
            global_order: false,
        }
    }

    /// Number of partitions (default 6): the unit of order and of consumer parallelism.
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Global order: a single partition, so every consumer sees every record in one order.
    pub fn global_order(mut self) -> Self {
        self.global_order = true;
        self.partitions = 1;
        self
    }

    /// Replication factor (default 3).
    pub fn replication(mut self, replication: i16) -> Self {
        self.replication = replication;
        self
    }

    /// `min.insync.replicas` (default 2): with `acks=all`, a write is acknowledged once this many
    /// replicas have it.
    pub fn min_insync_replicas(mut self, min: i16) -> Self {
        self.min_insync_replicas = min;
        self
    }

    /// Delete records older than `retention` (the default policy, 7 days).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.cleanup = match self.cleanup {
            Cleanup::Delete { .. } => Cleanup::Delete { retention: Some(retention) },
            Cleanup::Compact { segment_bytes } | Cleanup::CompactDelete { segment_bytes, .. } => {
                Cleanup::CompactDelete { retention: Some(retention), segment_bytes }
            }
        };
        self
    }

    /// Keep records forever (event sourcing: the topic is the store of record).
    pub fn retain_forever(mut self) -> Self {
        self.cleanup = match self.cleanup {
            Cleanup::Delete { .. } => Cleanup::Delete { retention: None },
            Cleanup::Compact { segment_bytes } | Cleanup::CompactDelete { segment_bytes, .. } => {
                Cleanup::Compact { segment_bytes }
            }
        };
        self
    }

    /// Compact: keep the latest record per key (with [`DEFAULT_COMPACTED_SEGMENT_BYTES`] segments).
    pub fn compacted(mut self) -> Self {
        self.cleanup = Cleanup::Compact { segment_bytes: DEFAULT_COMPACTED_SEGMENT_BYTES };
        self
    }

    /// Segment size of a compacted topic.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.cleanup = match self.cleanup {
            Cleanup::Delete { retention } | Cleanup::CompactDelete { retention, .. }
                if retention.is_some() =>
            {
                Cleanup::CompactDelete { retention, segment_bytes: bytes }
            }
            _ => Cleanup::Compact { segment_bytes: bytes },
        };
        self
    }

    /// For highly sensitive data: every record is flushed to disk before it is acknowledged
    /// (`flush.messages=1`). Costs throughput; replication is usually the better guarantee.
    pub fn sync_flush(mut self) -> Self {
        self.sync_flush = true;
        self
    }

    /// Validates the declaration and derives its name.
    pub fn build(self) -> Result<TopicSpec, TopicError> {
        validate_service_name(&self.owner)?;
        let invalid = |reason: String| TopicError::InvalidTopic { topic: self.base.clone(), reason };
        if !backbone_names::is_topic_name(&self.base) {
            return Err(invalid(format!("a topic name is {}", backbone_names::TOPIC_NAME_RULE)));
        }
        let name = match (self.visibility, self.version) {
            (Visibility::Public, Some(0)) => return Err(invalid("contract versions start at 1".into())),
            (Visibility::Public, Some(v)) => {
                if has_version_suffix(&self.base) {
                    return Err(invalid(format!(
                        "the version is added by the framework: declare `{}` with version {v}",
                        self.base.rsplit_once("-v").map_or(self.base.as_str(), |(b, _)| b)
                    )));
                }
                format!("{}.public.{}-v{v}", self.owner, self.base)
            }
            _ => format!("{}.private.{}", self.owner, self.base),
        };
        if name.len() > MAX_TOPIC_NAME {
            return Err(invalid(format!("`{name}` is longer than Kafka's {MAX_TOPIC_NAME} characters")));
        }
        let invalid = |reason: String| TopicError::InvalidTopic { topic: name.clone(), reason };
        if self.partitions < 1 {
            return Err(invalid(format!("partitions must be at least 1, not {}", self.partitions)));
        }
        if self.global_order && self.partitions != 1 {
            return Err(invalid("a global-order topic has exactly one partition".into()));
        }
        if self.replication < 1 {
            return Err(invalid(format!("replication must be at least 1, not {}", self.replication)));
        }
        if self.min_insync_replicas < 1 || self.min_insync_replicas > self.replication {
            return Err(invalid(format!(
                "min.insync.replicas must be between 1 and the replication factor {}, not {}",
                self.replication, self.min_insync_replicas
            )));
        }
        if let Cleanup::Compact { segment_bytes } | Cleanup::CompactDelete { segment_bytes, .. } =
            self.cleanup
            && !(1024 * 1024..=i32::MAX as u64).contains(&segment_bytes)
        {
            return Err(invalid(format!(
                "segment.bytes must be between 1 MiB and 2 GiB, not {segment_bytes}"
            )));
        }
        Ok(TopicSpec {
            name,
            owner: self.owner,
            visibility: self.visibility,
            partitions: self.partitions,
            replication: self.replication,
            min_insync_replicas: self.min_insync_replicas,
            cleanup: self.cleanup,
            sync_flush: self.sync_flush,
            global_order: self.global_order,
        })
    }
}

/// A [`TopicSpec`] as read from JSON, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopicSpec {
    name: String,
    owner: String,
    visibility: Visibility,
    partitions: i32,
    replication: i16,
    min_insync_replicas: i16,
    cleanup: Cleanup,
    sync_flush: bool,
    global_order: bool,
}

impl TryFrom<RawTopicSpec> for TopicSpec {
    type Error = TopicError;

    /// Rebuilds the spec through [`TopicBuilder::build`], so a deserialized spec obeys every rule a
    /// declared one does, and its name is the one the convention derives.
    fn try_from(raw: RawTopicSpec) -> Result<Self, TopicError> {
        validate_service_name(&raw.owner)?;
        let mismatch = || TopicError::InvalidTopic {
            topic: raw.name.clone(),
            reason: match raw.visibility {
                Visibility::Public => {
                    format!("a public topic of `{}` is named `{0}.public.<event>-v<N>`", raw.owner)
                }
                Visibility::Private => {
                    format!("a private topic of `{}` is named `{0}.private.<name>`", raw.owner)
                }
            },
        };
        let (base, version) = match raw.visibility {
            Visibility::Public => {
                let rest = raw.name.strip_prefix(&format!("{}.public.", raw.owner)).ok_or_else(mismatch)?;
                let (base, version) = rest.rsplit_once("-v").ok_or_else(mismatch)?;
                (base.to_owned(), Some(version.parse::<u32>().map_err(|_| mismatch())?))
            }
            Visibility::Private => {
                let base = raw.name.strip_prefix(&format!("{}.private.", raw.owner)).ok_or_else(mismatch)?;
                (base.to_owned(), None)
            }
        };
        let spec = TopicBuilder {
            owner: raw.owner.clone(),
            base,
            version,
            visibility: raw.visibility,
            partitions: raw.partitions,
            replication: raw.replication,
            min_insync_replicas: raw.min_insync_replicas,
            cleanup: raw.cleanup,
            sync_flush: raw.sync_flush,
            global_order: raw.global_order,
        }
        .build()?;
        // `-v01` parses as version 1 but is not the name the convention derives.
        if spec.name != raw.name {
            return Err(mismatch());
        }
        Ok(spec)
    }
}

fn has_version_suffix(name: &str) -> bool {
    name.rsplit_once("-v").is_some_and(|(_, v)| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
}

/// Checks a service name: 1–63 lower-case ASCII letters, digits and dashes, starting with a letter
/// and not ending with a dash (it is also a Kafka principal, a client-id prefix and a DNS label in
/// Kubernetes). The rule is `backbone_names`', which the macros check at compile time too.
pub fn validate_service_name(name: &str) -> Result<(), TopicError> {
    if backbone_names::is_service_name(name) {
        Ok(())
    } else {
        Err(TopicError::InvalidServiceName {
            name: name.to_owned(),
            reason: format!("a service name is {}", backbone_names::SERVICE_NAME_RULE),
        })
    }
}

/// The read rule: `service` may read `topic` unless it is another service's private topic.
pub fn check_may_read(service: &str, topic: &TopicSpec) -> Result<(), TopicError> {
    if topic.visibility() == Visibility::Private && !topic.is_owned_by(service) {
        return Err(TopicError::PrivateTopic {
            service: service.to_owned(),
            topic: topic.name().to_owned(),
            owner: topic.owner().to_owned(),
        });
    }
    Ok(())
}

/// Who owns a topic and who may read it, from its name alone (for tools that see only names).
pub fn parse_topic_name(name: &str) -> Option<(&str, Visibility)> {
    let (owner, rest) = name.split_once('.')?;
    match rest.split_once('.')? {
        ("public", _) => Some((owner, Visibility::Public)),
        ("private", _) => Some((owner, Visibility::Private)),
        _ => None,
    }
}

/// The event type a public topic is named for: `OrderCreated` for `orders.public.order-created-v1`
/// (the PascalCase of its `<event>`). `None` for a private topic or a name of another shape.
///
/// An event of that type, with a payload not framed with a schema id, is published without the
/// `backbone-event-type` header: this name says it already (see
/// [`IncomingEvent::event_type`](crate::handler::IncomingEvent::event_type)).
pub fn declared_event_type(name: &str) -> Option<String> {
    public_event(name).map(|event| pascal_case(event).collect())
}

/// The `<event>` of a public topic name `<owner>.public.<event>-v<N>`.
fn public_event(name: &str) -> Option<&str> {
    let (_, rest) = name.split_once(".public.")?;
    let (event, version) = rest.rsplit_once("-v")?;
    (!event.is_empty() && !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit())).then_some(event)
}

/// `order-created` as `OrderCreated`, char by char.
fn pascal_case(kebab: &str) -> impl Iterator<Item = char> + '_ {
    kebab.split('-').flat_map(|word| {
        let mut chars = word.chars();
        chars.next().map(|c| c.to_ascii_uppercase()).into_iter().chain(chars)
    })
}

/// Whether `event_type` is the one public topic `name` is named for ([`declared_event_type`]),
/// without allocating: the publisher asks it of every event.
pub(crate) fn is_declared_event_type(name: &str, event_type: &str) -> bool {
    public_event(name).is_some_and(|event| pascal_case(event).eq(event_type.chars()))
}

/// A topic declaration or use that the framework refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// A service name that breaks the naming rules.
    #[error("invalid service name `{name}`: {reason}")]
    InvalidServiceName {
        /// The name.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A topic declaration that breaks the naming or configuration rules.
    #[error("invalid topic `{topic}`: {reason}")]
    InvalidTopic {
        /// The topic (or the name it was declared with).
        topic: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A service declared that it writes (or owns) a topic another service owns.
    #[error(
        "service `{service}` may not write to `{topic}`: the topic is owned by service `{owner}`, its single writer; \
         publish an event on a topic `{service}` owns and let `{owner}` react to it"
    )]
    NotOwner {
        /// The service that tried.
        service: String,
        /// The topic.
        topic: String,
        /// Its owner.
        owner: String,
    },
    /// A service declared that it reads another service's private topic.
    #[error(
        "service `{service}` may not read `{topic}`: it is a private topic of service `{owner}`; \
         ask `{owner}` to publish what you need on a public topic"
    )]
    PrivateTopic {
        /// The service that tried.
        service: String,
        /// The topic.
        topic: String,
        /// Its owner.
        owner: String,
    },
}

impl TopicError {
    /// Declaration errors are never retriable: the code must change.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_topic_names_its_event_type() {
        assert_eq!(declared_event_type("orders.public.order-created-v1").as_deref(), Some("OrderCreated"));
        assert_eq!(declared_event_type("orders.public.events-v12").as_deref(), Some("Events"));
        assert_eq!(declared_event_type("orders.private.order-created"), None);
        assert_eq!(declared_event_type("orders.public.order-created"), None);
        assert_eq!(declared_event_type("orders.public.-v1"), None);
        assert_eq!(declared_event_type("plain"), None);
        assert!(is_declared_event_type("orders.public.order-created-v1", "OrderCreated"));
        assert!(!is_declared_event_type("orders.public.order-created-v1", "OrderCreate"));
        assert!(!is_declared_event_type("orders.public.order-created-v1", "OrderCreatedX"));
        assert!(!is_declared_event_type("orders.public.order-created-v1", "orderCreated"));
        assert!(!is_declared_event_type("orders.private.order-created", "OrderCreated"));
    }

    #[test]
    fn names_follow_the_convention() {
        let t = TopicSpec::public("orders", "order-created", 2).build().unwrap();
        assert_eq!(t.name(), "orders.public.order-created-v2");
        assert_eq!(parse_topic_name(t.name()), Some(("orders", Visibility::Public)));
        let p = TopicSpec::private("stock", "reservations").build().unwrap();
        assert_eq!(p.name(), "stock.private.reservations");
        assert_eq!(parse_topic_name(p.name()), Some(("stock", Visibility::Private)));
        assert_eq!(parse_topic_name("__consumer_offsets"), None);
    }

    #[test]
    fn durable_defaults() {
        let t = TopicSpec::public("orders", "order-created", 1).build().unwrap();
        assert_eq!((t.replication(), t.min_insync_replicas(), t.partitions()), (3, 2, 6));
        let c = t.configs(Profile::Production);
        assert_eq!(c["min.insync.replicas"], "2");
        assert_eq!(c["unclean.leader.election.enable"], "false");
        assert_eq!(c["cleanup.policy"], "delete");
        assert_eq!(t.effective_replication(Profile::Development), 1);
        assert_eq!(t.configs(Profile::Development)["min.insync.replicas"], "1");
    }

    #[test]
    fn cleanup_policies_and_flush() {
        let c = TopicSpec::private("stock", "levels").compacted().sync_flush().build().unwrap();
        let cfg = c.configs(Profile::Production);
        assert_eq!(cfg["cleanup.policy"], "compact");
        assert_eq!(cfg["segment.bytes"], DEFAULT_COMPACTED_SEGMENT_BYTES.to_string());
        assert_eq!(cfg["flush.messages"], "1");
        assert!(!cfg.contains_key("retention.ms"));
        let both =
            TopicSpec::private("stock", "x").compacted().retention(Duration::from_secs(60)).build().unwrap();
        assert_eq!(both.configs(Profile::Production)["cleanup.policy"], "compact,delete");
        assert_eq!(both.configs(Profile::Production)["retention.ms"], "60000");
        let forever = TopicSpec::private("orders", "events").retain_forever().build().unwrap();
        assert_eq!(forever.configs(Profile::Production)["retention.ms"], "-1");
    }

    #[test]
    fn global_order_is_one_partition() {
        let t = TopicSpec::public("orders", "ledger", 1).global_order().build().unwrap();
        assert_eq!(t.partitions(), 1);
        assert!(t.is_global_order());
        let err = TopicSpec::public("orders", "ledger", 1).global_order().partitions(3).build().unwrap_err();
        assert!(err.to_string().contains("exactly one partition"), "{err}");
    }

    #[test]
    fn specs_round_trip_through_json() {
        let specs = [
            TopicSpec::public("orders", "order-created", 2).partitions(12).sync_flush().build().unwrap(),
            TopicSpec::public("orders", "ledger", 1).global_order().retain_forever().build().unwrap(),
            TopicSpec::private("stock", "levels").compacted().segment_bytes(2 * 1024 * 1024).build().unwrap(),
            TopicSpec::private("stock", "x.y")
                .compacted()
                .retention(Duration::from_secs(60))
                .replication(5)
                .min_insync_replicas(3)
                .build()
                .unwrap(),
        ];
        for spec in specs {
            let json = serde_json::to_string(&spec).unwrap();
            let back: TopicSpec = serde_json::from_str(&json).unwrap();
            assert_eq!(back, spec, "{json}");
        }
    }

    #[test]
    fn deserializing_revalidates() {
        let good = serde_json::to_value(TopicSpec::private("stock", "levels").build().unwrap()).unwrap();
        let edit = |field: &str, value: serde_json::Value| {
            let mut v = good.clone();
            v[field] = value;
            serde_json::from_value::<TopicSpec>(v).unwrap_err().to_string()
        };
        let cases = [
            (edit("partitions", 0.into()), "partitions must be at least 1"),
            (edit("min_insync_replicas", 4.into()), "min.insync.replicas"),
            (edit("owner", "Stock".into()), "invalid service name `Stock`"),
            (edit("owner", "orders".into()), "a private topic of `orders` is named `orders.private.<name>`"),
            (edit("name", "stock.public.levels-v1".into()), "stock.private.<name>"),
            (edit("visibility", "public".into()), "stock.public.<event>-v<N>"),
            (edit("global_order", true.into()), "exactly one partition"),
            (edit("surprise", 1.into()), "unknown field `surprise`"),
        ];
        for (err, expected) in cases {
            assert!(err.contains(expected), "`{err}` should say `{expected}`");
        }
        let mut v = serde_json::to_value(TopicSpec::public("orders", "created", 1).build().unwrap()).unwrap();
        v["name"] = "orders.public.created-v01".into();
        assert!(serde_json::from_value::<TopicSpec>(v).is_err(), "a version with a leading zero");
    }

    #[test]
    fn bad_declarations_are_refused_with_reasons() {
        let cases = [
            (TopicSpec::public("Orders", "x", 1), "invalid service name `Orders`"),
            (TopicSpec::public("orders-", "x", 1), "not ending with '-'"),
            (TopicSpec::public("orders", "x", 0), "versions start at 1"),
            (TopicSpec::public("orders", "created-v1", 1), "the version is added by the framework"),
            (TopicSpec::public("orders", "has space", 1), "lower-case ASCII"),
            (TopicSpec::private("orders", "x").partitions(0), "partitions must be at least 1"),
            (TopicSpec::private("orders", "x").replication(2).min_insync_replicas(3), "min.insync.replicas"),
            (TopicSpec::private("orders", "x").compacted().segment_bytes(10), "segment.bytes"),
            (TopicSpec::private("orders", "x".repeat(300)), "longer than Kafka's 249"),
        ];
        for (builder, expected) in cases {
            let err = builder.build().unwrap_err().to_string();
            assert!(err.contains(expected), "`{err}` should say `{expected}`");
        }
    }
}
