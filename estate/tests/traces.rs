//! One order's trace, exported over OTLP to a receiver in the test: the client's `POST
//! /v1/orders`, Orders' publish, Stock's handlers and publishes, and Orders' handler are spans of
//! one trace, each the child of the one before, across Kafka headers and HTTP; the spans carry
//! OpenTelemetry's messaging and HTTP attributes.
//!
//! (Its own test binary: it installs the process's subscriber, and the services' topics have fixed
//! names.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, Request, StatusCode};
use backbone::trace::TraceContextLayer;
use backbone::trace::otlp::OtlpLayer;
use backbone_testkit::unique;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::json;
use tokio::sync::Notify;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

mod common;
use common::{call, config, send};

const WITHIN: Duration = Duration::from_secs(120);

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    name: String,
    kind: SpanKind,
    attributes: HashMap<String, String>,
}

/// What an OTLP/HTTP receiver got, and a signal for each export.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    arrived: Arc<Notify>,
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// `POST /v1/traces` in OTLP's protobuf encoding.
async fn receive(State(receiver): State<Receiver>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            let attributes = span
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), text(kv.value.as_ref().and_then(|v| v.value.as_ref()))))
                .collect();
            spans.push(Span {
                service: service.clone(),
                kind: span.kind(),
                trace_id: span.trace_id,
                span_id: span.span_id,
                parent_span_id: span.parent_span_id,
                name: span.name,
                attributes,
            });
        }
    }
    receiver.spans.lock().unwrap().extend(spans);
    receiver.arrived.notify_waiters();
    (StatusCode::OK, Vec::new())
}

