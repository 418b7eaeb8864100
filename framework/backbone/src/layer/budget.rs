//! A time budget per event, all attempts together: past it the event fails permanently (kind
//! `budget`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use crate::handler::HandlerError;

/// Bounds the whole of an event's handling, every attempt and backoff of the retry layer beneath
/// included: past the budget the event fails permanently (kind `budget`) and the dead-letter layer
/// above takes it, so one slow or stuck event cannot hold its partition, or an open transaction,
/// indefinitely.
///
/// Exactly-once consumers always have one below the transaction timeout
/// ([`Consumer::event_budget`](crate::consume::Consumer::event_budget)): a handler still running
/// when the broker aborts its transaction would make every later event of the transaction fail and
/// the same event run again after the rewind, for ever.
#[derive(Debug, Clone, Copy)]
pub struct BudgetLayer {
    budget: Option<Duration>,
}

impl BudgetLayer {
    /// At most `budget` per event (`None`: unbounded, the layer does nothing).
    pub fn new(budget: Option<Duration>) -> Self {
        Self { budget }
    }
}

impl<I> Layer<I> for BudgetLayer {
    type Service = Budget<I>;

    fn layer(&self, inner: I) -> Budget<I> {
        Budget { inner, budget: self.budget }
    }
}

/// See [`BudgetLayer`].
#[derive(Debug, Clone)]
pub struct Budget<I> {
    inner: I,
    budget: Option<Duration>,
}

impl<I, R> Service<R> for Budget<I>
where
    I: Service<R, Response = (), Error = HandlerError>,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BudgetFuture<I::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        BudgetFuture {
            call: self.inner.call(request),
            expiry: self.budget.map(tokio::time::sleep),
            budget: self.budget.unwrap_or_default(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Budget`]: the inner service's, failed permanently (kind `budget`) once the
    /// budget has passed (no allocation per event).
    #[derive(Debug)]
    pub struct BudgetFuture<F> {
        #[pin]
        call: F,
        #[pin]
        expiry: Option<tokio::time::Sleep>,
        budget: Duration,
    }
}

impl<F: Future<Output = Result<(), HandlerError>>> Future for BudgetFuture<F> {
    type Output = Result<(), HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(done) = this.call.poll(cx) {
            return Poll::Ready(done);
        }
        match this.expiry.as_pin_mut().map(|expiry| expiry.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(HandlerError::permanent(format!(
                "not handled within its time budget of {:?} (all attempts included)",
                this.budget
            ))
            .with_kind("budget"))),
            _ => Poll::Pending,
        }
    }
}
