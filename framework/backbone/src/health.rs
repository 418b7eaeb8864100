//! Health that the HTTP layer serves: live, ready, and degraded with reasons.
//!
//! - **Live**: the process answers (the HTTP layer needs nothing from here for that).
//! - **Ready**: no component is still starting ([`HealthState::starting`]): a consumer is not ready
//!   until it has joined its group and received its partitions; a table not until it has restored.
//! - **Degraded**: components with a reason ([`HealthState::degrade`]): a dead-letter topic that
//!   cannot be written (its partition paused), brokers unreachable, a publisher that cannot deliver.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// Shared health of a service's parts. Clone it freely: clones share state.
#[derive(Debug, Clone, Default)]
pub struct HealthState {
    inner: Arc<Mutex<BTreeMap<String, String>>>,
    starting: Arc<Mutex<BTreeMap<String, String>>>,
    /// Whether anything is degraded: lets the hot path's `recover` skip the lock.
    any: Arc<AtomicBool>,
    /// Woken on every change, for [`HealthState::wait_until`].
    changed: Arc<tokio::sync::Notify>,
    /// The service's metrics, reported beside its health (what `/metrics` serves).
    metrics: crate::observe::Metrics,
}

/// A snapshot of health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Degraded components and why (empty when healthy).
    pub degraded: BTreeMap<String, String>,
    /// Components still starting and what they wait for (empty when ready).
    pub starting: BTreeMap<String, String>,
}

impl Health {
    /// Whether nothing is degraded.
    pub fn is_healthy(&self) -> bool {
        self.degraded.is_empty()
    }

    /// Whether nothing is still starting.
    pub fn is_ready(&self) -> bool {
        self.starting.is_empty()
    }
}

impl HealthState {
    /// The service's metrics registry (what `/metrics` serves): every part that reports health
    /// reports its metrics here too.
    pub fn metrics(&self) -> &crate::observe::Metrics {
        &self.metrics
    }

    /// Marks `component` degraded with `reason` (replacing an earlier reason).
    pub fn degrade(&self, component: &str, reason: impl Into<String>) {
        let reason = reason.into();
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(component) != Some(&reason) {
            tracing::warn!(component, %reason, "degraded");
            map.insert(component.to_owned(), reason);
            self.any.store(true, Ordering::Release);
            drop(map);
            self.changed.notify_waiters();
            return;
        }
        self.any.store(true, Ordering::Release);
    }

    /// Marks `component` healthy again.
    pub fn recover(&self, component: &str) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if map.remove(component).is_some() {
            tracing::info!(component, "recovered");
            self.any.store(!map.is_empty(), Ordering::Release);
            drop(map);
            self.changed.notify_waiters();
            return;
        }
        self.any.store(!map.is_empty(), Ordering::Release);
    }

    /// Marks `component` as starting, waiting for `what`: the service is not ready until it is
    /// [`ready`](Self::ready).
    pub fn starting(&self, component: &str, what: impl Into<String>) {
        let mut map = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(component.to_owned(), what.into());
        drop(map);
        self.changed.notify_waiters();
    }

    /// Marks `component` ready.
    pub fn ready(&self, component: &str) {
        let mut map = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
        if map.remove(component).is_some() {
            drop(map);
            tracing::info!(component, "ready");
            self.changed.notify_waiters();
        }
    }

    /// Waits until health satisfies `condition` (checked now and on every change), and returns it.
    pub async fn wait_until(&self, condition: impl Fn(&Health) -> bool) -> Health {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let now = self.snapshot();
            if condition(&now) {
                return now;
            }
            changed.await;
        }
    }

    /// The current health.
    pub fn snapshot(&self) -> Health {
        Health {
            degraded: self.inner.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            starting: self.starting.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_see_changes() {
        let health = HealthState::default();
        let watcher = health.clone();
        let waiting = tokio::spawn(async move { watcher.wait_until(|h| !h.is_healthy()).await });
        tokio::task::yield_now().await;
        health.degrade("publisher", "all brokers are down");
        let seen = waiting.await.unwrap();
        assert_eq!(seen.degraded.get("publisher").map(String::as_str), Some("all brokers are down"));
        health.recover("publisher");
        assert!(health.wait_until(Health::is_healthy).await.is_healthy());

        health.starting("consumer:stock.reserve", "waiting for partitions");
        assert!(!health.snapshot().is_ready());
        let watcher = health.clone();
        let waiting = tokio::spawn(async move { watcher.wait_until(Health::is_ready).await });
        tokio::task::yield_now().await;
        health.ready("consumer:stock.reserve");
        assert!(waiting.await.unwrap().is_ready());
    }
}
