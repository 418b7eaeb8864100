#[derive(serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[avro(schema = "tests/schemas/demo/blob-v1.avsc")]
pub struct Blob {
    pub data: Vec<u8>,
}

fn main() {}
