#[derive(serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[serde(rename_all = "camelCase")]
#[avro(schema = "tests/schemas/orders/order-created-v1.avsc")]
pub struct OrderCreated {
    pub id: String,
    pub customer_id: String,
    pub quantity: i32,
    pub price: i64,
    pub discount: i64,
    pub note: Option<String>,
    pub state: OrderState,
    pub tags: Vec<String>,
    pub placed_at: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub enum OrderState {
    Placed,
    Paid,
    Shipped,
}

fn main() {}
