//! A service: its name, the topics it owns, writes and reads, and the rules between them.
//!
//! The declaration is plain data, a [`ServiceSpec`], printable as JSON: estate-wide tools
//! (`backbone topics plan|apply`, ACLs, quotas) read specs, not code. Ownership is checked when the
//! spec is built, before anything touches Kafka (R13a):
//!
//! - a service writes only topics it owns (each topic has a single writer);
//! - a service never reads another service's private topic.
//!
//! ```
//! use backbone::{Service, topic::TopicSpec};
//!
//! let created = TopicSpec::public("orders", "order-created", 1).build()?;
//! let reservations = TopicSpec::private("stock", "reservations").compacted().build()?;
//!
//! let stock = Service::new("stock").owns(&reservations).consumes(&created).spec()?;
//! assert_eq!(stock.produces(), [reservations.name()]);
//!
//! // Stock may not write Orders' topic.
//! let err = Service::new("stock").produces(&created).spec().unwrap_err();
//! assert!(err.to_string().contains("owned by service `orders`"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::{Deserialize, Serialize};

pub use crate::runtime::{Context, Running};
use crate::topic::{TopicError, TopicSpec, check_may_read, validate_service_name};

/// The validated declaration of a service.
///
/// It deserializes (from [`ServiceSpec::to_json`]'s output, say) through the same checks as
/// [`Service::spec`]: every topic is re-validated and so is ownership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawServiceSpec")]
pub struct ServiceSpec {
    name: String,
    owns: Vec<TopicSpec>,
    consumes: Vec<TopicSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    events: Vec<EventBinding>,
    #[serde(default, skip_serializing_if = "Quotas::is_unlimited")]
    quotas: Quotas,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    consumers: Vec<ConsumerBinding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    expects: Vec<ExpectedEvent>,
}

/// A consumer of the service: the topic it reads and the consumer group it reads it in. Its
/// transactional ids (exactly once) start with the group: `<group>.<instance>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerBinding {
    /// The topic read (one the service consumes or owns).
    pub topic: String,
    /// The consumer group, or the prefix of per-instance groups (`<group>.<uuid>`: replicated
    /// tables, request replies).
    pub group: String,
    /// Whether it reads exactly once: it then writes in transactions whose ids start with `group`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exactly_once: bool,
}

/// An Avro event type a service expects to read on a topic (its handler's `Event<T>`): the
/// topic's producer must publish that record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedEvent {
    /// The topic.
    pub topic: String,
    /// The record's full name.
    pub record: String,
    /// The key's type, when declared (`string`, `bytes` …): the producer's must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The throughput a service's principal may use, enforced by the brokers as Kafka client quotas
/// on its user (`backbone estate apply` sets them). `None`: no quota of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Bytes per second the service may produce, per broker (`producer_byte_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_byte_rate: Option<u64>,
    /// Bytes per second the service may fetch, per broker (`consumer_byte_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_byte_rate: Option<u64>,
    /// Percentage of a broker's request-handler and network threads' time the service may use
    /// (`request_percentage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_percentage: Option<f64>,
}

impl Eq for Quotas {}

impl Quotas {
    /// Whether no quota is set.
    pub fn is_unlimited(&self) -> bool {
        *self == Self::default()
    }
}

