//! The estate as [Strimzi](https://strimzi.io) custom resources (`kafka.strimzi.io/v1beta2`), for
//! Kubernetes: what `backbone export k8s` writes.
//!
//! - `kafka.yaml`: one `Kafka` in KRaft mode (annotations `strimzi.io/kraft: enabled` and
//!   `strimzi.io/node-pools: enabled`) with a TLS listener authenticating with SCRAM-SHA-512,
//!   `authorization: simple`, and the Topic and User Operators (or mutual TLS:
//!   [`Authentication::Tls`]); and one `KafkaNodePool` of
//!   [`Options::nodes`] combined controller and broker nodes on persistent claims.
//! - `topics.yaml`: one `KafkaTopic` per topic a service of the estate owns (what `estate apply`
//!   provisions): partitions, replicas and the configuration the framework manages, as in the
//!   production profile ([`backbone::topic::TopicSpec::configs`]).
//! - `users.yaml`: one `KafkaUser` per service (SCRAM-SHA-512): its ACLs are the estate's
//!   ([`Estate::acls`], the ones `estate apply` grants), grouped into Strimzi's rules, and its
//!   quotas are the service's ([`Estate::quotas`]).
//! - `kustomization.yaml`: the three files as a kustomize base.
//!
//! Everything is sorted, so the same estate always gives the same files.

use std::collections::{BTreeMap, BTreeSet};

use backbone::Profile;
use backbone::topic::TopicSpec;
use serde_json::{Map, Value, json};

use crate::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
use crate::manifest::Estate;

/// The API version of the resources.
pub const API_VERSION: &str = "kafka.strimzi.io/v1beta2";
/// The Kafka cluster's name unless one is given (`backbone export k8s --cluster`).
pub const DEFAULT_CLUSTER: &str = "backbone";
/// The Kafka version of the cluster: the test kit's (`backbone_testkit`'s `KAFKA_VERSION`); it
/// needs Strimzi 0.48 or later.
pub const KAFKA_VERSION: &str = "4.1.1";
/// The label tying a topic or user to its cluster.
pub const CLUSTER_LABEL: &str = "strimzi.io/cluster";
/// The name of the TLS listener clients connect to.
pub const LISTENER: &str = "tls";
/// The port of [`LISTENER`].
pub const LISTENER_PORT: u16 = 9093;
/// The command that writes the files, named in their header.
pub const COMMAND: &str = "backbone export k8s";

/// How the services authenticate to the cluster: the listener's authentication and the users'.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Authentication {
    /// SASL SCRAM-SHA-512 over TLS: the User Operator writes each user's password to a Secret
    /// named after it; the principal is `User:<service>`, as `estate apply` grants.
    #[default]
    ScramSha512,
    /// Mutual TLS: the User Operator issues each user a client certificate (principal
    /// `User:CN=<service>`; Strimzi applies the user's ACLs to it).
    Tls,
}

impl Authentication {
    /// Strimzi's name of it (`scram-sha-512`, `tls`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScramSha512 => "scram-sha-512",
            Self::Tls => "tls",
        }
    }
}

/// How the resources are rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The `Kafka` resource's name (its topics and users carry it in [`CLUSTER_LABEL`]).
    pub cluster: String,
    /// The namespace written in every resource's metadata (none: left to kustomize or kubectl).
    pub namespace: Option<String>,
    /// How many combined controller and broker nodes the node pool has.
    pub nodes: u32,
    /// The size of each node's persistent volume claim.
    pub storage_size: String,
    /// How the services authenticate.
    pub authentication: Authentication,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cluster: DEFAULT_CLUSTER.to_owned(),
            namespace: None,
            nodes: 3,
            storage_size: "100Gi".to_owned(),
            authentication: Authentication::default(),
        }
    }
}

impl Options {
    fn metadata(&self, name: &str, labelled: bool) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), name.into());
        if let Some(ns) = &self.namespace {
            m.insert("namespace".into(), ns.as_str().into());
        }
        if labelled {
            m.insert("labels".into(), json!({ CLUSTER_LABEL: self.cluster }));
        }
        Value::Object(m)
    }
}

