//! The estate against the real broker and registry (the test kit's Kafka 4 and Apicurio), driven
//! through each service's router without sockets: an order within stock becomes VALIDATED, one
//! beyond it FAILED and reserves nothing, a cancelled order releases its reservation, a bad POST
//! gets a 400 and writes nothing, a retried POST answers the same order and writes one, and
//! restarted services answer from restored state and go on.
//!
//! The services' topics and consumer groups have fixed names, so everything runs in one test,
//! with names unique to the run for products and orders.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use backbone::testing::Probe;
use backbone::{Config, Json, Profile};
use backbone_testkit::{shared_kafka, shared_registry, unique};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// Every wait is for an event; this only bounds a broken one.
const WITHIN: Duration = Duration::from_secs(90);

fn config() -> Config {
    let mut config = Config::default();
    config.bootstrap_servers = shared_kafka().bootstrap_servers().to_owned();
    config.schema_registry_url = shared_registry().url().to_owned();
    config.profile = Profile::Development;
    config
}

/// One HTTP call through `router`: status, the headers asked for, and the JSON body (or Null).
async fn call(
    router: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, Vec<Option<String>>, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let response = router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let wanted = ["location", "consistency-token", "retry-after"];
    let heads =
        wanted.iter().map(|h| response.headers().get(*h).map(|v| v.to_str().unwrap().to_owned())).collect();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, heads, json)
}

async fn start(
    config: &Config,
) -> (backbone::app::Started<orders::Orders>, backbone::app::Started<stock::Stock>) {
    let (orders, stock) = tokio::try_join!(orders::start(config), stock::start(config)).expect("both start");
    tokio::time::timeout(WITHIN, orders.ready()).await.expect("orders ready");
    tokio::time::timeout(WITHIN, stock.ready()).await.expect("stock ready");
    (orders, stock)
}

/// Waits (on the products table, no polling) until `product` has `reserved` units reserved.
async fn reserved(
    stock: &backbone::app::Started<stock::Stock>,
    product: &str,
    reserved: i64,
) -> stock::ProductState {
    let state = stock
        .state()
        .products
        .wait_until_key(product, |p| p.is_some_and(|Json(p)| p.reserved == reserved), WITHIN)
        .await
        .unwrap_or_else(|e| panic!("{product} never had {reserved} reserved: {e}"));
    state.expect("present").0
}

