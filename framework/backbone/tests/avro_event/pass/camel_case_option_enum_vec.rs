//! `rename_all = "camelCase"`, an optional field, an enum (derived against its own file) and a list.

use backbone::schema::AvroEvent;

/// An order was placed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[serde(rename_all = "camelCase")]
#[avro(schema = "tests/schemas/orders/order-created-v1.avsc")]
pub struct OrderCreated {
    pub id: String,
    pub customer_id: String,
    pub quantity: i32,
    pub price: i64,
    pub note: std::option::Option<String>,
    pub state: OrderState,
    pub tags: Vec<String>,
    pub placed_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(schema = "tests/schemas/orders/order-state-v1.avsc")]
pub enum OrderState {
    Placed,
    Paid,
    Shipped,
}

fn main() {
    assert_eq!(backbone::schema::full_name(OrderCreated::schema()), "com.example.orders.OrderCreated");
    assert_eq!(backbone::schema::full_name(OrderState::schema()), "com.example.orders.OrderState");
}
