//! `/metrics` on a service built with `App`, against a real broker: every family is there, the
//! counters and the handler's histogram move as events flow, lag rises while the handler is held
//! and falls to 0 once it is released, readiness follows the lag budget, and the exposition passes
//! Prometheus's own `promtool check metrics`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use backbone::app::{App, HandlerOptions};
use backbone::handler::BoxedHandler;
use backbone::{Event, HandlerError, Outgoing, State, TopicSpec};
use backbone_testkit::{shared_kafka, unique};
use tokio::sync::{Semaphore, mpsc};

/// The handler's gate (the test hands out permits) and where it reports each event it handled.
#[derive(Clone)]
struct Gate {
    permits: Arc<Semaphore>,
    handled: mpsc::UnboundedSender<String>,
    /// Whether the `flaky` event has failed once.
    failed_once: Arc<AtomicBool>,
}

/// Waits for a permit, then reports the event; `fail` fails permanently (a dead letter), `flaky`
/// fails retriably once (a retry); neither waits for a permit.
async fn work(Event(body): Event<String>, State(gate): State<Gate>) -> Result<(), HandlerError> {
    match body.as_str() {
        "fail" => return Err(HandlerError::permanent("refused")),
        "flaky" if !gate.failed_once.swap(true, Ordering::SeqCst) => {
            return Err(HandlerError::retriable("not yet"));
        }
        "flaky" => {}
        _ => gate.permits.acquire().await.expect("the gate stays open").forget(),
    }
    let _ = gate.handled.send(body);
    Ok(())
}

/// An exactly-once handler that takes every event: its transactions are what is measured.
async fn relay(Event(_body): Event<String>) -> Result<(), HandlerError> {
    Ok(())
}

async fn call(router: &axum::Router, path: &str) -> (u16, String) {
    use tower::ServiceExt as _;
    let response = router.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The value of the sample `name` whose labels include every one of `labels` (`k="v"`).
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        (metric == name && labels.iter().all(|l| rest.contains(l))).then(|| value.parse().ok())?
    })
}

