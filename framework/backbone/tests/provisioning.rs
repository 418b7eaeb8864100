//! Topic provisioning against a real broker: plans, applies, drift and refusals.
//!
//! The shared broker is a single node, so most tests use the development profile (replication 1).

use std::collections::BTreeMap;
use std::future::Future;
use std::slice;
use std::time::{Duration, Instant};

use backbone::provision::{Action, ProvisionError, Provisioner};
use backbone::topic::TopicSpec;
use backbone::{Config, Profile};
use backbone_testkit::{shared_kafka, unique};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ConfigSource, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

fn config(profile: Profile) -> Config {
    let mut config = Config::default();
    config.bootstrap_servers = shared_kafka().bootstrap_servers().to_owned();
    config.profile = profile;
    config
}

fn provisioner(profile: Profile) -> Provisioner {
    Provisioner::new(&config(profile), "provisioning-test").expect("admin client")
}

/// A service no other test uses, so its topics are fresh.
fn owner() -> String {
    unique("svc")
}

fn admin() -> AdminClient<DefaultClientContext> {
    shared_kafka().client_config().create().expect("admin client")
}

/// A topic's configuration as the broker describes it: value and whether it is a topic override.
async fn describe(topic: &str) -> BTreeMap<String, (Option<String>, bool)> {
    let results = admin()
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .expect("describe configs");
    let resource = results.into_iter().next().expect("one resource").expect("described");
    resource
        .entries
        .into_iter()
        .map(|e| (e.name, (e.value, e.source == ConfigSource::DynamicTopic)))
        .collect()
}

async fn config_value(topic: &str, key: &str) -> Option<String> {
    describe(topic).await.remove(key).and_then(|(v, _)| v)
}

/// Partition count and replication factor (replicas of partition 0); `None` if the topic does not
/// exist.
fn shape(topic: &str) -> Option<(usize, usize)> {
    let consumer: BaseConsumer = shared_kafka().client_config().create().expect("metadata client");
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    if t.error().is_some() || t.partitions().is_empty() {
        return None;
    }
    let replicas = t.partitions().iter().find(|p| p.id() == 0).map_or(0, |p| p.replicas().len());
    Some((t.partitions().len(), replicas))
}

