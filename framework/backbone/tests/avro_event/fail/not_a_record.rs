#[derive(serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[avro(schema = "tests/schemas/orders/order-state-v1.avsc")]
pub struct OrderState {
    pub state: String,
}

fn main() {}
