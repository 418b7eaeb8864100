//! Handlers: plain `async fn`s whose arguments say what they need from an event.
//!
//! As in axum, a handler is any `async fn` (or closure returning a future) whose arguments all
//! implement [`FromEvent`] (extractors, at most 8) and whose output implements [`IntoOutcome`]
//! (`Result<(), HandlerError>`, `Result<(), E>` for an `E` that converts, or `()`; a request
//! handler returns its reply instead, see [`crate::request::responder`]):
//!
//! | argument | gives |
//! |---|---|
//! | [`Event<T>`] | the payload decoded with `T`'s [`Decode`] |
//! | [`Json<T>`] | the payload decoded as JSON (`T: DeserializeOwned`) |
//! | [`Key<K>`] | the key decoded with `K`'s [`Decode`] |
//! | [`Metadata`] | topic, partition, offset, timestamp, headers |
//! | [`State<S>`] | a clone of the service's state |
//! | [`Publisher`](crate::publish::Publisher) | the service's publisher |
//! | [`CorrelationId`] | the causal chain's id |
//! | `Option<E>` | `None` where `E`'s part is absent (a tombstone, no key …) |
//! | `Result<E, ExtractError>` | every extraction failure, to decide yourself |
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//!
//! use backbone::handler::{BoxedHandler, Decode, DecodeError, Event, HandlerContext, IncomingEvent};
//! use backbone::{HandlerError, State};
//!
//! // `#[derive(Event)]` types implement `Decode` (through `AvroEvent`); a plain type, by hand.
//! struct OrderCreated {
//!     quantity: u32,
//! }
//!
//! impl Decode for OrderCreated {
//!     fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
//!         let quantity = std::str::from_utf8(bytes).map_err(DecodeError::new)?;
//!         Ok(Self { quantity: quantity.parse().map_err(DecodeError::new)? })
//!     }
//! }
//!
//! #[derive(Clone, Default)]
//! struct Stock {
//!     reserved: Arc<AtomicU32>,
//! }
//!
//! async fn reserve(Event(order): Event<OrderCreated>, State(s): State<Stock>) -> Result<(), HandlerError> {
//!     s.reserved.fetch_add(order.quantity, Ordering::SeqCst);
//!     Ok(())
//! }
//!
//! // What the consumer runtime does for each event:
//! let stock = Stock::default();
//! let handler = BoxedHandler::new(reserve);
//! assert_eq!(handler.name(), "reserve");
//! let event = IncomingEvent::new("orders.public.order-created-v1", 0, 42).with_payload("3");
//! futures::executor::block_on(handler.call(HandlerContext::new(event, stock.clone())))?;
//! assert_eq!(stock.reserved.load(Ordering::SeqCst), 3);
//! # Ok::<(), HandlerError>(())
//! ```
//!
//! Extraction runs when the handler's future is first polled, left to right; the first failure ends
//! the call with a permanent [`HandlerError`] holding the [`ExtractError`] (a poison record: the
//! runtime dead-letters it with [`ExtractError::kind`] and its message). Everything a handler does,
//! extraction included, happens inside the returned future, so one `catch_unwind` around it catches
//! every panic.

use std::error::Error as StdError;

mod boxed;
mod error;
mod event;
mod extract;
#[cfg(test)]
mod tests;

pub use boxed::{BoxedHandler, Handler};
pub use error::{ExtractError, HandlerError, IntoOutcome, Part};
pub(crate) use event::{Env, Scope};
pub use event::{HandlerContext, IncomingEvent, MessageHeaders};
pub use extract::{CorrelationId, Decode, DecodeError, Event, FromEvent, Json, Key, Metadata, State};

type BoxError = Box<dyn StdError + Send + Sync>;
