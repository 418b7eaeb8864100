//! Run with `cargo run -p backbone-cli -- dev up` in one terminal, then in another
//! `BACKBONE_PROFILE=development cargo run -p backbone --example dead_letters`.
//!
//! Dead letters: an event that cannot be decoded, or whose handler fails permanently (or past its
//! retry budget), goes to `<service>.private.dlq.<topic>` with its origin in headers, and the
//! partition flows on. `backbone dlq list --service <name>` shows them; `backbone dlq replay`
//! sends chosen ones, in order, to the service's retry topic `<service>.private.retry.<topic>`, for
//! the handler that failed them alone (`App` declares and consumes it; a bare `Consumer` like this
//! one needs `.owns(&retry_topic(…))` and `consumer.retries()?` run beside it).

use std::sync::Arc;
use std::time::Duration;

use backbone::consume::{Consumer, dead_letter_topic};
use backbone::layer::dead_letter_headers as h;
use backbone::testing::Probe;
use backbone::{BoxedHandler, Config, HandlerError, Json, Key, Outgoing, Service, State, TopicSpec};
use tokio::sync::Semaphore;

#[derive(serde::Deserialize)]
struct Payment {
    cents: i64,
}

/// Refunds are not payments: refused permanently (retrying would not help). Each payment booked
/// adds a permit to `booked`.
async fn book(
    Key(id): Key<String>,
    Json(payment): Json<Payment>,
    State(booked): State<Arc<Semaphore>>,
) -> Result<(), HandlerError> {
    if payment.cents < 0 {
        return Err(HandlerError::permanent(format!("{id}: a negative payment ({} cents)", payment.cents)));
    }
    println!("{id}: booked {} cents", payment.cents);
    booked.add_permits(1);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let service = format!("ledger{:06x}", fastrand::u32(..0xff_ffff));
    let payments = TopicSpec::public(&service, "payment", 1).partitions(1).build()?;
    let dead_letters = dead_letter_topic(&service, &payments)?;
    let spec = Service::new(&service).owns(&payments).owns(&dead_letters).consumes(&payments).spec()?;
    let config = Config::from_env(&service)?;
    let running = spec.start(&config).await?;
    let letters = Probe::from_beginning(&config, &dead_letters).await?;

    let booked = Arc::new(Semaphore::new(0));
    let consumer = Consumer::new(&running.context(), &payments, BoxedHandler::new(book), booked.clone())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consuming = tokio::spawn(consumer.run(async move {
        let _ = stopped.await;
    }));
    let events: [(&str, &[u8]); 4] = [
        ("p-1", br#"{"cents":1200}"#),
        ("p-2", br#"{"cents":-300}"#), // refused by the handler
        ("p-3", b"not json"),          // cannot be decoded
        ("p-4", br#"{"cents":99}"#),   // still handled: the partition flows on
    ];
    for (key, body) in events {
        running.publisher().publish(&payments, Outgoing::new("Payment", key.as_bytes(), body)).await?;
    }
    for _ in 0..2 {
        let letter = letters.next(Duration::from_secs(60)).await?;
        let header = |name| String::from_utf8_lossy(letter.header(name).unwrap_or_default()).into_owned();
        println!(
            "dead letter: {}:{} offset {} key {} — {} ({}) after {} attempt(s) in `{}`",
            header(h::ORIGIN_TOPIC),
            header(h::ORIGIN_PARTITION),
            header(h::ORIGIN_OFFSET),
            header(h::ORIGIN_KEY),
            header(h::ERROR_KIND),
            header(h::ERROR_MESSAGE),
            header(h::ATTEMPTS),
            header(h::HANDLER),
        );
    }
    // The good payments, p-1 and p-4 (after both poison ones, on the same partition), were booked.
    let _ = booked.acquire_many(2).await?;
    let _ = stop.send(());
    consuming.await??;
    running.shutdown().await?;
    Ok(())
}
