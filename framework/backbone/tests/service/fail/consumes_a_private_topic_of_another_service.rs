use backbone::{Event, State};

/// Shop's private state, not for Stock to read.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("shop", "orders"), key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
pub struct OrderPlaced {
    pub id: String,
    pub product: String,
    pub quantity: i32,
}

#[derive(Clone)]
pub struct Stock;

#[backbone::handler]
async fn check(Event(_order): Event<OrderPlaced>, State(_): State<Stock>) {}

backbone::service! {
    pub stock: Stock {
        handles check;
    }
}

fn main() {}
