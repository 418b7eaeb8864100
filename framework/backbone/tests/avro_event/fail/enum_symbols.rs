#[derive(serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(schema = "tests/schemas/orders/order-state-v1.avsc")]
pub enum OrderState {
    Placed,
    Cancelled,
    Shipped,
}

fn main() {}
