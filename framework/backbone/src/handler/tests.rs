use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::extract::short_type_name;
use super::*;
use crate::headers;
use crate::publish::{PublishError, Publisher};

type Seen = Arc<Mutex<Vec<String>>>;

fn order_event() -> IncomingEvent {
    IncomingEvent::new("orders.public.order-created-v1", 3, 42)
        .with_key("order-1")
        .with_payload("two widgets")
        .with_timestamp(1_700_000_000_000)
        .with_header(headers::EVENT_TYPE, "OrderCreated")
        .with_header(headers::CORRELATION_ID, "req-7")
}

async fn reserve(
    Event(order): Event<String>,
    Key(k): Key<String>,
    meta: Metadata,
    State(s): State<Arc<AtomicUsize>>,
) -> Result<(), HandlerError> {
    assert_eq!(order, "two widgets");
    assert_eq!(k, "order-1");
    assert_eq!(meta.topic(), "orders.public.order-created-v1");
    assert_eq!((meta.partition(), meta.offset()), (3, 42));
    assert_eq!(meta.timestamp(), Some(1_700_000_000_000));
    assert_eq!(meta.header(headers::EVENT_TYPE), Some(&b"OrderCreated"[..]));
    assert_eq!(meta.header("absent"), None);
    s.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test]
