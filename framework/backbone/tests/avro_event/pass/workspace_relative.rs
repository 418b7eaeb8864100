//! A path relative to the workspace root, found by walking up from the crate's directory.

use backbone::schema::AvroEvent;

#[derive(serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[avro(schema = "framework/backbone/tests/schemas/demo/ping-v1.avsc")]
pub struct Ping {
    pub n: i64,
    pub label: String,
    pub ok: bool,
    pub ratio: f64,
    pub score: f32,
}

fn main() {
    assert_eq!(Ping::SCHEMA, include_str!("../../schemas/demo/ping-v1.avsc"));
}
