use backbone::{Event, HandlerError};

#[derive(serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("shop", "order-placed", 1), key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
pub struct OrderPlaced {
    pub id: String,
    pub product: String,
    pub quantity: i32,
}

#[backbone::handler]
fn reserve(Event(_order): Event<OrderPlaced>) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
