//! Two instances of each service on the real broker, one of each stopped (gracefully) midway
//! through 1,000 orders: every order reaches a final state, and exactly one (one CREATED, one
//! verdict from Stock, one VALIDATED or FAILED on the orders topic); each product validated as
//! many orders as it had units and no more, and Stock's counts add up.
//!
//! (Its own test binary: the services' topics have fixed names, and each binary has its broker.)

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use backbone::Json;
use backbone::testing::Probe;
use backbone_testkit::{shared_kafka, unique};
use futures::StreamExt as _;
use serde_json::{Value, json};

mod common;
use common::{call, config};

const WITHIN: Duration = Duration::from_secs(120);

/// The binary's tests run one at a time: their instances share the services' fixed topic and group
/// names on this binary's broker.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const ORDERS: usize = 1_000;
const PRODUCTS: usize = 8;
const UNITS: i64 = 70;

/// Two ready instances of Orders (both services' topics provisioned).
async fn two_orders() -> (backbone::app::Started<orders::Orders>, backbone::app::Started<orders::Orders>) {
    let config = config();
    orders::app().provision(&config).await.unwrap();
    stock::app().provision(&config).await.unwrap();
    let (orders_1, orders_2) = tokio::try_join!(orders::start(&config), orders::start(&config)).unwrap();
    for orders in [&orders_1, &orders_2] {
        if tokio::time::timeout(WITHIN, orders.ready()).await.is_err() {
            // What it still waits for, before the test fails.
            panic!("orders not ready within {WITHIN:?}: {:?}", orders.health().snapshot());
        }
    }
    (orders_1, orders_2)
}

