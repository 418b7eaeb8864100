//! Tests of the layers, each alone around a handler.

use std::sync::Arc;
use std::time::Duration;

use tower::{Layer, ServiceExt as _};

use super::dead_letter::Letter;
use super::*;
use crate::handler::{IncomingEvent, Metadata};
use crate::publish::Publisher;
use crate::topic::TopicSpec;

fn context(offset: i64) -> HandlerContext<()> {
    HandlerContext::new(IncomingEvent::new("orders.public.order-created-v1", 0, offset), ())
}

#[tokio::test]
async fn a_panic_is_an_error_of_kind_panic() {
    async fn boom(_: Metadata) -> Result<(), HandlerError> {
        panic!("no stock table")
    }
    let service = CatchPanicLayer.layer(HandlerService::new(BoxedHandler::new(boom)));
    let err = service.oneshot(context(1)).await.unwrap_err();
    assert_eq!(err.kind(), "panic");
    assert!(!err.is_retriable());
    assert!(err.to_string().contains("no stock table"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_budget_bounds_every_attempt_together_and_fails_permanently() {
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = calls.clone();
    let slow = move |_: Metadata| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3)).await;
            Err::<(), _>(HandlerError::retriable("still down"))
        }
    };
    let retry = Retry {
        max_attempts: 100,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(1),
    };
    let service = BudgetLayer::new(Some(Duration::from_secs(10)))
        .layer(RetryLayer::new(retry).layer(HandlerService::new(BoxedHandler::named("slow", slow))));
    let started = tokio::time::Instant::now();
    let err = service.oneshot(context(3)).await.unwrap_err();
    assert_eq!(err.kind(), "budget");
    assert!(!err.is_retriable(), "past its budget the event is dead-lettered, not retried");
    assert_eq!(started.elapsed(), Duration::from_secs(10), "cut at the budget, not after 100 attempts");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3, "attempts at 0, 4 and 8 s");

    // Within the budget, the inner outcome stands; without one, the layer does nothing.
    let quick = |_: Metadata| async { Ok::<(), HandlerError>(()) };
    let within = BudgetLayer::new(Some(Duration::from_secs(1)))
        .layer(HandlerService::new(BoxedHandler::named("quick", quick)));
    within.oneshot(context(4)).await.unwrap();
    let unbounded = BudgetLayer::new(None).layer(HandlerService::new(BoxedHandler::named("quick", quick)));
    unbounded.oneshot(context(5)).await.unwrap();
}