fn order(id: &str, product: &str, quantity: i64) -> Value {
    json!({"id": id, "customerId": "alice", "product": product, "quantity": quantity, "price": 1999 * quantity})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_validate_fail_cancel_and_survive_a_restart_on_the_real_broker() {
    let config = config();
    let started = std::time::Instant::now();
    orders::app().provision(&config).await.expect("orders' topics");
    stock::app().provision(&config).await.expect("stock's topics");
    let (orders, stock) = start(&config).await;
    eprintln!("both ready in {:?}", started.elapsed());
    let (o, s) = (orders.router(), stock.router());
    let run = unique("e2e");
    let widget = format!("{run}-widget");
    let orders_topic = orders::ORDERS.spec().unwrap();
    let probe = Probe::new(&config, &orders_topic).await.expect("probe");

    // Stock 5 widgets: answered once applied.
    let (status, _, level) =
        call(&s, Method::PUT, &format!("/v1/stock/{widget}"), &[], Some(json!({"quantity": 5}))).await;
    assert_eq!(status, StatusCode::OK, "{level}");
    assert_eq!((level["available"].clone(), level["reserved"].clone()), (json!(5), json!(0)));

    // Bad POSTs: 400 naming the field and the reason.
    let bad_id = format!("{run}-bad");
    let (status, _, problem) =
        call(&o, Method::POST, "/v1/orders", &[], Some(order(&bad_id, &widget, 0))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (problem["field"].as_str(), problem["reason"].as_str()),
        (Some("quantity"), Some("must be at least 1"))
    );
    let mut no_customer = order(&bad_id, &widget, 1);
    no_customer.as_object_mut().unwrap().remove("customerId");
    let (status, _, problem) = call(&o, Method::POST, "/v1/orders", &[], Some(no_customer)).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("customerId")));

    // An order within stock: 201 with Location and token, readable at once with the token, then
    // VALIDATED; 3 reserved.
    let a = format!("{run}-a");
    let mut body = order("", &widget, 3);
    body.as_object_mut().unwrap().remove("id");
    let placed_at = std::time::Instant::now();
    let (status, heads, created) =
        call(&o, Method::POST, "/v1/orders", &[("idempotency-key", &a)], Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(heads[0].as_deref(), Some(format!("/v1/orders/{a}").as_str()));
    let token = heads[1].clone().expect("a consistency token");
    assert_eq!((created["id"].as_str(), created["state"].as_str()), (Some(a.as_str()), Some("CREATED")));
    let (status, _, read) = call(&o, Method::GET, &format!("/v1/orders/{a}?token={token}"), &[], None).await;
    assert_eq!(status, StatusCode::OK, "read your write: {read}");
    assert_eq!(read["customerId"], "alice");
    let (status, _, validated) =
        call(&o, Method::GET, &format!("/v1/orders/{a}/validated?timeout=60000"), &[], None).await;
    assert_eq!((status, validated["state"].as_str()), (StatusCode::OK, Some("VALIDATED")), "{validated}");
    eprintln!("POST to VALIDATED in {:?}", placed_at.elapsed());
    reserved(&stock, &widget, 3).await;
    let (_, _, level) = call(&s, Method::GET, &format!("/v1/stock/{widget}"), &[], None).await;
    assert_eq!((level["available"].clone(), level["reserved"].clone()), (json!(2), json!(3)));

    // A retried POST with the same key: the same order, as it stands; no second one. With other
    // contents under the same key: 409.
    let (status, heads, again) =
        call(&o, Method::POST, "/v1/orders", &[("idempotency-key", &a)], Some(body.clone())).await;
    assert_eq!(
        (status, again["id"].as_str(), again["state"].as_str()),
        (StatusCode::OK, Some(a.as_str()), Some("VALIDATED"))
    );
    assert_eq!(heads[0].as_deref(), Some(format!("/v1/orders/{a}").as_str()));
    body["quantity"] = json!(4);
    let (status, _, _) = call(&o, Method::POST, "/v1/orders", &[("idempotency-key", &a)], Some(body)).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Beyond stock: FAILED with a reason, nothing reserved.
    let b = format!("{run}-b");
    let (status, _, _) = call(&o, Method::POST, "/v1/orders", &[], Some(order(&b, &widget, 3))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, failed) =
        call(&o, Method::GET, &format!("/v1/orders/{b}/validated?timeout=60000"), &[], None).await;
    assert_eq!((status, failed["state"].as_str()), (StatusCode::OK, Some("FAILED")), "{failed}");
    assert_eq!(failed["reason"], "only 2 of 3 available");
    let product = stock.state().products.get(&widget).unwrap().unwrap().0;
    assert_eq!(product.reserved, 3, "the failed order reserved nothing");
    assert!(product.has_seen(&b) && !product.reservations.contains_key(&b), "b settled, holds nothing");

    // Cancelling: a failed order cannot be; the validated one is, and its 3 are released.
    let (status, _, _) = call(&o, Method::POST, &format!("/v1/orders/{b}/cancel"), &[], None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, heads, cancelled) =
        call(&o, Method::POST, &format!("/v1/orders/{a}/cancel"), &[], None).await;
    assert_eq!((status, cancelled["state"].as_str()), (StatusCode::OK, Some("CANCELLED")));
    assert!(heads[1].is_some(), "the cancellation's token");
    reserved(&stock, &widget, 0).await;
    let (_, _, level) = call(&s, Method::GET, &format!("/v1/stock/{widget}"), &[], None).await;
    assert_eq!((level["available"].clone(), level["reserved"].clone()), (json!(5), json!(0)));

    // What was written for `a`, in its partition's order: one CREATED (the retry wrote none), then
    // VALIDATED, then CANCELLED; nothing for the bad POSTs.
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("CANCELLED") {
        let event = probe
            .expect("an event of the run's orders", WITHIN, |e| {
                e.key().is_some_and(|k| k == a.as_bytes() || k == bad_id.as_bytes())
            })
            .await
            .expect("a's events");
        assert_eq!(event.key(), Some(a.as_bytes()), "the bad POST wrote nothing");
        let written: orders::Order = probe.decode(&event).await.unwrap();
        states.push(serde_json::to_value(written.state).unwrap().as_str().unwrap().to_owned());
    }
    assert_eq!(states, ["CREATED", "VALIDATED", "CANCELLED"]);
    let (status, _, _) = call(&o, Method::GET, &format!("/v1/orders/{bad_id}"), &[], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Restart both: they answer from restored state, and go on from there.
    orders.shutdown().await.expect("orders stops cleanly");
    stock.shutdown().await.expect("stock stops cleanly");
    let restarted = std::time::Instant::now();
    let (orders, stock) = start(&config).await;
    eprintln!("both restarted and restored in {:?}", restarted.elapsed());
    let (o, s) = (orders.router(), stock.router());
    let (status, _, a_now) = call(&o, Method::GET, &format!("/v1/orders/{a}"), &[], None).await;
    assert_eq!((status, a_now["state"].as_str()), (StatusCode::OK, Some("CANCELLED")));
    let (_, _, b_now) = call(&o, Method::GET, &format!("/v1/orders/{b}"), &[], None).await;
    assert_eq!(
        (b_now["state"].as_str(), b_now["reason"].as_str()),
        (Some("FAILED"), Some("only 2 of 3 available"))
    );
    let (status, _, level) = call(&s, Method::GET, &format!("/v1/stock/{widget}"), &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (level["warehouse"].clone(), level["available"].clone(), level["reserved"].clone()),
        (json!(5), json!(5), json!(0))
    );
    // A retry of `a` after the restart still answers the same order.
    let (status, _, again) =
        call(&o, Method::POST, "/v1/orders", &[("idempotency-key", &a)], Some(order(&a, &widget, 3))).await;
    assert_eq!((status, again["state"].as_str()), (StatusCode::OK, Some("CANCELLED")));
    // All 5 fit now.
    let c = format!("{run}-c");
    let (status, _, _) = call(&o, Method::POST, "/v1/orders", &[], Some(order(&c, &widget, 5))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, _, validated) =
        call(&o, Method::GET, &format!("/v1/orders/{c}/validated?timeout=60000"), &[], None).await;
    assert_eq!(validated["state"], "VALIDATED", "{validated}");
    reserved(&stock, &widget, 5).await;

    // Item 11: orders outside the contract's range, written to the orders topic directly (not
    // through Orders' validating POST): Stock fails each with a reason and reserves nothing.
    for (suffix, quantity) in [("zero", 0), ("negative", -5), ("huge", i32::MAX)] {
        let id = format!("{run}-{suffix}");
        let bad = orders::Order {
            id: id.clone(),
            customer_id: "mallory".into(),
            product: widget.clone(),
            quantity,
            price: 1,
            state: orders::OrderState::Created,
            reason: None,
        };
        orders.publisher().emit(&bad).await.expect("written");
        let (status, _, settled) =
            call(&o, Method::GET, &format!("/v1/orders/{id}/validated?timeout=60000"), &[], None).await;
        assert_eq!((status, settled["state"].as_str()), (StatusCode::OK, Some("FAILED")), "{settled}");
        let reason = settled["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("between 1 and 1000000"), "{quantity}: {settled}");
    }
    let product = stock.state().products.get(&widget).unwrap().unwrap().0;
    assert_eq!((product.reserved, product.reservations.len()), (5, 1), "nothing held for them");

    // Item 6: path ids are bounded before anything waits on them; axum's own rejections and the
    // body limit answer in the services' problem shape (`call` parses every answer as JSON).
    let long = "x".repeat(129);
    for path in [format!("/v1/orders/{long}"), format!("/v1/orders/{long}/validated?timeout=100")] {
        let (status, _, problem) = call(&o, Method::GET, &path, &[], None).await;
        assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("id")), "{problem}");
    }
    let (status, _, problem) = call(&o, Method::POST, &format!("/v1/orders/{long}/cancel"), &[], None).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("id")), "{problem}");
    let (status, _, problem) = call(&s, Method::GET, &format!("/v1/stock/{long}"), &[], None).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("product")), "{problem}");
    let (status, _, problem) =
        call(&o, Method::GET, &format!("/v1/orders/{c}?timeout=soon"), &[], None).await;
    assert_eq!(
        (status, problem["error"].as_str(), problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid"), Some("query")),
        "{problem}"
    );
    let huge = json!({"customerId": "x".repeat(70_000), "product": widget, "quantity": 1, "price": 1});
    let (status, _, problem) = call(&o, Method::POST, "/v1/orders", &[], Some(huge)).await;
    assert_eq!(
        (status, problem["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")),
        "{problem}"
    );
    let (status, _, problem) = call(&s, Method::DELETE, &format!("/v1/stock/{widget}"), &[], None).await;
    assert_eq!(
        (status, problem["error"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );

    // Unknown: 404; a token past its partition's end names no write: 400 naming it (schemathesis
    // found it a 504); the documents are served.
    let (status, _, _) = call(&o, Method::GET, &format!("/v1/orders/{run}-none"), &[], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let far = format!("0:{}", i64::MAX / 2);
    let (status, _, problem) =
        call(&o, Method::GET, &format!("/v1/orders/{c}?token={far}&timeout=200"), &[], None).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("token")), "{problem}");
    assert!(problem["reason"].as_str().is_some_and(|r| r.contains("not written")), "{problem}");
    let (status, _, doc) = call(&o, Method::GET, "/openapi.json", &[], None).await;
    assert_eq!((status, doc["info"]["title"].as_str()), (StatusCode::OK, Some("Orders")));
    let (status, _, doc) = call(&s, Method::GET, "/openapi.json", &[], None).await;
    assert_eq!((status, doc["info"]["title"].as_str()), (StatusCode::OK, Some("Stock")));

    orders.shutdown().await.expect("orders stops cleanly");
    stock.shutdown().await.expect("stock stops cleanly");
}
