//! ACLs, SCRAM users and client quotas applied to a real Kafka (KRaft, SASL/PLAIN, the
//! StandardAuthorizer) through `backbone_estate::admin`. One broker for the whole binary; every
//! test uses names of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use backbone::service::Quotas;
use backbone_estate::acl::{AclBinding, Operation, PatternType, ResourceType};
use backbone_estate::admin::{AclFilter, AdminError, Cluster, QuotaChange, QuotaKey, ScramMechanism};
use backbone_testkit::{KafkaCluster, password_for, unique};
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

/// How long the broker may take to show what its controller committed (ACLs and quotas reach it
/// through the metadata log).
const PROPAGATION: Duration = Duration::from_secs(30);

fn kafka() -> &'static KafkaCluster {
    static KAFKA: OnceLock<KafkaCluster> = OnceLock::new();
    KAFKA.get_or_init(|| {
        // SCRAM as well as PLAIN on the SASL listener (the later properties win), so that SCRAM
        // users made through the admin API can log in.
        let scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
        KafkaCluster::builder()
            .sasl(["orders", "stock"])
            .broker_property("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512")
            .broker_property("listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config", scram)
            .broker_property("listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config", scram)
            .start()
            .expect("a SASL broker")
    })
}

/// The super user's connection, through a `backbone::Config` as the CLI makes it.
async fn admin() -> Cluster {
    let mut config = backbone::Config::default();
    config.bootstrap_servers = kafka().bootstrap_servers().to_owned();
    config.security.protocol = "SASL_PLAINTEXT".into();
    config.security.mechanism = "PLAIN".into();
    config.security.username = Some("admin".into());
    config.security.password = Some(password_for("admin").into());
    Cluster::connect(&config).await.expect("the admin connects")
}

/// Polls `check` until it returns `Some`, or panics after `PROPAGATION` naming `what`.
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + PROPAGATION;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PROPAGATION:?}");
        tokio::task::yield_now().await;
    }
}