/// The `Kafka` resource and its `KafkaNodePool`.
pub fn kafka(options: &Options) -> Vec<Value> {
    let mut kafka_meta = options.metadata(&options.cluster, false);
    kafka_meta["annotations"] = json!({ "strimzi.io/kraft": "enabled", "strimzi.io/node-pools": "enabled" });
    let replicas = options.nodes.min(3);
    let kafka = json!({
        "apiVersion": API_VERSION,
        "kind": "Kafka",
        "metadata": kafka_meta,
        "spec": {
            "kafka": {
                "version": KAFKA_VERSION,
                "listeners": [{
                    "name": LISTENER,
                    "port": LISTENER_PORT,
                    "type": "internal",
                    "tls": true,
                    "authentication": { "type": options.authentication.as_str() },
                }],
                "authorization": { "type": "simple" },
                "config": {
                    "offsets.topic.replication.factor": replicas,
                    "transaction.state.log.replication.factor": replicas,
                    "transaction.state.log.min.isr": replicas.saturating_sub(1).max(1),
                    "default.replication.factor": replicas,
                    "min.insync.replicas": replicas.saturating_sub(1).max(1),
                    "auto.create.topics.enable": false,
                    "unclean.leader.election.enable": false,
                },
            },
            "entityOperator": { "topicOperator": {}, "userOperator": {} },
        },
    });
    let pool = json!({
        "apiVersion": API_VERSION,
        "kind": "KafkaNodePool",
        "metadata": options.metadata("combined", true),
        "spec": {
            "replicas": options.nodes,
            "roles": ["controller", "broker"],
            "storage": {
                "type": "jbod",
                "volumes": [{
                    "id": 0,
                    "type": "persistent-claim",
                    "size": options.storage_size,
                    "deleteClaim": false,
                    "kraftMetadata": "shared",
                }],
            },
        },
    });
    vec![kafka, pool]
}

/// The topics the estate provisions (each service's own, as `estate apply` does), by name.
pub fn owned_topics(estate: &Estate) -> BTreeMap<&str, &TopicSpec> {
    estate.services().flat_map(|s| s.owned_topics()).map(|t| (t.name(), t)).collect()
}

/// Whether `name` is a valid Kubernetes resource name (a DNS-1123 subdomain).
pub fn is_k8s_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The `KafkaTopic` resource's name for a topic: the topic's name when it is a valid Kubernetes
/// name, else one made of it (lowercase, other characters as `-`), the Kafka name going in
/// `spec.topicName`.
pub fn topic_resource_name(topic: &str) -> String {
    if is_k8s_name(topic) {
        return topic.to_owned();
    }
    let mut name: String = topic
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.') => c,
            _ => '-',
        })
        .collect();
    name =
        name.split('.').map(|l| l.trim_matches('-')).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(".");
    name.truncate(253);
    name.trim_end_matches(['.', '-']).to_owned()
}

/// The largest integer every YAML and JSON reader keeps exactly (JavaScript's safe integers).
const EXACT_INTEGER: i64 = (1 << 53) - 1;

/// A topic configuration value as YAML should carry it: a number or boolean when it is one (a
/// number too large for a double stays a string, as Kafka's configs are strings anyway).
fn config_value(value: &str) -> Value {
    match value {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        v => match v.parse::<i64>() {
            Ok(n) if n.abs() <= EXACT_INTEGER => Value::from(n),
            _ => Value::String(v.to_owned()),
        },
    }
}

/// One `KafkaTopic` per topic the estate owns.
pub fn topics(estate: &Estate, options: &Options) -> Vec<Value> {
    owned_topics(estate)
        .into_iter()
        .map(|(name, topic)| {
            let resource = topic_resource_name(name);
            let config: Map<String, Value> = topic
                .configs(Profile::Production)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), config_value(&v)))
                .collect();
            let mut spec = Map::new();
            if resource != name {
                spec.insert("topicName".into(), name.into());
            }
            spec.insert("partitions".into(), topic.partitions().into());
            spec.insert("replicas".into(), topic.effective_replication(Profile::Production).into());
            spec.insert("config".into(), Value::Object(config));
            json!({
                "apiVersion": API_VERSION,
                "kind": "KafkaTopic",
                "metadata": options.metadata(&resource, true),
                "spec": spec,
            })
        })
        .collect()
}

fn resource_type(t: ResourceType) -> &'static str {
    match t {
        ResourceType::Topic => "topic",
        ResourceType::Group => "group",
        ResourceType::TransactionalId => "transactionalId",
        ResourceType::Cluster => "cluster",
    }
}

