//! Orders' HTTP API: plain async handlers over the [`Orders`] state, documented with utoipa so
//! `/openapi.json` comes from this code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use backbone::Delivery;
pub use backbone::http::Problem;
use backbone::http::{HttpError, is_blank, json_whole};
use backbone::table::{WaitError, parse_token};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;
use utoipa::OpenApi;

use crate::waiters::WaiterStats;
use crate::{Order, OrderState, Orders};

/// The header carrying a write's consistency token (`partition:offset`).
pub const CONSISTENCY_TOKEN: &str = "consistency-token";
/// The header naming an order for an idempotent `POST`.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The longest a long-poll may wait.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// `/validated` waits this long unless told otherwise (the reference's default call timeout).
const DEFAULT_VALIDATED_WAIT: Duration = Duration::from_secs(10);
/// A `POST` waits this long for the table to show an order it placed before (a retry).
const PLACED_WAIT: Duration = Duration::from_secs(10);
/// Orders placed by this instance and remembered for retries; beyond, the table answers alone.
const PLACING_MEMORY: usize = 100_000;
/// The longest id (order, customer, product, `Idempotency-Key`), in characters.
const MAX_ID: usize = 128;
/// The most units one order may ask for.
const MAX_QUANTITY: i64 = 1_000_000;

/// The OpenAPI document of Orders' HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Orders", description = "The backbone estate's order service."),
    paths(place_order, get_order, get_validated, cancel_order, waiters),
    components(schemas(Order, OrderState, NewOrder, Problem, WaiterStats))
)]
pub struct ApiDoc;

/// The HTTP routes over the state (backbone adds `/healthz` and `/readyz`).
pub fn routes() -> Router<Orders> {
    Router::new()
        .route("/v1/orders", post(place_order))
        .route("/v1/orders/{id}", get(get_order))
        .route("/v1/orders/{id}/validated", get(get_validated))
        .route("/v1/orders/{id}/cancel", post(cancel_order))
        .route("/v1/waiters", get(waiters))
        .route("/openapi.json", get(|| async { axum::Json(ApiDoc::openapi()) }))
}

/// A new order, as `POST /v1/orders` takes it. The constraints in the document are the ones
/// [`place_order`] enforces (a test checks both agree).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewOrder {
    /// The order's id, chosen by the client (else the `Idempotency-Key` header, else a UUID): 1 to
    /// 128 characters, not blank, no `/`; the same as the `Idempotency-Key` header if both are
    /// given (else 400).
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^/]*[^/ \t\n\r\x0b\x0c][^/]*$")]
    pub id: Option<String>,
    /// Who orders: 1 to 128 characters, not blank.
    #[schema(min_length = 1, max_length = 128, pattern = r"[^ \t\n\r\x0b\x0c]")]
    pub customer_id: String,
    /// The product's id in Stock: 1 to 128 characters, not blank.
    #[schema(min_length = 1, max_length = 128, pattern = r"[^ \t\n\r\x0b\x0c]")]
    pub product: String,
    /// How many: 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: i32,
    /// Total price in minor units (cents), at least 0.
    #[schema(minimum = 0)]
    pub price: i64,
}

/// Long-poll parameters.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// How long to wait, in ms (more than 60,000 waits 60,000).
    #[param(minimum = 0)]
    pub timeout: Option<i64>,
    /// A consistency token (`partition:offset`) from a write: wait until local state has it. The
    /// `Consistency-Token` header works too. The orders topic has partitions 0 to 5.
    #[param(pattern = r"^[0-5]:[0-9]{1,18}$")]
    pub token: Option<String>,
}

