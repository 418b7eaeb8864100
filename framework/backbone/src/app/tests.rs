use tower::ServiceExt as _;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};

use super::start::health_routes;
use super::*;
use crate::health::HealthState;

async fn reserve(_event: crate::Event<String>) {}

#[test]
fn the_spec_declares_dead_letter_topics_and_what_tables_read() {
    let orders = TopicSpec::public("orders", "order-created", 1).build().unwrap();
    let levels = TopicDecl::private("stock", "levels").compacted();
    let prices = TopicDecl::public("pricing", "prices", 1).compacted();
    let spec = App::<()>::new("stock")
        .consume(&orders, reserve)
        // A second handler of the same source: one dead-letter topic, one retry topic.
        .consume_with(&orders, BoxedHandler::named("audit", reserve), HandlerOptions::new(), |c| c)
        .table::<String>(levels)
        .table::<String>(prices)
        .spec()
        .unwrap();
    let mut owned: Vec<&str> = spec.owned_topics().iter().map(TopicSpec::name).collect();
    owned.sort_unstable();
    assert_eq!(
        owned,
        [
            "stock.private.dlq.orders.public.order-created-v1",
            "stock.private.dlq.pricing.public.prices-v1",
            "stock.private.dlq.stock.private.levels",
            "stock.private.levels",
            // Replays of the handlers' dead letters; tables have none (they re-read their topic).
            "stock.private.retry.orders.public.order-created-v1",
        ]
    );
    assert_eq!(spec.consumed_topics().len(), 3);
    // Every consumer's group, under the service's prefix: handlers, their retries, tables.
    let groups: Vec<(&str, &str)> =
        spec.consumers().iter().map(|c| (c.topic.as_str(), c.group.as_str())).collect();
    assert_eq!(
        groups,
        [
            ("orders.public.order-created-v1", "stock.reserve"),
            ("stock.private.retry.orders.public.order-created-v1", "stock.reserve.retry"),
            ("orders.public.order-created-v1", "stock.audit"),
            ("stock.private.retry.orders.public.order-created-v1", "stock.audit.retry"),
            ("stock.private.levels", "stock.table.stock.private.levels"),
            ("pricing.public.prices-v1", "stock.table.pricing.public.prices-v1"),
        ]
    );
}

#[test]
fn the_spec_carries_quotas_declared_groups_and_exactly_once() {
    let orders = TopicSpec::public("orders", "order-created", 1).build().unwrap();
    let quotas = Quotas { producer_byte_rate: Some(1 << 20), ..Quotas::default() };
    let spec = App::<()>::new("stock")
        .consume_with(
            &orders,
            BoxedHandler::named("reserve", reserve),
            HandlerOptions::new().group("reservations").exactly_once(),
            |c| c,
        )
        .quotas(quotas)
        .spec()
        .unwrap();
    assert_eq!(spec.quotas(), &quotas);
    let first = &spec.consumers()[0];
    assert_eq!((first.group.as_str(), first.exactly_once), ("reservations", true));
    assert_eq!(spec.consumers()[1].group, "reservations.retry");
    assert_eq!(ServiceSpec::from_json(&spec.to_json()).unwrap(), spec, "round trip");
}

#[test]
fn declaration_mistakes_surface_from_spec() {
    let err = App::<()>::new("stock").owns(TopicDecl::private("stock", "Bad Name")).spec().unwrap_err();
    assert!(matches!(err, TopicError::InvalidTopic { .. }), "{err}");

    let theirs = TopicDecl::private("orders", "state");
    let err = App::<()>::new("stock").table::<String>(theirs).spec().unwrap_err();
    assert!(err.to_string().contains("private topic of service `orders`"), "{err}");

    let err = App::<()>::new("stock").owns(theirs).spec().unwrap_err();
    assert!(err.to_string().contains("owned by service `orders`"), "{err}");
}

async fn status(router: &Router, path: &str) -> (StatusCode, Option<HeaderValue>) {
    let request = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    (response.status(), response.headers().get(header::RETRY_AFTER).cloned())
}

#[tokio::test]
async fn health_routes_follow_the_health_state() {
    let health = HealthState::default();
    let router = health_routes::<()>(&health).with_state(());
    assert_eq!(status(&router, "/readyz").await, (StatusCode::OK, None));
    assert_eq!(status(&router, "/healthz").await.0, StatusCode::OK);

    health.starting("consumer:stock.reserve", "waiting for partitions");
    assert_eq!(
        status(&router, "/readyz").await,
        (StatusCode::SERVICE_UNAVAILABLE, Some(HeaderValue::from_static("1")))
    );
    health.ready("consumer:stock.reserve");
    assert_eq!(status(&router, "/readyz").await.0, StatusCode::OK);

    health.degrade("publisher", "all brokers are down");
    health.starting("consumer:stock.reserve", "waiting for partitions");
    assert_eq!(status(&router, "/healthz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status(&router, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    // Liveness does not follow Kafka: restarting the process cures no broker outage.
    assert_eq!(status(&router, "/livez").await.0, StatusCode::OK);
    health.ready("consumer:stock.reserve");
    health.recover("publisher");
    assert_eq!(status(&router, "/healthz").await.0, StatusCode::OK);
}
