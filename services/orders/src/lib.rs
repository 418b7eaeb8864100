//! Orders, the sample estate's order service: takes orders over HTTP, keeps them in a compacted
//! topic it alone writes (`orders.public.order-v1`), and turns Stock's validation results into
//! `VALIDATED` or `FAILED`.
//!
//! - `POST /v1/orders`: validated (400 naming the field and the reason), idempotent (an
//!   `Idempotency-Key` header or the body's `id` names the order: a retry answers the same order),
//!   answered 201 after the durable write, with `Location` and a `Consistency-Token` (partition and
//!   offset of the write).
//! - `GET /v1/orders/{id}` and `GET /v1/orders/{id}/validated`: long-poll reads of local state
//!   (`timeout` in ms; `token`, or the `Consistency-Token` header, to read one's own write); 404 for
//!   an unknown order, 504 on timeout, 503 with `Retry-After` while state restores or when too many
//!   requests wait.
//! - `POST /v1/orders/{id}/cancel`: a `VALIDATED` order becomes `CANCELLED` (Stock then releases
//!   its reservation).
//! - `/openapi.json`, generated from this code; `/healthz` and `/readyz` from backbone.
//!
//! [`app`] declares the service and [`make_state`] builds its state; [`start`] starts it without a
//! socket (tests call [`backbone::app::Started::router`]); the binary is
//! `app().main_with(make_state)` ([`App::main_with`]: provisions, waits for Stock's topics, serves
//! until a shutdown signal).

pub mod http;
pub mod waiters;

use std::time::Duration;

use backbone::app::{App, AppError, Started};
use backbone::table::Table;
use backbone::{Config, Event, HandlerError, Publisher, State, TopicDecl};
use serde::{Deserialize, Serialize};

pub use http::{ApiDoc, routes};
pub use waiters::Waiters;

/// The orders topic: one record per order, its latest state (compacted).
pub const ORDERS: TopicDecl = TopicDecl::public("orders", "order", 1).partitions(6).compacted();

/// Stock's validation results, consumed here.
pub const VALIDATIONS: TopicDecl = TopicDecl::public("stock", "order-validation", 1).partitions(6);

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderState {
    /// Placed; Stock has not answered yet.
    Created,
    /// Stock reserved it.
    Validated,
    /// Stock could not reserve it (see `reason`); nothing is reserved.
    Failed,
    /// Cancelled by the customer; Stock releases what it reserved.
    Cancelled,
}

impl OrderState {
    /// Whether Stock has answered (or the order was cancelled): what `/validated` waits for.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Created)
    }
}

/// An order as it stands: the contract `schemas/orders/order-v1.avsc`, and the HTTP shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, backbone::Event, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[event(topic = ORDERS, key = id, schema = "schemas/orders/order-v1.avsc")]
pub struct Order {
    /// The order id.
    pub id: String,
    /// Who ordered.
    pub customer_id: String,
    /// The product's id in Stock.
    pub product: String,
    /// How many, at least 1.
    pub quantity: i32,
    /// Total price in minor units (cents).
    pub price: i64,
    /// Where it stands.
    pub state: OrderState,
    /// Why it failed (only for `FAILED`).
    pub reason: Option<String>,
}

/// Stock's verdict on an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValidationResult {
    /// Reserved.
    Pass,
    /// Not reserved.
    Fail,
}

/// Stock's answer to a new order: the contract `schemas/stock/order-validation-v1.avsc`, read here.
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

/// The service's state: the orders table, the publisher and the long-poll waiters.
#[derive(Clone, Debug)]
pub struct Orders {
    /// The orders, by id.
    pub table: Table<Order>,
    /// The service's publisher.
    pub publisher: Publisher,
    /// Requests waiting for an order to change, bounded.
    pub waiters: Waiters,
    pub(crate) placing: http::Placing,
}

