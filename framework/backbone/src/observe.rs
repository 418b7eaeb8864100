//! Metrics: what a service built with [`App`](crate::app::App) serves on `/metrics`, in Prometheus
//! text exposition (format 0.0.4).
//!
//! **Why the `metrics` facade with `metrics-exporter-prometheus`** (rather than
//! `prometheus-client`): its counter and gauge handles ([`metrics::Counter`], [`metrics::Gauge`])
//! are created once (per partition, handler or topic) and then cost one atomic operation, with no
//! registry lookup and no lock; it renders the classic Prometheus text format that
//! `promtool check metrics` checks (`prometheus-client` writes OpenMetrics text); and it is the
//! facade the Rust ecosystem records into. The recorder is not installed globally: each service
//! ([`HealthState`](crate::health::HealthState)) has a registry of its own, so several services in
//! one process (tests) keep their numbers apart. The exporter's HTTP listener and push gateway are
//! left out (no second HTTP stack): `/metrics` is a route of the service's own router, beside
//! `/healthz` and `/readyz`. Histograms are this module's own [`DurationHistogram`] (fixed buckets
//! of atomics, rendered after the exporter's output): the exporter's keep every sample until
//! rendered, which at consume rates is megabytes between scrapes.
//!
//! # Families
//!
//! Labels follow OpenTelemetry's messaging attribute names: `messaging_destination_name` (the
//! topic), `messaging_consumer_group_name`, `messaging_destination_partition_id`, and `handler`.
//!
//! | Family | Type | Labels |
//! |---|---|---|
//! | `backbone_events_consumed_total` | counter | topic, group, handler |
//! | `backbone_events_handled_total` | counter | topic, group, handler |
//! | `backbone_events_failed_total` | counter | topic, group, handler |
//! | `backbone_events_retried_total` | counter | topic, group, handler |
//! | `backbone_events_dead_lettered_total` | counter | topic, group, handler |
//! | `backbone_handler_duration_seconds` | histogram | topic, group, handler |
//! | `backbone_consumer_lag_records` | gauge | topic, group, partition |
//! | `backbone_consumer_lag_seconds` | gauge | topic, group, partition |
//! | `backbone_consumer_rebalances_total` | counter | topic, group |
//! | `backbone_consumer_assigned_partitions` | gauge | topic, group |
//! | `backbone_consumer_commit_failures_total` | counter | topic, group |
//! | `backbone_consumer_commit_duration_seconds` | histogram | topic, group |
//! | `backbone_consumer_paused_partitions` | gauge | topic, group |
//! | `backbone_transactions_committed_total` | counter | topic, group |
//! | `backbone_transactions_aborted_total` | counter | topic, group |
//! | `backbone_transaction_duration_seconds` | histogram | topic, group |
//! | `backbone_table_restore_remaining_records` | gauge | topic, partition |
//! | `backbone_table_restore_remaining_seconds` | gauge | topic, partition |
//! | `backbone_table_entries` | gauge | topic, partition |
//! | `backbone_events_published_total` | counter | topic |
//! | `backbone_publish_failures_total` | counter | topic |
//! | `backbone_publish_duration_seconds` | histogram | topic |
//! | `backbone_producer_queue_messages` | gauge | — |
//! | `backbone_producer_throttle_seconds` | gauge | — |
//! | `backbone_http_requests_total` | counter | `http_route`, `http_request_method`, `http_response_status_code` |
//! | `backbone_http_request_duration_seconds` | histogram | `http_route`, `http_request_method`, `http_response_status_code` |
//!
//! Lag comes from librdkafka's statistics (`statistics.interval.ms`, default
//! [`STATISTICS_INTERVAL`] for consumers and the publisher; set it with
//! [`Consumer::client_setting`](crate::consume::Consumer::client_setting)): in records, the
//! partition's high watermark minus the next offset to handle; in seconds, the age (from its
//! timestamp) of the event in hand or last taken while records remain, 0 when none do. For a
//! `read_committed` consumer the end is the last stable offset; on a topic written in transactions
//! the commit marker after the last event occupies an offset, so a caught-up partition may show a
//! lag of 1 record there (size lag budgets generously). Before a partition's task has handled an
//! event, lag is counted from the group's committed offset.
//!
//! Per event, the consume path does two counter increments, one atomic store (the event's
//! timestamp, for lag in seconds), two clock reads and one histogram sample (two atomic additions),
//! on handles its partition's task cloned once: no lock, no allocation; failures, retries and dead letters count only on their own paths.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use metrics::{Counter, Gauge, Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// How often librdkafka reports statistics (lag, queue depth) unless `statistics.interval.ms` is set.
pub const STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

