#[derive(serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("shop", "Order Placed", 1), key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
pub struct OrderPlaced {
    pub id: String,
    pub product: String,
    pub quantity: i32,
}

fn main() {}
