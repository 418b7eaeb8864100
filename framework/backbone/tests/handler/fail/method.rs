use backbone::Event;

#[derive(serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("shop", "order-placed", 1), key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
pub struct OrderPlaced {
    pub id: String,
    pub product: String,
    pub quantity: i32,
}

pub struct Stock;

impl Stock {
    #[backbone::handler]
    async fn reserve(&self, Event(_order): Event<OrderPlaced>) {}
}

fn main() {}
