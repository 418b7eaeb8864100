//! The per-event service a consumer builds: the handler under the built-in layers, as one type.

use crate::layer::{
    Budget, CatchPanic, Correlation, DeadLetter, EventService, HandlerService, RetryService, Schemas,
    Timeout, Tracing,
};

/// The handler (or, with layers of yours, the handler inside them, boxed once).
pub(super) type Bottom<S> = tower::util::Either<HandlerService<S>, EventService<S>>;

/// Retries and what they wrap: schema, timeout (if set), panic recovery, the handler.
pub(super) type Retried<S> =
    RetryService<Schemas<tower::util::Either<Timeout<CatchPanic<Bottom<S>>>, CatchPanic<Bottom<S>>>>>;

/// The handler under the built-in layers, outermost first: tracing, correlation, dead letters,
/// budget, the layers around the retries (if any: a responder's reply step), retry, schema, timeout
/// (if set), panic recovery.
pub(super) type Stack<S> =
    Tracing<Correlation<DeadLetter<Budget<tower::util::Either<Retried<S>, EventService<S>>>>>>;
