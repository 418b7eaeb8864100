//! Consumer lag from librdkafka's statistics: per partition in records and seconds, as gauges, and
//! the lag budget of readiness ([`Consumer::max_ready_lag`](super::Consumer::max_ready_lag)).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::health::HealthState;
use crate::observe::{GroupMetrics, LagGauges, Metrics};

use super::partition::Partition;

/// A consumer's lag gauges and its readiness budget.
pub(super) struct Lag {
    pub(super) metrics: Metrics,
    pub(super) group: String,
    pub(super) group_metrics: GroupMetrics,
    /// When the commit in flight was asked for (`backbone_consumer_commit_duration_seconds`).
    pub(super) commit_asked: Mutex<Option<std::time::Instant>>,
    gauges: Mutex<HashMap<i32, LagGauges>>,
    /// Most records of lag (all partitions together) with which the consumer is ready.
    budget: Option<u64>,
    over: AtomicBool,
    component: String,
    health: HealthState,
}

impl Drop for Lag {
    /// A consumer that stops (or joins again with a new client) while over its budget leaves no
    /// stale `lag:` component behind.
    fn drop(&mut self) {
        if self.over.load(Ordering::Acquire) {
            self.health.ready(&self.component);
        }
    }
}

impl Lag {
    pub(super) fn new(health: &HealthState, topic: &str, group: &str, budget: Option<u64>) -> Self {
        let metrics = health.metrics().clone();
        Self {
            group_metrics: GroupMetrics::new(&metrics, topic, group),
            health: health.clone(),
            metrics,
            group: group.to_owned(),
            commit_asked: Mutex::new(None),
            gauges: Mutex::new(HashMap::new()),
            budget,
            over: AtomicBool::new(false),
            component: format!("lag:{group}"),
        }
    }

    /// Updates the gauges of the `assigned` partitions from `statistics`; drops those of partitions
    /// no longer assigned (set to 0); not ready while the total lag is over the budget.
    pub(super) fn update(
        &self,
        topic: &str,
        statistics: &rdkafka::Statistics,
        assigned: &HashMap<i32, Partition>,
    ) {
        let Some(stats) = statistics.topics.get(topic) else { return };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut gauges = self.gauges.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total: u64 = 0;
        for (&partition, p) in assigned {
            let Some(s) = stats.partitions.get(&partition) else { continue };
            // read_committed: the end a reader can reach is the last stable offset.
            let end = if s.ls_offset >= 0 { s.ls_offset } else { s.hi_offset };
            let next = p.cursor.next.load(Ordering::Acquire);
            // Nothing handled yet by this task: where the group stands (its committed offset).
            let from = if next >= 0 { next } else { s.committed_offset };
            let records = if end >= 0 && from >= 0 { (end - from).max(0) } else { 0 };
            let taken_at = p.cursor.taken_at.load(Ordering::Acquire);
            let seconds =
                if records > 0 && taken_at > 0 { (now_ms - taken_at).max(0) as f64 / 1000.0 } else { 0.0 };
            let g = gauges
                .entry(partition)
                .or_insert_with(|| LagGauges::new(&self.metrics, topic, &self.group, partition));
            g.records.set(records as f64);
            g.seconds.set(seconds);
            total = total.saturating_add(records.unsigned_abs());
        }
        gauges.retain(|partition, g| {
            let keep = assigned.contains_key(partition);
            if !keep {
                g.records.set(0.0);
                g.seconds.set(0.0);
            }
            keep
        });
        drop(gauges);
        self.group_metrics.assigned.set(assigned.len() as f64);
        let Some(budget) = self.budget else { return };
        let over = total > budget;
        if self.over.swap(over, Ordering::AcqRel) != over {
            if over {
                self.health
                    .starting(&self.component, format!("lag of {total} records over the budget of {budget}"));
            } else {
                self.health.ready(&self.component);
            }
        }
    }
}