fn operation(op: Operation) -> &'static str {
    match op {
        Operation::All => "All",
        Operation::Read => "Read",
        Operation::Write => "Write",
        Operation::Create => "Create",
        Operation::Delete => "Delete",
        Operation::Alter => "Alter",
        Operation::Describe => "Describe",
        Operation::DescribeConfigs => "DescribeConfigs",
        Operation::AlterConfigs => "AlterConfigs",
        Operation::IdempotentWrite => "IdempotentWrite",
    }
}

/// Strimzi's ACL rules for `acls` (one principal's): one rule per resource, pattern, host and
/// permission, with its operations, sorted.
pub fn acl_rules<'a>(acls: impl IntoIterator<Item = &'a AclBinding>) -> Vec<Value> {
    type Key<'a> = (ResourceType, &'a str, PatternType, &'a str, Permission);
    let mut rules: BTreeMap<Key<'a>, BTreeSet<&'static str>> = BTreeMap::new();
    for acl in acls {
        rules
            .entry((acl.resource_type, &acl.resource_name, acl.pattern_type, &acl.host, acl.permission))
            .or_default()
            .insert(operation(acl.operation));
    }
    rules
        .into_iter()
        .map(|((kind, name, pattern, host, permission), ops)| {
            let resource = match kind {
                ResourceType::Cluster => json!({ "type": "cluster" }),
                _ => json!({
                    "type": resource_type(kind),
                    "name": name,
                    "patternType": match pattern { PatternType::Literal => "literal", PatternType::Prefixed => "prefix" },
                }),
            };
            json!({
                "resource": resource,
                "operations": ops,
                "host": host,
                "type": match permission { Permission::Allow => "allow", Permission::Deny => "deny" },
            })
        })
        .collect()
}

/// One `KafkaUser` per service: SCRAM-SHA-512 (or TLS), the service's ACLs and its quotas.
pub fn users(estate: &Estate, options: &Options) -> Vec<Value> {
    let acls = estate.acls();
    let quotas = estate.quotas();
    estate
        .services()
        .map(|service| {
            let principal = format!("User:{}", service.name());
            let mut spec = json!({
                "authentication": { "type": options.authentication.as_str() },
                "authorization": {
                    "type": "simple",
                    "acls": acl_rules(acls.iter().filter(|a| a.principal == principal)),
                },
            });
            if let Some(q) = quotas.get(service.name()) {
                let mut m = Map::new();
                if let Some(rate) = q.producer_byte_rate {
                    m.insert("producerByteRate".into(), rate.into());
                }
                if let Some(rate) = q.consumer_byte_rate {
                    m.insert("consumerByteRate".into(), rate.into());
                }
                if let Some(pct) = q.request_percentage {
                    // Strimzi's requestPercentage is an integer: the nearest, at least 1.
                    m.insert("requestPercentage".into(), (pct.round().max(1.0) as u64).into());
                }
                spec["quotas"] = Value::Object(m);
            }
            json!({
                "apiVersion": API_VERSION,
                "kind": "KafkaUser",
                "metadata": options.metadata(service.name(), true),
                "spec": spec,
            })
        })
        .collect()
}

/// The files `backbone export k8s` writes, by name: `kafka.yaml`, `topics.yaml`, `users.yaml` and
/// `kustomization.yaml`.
pub fn files(estate: &Estate, options: &Options) -> Vec<(&'static str, String)> {
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["kafka.yaml", "topics.yaml", "users.yaml"],
    });
    vec![
        ("kafka.yaml", to_yaml(&kafka(options))),
        ("topics.yaml", to_yaml(&topics(estate, options))),
        ("users.yaml", to_yaml(&users(estate, options))),
        ("kustomization.yaml", to_yaml(&[kustomization])),
    ]
}

/// `documents` as a YAML stream (`---` between documents), after a header saying it is
/// generated and by which command.
pub fn to_yaml(documents: &[Value]) -> String {
    let mut out = format!(
        "# Generated by `{COMMAND}` from the estate's manifest (the services' specs): do not edit.\n"
    );
    for (i, doc) in documents.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        emit(&mut out, doc, 0);
    }
    out
}

/// Writes `value` (a mapping or sequence at the top) as block YAML indented by `indent`.
fn emit(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                out.push_str(&format!("{pad}{}:", scalar_string(k)));
                emit_value(out, v, indent);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&format!("{pad}-"));
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // The first key on the dash's line, the others under it.
                        let mut first = true;
                        for (k, v) in map {
                            if first {
                                out.push_str(&format!(" {}:", scalar_string(k)));
                                first = false;
                            } else {
                                out.push_str(&format!("{pad}  {}:", scalar_string(k)));
                            }
                            emit_value(out, v, indent + 2);
                        }
                    }
                    other => emit_value(out, other, indent),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

