//! Health that the HTTP layer serves: live, ready, and degraded with reasons.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// Shared health of a service's parts. Clone it freely: clones share state.
#[derive(Debug, Clone, Default)]
pub struct HealthState {
    inner: Arc<Mutex<BTreeMap<String, String>>>,
    /// Whether anything is degraded: lets the hot path's `recover` skip the lock.
    any: Arc<AtomicBool>,
    /// Woken on every change, for [`HealthState::wait_until`].
    changed: Arc<tokio::sync::Notify>,
}

/// A snapshot of health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Degraded components and why (empty when healthy).
    pub degraded: BTreeMap<String, String>,
}

impl Health {
    /// Whether nothing is degraded.
    pub fn is_healthy(&self) -> bool {
        self.degraded.is_empty()
    }
}

impl HealthState {
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
        Health { degraded: self.inner.lock().unwrap_or_else(PoisonError::into_inner).clone() }
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
    }
}
