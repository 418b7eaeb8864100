//! Secured connections on a real broker: SASL/SCRAM, TLS with the run's CA, mutual TLS whose
//! certificate CN is the principal, and fast, named failures for a wrong password, an untrusted
//! broker certificate and a missing ACL.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use backbone::provision::ProvisionError;
use backbone::{Config, Outgoing, Service, TopicSpec};
use backbone_testkit::tls::CertificateAuthority;
use backbone_testkit::{AclOperation, AclResource, ClientAuth, KafkaCluster, unique};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

mod common;

/// How fast a refusal must surface (the provisioning timeout is 30 s, a publish's 120 s).
const FAST: Duration = Duration::from_secs(15);

/// One broker for this file: SASL (PLAIN and SCRAM) on the main listener, mutual TLS on the SSL
/// listener and SCRAM over TLS on the SASL_SSL one. `orders` may do anything on `svc-*` topics and
/// groups; `stranger` may do nothing.
fn cluster() -> &'static KafkaCluster {
    static CLUSTER: OnceLock<KafkaCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let cluster = KafkaCluster::builder()
            .scram(["orders", "stranger"])
            .mtls(["orders", "stranger"])
            .start()
            .expect("a SCRAM + mTLS broker");
        cluster.allow("orders", AclOperation::All, &AclResource::TopicPrefix("svc-".into())).unwrap();
        cluster.allow("orders", AclOperation::All, &AclResource::GroupPrefix("svc-".into())).unwrap();
        cluster.allow("orders", AclOperation::IdempotentWrite, &AclResource::Cluster).unwrap();
        cluster
    })
}

/// `service`'s configuration from the environment the kit gives `user` with `auth`, plus `extra`.
fn config(
    cluster: &KafkaCluster,
    service: &str,
    user: &str,
    auth: ClientAuth,
    extra: &[(&str, &str)],
) -> Config {
    let mut env = cluster.client_env(user, auth).expect("the cluster supports it");
    env.insert("BACKBONE_PROFILE".into(), "development".into());
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Config::from_lookup(service, |k| env.get(k).cloned()).expect("a valid configuration")
}

fn owned(service: &str) -> (TopicSpec, backbone::ServiceSpec) {
    let topic = TopicSpec::public(service, "events", 1).partitions(1).build().unwrap();
    let spec = Service::new(service).owns(&topic).spec().unwrap();
    (topic, spec)
}

/// Starts `service` (provisioning its topic), publishes one event and reads it back with a consumer
/// of the same configuration.
async fn round_trip(config: &Config, service: &str) {
    let (topic, spec) = owned(service);
    let started = Instant::now();
    let running = spec.start(config).await.unwrap_or_else(|e| panic!("{service} starts: {e}"));
    let key = unique("key");
    let delivery = running
        .publisher()
        .publish(&topic, Outgoing::new("Thing", key.as_bytes(), b"{}"))
        .await
        .expect("publish");
    running.shutdown().await.unwrap();

    let consumer: BaseConsumer = config
        .client_config(service)
        .set("group.id", format!("{service}.reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic.name(), delivery.partition, Offset::Offset(delivery.offset))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the event came back within 30 s");
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                assert_eq!(m.key(), Some(key.as_bytes()));
                assert_eq!(m.offset(), delivery.offset);
                break;
            }
            Some(Err(e)) => panic!("reading back: {e}"),
            None => {}
        }
    }
    eprintln!("{service}: started, published and read back in {:?}", started.elapsed());
}