/// Reads a new order, naming the first field at fault.
fn parse_new_order(body: &[u8]) -> Result<NewOrder, HttpError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| HttpError::invalid("body", format!("not JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(HttpError::invalid("body", "expected a JSON object"));
    };
    const KNOWN: [&str; 5] = ["id", "customerId", "product", "quantity", "price"];
    if let Some(unknown) = fields.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        let (field, reason) = if unknown == "state" {
            ("state", "is set by the service, not the client".to_owned())
        } else {
            ("body", format!("unknown field `{unknown}` (expected: {})", KNOWN.join(", ")))
        };
        return Err(HttpError::invalid(field, reason));
    }
    let text = |fields: &Map<String, Value>, name: &'static str| -> Result<Option<String>, HttpError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if is_blank(s) => Err(HttpError::invalid(name, "must not be empty")),
            Some(Value::String(s)) if s.chars().count() > MAX_ID => {
                Err(HttpError::invalid(name, format!("must be at most {MAX_ID} characters")))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(HttpError::invalid(name, "must be a string")),
        }
    };
    let number = |name: &'static str, min: i64, max: i64| -> Result<i64, HttpError> {
        match fields.get(name) {
            None | Some(Value::Null) => Err(HttpError::invalid(name, "is required")),
            Some(Value::Number(n)) => match json_whole(n) {
                Some(n) if n < min => Err(HttpError::invalid(name, format!("must be at least {min}"))),
                Some(n) if n > max => Err(HttpError::invalid(name, format!("must be at most {max}"))),
                Some(n) => Ok(n),
                None => Err(HttpError::invalid(name, "must be a whole number")),
            },
            Some(_) => Err(HttpError::invalid(name, "must be a number")),
        }
    };
    let id = text(&fields, "id")?;
    if id.as_deref().is_some_and(|id| id.contains('/')) {
        return Err(HttpError::invalid("id", "must not contain `/`"));
    }
    let customer_id =
        text(&fields, "customerId")?.ok_or_else(|| HttpError::invalid("customerId", "is required"))?;
    let product = text(&fields, "product")?.ok_or_else(|| HttpError::invalid("product", "is required"))?;
    let quantity = number("quantity", 1, MAX_QUANTITY)?;
    let price = number("price", 0, i64::MAX)?;
    // Within i32 by the bound above.
    Ok(NewOrder { id, customer_id, product, quantity: quantity as i32, price })
}

/// An order placed (or found placed) by a `POST`.
#[derive(Debug, Clone)]
struct Placed {
    order: Order,
    token: Option<Delivery>,
}

/// The `POST`s in progress or done on this instance, by order id: a retry racing the first attempt
/// waits for it instead of writing a second `CREATED`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Placing {
    cells: Arc<Mutex<HashMap<String, Arc<OnceCell<Placed>>>>>,
}

impl Placing {
    fn cell(&self, id: &str) -> Arc<OnceCell<Placed>> {
        let mut cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        if cells.len() >= PLACING_MEMORY && !cells.contains_key(id) {
            // Older orders are in the table by now: it answers their retries.
            cells.retain(|_, cell| !cell.initialized());
        }
        cells.entry(id.to_owned()).or_default().clone()
    }
}

fn location(id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("/v1/orders/{id}"))
        .unwrap_or_else(|_| HeaderValue::from_static("/v1/orders"))
}

fn with_token(mut response: Response, token: Option<Delivery>) -> Response {
    if let Some(token) = token
        && let Ok(value) = HeaderValue::from_str(&token.to_string())
    {
        response.headers_mut().insert(CONSISTENCY_TOKEN, value);
    }
    response
}