/// Writes the value after a `key:` or `-`: inline when a scalar or empty, else on the next lines.
fn emit_value(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            emit(out, value, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            emit(out, value, indent + 2);
        }
        other => out.push_str(&format!(" {}\n", scalar(other))),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => scalar_string(s),
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        other => other.to_string(),
    }
}

/// A string as a YAML scalar: plain when YAML reads it back as the same string, else quoted
/// (JSON's double-quoted strings are YAML's).
fn scalar_string(s: &str) -> String {
    let plain = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n" | "nan" | "inf"
        );
    if plain { s.to_owned() } else { Value::String(s.to_owned()).to_string() }
}

#[cfg(test)]
mod tests {
    use backbone::topic::TopicSpec;
    use backbone::{Quotas, Service};

    use super::*;

    fn estate() -> Estate {
        let order = TopicSpec::public("orders", "order", 1).partitions(12).build().unwrap();
        let state = TopicSpec::private("orders", "state").compacted().build().unwrap();
        let validation = TopicSpec::public("stock", "order-validation", 1).build().unwrap();
        let orders = Service::new("orders")
            .owns(&order)
            .owns(&state)
            .consumes(&validation)
            .quotas(Quotas {
                producer_byte_rate: Some(1 << 20),
                consumer_byte_rate: Some(2 << 20),
                request_percentage: Some(12.4),
            })
            .spec()
            .unwrap();
        let stock = Service::new("stock").owns(&validation).consumes(&order).spec().unwrap();
        Estate::of([orders, stock]).unwrap()
    }

