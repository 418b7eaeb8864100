//! Run with `cargo run -p backbone-cli -- dev up` in one terminal, then in another
//! `BACKBONE_PROFILE=development cargo run -p backbone --example handlers`.
//!
//! Handlers and layers: a handler is a plain `async fn` whose arguments are extractors; a
//! `Consumer` subscribes it in the group `<service>.<handler>` and runs every event through tower
//! layers (tracing, correlation id, dead letters, retry, timeout, panic recovery), then yours. Here
//! a layer of our own counts the events it sees, and the handler fails once, retriably, to show
//! the retry layer at work.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use backbone::consume::{Consumer, Retry, dead_letter_topic};
use backbone::handler::HandlerContext;
use backbone::{BoxedHandler, Config, HandlerError, Json, Key, Outgoing, Service, State, TopicSpec};
use tokio::sync::Notify;

#[derive(serde::Deserialize)]
struct OrderCreated {
    product: String,
    quantity: u32,
}

/// What the handler shares with `main`.
#[derive(Clone, Default)]
struct Shop {
    reserved: Arc<AtomicUsize>,
    handled: Arc<AtomicUsize>,
    failed_once: Arc<AtomicUsize>,
    all_done: Arc<Notify>,
}

const ORDERS: usize = 10;

async fn reserve(
    Key(id): Key<String>,
    Json(order): Json<OrderCreated>,
    State(shop): State<Shop>,
) -> Result<(), HandlerError> {
    // The first attempt at the first order fails retriably: the retry layer tries again.
    if shop.failed_once.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(HandlerError::retriable("the warehouse did not answer"));
    }
    shop.reserved.fetch_add(order.quantity as usize, Ordering::SeqCst);
    println!("{id}: reserved {} × {}", order.quantity, order.product);
    if shop.handled.fetch_add(1, Ordering::SeqCst) + 1 == ORDERS {
        shop.all_done.notify_one();
    }
    Ok(())
}

/// A layer of our own: counts events on their way to the handler.
#[derive(Clone)]
struct CountLayer(Arc<AtomicUsize>);

impl<I> tower::Layer<I> for CountLayer {
    type Service = Count<I>;
    fn layer(&self, inner: I) -> Count<I> {
        Count { inner, seen: self.0.clone() }
    }
}

#[derive(Clone)]
struct Count<I> {
    inner: I,
    seen: Arc<AtomicUsize>,
}

impl<I: tower::Service<HandlerContext<Shop>>> tower::Service<HandlerContext<Shop>> for Count<I> {
    type Response = I::Response;
    type Error = I::Error;
    type Future = I::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), I::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, cx: HandlerContext<Shop>) -> I::Future {
        self.seen.fetch_add(1, Ordering::SeqCst);
        self.inner.call(cx)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run = uuid_suffix();
    let service = format!("shop{run}");
    let orders = TopicSpec::public(&service, "order-created", 1).partitions(3).build()?;
    let dead_letters = dead_letter_topic(&service, &orders)?;
    let spec = Service::new(&service).owns(&orders).owns(&dead_letters).consumes(&orders).spec()?;
    let config = Config::from_env(&service)?;
    let running = spec.start(&config).await?;

    let shop = Shop::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let consumer = Consumer::new(&running.context(), &orders, BoxedHandler::new(reserve), shop.clone())?
        .retry(Retry { max_attempts: 3, initial_backoff: Duration::from_millis(50), ..Retry::default() })
        .timeout(Duration::from_secs(5))
        .layer(CountLayer(seen.clone()));
    println!("handler `reserve` in group `{}`", consumer.group());
    let done = shop.all_done.clone();
    let consuming = tokio::spawn(consumer.run(async move { done.notified().await }));

    for i in 0..ORDERS {
        let body = format!(r#"{{"product":"jumper","quantity":{}}}"#, 1 + i % 3);
        let key = format!("order-{i}");
        running
            .publisher()
            .publish(&orders, Outgoing::new("OrderCreated", key.as_bytes(), body.as_bytes()))
            .await?;
    }
    consuming.await??; // returns once every order was handled: graceful stop, offsets committed
    println!(
        "handled {ORDERS} orders, reserved {} items; our layer saw {} attempts (one retried)",
        shop.reserved.load(Ordering::SeqCst),
        seen.load(Ordering::SeqCst)
    );
    running.shutdown().await?;
    Ok(())
}

/// Each run gets fresh topics, so the example can run again and again.
fn uuid_suffix() -> String {
    format!("{:08x}", fastrand::u32(..))
}
