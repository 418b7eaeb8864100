//! A whole service in one declaration; its spec, without a broker.

use backbone::{Event, HandlerError, Publisher, State, TopicDecl};

/// Shop's contract: an order was placed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("shop", "order-placed", 1), key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
pub struct OrderPlaced {
    pub id: String,
    pub product: String,
    pub quantity: i32,
}

/// Stock's contract: its verdict.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, backbone::Event)]
#[serde(rename_all = "camelCase")]
#[event(topic = ("stock", "order-checked", 1), key = order_id, schema = "tests/schemas/shop/order-checked-v1.avsc")]
pub struct OrderChecked {
    pub order_id: String,
    pub passed: bool,
}

/// Stock levels, Stock's private state.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = LEVELS, key = product, schema = "tests/schemas/shop/stock-level-v1.avsc")]
pub struct StockLevel {
    pub product: String,
    pub count: i32,
}

pub const LEVELS: TopicDecl = TopicDecl::private("stock", "levels").compacted();
pub const RESERVATIONS: TopicDecl = TopicDecl::private("stock", "reservations").compacted();
/// Another service's public table.
pub const PRICES: TopicDecl = TopicDecl::public("pricing", "prices", 1).compacted();

#[derive(Clone)]
pub struct Stock;

mod handlers {
    use super::*;

    #[backbone::handler]
    pub async fn check(
        Event(order): Event<OrderPlaced>,
        State(_): State<Stock>,
        out: Publisher,
    ) -> Result<(), HandlerError> {
        out.emit(&OrderChecked { order_id: order.id, passed: order.quantity < 10 }).await?;
        Ok(())
    }
}

mod http {
    pub fn routes() -> backbone::axum::Router<super::Stock> {
        backbone::axum::Router::new().route("/v1/ping", backbone::axum::routing::get(|| async { "pong" }))
    }
}

backbone::service! {
    /// Stock: checks new orders against its levels.
    pub stock: Stock {
        publishes OrderChecked;
        owns RESERVATIONS;
        table StockLevel;
        table PRICES: String;
        handles handlers::check;
        routes http::routes();
    }
}

fn main() {
    let spec = stock().spec().unwrap();
    assert_eq!(spec.name(), "stock");
    let mut owned: Vec<&str> = spec.owned_topics().iter().map(|t| t.name()).collect();
    owned.sort();
    assert_eq!(
        owned,
        [
            "stock.private.dlq.pricing.public.prices-v1",
            "stock.private.dlq.shop.public.order-placed-v1",
            "stock.private.dlq.stock.private.levels",
            "stock.private.levels",
            "stock.private.reservations",
            "stock.private.retry.shop.public.order-placed-v1",
            "stock.public.order-checked-v1",
        ]
    );
    let mut consumed: Vec<&str> = spec.consumed_topics().iter().map(|t| t.name()).collect();
    consumed.sort();
    assert_eq!(consumed, ["pricing.public.prices-v1", "shop.public.order-placed-v1", "stock.private.levels"]);
    assert_eq!(spec.events().len(), 1);
    assert_eq!(spec.events()[0].subject, "stock.public.order-checked-v1-value");
}
