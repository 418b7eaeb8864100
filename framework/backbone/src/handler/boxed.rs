//! Handlers as `async fn`s ([`Handler`]) and type-erased ([`BoxedHandler`]).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::error::{HandlerError, IntoOutcome};
use super::event::HandlerContext;
use super::extract::{FromEvent, short_type_name};

/// An event handler: implemented for `async fn`s (and closures returning futures) taking up to 8
/// [`FromEvent`] arguments and returning an [`IntoOutcome`]. `T` is the tuple of argument types; it
/// only tells the implementations apart.
pub trait Handler<T, S>: Clone + Send + Sync + Sized + 'static {
    /// Handles the event in `cx`: extracts the arguments, then runs the handler. An extraction
    /// failure is a permanent [`HandlerError`] with the [`ExtractError`](super::ExtractError) inside.
    fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<(), HandlerError>>;
}

macro_rules! impl_handler {
    ($($ty:ident),*) => {
        impl<F, Fut, R, S, $($ty,)*> Handler<($($ty,)*), S> for F
        where
            F: Fn($($ty,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoOutcome,
            S: Send + Sync + 'static,
            $($ty: FromEvent<S> + Send + 'static,)*
        {
            #[allow(non_snake_case)]
            fn call(&self, cx: HandlerContext<S>) -> BoxFuture<'static, Result<(), HandlerError>> {
                let handler = self.clone();
                Box::pin(async move {
                    $(
                        let $ty = match $ty::from_event(&cx) {
                            Ok(v) => v,
                            Err(e) => return Err(HandlerError::from(e)),
                        };
                    )*
                    drop(cx);
                    handler($($ty,)*).await.into_outcome()
                })
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

impl<H: Handler<T, S>, T: 'static, S> ErasedHandler<S> for Erased<H, T> {
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
    pub fn new<H: Handler<T, S>, T: 'static>(handler: H) -> Self {
        let full = std::any::type_name::<H>();
        let name = if full.contains('{') { full.to_owned() } else { short_type_name(full) };
        Self::named(name, handler)
    }

    /// Boxes `handler` under `name`.
    pub fn named<H: Handler<T, S>, T: 'static>(name: impl Into<String>, handler: H) -> Self {
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
