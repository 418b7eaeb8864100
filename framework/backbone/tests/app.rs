//! A service declared with the macros (`#[derive(Event)]`, `#[backbone::handler]`,
//! `backbone::service!`) runs against a real broker and registry: an event published to the topic
//! it consumes reaches its handler, the handler's output lands on the topic it owns (keyed by the
//! event's key field), and HTTP serves readiness, health and its routes until a graceful shutdown
//! (out of rotation first, serving on for the shutdown delay).
//! And the builder underneath, driven without a socket: a table restored before the service is
//! ready, fed by a handler, read by a route.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use backbone::app::App;
use backbone::event::BoundEvent as _;
use backbone::table::Table;
use backbone::testing::Probe;
use backbone::{Config, Event, HandlerError, Outgoing, Publisher, State, TopicSpec};
use backbone_testkit::{shared_kafka, shared_registry, unique};

/// The shop's contract: an order was placed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("macro-shop", "order-placed", 1), key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
struct OrderPlaced {
    id: String,
    product: String,
    quantity: i32,
}

/// Stock's contract: its verdict on an order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, backbone::Event)]
#[serde(rename_all = "camelCase")]
#[event(topic = ("macro-stock", "order-checked", 1), key = order_id, schema = "tests/schemas/shop/order-checked-v1.avsc")]
struct OrderChecked {
    order_id: String,
    passed: bool,
}

#[derive(Clone, Default)]
struct Stock {
    handled: Arc<AtomicUsize>,
}

/// Passes orders of at most 10.
#[backbone::handler(emits(OrderChecked))]
async fn check(
    Event(order): Event<OrderPlaced>,
    State(stock): State<Stock>,
    out: Publisher,
) -> Result<(), HandlerError> {
    // Counted first: once the verdict can be read, the count includes it.
    stock.handled.fetch_add(1, Ordering::SeqCst);
    out.emit(&OrderChecked { order_id: order.id, passed: order.quantity <= 10 }).await?;
    Ok(())
}

fn routes() -> axum::Router<Stock> {
    use axum::extract::State;
    axum::Router::new().route(
        "/v1/handled",
        axum::routing::get(
            |State(s): State<Stock>| async move { s.handled.load(Ordering::SeqCst).to_string() },
        ),
    )
}

backbone::service! {
    /// Stock: checks new orders.
    macro_stock: Stock {
        handles check; // emits OrderChecked: declared (schema registered) by the handler

        routes routes();
    }
}

