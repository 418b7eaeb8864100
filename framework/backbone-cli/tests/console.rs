//! `backbone console` end to end, in a real headless browser (Debian's `chromium`, driven over
//! WebDriver by `chromedriver`), against the real broker and registry with the sample estate
//! running in this process (Orders, and Stock with a fault switch around its handlers):
//!
//! - the estate page lists Orders and Stock and their topics;
//! - Stock's lag rises on the groups page while Stock is stopped and falls after it restarts, live
//!   (the page is not reloaded; the live stream updates it);
//! - an order Stock's handler fails goes to dead letters with its error, is replayed from the page,
//!   and then validates;
//! - the schema page shows `orders.public.order-created` v1 and v2 and their diff.
//!
//! Every page is photographed at desktop and phone width into `target/console-screenshots/`.
//! Waits are on the page's content (polled through WebDriver, with deadlines), never sleeps.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use backbone::handler::{HandlerContext, HandlerError};
use backbone::layer::{EventService, Layers};
use backbone::{Config, Profile};
use backbone_testkit::{shared_kafka, shared_registry};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tower::ServiceExt as _;

const WITHIN: Duration = Duration::from_secs(60);
const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);
/// What Stock's handlers fail with while the switch is on.
const FAULT: &str = "the warehouse database is down";

fn config() -> Config {
    let mut config = Config::default();
    config.bootstrap_servers = shared_kafka().bootstrap_servers().to_owned();
    config.schema_registry_url = shared_registry().url().to_owned();
    config.profile = Profile::Development;
    config
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn screenshots() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
    let dir = dir.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts Stock with every handler behind `broken`: while it is on, each event fails permanently.
async fn start_stock(broken: &Arc<AtomicBool>) -> backbone::app::Started<stock::Stock> {
    let switch = broken.clone();
    let layers = Layers::new().layer(tower::layer::layer_fn(move |inner: EventService<stock::Stock>| {
        let switch = switch.clone();
        tower::util::BoxCloneSyncService::new(tower::service_fn(move |cx: HandlerContext<stock::Stock>| {
            let (inner, broken) = (inner.clone(), switch.load(Ordering::SeqCst));
            async move {
                if broken {
                    return Err(HandlerError::permanent(FAULT));
                }
                inner.oneshot(cx).await
            }
        }))
    }));
    let (app, state) = stock::app_and_state();
    app.layers(&layers).start_with(&config(), state).await.expect("Stock starts")
}

async fn call(router: &Router, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let response = router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn place(orders: &Router, id: &str, product: &str) {
    let order = json!({"id": id, "customerId": "console", "product": product, "quantity": 1, "price": 100});
    let (status, body) = call(orders, Method::POST, "/v1/orders", Some(order)).await;
    assert_eq!(status, 201, "{body}");
}

async fn final_state(orders: &Router, id: &str) -> String {
    let (status, body) =
        call(orders, Method::GET, &format!("/v1/orders/{id}/validated?timeout=30000"), None).await;
    assert_eq!(status, 200, "{body}");
    body["state"].as_str().unwrap_or_default().to_owned()
}

/// `chromedriver` on a free loopback port, ready.
async fn chromedriver() -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = ["chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|d| std::process::Command::new(d).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("chromedriver (Debian: apt-get install chromium chromium-driver; .ci/run installs them)");
    let child = tokio::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver runs");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WITHIN;
    loop {
        if http.get(format!("{url}/status")).send().await.is_ok_and(|r| r.status().is_success()) {
            return (child, url);
        }
        assert!(Instant::now() < deadline, "chromedriver did not answer within {WITHIN:?}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(100)).await; // a process start-up: nothing to await
    }
}

async fn browser(driver: &str) -> Client {
    let chromium =
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists());
    let mut options = json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]});
    if let Some(binary) = chromium {
        options["binary"] = json!(binary);
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::native().capabilities(caps).connect(driver).await.expect("a WebDriver session")
}

/// Polls `check` on the page until it gives `Some`, for at most `within`.
async fn until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await; // WebDriver has no change events
    }
}