/// `POST /v1/orders` of one unit of `p` for order `key`: named by the `Idempotency-Key` header (what
/// a retrying client sends) if `keyed`, else by the body's `id`.
async fn post(router: &Router, key: &str, keyed: bool) -> (StatusCode, Value) {
    let mut body = json!({"customerId": "c", "product": "p", "quantity": 1, "price": 100});
    let mut request = Request::post("/v1/orders").header("content-type", "application/json");
    if keyed {
        request = request.header("idempotency-key", key);
    } else {
        body["id"] = key.into();
    }
    common::send(router, request.body(Body::from(body.to_string())).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_of_each_one_stopped_midway_settle_every_order_exactly_once() {
    let _alone = ONE_AT_A_TIME.lock().await;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init()
        .ok();
    let config = config();
    orders::app().provision(&config).await.unwrap();
    stock::app().provision(&config).await.unwrap();
    let started = Instant::now();
    let (orders_1, orders_2) = tokio::try_join!(orders::start(&config), orders::start(&config)).unwrap();
    let (stock_1, stock_2) = tokio::try_join!(stock::start(&config), stock::start(&config)).unwrap();
    for ready in [orders_1.ready(), orders_2.ready()] {
        tokio::time::timeout(WITHIN, ready).await.expect("orders ready");
    }
    for ready in [stock_1.ready(), stock_2.ready()] {
        tokio::time::timeout(WITHIN, ready).await.expect("stock ready");
    }
    eprintln!("4 instances ready in {:?}", started.elapsed());
    let run = unique("two");
    let products: Vec<String> = (0..PRODUCTS).map(|p| format!("{run}-p{p}")).collect();
    let created_probe = Probe::new(&config, &orders::ORDERS.spec().unwrap()).await.unwrap();
    let verdict_probe = Probe::new(&config, &orders::VALIDATIONS.spec().unwrap()).await.unwrap();

    // Stock: each product has UNITS; the instances share the stock topics' partitions.
    for (i, product) in products.iter().enumerate() {
        let router = if i % 2 == 0 { stock_1.router() } else { stock_2.router() };
        let (status, level) =
            call(&router, Method::PUT, &format!("/v1/stock/{product}"), Some(json!({"quantity": UNITS})))
                .await;
        assert_eq!(status, StatusCode::OK, "{level}");
    }

    // 1,000 orders of 1 unit, spread over the products unevenly (some run out), alternating
    // between the Orders instances, 32 in flight; after the 500th, one instance of each service
    // stops and the rest go to the survivors.
    let wanted: Vec<(String, String)> =
        (0..ORDERS).map(|i| (format!("{run}-o{i}"), products[(i * i + i / 7) % PRODUCTS].clone())).collect();
    let placing = Instant::now();
    let place = |router: Router, (id, product): (String, String)| async move {
        let body = json!({"id": id, "customerId": "c", "product": product, "quantity": 1, "price": 100});
        let (status, order) = call(&router, Method::POST, "/v1/orders", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
    };
    let (first, second) = wanted.split_at(ORDERS / 2);
    let (r1, r2) = (orders_1.router(), orders_2.router());
    futures::stream::iter(first.iter().cloned().enumerate())
        .map(|(i, o)| place(if i % 2 == 0 { r1.clone() } else { r2.clone() }, o))
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let stopping = Instant::now();
    let (stopped_orders, stopped_stock) = tokio::join!(orders_1.shutdown(), stock_1.shutdown());
    stopped_orders.expect("orders 1 stops cleanly");
    stopped_stock.expect("stock 1 stops cleanly");
    eprintln!("one instance of each stopped in {:?}", stopping.elapsed());
    futures::stream::iter(second.iter().cloned())
        .map(|o| place(r2.clone(), o))
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    eprintln!("{ORDERS} orders placed in {:?}", placing.elapsed());

    // Every order reaches a final state (asked of the surviving instance).
    let settle = |id: String| {
        let router = r2.clone();
        async move {
            let (status, order) =
                call(&router, Method::GET, &format!("/v1/orders/{id}/validated?timeout=60000"), None).await;
            assert_eq!(status, StatusCode::OK, "{id} not settled: {order}");
            (id, order["state"].as_str().unwrap().to_owned())
        }
    };
    let states: HashMap<String, String> = futures::stream::iter(wanted.iter().map(|(id, _)| id.clone()))
        .map(settle)
        .buffer_unordered(64)
        .collect()
        .await;
    let elapsed = placing.elapsed();
    eprintln!(
        "all {ORDERS} settled {:?} after the first POST ({:.0} orders/s)",
        elapsed,
        ORDERS as f64 / elapsed.as_secs_f64()
    );

    // Per product: as many VALIDATED as it had units (or orders), the rest FAILED.
    let mut asked: BTreeMap<&str, i64> = BTreeMap::new();
    let mut validated: BTreeMap<&str, i64> = BTreeMap::new();
    for (id, product) in &wanted {
        *asked.entry(product).or_default() += 1;
        match states[id].as_str() {
            "VALIDATED" => *validated.entry(product).or_default() += 1,
            "FAILED" => {}
            other => panic!("{id} ended {other}"),
        }
    }
    assert!(asked.values().any(|&n| n > UNITS), "some product runs out: {asked:?}");
    for (product, &n) in &asked {
        let v = validated.get(product).copied().unwrap_or(0);
        assert_eq!(v, n.min(UNITS), "{product}: {n} asked, {v} validated");
        // Stock's counts (its state, caught up with what it committed) add up.
        let table = &stock_2.state().products;
        table.sync(table.partition_for(product), WITHIN).await.unwrap();
        let Json(state) = table.get(product).unwrap().unwrap();
        assert_eq!((state.warehouse, state.reserved), (UNITS, v), "{product}");
        let reservations = state.reservations.len();
        assert_eq!(reservations as i64, v, "{product}: one reservation per validated order");
        let (_, level) = call(&stock_2.router(), Method::GET, &format!("/v1/stock/{product}"), None).await;
        assert_eq!(
            (level["reserved"].as_i64(), level["available"].as_i64()),
            (Some(v), Some(UNITS - v)),
            "{product}"
        );
    }

    // Exactly once on the topics: per order one CREATED and one final state, one verdict.
    let mut written: HashMap<String, Vec<String>> = HashMap::new();
    let finals = |w: &HashMap<String, Vec<String>>| w.values().filter(|s| s.len() >= 2).count();
    while finals(&written) < ORDERS {
        let event = created_probe
            .expect("the run's orders", WITHIN, |e| e.key().is_some_and(|k| k.starts_with(run.as_bytes())))
            .await
            .expect("every order's events");
        let order: orders::Order = created_probe.decode(&event).await.unwrap();
        written.entry(order.id).or_default().push(format!("{:?}", order.state));
    }
    let mut verdicts: HashMap<Vec<u8>, usize> = HashMap::new();
    while verdicts.len() < ORDERS {
        let event = verdict_probe
            .expect("the run's verdicts", WITHIN, |e| e.key().is_some_and(|k| k.starts_with(run.as_bytes())))
            .await
            .expect("every order's verdict");
        *verdicts.entry(event.key().unwrap().to_vec()).or_default() += 1;
    }
    // Anything more would be a duplicate: read on until nothing of the run comes for 5 s.
    while let Ok(event) = created_probe
        .expect("more", Duration::from_secs(5), |e| e.key().is_some_and(|k| k.starts_with(run.as_bytes())))
        .await
    {
        let order: orders::Order = created_probe.decode(&event).await.unwrap();
        written.entry(order.id).or_default().push(format!("{:?}", order.state));
    }
    while let Ok(event) = verdict_probe
        .expect("more", Duration::from_secs(2), |e| e.key().is_some_and(|k| k.starts_with(run.as_bytes())))
        .await
    {
        *verdicts.entry(event.key().unwrap().to_vec()).or_default() += 1;
    }
    for (id, _) in &wanted {
        let seen = &written[id];
        assert_eq!(seen.len(), 2, "{id}: {seen:?}");
        assert_eq!(seen[0], "Created", "{id}: {seen:?}");
        assert_eq!(
            seen[1],
            format!(
                "{:?}",
                if states[id] == "VALIDATED" {
                    orders::OrderState::Validated
                } else {
                    orders::OrderState::Failed
                }
            )
        );
        assert_eq!(verdicts[id.as_bytes()], 1, "{id}: one verdict");
    }

    orders_2.shutdown().await.expect("orders 2 stops cleanly");
    stock_2.shutdown().await.expect("stock 2 stops cleanly");
}

/// Issue 14: a `POST` with an `Idempotency-Key`, retried on the other instance right after the
/// first answered (within the table's lag), finds the order placed and writes no second `CREATED`
/// (behind an open transaction too: the next test).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_retried_on_the_other_instance_writes_no_second_created() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (orders_1, orders_2) = two_orders().await;
    let (r1, r2) = (orders_1.router(), orders_2.router());
    let run = unique("retry");
    for i in 0..30 {
        let id = format!("{run}-{i}");
        let (status, order) = post(&r1, &id, true).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        let (status, order) = post(&r2, &id, true).await;
        assert_eq!(status, StatusCode::OK, "retry {i} on the other instance found the order placed: {order}");
        assert_eq!(order["id"], id);
    }
    orders_1.shutdown().await.expect("orders 1 stops cleanly");
    orders_2.shutdown().await.expect("orders 2 stops cleanly");
}

/// Issue 14: the same, with a transaction open on the order's partition when the first attempt is
/// written (as an exactly-once handler's often is): the first attempt sits behind it, invisible to
/// `read_committed` tables until it ends. The retry on the other instance waits for it to end
/// (here: aborted 300 ms later) and finds the order placed instead of writing a second `CREATED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_post_retried_on_the_other_instance_behind_an_open_transaction_writes_no_second_created() {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

    let _alone = ONE_AT_A_TIME.lock().await;
    let (orders_1, orders_2) = two_orders().await;
    let (r1, r2) = (orders_1.router(), orders_2.router());
    let topic = orders::ORDERS.spec().unwrap();
    let run = unique("behind");
    // The first attempt names its order in the body (no end lookup: written at once, behind the
    // open transaction); the retry sends the `Idempotency-Key` a retrying client sends.
    let transactional: FutureProducer = shared_kafka()
        .client_config()
        .set("transactional.id", unique("open-txn"))
        .create()
        .expect("a transactional producer");
    tokio::task::block_in_place(|| transactional.init_transactions(WITHIN)).expect("init");
    for i in 0..10 {
        let id = format!("{run}-{i}");
        let partition = orders_1.state().table.partition_for(&id);
        // A transaction opens on the order's partition with a record of its own (a tombstone of an
        // unrelated key: aborted, it never reaches a view).
        tokio::task::block_in_place(|| transactional.begin_transaction()).expect("begin");
        let record = FutureRecord::<str, [u8]>::to(topic.name()).key("open-txn").partition(partition);
        transactional.send(record, WITHIN).await.expect("a record in the open transaction");
        let (status, order) = post(&r1, &id, false).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        let abort = {
            let transactional = transactional.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                tokio::task::block_in_place(|| transactional.abort_transaction(WITHIN)).expect("abort");
            })
        };
        let (status, order) = post(&r2, &id, true).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "retry {i} on the other instance, behind an open transaction, found the order placed: {order}"
        );
        assert_eq!(order["id"], id);
        abort.await.unwrap();
    }
    orders_1.shutdown().await.expect("orders 1 stops cleanly");
    orders_2.shutdown().await.expect("orders 2 stops cleanly");
}
