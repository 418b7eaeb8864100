//! Stock, the sample estate's stock service: keeps warehouse stock and reservations per product,
//! reserves stock for each new order exactly once and answers PASS or FAIL, releases the
//! reservation when the order fails or is cancelled.
//!
//! Everything that changes a product goes through one private topic keyed by product
//! (`stock.private.commands`): a new order (`Reserve`), a failed or cancelled one (`Release`), and
//! `PUT /v1/stock/{product}` (`SetStock`). One exactly-once handler ([`apply`]) applies them in
//! order, per product: the product's new state (`stock.private.products`, compacted), its public
//! level (`stock.public.stock-level-v1`, compacted) and the order's validation
//! (`stock.public.order-validation-v1`) commit in one Kafka transaction with the consumed offset.
//! A product remembers its open reservations and its recently settled orders (bounded: see
//! [`SETTLED_WINDOW`]), so a repeated `CREATED` reserves nothing twice.
//!
//! HTTP: `PUT /v1/stock/{product}` `{"quantity": n}`, `GET /v1/stock/{product}`
//! `{"product", "available", "reserved", "warehouse"}`, `/openapi.json`, `/healthz`, `/readyz`.

pub mod http;
mod product;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backbone::app::{App, AppError, Started, Tables};
use backbone::consume::ConsumerHooks;
use backbone::table::{Table, partition_for};
use backbone::{Config, Event, HandlerError, Json, Outgoing, Publisher, State, TopicDecl, TopicSpec};
use serde::{Deserialize, Serialize};

pub use http::{ApiDoc, routes};
pub use product::{Command, MAX_OPEN, MAX_QUANTITY, ProductState, SETTLED_WINDOW};

/// Orders' topic: each order's latest state (read here).
pub const ORDERS: TopicDecl = TopicDecl::public("orders", "order", 1).partitions(6).compacted();
/// Stock's answers to new orders.
pub const VALIDATIONS: TopicDecl = TopicDecl::public("stock", "order-validation", 1).partitions(6);
/// Products' stock levels, public (compacted).
pub const LEVELS: TopicDecl = TopicDecl::public("stock", "stock-level", 1).partitions(6).compacted();
/// What changes a product, keyed by product: applied in order by [`apply`].
pub const COMMANDS: TopicDecl = TopicDecl::private("stock", "commands").partitions(COMMAND_PARTITIONS);
/// Each product's state: stock, reservations, the orders seen (compacted; the local state).
pub const PRODUCTS: TopicDecl =
    TopicDecl::private("stock", "products").partitions(COMMAND_PARTITIONS).compacted();
const COMMAND_PARTITIONS: i32 = 6;

/// Where an order stands (Orders' contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderState {
    /// Placed.
    Created,
    /// Reserved.
    Validated,
    /// Not reserved.
    Failed,
    /// Cancelled by the customer.
    Cancelled,
}

/// An order (Orders' contract `schemas/orders/order-v1.avsc`, read here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, backbone::Event)]
#[serde(rename_all = "camelCase")]
#[event(topic = ORDERS, key = id, schema = "schemas/orders/order-v1.avsc")]
pub struct Order {
    /// The order id.
    pub id: String,
    /// Who ordered.
    pub customer_id: String,
    /// The product.
    pub product: String,
    /// How many.
    pub quantity: i32,
    /// Total price in cents.
    pub price: i64,
    /// Where it stands.
    pub state: OrderState,
    /// Why it failed.
    pub reason: Option<String>,
}

/// Stock's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValidationResult {
    /// Reserved.
    Pass,
    /// Not reserved.
    Fail,
}

/// Stock's answer to a new order (`schemas/stock/order-validation-v1.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, backbone::Event)]
#[serde(rename_all = "camelCase")]
#[event(topic = VALIDATIONS, key = order_id, schema = "schemas/stock/order-validation-v1.avsc")]
pub struct OrderValidation {
    /// The order.
    pub order_id: String,
    /// The product asked for.
    pub product: String,
    /// The quantity asked for.
    pub quantity: i32,
    /// The verdict.
    pub result: ValidationResult,
    /// Why it failed.
    pub reason: Option<String>,
}