/// An Avro event type a service publishes on one of its topics: registered at start-up, so an
/// incompatible schema stops the service before anything is produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBinding {
    /// The topic.
    pub topic: String,
    /// The registry subject.
    pub subject: String,
    /// The record's full name.
    pub record: String,
    /// The schema's JSON text.
    pub schema: String,
    /// The key's type, when declared (`string`, `bytes` …): consumers expecting another disagree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl ServiceSpec {
    /// The service name: its Kafka principal and the prefix of its client ids and consumer groups.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Topics this service owns (and alone writes); provisioning creates these.
    pub fn owned_topics(&self) -> &[TopicSpec] {
        &self.owns
    }

    /// Topics this service reads.
    pub fn consumed_topics(&self) -> &[TopicSpec] {
        &self.consumes
    }

    /// Names of the topics this service may write: exactly those it owns.
    pub fn produces(&self) -> Vec<&str> {
        self.owns.iter().map(TopicSpec::name).collect()
    }

    /// The Avro event types this service publishes, and their subjects.
    pub fn events(&self) -> &[EventBinding] {
        &self.events
    }

    /// The owned topic called `name`, if any.
    pub fn owned(&self, name: &str) -> Option<&TopicSpec> {
        self.owns.iter().find(|t| t.name() == name)
    }

    /// The throughput quotas declared for this service's principal.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// The consumers of this service: topic, group, exactly once or not.
    pub fn consumers(&self) -> &[ConsumerBinding] {
        &self.consumers
    }

    /// The Avro event types this service expects to read, by topic.
    pub fn expects(&self) -> &[ExpectedEvent] {
        &self.expects
    }

    /// The spec as pretty JSON (for `backbone topics plan --spec`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a spec is plain data")
    }

    /// Reads a spec from JSON (as [`to_json`](Self::to_json) writes it), validating names, topic
    /// settings and ownership as [`Service::spec`] does.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

/// A [`ServiceSpec`] as read from JSON, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceSpec {
    name: String,
    owns: Vec<TopicSpec>,
    consumes: Vec<TopicSpec>,
    #[serde(default)]
    events: Vec<EventBinding>,
    #[serde(default)]
    quotas: Quotas,
    #[serde(default)]
    consumers: Vec<ConsumerBinding>,
    #[serde(default)]
    expects: Vec<ExpectedEvent>,
}

impl TryFrom<RawServiceSpec> for ServiceSpec {
    type Error = TopicError;

    fn try_from(raw: RawServiceSpec) -> Result<Self, TopicError> {
        let mut service = raw.owns.iter().fold(Service::new(raw.name), Service::owns);
        service.events = raw.events;
        service.quotas = raw.quotas;
        service.consumers = raw.consumers;
        service.expects = raw.expects;
        raw.consumes.iter().fold(service, Service::consumes).spec()
    }
}

/// Declares a service; [`Service::spec`] validates the declaration.
#[derive(Debug, Clone)]
#[must_use = "a service declaration does nothing until built"]
pub struct Service {
    name: String,
    owns: Vec<TopicSpec>,
    produces: Vec<TopicSpec>,
    consumes: Vec<TopicSpec>,
    events: Vec<EventBinding>,
    quotas: Quotas,
    consumers: Vec<ConsumerBinding>,
    expects: Vec<ExpectedEvent>,
}

