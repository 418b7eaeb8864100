//! Panic recovery: a panicking handler is a permanent error of kind `panic`.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt as _;
use tower::{Layer, Service};

use crate::handler::HandlerError;

/// Turns a panicking handler into a permanent [`HandlerError`] of kind `panic`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<I> Layer<I> for CatchPanicLayer {
    type Service = CatchPanic<I>;

    fn layer(&self, inner: I) -> CatchPanic<I> {
        CatchPanic { inner }
    }
}

/// See [`CatchPanicLayer`].
#[derive(Debug, Clone)]
pub struct CatchPanic<I> {
    inner: I,
}

impl<I, R> Service<R> for CatchPanic<I>
where
    I: Service<R, Response = (), Error = HandlerError>,
    I::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = CatchPanicFuture<I::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        // A panic while the future is being created counts too.
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => {
                CatchPanicFuture { call: Some(AssertUnwindSafe(future).catch_unwind()), panic: None }
            }
            Err(panic) => CatchPanicFuture { call: None, panic: Some(panic) },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`CatchPanic`]: the handler's, with a panic turned into an error.
    pub struct CatchPanicFuture<F> {
        #[pin]
        call: Option<futures::future::CatchUnwind<AssertUnwindSafe<F>>>,
        panic: Option<Box<dyn std::any::Any + Send>>,
    }
}

impl<F> fmt::Debug for CatchPanicFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatchPanicFuture").finish_non_exhaustive()
    }
}

impl<F: Future<Output = Result<(), HandlerError>>> Future for CatchPanicFuture<F> {
    type Output = Result<(), HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = match this.call.as_pin_mut() {
            Some(call) => std::task::ready!(call.poll(cx)),
            None => Err(this.panic.take().expect("CatchPanicFuture polled after completion")),
        };
        Poll::Ready(outcome.unwrap_or_else(|panic| {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_owned());
            Err(HandlerError::permanent(format!("handler panicked: {text}")).with_kind("panic"))
        }))
    }
}
