#[derive(Clone)]
pub struct Stock;

backbone::service! {
    pub Stock2: Stock {}
}

fn main() {}