/// Polls `check` until it holds, for at most 30 s.
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sets topic configs out of band the way `kafka-configs --alter --add-config` does: other
/// overrides are kept (AlterConfigs replaces them all, so they are sent along).
async fn set_out_of_band(topic: &str, set: &[(&str, &str)]) {
    let mut full: BTreeMap<String, String> = describe(topic)
        .await
        .into_iter()
        .filter(|(_, (_, dynamic))| *dynamic)
        .map(|(k, (v, _))| (k, v.expect("a readable override")))
        .collect();
    full.extend(set.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let alter = full.iter().fold(AlterConfig::new(ResourceSpecifier::Topic(topic)), |a, (k, v)| a.set(k, v));
    for result in admin().alter_configs([&alter], &AdminOptions::new()).await.expect("alter configs") {
        result.expect("altered");
    }
    eventually("the out-of-band configs to show", || async {
        let now = describe(topic).await;
        set.iter().all(|(k, v)| now.get(*k).and_then(|(v, _)| v.as_deref()) == Some(*v))
    })
    .await;
}

#[tokio::test]
async fn created_topics_match_their_declarations() {
    let owner = owner();
    let levels = TopicSpec::private(&owner, "levels")
        .partitions(3)
        .compacted()
        .segment_bytes(2 * 1024 * 1024)
        .sync_flush()
        .build()
        .unwrap();
    let created = TopicSpec::public(&owner, "created", 1)
        .partitions(2)
        .retention(Duration::from_secs(3600))
        .build()
        .unwrap();
    let provisioner = provisioner(Profile::Development);

    let plan = provisioner.plan(&[levels.clone(), created.clone()]).await.expect("plan");
    let text = plan.to_string();
    assert!(text.contains(&format!("+ create {levels} (partitions 3, replication 1): ")), "{text}");
    assert!(text.contains(&format!("+ create {created} (partitions 2, replication 1): ")), "{text}");
    assert!(text.ends_with("plan: 2 to create, 0 to alter, 0 to add partitions, 0 up to date, 0 refused\n"));
    assert!(!plan.is_noop() && !plan.has_refusals());

    let report = provisioner.apply(&plan).await.expect("apply");
    assert_eq!(report.actions().len(), 2, "{report}");
    assert!(report.to_string().contains(&format!("+ created {levels} (partitions 3, replication 1)")));

    assert_eq!(shape(levels.name()), Some((3, 1)));
    assert_eq!(shape(created.name()), Some((2, 1)));
    let l = describe(levels.name()).await;
    let value = |c: &BTreeMap<String, (Option<String>, bool)>, k: &str| c[k].0.clone().unwrap_or_default();
    assert_eq!(value(&l, "min.insync.replicas"), "1");
    assert_eq!(value(&l, "cleanup.policy"), "compact");
    assert_eq!(value(&l, "segment.bytes"), "2097152");
    assert_eq!(value(&l, "flush.messages"), "1");
    assert_eq!(value(&l, "unclean.leader.election.enable"), "false");
    let c = describe(created.name()).await;
    assert_eq!(value(&c, "cleanup.policy"), "delete");
    assert_eq!(value(&c, "retention.ms"), "3600000");
    assert_eq!(value(&c, "flush.messages"), "9223372036854775807");
    assert_eq!(value(&c, "min.insync.replicas"), "1");
    // Every managed key, as the declaration says.
    for spec in [&levels, &created] {
        let described = describe(spec.name()).await;
        for (key, desired) in spec.configs(Profile::Development) {
            assert_eq!(value(&described, key), desired, "{spec} {key}");
        }
    }
}

#[tokio::test]
async fn production_profile_creates_as_declared() {
    let topic = TopicSpec::private(owner(), "ledger")
        .replication(1)
        .min_insync_replicas(1)
        .retain_forever()
        .build()
        .unwrap();
    let report =
        provisioner(Profile::Production).provision(slice::from_ref(&topic)).await.expect("provision");
    assert_eq!(report.actions().len(), 1, "{report}");
    assert_eq!(shape(topic.name()), Some((6, 1)));
    assert_eq!(config_value(topic.name(), "retention.ms").await.as_deref(), Some("-1"));
}

#[tokio::test]
async fn drift_is_planned_and_set_back_keeping_other_overrides() {
    let topic = TopicSpec::private(owner(), "events").partitions(2).build().unwrap();
    let provisioner = provisioner(Profile::Development);
    provisioner.provision(slice::from_ref(&topic)).await.expect("provision");

    set_out_of_band(topic.name(), &[("retention.ms", "1000"), ("max.message.bytes", "2000000")]).await;

    let plan = provisioner.plan(slice::from_ref(&topic)).await.expect("plan");
    let actions: Vec<&Action> = plan.actions_for(topic.name()).collect();
    let [Action::AlterConfigs { changes }] = actions.as_slice() else { panic!("one alter expected: {plan}") };
    assert_eq!(changes.len(), 1, "{plan}");
    assert_eq!(changes[0].key, "retention.ms");
    assert_eq!(changes[0].current.as_deref(), Some("1000"));
    assert_eq!(changes[0].desired, "604800000");
    assert!(
        plan.to_string().contains(&format!("~ alter {topic} retention.ms: 1000 -> 604800000\n")),
        "{plan}"
    );
    assert!(!plan.has_refusals());

    let report = provisioner.apply(&plan).await.expect("apply");
    assert!(
        report.to_string().contains(&format!("~ altered {topic} retention.ms: 1000 -> 604800000")),
        "{report}"
    );
    let now = describe(topic.name()).await;
    assert_eq!(now["retention.ms"].0.as_deref(), Some("604800000"));
    assert_eq!(
        now["max.message.bytes"],
        (Some("2000000".to_owned()), true),
        "the operator's override survives"
    );
    assert_eq!(now["min.insync.replicas"].0.as_deref(), Some("1"), "other managed keys are kept");
    assert!(provisioner.plan(&[topic]).await.expect("plan").is_noop());
}

#[tokio::test]
async fn applying_twice_changes_nothing() {
    let owner = owner();
    let topics = [
        TopicSpec::public(&owner, "shipped", 3).partitions(4).build().unwrap(),
        TopicSpec::private(&owner, "state").compacted().sync_flush().build().unwrap(),
    ];
    let provisioner = provisioner(Profile::Development);
    let first = provisioner.provision(&topics).await.expect("first apply");
    assert_eq!(first.actions().len(), 2, "{first}");

    let plan = provisioner.plan(&topics).await.expect("second plan");
    assert!(plan.is_noop(), "{plan}");
    for t in &topics {
        assert!(plan.to_string().contains(&format!("= {t} up to date\n")), "{plan}");
    }
    let second = provisioner.apply(&plan).await.expect("second apply");
    assert!(second.is_noop(), "{second}");
    assert_eq!(second.unchanged(), [topics[0].name(), topics[1].name()]);
    assert!(
        second.to_string().ends_with("apply: 0 created, 0 altered, 0 with added partitions, 2 up to date\n")
    );
}

#[tokio::test]
async fn fewer_partitions_than_exist_are_refused() {
    let owner = owner();
    let provisioner = provisioner(Profile::Development);
    let four = TopicSpec::public(&owner, "paid", 1).partitions(4).build().unwrap();
    provisioner.provision(slice::from_ref(&four)).await.expect("provision");

    let two = TopicSpec::public(&owner, "paid", 1).partitions(2).build().unwrap();
    let plan = provisioner.plan(slice::from_ref(&two)).await.expect("plan");
    assert!(plan.has_refusals());
    let text = plan.to_string();
    assert!(
        text.contains(&format!(
            "! refused {two}: 2 partitions are declared but the topic has 4; Kafka cannot remove partitions: \
             declare 4, or create a new versioned topic ({owner}.public.paid-v2)"
        )),
        "{text}"
    );
    let err = provisioner.apply(&plan).await.unwrap_err();
    assert!(!err.is_retriable());
    assert_eq!(err.refusals().len(), 1);
    assert_eq!(err.refusals()[0].topic, two.name());
    assert_eq!(shape(two.name()), Some((4, 1)), "nothing changed");
}

#[tokio::test]
async fn more_partitions_are_refused_unless_allowed() {
    let owner = owner();
    let two = TopicSpec::private(&owner, "jobs").partitions(2).build().unwrap();
    provisioner(Profile::Development).provision(&[two]).await.expect("provision");
    let four = TopicSpec::private(&owner, "jobs").partitions(4).build().unwrap();

    let strict = provisioner(Profile::Development);
    let plan = strict.plan(slice::from_ref(&four)).await.expect("plan");
    let text = plan.to_string();
    assert!(
        text.contains(&format!("! refused {four}: 4 partitions are declared but the topic has 2; ")),
        "{text}"
    );
    assert!(text.contains("breaks per-key order") && text.contains("--allow-partition-increase"), "{text}");
    assert!(matches!(strict.apply(&plan).await, Err(ProvisionError::Refused { .. })));
    assert_eq!(shape(four.name()), Some((2, 1)));

    let allowing = provisioner(Profile::Development).allow_partition_increase(true);
    let plan = allowing.plan(slice::from_ref(&four)).await.expect("plan");
    assert_eq!(
        plan.actions_for(four.name()).collect::<Vec<_>>(),
        [&Action::AddPartitions { from: 2, to: 4 }]
    );
    let report = allowing.apply(&plan).await.expect("apply");
    assert!(report.to_string().contains(&format!("+ added partitions {four}: 2 -> 4")), "{report}");
    assert_eq!(shape(four.name()), Some((4, 1)));
    assert!(strict.plan(&[four]).await.expect("plan").is_noop());
}

#[tokio::test]
async fn a_different_replication_factor_is_refused_with_what_to_do() {
    let topic = TopicSpec::private(owner(), "audit").partitions(1).build().unwrap();
    shared_kafka().create_topic(topic.name(), 1, 1).await.expect("create at replication 1");

    let provisioner = provisioner(Profile::Production);
    let plan = provisioner.plan(slice::from_ref(&topic)).await.expect("plan");
    let text = plan.to_string();
    assert!(
        text.contains(&format!(
            "! refused {topic}: replication factor is 1, declared 3 (under the production profile); \
             changing replication needs a partition reassignment (kafka-reassign-partitions)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "! refused {topic}: replication factor 3 needs at least 3 brokers, the cluster has 1; \
             add brokers, or for a single local broker set BACKBONE_PROFILE=development"
        )),
        "{text}"
    );
    assert!(text.ends_with("1 refused\n"), "{text}");

    let err = provisioner.apply(&plan).await.unwrap_err();
    assert!(err.refusals().iter().all(|r| r.topic == topic.name()), "{err}");
    let message = backbone::Error::from(err).to_string();
    assert!(message.contains(topic.name()) && message.contains("kafka-reassign-partitions"), "{message}");
    // The drifted configs were not touched either: the whole apply was refused.
    assert!(!describe(topic.name()).await["min.insync.replicas"].1);
}

#[tokio::test]
async fn one_refusal_refuses_the_whole_apply() {
    let owner = owner();
    let fits = TopicSpec::private(&owner, "small").replication(1).min_insync_replicas(1).build().unwrap();
    let too_big = TopicSpec::private(&owner, "big").build().unwrap();
    let provisioner = provisioner(Profile::Production);

    let plan = provisioner.plan(&[fits.clone(), too_big.clone()]).await.expect("plan");
    assert!(matches!(plan.actions_for(fits.name()).next(), Some(Action::Create { .. })), "{plan}");
    assert!(plan.has_refusals());
    let err = provisioner.apply(&plan).await.unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("nothing applied: 1 change(s) need a decision first\n"), "{text}");
    assert!(
        text.contains(&format!("! refused {too_big}: replication factor 3 needs at least 3 brokers")),
        "{text}"
    );
    assert_eq!(shape(fits.name()), None, "the topic that fits was not created either");
    assert_eq!(shape(too_big.name()), None);
}

