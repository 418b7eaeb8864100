//! Handlers as `async fn`s ([`Handler`]) and type-erased ([`BoxedHandler`]).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::error::{HandlerError, IntoOutcome};
use super::event::HandlerContext;
use super::extract::{FromEvent, short_type_name};

/// A handler: implemented for `async fn`s (and closures returning futures) taking up to 8
/// [`FromEvent`] arguments. `T` is the tuple of argument types; it only tells the implementations
/// apart.
///
/// What it returns says what it is: an event handler returns an [`IntoOutcome`] (and is called
/// with [`call`](Self::call)), a request handler the value to reply with (an
/// [`IntoReply`](crate::request::IntoReply), see [`crate::request::responder`]). Both are
/// extracted, called and run through the consumer's layers the same way.
pub trait Handler<T, S>: Clone + Send + Sync + Sized + 'static {
    /// What the function returns.
    type Output: 'static;

    /// Extracts the arguments from `cx`, then runs the function: its output, or the extraction
    /// failure as a permanent [`HandlerError`] with the [`ExtractError`](super::ExtractError) inside.
    fn run(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<Self::Output, HandlerError>>;

    /// Handles the event in `cx`: [`run`](Self::run), with the output as an outcome.
    fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<(), HandlerError>>
    where
        Self::Output: IntoOutcome;
}

/// The body of [`Handler::run`] and [`Handler::call`]: extract the arguments left to right, drop
/// the context, call the function, `$finish` its output.
macro_rules! extract_and_call {
    ($handler:expr, $cx:ident, $finish:expr, $($ty:ident),*) => {{
        let handler = $handler.clone();
        Box::pin(async move {
            $(
                let $ty = match $ty::from_event(&$cx) {
                    Ok(v) => v,
                    Err(e) => return Err(HandlerError::from(e)),
                };
            )*
            drop($cx);
            ($finish)(handler($($ty,)*).await)
        })
    }};
}

macro_rules! impl_handler {
    ($($ty:ident),*) => {
        impl<F, Fut, R, S, $($ty,)*> Handler<($($ty,)*), S> for F
        where
            F: Fn($($ty,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: 'static,
            S: Send + Sync + 'static,
            $($ty: FromEvent<S> + Send + 'static,)*
        {
            type Output = R;

            #[allow(non_snake_case)]
            fn run(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<R, HandlerError>> {
                extract_and_call!(self, cx, Ok, $($ty),*)
            }

            #[allow(non_snake_case)]
            fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<(), HandlerError>>
            where
                R: IntoOutcome,
            {
                extract_and_call!(self, cx, IntoOutcome::into_outcome, $($ty),*)
            }
        }
    };
}

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);

trait ErasedHandler<S>: Send + Sync {
    fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<(), HandlerError>>;
}

struct Erased<H, T> {
    handler: H,
    _arguments: PhantomData<fn() -> T>,
}

impl<H: Handler<T, S, Output: IntoOutcome>, T: 'static, S> ErasedHandler<S> for Erased<H, T> {
    fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<(), HandlerError>> {
        self.handler.call(cx)
    }
}

/// A handler of any type behind one type, with a name, so the runtime can keep several. Cheap to
/// clone.
pub struct BoxedHandler<S = ()> {
    name: Arc<str>,
    inner: Arc<dyn ErasedHandler<S>>,
}

impl<S: 'static> BoxedHandler<S> {
    /// Boxes `handler`, named after its function (`reserve`). A closure's name is its full path
    /// ending in `{{closure}}`: give closures a name with [`BoxedHandler::named`].
    pub fn new<H: Handler<T, S, Output: IntoOutcome>, T: 'static>(handler: H) -> Self {
        let full = std::any::type_name::<H>();
        let name = if full.contains('{') { full.to_owned() } else { short_type_name(full) };
        Self::named(name, handler)
    }

    /// Boxes `handler` under `name`.
    pub fn named<H: Handler<T, S, Output: IntoOutcome>, T: 'static>(
        name: impl Into<String>,
        handler: H,
    ) -> Self {
        Self { name: name.into().into(), inner: Arc::new(Erased { handler, _arguments: PhantomData }) }
    }
}

impl<S> BoxedHandler<S> {
    /// The handler's name, for diagnostics (and, later, consumer groups and dead-letter headers).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Handles the event in `cx` (see [`Handler::call`]).
    pub fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<(), HandlerError>> {
        self.inner.call(cx)
    }
}

impl<S> Clone for BoxedHandler<S> {
    fn clone(&self) -> Self {
        Self { name: self.name.clone(), inner: self.inner.clone() }
    }
}

impl<S> fmt::Debug for BoxedHandler<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxedHandler").field("name", &self.name).finish_non_exhaustive()
    }
}