/// The chain of spans from the span named `first` down, following children named as `names` says
/// (each the child of the one before), within the trace `trace_id`.
fn chain<'a>(
    spans: &'a [Span],
    trace_id: &[u8],
    names: &[(&str, SpanKind)],
) -> Result<Vec<&'a Span>, String> {
    let in_trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let mut found: Vec<&Span> = Vec::new();
    for (name, kind) in names {
        let parent = found.last().map(|p| p.span_id.clone());
        let next = in_trace.iter().find(|s| {
            s.name == *name && s.kind == *kind && parent.as_ref().is_none_or(|p| s.parent_span_id == *p)
        });
        match next {
            Some(span) => found.push(span),
            None => {
                let seen: Vec<_> = in_trace.iter().map(|s| (&s.name, s.kind)).collect();
                return Err(format!(
                    "no {kind:?} span `{name}` under the one before; the trace has {seen:?}"
                ));
            }
        }
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_order_is_one_trace_from_the_http_post_through_both_services() {
    // The receiver, on loopback.
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let app =
        axum::Router::new().route("/v1/traces", axum::routing::post(receive)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The process's subscriber: trace contexts and export (every level, so publish spans too).
    let otlp = OtlpLayer::http(&endpoint, "estate-test").expect("exporter");
    let export = otlp.handle();
    tracing_subscriber::registry().with(TraceContextLayer).with(otlp).init();

    let config = config();
    orders::app().provision(&config).await.unwrap();
    stock::app().provision(&config).await.unwrap();
    let (orders, stock) = tokio::try_join!(orders::start(&config), stock::start(&config)).unwrap();
    tokio::time::timeout(WITHIN, async { tokio::join!(orders.ready(), stock.ready()) }).await.expect("ready");

    let product = unique("traced");
    let (status, _) =
        call(&stock.router(), Method::PUT, &format!("/v1/stock/{product}"), Some(json!({"quantity": 5})))
            .await;
    assert_eq!(status, StatusCode::OK);
    // The client's own span: the whole trace continues it.
    let client = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let order = unique("order");
    let body = json!({"id": order, "customerId": "c", "product": product, "quantity": 2, "price": 100});
    let request = Request::post("/v1/orders")
        .header("content-type", "application/json")
        .header("traceparent", client)
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, placed) = send(&orders.router(), request).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let (status, settled) =
        call(&orders.router(), Method::GET, &format!("/v1/orders/{order}/validated?timeout=60000"), None)
            .await;
    assert_eq!((status, settled["state"].as_str()), (StatusCode::OK, Some("VALIDATED")), "{settled}");

    // Everything closed so far goes out; what is still open (the last handler's span closes after
    // its commit) goes with a later export: wait for those, never for a fixed time.
    let trace_id = (0..32)
        .step_by(2)
        .map(|i| u8::from_str_radix(&client[3 + i..5 + i], 16).unwrap())
        .collect::<Vec<_>>();
    let orders_topic = orders::ORDERS.spec().unwrap().name().to_owned();
    let names =
        [("POST /v1/orders", SpanKind::Server), (&*format!("send {orders_topic}"), SpanKind::Producer)];
    let deadline = tokio::time::Instant::now() + WITHIN;
    let spans = loop {
        let arrived = receiver.arrived.notified();
        let flushing = export.clone();
        tokio::task::spawn_blocking(move || flushing.flush()).await.unwrap().expect("flush");
        let spans = receiver.spans.lock().unwrap().clone();
        if full_chain(&spans, &trace_id, &names).is_ok() {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            full_chain(&spans, &trace_id, &names).unwrap_err()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), arrived).await;
    };
    let chain = full_chain(&spans, &trace_id, &names).unwrap();
    eprintln!("{} spans in the trace", spans.iter().filter(|s| s.trace_id == trace_id).count());
    for span in &chain {
        eprintln!("{:?} {} {:?}", span.kind, span.name, span.attributes.get("handler"));
        assert_eq!(span.service, "estate-test");
    }
    let server = chain[0];
    assert_eq!(
        server.parent_span_id,
        vec![0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31],
        "the client's span"
    );
    assert_eq!(server.attributes["http.request.method"], "POST");
    assert_eq!(server.attributes["http.route"], "/v1/orders");
    assert_eq!(server.attributes["http.response.status_code"], "201");
    let consumers: Vec<&Span> = chain.iter().copied().filter(|s| s.kind == SpanKind::Consumer).collect();
    let handlers: Vec<&str> = consumers.iter().map(|s| s.attributes["handler"].as_str()).collect();
    assert_eq!(handlers.first(), Some(&"route_order"), "Stock takes the order first: {handlers:?}");
    assert_eq!(handlers.last(), Some(&"record_validation"), "Orders settles it last: {handlers:?}");
    for consumer in &consumers {
        assert_eq!(consumer.attributes["messaging.system"], "kafka");
        assert_eq!(consumer.attributes["messaging.operation.type"], "process");
        for key in
            ["messaging.destination.partition.id", "messaging.kafka.offset", "messaging.consumer.group.name"]
        {
            assert!(consumer.attributes.contains_key(key), "{key} on {consumer:?}");
        }
    }
    let producers = chain.iter().filter(|s| s.kind == SpanKind::Producer);
    for producer in producers {
        assert_eq!(producer.attributes["messaging.operation.type"], "send");
        assert!(producer.attributes.contains_key("messaging.destination.name"));
    }

    orders.shutdown().await.expect("orders stops cleanly");
    stock.shutdown().await.expect("stock stops cleanly");
}

/// The order's path: the POST and Orders' publish (`start`), then consumer and producer children
/// in turn (a topic has more than one consumer: tables are handlers too) (a handler may publish more than one event) down to Orders' handler
/// that settles the order (`record_validation`).
fn full_chain<'a>(
    spans: &'a [Span],
    trace_id: &[u8],
    start: &[(&str, SpanKind)],
) -> Result<Vec<&'a Span>, String> {
    fn down<'a>(spans: &'a [Span], trace_id: &[u8], path: &mut Vec<&'a Span>) -> bool {
        let last = *path.last().unwrap();
        if last.attributes.get("handler").is_some_and(|h| h == "record_validation") {
            return true;
        }
        if path.len() > 16 {
            return false;
        }
        let want = if last.kind == SpanKind::Consumer { SpanKind::Producer } else { SpanKind::Consumer };
        for child in spans
            .iter()
            .filter(|s| s.trace_id == trace_id && s.parent_span_id == last.span_id && s.kind == want)
        {
            path.push(child);
            if down(spans, trace_id, path) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = chain(spans, trace_id, start)?;
    if down(spans, trace_id, &mut path) {
        return Ok(path);
    }
    let seen: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .map(|s| (s.kind, s.name.as_str(), s.attributes.get("handler").map(String::as_str)))
        .collect();
    Err(format!("no path from the order's publish to `record_validation`; the trace has {seen:?}"))
}
