//! Ownership, enforced by Kafka itself: the sample estate on a broker with SASL/SCRAM and the
//! StandardAuthorizer (`allow.everyone.if.no.acl.found=false`), where each service has its own
//! principal and only what the estate's plan/apply (`backbone estate apply`) granted from the
//! services' specs.
//!
//! - Orders and Stock run there: a stocked order is VALIDATED.
//! - R13(b): Stock's credentials, through a raw client, reading or writing Orders' private topic get
//!   TOPIC_AUTHORIZATION_FAILED at once, not retried, and 0 records are delivered.
//! - Applying again changes nothing; one ACL taken away makes the affected service fail fast at
//!   start, naming it.
//!
//! The services' topics and groups have fixed names, so this binary starts a broker of its own.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use backbone::Config;
use backbone_estate::acl::{AclBinding, Operation, PatternType, ResourceType};
use backbone_estate::admin::Cluster;
use backbone_estate::{Estate, Severity};
use backbone_testkit::{ClientAuth, KafkaCluster, shared_registry, unique};
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

/// Every wait is for an event; this only bounds a broken one.
mod common;
use common::call;

const WITHIN: Duration = Duration::from_secs(90);
/// How fast a refusal must come: no retrying a permanent error.
const FAST: Duration = Duration::from_secs(10);

/// `user`'s configuration (SCRAM-SHA-512) as the kit's environment gives it.
fn config(kafka: &KafkaCluster, user: &str) -> Config {
    let mut env = kafka.client_env(user, ClientAuth::ScramSha512).expect("a SCRAM cluster");
    env.insert("BACKBONE_PROFILE".into(), "development".into());
    env.insert("SCHEMA_REGISTRY_URL".into(), shared_registry().url().to_owned());
    Config::from_lookup(user, |k| env.get(k).cloned()).expect("a valid configuration")
}

