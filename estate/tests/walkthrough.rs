//! `cargo run -p estate`, as CI runs it: the binary starts with nothing but Rust (the mock cluster
//! and the development registry), prints `ORDERS_URL=` and `STOCK_URL=` once ready, is walked
//! through with HTTP calls as its printed walkthrough does, and stops cleanly on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const WITHIN: Duration = Duration::from_secs(120);

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("a response");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_estate_binary_starts_walks_through_and_stops_cleanly() {
    let started = std::time::Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_estate"))
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("SCHEMA_REGISTRY_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the estate binary runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut orders, mut stock) = (None, None);
    while orders.is_none() || stock.is_none() {
        let line = tokio::time::timeout(WITHIN, lines.next_line())
            .await
            .expect("URLs printed within 120 s")
            .unwrap()
            .expect("URLs printed before stdout closed");
        if let Some(url) = line.strip_prefix("ORDERS_URL=") {
            orders = Some(url.to_owned());
        } else if let Some(url) = line.strip_prefix("STOCK_URL=") {
            stock = Some(url.to_owned());
        }
    }
    let (orders, stock) = (orders.unwrap(), stock.unwrap());
    eprintln!("estate ready in {:?}", started.elapsed());
    let mut walkthrough = String::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_millis(200), lines.next_line()).await {
        walkthrough.push_str(&line);
        walkthrough.push('\n');
    }
    assert!(walkthrough.contains("curl"), "a walkthrough follows the URLs: {walkthrough}");

    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{orders}/readyz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{stock}/readyz")).send().await.unwrap().status(), 200);

    // Stock 5 widgets; order 3: VALIDATED, 3 reserved.
    let (status, level) =
        send(http.put(format!("{stock}/v1/stock/widget")).json(&json!({"quantity": 5}))).await;
    assert_eq!((status, level["available"].as_i64()), (200, Some(5)));
    let first = json!({"customerId": "alice", "product": "widget", "quantity": 3, "price": 2997});
    let (status, order) =
        send(http.post(format!("{orders}/v1/orders")).header("Idempotency-Key", "order-1").json(&first))
            .await;
    assert_eq!((status, order["state"].as_str()), (201, Some("CREATED")), "{order}");
    let (status, order) = send(http.get(format!("{orders}/v1/orders/order-1/validated?timeout=30000"))).await;
    assert_eq!((status, order["state"].as_str()), (200, Some("VALIDATED")), "{order}");
    let (_, level) = send(http.get(format!("{stock}/v1/stock/widget"))).await;
    assert_eq!((level["reserved"].as_i64(), level["available"].as_i64()), (Some(3), Some(2)), "{level}");

    // Out of stock: FAILED with a reason.
    let second =
        json!({"id": "order-2", "customerId": "bob", "product": "widget", "quantity": 3, "price": 2997});
    let (status, _) = send(http.post(format!("{orders}/v1/orders")).json(&second)).await;
    assert_eq!(status, 201);
    let (_, order) = send(http.get(format!("{orders}/v1/orders/order-2/validated?timeout=30000"))).await;
    assert_eq!(
        (order["state"].as_str(), order["reason"].as_str()),
        (Some("FAILED"), Some("only 2 of 3 available"))
    );

    // Cancel: released (Stock sees the cancellation after the answer; polled with a deadline, as
    // nothing outside the process can be awaited).
    let (status, order) = send(http.post(format!("{orders}/v1/orders/order-1/cancel"))).await;
    assert_eq!((status, order["state"].as_str()), (200, Some("CANCELLED")));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, level) = send(http.get(format!("{stock}/v1/stock/widget"))).await;
        if level["reserved"].as_i64() == Some(0) {
            assert_eq!(level["available"].as_i64(), Some(5));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never released: {level}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A bad order: 400 naming the field.
    let (status, problem) = send(
        http.post(format!("{orders}/v1/orders"))
            .json(&json!({"customerId": "x", "product": "widget", "quantity": 0, "price": 1})),
    )
    .await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("quantity")));

    // SIGTERM: both services stop gracefully and the process exits 0.
    let pid = child.id().expect("running").to_string();
    let stopping = std::time::Instant::now();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WITHIN, child.wait()).await.expect("exits within 120 s").unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).await.unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
    eprintln!("stopped in {:?}", stopping.elapsed());
}
