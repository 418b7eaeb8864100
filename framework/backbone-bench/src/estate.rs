//! `estate`: the sample estate (Orders and Stock, one instance each, in this process) on a real
//! broker, driven over HTTP: first the latency from `POST /v1/orders` to `VALIDATED` at a fixed
//! offered load (100 orders/s for 15 s, open loop); then orders per second from `POST` to
//! `VALIDATED` (64 clients, each placing an order and long-polling `/validated`), and the latency
//! of `GET /v1/orders/{id}` under that load (8 clients reading placed orders in a loop).
//! Development profile on one broker; `BENCH_ESTATE_PROFILE=production` runs the production profile
//! (replication 3, `min.insync.replicas` 2) on three brokers the test kit starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backbone::{Config, Profile};
use backbone_devregistry::DevRegistry;
use backbone_testkit::unique;
use futures::StreamExt as _;
use serde_json::json;

/// Orders measured (`BENCH_ESTATE_ORDERS` to change).
const ORDERS: usize = 3_000;
const WARM_UP: usize = 200;
const CLIENTS: usize = 64;
const READERS: usize = 8;
const PRODUCTS: usize = 16;
/// The fixed offered load (`BENCH_ESTATE_RATE` to change), and for how long.
const OFFERED_RATE: u32 = 100;
const OFFERED_SECONDS: u32 = 15;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// Places `count` orders, `CLIENTS` at a time; each client long-polls its order to a final state.
/// Returns each order's id and its POST-to-final time; the wall time.
async fn place(
    http: &reqwest::Client,
    orders_url: &str,
    run: &str,
    prefix: &str,
    count: usize,
    placed: &std::sync::Mutex<Vec<String>>,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let one = |i: usize| async move {
        let id = format!("{prefix}-{i}");
        let product = format!("{run}-p{}", i % PRODUCTS);
        let body = json!({"id": id, "customerId": "bench", "product": product, "quantity": 1, "price": 100});
        let began = Instant::now();
        let response = http.post(format!("{orders_url}/v1/orders")).json(&body).send().await.expect("POST");
        assert_eq!(response.status(), 201, "POST {id}");
        let response = http
            .get(format!("{orders_url}/v1/orders/{id}/validated?timeout=60000"))
            .send()
            .await
            .expect("GET validated");
        assert_eq!(response.status(), 200, "{id} not settled");
        let order: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(order["state"], "VALIDATED", "{order}");
        let took = began.elapsed();
        // Settled, so in the table: readers may GET it.
        placed.lock().unwrap().push(id);
        took
    };
    let mut times: Vec<Duration> =
        futures::stream::iter(0..count).map(one).buffer_unordered(CLIENTS).collect().await;
    times.sort_unstable();
    (times, started.elapsed())
}

/// Offers `rate` orders per second for `seconds`, open loop (an order starts on time whether or not
/// the ones before have settled), each long-polled to `VALIDATED`. Returns the POST-to-final times.
async fn offer(
    http: &reqwest::Client,
    orders_url: &str,
    run: &str,
    prefix: &str,
    rate: u32,
    seconds: u32,
) -> Vec<Duration> {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    for i in 0..(rate * seconds) as usize {
        tick.tick().await;
        let (http, url) = (http.clone(), orders_url.to_owned());
        let id = format!("{prefix}-{i}");
        let body = json!({"id": id, "customerId": "bench", "product": format!("{run}-p{}", i % PRODUCTS), "quantity": 1, "price": 100});
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let response = http.post(format!("{url}/v1/orders")).json(&body).send().await.expect("POST");
            assert_eq!(response.status(), 201, "POST {id}");
            let response = http
                .get(format!("{url}/v1/orders/{id}/validated?timeout=60000"))
                .send()
                .await
                .expect("GET validated");
            assert_eq!(response.status(), 200, "{id} not settled");
            began.elapsed()
        }));
    }
    let mut times = Vec::with_capacity(tasks.len());
    for task in tasks {
        times.push(task.await.expect("order"));
    }
    times.sort_unstable();
    times
}

