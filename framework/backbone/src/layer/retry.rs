//! Retries of retriable handler errors, with exponential backoff.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tower::{Layer, Service, ServiceExt as _};

use super::BoxFuture;
use crate::handler::{HandlerContext, HandlerError};

/// Retry policy for retriable handler errors.
///
/// An event with a deadline (a request's, set by the responder's reply step) is retried until the
/// next backoff would end past its deadline, however many attempts that makes; `max_attempts`
/// bounds the others.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub initial_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
}

impl Retry {
    /// Whether an event that failed retriably after `attempts` attempts is tried again after
    /// `backoff`: before its `deadline` if it has one, else within `max_attempts`.
    fn again(&self, attempts: u32, backoff: Duration, deadline: Option<SystemTime>) -> bool {
        match deadline {
            Some(deadline) => deadline.duration_since(SystemTime::now()).is_ok_and(|left| left > backoff),
            None => attempts < self.max_attempts,
        }
    }

    /// The backoff after `current`: doubled, capped at `max_backoff`.
    pub(crate) fn next_backoff(&self, current: Duration) -> Duration {
        (current * 2).min(self.max_backoff)
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Retries retriable errors with exponential backoff ([`Retry`]); the error that comes out records
/// the attempts made ([`HandlerError::attempts`]).
#[derive(Debug, Clone, Default)]
pub struct RetryLayer {
    retry: Retry,
    retried: Option<metrics::Counter>,
}

impl RetryLayer {
    /// Retries as `retry` says.
    pub fn new(retry: Retry) -> Self {
        Self { retry, retried: None }
    }

    /// Counts each retry (an attempt after the first) in `retried`
    /// (`backbone_events_retried_total`).
    pub fn counting(mut self, retried: metrics::Counter) -> Self {
        self.retried = Some(retried);
        self
    }
}

impl<I: Clone> Layer<I> for RetryLayer {
    type Service = RetryService<I>;

    fn layer(&self, inner: I) -> RetryService<I> {
        RetryService { spare: Arc::new((inner.clone(), self.retried.clone())), inner, retry: self.retry }
    }
}

/// See [`RetryLayer`].
#[derive(Debug)]
pub struct RetryService<I> {
    inner: I,
    /// What retries clone from, behind a reference count of this copy's own: every event's first
    /// attempt takes a reference to it instead of cloning the services beneath (whose shared
    /// reference counts every partition would bump); with the retry counter, used only on retries.
    spare: Arc<(I, Option<metrics::Counter>)>,
    retry: Retry,
}

impl<I: Clone> Clone for RetryService<I> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), spare: Arc::new((*self.spare).clone()), retry: self.retry }
    }
}

impl<I, S> Service<HandlerContext<S>> for RetryService<I>
where
    I: Service<HandlerContext<S>, Response = (), Error = HandlerError> + Clone + Send + 'static,
    I::Future: Send + 'static,
    S: Clone + Send + Sync + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = RetryFuture<I::Future, I, S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, cx: HandlerContext<S>) -> Self::Future {
        // The first attempt uses the service that was made ready; later ones a ready clone.
        if self.retry.max_attempts <= 1 && cx.deadline().is_none() {
            return RetryFuture { first: self.inner.call(cx), again: None, rest: None };
        }
        let first = self.inner.call(cx.clone());
        RetryFuture { first, again: Some((self.spare.clone(), cx, self.retry)), rest: None }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RetryService`]: the first attempt unboxed; the retries, if it fails
    /// retriably, in a boxed future of their own.
    pub struct RetryFuture<F, I, S> {
        #[pin]
        first: F,
        again: Option<(Arc<(I, Option<metrics::Counter>)>, HandlerContext<S>, Retry)>,
        rest: Option<BoxFuture<Result<(), HandlerError>>>,
    }
}

impl<F, I, S> fmt::Debug for RetryFuture<F, I, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryFuture").field("retrying", &self.rest.is_some()).finish_non_exhaustive()
    }
}

impl<F, I, S> Future for RetryFuture<F, I, S>
where
    F: Future<Output = Result<(), HandlerError>>,
    I: Service<HandlerContext<S>, Response = (), Error = HandlerError> + Clone + Send + 'static,
    I::Future: Send + 'static,
    S: Clone + Send + Sync + 'static,
{
    type Output = Result<(), HandlerError>;

    fn poll(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.rest.is_none() {
            // The first attempt is not polled again once it has finished.
            match std::task::ready!(this.first.poll(task)) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if e.is_retriable() && this.again.is_some() => {
                    let (inner, cx, retry) = this.again.take().expect("checked");
                    let (inner, retried) = (*inner).clone();
                    *this.rest = Some(Box::pin(retry_after(inner, retried, cx, retry, e)));
                }
                Err(e) => return Poll::Ready(Err(e.with_attempts(1))),
            }
        }
        this.rest.as_mut().expect("set above").as_mut().poll(task)
    }
}

/// The attempts after a first one that failed retriably with `first`.
async fn retry_after<I, S>(
    inner: I,
    retried: Option<metrics::Counter>,
    cx: HandlerContext<S>,
    retry: Retry,
    first: HandlerError,
) -> Result<(), HandlerError>
where
    I: Service<HandlerContext<S>, Response = (), Error = HandlerError> + Clone,
    S: Clone,
{
    let mut outcome = Err(first);
    let mut attempts = 1;
    let mut backoff = retry.initial_backoff;
    let deadline = cx.deadline();
    loop {
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retriable() && retry.again(attempts, backoff, deadline) => {
                tracing::warn!(attempts, error = %e, "retrying");
                tokio::time::sleep(backoff).await;
                backoff = retry.next_backoff(backoff);
                attempts += 1;
                if let Some(retried) = &retried {
                    retried.increment(1);
                }
                outcome = inner.clone().oneshot(cx.clone()).await;
            }
            Err(e) => return Err(e.with_attempts(attempts)),
        }
    }
}
