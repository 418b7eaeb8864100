use backbone::TopicDecl;

const BALANCES: TopicDecl = TopicDecl::private("billing", "balances").compacted();

#[derive(Clone)]
pub struct Stock;

backbone::service! {
    pub stock: Stock {
        table BALANCES: String;
    }
}

fn main() {}
