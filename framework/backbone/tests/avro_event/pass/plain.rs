//! A plain struct: field names as they are, primitive types.

use backbone::schema::AvroEvent;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[avro(schema = "tests/schemas/demo/ping-v1.avsc")]
pub struct Ping {
    pub n: i64,
    pub label: String,
    pub ok: bool,
    pub ratio: f64,
    pub score: f32,
}

fn main() {
    assert_eq!(Ping::SCHEMA, include_str!("../../schemas/demo/ping-v1.avsc"));
    assert_eq!(backbone::schema::full_name(Ping::schema()), "com.example.demo.Ping");
}
