//! Run with `cargo run -p backbone-cli -- dev up` in one terminal, then in another
//! `BACKBONE_PROFILE=development cargo run -p backbone --example exactly_once`.
//!
//! Exactly once, consume-transform-produce: with `Consumer::exactly_once()`, what a handler
//! publishes and the offsets it consumed commit in one Kafka transaction; readers see the outputs
//! `read_committed` (backbone's consumers and probes do). A crash between the two can neither lose
//! an output nor write one twice. The transactional id is derived per instance and zombies are
//! fenced by the group's generation (KIP-447).

use std::time::Duration;

use backbone::consume::{Consumer, dead_letter_topic};
use backbone::testing::Probe;
use backbone::{
    BoxedHandler, Config, HandlerError, Json, Key, Outgoing, Publisher, Service, State, TopicSpec,
};

#[derive(serde::Deserialize)]
struct Payment {
    cents: i64,
}

#[derive(Clone)]
struct Ledger {
    receipts: TopicSpec,
}

/// Turns each payment into a receipt, in the same transaction as the payment's offset.
async fn receipt(
    Key(id): Key<String>,
    Json(payment): Json<Payment>,
    State(ledger): State<Ledger>,
    out: Publisher,
) -> Result<(), HandlerError> {
    let body = format!(r#"{{"payment":"{id}","euros":{:.2}}}"#, payment.cents as f64 / 100.0);
    out.publish(&ledger.receipts, Outgoing::new("Receipt", id.as_bytes(), body.as_bytes())).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let service = format!("ledger{:06x}", fastrand::u32(..0xff_ffff));
    let payments = TopicSpec::public(&service, "payment", 1).partitions(3).build()?;
    let receipts = TopicSpec::public(&service, "receipt", 1).partitions(3).build()?;
    let dead_letters = dead_letter_topic(&service, &payments)?;
    let spec = Service::new(&service)
        .owns(&payments)
        .owns(&receipts)
        .owns(&dead_letters)
        .consumes(&payments)
        .spec()?;
    let config = Config::from_env(&service)?;
    let running = spec.start(&config).await?;
    let probe = Probe::new(&config, &receipts).await?;

    let ledger = Ledger { receipts: receipts.clone() };
    let consumer =
        Consumer::new(&running.context(), &payments, BoxedHandler::new(receipt), ledger)?.exactly_once();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consuming = tokio::spawn(consumer.run(async move {
        let _ = stopped.await;
    }));
    for i in 0..5 {
        let key = format!("payment-{i}");
        let body = format!(r#"{{"cents":{}}}"#, 250 * (i + 1));
        running
            .publisher()
            .publish(&payments, Outgoing::new("Payment", key.as_bytes(), body.as_bytes()))
            .await?;
    }
    for i in 0..5 {
        // Visible only once its transaction committed.
        let receipt = probe.expect_key(format!("payment-{i}"), Duration::from_secs(60)).await?;
        println!("committed receipt: {}", String::from_utf8_lossy(receipt.payload().unwrap_or_default()));
    }
    let _ = stop.send(());
    consuming.await??;
    running.shutdown().await?;
    Ok(())
}
