#[derive(Clone)]
pub struct Stock;

backbone::service! {
    pub stock: Stock {
        consumes OrderPlaced;
    }
}

fn main() {}
