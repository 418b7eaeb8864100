//! The console's routes driven without a socket, over fixed snapshots: what exists read-only,
//! the CSRF check, escaping, security headers; and the parsers the pages rely on.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use backbone::{Config, Service, TopicSpec};
use backbone_estate::manifest::Estate;
use tokio::sync::watch;
use tower::ServiceExt as _;

use super::collect::Snapshot;
use super::groups::{GroupState, Member, PartitionLag, parse_assignment};
use super::server::{Console, router};
use super::topics::{PartitionState, TopicState};
use super::{pages, schemas};

const HOSTILE: &str = "<script>alert(1)</script>";

fn estate() -> Estate {
    let orders = TopicSpec::public("shop", "order", 1).build().unwrap();
    Estate::of([Service::new("shop").owns(&orders).consumer(&orders, "shop.audit", false).spec().unwrap()])
        .unwrap()
}

fn snapshot() -> Snapshot {
    let topic = |name: &str| TopicState {
        name: name.into(),
        partitions: vec![PartitionState {
            id: 0,
            leader: 1,
            replicas: vec![1],
            isr: vec![1],
            low: 0,
            high: 7,
        }],
    };
    Snapshot {
        at: Some(SystemTime::now()),
        took: Duration::from_millis(3),
        brokers: vec![(1, "127.0.0.1:9092".into())],
        topics: vec![topic("shop.public.order-v1"), topic("shop.private.dlq.shop.public.order-v1")],
        groups: vec![GroupState {
            name: HOSTILE.into(),
            state: "Stable".into(),
            members: vec![Member {
                id: "m-1".into(),
                client_id: "shop-1".into(),
                host: "10.0.0.1".into(),
                assignment: vec![("shop.public.order-v1".into(), vec![0])],
            }],
            lags: vec![PartitionLag {
                topic: "shop.public.order-v1".into(),
                partition: 0,
                committed: 4,
                uncommitted: false,
                end: 7,
                lag: 3,
                seconds: Some(42.0),
            }],
        }],
        drift: [("shop.public.order-v1".to_owned(), vec!["retention.ms: 1 → 2".to_owned()])].into(),
        history: [(HOSTILE.to_owned(), vec![0, 1, 3])].into(),
        metrics: Default::default(),
        sizes: [("shop.public.order-v1".to_owned(), 3 * 1024 * 1024 / 2)].into(),
        error: None,
    }
}

fn console(allow_replay: bool) -> (Arc<Console>, watch::Sender<Arc<Snapshot>>) {
    let (tx, rx) = watch::channel(Arc::new(snapshot()));
    let mut config = Config::default();
    // Nothing listens here: a test that reached Kafka or the registry would fail, not hang.
    config.bootstrap_servers = "127.0.0.1:1".into();
    config.schema_registry_url = "http://user:hunter2@127.0.0.1:1/apis/ccompat/v7".into();
    (Arc::new(Console::with_snapshot(config, Arc::new(estate()), rx, allow_replay)), tx)
}

async fn get(console: &Arc<Console>, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    send(console, Request::get(path).body(Body::empty()).unwrap()).await
}

async fn send(console: &Arc<Console>, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = router(console.clone()).oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
    (status, headers, String::from_utf8_lossy(&bytes).into_owned())
}

fn replay_post(token: &str, site: &str) -> Request<Body> {
    replay_post_once(token, site, &uuid::Uuid::new_v4().simple().to_string(), "0")
}

fn replay_post_once(token: &str, site: &str, nonce: &str, offsets: &str) -> Request<Body> {
    Request::post("/replay/shop.private.dlq.shop.public.order-v1")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", site)
        .body(Body::from(format!("csrf={token}&nonce={nonce}&offsets={offsets}")))
        .unwrap()
}