/// `client` with `statistics.interval.ms` set to [`STATISTICS_INTERVAL`] unless it is set already:
/// lag, the lag budget and the producer's gauges come from librdkafka's statistics.
pub(crate) fn with_statistics(mut client: rdkafka::ClientConfig) -> rdkafka::ClientConfig {
    if client.get("statistics.interval.ms").is_none() {
        client.set("statistics.interval.ms", STATISTICS_INTERVAL.as_millis().to_string());
    }
    client
}

/// Histogram buckets of durations, in seconds: 100 µs to 30 s.
pub const DURATION_BUCKETS: [f64; 15] =
    [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Label names (OpenTelemetry messaging attributes, dots as underscores).
pub(crate) const TOPIC: &str = "messaging_destination_name";
pub(crate) const GROUP: &str = "messaging_consumer_group_name";
pub(crate) const PARTITION: &str = "messaging_destination_partition_id";
pub(crate) const HANDLER: &str = "handler";

/// Every family: name, type, unit, help.
const FAMILIES: &[(&str, Kind, Unit, &str)] = &[
    ("backbone_events_consumed_total", Kind::Counter, Unit::Count, "Events taken from Kafka for a handler."),
    ("backbone_events_handled_total", Kind::Counter, Unit::Count, "Events done (handled or dead-lettered)."),
    (
        "backbone_events_failed_total",
        Kind::Counter,
        Unit::Count,
        "Events whose handler failed (after retries).",
    ),
    ("backbone_events_retried_total", Kind::Counter, Unit::Count, "Handler attempts after the first."),
    (
        "backbone_events_dead_lettered_total",
        Kind::Counter,
        Unit::Count,
        "Events written to the dead-letter topic.",
    ),
    (
        "backbone_handler_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time to handle an event, layers included.",
    ),
    (
        "backbone_consumer_lag_records",
        Kind::Gauge,
        Unit::Count,
        "High watermark minus the next offset to handle.",
    ),
    ("backbone_consumer_lag_seconds", Kind::Gauge, Unit::Seconds, "Age of the oldest unhandled event."),
    (
        "backbone_consumer_rebalances_total",
        Kind::Counter,
        Unit::Count,
        "Partition assignments and revocations.",
    ),
    (
        "backbone_consumer_assigned_partitions",
        Kind::Gauge,
        Unit::Count,
        "Partitions assigned to this consumer.",
    ),
    ("backbone_consumer_commit_failures_total", Kind::Counter, Unit::Count, "Offset commits that failed."),
    (
        "backbone_consumer_commit_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time for the group coordinator to take an offset commit (with exactly once: offsets and \
         transaction commit).",
    ),
    (
        "backbone_consumer_paused_partitions",
        Kind::Gauge,
        Unit::Count,
        "Partitions held by a dead letter that cannot be written.",
    ),
    (
        "backbone_transactions_committed_total",
        Kind::Counter,
        Unit::Count,
        "Exactly-once transactions committed.",
    ),
    ("backbone_transactions_aborted_total", Kind::Counter, Unit::Count, "Exactly-once transactions aborted."),
    (
        "backbone_transaction_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time from a transaction's first event to its commit.",
    ),
    (
        "backbone_table_restore_remaining_records",
        Kind::Gauge,
        Unit::Count,
        "Records a table partition has left to restore.",
    ),
    (
        "backbone_table_restore_remaining_seconds",
        Kind::Gauge,
        Unit::Seconds,
        "Estimated time a table partition needs to restore (NaN until it has progressed).",
    ),
    ("backbone_table_entries", Kind::Gauge, Unit::Count, "Entries in a table partition."),
    ("backbone_events_published_total", Kind::Counter, Unit::Count, "Events acknowledged by the brokers."),
    ("backbone_publish_failures_total", Kind::Counter, Unit::Count, "Publishes that failed."),
    (
        "backbone_publish_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time from publish to acknowledgement.",
    ),
    ("backbone_producer_queue_messages", Kind::Gauge, Unit::Count, "Messages in the producer's queue."),
    ("backbone_producer_throttle_seconds", Kind::Gauge, Unit::Seconds, "Brokers' average throttle time."),
    ("backbone_http_requests_total", Kind::Counter, Unit::Count, "HTTP requests answered."),
    (
        "backbone_http_request_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time to answer an HTTP request.",
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A service's metrics registry: hands out metric handles and renders `/metrics`. Clones share it.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Histograms by name, then by labels (rendered by [`Metrics::render`] after the exporter's).
    histograms: Mutex<BTreeMap<&'static str, BTreeMap<Labels, DurationHistogram>>>,
}

/// A series' labels: names and values.
type Labels = Vec<(&'static str, String)>;

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

static METADATA: Metadata<'static> = Metadata::new("backbone", Level::INFO, Some("backbone"));

impl Metrics {
    /// An empty registry with backbone's families described.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        for &(name, kind, unit, help) in FAMILIES {
            let (name, help) = (KeyName::from_const_str(name), SharedString::const_str(help));
            match kind {
                Kind::Counter => recorder.describe_counter(name, Some(unit), help),
                Kind::Gauge => recorder.describe_gauge(name, Some(unit), help),
                // Rendered here, with their help from `FAMILIES`.
                Kind::Histogram => {}
            }
        }
        Self { inner: Arc::new(Inner { recorder, handle, histograms: Mutex::default() }) }
    }

    /// The metrics in Prometheus text exposition format (what `/metrics` serves).
    pub fn render(&self) -> String {
        let mut text = self.inner.handle.render();
        let histograms = self.inner.histograms.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, series) in histograms.iter() {
            let help = FAMILIES.iter().find(|f| f.0 == *name).map_or("", |f| f.3);
            let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} histogram\n");
            for (labels, histogram) in series {
                histogram.render(&mut text, name, labels);
            }
            text.push('\n');
        }
        text
    }

    /// The counter `name` with `labels` (the same handle for the same name and labels). Create it
    /// once and keep it: the lookup takes a lock, incrementing it does not.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.inner.recorder.register_counter(&key(name, labels), &METADATA)
    }

    /// The gauge `name` with `labels` (see [`counter`](Self::counter)).
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.inner.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    /// The duration histogram `name` with `labels` (see [`counter`](Self::counter)).
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> DurationHistogram {
        let labels: Labels = labels.iter().map(|&(k, v)| (k, v.to_owned())).collect();
        let mut histograms = self.inner.histograms.lock().unwrap_or_else(PoisonError::into_inner);
        histograms.entry(name).or_default().entry(labels).or_default().clone()
    }
}

