#[derive(serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[avro(schema = "tests/schemas/orders/order-state-v1.avsc")]
pub enum OrderState {
    Placed,
    Paid { amount: i64 },
    Shipped,
}

fn main() {}