/// Starts `service`, which must fail within [`FAST`]; returns the provisioning error and how long
/// it took.
async fn refused(config: &Config, service: &str) -> (ProvisionError, Duration) {
    let (_, spec) = owned(service);
    let started = Instant::now();
    let err = spec.start(config).await.expect_err("the start is refused");
    let took = started.elapsed();
    eprintln!("{service} refused after {took:?}: {err}");
    assert!(took < FAST, "fails fast, not after a timeout: {took:?}");
    assert!(!err.is_retriable(), "{err}");
    let err = err.as_provision().cloned().unwrap_or_else(|| panic!("a provisioning error: {err}"));
    (err, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_512_and_256_services_provision_publish_and_consume() {
    let cluster = cluster();
    let service = unique("svc");
    round_trip(&config(cluster, &service, "orders", ClientAuth::ScramSha512, &[]), &service).await;
    let service = unique("svc");
    round_trip(&config(cluster, &service, "orders", ClientAuth::ScramSha256, &[]), &service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_scram_password_fails_fast_naming_the_user() {
    let cluster = cluster();
    let service = unique("svc");
    let config =
        config(cluster, &service, "orders", ClientAuth::ScramSha512, &[("KAFKA_SASL_PASSWORD", "wrong")]);
    let (err, _) = refused(&config, &service).await;
    assert!(matches!(err, ProvisionError::Unauthenticated { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("User:orders (SASL SCRAM-SHA-512)"), "{text}");
    assert!(text.contains("Authentication failed") && text.contains("KAFKA_SASL_PASSWORD"), "{text}");
    assert!(!text.contains("wrong"), "the password is not printed: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_with_the_runs_ca_round_trips_and_an_unrelated_ca_fails_fast() {
    let cluster = cluster();
    let service = unique("svc");
    round_trip(&config(cluster, &service, "orders", ClientAuth::ScramSha512OverTls, &[]), &service).await;

    let dir = tempfile::tempdir().unwrap();
    let other = CertificateAuthority::generate(dir.path(), "unrelated-ca").unwrap();
    let other_ca = other.ca_file().display().to_string();
    let service = unique("svc");
    let config = config(
        cluster,
        &service,
        "orders",
        ClientAuth::ScramSha512OverTls,
        &[("KAFKA_SSL_CA_LOCATION", &other_ca)],
    );
    let (err, _) = refused(&config, &service).await;
    assert!(matches!(err, ProvisionError::Unauthenticated { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("SSL handshake failed") && text.contains("certificate verify failed"), "{text}");
    assert!(text.contains("KAFKA_SSL_CA_LOCATION") && text.contains("User:orders"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_makes_the_certificate_cn_the_principal() {
    let cluster = cluster();
    // CN=orders is `User:orders`, whose ACLs let it provision, write and read.
    let service = unique("svc");
    round_trip(&config(cluster, &service, "orders", ClientAuth::MutualTls, &[]), &service).await;

    // CN=stranger is `User:stranger`, who has no ACL: refused at start-up, naming it and the topic.
    let service = unique("svc");
    let config = config(cluster, &service, "stranger", ClientAuth::MutualTls, &[]);
    let (err, _) = refused(&config, &service).await;
    assert!(matches!(err, ProvisionError::NotAuthorized { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("CN=stranger (the subject of client certificate"), "{text}");
    assert!(text.contains(&format!("creating topic {service}.public.events-v1")), "{text}");
    assert!(text.contains("Topic authorization failed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_without_a_trusted_client_certificate_is_refused_fast() {
    let cluster = cluster();
    // No certificate at all.
    let service = unique("svc");
    let config = config(cluster, &service, "orders", ClientAuth::Tls, &[]);
    let (err, _) = refused(&config, &service).await;
    assert!(matches!(err, ProvisionError::Unauthenticated { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("ANONYMOUS (no client credentials over SSL)"), "{text}");
    assert!(
        text.contains("alert bad certificate") && text.contains("KAFKA_SSL_CERTIFICATE_LOCATION"),
        "{text}"
    );

    // A certificate for CN=orders from a CA the brokers do not trust.
    let dir = tempfile::tempdir().unwrap();
    let forged = CertificateAuthority::generate(dir.path(), "unrelated-ca")
        .unwrap()
        .client_certificate("orders")
        .unwrap();
    let (cert, key) = (forged.certificate.display().to_string(), forged.key.display().to_string());
    let service = unique("svc");
    let config = self::config(
        cluster,
        &service,
        "orders",
        ClientAuth::MutualTls,
        &[("KAFKA_SSL_CERTIFICATE_LOCATION", &cert), ("KAFKA_SSL_KEY_LOCATION", &key)],
    );
    let (err, _) = refused(&config, &service).await;
    assert!(matches!(err, ProvisionError::Unauthenticated { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&format!("CN=orders (the subject of client certificate {cert})")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_on_three_brokers_round_trips_with_replication_3() {
    let cluster = KafkaCluster::builder()
        .brokers(3)
        .scram(["orders"])
        .tls()
        .start()
        .expect("three brokers with SCRAM and TLS");
    cluster.allow("orders", AclOperation::All, &AclResource::TopicPrefix("svc-".into())).unwrap();
    cluster.allow("orders", AclOperation::All, &AclResource::GroupPrefix("svc-".into())).unwrap();
    cluster.allow("orders", AclOperation::IdempotentWrite, &AclResource::Cluster).unwrap();
    let service = unique("svc");
    let config = config(
        &cluster,
        &service,
        "orders",
        ClientAuth::ScramSha512OverTls,
        &[("BACKBONE_PROFILE", "production")],
    );
    assert_eq!(config.bootstrap_servers.split(',').count(), 3);
    round_trip(&config, &service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sasl_user_without_acls_fails_fast_at_start_naming_the_principal_and_the_topic() {
    let cluster = cluster();
    let service = unique("svc");
    let config = config(cluster, &service, "stranger", ClientAuth::ScramSha512, &[]);
    let (err, took) = refused(&config, &service).await;
    assert!(matches!(err, ProvisionError::NotAuthorized { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("User:stranger (SASL SCRAM-SHA-512) is not authorized"), "{text}");
    assert!(text.contains(&format!("creating topic {service}.public.events-v1")), "{text}");
    assert!(took < Duration::from_secs(5), "no retries: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_round_trips_with_the_runs_ca_and_refuses_an_unrelated_one_fast() {
    let cluster = KafkaCluster::builder().tls().start().expect("a TLS broker");
    let service = unique("svc");
    let plain: BTreeMap<String, String> = cluster.client_env("any", ClientAuth::Tls).unwrap();
    assert_eq!(plain.get("KAFKA_SECURITY_PROTOCOL").map(String::as_str), Some("SSL"));
    round_trip(&config(&cluster, &service, "any", ClientAuth::Tls, &[]), &service).await;

    let dir = tempfile::tempdir().unwrap();
    let other = CertificateAuthority::generate(dir.path(), "unrelated-ca").unwrap();
    let other_ca = other.ca_file().display().to_string();
    let service = unique("svc");
    let config = config(&cluster, &service, "any", ClientAuth::Tls, &[("KAFKA_SSL_CA_LOCATION", &other_ca)]);
    let (err, _) = refused(&config, &service).await;
    let text = err.to_string();
    assert!(text.contains("certificate verify failed") && text.contains("KAFKA_SSL_CA_LOCATION"), "{text}");
    assert!(text.contains("ANONYMOUS (no client credentials over SSL)"), "{text}");
}
