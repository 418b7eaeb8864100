use backbone::{Event, State};

#[derive(serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("shop", "order-placed", 1), key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
pub struct OrderPlaced {
    pub id: String,
    pub product: String,
    pub quantity: i32,
}

#[backbone::handler]
async fn reserve<S: Clone + Send + Sync + 'static>(Event(_order): Event<OrderPlaced>, State(_s): State<S>) {}

fn main() {}
