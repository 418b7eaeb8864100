//! `metrics`: what backbone's per-event metrics cost, in process, no broker. The consume path does,
//! per event, on handles its partition's task cloned once: two counter increments (consumed,
//! handled), one atomic store (the event's timestamp, for lag in seconds), two clock reads and one
//! histogram sample. This benchmark does exactly that through the public [`Metrics`] API, against an
//! empty loop, and against decoding the `consume` benchmark's ~110-byte JSON event (the least a
//! handler does); then the same metric work on two threads at once on the same handles (two
//! partitions' tasks on two cores share one handler's counters: the worst case, cache lines moving
//! between cores). Last line `RESULT metrics ns_per_event=<one thread> contended_ns_per_event=<two
//! threads, per event> vs_json_decode=<metric work / decode>`.

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use backbone::observe::{DurationHistogram, Metrics};

use crate::codec::{CodecOp, measure};
use crate::consume::{Order, order_json};

/// Events per thread in the two-thread run.
const CONTENDED_EVENTS: u64 = 20_000_000;

/// One handler's handles, as a partition's task holds them.
#[derive(Clone)]
struct Handles {
    consumed: metrics::Counter,
    handled: metrics::Counter,
    duration: DurationHistogram,
    timestamp: std::sync::Arc<AtomicI64>,
}

impl Handles {
    fn new(metrics: &Metrics) -> Self {
        let labels =
            [("messaging_destination_name", "t"), ("messaging_consumer_group_name", "g"), ("handler", "h")];
        Self {
            consumed: metrics.counter("backbone_events_consumed_total", &labels),
            handled: metrics.counter("backbone_events_handled_total", &labels),
            duration: metrics.histogram("backbone_handler_duration_seconds", &labels),
            timestamp: std::sync::Arc::default(),
        }
    }

    /// The consume path's metric work for one event.
    #[inline]
    fn event(&self, timestamp: i64) {
        self.consumed.increment(1);
        self.timestamp.store(timestamp, Ordering::Relaxed);
        let began = Instant::now();
        black_box(timestamp);
        self.duration.record(began.elapsed());
        self.handled.increment(1);
    }

    /// `backbone_events_consumed_total` as `/metrics` renders it: the check that the work was done.
    fn consumed_count(&self, registry: &Metrics) -> u64 {
        let text = registry.render();
        text.lines()
            .find(|l| l.starts_with("backbone_events_consumed_total{"))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}

pub(crate) fn metrics() {
    let registry = Metrics::new();
    let handles = Handles::new(&registry);
    let json = order_json(42);
    let mut n = 0i64;
    let mut m = 0i64;
    let cases: Vec<(&str, Box<CodecOp<'_>>)> = vec![
        (
            "empty loop",
            Box::new(|| {
                n += 1;
                black_box(n);
            }),
        ),
        (
            "metrics per event",
            Box::new(|| {
                m += 1;
                handles.event(black_box(m));
            }),
        ),
        (
            "two clock reads",
            Box::new(|| {
                let began = Instant::now();
                black_box(began.elapsed());
            }),
        ),
        (
            "json decode (floor)",
            Box::new(|| {
                drop(black_box(serde_json::from_slice::<Order>(black_box(json.as_bytes())).expect("json")))
            }),
        ),
    ];
    println!(
        "metrics: the consume path's per-event metric work, one thread, against an empty loop and a JSON decode"
    );
    let medians = measure(cases);
    let (empty, work, clocks, decode) = (medians[0], medians[1], medians[2], medians[3]);
    let per_event = (work - empty).max(0.0);

    // Two threads on the same handles (two partitions of one handler on two cores).
    let before = handles.consumed_count(&registry);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            let handles = handles.clone();
            scope.spawn(move || {
                for i in 0..CONTENDED_EVENTS {
                    handles.event(black_box(i as i64));
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let counted = handles.consumed_count(&registry) - before;
    assert!(counted >= 2 * CONTENDED_EVENTS, "every event counted: {counted}");
    // Each thread did CONTENDED_EVENTS in `elapsed`: the time one event's metric work takes a thread.
    let contended = elapsed.as_nanos() as f64 / CONTENDED_EVENTS as f64;
    println!(
        "two threads, same handles: {CONTENDED_EVENTS} events each in {:.2} s: {contended:.1} ns per event per thread",
        elapsed.as_secs_f64()
    );
    println!(
        "RESULT metrics ns_per_event={per_event:.1} clock_ns={:.1} contended_ns_per_event={contended:.1} \
         vs_json_decode={:.3}",
        (clocks - empty).max(0.0),
        per_event / decode
    );
}
