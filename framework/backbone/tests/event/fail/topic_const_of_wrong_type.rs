const ORDERS: &str = "shop.public.order-placed-v1";

#[derive(serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ORDERS, key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
pub struct OrderPlaced {
    pub id: String,
    pub product: String,
    pub quantity: i32,
}

fn main() {}
