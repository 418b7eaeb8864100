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
        }
        self.any.store(!map.is_empty(), Ordering::Release);
    }

    /// The current health.
    pub fn snapshot(&self) -> Health {
        Health { degraded: self.inner.lock().unwrap_or_else(PoisonError::into_inner).clone() }
    }
}
