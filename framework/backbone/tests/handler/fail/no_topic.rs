use backbone::Metadata;

#[backbone::handler]
async fn log(meta: Metadata) {
    println!("{}", meta.offset());
}

fn main() {}