    fn user<'a>(users: &'a [Value], name: &str) -> &'a Value {
        users.iter().find(|u| u["metadata"]["name"] == name).unwrap()
    }

    #[test]
    fn each_service_is_a_scram_user_with_the_estates_acls_as_rules() {
        let users = users(&estate(), &Options::default());
        assert_eq!(users.len(), 2);
        let stock = user(&users, "stock");
        assert_eq!(stock["metadata"]["labels"][CLUSTER_LABEL], DEFAULT_CLUSTER);
        assert_eq!(stock["spec"]["authentication"]["type"], "scram-sha-512");
        assert_eq!(stock["spec"]["authorization"]["type"], "simple");
        assert_eq!(
            stock["spec"]["authorization"]["acls"],
            json!([
                { "resource": { "type": "topic", "name": "orders.public.order-v1", "patternType": "literal" },
                  "operations": ["Describe", "Read"], "host": "*", "type": "allow" },
                { "resource": { "type": "topic", "name": "stock.", "patternType": "prefix" },
                  "operations": ["AlterConfigs", "Create", "Describe", "DescribeConfigs", "Read", "Write"],
                  "host": "*", "type": "allow" },
                { "resource": { "type": "group", "name": "stock.", "patternType": "prefix" },
                  "operations": ["Read"], "host": "*", "type": "allow" },
                { "resource": { "type": "transactionalId", "name": "stock.", "patternType": "prefix" },
                  "operations": ["Describe", "Write"], "host": "*", "type": "allow" },
                { "resource": { "type": "cluster" }, "operations": ["IdempotentWrite"], "host": "*", "type": "allow" },
            ])
        );
        assert!(stock["spec"].get("quotas").is_none(), "stock declares no quota");
    }

    #[test]
    fn every_acl_of_the_estate_is_in_exactly_one_rule() {
        let estate = estate();
        let users = users(&estate, &Options::default());
        let mut granted = 0;
        for u in &users {
            for rule in u["spec"]["authorization"]["acls"].as_array().unwrap() {
                granted += rule["operations"].as_array().unwrap().len();
            }
        }
        assert_eq!(granted, estate.acls().len());
    }

    #[test]
    fn tls_authenticates_the_listener_and_the_users() {
        let options = Options { authentication: Authentication::Tls, ..Options::default() };
        let users = users(&estate(), &options);
        assert!(users.iter().all(|u| u["spec"]["authentication"]["type"] == "tls"));
        assert_eq!(kafka(&options)[0]["spec"]["kafka"]["listeners"][0]["authentication"]["type"], "tls");
        // The ACLs do not depend on how the user authenticates.
        let scram = super::users(&estate(), &Options::default());
        assert_eq!(users[0]["spec"]["authorization"], scram[0]["spec"]["authorization"]);
    }

    #[test]
    fn quotas_come_from_the_manifest() {
        let users = users(&estate(), &Options::default());
        assert_eq!(
            user(&users, "orders")["spec"]["quotas"],
            json!({ "producerByteRate": 1 << 20, "consumerByteRate": 2 << 20, "requestPercentage": 12 })
        );
    }

    #[test]
    fn one_topic_per_owned_topic_with_its_configs() {
        let topics = topics(&estate(), &Options::default());
        let names: Vec<_> = topics.iter().map(|t| t["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["orders.private.state", "orders.public.order-v1", "stock.public.order-validation-v1"]
        );
        let order = &topics[1];
        assert_eq!(order["kind"], "KafkaTopic");
        assert_eq!(order["spec"]["partitions"], 12);
        assert_eq!(order["spec"]["replicas"], 3);
        assert!(order["spec"].get("topicName").is_none(), "a valid Kubernetes name is the topic's");
        assert_eq!(order["spec"]["config"]["cleanup.policy"], "delete");
        assert_eq!(order["spec"]["config"]["min.insync.replicas"], 2);
        assert_eq!(order["spec"]["config"]["unclean.leader.election.enable"], false);
        assert_eq!(order["spec"]["config"]["retention.ms"], 7 * 24 * 3600 * 1000);
        assert_eq!(order["spec"]["config"]["flush.messages"], i64::MAX.to_string(), "exact, as a string");
        let state = &topics[0];
        assert_eq!(state["spec"]["config"]["cleanup.policy"], "compact");
        assert!(state["spec"]["config"].get("retention.ms").is_none());
        assert!(state["spec"]["config"].get("segment.bytes").is_some());
    }

    #[test]
    fn topic_names_that_are_no_kubernetes_names_go_in_topic_name() {
        assert!(is_k8s_name("orders.public.order-v1"));
        assert!(!is_k8s_name("orders.private.Big_State"));
        assert_eq!(topic_resource_name("orders.private.Big_State"), "orders.private.big-state");
        assert_eq!(topic_resource_name("a._b_"), "a.b");
    }

    #[test]
    fn the_kafka_is_kraft_with_a_pool_of_combined_nodes() {
        let docs = kafka(&Options { namespace: Some("ns".into()), ..Options::default() });
        let (kafka, pool) = (&docs[0], &docs[1]);
        assert_eq!(kafka["metadata"]["annotations"]["strimzi.io/kraft"], "enabled");
        assert_eq!(kafka["metadata"]["annotations"]["strimzi.io/node-pools"], "enabled");
        assert_eq!(kafka["metadata"]["namespace"], "ns");
        assert_eq!(kafka["spec"]["kafka"]["listeners"][0]["authentication"]["type"], "scram-sha-512");
        assert_eq!(kafka["spec"]["kafka"]["listeners"][0]["tls"], true);
        assert_eq!(kafka["spec"]["kafka"]["authorization"]["type"], "simple");
        assert_eq!(pool["spec"]["replicas"], 3);
        assert_eq!(pool["spec"]["roles"], json!(["controller", "broker"]));
        assert_eq!(pool["spec"]["storage"]["volumes"][0]["type"], "persistent-claim");
        assert_eq!(pool["metadata"]["labels"][CLUSTER_LABEL], DEFAULT_CLUSTER);
    }

    #[test]
    fn yaml_output_is_headed_sorted_and_quoted_where_needed() {
        let docs = users(&estate(), &Options::default());
        let yaml = to_yaml(&docs);
        assert!(yaml.starts_with("# Generated by `backbone export k8s`"), "{yaml}");
        assert_eq!(yaml.matches("\n---\n").count(), 1);
        // Keys sorted (the same estate, the same bytes); a sequence's mappings start on the dash.
        assert!(
            yaml.contains("\n    acls:\n      - host: \"*\"\n        operations:\n          - Describe\n"),
            "{yaml}"
        );
        assert_eq!(scalar_string("-1"), "\"-1\"");
        assert_eq!(scalar_string("true"), "\"true\"");
        assert_eq!(scalar_string("compact,delete"), "\"compact,delete\"");
        assert_eq!(scalar_string("strimzi.io/cluster"), "strimzi.io/cluster");
    }
}