impl Service {
    /// A service called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            owns: Vec::new(),
            produces: Vec::new(),
            consumes: Vec::new(),
            events: Vec::new(),
            quotas: Quotas::default(),
            consumers: Vec::new(),
            expects: Vec::new(),
        }
    }

    /// Declares a consumer: `topic` (consumed or owned) read in consumer group `group`, exactly
    /// once or not. Estate tools check the group is under the service's prefix (`<service>.`),
    /// which its ACLs cover.
    pub fn consumer(mut self, topic: &TopicSpec, group: impl Into<String>, exactly_once: bool) -> Self {
        let binding = ConsumerBinding { topic: topic.name().to_owned(), group: group.into(), exactly_once };
        if !self.consumers.contains(&binding) {
            self.consumers.push(binding);
        }
        self
    }

    /// Declares that this service reads Avro events `T` on `topic` (which it must consume): estate
    /// tools check the topic's producer publishes that record.
    pub fn expects<T: crate::schema::AvroEvent>(self, topic: &TopicSpec) -> Self {
        self.expects_keyed::<T>(topic, "")
    }

    /// [`expects`](Self::expects), keyed by `key` (a type name as [`BoundEvent::KEY_TYPE`]
    /// writes it; empty: unknown).
    ///
    /// [`BoundEvent::KEY_TYPE`]: crate::event::BoundEvent::KEY_TYPE
    pub fn expects_keyed<T: crate::schema::AvroEvent>(mut self, topic: &TopicSpec, key: &str) -> Self {
        let expected = ExpectedEvent {
            topic: topic.name().to_owned(),
            record: crate::schema::full_name(T::schema()),
            key: (!key.is_empty()).then(|| key.to_owned()),
        };
        if !self.expects.contains(&expected) {
            self.expects.push(expected);
        }
        self
    }

    /// Records that the events `T` this service publishes on `topic` are keyed by `key` (a type
    /// name as [`BoundEvent::KEY_TYPE`] writes it; empty: unknown).
    ///
    /// [`BoundEvent::KEY_TYPE`]: crate::event::BoundEvent::KEY_TYPE
    pub fn event_key<T: crate::schema::AvroEvent>(mut self, topic: &TopicSpec, key: &str) -> Self {
        let record = crate::schema::full_name(T::schema());
        for event in self.events.iter_mut().filter(|e| e.topic == topic.name() && e.record == record) {
            event.key = (!key.is_empty()).then(|| key.to_owned());
        }
        self
    }

    /// Declares the throughput quotas of this service's principal (applied by `backbone estate
    /// apply`).
    pub fn quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// Declares a topic this service owns: it is provisioned at start-up and this service alone
    /// writes it.
    pub fn owns(mut self, topic: &TopicSpec) -> Self {
        self.owns.push(topic.clone());
        self
    }

    /// Declares that this service writes `topic`; refused unless it owns it.
    pub fn produces(mut self, topic: &TopicSpec) -> Self {
        self.produces.push(topic.clone());
        self
    }

    /// Declares that this service reads `topic`; refused for another service's private topic.
    pub fn consumes(mut self, topic: &TopicSpec) -> Self {
        self.consumes.push(topic.clone());
        self
    }

    /// Declares that this service publishes Avro events `T` on `topic` (which it must own), under
    /// the subject `<topic>-value` (TopicNameStrategy). Start-up registers the schema.
    pub fn event<T: crate::schema::AvroEvent>(self, topic: &TopicSpec) -> Self {
        self.event_with::<T>(topic, crate::schema::SubjectStrategy::TopicName)
    }

    /// Like [`event`](Self::event) with a subject strategy: `RecordName` for topics carrying several
    /// event types.
    pub fn event_with<T: crate::schema::AvroEvent>(
        mut self,
        topic: &TopicSpec,
        strategy: crate::schema::SubjectStrategy,
    ) -> Self {
        let record = crate::schema::full_name(T::schema());
        self.events.push(EventBinding {
            topic: topic.name().to_owned(),
            subject: strategy.subject(topic.name(), &record),
            record,
            schema: T::SCHEMA.to_owned(),
            key: None,
        });
        self.produces(topic)
    }

    /// Validates names and ownership and returns the plain-data spec.
    pub fn spec(self) -> Result<ServiceSpec, TopicError> {
        validate_service_name(&self.name)?;
        for topic in self.owns.iter().chain(&self.produces) {
            if !topic.is_owned_by(&self.name) {
                return Err(TopicError::NotOwner {
                    service: self.name.clone(),
                    topic: topic.name().to_owned(),
                    owner: topic.owner().to_owned(),
                });
            }
        }
        for topic in &self.consumes {
            check_may_read(&self.name, topic)?;
        }
        let mut owns = self.owns;
        for topic in self.produces {
            if !owns.iter().any(|t| t.name() == topic.name()) {
                owns.push(topic);
            }
        }
        for (i, topic) in owns.iter().enumerate() {
            if let Some(other) = owns[..i].iter().find(|t| t.name() == topic.name() && *t != topic) {
                return Err(TopicError::InvalidTopic {
                    topic: topic.name().to_owned(),
                    reason: format!("declared twice with different settings: {other:?} and {topic:?}"),
                });
            }
        }
        owns.dedup_by(|a, b| a.name() == b.name());
        let mut consumes = self.consumes;
        consumes.dedup_by(|a, b| a.name() == b.name());
        for event in &self.events {
            if !owns.iter().any(|t| t.name() == event.topic) {
                return Err(TopicError::InvalidTopic {
                    topic: event.topic.clone(),
                    reason: format!(
                        "service `{}` declares event `{}` on a topic it does not own",
                        self.name, event.record
                    ),
                });
            }
        }
        let known = |topic: &str| owns.iter().chain(&consumes).any(|t| t.name() == topic);
        for consumer in &self.consumers {
            if !known(&consumer.topic) {
                return Err(TopicError::InvalidTopic {
                    topic: consumer.topic.clone(),
                    reason: format!(
                        "service `{}` has a consumer (group `{}`) of a topic it neither owns nor consumes",
                        self.name, consumer.group
                    ),
                });
            }
            if consumer.group.is_empty() {
                return Err(TopicError::InvalidTopic {
                    topic: consumer.topic.clone(),
                    reason: format!("service `{}` has a consumer with an empty group", self.name),
                });
            }
        }
        for expected in &self.expects {
            if !known(&expected.topic) {
                return Err(TopicError::InvalidTopic {
                    topic: expected.topic.clone(),
                    reason: format!(
                        "service `{}` expects `{}` on a topic it neither owns nor consumes",
                        self.name, expected.record
                    ),
                });
            }
        }
        Ok(ServiceSpec {
            name: self.name,
            owns,
            consumes,
            events: self.events,
            quotas: self.quotas,
            consumers: self.consumers,
            expects: self.expects,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_through_json() {
        let created = TopicSpec::public("orders", "order-created", 1).partitions(3).build().unwrap();
        let events = TopicSpec::private("orders", "events").retain_forever().build().unwrap();
        let levels = TopicSpec::public("stock", "levels", 2).compacted().build().unwrap();
        let orders = Service::new("orders").owns(&created).owns(&events).consumes(&levels).spec().unwrap();
        assert_eq!(ServiceSpec::from_json(&orders.to_json()).unwrap(), orders);
    }

    #[test]
    fn consumers_and_expected_events_are_validated_and_optional() {
        let created = TopicSpec::public("orders", "order-created", 1).build().unwrap();
        let other = TopicSpec::public("pricing", "prices", 1).build().unwrap();
        let err = Service::new("stock").consumer(&other, "stock.x", false).spec().unwrap_err().to_string();
        assert!(
            err.contains("has a consumer (group `stock.x`) of a topic it neither owns nor consumes"),
            "{err}"
        );
        let err = Service::new("stock").consumes(&created).consumer(&created, "", false).spec().unwrap_err();
        assert!(err.to_string().contains("empty group"), "{err}");

        let stock = Service::new("stock").consumes(&created).consumer(&created, "stock.reserve", true);
        let spec = stock.spec().unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&spec.to_json()).unwrap();
        assert_eq!(
            json["consumers"],
            serde_json::json!([{"topic": created.name(), "group": "stock.reserve", "exactly_once": true}])
        );
        // A spec from before these fields reads as one without them.
        json.as_object_mut().unwrap().remove("consumers");
        let old = ServiceSpec::from_json(&json.to_string()).unwrap();
        assert!(old.consumers().is_empty() && old.expects().is_empty());
        json["expects"] = serde_json::json!([{"topic": other.name(), "record": "x.Price"}]);
        let err = ServiceSpec::from_json(&json.to_string()).unwrap_err().to_string();
        assert!(err.contains("expects `x.Price` on a topic it neither owns nor consumes"), "{err}");
    }

    #[test]
    fn deserializing_revalidates_ownership() {
        let created = TopicSpec::public("orders", "order-created", 1).build().unwrap();
        let reservations = TopicSpec::private("stock", "reservations").build().unwrap();
        let stock = Service::new("stock").owns(&reservations).spec().unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&stock.to_json()).unwrap();

        let mut writes_others = json.clone();
        writes_others["owns"].as_array_mut().unwrap().push(serde_json::to_value(&created).unwrap());
        let err = ServiceSpec::from_json(&writes_others.to_string()).unwrap_err().to_string();
        assert!(err.contains("may not write to `orders.public.order-created-v1`"), "{err}");

        json["name"] = "orders".into();
        let err = ServiceSpec::from_json(&json.to_string()).unwrap_err().to_string();
        assert!(err.contains("owned by service `stock`"), "{err}");

        let orders = Service::new("orders").owns(&created).spec().unwrap();
        let mut reads_private: serde_json::Value = serde_json::from_str(&orders.to_json()).unwrap();
        reads_private["consumes"] = serde_json::json!([reservations]);
        let err = ServiceSpec::from_json(&reads_private.to_string()).unwrap_err().to_string();
        assert!(err.contains("private topic of service `stock`"), "{err}");
    }
}
