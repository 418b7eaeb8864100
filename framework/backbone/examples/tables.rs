//! Run with `cargo run -p backbone-cli -- dev up` in one terminal, then in another
//! `BACKBONE_PROFILE=development cargo run -p backbone --example tables`.
//!
//! Tables: a keyed view of a compacted topic (what Kafka Streams calls a KTable). Writes go to the
//! topic and the view follows it; a tombstone deletes. The view is restored before the service is
//! ready (reads answer `NotReady`, a 503 with `Retry-After`, meanwhile), and a reader can wait for
//! its own write with the publish's partition and offset (read-your-writes).

use std::time::Duration;

use backbone::app::App;
use backbone::table::Table;
use backbone::{Config, Outgoing, TopicSpec};

#[derive(Clone)]
struct Shop {
    levels: Table<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let service = format!("shop{:06x}", fastrand::u32(..0xff_ffff));
    let levels = TopicSpec::private(&service, "stock-levels").partitions(3).compacted().build()?;
    let config = Config::from_env(&service)?;
    let started = App::<Shop>::new(&service)
        .owns(&levels)
        .table::<String>(&levels)
        .start_with(&config, |tables| Ok(Shop { levels: tables.get::<String>(&levels)? }))
        .await?;
    started.ready().await; // the view has caught up with the topic
    let shop = started.state().clone();
    let publisher = started.publisher().clone();

    for (product, count) in [("jumper", "12"), ("socks", "40"), ("scarf", "3")] {
        let written = publisher
            .publish(&levels, Outgoing::new("StockLevel", product.as_bytes(), count.as_bytes()))
            .await?;
        // Read-your-writes: wait until the view has applied this very write.
        shop.levels.wait_for_delivery(written, Duration::from_secs(30)).await?;
        println!("{product}: {:?} (written at {written})", shop.levels.get(product)?);
    }
    let gone = publisher.publish(&levels, Outgoing::tombstone("StockLevel", b"scarf")).await?;
    shop.levels.wait_for_delivery(gone, Duration::from_secs(30)).await?;
    println!("scarf after its tombstone: {:?}", shop.levels.get("scarf")?);
    started.shutdown().await?;
    Ok(())
}
