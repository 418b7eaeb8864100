//! Stock's HTTP API, documented with utoipa so `/openapi.json` comes from this code.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use backbone::Json;
pub use backbone::http::Problem;
use backbone::http::{HttpError, is_blank, json_whole};
use backbone::table::WaitError;
use serde::Deserialize;
use utoipa::OpenApi;

use crate::{Command, Stock, StockLevel};

/// How long a `PUT` waits for its change to be applied before answering 202.
const APPLIED_WAIT: Duration = Duration::from_secs(10);
/// How long a `PUT` waits for its command to be written before answering 503.
const WRITE_WAIT: Duration = Duration::from_secs(10);
/// The longest product id, in characters.
const MAX_PRODUCT: usize = 128;

/// The OpenAPI document of Stock's HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Stock", description = "The backbone estate's stock service."),
    paths(set_stock, get_stock),
    components(schemas(StockLevel, SetStock, Problem))
)]
pub struct ApiDoc;

/// The HTTP routes over the state (backbone adds `/healthz` and `/readyz`).
pub fn routes() -> Router<Stock> {
    Router::new()
        .route("/v1/stock/{product}", get(get_stock).put(set_stock))
        .route("/openapi.json", get(|| async { axum::Json(ApiDoc::openapi()) }))
}

/// `PUT /v1/stock/{product}`'s body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStock {
    /// Units in the warehouse, at least 0.
    #[schema(minimum = 0)]
    pub quantity: i64,
}

fn check_product(product: &str) -> Result<(), HttpError> {
    // Characters, as the document's `maxLength` counts them.
    if is_blank(product) || product.chars().count() > MAX_PRODUCT {
        return Err(HttpError::invalid("product", "must be 1 to 128 characters"));
    }
    Ok(())
}

fn parse_quantity(body: &[u8]) -> Result<i64, HttpError> {
    let bad = |field: &str, reason: String| HttpError::invalid(field, reason);
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad("body", format!("not JSON: {e}")))?;
    let serde_json::Value::Object(fields) = value else {
        return Err(bad("body", "expected a JSON object".into()));
    };
    if let Some(unknown) = fields.keys().find(|k| *k != "quantity") {
        return Err(bad("body", format!("unknown field `{unknown}` (expected: quantity)")));
    }
    match fields.get("quantity") {
        None | Some(serde_json::Value::Null) => Err(bad("quantity", "is required".into())),
        Some(serde_json::Value::Number(n)) => match json_whole(n) {
            Some(q) if q < 0 => Err(bad("quantity", "must be at least 0".into())),
            Some(q) => Ok(q),
            None => Err(bad("quantity", "must be a whole number".into())),
        },
        Some(_) => Err(bad("quantity", "must be a number".into())),
    }
}

/// Sets the units in the warehouse (as an event); answers the level once applied.
#[utoipa::path(
    put,
    path = "/v1/stock/{product}",
    request_body = SetStock,
    params(("product" = String, Path, description = "The product's id: 1 to 128 characters, not blank", min_length = 1, max_length = 128, pattern = r"[^ \t\n\r\x0b\x0c]")),
    responses(
        (status = 200, description = "Applied: the level now", body = StockLevel),
        (status = 202, description = "Written, not applied within 10 s yet; `Location` header"),
        (status = 400, description = "The product id or a field of the body is wrong: `field` and `reason`", body = Problem),
        (status = 413, description = "The body is larger than 64 KiB", body = Problem),
        (status = 503, description = "The write failed or was not confirmed within 10 s, too many requests are in progress (`busy`), or no answer within the request timeout (`timeout`); see `Retry-After`", body = Problem),
    )
)]
pub async fn set_stock(State(stock): State<Stock>, Path(product): Path<String>, body: Bytes) -> Response {
    if let Err(bad) = check_product(&product) {
        return bad.into_response();
    }
    let quantity = match parse_quantity(&body) {
        Ok(quantity) => quantity,
        Err(bad) => return bad.into_response(),
    };
    let request = uuid::Uuid::new_v4().to_string();
    let command = Command::SetStock { product: product.clone(), quantity, request: request.clone() };
    match tokio::time::timeout(WRITE_WAIT, crate::send(&stock.publisher, &command)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return HttpError::unavailable(format!("not written: {e}")).into_response();
        }
        Err(_) => {
            let reason = format!(
                "not confirmed written within {} s; setting it again is harmless",
                WRITE_WAIT.as_secs()
            );
            return HttpError::unavailable(reason).into_response();
        }
    }
    let applied = |p: Option<&Json<crate::ProductState>>| {
        p.is_some_and(|Json(p)| p.last_request.as_deref() == Some(request.as_str()))
    };
    match stock.products.wait_until_key(&product, applied, APPLIED_WAIT).await {
        Ok(Some(Json(state))) => axum::Json(state.level()).into_response(),
        Ok(None) | Err(WaitError::Timeout { .. }) => {
            let mut response = StatusCode::ACCEPTED.into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/v1/stock/{product}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(e) => HttpError::unavailable(e.to_string()).into_response(),
    }
}

