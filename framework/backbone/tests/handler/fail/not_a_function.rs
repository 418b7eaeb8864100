#[backbone::handler]
struct Reserve;

fn main() {}