/// How long the validation handler waits for the order's own record to reach the table: within
/// the exactly-once event budget ([`backbone::consume::MAX_EVENT_BUDGET`], 5 s), which then
/// dead-letters the result (replayable with `backbone dlq replay`) rather than keep its transaction
/// open past the broker's timeout.
const ORDER_WAIT: Duration = Duration::from_secs(4);

/// Stock's result becomes the order's new state; Orders is the only writer of orders. Exactly once:
/// the new state and the consumed result commit together, so an instance taking over from a
/// stopped one neither settles an order twice nor skips one. A result for an order no longer
/// `CREATED` changes nothing.
#[backbone::handler(exactly_once, emits(Order))]
pub async fn record_validation(
    Event(validation): Event<OrderValidation>,
    State(orders): State<Orders>,
    out: Publisher,
) -> Result<(), HandlerError> {
    // The result follows the order's CREATED record, which the table may not have applied yet. An
    // order its producer wrote to another partition than murmur2's never comes where the table
    // looks: that fails at once, for the dead letters, instead of waiting.
    let order = orders
        .table
        .wait_until_key(&validation.order_id, |o| o.is_some(), ORDER_WAIT)
        .await
        .map_err(|e| if e.is_retriable() { HandlerError::retriable(e) } else { HandlerError::permanent(e) })?
        .ok_or_else(|| HandlerError::retriable("order not in the table"))?;
    if order.state != OrderState::Created {
        tracing::debug!(order = order.id, state = ?order.state, "validation for a settled order: ignored");
        return Ok(());
    }
    let next = match validation.result {
        ValidationResult::Pass => Order { state: OrderState::Validated, reason: None, ..order },
        ValidationResult::Fail => Order {
            state: OrderState::Failed,
            reason: Some(validation.reason.unwrap_or_else(|| "rejected by stock".into())),
            ..order
        },
    };
    out.emit(&next).await?;
    tracing::info!(order = next.id, state = ?next.state, "order settled");
    Ok(())
}

backbone::service! {
    /// Orders: takes orders, settles them with Stock's results, answers queries.
    pub orders: Orders {
        publishes Order;
        handles record_validation;
        routes routes();
    }
}

/// What `orders`'s principal may use per broker, enforced by Kafka (`backbone estate apply`): 10 MiB/s
/// produced, 20 MiB/s fetched.
pub const QUOTAS: backbone::Quotas = backbone::Quotas {
    producer_byte_rate: Some(10 * 1024 * 1024),
    consumer_byte_rate: Some(20 * 1024 * 1024),
    request_percentage: None,
};

/// The service's declaration: topics, events, the validation handler, the orders table, routes.
/// The table is replicated: every instance holds every order, so any instance answers any `GET`
/// and settles any validation.
pub fn app() -> App<Orders> {
    orders().table_with::<Order>(ORDERS, |table| table.replicated()).http_limits(http_limits()).quotas(QUOTAS)
}

/// The most requests waiting for an order to change, in all ([`Waiters`]).
const WAITERS: usize = 10_000;

/// Room for every long-poll the [`Waiters`] allow, and some for the other requests: the waiters'
/// own 503 is the one a client sees when too many wait.
fn http_limits() -> backbone::http::HttpLimits {
    let room = WAITERS + 1_000;
    backbone::http::HttpLimits::default().max_in_flight(room).max_connections(room)
}

/// Starts Orders (without a socket): the state is built from its table and publisher.
pub async fn start(config: &Config) -> Result<Started<Orders>, AppError> {
    app().start_with(config, make_state).await
}

/// The state, from the started service's table and publisher (for [`App::start_with`],
/// [`App::run_with`] and [`App::main_with`]).
pub fn make_state(tables: &backbone::app::Tables) -> Result<Orders, AppError> {
    Ok(Orders {
        table: tables.of::<Order>()?,
        publisher: tables.publisher().clone(),
        waiters: Waiters::new(WAITERS, 1_000),
        placing: http::Placing::default(),
    })
}
