//! Run with `cargo run -p backbone-cli -- dev up` in one terminal, then in another
//! `BACKBONE_PROFILE=development cargo run -p backbone --example quickstart`.
//!
//! Declares the Orders service and its public topic, starts it (refusing weak producer settings,
//! provisioning the topic), publishes one keyed event durably and shuts down, flushing.

use backbone::{Config, Outgoing, Service, TopicSpec};

#[tokio::main]
async fn main() -> backbone::Result<()> {
    let order_created = TopicSpec::public("orders", "order-created", 1).partitions(6).build()?;
    let orders = Service::new("orders").owns(&order_created).spec()?;
    let config = Config::from_env(orders.name())?;

    let running = orders.start(&config).await?;
    let delivery = running
        .publisher()
        .publish(
            &order_created,
            Outgoing::new("OrderCreated", b"order-1", br#"{"product":"jumpers","quantity":2}"#),
        )
        .await?;
    println!("written to {order_created} at {delivery} (partition:offset, the consistency token)");
    running.shutdown().await
}