pub(crate) async fn estate() {
    // `BENCH_ESTATE_PROFILE=production`: three brokers, replication 3, min.insync.replicas 2.
    let production = std::env::var("BENCH_ESTATE_PROFILE").is_ok_and(|p| p == "production");
    let cluster = match production {
        true => backbone_testkit::KafkaCluster::start_three().expect("three brokers"),
        false => crate::common::cluster(),
    };
    let registry = DevRegistry::start().expect("development registry");
    let mut config = Config::default();
    config.bootstrap_servers = cluster.bootstrap_servers().to_owned();
    config.schema_registry_url = registry.url().to_owned();
    config.profile = if production { Profile::Production } else { Profile::Development };
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let started = Instant::now();
    let estate = estate::Estate::start(&config, &config, any, any).await.expect("the estate starts");
    println!(
        "estate ready in {:.1} s ({:?} profile; brokers: {})",
        started.elapsed().as_secs_f64(),
        config.profile,
        cluster.bootstrap_servers()
    );
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS + READERS).build().unwrap();
    let run = unique("bench");
    for p in 0..PRODUCTS {
        let response = http
            .put(format!("{}/v1/stock/{run}-p{p}", estate.stock_url))
            .json(&json!({"quantity": 1_000_000_000}))
            .send()
            .await
            .expect("PUT");
        assert_eq!(response.status(), 200);
    }
    let placed = std::sync::Mutex::new(Vec::new());
    let (_, warm) = place(&http, &estate.orders_url, &run, &format!("{run}-w"), WARM_UP, &placed).await;
    println!("warm-up: {WARM_UP} orders in {:.1} s", warm.as_secs_f64());

    // A fixed offered load first: what a user waits for at a moderate rate.
    let rate: u32 =
        std::env::var("BENCH_ESTATE_RATE").ok().and_then(|n| n.parse().ok()).unwrap_or(OFFERED_RATE);
    let offered = offer(&http, &estate.orders_url, &run, &format!("{run}-o"), rate, OFFERED_SECONDS).await;
    let (offered_p50, offered_p99) = (percentile(&offered, 0.5), percentile(&offered, 0.99));
    println!(
        "offered {rate} orders/s for {OFFERED_SECONDS} s: POST to VALIDATED p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(offered_p50),
        ms(offered_p99),
        ms(*offered.last().unwrap())
    );

    // Readers: GET placed orders in a loop while the orders flow.
    let done = Arc::new(AtomicBool::new(false));
    let ids = Arc::new(placed);
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (http, done, ids, url) = (http.clone(), done.clone(), ids.clone(), estate.orders_url.clone());
            tokio::spawn(async move {
                let mut times = Vec::new();
                let mut n = r;
                while !done.load(Ordering::Relaxed) {
                    let id = {
                        let ids = ids.lock().unwrap();
                        ids[n % ids.len()].clone()
                    };
                    n = n.wrapping_mul(31).wrapping_add(17);
                    let began = Instant::now();
                    let response = http.get(format!("{url}/v1/orders/{id}")).send().await.expect("GET");
                    assert_eq!(response.status(), 200, "GET {id}");
                    response.bytes().await.expect("body");
                    times.push(began.elapsed());
                }
                times
            })
        })
        .collect();
    let measured = format!("{run}-m");
    let orders = std::env::var("BENCH_ESTATE_ORDERS").ok().and_then(|n| n.parse().ok()).unwrap_or(ORDERS);
    let (times, wall) = place(&http, &estate.orders_url, &run, &measured, orders, &ids).await;
    done.store(true, Ordering::Relaxed);
    let mut gets: Vec<Duration> = Vec::new();
    for reader in readers {
        gets.extend(reader.await.expect("reader"));
    }
    gets.sort_unstable();
    let per_s = orders as f64 / wall.as_secs_f64();
    println!();
    println!("{:<36} {:>10} {:>10} {:>10}", "", "p50 ms", "p99 ms", "max ms");
    println!(
        "{:<36} {:>10.1} {:>10.1} {:>10.1}",
        "POST to VALIDATED",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap())
    );
    println!(
        "{:<36} {:>10.2} {:>10.2} {:>10.2}",
        format!("GET /v1/orders/{{id}} ({} calls)", gets.len()),
        ms(percentile(&gets, 0.5)),
        ms(percentile(&gets, 0.99)),
        ms(gets.last().copied().unwrap_or_default())
    );
    println!(
        "{orders} orders, {CLIENTS} clients: {per_s:.0} orders/s POST to VALIDATED ({:.1} s)",
        wall.as_secs_f64()
    );
    estate.shutdown().await.expect("a clean shutdown");
    println!(
        "RESULT estate orders_per_s={per_s:.0} get_p99_ms={:.2} offered_per_s={rate} offered_p50_ms={:.1} offered_p99_ms={:.1}",
        ms(percentile(&gets, 0.99)),
        ms(offered_p50),
        ms(offered_p99)
    );
}
