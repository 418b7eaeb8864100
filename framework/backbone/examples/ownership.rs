//! Run with `cargo run -p backbone --example ownership` (no broker needed: ownership is checked
//! before anything touches Kafka).
//!
//! Topics and ownership: each topic has one owner, named in its name (`<owner>.public.<event>-v<N>`,
//! `<owner>.private.<name>`). Only the owner writes it; other services may read its public topics
//! and never its private ones. Both rules are checked when a service is declared and again by the
//! publisher; Kafka ACLs (one SASL principal per service) enforce them on the broker too.

use backbone::{Config, Outgoing, PublishError, Publisher, Service, TopicError, TopicSpec};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Orders owns a public contract and a private topic for its own state.
    let order_created = TopicSpec::public("orders", "order-created", 1).partitions(6).build()?;
    let order_state = TopicSpec::private("orders", "order-state").compacted().build()?;
    println!("orders owns {order_created} (public) and {order_state} (private)");

    // Stock may read the public contract ...
    let stock = Service::new("stock").consumes(&order_created).spec()?;
    println!("stock consumes {order_created}: allowed");

    // ... but not Orders' private state: refused at declaration, naming the owner.
    match Service::new("stock").consumes(&order_state).spec() {
        Err(e @ TopicError::PrivateTopic { .. }) => println!("refused: {e}"),
        other => return Err(format!("reading a private topic was not refused: {other:?}").into()),
    }

    // Nor may it write Orders' topics: the publisher refuses before anything is sent.
    let publisher = Publisher::new(&Config::default(), &stock)?;
    let forged = Outgoing::new("OrderCreated", b"order-1", b"{}");
    match publisher.publish(&order_created, forged).await {
        Err(e @ PublishError::NotOwner { .. }) => println!("refused: {e}"),
        other => return Err(format!("writing another service's topic was not refused: {other:?}").into()),
    }
    Ok(())
}
