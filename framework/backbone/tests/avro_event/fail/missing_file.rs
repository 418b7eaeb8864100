#[derive(serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[avro(schema = "tests/schemas/orders/no-such-event-v1.avsc")]
pub struct NoSuchEvent {
    pub id: String,
}

fn main() {}