#[tokio::test]
async fn retries_stop_at_the_budget_and_count_attempts() {
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = calls.clone();
    let flaky = move |_: Metadata| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err::<(), _>(HandlerError::retriable("database down"))
        }
    };
    let retry = Retry {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    };
    let service = RetryLayer::new(retry).layer(HandlerService::new(BoxedHandler::named("flaky", flaky)));
    let err = service.oneshot(context(7)).await.unwrap_err();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(err.attempts(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_times_out_retriably() {
    async fn slow(_: Metadata) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(())
    }
    let service =
        TimeoutLayer::new(Duration::from_secs(1)).layer(HandlerService::new(BoxedHandler::new(slow)));
    let err = service.oneshot(context(2)).await.unwrap_err();
    assert_eq!(err.kind(), "timeout");
    assert!(err.is_retriable());
    assert!(err.to_string().contains("longer than 1s"), "{err}");

    // Within the limit, the handler's own outcome passes through untouched.
    async fn quick(_: Metadata) -> Result<(), HandlerError> {
        Err(HandlerError::permanent("no such order"))
    }
    let service =
        TimeoutLayer::new(Duration::from_secs(1)).layer(HandlerService::new(BoxedHandler::new(quick)));
    let err = service.oneshot(context(3)).await.unwrap_err();
    assert!(!err.is_retriable());
    assert_eq!(err.to_string(), "no such order");
}

#[tokio::test]
async fn the_correlation_id_is_the_header_or_the_position() {
    async fn echo(_: Metadata) -> Result<(), HandlerError> {
        Err(HandlerError::permanent(crate::trace::correlation_id().unwrap_or_default()))
    }
    let service = CorrelationLayer.layer(HandlerService::new(BoxedHandler::new(echo)));
    let err = service.clone().oneshot(context(5)).await.unwrap_err();
    assert_eq!(err.to_string(), "orders.public.order-created-v1:0:5");
    let tagged = HandlerContext::new(
        IncomingEvent::new("t", 0, 1).with_header(crate::publish::headers::CORRELATION_ID, "req-9"),
        (),
    );
    assert_eq!(service.oneshot(tagged).await.unwrap_err().to_string(), "req-9");
}

#[test]
fn a_dead_letter_is_bounded_and_truncated_when_too_large() {
    use crate::headers::dead_letter as h;
    let header = |letter: &Letter<'_>, name: &str| {
        letter.headers.iter().find(|(n, _)| n == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let mut event = IncomingEvent::new("t", 2, 9).with_key("k").with_payload(vec![7u8; 900_000]);
    for i in 0..5_000 {
        event = event.with_header(format!("h{i}"), [1u8; 100]);
    }
    let error = HandlerError::permanent("x".repeat(100_000)).with_kind("undecodable");
    // Fits: the payload is whole; the headers and the message are cut anyway.
    let letter = Letter::new(&event, &error, "reserve", false, 1_000_000);
    assert!(!letter.truncated);
    assert_eq!(letter.payload.len(), 900_000);
    let copied = letter.headers.iter().filter(|(n, _)| n.starts_with(h::ORIGINAL_PREFIX)).count();
    assert!(copied <= DeadLetterLayer::MAX_COPIED_HEADERS, "{copied}");
    assert_eq!(header(&letter, h::HEADERS_DROPPED).unwrap(), (5_000 - copied).to_string());
    assert_eq!(header(&letter, h::ERROR_MESSAGE).unwrap().len(), DeadLetterLayer::MAX_ERROR_BYTES);
    assert_eq!(header(&letter, h::ORIGIN_OFFSET).unwrap(), "9");
    assert_eq!(header(&letter, h::TRUNCATED), None);

    // Over the producer's limit: truncated from the start, saying so and how large it was.
    let letter = Letter::new(&event, &error, "reserve", false, 500_000);
    assert!(letter.truncated);
    assert_eq!(letter.payload.len(), DeadLetterLayer::TRUNCATED_PAYLOAD_BYTES);
    assert_eq!(header(&letter, h::TRUNCATED).unwrap(), "true");
    assert_eq!(header(&letter, h::ORIGINAL_SIZE).unwrap(), "900000");
    assert_eq!(header(&letter, h::ORIGIN_KEY).unwrap(), "k");
    // Or when asked (the broker refused the whole one).
    let small = IncomingEvent::new("t", 0, 1).with_key("k".repeat(5_000)).with_payload("p");
    let letter = Letter::new(&small, &error, "reserve", true, 1_000_000);
    assert!(letter.truncated);
    assert_eq!(letter.key.len(), DeadLetterLayer::TRUNCATED_KEY_BYTES);
    assert_eq!(header(&letter, h::ORIGINAL_KEY_SIZE).unwrap(), "5000");
}

#[tokio::test(start_paused = true)]
async fn a_permanent_dead_letter_error_is_a_fatal_reason_and_retried_slowly() {
    // The service does not own the dead-letter topic: every write fails the same way.
    let config = crate::Config { bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
    let spec = crate::Service::new("stock").spec().unwrap();
    let publisher = Publisher::new(&config, &spec).unwrap();
    let health = publisher.health().clone();
    let dlq = TopicSpec::private("orders", "dlq.t").build().unwrap();
    let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = attempts.clone();
    let failing = move |_: Metadata| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Err::<(), _>(HandlerError::permanent("no such order")) }
    };
    let component = format!("dead-letters:{}", dlq.name());
    let service = DeadLetterLayer::new(dlq, publisher, "reserve", Retry::default())
        .layer(HandlerService::new(BoxedHandler::named("reserve", failing)));
    let write = tokio::spawn(service.oneshot(context(4)));
    tokio::time::sleep(Duration::from_secs(95)).await;
    assert!(!write.is_finished(), "the event is not done while its dead letter is unwritten");
    let reason = health.snapshot().degraded.get(&component).cloned();
    let reason = reason.unwrap_or_else(|| format!("{:?}", health.snapshot()));
    assert!(reason.starts_with("fatal:"), "{reason}");
    assert!(reason.contains("orders.public.order-created-v1:0:4"), "{reason}");
    assert!(reason.contains("may not publish"), "{reason}");
    write.abort();
}

#[tokio::test]
async fn shared_layers_apply_outermost_first() {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tag = |name: &'static str| {
        let log = log.clone();
        tower::util::MapRequestLayer::new(move |cx: HandlerContext<()>| {
            log.lock().unwrap().push(name);
            cx
        })
    };
    let layers = Layers::new().layer(tag("outer")).layer(tag("inner"));
    async fn ok(_: Metadata) {}
    let service = layers.apply(BoxCloneSyncService::new(HandlerService::new(BoxedHandler::new(ok))));
    service.oneshot(context(0)).await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["outer", "inner"]);
}

#[test]
fn a_retry_topic_follows_its_source_contract() {
    use super::naming::contract_topic;
    assert_eq!(contract_topic("stock.private.retry.orders.public.order-v1"), "orders.public.order-v1");
    assert_eq!(contract_topic("orders.public.order-v1"), "orders.public.order-v1");
    assert_eq!(contract_topic("stock.private.commands"), "stock.private.commands");
}
