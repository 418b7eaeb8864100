use backbone::consume::dead_letter_topic;
use backbone::topic::TopicSpec;
use backbone::{Service, ServiceSpec};
use serde_json::{Value, json};

use super::*;

fn created() -> TopicSpec {
    TopicSpec::public("orders", "order-created", 1).build().unwrap()
}

/// A consumer of `topic` in `<service>.handle`, with its dead-letter topic.
fn reads(service: Service, name: &str, topic: &TopicSpec) -> Service {
    service.consumes(topic).owns(&dead_letter_topic(name, topic).unwrap()).consumer(
        topic,
        format!("{name}.handle"),
        false,
    )
}

/// `spec` with its JSON changed by `change` (to declare what only hand-written specs hold).
fn edit(spec: ServiceSpec, change: impl FnOnce(&mut Value)) -> ServiceSpec {
    let mut json: Value = serde_json::from_str(&spec.to_json()).unwrap();
    change(&mut json);
    ServiceSpec::from_json(&json.to_string()).unwrap()
}

fn event(topic: &str, record: &str, key: Option<&str>) -> Value {
    json!({"topic": topic, "subject": format!("{topic}-value"), "record": record, "schema": "\"string\"", "key": key})
}

fn orders() -> ServiceSpec {
    let spec = Service::new("orders").owns(&created()).spec().unwrap();
    edit(spec, |j| j["events"] = json!([event(created().name(), "shop.OrderCreated", Some("string"))]))
}

fn stock_expecting(record: &str, key: Option<&str>) -> ServiceSpec {
    let spec = reads(Service::new("stock"), "stock", &created()).spec().unwrap();
    edit(spec, |j| j["expects"] = json!([{"topic": created().name(), "record": record, "key": key}]))
}

fn findings(specs: impl IntoIterator<Item = ServiceSpec>) -> Vec<Finding> {
    Estate::of(specs).unwrap().check()
}

fn only(findings: &[Finding], rule: Rule, severity: Severity, expected: &[&str]) {
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!((f.rule, f.severity), (rule, severity), "{f}");
    for part in expected {
        assert!(f.message.contains(part), "`{}` should say `{part}`", f.message);
    }
}

#[test]
fn an_estate_that_agrees_has_no_findings() {
    assert_eq!(findings([orders(), stock_expecting("shop.OrderCreated", Some("string"))]), []);
}

#[test]
fn a_topic_nobody_produces_is_a_warning() {
    let stock = stock_expecting("shop.OrderCreated", None);
    only(
        &findings([stock.clone()]),
        Rule::Producer,
        Severity::Warning,
        &["service `stock` consumes `orders.public.order-created-v1`", "`orders` is not in the estate"],
    );
    let idle = Service::new("orders").spec().unwrap();
    only(&findings([stock, idle]), Rule::Producer, Severity::Warning, &["`orders` does not declare it"]);
}

#[test]
fn consumers_expect_a_record_the_producer_publishes() {
    only(
        &findings([orders(), stock_expecting("shop.OrderPlaced", None)]),
        Rule::Schema,
        Severity::Error,
        &[
            "service `stock` expects `shop.OrderPlaced` on `orders.public.order-created-v1`",
            "`orders` publishes only shop.OrderCreated (subject orders.public.order-created-v1-value)",
        ],
    );
    let raw = Service::new("orders").owns(&created()).spec().unwrap();
    only(
        &findings([raw, stock_expecting("shop.OrderCreated", None)]),
        Rule::Schema,
        Severity::Warning,
        &["`orders` declares no Avro event on it"],
    );
}

#[test]
fn producer_and_consumers_agree_on_the_key_type() {
    only(
        &findings([orders(), stock_expecting("shop.OrderCreated", Some("long"))]),
        Rule::KeyType,
        Severity::Error,
        &[
            "service `stock` expects keys of type `long` on `orders.public.order-created-v1`",
            "keyed by `string`",
        ],
    );
}

#[test]
fn readers_declare_a_topic_as_its_owner_does() {
    let other = TopicSpec::public("orders", "order-created", 1).partitions(3).build().unwrap();
    let stock = reads(Service::new("stock"), "stock", &other).spec().unwrap();
    only(
        &findings([orders(), stock]),
        Rule::TopicSettings,
        Severity::Warning,
        &[
            "service `stock` declares `orders.public.order-created-v1` with other settings than its owner `orders`",
            "partitions 3 vs 6",
        ],
    );
}

#[test]
fn dead_letter_topics_belong_to_the_consumer() {
    let missing = Service::new("stock").consumes(&created()).consumer(&created(), "stock.handle", false);
    only(
        &findings([orders(), missing.spec().unwrap()]),
        Rule::DeadLetters,
        Severity::Error,
        &[
            "service `stock` consumes `orders.public.order-created-v1` but does not own its dead-letter topic `stock.private.dlq.orders.public.order-created-v1`",
        ],
    );
    let stale = Service::new("stock").owns(&dead_letter_topic("stock", &created()).unwrap());
    only(
        &findings([orders(), stale.spec().unwrap()]),
        Rule::DeadLetters,
        Severity::Warning,
        &["`stock` owns `stock.private.dlq.orders.public.order-created-v1` but does not consume its source"],
    );
}

#[test]
fn request_and_reply_topics_belong_to_requester_and_responder() {
    use backbone::request::{reply_topic, request_topic};
    let requests = request_topic("orders", "stock-level").build().unwrap();
    let replies = reply_topic("stock", "stock-level").build().unwrap();
    let orders = reads(Service::new("orders").owns(&requests), "orders", &replies).spec().unwrap();
    let stock = reads(Service::new("stock").owns(&replies), "stock", &requests).spec().unwrap();
    assert_eq!(findings([orders.clone(), stock.clone()]), []);

    let deaf = Service::new("orders").owns(&requests).spec().unwrap();
    only(
        &findings([deaf, stock]),
        Rule::RequestReply,
        Severity::Error,
        &[
            "service `orders` sends requests on `orders.public.stock-level-requests-v1` but does not declare that it reads `stock`'s reply topic `stock.public.stock-level-replies-v1`",
        ],
    );
    let mute = Service::new("stock").owns(&replies).spec().unwrap();
    let found = findings([orders, mute]);
    let rules: Vec<_> = found.iter().map(|f| (f.rule, f.severity)).collect();
    assert!(rules.contains(&(Rule::RequestReply, Severity::Error)), "{found:#?}");
    assert!(
        found.iter().any(|f| f.message.contains(
            "service `stock` owns the reply topic `stock.public.stock-level-replies-v1` but reads no `stock-level-requests-v1` topic"
        )),
        "{found:#?}"
    );
}

#[test]
fn groups_sit_under_the_service_prefix() {
    let stock = Service::new("stock")
        .consumes(&created())
        .owns(&dead_letter_topic("stock", &created()).unwrap())
        .consumer(&created(), "reserve", true)
        .spec()
        .unwrap();
    only(
        &findings([orders(), stock]),
        Rule::GroupPrefix,
        Severity::Error,
        &[
            "service `stock` reads `orders.public.order-created-v1` in group `reserve`",
            "transactional ids must start with `stock.`",
        ],
    );
}

#[test]
fn errors_come_first_and_read_as_sentences() {
    let stock = Service::new("stock").consumes(&created()).consumer(&created(), "x", false).spec().unwrap();
    let found = findings([stock]);
    assert_eq!(
        found.iter().map(|f| f.severity).collect::<Vec<_>>(),
        [Severity::Error, Severity::Error, Severity::Warning]
    );
    assert!(found[2].to_string().starts_with("warning: service `stock` consumes"), "{}", found[2]);
}
