use backbone::Event;

#[derive(serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("shop", "order-placed", 1), key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
pub struct OrderPlaced {
    pub id: String,
    pub product: String,
    pub quantity: i32,
}

#[backbone::handler]
async fn reserve(Event(order): Event<OrderPlaced>) -> Result<(), String> {
    if order.quantity < 0 {
        return Err("negative quantity".into());
    }
    Ok(())
}

fn main() {}