async fn a_boxed_handler_sees_payload_key_metadata_and_state() {
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = BoxedHandler::new(reserve);
    assert_eq!(handler.name(), "reserve");
    let cx = HandlerContext::new(order_event(), calls.clone());
    handler.call(cx.clone()).await.unwrap();
    handler.clone().call(cx).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct OrderCreated {
    id: String,
    quantity: u32,
}

#[tokio::test]
async fn json_decodes_and_bad_json_names_the_reason() {
    let good = IncomingEvent::new("t", 0, 0).with_payload(r#"{"id":"o-1","quantity":2}"#);
    let Json(order) = Json::<OrderCreated>::from_event(&HandlerContext::new(good, ())).unwrap();
    assert_eq!(order, OrderCreated { id: "o-1".into(), quantity: 2 });

    let bad = IncomingEvent::new("t", 0, 0).with_payload(r#"{"id":"o-1"}"#);
    let err = Json::<OrderCreated>::from_event(&HandlerContext::new(bad.clone(), ())).unwrap_err();
    assert_eq!(err.kind(), "undecodable-payload");
    assert!(!err.is_retriable());
    let message = err.to_string();
    assert!(message.contains("Json<OrderCreated>"), "{message}");
    assert!(message.contains("missing field `quantity`"), "{message}");

    // Through a handler: a permanent failure with the extraction error inside.
    async fn handle(Json(_): Json<OrderCreated>) {}
    let err = BoxedHandler::new(handle).call(HandlerContext::new(bad, ())).await.unwrap_err();
    assert!(!err.is_retriable());
    assert_eq!(err.kind(), "undecodable-payload");
    assert!(matches!(err.as_extract(), Some(ExtractError::Undecodable { part: Part::Payload, .. })));
    assert!(err.to_string().contains("missing field `quantity`"));
}

#[tokio::test]
async fn absent_parts_give_none_and_malformed_ones_still_fail() {
    async fn handle(
        State(seen): State<Seen>,
        event: Option<Event<String>>,
        key: Option<Key<String>>,
        cid: Option<CorrelationId>,
        publisher: Option<Publisher>,
    ) {
        seen.lock().unwrap().push(format!(
            "{:?} {:?} {:?} {}",
            event.map(|e| e.0),
            key.map(|k| k.0),
            cid.map(|c| c.0),
            publisher.is_some()
        ));
    }
    let seen = Seen::default();
    let tombstone = IncomingEvent::new("t", 0, 0);
    BoxedHandler::new(handle).call(HandlerContext::new(tombstone, seen.clone())).await.unwrap();
    assert_eq!(seen.lock().unwrap().as_slice(), ["None None None false"]);

    let corrupt = IncomingEvent::new("t", 0, 1).with_payload(vec![0xff, 0xfe]);
    let err = BoxedHandler::new(handle).call(HandlerContext::new(corrupt.clone(), seen)).await.unwrap_err();
    assert_eq!(err.kind(), "undecodable-payload");
    assert!(err.to_string().contains("as `String`"), "{err}");

    // Every failure, when asked for.
    let cx = HandlerContext::new(corrupt, ());
    let r = Result::<Event<String>, ExtractError>::from_event(&cx).unwrap();
    assert_eq!(r.unwrap_err().kind(), "undecodable-payload");
    let r = Result::<Key<String>, ExtractError>::from_event(&cx).unwrap();
    assert_eq!(r.unwrap_err(), ExtractError::MissingKey);
}

#[tokio::test]
async fn errors_keep_whether_they_are_retriable() {
    async fn down() -> Result<(), HandlerError> {
        Err(HandlerError::retriable("database unavailable"))
    }
    async fn refused() -> Result<(), HandlerError> {
        Err(HandlerError::permanent("order exceeds the limit"))
    }
    async fn timed_out() -> Result<(), PublishError> {
        Err(PublishError::TimedOut { topic: "t".into(), timeout: std::time::Duration::from_secs(1) })
    }
    async fn closed() -> Result<(), PublishError> {
        Err(PublishError::Closed)
    }
    let call = |h: BoxedHandler| h.call(HandlerContext::new(IncomingEvent::new("t", 0, 0), ()));

    let err = call(BoxedHandler::new(down)).await.unwrap_err();
    assert!(err.is_retriable());
    assert_eq!((err.kind(), err.to_string().as_str()), ("handler", "database unavailable"));

    let err = call(BoxedHandler::new(refused)).await.unwrap_err();
    assert!(!err.is_retriable());

    let err = call(BoxedHandler::new(timed_out)).await.unwrap_err();
    assert!(err.is_retriable());
    assert_eq!(err.kind(), "publish");
    assert!(matches!(err.downcast_ref::<PublishError>(), Some(PublishError::TimedOut { .. })));

    let err = call(BoxedHandler::new(closed)).await.unwrap_err();
    assert!(!err.is_retriable());
    assert_eq!(err.with_kind("shutdown").kind(), "shutdown");

    let err = HandlerError::from(crate::Error::from(PublishError::TimedOut {
        topic: "t".into(),
        timeout: std::time::Duration::from_secs(1),
    }));
    assert!(err.is_retriable());
    assert_eq!(err.kind(), "publish");
}

#[tokio::test]
async fn zero_argument_and_unit_handlers_work() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    async fn tick() {
        CALLS.fetch_add(1, Ordering::SeqCst);
    }
    async fn tock() -> Result<(), HandlerError> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    let cx = HandlerContext::new(IncomingEvent::new("t", 0, 0), ());
    BoxedHandler::new(tick).call(cx.clone()).await.unwrap();
    BoxedHandler::new(tock).call(cx.clone()).await.unwrap();

    // A closure, named explicitly.
    let closure = BoxedHandler::named("inline", |_meta: Metadata| async {
        CALLS.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(closure.name(), "inline");
    closure.call(cx).await.unwrap();
    assert_eq!(CALLS.load(Ordering::SeqCst), 3);
    assert!(BoxedHandler::<()>::new(|| async {}).name().ends_with("{{closure}}"));
}

#[test]
fn correlation_id_comes_from_its_header_or_the_trace_id() {
    let extract =
        |event: IncomingEvent| CorrelationId::from_event(&HandlerContext::new(event, ())).map(|c| c.0);
    assert_eq!(extract(order_event()).unwrap(), "req-7");

    let traced = IncomingEvent::new("t", 0, 0)
        .with_header(headers::TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    assert_eq!(extract(traced).unwrap(), "4bf92f3577b34da6a3ce929d0e0e4736");

    let err = extract(IncomingEvent::new("t", 0, 0)).unwrap_err();
    assert_eq!(err.kind(), "missing-header");
    assert!(err.is_missing());

    let bad = IncomingEvent::new("t", 0, 0).with_header(headers::CORRELATION_ID, vec![0xff]);
    assert_eq!(extract(bad).unwrap_err().kind(), "bad-header");
}

/// The task's correlation id (what the handler's publishes carry) and the `CorrelationId`
/// extractor follow one rule: they agree whenever the event carries an id, and the task falls back
/// to the event's origin only where the extractor has none.
#[tokio::test]
async fn the_tasks_correlation_id_and_the_extractor_agree() {
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let cases = [
        (order_event(), "req-7"),
        // A traced event from a producer that sets no correlation header.
        (
            IncomingEvent::new("t", 0, 5).with_header(headers::TRACEPARENT, traceparent),
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            IncomingEvent::new("t", 0, 5)
                .with_header(headers::TRACEPARENT, traceparent)
                .with_header(headers::CORRELATION_ID, "req-8"),
            "req-8",
        ),
        (IncomingEvent::new("t", 2, 5), "t:2:5"),
        (IncomingEvent::new("t", 2, 5).with_header(headers::TRACEPARENT, "garbage"), "t:2:5"),
        (IncomingEvent::new("t", 2, 5).with_header(headers::CORRELATION_ID, vec![0xff]), "t:2:5"),
    ];
    for (event, expected) in cases {
        let correlation = crate::trace::Correlation::of_event(Arc::new(event.clone()));
        let task =
            crate::trace::scope_correlation(correlation, async { crate::trace::correlation_id() }).await;
        assert_eq!(task.as_deref(), Some(expected), "{event:?}");
        match CorrelationId::from_event(&HandlerContext::new(event.clone(), ())) {
            Ok(CorrelationId(id)) => assert_eq!(id, expected, "{event:?}"),
            Err(e) => assert!(
                expected == format!("{}:{}:{}", event.topic(), event.partition(), event.offset()),
                "the extractor failed ({e}) where the task has the carried id {expected}"
            ),
        }
    }
}

#[tokio::test]
async fn a_publisher_argument_gets_the_contexts_publisher() {
    async fn forward(publisher: Publisher, State(seen): State<Seen>) {
        seen.lock().unwrap().push(publisher.service().to_owned());
    }
    let seen = Seen::default();
    let event = IncomingEvent::new("t", 0, 0);
    let err = BoxedHandler::new(forward).call(HandlerContext::new(event.clone(), seen.clone())).await;
    assert_eq!(err.unwrap_err().kind(), "no-publisher");

    let spec = crate::Service::new("stock").spec().unwrap();
    // Creating a producer does not connect; nothing is published.
    let config = crate::Config { bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
    let publisher = Publisher::new(&config, &spec).unwrap();
    let cx = HandlerContext::new(event, seen.clone()).with_publisher(publisher);
    BoxedHandler::new(forward).call(cx).await.unwrap();
    assert_eq!(seen.lock().unwrap().as_slice(), ["stock"]);
}

#[test]
fn events_copy_consumed_messages() {
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};
    let headers = OwnedHeaders::new()
        .insert(Header { key: "a", value: Some(&b"1"[..]) })
        .insert(Header { key: "null", value: None::<&[u8]> })
        .insert(Header { key: "a", value: Some(&b"2"[..]) });
    let message = OwnedMessage::new(
        Some(b"body".to_vec()),
        Some(b"k".to_vec()),
        "orders.public.order-created-v1".into(),
        Timestamp::CreateTime(1_700_000_000_000),
        2,
        7,
        Some(headers),
    );
    let event = IncomingEvent::from(&message);
    let expected = IncomingEvent::new("orders.public.order-created-v1", 2, 7)
        .with_key("k")
        .with_payload("body")
        .with_timestamp(1_700_000_000_000)
        .with_header("a", "1")
        .with_header("null", "")
        .with_header("a", "2");
    assert_eq!(event, expected);
    assert_eq!(event.header("a"), Some(&b"2"[..]), "the last of a repeated header");

    let bare = OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, None);
    let event = IncomingEvent::from_message(&bare);
    assert_eq!((event.key(), event.payload(), event.timestamp()), (None, None, None));
    assert_eq!(event.headers().len(), 0);
}

#[test]
fn type_names_lose_their_module_paths() {
    assert_eq!(short_type_name("alloc::vec::Vec<my_app::events::OrderCreated>"), "Vec<OrderCreated>");
    assert_eq!(short_type_name("backbone::handler::Json<(u8, a::B)>"), "Json<(u8, B)>");
    assert_eq!(short_type_name("String"), "String");
}

/// Consumers read both forms: events of older versions (all four metadata headers) and minimal
/// ones (`traceparent` alone, the rest derived), and agree on what they mean.
#[test]
fn metadata_reads_the_same_from_the_full_and_the_minimal_form() {
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let topic = "orders.public.order-created-v1";
    let legacy = IncomingEvent::new(topic, 0, 1)
        .with_payload("{}")
        .with_header(headers::EVENT_TYPE, "OrderCreated")
        .with_header(headers::PRODUCER, "orders")
        .with_header(headers::CORRELATION_ID, trace_id)
        .with_header(headers::TRACEPARENT, traceparent);
    let minimal =
        IncomingEvent::new(topic, 0, 2).with_payload("{}").with_header(headers::TRACEPARENT, traceparent);
    for event in [legacy, minimal] {
        assert_eq!(event.event_type().as_deref(), Some("OrderCreated"), "{event:?}");
        assert_eq!(event.producer(), Some("orders"), "{event:?}");
        let id = CorrelationId::from_event(&HandlerContext::new(event.clone(), ())).map(|c| c.0);
        assert_eq!(id.unwrap(), trace_id, "{event:?}");
    }

    // A header wins over what the topic's name says (an older writer, another type on the topic).
    let other =
        IncomingEvent::new(topic, 0, 3).with_payload("{}").with_header(headers::EVENT_TYPE, "OrderCancelled");
    assert_eq!(other.event_type().as_deref(), Some("OrderCancelled"));
    let replayed = IncomingEvent::new(topic, 0, 4).with_header(headers::PRODUCER, "backbone-cli");
    assert_eq!(replayed.producer(), Some("backbone-cli"));
    // A framed payload without the header: the type is the schema's (the registry says it).
    let framed = IncomingEvent::new(topic, 0, 5).with_payload([0u8, 0, 0, 0, 7, 2]);
    assert_eq!(framed.event_type(), None);
    // A private topic names no type; a schemaless event there keeps its header.
    let private = IncomingEvent::new("stock.private.levels", 0, 6).with_payload("{}");
    assert_eq!(private.event_type(), None);
    assert_eq!(private.producer(), Some("stock"));
    // A name of another shape names no owner.
    assert_eq!(IncomingEvent::new("legacy-topic", 0, 7).producer(), None);
}