/// The estate's specs, as `backbone estate` reads them from the services' binaries.
fn estate() -> Estate {
    Estate::of([orders::app().spec().unwrap(), stock::app().spec().unwrap()]).expect("a valid estate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_estate_runs_with_only_what_estate_apply_granted_and_nothing_more() {
    let kafka = tokio::task::spawn_blocking(|| KafkaCluster::builder().scram(["orders", "stock"]).start())
        .await
        .unwrap()
        .expect("a SCRAM broker with the StandardAuthorizer");
    let estate = estate();
    let errors: Vec<String> =
        estate.check().iter().filter(|f| f.severity == Severity::Error).map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:?}");

    // 1. Apply, then apply again: the second plan is empty.
    let admin = Cluster::connect(&config(&kafka, "admin")).await.expect("the super user connects");
    let (acls, quotas) = (estate.acls(), estate.quotas());
    let prefixes: Vec<String> = estate.prefixes().into_iter().collect();
    let plan = admin.plan(&acls, &quotas, &prefixes, false).await.unwrap();
    assert_eq!(plan.create_acls.len(), acls.len(), "a fresh cluster has none of them:\n{plan}");
    admin.apply(&plan).await.unwrap();
    let again = admin.plan(&acls, &quotas, &prefixes, true).await.unwrap();
    assert!(again.is_empty(), "applying twice changes nothing:\n{again}");
    let applied = admin.describe_quotas().await.unwrap();
    assert_eq!(applied.get("orders"), quotas.get("orders"), "Orders' declared quotas are on the broker");

    // 2. Orders and Stock, each as its own principal: a stocked order is VALIDATED.
    let (orders_config, stock_config) = (config(&kafka, "orders"), config(&kafka, "stock"));
    orders::app().provision(&orders_config).await.expect("Orders provisions its topics");
    stock::app().provision(&stock_config).await.expect("Stock provisions its topics");
    let (orders, stock) = tokio::try_join!(orders::start(&orders_config), stock::start(&stock_config))
        .expect("both start with what was granted");
    tokio::time::timeout(WITHIN, orders.ready()).await.expect("orders ready");
    tokio::time::timeout(WITHIN, stock.ready()).await.expect("stock ready");
    let (o, s) = (orders.router(), stock.router());
    let widget = unique("widget");
    let (status, level) =
        call(&s, Method::PUT, &format!("/v1/stock/{widget}"), Some(json!({"quantity": 5}))).await;
    assert_eq!(status, StatusCode::OK, "{level}");
    let id = unique("order");
    let order = json!({"id": id, "customerId": "alice", "product": widget, "quantity": 3, "price": 5997});
    let (status, created) = call(&o, Method::POST, "/v1/orders", Some(order)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, validated) =
        call(&o, Method::GET, &format!("/v1/orders/{id}/validated?timeout=60000"), None).await;
    assert_eq!((status, validated["state"].as_str()), (StatusCode::OK, Some("VALIDATED")), "{validated}");

    // 3. R13(b): Stock's credentials on Orders' private topic, through raw clients.
    let private = orders_config_private_topic();
    let end_before = end_offset(&kafka, &private);
    let producer: FutureProducer =
        kafka.client_config_with("stock", ClientAuth::ScramSha512).unwrap().create().expect("producer");
    let at = Instant::now();
    let record = FutureRecord::to(&private).key("k").payload("forged");
    let refused = producer.send(record, Duration::from_secs(30)).await.expect_err("refused");
    let took = at.elapsed();
    assert!(
        matches!(refused.0, KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed)),
        "{:?}",
        refused.0
    );
    assert!(took < FAST, "refused in {took:?}, not retried");
    let reader: BaseConsumer = kafka
        .client_config_with("stock", ClientAuth::ScramSha512)
        .unwrap()
        .set("group.id", "stock.snoop")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    reader.subscribe(&[&private]).unwrap();
    let at = Instant::now();
    let denied = loop {
        match reader.poll(Duration::from_millis(500)) {
            Some(Err(e)) => break e,
            Some(Ok(m)) => panic!("Stock read a record of Orders' private topic at offset {}", m.offset()),
            None => assert!(at.elapsed() < FAST, "no refusal within {FAST:?}"),
        }
    };
    assert!(denied.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAuthorizationFailed), "{denied:?}");
    assert_eq!(end_offset(&kafka, &private), end_before, "0 records delivered");

    // 4. One ACL less: Stock may no longer read Orders' orders. It fails fast at start, naming it.
    stock.shutdown().await.expect("stock stops");
    let orders_topic = orders::ORDERS.spec().unwrap();
    let taken = AclBinding::allow(
        "stock",
        Operation::Read,
        ResourceType::Topic,
        orders_topic.name(),
        PatternType::Literal,
    );
    assert!(acls.contains(&taken), "the estate grants it: {acls:#?}");
    let deleted = admin.delete_acls(std::slice::from_ref(&taken)).await.unwrap();
    assert_eq!(deleted, std::slice::from_ref(&taken));
    let at = Instant::now();
    let failed = async {
        match stock::start(&stock_config).await {
            Err(e) => e.to_string(),
            // Served until a consumer stops on its own: it must, and say why.
            Ok(started) => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let served = started.serve(listener, std::future::pending()).await;
                served.expect_err("Stock cannot run without READ on Orders' topic").to_string()
            }
        }
    };
    let error = tokio::time::timeout(WITHIN, failed).await.expect("Stock fails instead of waiting");
    println!("without its READ ACL, Stock failed in {:?}: {error}", at.elapsed());
    assert!(error.contains(orders_topic.name()) && error.contains("User:stock"), "{error}");
    assert!(at.elapsed() < FAST, "failed in {:?}", at.elapsed());
    let plan = admin.plan(&acls, &quotas, &prefixes, false).await.unwrap();
    assert_eq!(plan.create_acls, BTreeSet::from([taken]).into_iter().collect::<Vec<_>>(), "{plan}");
    orders.shutdown().await.expect("orders stops");
}

/// A private topic of Orders that exists once Orders provisioned: its first dead-letter topic.
fn orders_config_private_topic() -> String {
    let spec = orders::app().spec().unwrap();
    spec.owned_topics()
        .iter()
        .map(|t| t.name().to_owned())
        .find(|t| t.starts_with("orders.private."))
        .expect("Orders owns a private topic")
}

/// The end offset of partition 0 of `topic`, read as the super user.
fn end_offset(kafka: &KafkaCluster, topic: &str) -> i64 {
    let admin: BaseConsumer = kafka.client_config().set("group.id", unique("watermarks")).create().unwrap();
    admin.fetch_watermarks(topic, 0, Duration::from_secs(10)).expect("watermarks").1
}