#[tokio::test]
async fn conflicting_declarations_are_an_error() {
    let owner = owner();
    let a = TopicSpec::private(&owner, "x").partitions(2).build().unwrap();
    let b = TopicSpec::private(&owner, "x").partitions(3).build().unwrap();
    let err = provisioner(Profile::Development).plan(&[a.clone(), b]).await.unwrap_err();
    assert_eq!(err, ProvisionError::Conflicting { topic: a.name().to_owned() });
    // The same declaration twice is planned once.
    let plan = provisioner(Profile::Development).plan(&[a.clone(), a.clone()]).await.expect("plan");
    assert_eq!(plan.actions().len(), 1, "{plan}");
}

/// Verify-only provisioning (`BACKBONE_PROVISIONING=verify`, for topics another owner manages, such
/// as Strimzi's Topic Operator): topics as declared pass; a missing topic and a drifted config fail
/// start-up with every difference named, and nothing is created or set back.
#[tokio::test]
async fn verify_only_provisioning_checks_and_never_alters() {
    let service = owner();
    let present = TopicSpec::private(&service, "present").partitions(2).build().unwrap();
    let missing = TopicSpec::private(&service, "missing").build().unwrap();
    provisioner(Profile::Development).provision(slice::from_ref(&present)).await.expect("provision");

    let mut verify_config = config(Profile::Development);
    verify_config.provisioning = backbone::Provisioning::Verify;
    let verify = Provisioner::new(&verify_config, "provisioning-test").expect("admin client");
    let report = verify.provision(slice::from_ref(&present)).await.expect("as declared: passes");
    assert!(report.is_noop(), "{report}");

    set_out_of_band(present.name(), &[("retention.ms", "1000")]).await;
    let err = verify.provision(&[present.clone(), missing.clone()]).await.expect_err("differences fail");
    assert!(!err.is_retriable(), "{err}");
    let ProvisionError::NotAsDeclared { differences } = &err else { panic!("not NotAsDeclared: {err}") };
    let topics: Vec<&str> = differences.iter().map(|d| d.topic.as_str()).collect();
    assert_eq!(topics, [present.name(), missing.name()], "{err}");
    let message = err.to_string();
    assert!(message.contains("retention.ms: 1000 -> 604800000"), "{message}");
    assert!(message.contains(missing.name()), "{message}");

    assert_eq!(shape(missing.name()), None, "verify-only created nothing");
    assert_eq!(
        config_value(present.name(), "retention.ms").await.as_deref(),
        Some("1000"),
        "nor set anything back"
    );
}
