#[derive(serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
pub struct Ping {
    pub n: i64,
}

fn main() {}