/// A product's stock level (`schemas/stock/stock-level-v1.avsc`), also the HTTP shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, backbone::Event, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[event(topic = LEVELS, key = product, schema = "schemas/stock/stock-level-v1.avsc")]
pub struct StockLevel {
    /// The product.
    pub product: String,
    /// Units in the warehouse.
    pub warehouse: i64,
    /// Units reserved for orders.
    pub reserved: i64,
    /// Units that can still be reserved.
    pub available: i64,
}

/// The service's state.
#[derive(Clone, Debug)]
pub struct Stock {
    /// Each product's state, by product.
    pub products: Table<Json<ProductState>>,
    /// The service's publisher (for `PUT`).
    pub publisher: Publisher,
    cache: Arc<ProductCache>,
}

/// How long [`apply`] waits for a product's partition of the table to catch up.
const RESTORE_WAIT: Duration = Duration::from_secs(60);

impl Stock {
    /// The product's state as [`apply`] last left it: written in this transaction, or committed
    /// before, or (first touch since this instance got the partition) from the table.
    async fn product(&self, product: &str) -> Result<ProductState, HandlerError> {
        if let Some(state) = self.cache.get(product) {
            return Ok(state);
        }
        // First touch since this instance got the partition: the view must hold every state the
        // previous owner committed before it is trusted.
        let partition = self.products.partition_for(product);
        self.products.sync(partition, RESTORE_WAIT).await.map_err(HandlerError::retriable)?;
        let stored = self.products.get(product).map_err(HandlerError::retriable)?;
        Ok(stored.map_or_else(|| ProductState::new(product), |Json(state)| state))
    }
}

/// Publishes `command` on [`COMMANDS`], keyed by its product.
pub async fn send(out: &Publisher, command: &Command) -> Result<backbone::Delivery, backbone::PublishError> {
    let payload = serde_json::to_vec(command).expect("a command serializes");
    out.publish(commands(), Outgoing::new(command.kind(), command.product().as_bytes(), &payload)).await
}

fn commands() -> &'static TopicSpec {
    static SPEC: std::sync::OnceLock<TopicSpec> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| COMMANDS.spec().expect("a valid topic"))
}

fn products() -> &'static TopicSpec {
    static SPEC: std::sync::OnceLock<TopicSpec> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| PRODUCTS.spec().expect("a valid topic"))
}

/// An order's state becomes a command for its product: a new order is to be reserved, a failed or
/// cancelled one released. At least once: [`apply`] ignores what it has seen.
#[backbone::handler]
pub async fn route_order(Event(order): Event<Order>, out: Publisher) -> Result<(), HandlerError> {
    let command = match order.state {
        OrderState::Created => Command::Reserve {
            product: order.product,
            order_id: order.id,
            quantity: i64::from(order.quantity),
        },
        OrderState::Failed | OrderState::Cancelled => {
            Command::Release { product: order.product, order_id: order.id }
        }
        OrderState::Validated => return Ok(()),
    };
    send(&out, &command).await?;
    Ok(())
}

/// Applies one command to its product, exactly once: the product's state, its level and the
/// order's validation commit with the consumed offset, or not at all.
#[backbone::handler(exactly_once, topic = COMMANDS, emits(OrderValidation, StockLevel))]
pub async fn apply(
    Json(command): Json<Command>,
    State(stock): State<Stock>,
    out: Publisher,
) -> Result<(), HandlerError> {
    let product = command.product().to_owned();
    let current = stock.product(&product).await?;
    let (next, verdict) = current.apply(&command);
    if next == current {
        return Ok(());
    }
    let payload = serde_json::to_vec(&next).map_err(HandlerError::permanent)?;
    let level =
        ((next.warehouse, next.reserved) != (current.warehouse, current.reserved)).then(|| next.level());
    // Three topics, one transaction: written together, not one after the other.
    let state =
        async { out.publish(products(), Outgoing::new("ProductState", product.as_bytes(), &payload)).await };
    let level = async {
        match &level {
            Some(level) => out.emit(level).await.map(Some),
            None => Ok(None),
        }
    };
    let answer = async {
        match &verdict {
            Some(verdict) => out.emit(verdict).await.map(Some),
            None => Ok(None),
        }
    };
    tokio::try_join!(state, level, answer)?;
    if let Some(verdict) = &verdict {
        tracing::info!(order = verdict.order_id, product, result = ?verdict.result, "order checked");
    }
    stock.cache.stage(product, next);
    Ok(())
}

