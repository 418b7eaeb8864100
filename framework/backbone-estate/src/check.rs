//! The estate's checks, run before anything is applied: each finding names the services and topics
//! it is about.
//!
//! Two rules hold before any check runs, because a spec that breaks them is refused when it is
//! read or declared ([`crate::manifest::EstateError::Spec`]) and a service may appear only once
//! ([`crate::manifest::EstateError::Duplicate`]): one writer per topic (a topic's name carries its
//! owner, and only the owner may write it) and no service reads another's private topic. The
//! checks here are the ones between services: who produces what the others read, whether they
//! agree on the records and keys, whether the framework's own topics (dead letters, retries,
//! requests and replies) and consumer groups sit where the ACLs expect them. State topics (what a
//! table or an event-sourced aggregate keeps) need no rule of their own: they are topics of their
//! service, so only it writes them (the first rule above), and when private only it reads them
//! (the second).

use std::fmt;

use backbone::ServiceSpec;
use serde::Serialize;

use crate::manifest::Estate;

/// How bad a finding is: errors stop `backbone estate check` (exit 1) and apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Severity {
    /// Worth a look; nothing breaks.
    Warning,
    /// The estate would not work as declared.
    Error,
}

/// The rule a finding breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rule {
    /// A consumed topic has a producer in the estate.
    Producer,
    /// Consumers and producer agree on the records of a topic (their subjects).
    Schema,
    /// Consumers and producer agree on the key type.
    KeyType,
    /// Readers declare a topic with its owner's settings.
    TopicSettings,
    /// A dead-letter or retry topic belongs to the service consuming its source.
    DeadLetters,
    /// Request and reply topics belong to the requester and the responder.
    RequestReply,
    /// Consumer groups (and so transactional ids) sit under the service's prefix.
    GroupPrefix,
}

/// One thing the checks found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// The rule.
    pub rule: Rule,
    /// What is wrong, naming the services and topics.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{severity}: {}", self.message)
    }
}

impl Estate {
    /// Checks the estate as a whole; errors first.
    pub fn check(&self) -> Vec<Finding> {
        let mut findings = Vec::new();
        let mut add = |severity, rule, message: String| findings.push(Finding { severity, rule, message });
        for service in self.services() {
            self.check_consumed(service, &mut add);
            check_dead_letters(service, &mut add);
            self.check_requests(service, &mut add);
            check_groups(service, &mut add);
        }
        findings.sort_by(|a, b| {
            b.severity.cmp(&a.severity).then(a.rule.cmp(&b.rule)).then(a.message.cmp(&b.message))
        });
        findings.dedup();
        findings
    }

    /// Producer, records, keys and settings of what `service` reads from others.
    fn check_consumed(&self, service: &ServiceSpec, add: &mut impl FnMut(Severity, Rule, String)) {
        let me = service.name();
        for topic in service.consumed_topics() {
            let name = topic.name();
            let Some(owner) = self.service(topic.owner()).filter(|o| o.owned(name).is_some()) else {
                add(
                    Severity::Warning,
                    Rule::Producer,
                    format!(
                        "service `{me}` consumes `{name}`, which no service of the estate produces (its owner `{}` {})",
                        topic.owner(),
                        if self.service(topic.owner()).is_some() {
                            "does not declare it"
                        } else {
                            "is not in the estate"
                        }
                    ),
                );
                continue;
            };
            if owner.name() != me && owner.owned(name) != Some(topic) {
                add(
                    Severity::Warning,
                    Rule::TopicSettings,
                    format!(
                        "service `{me}` declares `{name}` with other settings than its owner `{}` (partitions {} vs {}, cleanup {:?} vs {:?})",
                        owner.name(),
                        topic.partitions(),
                        owner.owned(name).map_or(0, |t| t.partitions()),
                        topic.cleanup(),
                        owner.owned(name).map(|t| t.cleanup()),
                    ),
                );
            }
            let published: Vec<_> = owner.events().iter().filter(|e| e.topic == name).collect();
            for expected in service.expects().iter().filter(|e| e.topic == name) {
                if published.is_empty() {
                    add(
                        Severity::Warning,
                        Rule::Schema,
                        format!(
                            "service `{me}` expects `{}` on `{name}`, but `{}` declares no Avro event on it",
                            expected.record,
                            owner.name()
                        ),
                    );
                    continue;
                }
                let Some(event) = published.iter().find(|e| e.record == expected.record) else {
                    let subjects: Vec<String> =
                        published.iter().map(|e| format!("{} (subject {})", e.record, e.subject)).collect();
                    add(
                        Severity::Error,
                        Rule::Schema,
                        format!(
                            "service `{me}` expects `{}` on `{name}`, but `{}` publishes only {}",
                            expected.record,
                            owner.name(),
                            subjects.join(", ")
                        ),
                    );
                    continue;
                };
                if let (Some(want), Some(have)) = (&expected.key, &event.key)
                    && want != have
                {
                    add(
                        Severity::Error,
                        Rule::KeyType,
                        format!(
                            "service `{me}` expects keys of type `{want}` on `{name}`, but `{}` writes `{}` keyed by `{have}`",
                            owner.name(),
                            event.record
                        ),
                    );
                }
            }
        }
    }