/// Polls `/metrics` until `check` holds (within 30 s): what librdkafka's statistics report has no
/// event to wait on.
async fn metrics_until(router: &axum::Router, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = call(router, "/metrics").await;
        assert_eq!(status, 200);
        if check(&text) {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} within 30 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `promtool check metrics` on `text`: exit status 0 (lint findings are printed, not failures, as
/// long as the exposition parses), or a clear skip when promtool is not installed.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "SKIPPED: promtool not installed (Debian package `prometheus`); exposition not checked"
            );
            return;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check metrics failed:\n{report}\n{text}");
    assert!(report.trim().is_empty(), "promtool lint findings:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_events_flow_and_lag_gates_readiness() {
    let config = common::config(shared_kafka().bootstrap_servers());
    let service = unique("metrics");
    let topic = TopicSpec::private(&service, "work").partitions(1).build().unwrap();
    let (handled, mut seen) = mpsc::unbounded_channel();
    let gate = Gate { permits: Arc::new(Semaphore::new(0)), handled, failed_once: Arc::default() };
    let levels = TopicSpec::private(&service, "levels").compacted().partitions(1).build().unwrap();
    let relayed = TopicSpec::private(&service, "relay").partitions(1).build().unwrap();
    let app = App::<Gate>::new(&service)
        .owns(&topic)
        .owns(&levels)
        .owns(&relayed)
        .table::<String>(&levels)
        .consume_with(&topic, BoxedHandler::new(work), HandlerOptions::new(), |c| {
            c.client_setting("statistics.interval.ms", "100").max_ready_lag(5)
        })
        .consume_with(
            &relayed,
            BoxedHandler::named("relay", relay),
            HandlerOptions::new().exactly_once(),
            |c| c,
        );
    let started = app.start(&config, gate.clone()).await.expect("starts");
    let router = started.router();
    tokio::time::timeout(Duration::from_secs(60), started.ready()).await.expect("ready within 60 s");
    let group = format!("{service}.work");
    let (topic_label, group_label) = (
        format!("messaging_destination_name=\"{}\"", topic.name()),
        format!("messaging_consumer_group_name=\"{group}\""),
    );
    let by_handler = [topic_label.as_str(), group_label.as_str(), "handler=\"work\""];
    let levels_label = format!("messaging_destination_name=\"{}\"", levels.name());

    // Events flow: 3 published, 3 handled.
    gate.permits.add_permits(3);
    for i in 0..3 {
        let body = format!("event-{i}");
        started.publisher().publish(&topic, Outgoing::new("Work", b"k", body.as_bytes())).await.unwrap();
    }
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(30), seen.recv()).await.expect("handled within 30 s");
    }
    assert_eq!(call(&router, "/healthz").await.0, 200);
    let text = metrics_until(&router, "3 events counted as handled", |t| {
        sample(t, "backbone_events_handled_total", &by_handler) == Some(3.0)
    })
    .await;
    assert_eq!(sample(&text, "backbone_events_consumed_total", &by_handler), Some(3.0));
    assert_eq!(sample(&text, "backbone_handler_duration_seconds_count", &by_handler), Some(3.0));
    assert_eq!(sample(&text, "backbone_events_failed_total", &by_handler), Some(0.0));
    assert_eq!(sample(&text, "backbone_events_dead_lettered_total", &by_handler), Some(0.0));
    assert_eq!(sample(&text, "backbone_events_published_total", &[&topic_label]), Some(3.0));
    assert_eq!(sample(&text, "backbone_publish_duration_seconds_count", &[&topic_label]), Some(3.0));
    assert_eq!(sample(&text, "backbone_consumer_assigned_partitions", &[&group_label]), Some(1.0));
    assert!(sample(&text, "backbone_consumer_rebalances_total", &[&group_label]) >= Some(1.0), "{text}");
    assert_eq!(sample(&text, "backbone_consumer_commit_failures_total", &[&group_label]), Some(0.0));
    for family in ["backbone_producer_queue_messages", "backbone_producer_throttle_seconds"] {
        assert!(sample(&text, family, &[]).is_some(), "{family} missing:\n{text}");
    }
    // The health check was counted: by route, method and status.
    let scraped =
        ["http_route=\"/healthz\"", "http_request_method=\"GET\"", "http_response_status_code=\"200\""];
    assert!(sample(&text, "backbone_http_requests_total", &scraped) >= Some(1.0), "{text}");
    assert!(sample(&text, "backbone_http_request_duration_seconds_count", &scraped) >= Some(1.0), "{text}");
    // At least once: the offsets are committed (every second), and the commit is timed.
    metrics_until(&router, "an offset commit timed", |t| {
        sample(t, "backbone_consumer_commit_duration_seconds_count", &[&group_label]) >= Some(1.0)
    })
    .await;
    // Exactly once: 2 events relayed in transactions, committed and timed.
    for body in ["a", "b"] {
        started.publisher().publish(&relayed, Outgoing::new("Work", b"k", body.as_bytes())).await.unwrap();
    }
    let relay_group = format!("messaging_consumer_group_name=\"{service}.relay\"");
    let relay_handler = [relay_group.as_str(), "handler=\"relay\""];
    let text = metrics_until(&router, "the relayed events handled and their transactions committed", |t| {
        sample(t, "backbone_events_handled_total", &relay_handler) == Some(2.0)
            && sample(t, "backbone_transactions_committed_total", &[&relay_group]) >= Some(1.0)
    })
    .await;
    let committed = sample(&text, "backbone_transactions_committed_total", &[&relay_group]).unwrap();
    assert_eq!(
        sample(&text, "backbone_transaction_duration_seconds_count", &[&relay_group]),
        Some(committed)
    );
    assert_eq!(
        sample(&text, "backbone_consumer_commit_duration_seconds_count", &[&relay_group]),
        Some(committed),
        "{text}"
    );
    assert_eq!(sample(&text, "backbone_transactions_aborted_total", &[&relay_group]), Some(0.0));
    assert!(sample(&text, "backbone_transaction_duration_seconds_sum", &[&relay_group]) > Some(0.0));

    let text = metrics_until(&router, "lag 0 after the first events", |t| {
        sample(
            t,
            "backbone_consumer_lag_records",
            &[&group_label, "messaging_destination_partition_id=\"0\""],
        ) == Some(0.0)
    })
    .await;
    assert_eq!(sample(&text, "backbone_consumer_lag_seconds", &[&group_label]), Some(0.0));
    promtool_check(&text);

    // A failure (dead-lettered) and a retry; a table entry.
    for body in ["fail", "flaky"] {
        started.publisher().publish(&topic, Outgoing::new("Work", b"k", body.as_bytes())).await.unwrap();
    }
    started.publisher().publish(&levels, Outgoing::new("Level", b"sku-1", b"7")).await.unwrap();
    let flaky =
        tokio::time::timeout(Duration::from_secs(30), seen.recv()).await.expect("handled within 30 s");
    assert_eq!(flaky.as_deref(), Some("flaky"));
    let text = metrics_until(&router, "the dead letter, the retry and the table entry counted", |t| {
        sample(t, "backbone_events_dead_lettered_total", &by_handler) == Some(1.0)
            && sample(t, "backbone_events_handled_total", &by_handler) == Some(5.0)
            && sample(t, "backbone_table_entries", &[&levels_label]) == Some(1.0)
    })
    .await;
    assert_eq!(sample(&text, "backbone_events_failed_total", &by_handler), Some(1.0));
    assert_eq!(sample(&text, "backbone_events_retried_total", &by_handler), Some(1.0));
    assert_eq!(sample(&text, "backbone_table_restore_remaining_records", &[&levels_label]), Some(0.0));
    assert_eq!(sample(&text, "backbone_table_restore_remaining_seconds", &[&levels_label]), Some(0.0));
    assert_eq!(sample(&text, "backbone_consumer_paused_partitions", &[&group_label]), Some(0.0));

    // The handler held: 20 more events wait, lag rises past the budget of 5, not ready.
    for i in 0..20 {
        let body = format!("held-{i}");
        started.publisher().publish(&topic, Outgoing::new("Work", b"k", body.as_bytes())).await.unwrap();
    }
    let lagging = |t: &str| sample(t, "backbone_consumer_lag_records", &[&group_label]) == Some(20.0);
    let text = metrics_until(&router, "lag of 20 records while the handler is held", lagging).await;
    assert!(sample(&text, "backbone_consumer_lag_seconds", &[&group_label]) > Some(0.0), "{text}");
    let (status, body) = call(&router, "/readyz").await;
    assert_eq!(status, 503, "not ready while lag exceeds the budget: {body}");
    assert!(body.contains(&format!("lag:{group}")) && body.contains("over the budget of 5"), "{body}");
    promtool_check(&text);

    // Released: all handled, lag back to 0, ready again.
    gate.permits.add_permits(20);
    for _ in 0..20 {
        tokio::time::timeout(Duration::from_secs(30), seen.recv()).await.expect("handled within 30 s");
    }
    let text = metrics_until(&router, "lag 0 once released", |t| {
        sample(t, "backbone_consumer_lag_records", &[&group_label]) == Some(0.0)
    })
    .await;
    assert_eq!(sample(&text, "backbone_consumer_lag_seconds", &[&group_label]), Some(0.0));
    assert_eq!(sample(&text, "backbone_events_handled_total", &by_handler), Some(25.0));
    assert_eq!(sample(&text, "backbone_events_published_total", &[&topic_label]), Some(25.0));
    tokio::time::timeout(Duration::from_secs(30), started.health().wait_until(|h| h.is_ready()))
        .await
        .expect("ready again within 30 s of the lag falling");
    let (status, body) = call(&router, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    promtool_check(&text);

    started.shutdown().await.expect("a clean shutdown");
}