async fn text(browser: &Client, css: &str) -> Option<String> {
    browser.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// Photographs the current page at desktop and phone width.
async fn photograph(browser: &Client, name: &str) {
    for (suffix, (w, h)) in [("desktop", DESKTOP), ("phone", PHONE)] {
        browser.set_window_size(w, h).await.unwrap();
        let png = browser.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(screenshots().join(format!("{name}-{suffix}.png")), png).unwrap();
    }
    browser.set_window_size(DESKTOP.0, DESKTOP.1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_estate_follows_lag_replays_a_dead_letter_and_diffs_schemas() {
    let config = config();
    // The contracts of `orders.public.order-created` v1 and v2, registered as Orders' CI does.
    let registry = backbone::schema::Registry::new(&config.schema_registry_url).unwrap();
    for v in [1, 2] {
        let schema =
            std::fs::read_to_string(workspace().join(format!("schemas/orders/order-created-v{v}.avsc")))
                .unwrap();
        registry
            .register(&format!("orders.public.order-created-v{v}-value"), &schema)
            .await
            .expect("registered");
    }

    // The estate: Orders, and Stock with its fault switch.
    // (Together: each reads the other's topics.)
    let broken = Arc::new(AtomicBool::new(false));
    let (orders_app, mut stock_app) = tokio::join!(orders::start(&config), start_stock(&broken));
    let orders_app = orders_app.expect("Orders starts");
    tokio::time::timeout(WITHIN, orders_app.ready()).await.expect("Orders ready");
    tokio::time::timeout(WITHIN, stock_app.ready()).await.expect("Stock ready");
    let orders = orders_app.router();
    let (status, _) =
        call(&stock_app.router(), Method::PUT, "/v1/stock/lamp", Some(json!({"quantity": 100}))).await;
    assert_eq!(status, 200);
    place(&orders, "console-first", "lamp").await;
    assert_eq!(final_state(&orders, "console-first").await, "VALIDATED");

    // The console, on the estate's specs.
    let specs = tempfile::tempdir().unwrap();
    let mut args = vec!["console".to_owned()];
    for (name, spec) in [("orders", orders_app.spec()), ("stock", stock_app.spec())] {
        let path = specs.path().join(format!("{name}.json"));
        std::fs::write(&path, spec.to_json()).unwrap();
        args.extend(["--spec".to_owned(), path.display().to_string()]);
    }
    // Orders' metrics endpoint, served on a socket for the console to read.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let served = orders.clone();
    tokio::spawn(async move { axum::serve(listener, served).await });
    args.extend(["--metrics".to_owned(), format!("orders={metrics_url}")]);
    args.extend(["--listen", "127.0.0.1:0", "--allow-replay", "--refresh", "1"].map(String::from));
    let mut console = tokio::process::Command::new(env!("CARGO_BIN_EXE_backbone"))
        .args(&args)
        .env("KAFKA_BOOTSTRAP_SERVERS", &config.bootstrap_servers)
        .env("SCHEMA_REGISTRY_URL", &config.schema_registry_url)
        .env("BACKBONE_PROFILE", "development")
        .env_remove("KAFKA_SECURITY_PROTOCOL")
        .env_remove("BACKBONE_CONFIG_FILE")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("backbone console runs");
    let mut lines = BufReader::new(console.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WITHIN, lines.next_line())
        .await
        .expect("the console prints its address")
        .unwrap()
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("an address")
        .trim_end_matches('/')
        .to_owned();
    assert!(line.contains("replay enabled"), "{line}");

    let (_driver, driver_url) = chromedriver().await;
    let b = browser(&driver_url).await;
    b.set_window_size(DESKTOP.0, DESKTOP.1).await.unwrap();

    // 1. The estate page: Orders and Stock with their topics (once the collector has read the cluster).
    b.goto(&format!("{base}/")).await.unwrap();
    let stock_row = until("the estate page's Stock row with a live group", WITHIN, || async {
        b.refresh().await.ok()?;
        let row = text(&b, r#"tr[data-service="stock"]"#).await?;
        row.contains("Stable").then_some(row)
    })
    .await;
    let orders_row = until("Orders' own event counters, from its /metrics", WITHIN, || async {
        b.refresh().await.ok()?;
        let row = text(&b, r#"tr[data-service="orders"]"#).await?;
        row.contains("1 of 1 instance(s) answered").then_some(row)
    })
    .await;
    let handled = b
        .find(Locator::Css(r#"tr[data-service="orders"] [data-metric="backbone_events_handled_total"]"#))
        .await;
    let handled = handled.expect("Orders' handled events").text().await.unwrap();
    assert!(handled.trim_start_matches("handled ").parse::<u64>().is_ok_and(|n| n >= 1), "{handled}");
    assert!(orders_row.contains("orders.public.order-v1"), "{orders_row}");
    assert!(
        stock_row.contains("stock.public.order-validation-v1")
            && stock_row.contains("orders.public.order-v1"),
        "{stock_row}"
    );
    assert!(b.find(Locator::Css("figure.graph svg")).await.is_ok(), "the topology is drawn");
    photograph(&b, "estate").await;

    b.goto(&format!("{base}/topics")).await.unwrap();
    let declared = until("orders.public.order-v1 checked against its declaration", WITHIN, || async {
        b.refresh().await.ok()?;
        let row = text(&b, r#"tr[data-topic="orders.public.order-v1"]"#).await?;
        row.contains("as declared").then_some(row)
    })
    .await;
    assert!(declared.contains("public") && declared.contains("orders"), "{declared}");
    assert!(declared.contains(" B") || declared.contains("KiB"), "its size on disk: {declared}");
    photograph(&b, "topics").await;

    // 2. Lag, live: Stock stops, orders wait for it, Stock starts again.
    b.goto(&format!("{base}/groups")).await.unwrap();
    let lag_cell = "[data-live=\"lag\u{1f}stock.route_order\"]";
    until("the groups page lists stock.route_order", WITHIN, || async { text(&b, lag_cell).await }).await;
    stock_app.shutdown().await.expect("Stock stops");
    for i in 0..5 {
        place(&orders, &format!("console-waiting-{i}"), "lamp").await;
    }
    let risen: i64 = until("stock.route_order's lag to rise while Stock is stopped", WITHIN, || async {
        text(&b, lag_cell).await?.parse::<i64>().ok().filter(|lag| *lag >= 5)
    })
    .await;
    let updates =
        b.find(Locator::Css("body")).await.unwrap().attr("data-updates").await.unwrap().unwrap_or_default();
    photograph(&b, "groups").await;
    stock_app = start_stock(&broken).await;
    tokio::time::timeout(WITHIN, stock_app.ready()).await.expect("Stock ready again");
    let fell = tokio::time::timeout(WITHIN, async {
        while text(&b, lag_cell).await.and_then(|t| t.parse::<i64>().ok()) != Some(0) {
            tokio::time::sleep(Duration::from_millis(200)).await; // WebDriver has no change events
        }
    })
    .await;
    if fell.is_err() {
        let section = text(&b, r#"section[data-group="stock.route_order"]"#).await.unwrap_or_default();
        panic!("stock.route_order's lag did not fall within {WITHIN:?} of Stock's restart:\n{section}");
    }
    let later =
        b.find(Locator::Css("body")).await.unwrap().attr("data-updates").await.unwrap().unwrap_or_default();
    assert!(
        later.parse::<u64>().unwrap_or(0) > updates.parse::<u64>().unwrap_or(0),
        "the page was updated live ({updates} → {later})"
    );
    eprintln!("lag rose to {risen} while Stock was stopped, and fell to 0 after it restarted");
    for i in 0..5 {
        assert_eq!(final_state(&orders, &format!("console-waiting-{i}")).await, "VALIDATED");
    }

    // 3. A dead letter: Stock's handler fails an order; it is replayed from the page; it validates.
    broken.store(true, Ordering::SeqCst);
    place(&orders, "console-poison", "lamp").await;
    let dlq = "stock.private.dlq.orders.public.order-v1";
    b.goto(&format!("{base}/dead-letters/{dlq}")).await.unwrap();
    let row = until("the failed order in Stock's dead letters", WITHIN, || async {
        b.refresh().await.ok()?;
        let row = text(&b, "tbody tr[data-offset]").await?;
        row.contains(FAULT).then_some(row)
    })
    .await;
    assert!(row.contains("route_order") && row.contains("orders.public.order-v1"), "{row}");
    photograph(&b, "dead-letters").await;
    broken.store(false, Ordering::SeqCst);
    b.find(Locator::Css("tbody tr[data-offset] td a")).await.unwrap().click().await.unwrap();
    let payload = until("the dead letter's decoded payload", WITHIN, || async {
        text(&b, "pre[aria-label=payload]").await
    })
    .await;
    assert!(payload.contains("console-poison"), "decoded by its schema: {payload}");
    photograph(&b, "dead-letter").await;
    b.find(Locator::LinkText("Replay this one…")).await.unwrap().click().await.unwrap();
    let confirm =
        until("the replay's confirmation", WITHIN, || async { text(&b, "#confirm-replay").await }).await;
    assert!(confirm.contains("Replay 1"), "{confirm}");
    photograph(&b, "replay-confirm").await;
    b.find(Locator::Css("#confirm-replay")).await.unwrap().click().await.unwrap();
    let result = until("the replay's result", WITHIN, || async { text(&b, "#replay-result").await }).await;
    assert!(
        result.contains("Replayed 1") && result.contains("stock.private.retry.orders.public.order-v1"),
        "{result}"
    );
    assert_eq!(final_state(&orders, "console-poison").await, "VALIDATED", "the replayed order validates");

    // 4. Schemas: order-created v1 and v2, and their diff.
    b.goto(&format!("{base}/schemas")).await.unwrap();
    let family =
        text(&b, r#"tr[data-family="orders.public.order-created"]"#).await.expect("order-created listed");
    assert!(family.contains("v1") && family.contains("v2"), "{family}");
    photograph(&b, "schemas").await;
    b.find(Locator::Css(r#"tr[data-family="orders.public.order-created"] a"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let diff = until("the diff of v1 and v2", WITHIN, || async { text(&b, "pre.diff").await }).await;
    assert!(diff.lines().any(|l| l.starts_with('+') && l.contains("currency")), "v2 adds a currency: {diff}");
    assert!(diff.lines().any(|l| l.trim() == "…"), "unchanged lines far from a change are left out: {diff}");
    photograph(&b, "schema-diff").await;

    b.close().await.unwrap();
    stock_app.shutdown().await.unwrap();
    orders_app.shutdown().await.unwrap();
}
