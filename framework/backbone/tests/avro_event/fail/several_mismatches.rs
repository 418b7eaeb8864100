//! Every mismatch is reported, not just the first.

#[derive(serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[serde(rename_all = "camelCase")]
#[avro(schema = "tests/schemas/orders/order-created-v1.avsc")]
pub struct OrderCreated {
    pub id: String,
    pub customer: String,
    pub quantity: u32,
    pub price: i64,
    pub note: Option<i64>,
    pub state: String,
    pub tags: Vec<Option<String>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub enum OrderState {
    Placed,
    Paid,
    Shipped,
}

fn main() {}
