use backbone::Event;

#[backbone::handler]
async fn log(Event(text): Event<String>) {
    println!("{text}");
}

fn main() {}