fn topic_acl(user: &str, op: Operation, name: &str, pattern: PatternType) -> AclBinding {
    AclBinding::allow(user, op, ResourceType::Topic, name, pattern)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_round_trip_create_describe_delete() {
    let admin = admin().await;
    let user = unique("svc");
    let principal = format!("User:{user}");
    let acls = vec![
        topic_acl(&user, Operation::Write, &format!("{user}."), PatternType::Prefixed),
        topic_acl(&user, Operation::Read, "orders.placed", PatternType::Literal),
        AclBinding::allow(
            &user,
            Operation::Read,
            ResourceType::Group,
            format!("{user}."),
            PatternType::Prefixed,
        ),
        AclBinding::allow(
            &user,
            Operation::IdempotentWrite,
            ResourceType::Cluster,
            "kafka-cluster",
            PatternType::Literal,
        ),
        AclBinding::allow(
            &user,
            Operation::Write,
            ResourceType::TransactionalId,
            format!("{user}."),
            PatternType::Prefixed,
        ),
    ];
    admin.create_acls(&acls).await.expect("create");
    let want: BTreeSet<_> = acls.iter().cloned().collect();
    eventually("the created ACLs are described", || async {
        let got: BTreeSet<_> =
            admin.describe_acls(AclFilter::Principal(principal.clone())).await.unwrap().into_iter().collect();
        (got == want).then_some(())
    })
    .await;
    // Creating again changes nothing.
    admin.create_acls(&acls).await.expect("create again");

    let deleted = admin.delete_acls(&acls[..2]).await.expect("delete");
    assert_eq!(deleted.into_iter().collect::<BTreeSet<_>>(), acls[..2].iter().cloned().collect());
    let left: BTreeSet<_> = acls[2..].iter().cloned().collect();
    eventually("only the undeleted ACLs are left", || async {
        let got: BTreeSet<_> =
            admin.describe_acls(AclFilter::Principal(principal.clone())).await.unwrap().into_iter().collect();
        (got == left).then_some(())
    })
    .await;
    assert!(admin.describe_acls(AclFilter::Any).await.unwrap().len() >= left.len());
}

/// What producing one record to `topic` as `user` gives.
async fn produce_as(user: &str, topic: &str) -> Result<(), KafkaError> {
    let producer: FutureProducer =
        kafka().client_config_as(user).set("message.timeout.ms", "10000").create().expect("producer");
    producer
        .send(FutureRecord::to(topic).key("k").payload("v"), Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

/// What reading `topic` from its start as `user` (in a new group `<topic>.reader-…`) gives first:
/// a payload or the consumer's error.
async fn first_read_as(user: &str, topic: &str) -> Result<Vec<u8>, KafkaError> {
    let consumer: BaseConsumer = kafka()
        .client_config_as(user)
        .set("enable.auto.commit", "false")
        .set("group.id", unique(&format!("{topic}.reader")))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).unwrap();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => return Ok(m.payload().unwrap_or_default().to_vec()),
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        panic!("neither a record nor an error within 15 s");
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_acl_takes_effect_on_the_broker() {
    let admin = admin().await;
    let topic = unique("effect");
    kafka().create_topic(&topic, 1, 1).await.expect("topic");

    // `stock` has no ACL on the topic: the broker refuses it.
    let err = produce_as("stock", &topic).await.expect_err("refused without an ACL");
    assert!(
        matches!(err, KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed)),
        "{err:?}"
    );

    // With READ on its group but none on the topic, reading is refused for the topic.
    let group = AclBinding::allow(
        "stock",
        Operation::Read,
        ResourceType::Group,
        format!("{topic}."),
        PatternType::Prefixed,
    );
    admin.create_acls(std::slice::from_ref(&group)).await.unwrap();
    eventually("stock is refused the topic (once its group ACL is there)", || async {
        match first_read_as("stock", &topic).await {
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::TopicAuthorizationFailed)) => Some(()),
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::GroupAuthorizationFailed)) => None,
            other => panic!("reading without a topic ACL: {other:?}"),
        }
    })
    .await;

    let desired: BTreeSet<_> = [
        group,
        topic_acl("stock", Operation::Write, &topic, PatternType::Literal),
        topic_acl("stock", Operation::Read, &topic, PatternType::Literal),
        topic_acl("stock", Operation::Describe, &topic, PatternType::Literal),
    ]
    .into();
    let prefixes = vec![topic.clone()];
    let plan = admin.plan(&desired, &BTreeMap::new(), &prefixes, false).await.unwrap();
    assert_eq!(plan.create_acls.len(), 3, "{plan}");
    admin.apply(&plan).await.expect("apply");

    eventually("stock may write once the grant reaches the broker", || async {
        match produce_as("stock", &topic).await {
            Ok(()) => Some(()),
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed)) => None,
            Err(e) => panic!("producing with a WRITE ACL failed otherwise: {e:?}"),
        }
    })
    .await;
    let read = eventually("stock reads once its READ ACL reaches the broker", || async {
        match first_read_as("stock", &topic).await {
            Ok(payload) => Some(payload),
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::TopicAuthorizationFailed)) => None,
            Err(e) => panic!("reading with a READ ACL failed otherwise: {e:?}"),
        }
    })
    .await;
    assert_eq!(read, b"v", "the record it wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_apply_plan_is_empty_and_prune_removes_only_the_estates_stale_acl() {
    let admin = admin().await;
    let svc = unique("svc");
    let prefixes = vec![svc.clone()];
    let own = topic_acl(&svc, Operation::Write, &format!("{svc}."), PatternType::Prefixed);
    let stale = topic_acl(&svc, Operation::Read, &format!("{svc}.old"), PatternType::Literal);
    // Not the estate's: another team's ACL, and one of the super user's.
    let unrelated = topic_acl(&unique("billing"), Operation::Read, "billing.invoices", PatternType::Literal);
    let admins = topic_acl("admin", Operation::Describe, &unique("ops"), PatternType::Prefixed);
    admin.create_acls(&[stale.clone(), unrelated.clone(), admins.clone()]).await.unwrap();

    let desired: BTreeSet<_> = [own.clone()].into();
    let quotas: BTreeMap<_, _> =
        [(svc.clone(), Quotas { producer_byte_rate: Some(1_048_576), ..Quotas::default() })].into();
    let plan = eventually("the stale ACL is seen", || async {
        let plan = admin.plan(&desired, &quotas, &prefixes, true).await.unwrap();
        (plan.delete_acls == vec![stale.clone()]).then_some(plan)
    })
    .await;
    assert_eq!(plan.create_acls, vec![own.clone()]);
    assert_eq!(plan.quotas.len(), 1);
    let text = plan.to_string();
    eprintln!("{text}");
    assert!(text.contains(&format!("+ ALLOW User:{svc} WRITE topic prefixed {svc}.")), "{text}");
    assert!(text.contains(&format!("- ALLOW User:{svc} READ topic literal {svc}.old")), "{text}");
    assert!(text.contains(&format!("~ quota User:{svc} producer_byte_rate (none) -> 1048576")), "{text}");
    admin.apply(&plan).await.expect("apply");

    let again = eventually("planning again finds nothing to do", || async {
        let plan = admin.plan(&desired, &quotas, &prefixes, true).await.unwrap();
        plan.is_empty().then_some(plan)
    })
    .await;
    admin.apply(&again).await.expect("applying the empty plan");
    assert!(
        admin.plan(&desired, &quotas, &prefixes, true).await.unwrap().is_empty(),
        "apply twice = no change"
    );

    let all: BTreeSet<_> = admin.describe_acls(AclFilter::Any).await.unwrap().into_iter().collect();
    assert!(all.contains(&own) && !all.contains(&stale));
    assert!(all.contains(&unrelated) && all.contains(&admins), "prune left the others' ACLs alone");
    admin.delete_acls(&[own, unrelated, admins]).await.unwrap();
    admin
        .alter_quotas(&[QuotaChange { user: svc, key: QuotaKey::ProducerByteRate, from: None, to: None }])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_set_describe_alter_remove() {
    let admin = admin().await;
    let user = unique("quota");
    let set = |key, to| QuotaChange { user: user.clone(), key, from: None, to };
    let quotas_of = |admin: &'static Cluster| {
        let user = user.clone();
        async move { admin.describe_quotas().await.unwrap().get(&user).copied() }
    };
    let admin: &'static Cluster = Box::leak(Box::new(admin));

    admin
        .alter_quotas(&[
            set(QuotaKey::ProducerByteRate, Some(1_048_576.0)),
            set(QuotaKey::ConsumerByteRate, Some(2_097_152.0)),
            set(QuotaKey::RequestPercentage, Some(25.0)),
        ])
        .await
        .expect("set");
    let want = Quotas {
        producer_byte_rate: Some(1_048_576),
        consumer_byte_rate: Some(2_097_152),
        request_percentage: Some(25.0),
    };
    eventually("the quotas are described", || async { (quotas_of(admin).await == Some(want)).then_some(()) })
        .await;

    admin
        .alter_quotas(&[
            set(QuotaKey::ProducerByteRate, Some(10_485_760.0)),
            set(QuotaKey::RequestPercentage, None),
        ])
        .await
        .expect("alter");
    let want = Quotas {
        producer_byte_rate: Some(10_485_760),
        consumer_byte_rate: Some(2_097_152),
        request_percentage: None,
    };
    eventually("the altered quotas are described", || async {
        (quotas_of(admin).await == Some(want)).then_some(())
    })
    .await;

    admin
        .alter_quotas(&[set(QuotaKey::ProducerByteRate, None), set(QuotaKey::ConsumerByteRate, None)])
        .await
        .expect("remove");
    eventually("no quota is left", || async { quotas_of(admin).await.is_none().then_some(()) }).await;

    let bad = admin.alter_quotas(&[set(QuotaKey::ProducerByteRate, Some(-1.0))]).await.unwrap_err();
    assert!(matches!(bad, AdminError::Invalid(_)), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_credentials_upsert_describe_delete() {
    let admin = admin().await;
    let user = unique("scram");
    let users = vec![user.clone()];
    assert_eq!(admin.describe_scram_credentials(&users).await.unwrap().get(&user), Some(&Vec::new()));
    admin.upsert_scram_credentials(&user, ScramMechanism::Sha512, "s3cret", 8192).await.expect("upsert 512");
    admin.upsert_scram_credentials(&user, ScramMechanism::Sha256, "s3cret", 4096).await.expect("upsert 256");
    let described = eventually("both credentials are described", || async {
        let d = admin.describe_scram_credentials(&users).await.unwrap();
        let mut creds = d.get(&user).cloned().unwrap_or_default();
        creds.sort_by_key(|c| c.mechanism);
        (creds.len() == 2).then_some(creds)
    })
    .await;
    assert_eq!((described[0].mechanism, described[0].iterations), (ScramMechanism::Sha256, 4096));
    assert_eq!((described[1].mechanism, described[1].iterations), (ScramMechanism::Sha512, 8192));
    admin.delete_scram_credentials(&user, ScramMechanism::Sha256).await.expect("delete");
    eventually("one credential is left", || async {
        let d = admin.describe_scram_credentials(&users).await.unwrap();
        (d.get(&user).map(Vec::len) == Some(1)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_super_user_gets_a_clear_unretried_authorization_error() {
    let orders = Cluster::connect_with(kafka().client_config_as("orders"), Duration::from_secs(20))
        .await
        .expect("orders connects");
    let acl = topic_acl("orders", Operation::Write, "orders.", PatternType::Prefixed);
    let started = Instant::now();
    let err = orders.create_acls(&[acl]).await.expect_err("orders may not create ACLs");
    eprintln!("{err} after {:?}", started.elapsed());
    assert!(
        matches!(&err, AdminError::Unauthorized { principal, code, .. } if principal == "User:orders" && code == "CLUSTER_AUTHORIZATION_FAILED"),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    assert!(err.to_string().contains("create ACLs"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "not retried until a timeout");

    let err = orders
        .alter_quotas(&[QuotaChange {
            user: "orders".into(),
            key: QuotaKey::ProducerByteRate,
            from: None,
            to: Some(1.0),
        }])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AdminError::Unauthorized { principal, .. } if principal == "User:orders"),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    let err = orders.describe_acls(AclFilter::Any).await.unwrap_err();
    assert!(matches!(&err, AdminError::Unauthorized { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_at_connect_naming_the_principal() {
    let mut config = kafka().client_config_as("stock");
    config.set("sasl.password", "wrong");
    let started = Instant::now();
    let err = Cluster::connect_with(config, Duration::from_secs(20)).await.expect_err("refused");
    assert!(
        matches!(&err, AdminError::Authentication { principal, .. } if principal == "User:stock"),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// A connection configuration that authenticates as `user` with SCRAM.
fn scram_config(user: &str, mechanism: ScramMechanism, password: &str) -> rdkafka::ClientConfig {
    let mut config = kafka().client_config_as(user);
    config.set("sasl.mechanism", mechanism.name()).set("sasl.password", password);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scram_user_made_through_the_admin_api_logs_in_with_scram() {
    let admin = admin().await;
    let user = unique("scram-login");
    for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
        admin.upsert_scram_credentials(&user, mechanism, "pa55word", 4096).await.expect("upsert");
    }
    for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
        // Our own SCRAM client (the quota connection) logs in once the credential reaches the broker.
        let cluster = eventually("the SCRAM user logs in", || async {
            match Cluster::connect_with(scram_config(&user, mechanism, "pa55word"), Duration::from_secs(20))
                .await
            {
                Ok(c) => Some(c),
                Err(AdminError::Authentication { .. }) => None,
                Err(e) => panic!("{e:?}"),
            }
        })
        .await;
        assert_eq!(cluster.principal(), format!("User:{user}"));
        // librdkafka's SCRAM accepts the credential too.
        let client: rdkafka::producer::BaseProducer =
            scram_config(&user, mechanism, "pa55word").create().expect("client");
        let metadata = tokio::task::spawn_blocking(move || {
            client.client().fetch_metadata(None, Duration::from_secs(20))
        })
        .await
        .unwrap();
        assert!(metadata.is_ok(), "{mechanism:?}: {metadata:?}");

        let err = Cluster::connect_with(scram_config(&user, mechanism, "wrong"), Duration::from_secs(20))
            .await
            .expect_err("a wrong SCRAM password is refused");
        assert!(
            matches!(&err, AdminError::Authentication { principal, .. } if *principal == format!("User:{user}")),
            "{err:?}"
        );
    }
}
