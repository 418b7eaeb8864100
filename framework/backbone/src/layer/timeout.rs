//! A time limit per attempt: a handler that takes too long fails retriably (kind `timeout`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use crate::handler::HandlerError;

/// Fails a handler that takes longer than a limit: a retriable [`HandlerError`] of kind `timeout`
/// (the handler's future is dropped).
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// A limit of `limit` per attempt.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<I> Layer<I> for TimeoutLayer {
    type Service = Timeout<I>;

    fn layer(&self, inner: I) -> Timeout<I> {
        Timeout { inner, limit: self.limit }
    }
}

/// See [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<I> {
    inner: I,
    limit: Duration,
}

impl<I, R> Service<R> for Timeout<I>
where
    I: Service<R, Response = (), Error = HandlerError>,
{
    type Response = ();
    type Error = HandlerError;
    type Future = TimeoutFuture<I::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        TimeoutFuture { call: tokio::time::timeout(self.limit, self.inner.call(request)), limit: self.limit }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Timeout`]: the handler's, failed with a retriable `timeout` error once the
    /// limit passes (no allocation per event).
    #[derive(Debug)]
    pub struct TimeoutFuture<F> {
        #[pin]
        call: tokio::time::Timeout<F>,
        limit: Duration,
    }
}

impl<F: Future<Output = Result<(), HandlerError>>> Future for TimeoutFuture<F> {
    type Output = Result<(), HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.call.poll(cx).map(|done| {
            done.unwrap_or_else(|_| {
                Err(HandlerError::retriable(format!("handler took longer than {:?}", this.limit))
                    .with_kind("timeout"))
            })
        })
    }
}
