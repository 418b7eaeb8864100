use backbone::{Event, State};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("shop", "order-placed", 1), key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
pub struct OrderPlaced {
    pub id: String,
    pub product: String,
    pub quantity: i32,
}

#[derive(Clone)]
pub struct Stock;

#[derive(Clone)]
pub struct Billing;

#[backbone::handler]
async fn charge(Event(_order): Event<OrderPlaced>, State(_): State<Billing>) {}

backbone::service! {
    pub stock: Stock {
        handles charge;
    }
}

fn main() {}