/// Places an order.
#[utoipa::path(
    post,
    path = "/v1/orders",
    request_body = NewOrder,
    params(("Idempotency-Key" = Option<String>, Header, description = "Names the order: a retry with the same key answers the same order. 1 to 128 visible characters, not blank, no `/`", min_length = 1, max_length = 128, pattern = r"^[^/]*[^/ \t\n\r\x0b\x0c][^/]*$")),
    responses(
        (status = 201, description = "Placed, durably; `Location` and `Consistency-Token` headers", body = Order),
        (status = 200, description = "A retry: the order placed before", body = Order),
        (status = 400, description = "A field or the `Idempotency-Key` is missing or wrong, or `id` and `Idempotency-Key` differ: `field` and `reason`", body = Problem),
        (status = 409, description = "The id names another order", body = Problem),
        (status = 413, description = "The body is larger than 64 KiB", body = Problem),
        (status = 503, description = "Restoring, the write failed, too many requests in progress (`busy`), or no answer within the request timeout (`timeout`); see `Retry-After`", body = Problem),
    )
)]
pub async fn place_order(State(orders): State<Orders>, headers: HeaderMap, body: Bytes) -> Response {
    place(orders, headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn place(orders: Orders, headers: HeaderMap, body: Bytes) -> Result<Response, HttpError> {
    let new = parse_new_order(&body)?;
    let keyed = headers.contains_key(IDEMPOTENCY_KEY);
    let key = match headers.get(IDEMPOTENCY_KEY).map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if !is_blank(key) && key.chars().count() <= MAX_ID && !key.contains('/') => {
            Some(key.to_owned())
        }
        Some(_) => {
            return Err(HttpError::invalid(
                "Idempotency-Key",
                "must be 1 to 128 visible characters without `/`",
            ));
        }
    };
    let id = match (&new.id, key) {
        (Some(id), Some(key)) if *id != key => {
            return Err(HttpError::invalid("id", "differs from the Idempotency-Key header"));
        }
        (Some(id), _) => id.clone(),
        (None, Some(key)) => key,
        (None, None) => uuid::Uuid::new_v4().to_string(),
    };
    let wanted = Order {
        id: id.clone(),
        customer_id: new.customer_id,
        product: new.product,
        quantity: new.quantity,
        price: new.price,
        state: OrderState::Created,
        reason: None,
    };
    let cell = orders.placing.cell(&id);
    let mut wrote = false;
    let placed = cell
        .get_or_try_init(|| async {
            // Placed before (by another instance, or before a restart): the table knows. With an
            // `Idempotency-Key` header (what a retrying client sends), once the table has applied
            // everything acknowledged on the order's partition so far, a first attempt written
            // behind a transaction still open there (a validation's) included: a retry on another
            // instance within the table's lag then finds the first attempt instead of writing a
            // second CREATED. Those lookups cost round trips (and up to a transaction's life,
            // ~100 ms, while one is open), so a body `id` alone is checked against the table as it
            // is; Stock reserves once for an order written twice. (Two first attempts for one key
            // on two instances at the same moment can both write.)
            if keyed {
                let partition = orders.table.partition_for(&id);
                orders.table.sync_acknowledged(partition, PLACED_WAIT).await.map_err(|e| {
                    HttpError::unavailable(format!("cannot check for an earlier attempt of `{id}`: {e}"))
                })?;
            }
            if let Some(existing) = orders.table.get(&id)? {
                return Ok::<_, HttpError>(Placed { order: existing, token: None });
            }
            let at = orders.publisher.emit(&wanted).await?;
            wrote = true;
            tracing::info!(order = id, token = %at, "order placed");
            Ok(Placed { order: wanted.clone(), token: Some(at) })
        })
        .await?
        .clone();
    if !wrote {
        // A retry: the same order, in its current state.
        let same = |o: &Order| {
            (&o.customer_id, &o.product, o.quantity, o.price)
                == (&wanted.customer_id, &wanted.product, wanted.quantity, wanted.price)
        };
        if !same(&placed.order) {
            return Err(HttpError::conflict(format!("order `{id}` exists with other contents")));
        }
        let now = match placed.token {
            Some(at) => {
                let _ = orders.table.wait_for_delivery(at, PLACED_WAIT).await;
                orders.table.get(&id)?.unwrap_or(placed.order)
            }
            None => placed.order,
        };
        let mut response = (StatusCode::OK, axum::Json(now)).into_response();
        response.headers_mut().insert(header::LOCATION, location(&id));
        return Ok(with_token(response, placed.token));
    }
    let mut response = (StatusCode::CREATED, axum::Json(placed.order)).into_response();
    response.headers_mut().insert(header::LOCATION, location(&id));
    Ok(with_token(response, placed.token))
}

/// A path's order id: 1 to [`MAX_ID`] characters, not blank (checked before it is looked up or
/// waited for, so no waiter holds a longer one).
fn check_id(id: &str) -> Result<(), HttpError> {
    if is_blank(id) || id.chars().count() > MAX_ID {
        return Err(HttpError::invalid("id", format!("must be 1 to {MAX_ID} characters, not blank")));
    }
    Ok(())
}

/// The token to wait for: the query's, else the header's.
fn token(params: &WaitParams, headers: &HeaderMap) -> Result<Option<Delivery>, HttpError> {
    let text = params
        .token
        .clone()
        .or_else(|| headers.get(CONSISTENCY_TOKEN).and_then(|v| v.to_str().ok()).map(str::to_owned));
    text.map(|t| parse_token(&t).ok_or_else(|| HttpError::invalid("token", "expected `partition:offset`")))
        .transpose()
}

fn timeout(params: &WaitParams, default: Duration) -> Duration {
    params.timeout.map_or(default, |ms| Duration::from_millis(ms.max(0).unsigned_abs())).min(MAX_WAIT)
}

/// `timeout` is a number of ms, at least 0 (a signed 64-bit one, as the document's `int64` says:
/// larger ones are refused by the query's parser).
fn check_timeout(params: &WaitParams) -> Result<(), HttpError> {
    match params.timeout {
        Some(ms) if ms < 0 => Err(HttpError::invalid("timeout", "must be at least 0")),
        _ => Ok(()),
    }
}

/// Waits, if asked to, until local state has applied the write at the token.
async fn caught_up(orders: &Orders, token: Option<Delivery>, limit: Duration) -> Result<(), HttpError> {
    let Some(at) = token else { return Ok(()) };
    let waited = orders.table.wait_for_delivery(at, limit).await;
    if let Err(WaitError::Timeout { .. }) = waited
        && let Ok(end) = orders.table.high_watermark(at.partition).await
        && at.offset >= end
    {
        // Not lag: no write has that offset (yet). The client's token is wrong.
        return Err(HttpError::invalid(
            "token",
            format!("`{at}` names an offset not written: partition {} ends at {end}", at.partition),
        ));
    }
    waited.map_err(|e| match e {
        WaitError::Timeout { .. } => HttpError::timeout(format!("local state has not reached {at} yet")),
        WaitError::NoSuchPartition { partitions, .. } => HttpError::invalid(
            "token",
            format!("`{at}` names a partition that does not exist (partitions: 0 to {})", partitions - 1),
        ),
        other => HttpError::unavailable(other.to_string()),
    })
}

/// Waits (long-poll, bounded) until `id`'s order satisfies `done`; what it is then.
async fn wait_for_order(
    orders: &Orders,
    id: &str,
    done: impl Fn(&Order) -> bool,
    limit: Duration,
) -> Result<Option<Order>, HttpError> {
    // No waiting needed: answer now (this is also where a restoring table says 503).
    let now = orders.table.get(id)?;
    if now.as_ref().is_some_and(&done) || limit.is_zero() {
        return Ok(now);
    }
    let Some(_place) = orders.waiters.enter(id) else {
        return Err(HttpError::unavailable("too many requests are waiting; try again"));
    };
    match orders.table.wait_until_key(id, |o| o.is_some_and(&done), limit).await {
        Ok(order) => Ok(order),
        Err(WaitError::Timeout { .. }) => Ok(orders.table.get(id)?),
        Err(other @ WaitError::Misplaced(_)) => Err(HttpError::internal(other.to_string())),
        Err(other) => Err(HttpError::unavailable(other.to_string())),
    }
}

/// An order, from local state.
#[utoipa::path(
    get,
    path = "/v1/orders/{id}",
    params(("id" = String, Path, description = "The order id: 1 to 128 characters, not blank", min_length = 1, max_length = 128, pattern = r"[^ \t\n\r\x0b\x0c]"), WaitParams),
    responses(
        (status = 200, description = "The order as it stands", body = Order),
        (status = 400, description = "The id, `timeout` or `token` is wrong: `field` and `reason`", body = Problem),
        (status = 404, description = "No such order (after `timeout`, if given)", body = Problem),
        (status = 504, description = "Local state did not reach the token in time", body = Problem),
        (status = 503, description = "Restoring, too many waiters or requests (`busy`), or no answer within the request timeout; see `Retry-After`", body = Problem),
    )
)]
pub async fn get_order(
    State(orders): State<Orders>,
    Path(id): Path<String>,
    Query(params): Query<WaitParams>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        check_id(&id)?;
        check_timeout(&params)?;
        // The token is waited for up to `timeout` (default 10 s); an absent order only if asked,
        // for what is left of `timeout`.
        let started = tokio::time::Instant::now();
        caught_up(&orders, token(&params, &headers)?, timeout(&params, DEFAULT_VALIDATED_WAIT)).await?;
        let limit = timeout(&params, Duration::ZERO).saturating_sub(started.elapsed());
        match wait_for_order(&orders, &id, |_| true, limit).await? {
            Some(order) => Ok(axum::Json(order).into_response()),
            None => Err(HttpError::not_found(format!("no order `{id}`"))),
        }
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// An order once Stock has answered: `VALIDATED` or `FAILED` (or `CANCELLED`).
#[utoipa::path(
    get,
    path = "/v1/orders/{id}/validated",
    params(("id" = String, Path, description = "The order id: 1 to 128 characters, not blank", min_length = 1, max_length = 128, pattern = r"[^ \t\n\r\x0b\x0c]"), WaitParams),
    responses(
        (status = 200, description = "The order in a final state", body = Order),
        (status = 400, description = "The id, `timeout` or `token` is wrong: `field` and `reason`", body = Problem),
        (status = 404, description = "No such order", body = Problem),
        (status = 504, description = "Not validated within `timeout` (default 10 s)", body = Problem),
        (status = 503, description = "Restoring, too many waiters or requests (`busy`), or no answer within the request timeout; see `Retry-After`", body = Problem),
    )
)]
pub async fn get_validated(
    State(orders): State<Orders>,
    Path(id): Path<String>,
    Query(params): Query<WaitParams>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        check_id(&id)?;
        check_timeout(&params)?;
        // One `timeout` for both waits.
        let started = tokio::time::Instant::now();
        let limit = timeout(&params, DEFAULT_VALIDATED_WAIT);
        let token = token(&params, &headers)?;
        caught_up(&orders, token, limit).await?;
        let left = limit.saturating_sub(started.elapsed());
        match orders.table.get(&id)? {
            // Caught up to the caller's write and still unknown: it does not exist.
            None if token.is_some() => return Err(HttpError::not_found(format!("no order `{id}`"))),
            _ => {}
        }
        match wait_for_order(&orders, &id, |o| o.state.is_final(), left).await? {
            Some(order) if order.state.is_final() => Ok(axum::Json(order).into_response()),
            Some(order) => Err(HttpError::timeout(format!(
                "order `{id}` is still {:?} after {} ms",
                order.state,
                limit.as_millis()
            ))),
            None => Err(HttpError::not_found(format!("no order `{id}`"))),
        }
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// Cancels a `VALIDATED` order; Stock releases its reservation. Cancelling a cancelled order
/// answers it again.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/cancel",
    params(("id" = String, Path, description = "The order id: 1 to 128 characters, not blank", min_length = 1, max_length = 128, pattern = r"[^ \t\n\r\x0b\x0c]"), WaitParams),
    responses(
        (status = 200, description = "Cancelled; `Consistency-Token` header", body = Order),
        (status = 400, description = "The id, `timeout` or `token` is wrong: `field` and `reason`", body = Problem),
        (status = 404, description = "No such order", body = Problem),
        (status = 409, description = "Not cancellable: being validated, or failed", body = Problem),
        (status = 504, description = "Local state did not reach the token in time", body = Problem),
        (status = 503, description = "Restoring, the write failed, too many requests (`busy`), or no answer within the request timeout; see `Retry-After`", body = Problem),
    )
)]
pub async fn cancel_order(
    State(orders): State<Orders>,
    Path(id): Path<String>,
    Query(params): Query<WaitParams>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        check_id(&id)?;
        check_timeout(&params)?;
        caught_up(&orders, token(&params, &headers)?, timeout(&params, DEFAULT_VALIDATED_WAIT)).await?;
        let order = orders.table.get(&id)?.ok_or_else(|| HttpError::not_found(format!("no order `{id}`")))?;
        match order.state {
            OrderState::Cancelled => Ok(axum::Json(order).into_response()),
            OrderState::Created => Err(HttpError::conflict(format!(
                "order `{id}` is being validated; wait for /v1/orders/{id}/validated, then cancel"
            ))),
            OrderState::Failed => Err(HttpError::conflict(format!("order `{id}` failed: nothing to cancel"))),
            OrderState::Validated => {
                let cancelled = Order { state: OrderState::Cancelled, ..order };
                let at = orders.publisher.emit(&cancelled).await?;
                tracing::info!(order = id, token = %at, "order cancelled");
                Ok(with_token(axum::Json(cancelled).into_response(), Some(at)))
            }
        }
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// The long-poll waiters: waiting now, refused so far (a metric).
#[utoipa::path(
    get,
    path = "/v1/waiters",
    responses(
        (status = 200, description = "The counts", body = WaiterStats),
        (status = 503, description = "Too many requests in progress (`busy`); see `Retry-After`", body = Problem),
    )
)]
pub async fn waiters(State(orders): State<Orders>) -> axum::Json<WaiterStats> {
    axum::Json(orders.waiters.stats())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> (String, String) {
        match parse_new_order(body.as_bytes()) {
            Err(e) if e.status() == StatusCode::BAD_REQUEST => {
                let problem = e.problem().clone();
                (problem.field.unwrap_or_default(), problem.reason)
            }
            other => panic!("expected a 400 for {body}: {other:?}"),
        }
    }

    #[test]
    fn a_bad_order_names_its_field_and_reason() {
        let ok = r#"{"customerId":"c1","product":"p1","quantity":2,"price":300}"#;
        let order = parse_new_order(ok.as_bytes()).unwrap();
        assert_eq!((order.id, order.quantity, order.price), (None, 2, 300));

        assert_eq!(field_of(r#"{"product":"p1","quantity":2,"price":3}"#).0, "customerId");
        assert_eq!(
            field_of(r#"{"customerId":"c","product":"p1","quantity":0,"price":3}"#),
            ("quantity".into(), "must be at least 1".into())
        );
        assert_eq!(field_of(r#"{"customerId":"c","product":"p1","quantity":"2","price":3}"#).0, "quantity");
        assert_eq!(field_of(r#"{"customerId":"c","product":"","quantity":2,"price":3}"#).0, "product");
        assert_eq!(field_of(r#"{"customerId":"c","product":"p","quantity":2,"price":-1}"#).0, "price");
        assert_eq!(field_of(r#"{"customerId":"c","product":"p","quantity":2,"price":1.5}"#).0, "price");
        let whole =
            parse_new_order(br#"{"customerId":"c","product":"p","quantity":2.0,"price":3e2}"#).unwrap();
        assert_eq!((whole.quantity, whole.price), (2, 300), "JSON Schema integers written as floats");
        assert_eq!(
            field_of(r#"{"customerId":"c","product":"p","quantity":2,"price":1,"state":"VALIDATED"}"#).0,
            "state"
        );
        assert_eq!(field_of(r#"{"customerId":"c","product":"p","quantity":2,"price":1,"x":1}"#).0, "body");
        assert_eq!(field_of("[1]").0, "body");
        assert_eq!(field_of("{").0, "body");
    }

    /// A POST body: the valid order with `field` set to `value` (or removed, for `Null`).
    fn with(field: &str, value: Value) -> Vec<u8> {
        let mut body =
            serde_json::json!({"id": "o1", "customerId": "c", "product": "p", "quantity": 2, "price": 3});
        if value.is_null() {
            body.as_object_mut().unwrap().remove(field);
        } else {
            body[field] = value;
        }
        body.to_string().into_bytes()
    }

    #[test]
    fn item_e_the_document_states_the_constraints_the_handlers_enforce() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let new = &doc["components"]["schemas"]["NewOrder"];
        assert_eq!(new["additionalProperties"], false, "{new}");
        assert!(parse_new_order(&with("extra", 1.into())).is_err(), "additionalProperties: false");
        let mut required: Vec<&str> =
            new["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        required.sort_unstable();
        assert_eq!(required, ["customerId", "price", "product", "quantity"], "{new}");
        for name in &required {
            assert!(parse_new_order(&with(name, Value::Null)).is_err(), "{name} is required");
        }
        assert!(parse_new_order(&with("id", Value::Null)).is_ok(), "id is optional");

        // Strings: the document's lengths (characters) and patterns, at their bounds.
        for name in ["id", "customerId", "product"] {
            let schema = &new["properties"][name];
            assert_eq!(
                (schema["minLength"].as_u64(), schema["maxLength"].as_u64()),
                (Some(1), Some(128)),
                "{name}: {schema}"
            );
            assert!(schema["pattern"].is_string(), "{name}: {schema}");
            let max = schema["maxLength"].as_u64().unwrap() as usize;
            assert!(parse_new_order(&with(name, "é".repeat(max).into())).is_ok(), "{name} at maxLength");
            assert!(
                parse_new_order(&with(name, "é".repeat(max + 1).into())).is_err(),
                "{name} over maxLength"
            );
            assert!(
                parse_new_order(&with(name, " ".into())).is_err(),
                "{name} blank: the pattern refuses it too"
            );
        }
        assert!(parse_new_order(&with("id", "a/b".into())).is_err());
        // Numbers: the document's range, at its bounds.
        for (name, min, max) in [("quantity", Some(1), Some(1_000_000)), ("price", Some(0), None)] {
            let schema = &new["properties"][name];
            assert_eq!(
                (schema["minimum"].as_i64(), schema["maximum"].as_i64()),
                (min, max),
                "{name}: {schema}"
            );
            let min = min.unwrap();
            assert!(parse_new_order(&with(name, min.into())).is_ok(), "{name} at minimum");
            assert!(parse_new_order(&with(name, (min - 1).into())).is_err(), "{name} under minimum");
            if let Some(max) = max {
                assert!(parse_new_order(&with(name, max.into())).is_ok(), "{name} at maximum");
                assert!(parse_new_order(&with(name, (max + 1).into())).is_err(), "{name} over maximum");
            }
        }

        // Every operation on an order: its id's bounds, and every status it can answer.
        let operations = [
            ("/v1/orders/{id}", "get", &["200", "400", "404", "503", "504"][..]),
            ("/v1/orders/{id}/validated", "get", &["200", "400", "404", "503", "504"]),
            ("/v1/orders/{id}/cancel", "post", &["200", "400", "404", "409", "503", "504"]),
            ("/v1/orders", "post", &["200", "201", "400", "409", "413", "503"]),
            ("/v1/waiters", "get", &["200", "503"]),
        ];
        for (path, method, statuses) in operations {
            let operation = &doc["paths"][path][method];
            let mut documented: Vec<&str> =
                operation["responses"].as_object().unwrap().keys().map(String::as_str).collect();
            documented.sort_unstable();
            assert_eq!(documented, statuses, "{method} {path}");
            let Some(params) = operation["parameters"].as_array() else { continue };
            for param in params {
                let schema = &param["schema"];
                match param["name"].as_str().unwrap() {
                    "id" => {
                        assert_eq!(
                            (schema["minLength"].as_u64(), schema["maxLength"].as_u64()),
                            (Some(1), Some(128)),
                            "{path}"
                        );
                        assert!(check_id(&"é".repeat(128)).is_ok() && check_id(&"é".repeat(129)).is_err());
                        assert!(check_id(" ").is_err());
                    }
                    "timeout" => {
                        assert_eq!(schema["minimum"].as_i64(), Some(0), "{path}: {schema}");
                        assert_eq!(schema["format"], "int64", "{path}: {schema}");
                        let params = |ms| WaitParams { timeout: Some(ms), token: None };
                        assert!(
                            check_timeout(&params(0)).is_ok() && check_timeout(&params(i64::MAX)).is_ok()
                        );
                        assert!(check_timeout(&params(-1)).is_err());
                    }
                    "token" => {
                        assert!(schema["pattern"].is_string(), "{path}: {schema}");
                        assert!(
                            parse_token("999999999:999999999999999999").is_some(),
                            "the pattern's largest"
                        );
                    }
                    "Idempotency-Key" => {
                        assert_eq!(schema["maxLength"].as_u64(), Some(128), "{schema}");
                        assert!(schema["pattern"].is_string(), "{schema}");
                    }
                    other => panic!("{other} in {path}"),
                }
            }
        }
    }

    #[test]
    fn the_openapi_document_has_every_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in ["/v1/orders", "/v1/orders/{id}", "/v1/orders/{id}/validated", "/v1/orders/{id}/cancel"] {
            assert!(paths.contains_key(path), "{path} missing from {paths:?}");
        }
        let order = &doc["components"]["schemas"]["Order"]["properties"];
        assert!(order.get("customerId").is_some(), "camelCase as served: {order}");
    }
}