    /// A responder owns its reply topic and reads requests; a requester reads the replies.
    fn check_requests(&self, service: &ServiceSpec, add: &mut impl FnMut(Severity, Rule, String)) {
        let me = service.name();
        for topic in service.owned_topics() {
            if let Some((exchange, version)) = exchange_of(topic.name(), "-replies") {
                let answers = service
                    .consumed_topics()
                    .iter()
                    .any(|t| exchange_of(t.name(), "-requests") == Some((exchange, version)));
                if !answers {
                    add(
                        Severity::Error,
                        Rule::RequestReply,
                        format!(
                            "service `{me}` owns the reply topic `{}` but reads no `{exchange}-requests-v{version}` topic: replies belong to the service that answers",
                            topic.name()
                        ),
                    );
                }
            }
            if let Some((exchange, version)) = exchange_of(topic.name(), "-requests") {
                for responder in self.services().filter(|s| s.name() != me) {
                    let replies = responder
                        .owned_topics()
                        .iter()
                        .find(|t| exchange_of(t.name(), "-replies") == Some((exchange, version)));
                    let reads_replies =
                        |name: &str| service.consumed_topics().iter().any(|t| t.name() == name);
                    if let Some(replies) = replies.filter(|r| !reads_replies(r.name())) {
                        add(
                            Severity::Error,
                            Rule::RequestReply,
                            format!(
                                "service `{me}` sends requests on `{}` but does not declare that it reads `{}`'s reply topic `{}`: its ACLs would not let it read the replies",
                                topic.name(),
                                responder.name(),
                                replies.name()
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// Every consumed source has the consumer's dead-letter topic; dead-letter and retry topics have
/// a source the service consumes.
fn check_dead_letters(service: &ServiceSpec, add: &mut impl FnMut(Severity, Rule, String)) {
    let me = service.name();
    let prefix = format!("{me}.private.");
    let consumed = |name: &str| service.consumed_topics().iter().any(|t| t.name() == name);
    for topic in service.consumers().iter().map(|c| c.topic.as_str()).filter(|t| consumed(t)) {
        let dlq = format!("{prefix}dlq.{topic}");
        if service.owned(&dlq).is_none() {
            add(
                Severity::Error,
                Rule::DeadLetters,
                format!("service `{me}` consumes `{topic}` but does not own its dead-letter topic `{dlq}`"),
            );
        }
    }
    for topic in service.owned_topics() {
        let name = topic.name();
        let source = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_prefix("dlq.").or_else(|| rest.strip_prefix("retry.")));
        if let Some(source) = source
            && !consumed(source)
        {
            add(
                Severity::Warning,
                Rule::DeadLetters,
                format!("service `{me}` owns `{name}` but does not consume its source `{source}`"),
            );
        }
    }
}

/// Groups start with `<service>.`, the prefix its ACLs allow (transactional ids start with the
/// group).
fn check_groups(service: &ServiceSpec, add: &mut impl FnMut(Severity, Rule, String)) {
    let me = service.name();
    for consumer in service.consumers() {
        if !consumer.group.starts_with(&format!("{me}.")) {
            let what =
                if consumer.exactly_once { "consumer group and transactional ids" } else { "consumer group" };
            add(
                Severity::Error,
                Rule::GroupPrefix,
                format!(
                    "service `{me}` reads `{}` in group `{}`: its {what} must start with `{me}.`, the prefix its ACLs allow",
                    consumer.topic, consumer.group
                ),
            );
        }
    }
}

/// `("stock-level", 1)` of a public `<owner>.public.stock-level-replies-v1` with `suffix` `-replies`.
fn exchange_of<'a>(topic: &'a str, suffix: &str) -> Option<(&'a str, &'a str)> {
    let (_, rest) = topic.split_once('.')?;
    let rest = rest.strip_prefix("public.")?;
    let (base, version) = rest.rsplit_once("-v")?;
    Some((base.strip_suffix(suffix)?, version))
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
