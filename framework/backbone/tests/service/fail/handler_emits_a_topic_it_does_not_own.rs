use backbone::{Event, Publisher, State};

/// Shop's contract.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("shop", "order-placed", 1), key = id, schema = "tests/schemas/shop/order-placed-v1.avsc")]
pub struct OrderPlaced {
    pub id: String,
    pub product: String,
    pub quantity: i32,
}

#[derive(Clone)]
pub struct Stock;

/// Re-publishes shop's orders: only shop may.
#[backbone::handler(emits(OrderPlaced))]
async fn echo(Event(order): Event<OrderPlaced>, State(_): State<Stock>, out: Publisher) -> Result<(), backbone::HandlerError> {
    out.emit(&order).await?;
    Ok(())
}

backbone::service! {
    pub stock: Stock {
        handles echo;
    }
}

fn main() {}
