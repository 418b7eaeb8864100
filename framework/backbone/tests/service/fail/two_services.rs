#[derive(Clone)]
pub struct Stock;

backbone::service! {
    pub stock: Stock {}
    pub orders: Stock {}
}

fn main() {}
