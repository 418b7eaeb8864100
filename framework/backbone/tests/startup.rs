//! Start-up against the real broker: provisioning, then publishing; weak settings refused first.

use backbone::provision::Provisioner;
use backbone::{Outgoing, Service, TopicSpec};
use backbone_testkit::{shared_kafka, unique};

mod common;

#[tokio::test]
async fn start_provisions_owned_topics_then_publishes_and_shutdown_flushes() {
    let kafka = shared_kafka();
    let config = common::config(kafka.bootstrap_servers());
    let service = unique("svc");
    let events = TopicSpec::public(&service, "order-created", 1).partitions(3).build().unwrap();
    let state = TopicSpec::private(&service, "reservations").compacted().partitions(2).build().unwrap();
    let spec = Service::new(&service).owns(&events).owns(&state).spec().unwrap();

    let running = spec.start(&config).await.expect("start");
    let plan = Provisioner::new(&config, &service).unwrap().plan(spec.owned_topics()).await.unwrap();
    assert!(plan.is_noop(), "start-up created both topics as declared:\n{plan}");
    let d = running.publisher().publish(&events, Outgoing::new("OrderCreated", b"o-1", b"{}")).await.unwrap();
    assert!(d.offset >= 0);
    let again = spec.start(&config).await.expect("a second start changes nothing and works");
    again.shutdown().await.expect("shutdown");
    running.shutdown().await.expect("shutdown flushes");
}

#[tokio::test]
async fn r4_start_refuses_weak_settings_before_touching_kafka() {
    let mut config = common::config("127.0.0.1:1"); // nothing listens: a refusal must come first
    config.producer_overrides.insert("acks".into(), "1".into());
    let topic = TopicSpec::public("orders", "order-created", 1).build().unwrap();
    let err = Service::new("orders").owns(&topic).spec().unwrap().start(&config).await.unwrap_err();
    assert!(err.to_string().contains("acks=1"), "{err}");
    assert!(!err.is_retriable());
}
