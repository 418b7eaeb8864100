//! Run with `cargo run -p backbone-cli -- dev up` in one terminal, then in another
//! `BACKBONE_PROFILE=development cargo run -p backbone --example schemas`.
//!
//! Schemas and evolution: public events are Avro contracts (`.avsc` files) bound to Rust types at
//! compile time and registered in the schema registry when the service starts. Consumers decode by
//! the writer's schema id into their own type, so a compatible change (a new field with a default)
//! works both ways; a breaking change is refused before anything is produced, naming the field,
//! and belongs on a new `-v<N+1>` topic (`backbone::migrate` keeps old readers fed).

use std::time::Duration;

use backbone::schema::{Registry, SubjectStrategy};
use backbone::testing::Probe;
use backbone::{AvroEvent, Config, Service, TopicSpec};

/// The writer's version of the contract.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, AvroEvent)]
#[avro(schema = "examples/schemas/order-placed-v1.avsc")]
struct OrderPlaced {
    id: String,
    product: String,
    quantity: i32,
}

/// A newer reader's version: one more field, with a default, so v1 data still decodes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, AvroEvent)]
#[serde(rename = "OrderPlaced", rename_all = "camelCase")]
#[avro(schema = "examples/schemas/order-placed-v2.avsc")]
struct OrderPlacedV2 {
    id: String,
    product: String,
    quantity: i32,
    gift_note: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let service = format!("shop{:06x}", fastrand::u32(..0xff_ffff));
    let placed = TopicSpec::public(&service, "order-placed", 1).build()?;
    let config = Config::from_env(&service)?;
    // Registers OrderPlaced's schema (after a compatibility check) before anything is produced.
    let running =
        Service::new(&service).owns(&placed).event::<OrderPlaced>(&placed).spec()?.start(&config).await?;
    let probe = Probe::new(&config, &placed).await?;
    let order = OrderPlaced { id: "order-1".into(), product: "jumper".into(), quantity: 2 };
    running.publisher().publish_event(&placed, b"order-1", &order).await?;

    // A v2 reader decodes the v1 event: the new field takes its default.
    let read: OrderPlacedV2 = probe.expect_event("order-1", Duration::from_secs(60)).await?;
    println!("v1 event read as v2: {read:?}");

    // A breaking change (quantity from int to string) is refused, naming the field and the rule.
    let registry = Registry::for_config(&config)?;
    let subject = SubjectStrategy::TopicName.subject(placed.name(), "com.example.shop.OrderPlaced");
    let breaking = r#"{"type":"record","name":"OrderPlaced","namespace":"com.example.shop","fields":[
        {"name":"id","type":"string"},{"name":"product","type":"string"},{"name":"quantity","type":"string"}]}"#;
    match registry.register(&subject, breaking).await {
        Err(e) => println!("refused: {e}"),
        Ok(id) => return Err(format!("a breaking schema was registered as {id:?}").into()),
    }
    running.shutdown().await?;
    Ok(())
}
