use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::error::{from_code, from_kafka};
use super::plan::Observed;
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
    let t = TopicSpec::private("orders", "x").compacted().retention(Duration::from_secs(1)).build().unwrap();
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
    assert_eq!(refused.to_string(), "nothing applied: 1 change(s) need a decision first\n! refused t: r; a");
    let timeout = from_kafka("creating topics", KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut));
    assert!(timeout.is_retriable(), "{timeout:?}");
    assert!(!from_code("x".into(), RDKafkaErrorCode::TopicAuthorizationFailed).is_retriable());
    assert!(matches!(from_code("x".into(), RDKafkaErrorCode::InvalidConfig), ProvisionError::Invalid { .. }));
    let e = crate::Error::from(refused);
    assert_eq!(e.kind(), crate::error::ErrorKind::Provision);
    assert!(!e.is_retriable());
    assert_eq!(e.as_provision().map(|p| p.refusals().len()), Some(1));
}
