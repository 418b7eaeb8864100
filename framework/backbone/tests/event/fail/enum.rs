#[derive(serde::Serialize, serde::Deserialize, backbone::Event)]
#[event(topic = ("shop", "states", 1), key = id, schema = "tests/schemas/orders/order-state-v1.avsc")]
pub enum OrderState {
    Placed,
    Paid,
    Shipped,
}

fn main() {}
