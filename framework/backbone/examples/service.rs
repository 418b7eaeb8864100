//! Run with `cargo run -p backbone-cli -- dev up` in one terminal, then in another
//! `BACKBONE_PROFILE=development cargo run -p backbone --example service`.
//!
//! Quick start: a whole service from one declaration. `#[derive(Event)]` binds each event type to
//! its topic, key field and Avro contract; `#[backbone::handler]` declares a handler and what it
//! emits; `backbone::service!` says what the service is, and checks ownership at compile time
//! (a handler emitting another service's event does not compile). `run` provisions the topics,
//! registers the schemas, starts the consumers, serves HTTP (`/healthz`, `/readyz`, your routes)
//! and shuts down gracefully; here the shutdown comes once every order has been checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use backbone::app::App;
use backbone::{Config, Event, HandlerError, Publisher, State};
use tokio::sync::Notify;

/// The shop's contract: an order was placed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("shop", "order-placed", 1), key = id, schema = "examples/schemas/order-placed-v1.avsc")]
struct OrderPlaced {
    id: String,
    product: String,
    quantity: i32,
}

/// The warehouse's contract: its verdict on an order.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, backbone::Event)]
#[serde(rename_all = "camelCase")]
#[event(topic = ("warehouse", "order-checked", 1), key = order_id, schema = "examples/schemas/order-checked-v1.avsc")]
struct OrderChecked {
    order_id: String,
    passed: bool,
}

#[derive(Clone, Default)]
struct Warehouse {
    checked: Arc<AtomicUsize>,
    done: Arc<Notify>,
}

const ORDERS: usize = 5;

/// Passes orders of at most 10 items.
#[backbone::handler(emits(OrderChecked))]
async fn check(
    Event(order): Event<OrderPlaced>,
    State(warehouse): State<Warehouse>,
    out: Publisher,
) -> Result<(), HandlerError> {
    let passed = order.quantity <= 10;
    out.emit(&OrderChecked { order_id: order.id.clone(), passed }).await?; // topic and key from the type
    println!(
        "{}: {} × {} -> {}",
        order.id,
        order.quantity,
        order.product,
        if passed { "PASS" } else { "FAIL" }
    );
    if warehouse.checked.fetch_add(1, Ordering::SeqCst) + 1 == ORDERS {
        warehouse.done.notify_one();
    }
    Ok(())
}

fn routes() -> axum::Router<Warehouse> {
    use axum::extract::State;
    axum::Router::new().route(
        "/v1/checked",
        axum::routing::get(|State(w): State<Warehouse>| async move {
            w.checked.load(Ordering::SeqCst).to_string()
        }),
    )
}

backbone::service! {
    /// The warehouse: checks new orders.
    warehouse: Warehouse {
        handles check;   // consumes OrderPlaced's topic in group `warehouse.check`; emits OrderChecked
        routes routes();
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::from_env("warehouse")?;
    config.http_addr = ([127, 0, 0, 1], 0).into(); // any free port

    // The shop, declared with the builder the macros write for you.
    let shop = App::<()>::new("shop").publishes::<OrderPlaced>().start(&config, ()).await?;

    let state = Warehouse::default();
    let done = state.done.clone();
    let running = tokio::spawn({
        let config = config.clone();
        async move { warehouse().run(&config, state, async move { done.notified().await }).await }
    });
    let run = format!("{:06x}", fastrand::u32(..0xff_ffff));
    for i in 0..ORDERS as i32 {
        let order = OrderPlaced { id: format!("order-{run}-{i}"), product: "jumper".into(), quantity: i * 4 };
        shop.publisher().emit(&order).await?;
    }
    running.await??; // returns after the graceful shutdown
    shop.shutdown().await?;
    println!("checked {ORDERS} orders; the warehouse shut down cleanly");
    Ok(())
}