/// A histogram of durations in fixed buckets ([`DURATION_BUCKETS`], 100 µs to 30 s): a sample is
/// two atomic additions (its bucket, the sum), with no lock and no allocation. (The exporter's own
/// histograms keep every sample until they are rendered or an upkeep runs: at hundreds of
/// thousands of events a second, megabytes between scrapes.) Clones share the counts.
#[derive(Clone, Default)]
pub struct DurationHistogram(Arc<Cells>);

#[derive(Default)]
struct Cells {
    /// Per bucket (not cumulative), the last one past the largest bound (`+Inf`).
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl fmt::Debug for DurationHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurationHistogram").finish_non_exhaustive()
    }
}

impl DurationHistogram {
    /// Counts one duration.
    pub fn record(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS.partition_point(|&bound| bound < seconds);
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Appends the series' `_bucket` (cumulative), `_sum` and `_count` lines.
    fn render(&self, text: &mut String, name: &str, labels: &[(&'static str, String)]) {
        let mut prefix = String::new();
        for (k, v) in labels {
            let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = write!(prefix, "{k}=\"{v}\",");
        }
        let mut cumulative = 0;
        for (i, cell) in self.0.buckets.iter().enumerate() {
            cumulative += cell.load(Ordering::Relaxed);
            match DURATION_BUCKETS.get(i) {
                Some(bound) => {
                    let _ = writeln!(text, "{name}_bucket{{{prefix}le=\"{bound}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(text, "{name}_bucket{{{prefix}le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let labels = prefix.trim_end_matches(',');
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(text, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(text, "{name}_count{{{labels}}} {cumulative}");
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels.iter().map(|&(k, v)| Label::new(k, v.to_owned())).collect();
    Key::from_parts(name, labels)
}

/// A handler's counters and histogram, created once per consumer and cloned into each partition's
/// task.
#[derive(Clone)]
pub(crate) struct HandlerMetrics {
    pub(crate) consumed: Counter,
    pub(crate) handled: Counter,
    pub(crate) duration: DurationHistogram,
}

impl HandlerMetrics {
    pub(crate) fn new(metrics: &Metrics, topic: &str, group: &str, handler: &str) -> Self {
        let labels = [(TOPIC, topic), (GROUP, group), (HANDLER, handler)];
        Self {
            consumed: metrics.counter("backbone_events_consumed_total", &labels),
            handled: metrics.counter("backbone_events_handled_total", &labels),
            duration: metrics.histogram("backbone_handler_duration_seconds", &labels),
        }
    }
}

/// A consumer group's gauges and counters (one consumer).
pub(crate) struct GroupMetrics {
    pub(crate) rebalances: Counter,
    pub(crate) assigned: Gauge,
    pub(crate) commit_failures: Counter,
    pub(crate) commit_duration: DurationHistogram,
}

impl GroupMetrics {
    pub(crate) fn new(metrics: &Metrics, topic: &str, group: &str) -> Self {
        let labels = [(TOPIC, topic), (GROUP, group)];
        Self {
            rebalances: metrics.counter("backbone_consumer_rebalances_total", &labels),
            assigned: metrics.gauge("backbone_consumer_assigned_partitions", &labels),
            commit_failures: metrics.counter("backbone_consumer_commit_failures_total", &labels),
            commit_duration: metrics.histogram("backbone_consumer_commit_duration_seconds", &labels),
        }
    }
}

/// A partition's lag gauges.
pub(crate) struct LagGauges {
    pub(crate) records: Gauge,
    pub(crate) seconds: Gauge,
}

impl LagGauges {
    pub(crate) fn new(metrics: &Metrics, topic: &str, group: &str, partition: i32) -> Self {
        let partition = partition.to_string();
        let labels = [(TOPIC, topic), (GROUP, group), (PARTITION, partition.as_str())];
        Self {
            records: metrics.gauge("backbone_consumer_lag_records", &labels),
            seconds: metrics.gauge("backbone_consumer_lag_seconds", &labels),
        }
    }
}

/// A topic's publish counters and latency.
#[derive(Clone)]
pub(crate) struct PublishMetrics {
    pub(crate) published: Counter,
    pub(crate) failed: Counter,
    pub(crate) duration: DurationHistogram,
}

impl PublishMetrics {
    pub(crate) fn new(metrics: &Metrics, topic: &str) -> Self {
        let labels = [(TOPIC, topic)];
        Self {
            published: metrics.counter("backbone_events_published_total", &labels),
            failed: metrics.counter("backbone_publish_failures_total", &labels),
            duration: metrics.histogram("backbone_publish_duration_seconds", &labels),
        }
    }
}

/// An exactly-once consumer's transaction counters and durations.
pub(crate) struct TransactionMetrics {
    pub(crate) committed: Counter,
    pub(crate) aborted: Counter,
    /// From a transaction's first event to its commit.
    pub(crate) duration: DurationHistogram,
    /// Sending the offsets and committing: the group's commit latency.
    pub(crate) commit: DurationHistogram,
}

impl TransactionMetrics {
    pub(crate) fn new(metrics: &Metrics, topic: &str, group: &str) -> Self {
        let labels = [(TOPIC, topic), (GROUP, group)];
        Self {
            committed: metrics.counter("backbone_transactions_committed_total", &labels),
            aborted: metrics.counter("backbone_transactions_aborted_total", &labels),
            duration: metrics.histogram("backbone_transaction_duration_seconds", &labels),
            commit: metrics.histogram("backbone_consumer_commit_duration_seconds", &labels),
        }
    }
}

/// A table partition's gauges.
#[derive(Debug)]
pub(crate) struct TableGauges {
    pub(crate) remaining: Gauge,
    pub(crate) remaining_seconds: Gauge,
    pub(crate) entries: Gauge,
}

impl TableGauges {
    pub(crate) fn new(metrics: &Metrics, topic: &str, partition: i32) -> Self {
        let partition = partition.to_string();
        let labels = [(TOPIC, topic), (PARTITION, partition.as_str())];
        Self {
            remaining: metrics.gauge("backbone_table_restore_remaining_records", &labels),
            remaining_seconds: metrics.gauge("backbone_table_restore_remaining_seconds", &labels),
            entries: metrics.gauge("backbone_table_entries", &labels),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_follow_prometheus_conventions_and_render_with_help_and_type() {
        for &(name, kind, _, help) in FAMILIES {
            assert!(name.starts_with("backbone_"), "{name}");
            assert_eq!(
                name.ends_with("_total"),
                matches!(kind, Kind::Counter),
                "{name}: counters end in _total"
            );
            assert!(!help.is_empty(), "{name}");
        }
        let metrics = Metrics::new();
        let labels = [(TOPIC, "t"), (GROUP, "g"), (HANDLER, "h")];
        let handler = HandlerMetrics::new(&metrics, "t", "g", "h");
        handler.consumed.increment(2);
        handler.duration.record(Duration::from_millis(2));
        handler.duration.record(Duration::from_secs(60));
        // The same name and labels: the same counter.
        metrics.counter("backbone_events_consumed_total", &labels).increment(1);
        let text = metrics.render();
        assert!(text.contains("# TYPE backbone_events_consumed_total counter"), "{text}");
        assert!(text.contains("# HELP backbone_events_consumed_total "), "{text}");
        assert!(
            text.contains(r#"backbone_events_consumed_total{messaging_destination_name="t",messaging_consumer_group_name="g",handler="h"} 3"#),
            "{text}"
        );
        assert!(text.contains("# TYPE backbone_handler_duration_seconds histogram"), "{text}");
        let series = r#"messaging_destination_name="t",messaging_consumer_group_name="g",handler="h""#;
        for (le, count) in [("0.001", 0), ("0.005", 1), ("30", 1), ("+Inf", 2)] {
            let line = format!("backbone_handler_duration_seconds_bucket{{{series},le=\"{le}\"}} {count}\n");
            assert!(text.contains(&line), "{line}in\n{text}");
        }
        assert!(
            text.contains(&format!("backbone_handler_duration_seconds_sum{{{series}}} 60.002\n")),
            "{text}"
        );
        assert!(text.contains(&format!("backbone_handler_duration_seconds_count{{{series}}} 2\n")), "{text}");
        assert_eq!(handler.duration.count(), 2);
    }
}
