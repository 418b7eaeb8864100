use backbone::TopicDecl;

const ORDERS: TopicDecl = TopicDecl::private("shop", "orders");

#[derive(Clone)]
pub struct Stock;

backbone::service! {
    pub stock: Stock {
        owns ORDERS;
    }
}

fn main() {}
