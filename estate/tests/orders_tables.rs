//! Orders' table against hostile and out-of-contract input, on the real broker and registry:
//! consistency tokens naming partitions the topic lacks (issue 14 item 1) and an order written to
//! another partition than murmur2's (R18). Its own binary: the services' topics and groups have
//! fixed names, and this test must not share them with another running at the same time.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use backbone::Outgoing;
use backbone::consume::dead_letter_headers::ERROR_MESSAGE;
use backbone::consume::dead_letter_topic;
use backbone::testing::Probe;
use backbone_testkit::unique;
use serde_json::json;

/// Every wait is for an event; this only bounds a broken one.
mod common;
use common::{call, config};

const WITHIN: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn item_1_and_r18_tokens_for_missing_partitions_are_400s_and_a_misplaced_order_fails_fast() {
    let config = config();
    orders::app().provision(&config).await.expect("orders' topics");
    stock::app().provision(&config).await.expect("stock's topics");
    let (orders, stock) =
        tokio::try_join!(orders::start(&config), stock::start(&config)).expect("both start");
    tokio::time::timeout(WITHIN, orders.ready()).await.expect("orders ready");
    tokio::time::timeout(WITHIN, stock.ready()).await.expect("stock ready");
    let (o, s) = (orders.router(), stock.router());
    let table = &orders.state().table;
    let run = unique("r18");

    // Item 1: 20,000 GETs with a token naming partition 6, 7, …: each a 400 naming the token, and
    // the table keeps nothing for them (before: 503 and a channel per partition, forever).
    let tracked = table.tracked_partitions();
    assert_eq!(tracked, 6);
    for n in 6..20_006 {
        let (status, problem) =
            call(&o, Method::GET, &format!("/v1/orders/x?token={n}:0&timeout=0"), None).await;
        assert_eq!(
            (status, problem["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("token")),
            "{problem}"
        );
        if n == 6 {
            let reason = problem["reason"].as_str().unwrap();
            assert!(
                reason.contains("`6:0` names a partition that does not exist (partitions: 0 to 5)"),
                "{reason}"
            );
        }
    }
    assert_eq!(table.tracked_partitions(), tracked, "nothing kept for 20,000 refused tokens");
    assert_eq!(table.waiting(), 0);

    // R18: an order written (by a producer that is not murmur2's) to another partition than its
    // key's. Stock validates it; Orders' validation handler must fail at once, not wait 5 x 30 s.
    let widget = format!("{run}-widget");
    let (status, level) =
        call(&s, Method::PUT, &format!("/v1/stock/{widget}"), Some(json!({"quantity": 5}))).await;
    assert_eq!(status, StatusCode::OK, "{level}");
    let orders_topic = orders::ORDERS.spec().unwrap();
    let validations = orders::VALIDATIONS.spec().unwrap();
    let dead_letters =
        Probe::new(&config, &dead_letter_topic("orders", &validations).unwrap()).await.expect("probe");
    let stray = format!("{run}-stray");
    let order = orders::Order {
        id: stray.clone(),
        customer_id: "mallory".into(),
        product: widget.clone(),
        quantity: 1,
        price: 100,
        state: orders::OrderState::Created,
        reason: None,
    };
    let spec = orders::app().spec().unwrap();
    let binding = spec.events().iter().find(|e| e.topic == orders_topic.name()).expect("Order's binding");
    let publisher = &orders.state().publisher;
    let payload = publisher
        .registry()
        .encoder::<orders::Order>(&binding.subject)
        .await
        .unwrap()
        .encode(&order)
        .unwrap();
    let wrong = (table.partition_for(&stray) + 1) % 6;
    let written_at = std::time::Instant::now();
    let at = publisher
        .publish(&orders_topic, Outgoing::new("Order", stray.as_bytes(), &payload).partition(wrong))
        .await
        .unwrap();
    assert_eq!(at.partition, wrong);
    table.wait_for_delivery(at, WITHIN).await.expect("applied");
    assert_eq!(table.misplaced(), 1, "counted");

    // A read says what is wrong instead of "absent".
    let (status, problem) = call(&o, Method::GET, &format!("/v1/orders/{stray}"), None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{problem}");
    let reason = problem["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("was written to partition {wrong}")) && reason.contains("murmur2"),
        "{reason}"
    );

    // Stock's verdict on it reaches Orders, whose handler gives up at once: dead-lettered with why.
    let dead = dead_letters.expect_key(&stray, WITHIN).await.expect("the verdict dead-lettered");
    let took = written_at.elapsed();
    let why = String::from_utf8_lossy(dead.header(ERROR_MESSAGE).unwrap_or_default()).into_owned();
    assert!(why.contains("murmur2"), "{why}");
    assert!(took < Duration::from_secs(20), "failed fast, not after 30 s waits: {took:?}");
    eprintln!("misplaced order's verdict dead-lettered {took:?} after the write");

    // Everything else goes on: a correctly placed order validates, and Orders stays ready.
    let good = format!("{run}-good");
    let body = json!({"id": good, "customerId": "alice", "product": widget, "quantity": 1, "price": 100});
    let (status, created) = call(&o, Method::POST, "/v1/orders", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, validated) =
        call(&o, Method::GET, &format!("/v1/orders/{good}/validated?timeout=60000"), None).await;
    assert_eq!((status, validated["state"].as_str()), (StatusCode::OK, Some("VALIDATED")), "{validated}");
    assert!(orders.health().snapshot().is_ready(), "{:?}", orders.health().snapshot());
    orders.shutdown().await.expect("orders stops cleanly");
    stock.shutdown().await.expect("stock stops cleanly");
}
