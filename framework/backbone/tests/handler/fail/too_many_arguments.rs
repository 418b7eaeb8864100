use backbone::{Event, Metadata};

#[derive(serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("shop", "order-placed", 1), key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
pub struct OrderPlaced {
    pub id: String,
    pub product: String,
    pub quantity: i32,
}

#[backbone::handler]
async fn reserve(
    _e: Event<OrderPlaced>,
    _m1: Metadata,
    _m2: Metadata,
    _m3: Metadata,
    _m4: Metadata,
    _m5: Metadata,
    _m6: Metadata,
    _m7: Metadata,
    _m8: Metadata,
) {
}

fn main() {}
