#[derive(serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[avro(schema = "tests/schemas/demo/either-v1.avsc")]
pub struct Either {
    pub value: String,
}

fn main() {}
