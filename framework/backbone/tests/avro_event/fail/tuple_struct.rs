#[derive(serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[avro(schema = "tests/schemas/demo/ping-v1.avsc")]
pub struct Ping(i64, String);

fn main() {}