/// A product's level, from local state.
#[utoipa::path(
    get,
    path = "/v1/stock/{product}",
    params(("product" = String, Path, description = "The product's id: 1 to 128 characters, not blank", min_length = 1, max_length = 128, pattern = r"[^ \t\n\r\x0b\x0c]")),
    responses(
        (status = 200, description = "The level", body = StockLevel),
        (status = 400, description = "The product id is wrong: `field` and `reason`", body = Problem),
        (status = 404, description = "Never stocked", body = Problem),
        (status = 503, description = "Restoring, too many requests in progress (`busy`), or no answer within the request timeout (`timeout`); see `Retry-After`", body = Problem),
    )
)]
pub async fn get_stock(State(stock): State<Stock>, Path(product): Path<String>) -> Response {
    if let Err(bad) = check_product(&product) {
        return bad.into_response();
    }
    match stock.products.get(&product) {
        Ok(Some(Json(state))) => axum::Json(state.level()).into_response(),
        Ok(None) => HttpError::not_found(format!("no stock of `{product}`")).into_response(),
        // Restoring: 503; a product another producer misplaced: 500 (asking again does not help).
        Err(e) => HttpError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_quantity_is_named() {
        assert_eq!(parse_quantity(br#"{"quantity": 4}"#).unwrap(), 4);
        assert_eq!(parse_quantity(br#"{"quantity": 112389.0}"#).unwrap(), 112_389, "found by schemathesis");
        for body in [&br#"{"quantity": -1}"#[..], br#"{"quantity": "4"}"#, br#"{}"#, br#"{"quantity": 1.5}"#]
        {
            assert_eq!(parse_quantity(body).unwrap_err().problem().field.as_deref(), Some("quantity"));
        }
    }

    #[test]
    fn item_e_the_document_states_the_constraints_the_handlers_enforce() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let path = &doc["paths"]["/v1/stock/{product}"];
        for method in ["get", "put"] {
            let param = &path[method]["parameters"][0];
            assert_eq!(param["name"], "product");
            let schema = &param["schema"];
            assert_eq!(
                (schema["minLength"].as_u64(), schema["maxLength"].as_u64()),
                (Some(1), Some(128)),
                "{schema}"
            );
            assert_eq!(schema["pattern"], r"[^ \t\n\r\x0b\x0c]", "{schema}");
            assert!(check_product("\u{85}").is_ok(), "U+0085 matches the pattern: not blank");
            // The handler agrees at the document's bounds (in characters, not bytes).
            let max = schema["maxLength"].as_u64().unwrap() as usize;
            assert!(check_product(&"é".repeat(max)).is_ok());
            assert!(check_product(&"é".repeat(max + 1)).is_err());
            assert!(check_product(" ").is_err(), "blank: the pattern refuses it too");
            let statuses: Vec<&str> =
                path[method]["responses"].as_object().unwrap().keys().map(String::as_str).collect();
            for status in ["200", "400", "503"] {
                assert!(statuses.contains(&status), "{method} lacks {status}: {statuses:?}");
            }
        }
        assert!(
            path["put"]["responses"].get("413").is_some() && path["get"]["responses"].get("404").is_some()
        );
        let body = &doc["components"]["schemas"]["SetStock"];
        assert_eq!(body["properties"]["quantity"]["minimum"].as_i64(), Some(0), "{body}");
        assert_eq!(body["additionalProperties"], false, "{body}");
        assert_eq!(body["required"], serde_json::json!(["quantity"]), "{body}");
        let min = body["properties"]["quantity"]["minimum"].as_i64().unwrap();
        assert!(parse_quantity(format!(r#"{{"quantity": {min}}}"#).as_bytes()).is_ok());
        assert!(parse_quantity(format!(r#"{{"quantity": {}}}"#, min - 1).as_bytes()).is_err());
        assert!(parse_quantity(br#"{"quantity": 1, "more": 1}"#).is_err(), "additionalProperties: false");
    }

    #[test]
    fn the_openapi_document_has_every_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let path = &doc["paths"]["/v1/stock/{product}"];
        assert!(path.get("get").is_some() && path.get("put").is_some(), "{doc}");
        assert!(doc["components"]["schemas"]["StockLevel"]["properties"].get("available").is_some());
    }
}