fn config() -> Config {
    let mut config = common::config(shared_kafka().bootstrap_servers());
    config.schema_registry_url = shared_registry().url().to_owned();
    config
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Option<String>, String) {
    let response = client.get(url).send().await.expect("request");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_declared_with_the_macros_handles_publishes_and_serves() {
    let mut config = config();
    // Asked to stop, the service stays up (out of rotation) this long before it drains.
    config.shutdown_delay = Duration::from_secs(2);
    let spec = macro_stock().spec().expect("the declaration is valid");
    assert!(
        spec.owned("macro-stock.private.dlq.macro-shop.public.order-placed-v1").is_some(),
        "the consumed topic's dead-letter topic is declared for us"
    );
    assert!(
        spec.owned("macro-stock.private.retry.macro-shop.public.order-placed-v1").is_some(),
        "and its retry topic, where `backbone dlq replay` writes"
    );

    // The shop: publishes orders (declared with the builder, to the same effect).
    let shop = App::<()>::new("macro-shop")
        .publishes::<OrderPlaced>()
        .start(&config, ())
        .await
        .expect("shop starts");

    let started = macro_stock().start(&config, Stock::default()).await.expect("stock starts");
    let health = started.health().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(started.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();

    // Until the consumer has its partitions, /readyz says what it waits for (on the local broker
    // that can be over before the first request: the app unit tests pin the 503 down).
    let (status, retry_after, body) = get(&client, &format!("{base}/readyz")).await;
    if status != 200 {
        assert_eq!((status, retry_after.as_deref()), (503, Some("1")), "{body}");
        assert!(body.contains("consumer:macro-stock.check"), "{body}");
    }

    tokio::time::timeout(Duration::from_secs(60), health.wait_until(|h| h.is_ready()))
        .await
        .expect("ready within 60 s");
    assert_eq!(get(&client, &format!("{base}/readyz")).await.0, 200);
    assert_eq!(get(&client, &format!("{base}/healthz")).await.0, 200);

    // Orders in, verdicts out.
    let run = unique("run");
    let orders: Vec<OrderPlaced> = (0..4)
        .map(|i| OrderPlaced { id: format!("{run}-{i}"), product: "widget".into(), quantity: i * 5 })
        .collect();
    for order in &orders {
        shop.publisher().emit(order).await.expect("published");
    }

    // Each verdict on Stock's topic, read_committed and decoded by its writer schema.
    let verdicts = Probe::from_beginning(&config, OrderChecked::topic().unwrap()).await.expect("probe");
    for order in &orders {
        let event = verdicts.expect_key(&order.id, Duration::from_secs(60)).await.expect("a verdict");
        let verdict: OrderChecked = verdicts.decode(&event).await.expect("an OrderChecked");
        assert_eq!(verdict.order_id, order.id, "keyed by its key field");
        assert_eq!(verdict.passed, order.quantity <= 10, "{order:?}");
    }
    let (status, _, handled) = get(&client, &format!("{base}/v1/handled")).await;
    assert_eq!(status, 200);
    assert!(handled.parse::<usize>().unwrap() >= orders.len(), "{handled}");

    // Graceful shutdown: out of rotation first while still serving (for the shutdown delay: the
    // platform stops routing here meanwhile), then the server stops, the consumer commits and
    // leaves, the publisher flushes.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), health.wait_until(|h| !h.is_ready()))
        .await
        .expect("out of rotation at once");
    let (status, _, body) = get(&client, &format!("{base}/readyz")).await;
    assert_eq!(status, 503, "readiness fails before the listener closes: {body}");
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(get(&client, &format!("{base}/livez")).await.0, 200, "alive while draining");
    assert!(!server.is_finished(), "still serving within the shutdown delay");
    tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .expect("stops within 60 s")
        .unwrap()
        .expect("a clean shutdown");
    assert!(!health.snapshot().is_ready(), "out of rotation once shutting down");
    assert!(client.get(format!("{base}/healthz")).send().await.is_err(), "no longer serving");
    shop.shutdown().await.unwrap();
}

#[derive(Clone)]
struct Levels {
    table: Table<String>,
    topic: TopicSpec,
}

/// `sku=count` requests set a level: written to the table's topic.
async fn set_level(
    Event(request): Event<String>,
    State(levels): State<Levels>,
    out: Publisher,
) -> Result<(), HandlerError> {
    let (sku, count) =
        request.split_once('=').ok_or_else(|| HandlerError::permanent("expected sku=count"))?;
    out.publish(&levels.topic, Outgoing::new("Level", sku.as_bytes(), count.as_bytes())).await?;
    Ok(())
}

async fn level(
    axum::extract::State(levels): axum::extract::State<Levels>,
    axum::extract::Path(sku): axum::extract::Path<String>,
) -> (axum::http::StatusCode, String) {
    match levels.table.get(&sku) {
        Ok(Some(count)) => (axum::http::StatusCode::OK, count),
        Ok(None) => (axum::http::StatusCode::NOT_FOUND, String::new()),
        Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn call(router: &axum::Router, path: &str) -> (u16, String) {
    use tower::ServiceExt as _;
    let response = router.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_runs_a_table_fed_by_a_handler_and_tests_drive_it_without_a_socket() {
    let config = config();
    let service = unique("app");
    let levels = TopicSpec::private(&service, "levels").compacted().partitions(2).build().unwrap();
    let requests = TopicSpec::public(&service, "level-requests", 1).partitions(2).build().unwrap();
    let app = App::<Levels>::new(&service)
        .owns(&levels)
        .owns(&requests)
        .table::<String>(&levels)
        .consume(&requests, set_level)
        .routes(axum::Router::new().route("/v1/levels/{sku}", axum::routing::get(level)));
    let spec = app.spec().unwrap();
    let dead_letters = format!("{service}.private.dlq.{}", requests.name());
    assert!(spec.owned(&dead_letters).is_some(), "{spec:?}");
    assert!(spec.consumed_topics().iter().any(|t| t.name() == levels.name()), "the table's topic is read");

    let started = app
        .start_with(&config, |tables| {
            Ok(Levels { table: tables.get::<String>(&levels)?, topic: levels.clone() })
        })
        .await
        .expect("starts");
    let router = started.router();
    assert!(
        matches!(started.tables().get::<Vec<u8>>(&levels), Err(backbone::app::AppError::NoTable { .. })),
        "a table is found by topic and value type"
    );
    tokio::time::timeout(Duration::from_secs(60), started.ready()).await.expect("ready within 60 s");
    let (status, body) = call(&router, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(call(&router, "/v1/levels/sku-1").await.0, 404, "restored, and empty");

    started.publisher().publish(&requests, Outgoing::new("SetLevel", b"sku-1", b"sku-1=7")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = call(&router, "/v1/levels/sku-1").await;
        if status == 200 {
            assert_eq!(body, "7");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the level never reached the table: {status} {body}");
        // Polled with a deadline: the handler's write has no delivery for the test to wait on.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    started.shutdown().await.expect("a clean shutdown");
    let (status, body) = call(&router, "/readyz").await;
    assert_eq!(status, 503, "not ready once shut down: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_on_the_configured_address_until_shutdown_and_reports_one_in_use() {
    let service = unique("app");
    let topic = TopicSpec::private(&service, "state").partitions(1).build().unwrap();
    let app = || App::<()>::new(&service).owns(&topic);

    // An address in use: the error says so (after the publisher is flushed).
    let mut config = config();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.http_addr = taken.local_addr().unwrap();
    let err = app().run(&config, (), std::future::pending()).await.unwrap_err();
    assert!(matches!(err, backbone::app::AppError::Http(_)), "{err}");

    // A free one (freed just before: another process could take it meanwhile, but hardly does).
    drop(taken);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let app = app();
        let config = config.clone();
        async move {
            app.run(&config, (), async move {
                let _ = stopped.await;
            })
            .await
        }
    });
    let client = reqwest::Client::new();
    let url = format!("http://{}/readyz", config.http_addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match client.get(&url).send().await {
            Ok(response) if response.status() == 200 => break,
            outcome => {
                assert!(tokio::time::Instant::now() < deadline, "not serving within 60 s: {outcome:?}")
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("stops within 60 s")
        .unwrap()
        .expect("a clean shutdown");
}

/// The same service with `#[backbone::handler(exactly_once)]`: outputs commit with the consumed
/// offsets, so a `read_committed` reader sees exactly one verdict per order.
mod exactly_once {
    use super::*;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, backbone::Event)]
    #[event(topic = ("macro-shop", "order-placed-eos", 1), key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
    pub(super) struct OrderPlaced {
        id: String,
        product: String,
        quantity: i32,
    }

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, backbone::Event)]
    #[serde(rename_all = "camelCase")]
    #[event(topic = ("macro-eos", "order-checked", 1), key = order_id, schema = "tests/schemas/shop/order-checked-v1.avsc")]
    pub(super) struct OrderChecked {
        order_id: String,
        passed: bool,
    }

    #[backbone::handler(exactly_once, emits(OrderChecked))]
    async fn check_once(Event(order): Event<OrderPlaced>, out: Publisher) -> Result<(), HandlerError> {
        out.emit(&OrderChecked { order_id: order.id, passed: order.quantity <= 10 }).await?;
        Ok(())
    }

    backbone::service! {
        macro_eos: () {
            handles check_once;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exactly_once_handler_commits_one_output_per_input() {
        let config = config();
        let shop = App::<()>::new("macro-shop")
            .publishes::<OrderPlaced>()
            .start(&config, ())
            .await
            .expect("shop starts");
        let started = macro_eos().start(&config, ()).await.expect("starts");
        tokio::time::timeout(Duration::from_secs(60), started.ready()).await.expect("ready within 60 s");

        let run = unique("eos");
        let orders: Vec<OrderPlaced> = (0..20)
            .map(|i| OrderPlaced { id: format!("{run}-{i}"), product: "widget".into(), quantity: i })
            .collect();
        for order in &orders {
            shop.publisher().emit(order).await.expect("published");
        }

        let verdicts = Probe::from_beginning(&config, OrderChecked::topic().unwrap()).await.expect("probe");
        for order in &orders {
            let event = verdicts.expect_key(&order.id, Duration::from_secs(60)).await.expect("a verdict");
            let verdict: OrderChecked = verdicts.decode(&event).await.expect("an OrderChecked");
            assert_eq!(verdict.passed, order.quantity <= 10, "{order:?}");
        }
        started.shutdown().await.expect("a clean shutdown");
        // Whatever else was committed by now is readable: nothing for these orders is duplicated.
        let extra = verdicts.expect("for these orders", Duration::from_secs(2), |e| {
            e.key().is_some_and(|k| k.starts_with(run.as_bytes()))
        });
        assert!(extra.await.is_err(), "a second verdict for one of these orders");
        shop.shutdown().await.unwrap();
    }
}