#[tokio::test]
async fn read_only_has_no_route_that_changes_anything() {
    let (c, _tx) = console(false);
    for path in ["/replay/shop.private.dlq.shop.public.order-v1?offsets=all"] {
        assert_eq!(get(&c, path).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(send(&c, replay_post(&c.csrf, "same-origin")).await.0, StatusCode::NOT_FOUND);
    let (_, _, page) = get(&c, "/dead-letters/shop.private.dlq.shop.public.order-v1").await;
    assert!(!page.contains("/replay/"), "no replay form when read-only");
}

#[tokio::test]
async fn a_replay_without_the_consoles_token_or_from_another_site_is_refused() {
    let (c, _tx) = console(true);
    let (status, _, body) = send(&c, replay_post("not-the-token", "same-origin")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("CSRF"), "{body}");
    let (status, _, _) = send(&c, replay_post(&c.csrf, "cross-site")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let truncated = &c.csrf[..c.csrf.len() - 1];
    assert_eq!(send(&c, replay_post(truncated, "same-origin")).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_confirmation_submitted_twice_replays_once() {
    let (c, _tx) = console(true);
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    // The first submission is taken (and refused for its offsets, before anything is read).
    let (status, _, _) = send(&c, replay_post_once(&c.csrf, "same-origin", &nonce, "5-3")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = send(&c, replay_post_once(&c.csrf, "same-origin", &nonce, "0")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _, _) = send(&c, replay_post_once(&c.csrf, "same-origin", "short", "0")).await;
    assert_eq!(status, StatusCode::CONFLICT, "a made-up nonce");
}

#[tokio::test]
async fn pages_escape_what_they_show_and_send_security_headers() {
    let (c, _tx) = console(false);
    for path in ["/", "/topics", "/groups", "/dead-letters"] {
        let (status, headers, page) = get(&c, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!page.contains(HOSTILE), "{path} shows a group name unescaped");
        assert!(headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
        assert_eq!(headers["x-frame-options"], "DENY");
        assert!(!page.contains("hunter2"), "{path} shows the registry's password");
    }
    let (_, _, groups) = get(&c, "/groups").await;
    assert!(groups.contains("&lt;script&gt;"), "the hostile name is shown, escaped");
    let (_, _, topics) = get(&c, "/topics").await;
    assert!(topics.contains("drift") && topics.contains("retention.ms"), "drift is marked");
    assert!(topics.contains("1.5 MiB"), "sizes are shown");
}

#[tokio::test]
async fn the_groups_page_shows_lag_and_the_live_stream_carries_the_same_values() {
    let (c, _tx) = console(false);
    let (_, _, page) = get(&c, "/groups").await;
    assert!(page.contains(">3<") && page.contains("42 s"), "lag 3, 42 s old");
    let live: serde_json::Value = serde_json::from_str(&pages::live_json(&snapshot())).unwrap();
    let cell =
        |k: &str| live["cells"][format!("lag\u{1f}{HOSTILE}{k}")].as_str().unwrap_or_default().to_owned();
    assert_eq!(cell(""), "3");
    assert_eq!(cell("\u{1f}shop.public.order-v1\u{1f}0"), "3");
    assert!(live["sparks"][HOSTILE].as_str().unwrap().split(' ').count() == 3, "{live}");
}

#[tokio::test]
async fn unknown_and_non_dead_letter_topics_are_not_found() {
    let (c, _tx) = console(true);
    assert_eq!(get(&c, "/dead-letters/shop.public.order-v1").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&c, "/dead-letters/nope.private.dlq.x").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&c, "/dead-letters/shop.private.dlq.shop.public.order-v1/99").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&c, "/no-such-page").await.0, StatusCode::NOT_FOUND);
    let (status, _, body) = get(&c, "/replay/shop.private.dlq.shop.public.order-v1?offsets=5-3").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("backwards"), "{body}");
}

#[test]
fn assignments_parse_and_malformed_ones_stop_where_they_break() {
    let mut bytes = vec![0, 1, 0, 0, 0, 2];
    for (topic, partitions) in [("a.public.x-v1", vec![2i32, 0]), ("b", vec![5])] {
        bytes.extend((topic.len() as i16).to_be_bytes());
        bytes.extend(topic.as_bytes());
        bytes.extend((partitions.len() as i32).to_be_bytes());
        for p in partitions {
            bytes.extend(p.to_be_bytes());
        }
    }
    bytes.extend([0, 0, 0, 0]); // user data
    assert_eq!(parse_assignment(&bytes), vec![("a.public.x-v1".into(), vec![0, 2]), ("b".into(), vec![5])]);
    assert_eq!(
        parse_assignment(&bytes[..27]),
        vec![("a.public.x-v1".into(), vec![])],
        "cut inside a partition"
    );
    assert!(parse_assignment(&bytes[..12]).is_empty(), "cut inside a name");
    assert!(
        parse_assignment(&[0, 1, 0x7f, 0xff, 0xff, 0xff]).is_empty(),
        "a huge count with nothing after it"
    );
    assert!(parse_assignment(&[]).is_empty());
}

#[test]
fn subjects_are_grouped_by_event_and_diffed_by_line() {
    let n = schemas::named("orders.public.order-created-v2-value");
    assert_eq!(
        (n.family.as_str(), n.topic_version, n.topic.as_str()),
        ("orders.public.order-created", 2, "orders.public.order-created-v2")
    );
    assert_eq!(schemas::named("plain").topic_version, 0);
    let registry = schemas::Schemas::new("http://127.0.0.1:1", &Default::default()).unwrap();
    assert_eq!(registry.path(&["subjects", "a/b c?", "versions"]), "/subjects/a%2Fb%20c%3F/versions");
    let diff = schemas::diff("a\nb\n", "a\nc\n");
    assert_eq!(diff, vec![(' ', "a".into()), ('-', "b".into()), ('+', "c".into())]);
    // Far from a change, unchanged lines are left out.
    let before: String = (0..20).map(|i| format!("{i}\n")).collect();
    let after = before.replace("10\n", "ten\n");
    let diff = schemas::diff(&before, &after);
    assert_eq!(diff.first(), Some(&('…', String::new())));
    assert_eq!(diff.iter().filter(|(tag, _)| *tag == ' ').count(), 6, "{diff:?}");
}

#[test]
fn metrics_sum_the_event_families_and_endpoints_parse() {
    let text = "# HELP backbone_events_handled_total Events handled.\n\
                # TYPE backbone_events_handled_total counter\n\
                backbone_events_handled_total{handler=\"a\",messaging_destination_name=\"t\"} 5\n\
                backbone_events_handled_total{handler=\"b\",messaging_destination_name=\"t\"} 7\n\
                backbone_events_failed_total 2\n\
                backbone_events_handled_totally_else 100\n\
                backbone_events_published_total{x=\"y\"} NaN\n";
    let sums = super::metrics::sums(text);
    assert_eq!(sums.get("handled"), Some(&12.0));
    assert_eq!(sums.get("failed"), Some(&2.0));
    assert_eq!(sums.get("published"), None, "NaN is no count");
    use super::metrics::parse_endpoint;
    assert_eq!(
        parse_endpoint("orders=http://o:8080/metrics").unwrap(),
        ("orders".into(), "http://o:8080/metrics".into())
    );
    for bad in ["orders", "=http://o/metrics", "orders=o:8080/metrics"] {
        assert!(parse_endpoint(bad).is_err(), "{bad}");
    }
}