/// What [`apply`] wrote and committed, by product, for the partitions it holds: the table follows
/// the topic a little behind, and the next command must see the last one's result.
#[derive(Debug, Default)]
pub struct ProductCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    committed: HashMap<String, ProductState>,
    /// Written in the open transaction.
    pending: HashMap<String, ProductState>,
}

impl ProductCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, product: &str) -> Option<ProductState> {
        let inner = self.lock();
        inner.pending.get(product).or_else(|| inner.committed.get(product)).cloned()
    }

    fn stage(&self, product: String, state: ProductState) {
        self.lock().pending.insert(product, state);
    }

    /// Forgets the products of `partitions`: another instance changes them, or did.
    fn forget(&self, partitions: &[i32]) {
        let mut inner = self.lock();
        let theirs =
            |product: &String| partitions.contains(&partition_for(product.as_bytes(), COMMAND_PARTITIONS));
        inner.committed.retain(|p, _| !theirs(p));
        inner.pending.retain(|p, _| !theirs(p));
    }
}

/// Keeps the [`ProductCache`] in step with [`apply`]'s transactions and partitions.
#[derive(Debug, Clone)]
struct CacheHooks(Arc<ProductCache>);

impl ConsumerHooks for CacheHooks {
    fn assigned(&self, _topic: &str, partitions: &[i32]) {
        self.0.forget(partitions);
    }

    fn revoked(&self, _topic: &str, partitions: &[i32]) {
        self.0.forget(partitions);
    }

    fn transaction_ended(&self, committed: bool) {
        let mut inner = self.0.lock();
        let pending = std::mem::take(&mut inner.pending);
        if committed {
            inner.committed.extend(pending);
        }
    }
}

backbone::service! {
    /// Stock: reserves stock for new orders, answers queries about stock.
    pub stock: Stock {
        owns COMMANDS;
        owns PRODUCTS;
        handles route_order;
        routes routes();
    }
}

/// What `stock`'s principal may use per broker, enforced by Kafka (`backbone estate apply`): 10 MiB/s
/// produced, 20 MiB/s fetched.
pub const QUOTAS: backbone::Quotas = backbone::Quotas {
    producer_byte_rate: Some(10 * 1024 * 1024),
    consumer_byte_rate: Some(20 * 1024 * 1024),
    request_percentage: None,
};

/// The service's declaration, its [`apply`] handler keeping `cache`.
pub fn app_with(cache: &Arc<ProductCache>) -> App<Stock> {
    let hooks = CacheHooks(cache.clone());
    stock()
        // Every instance answers every product's GET, and reads any product `apply` takes over.
        .table_with::<Json<ProductState>>(PRODUCTS, |table| table.replicated())
        .handler_with::<apply>(move |consumer| consumer.hooks(hooks))
        .quotas(QUOTAS)
}

/// The service's declaration: topics, events, handlers, the products table, routes.
pub fn app() -> App<Stock> {
    app_with(&Arc::default())
}

fn make_state(tables: &Tables, cache: Arc<ProductCache>) -> Result<Stock, AppError> {
    Ok(Stock {
        products: tables.get::<Json<ProductState>>(PRODUCTS)?,
        publisher: tables.publisher().clone(),
        cache,
    })
}

/// The service's declaration and the builder of its state, which share [`apply`]'s product cache:
/// what [`App::start_with`], [`App::run_with`] and [`App::main_with`] take. The binary is
/// `let (app, state) = app_and_state(); app.main_with(state)` (provisions, waits for Orders'
/// topics, serves until a shutdown signal).
pub fn app_and_state() -> (App<Stock>, impl FnOnce(&Tables) -> Result<Stock, AppError> + Send + 'static) {
    let cache = Arc::default();
    let app = app_with(&cache);
    (app, move |tables: &Tables| make_state(tables, cache))
}

/// Starts Stock (without a socket).
pub async fn start(config: &Config) -> Result<Started<Stock>, AppError> {
    let (app, state) = app_and_state();
    app.start_with(config, state).await
}
