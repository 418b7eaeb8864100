//! Long-poll waiters: any number per order, bounded in all and per order, counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The requests waiting for an order to change: at most `total` at once, and at most `per_order`
/// for one order. A request over either bound is refused (503 with `Retry-After`), never queued.
#[derive(Clone, Debug)]
pub struct Waiters {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    total: usize,
    per_order: usize,
    by_order: Mutex<HashMap<String, usize>>,
    waiting: AtomicU64,
    refused: AtomicU64,
}

/// A place among the waiters, given back on drop.
#[derive(Debug)]
pub struct Waiting {
    inner: Arc<Inner>,
    order: String,
}

/// What the waiters count: a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaiterStats {
    /// Requests waiting now.
    pub waiting: u64,
    /// Requests refused since start because a bound was reached.
    pub refused: u64,
}

impl Waiters {
    /// At most `total` waiters, `per_order` of them for one order.
    pub fn new(total: usize, per_order: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                total,
                per_order,
                by_order: Mutex::new(HashMap::new()),
                waiting: AtomicU64::new(0),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// A place to wait for `order`, or `None` if a bound is reached.
    pub fn enter(&self, order: &str) -> Option<Waiting> {
        let mut by_order = self.inner.by_order.lock().unwrap_or_else(PoisonError::into_inner);
        let all: usize = self.inner.waiting.load(Ordering::Relaxed) as usize;
        let here = by_order.get(order).copied().unwrap_or(0);
        if all >= self.inner.total || here >= self.inner.per_order {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        by_order.insert(order.to_owned(), here + 1);
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        Some(Waiting { inner: self.inner.clone(), order: order.to_owned() })
    }

    /// Waiting now and refused so far.
    pub fn stats(&self) -> WaiterStats {
        WaiterStats {
            waiting: self.inner.waiting.load(Ordering::Relaxed),
            refused: self.inner.refused.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut by_order = self.inner.by_order.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = by_order.get_mut(&self.order) {
            *n -= 1;
            if *n == 0 {
                by_order.remove(&self.order);
            }
        }
        self.inner.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_hold_in_all_and_per_order_and_places_come_back() {
        let waiters = Waiters::new(3, 2);
        let a1 = waiters.enter("a").unwrap();
        let _a2 = waiters.enter("a").unwrap();
        assert!(waiters.enter("a").is_none(), "per order");
        let _b1 = waiters.enter("b").unwrap();
        assert!(waiters.enter("c").is_none(), "in all");
        assert_eq!(waiters.stats(), WaiterStats { waiting: 3, refused: 2 });
        drop(a1);
        let _a3 = waiters.enter("a").expect("the place given back on drop");
        assert_eq!(waiters.stats().waiting, 3);
    }
}
