#[derive(serde::Serialize, serde::Deserialize, backbone::Event)]
#[serde(rename_all = "camelCase")]
#[event(topic = ("stock", "order-checked", 1), key = passed, schema = "tests/schemas/shop/order-checked-v1.avsc")]
pub struct OrderChecked {
    pub order_id: String,
    pub passed: bool,
}

fn main() {}
