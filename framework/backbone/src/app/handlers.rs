//! What `#[backbone::handler]` declares about a handler: its options, topic and name.

use super::App;
use crate::event::TopicDecl;
use crate::handler::BoxedHandler;

/// How a handler is subscribed: its consumer group and delivery guarantee. `const`, so
/// `#[backbone::handler(…)]` can write it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerOptions {
    pub(super) group: Option<&'static str>,
    pub(super) exactly_once: bool,
}

impl HandlerOptions {
    /// At least once, in group `<service>.<handler>`.
    pub const fn new() -> Self {
        Self { group: None, exactly_once: false }
    }

    /// In consumer group `group` instead.
    pub const fn group(mut self, group: &'static str) -> Self {
        self.group = Some(group);
        self
    }

    /// Exactly once ([`Consumer::exactly_once`](crate::consume::Consumer::exactly_once)).
    pub const fn exactly_once(mut self) -> Self {
        self.exactly_once = true;
        self
    }
}

/// What `#[backbone::handler]` declares about a handler, whatever the state: its name, the topic it
/// consumes and its options. `backbone::service!` reads [`TOPIC`](Self::TOPIC) in `const`.
pub trait HandlerInfo: 'static {
    /// The handler's name (its function's).
    const NAME: &'static str;
    /// The topic it consumes: its `Event<T>` argument's ([`BoundEvent::TOPIC`](crate::event::BoundEvent::TOPIC)), or the attribute's
    /// `topic = …`.
    const TOPIC: TopicDecl;
    /// Group and guarantee.
    const OPTIONS: HandlerOptions;
    /// The topics of the events it emits (`emits(…)`): the service must own them.
    const EMITS: &'static [TopicDecl];
}

/// A handler declared with `#[backbone::handler]`, for state `S`. The attribute implements it on a
/// type named like the function; [`App::handler`] takes it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `#[backbone::handler]` for state `{S}`",
    label = "not a handler declaration",
    note = "put `#[backbone::handler]` on the `async fn`; its `State<…>` argument must be the service's state"
)]
pub trait HandlerDecl<S>: HandlerInfo {
    /// The handler, boxed.
    fn handler() -> BoxedHandler<S>;

    /// Declares what the handler needs of the service besides its subscription: the events it
    /// emits ([`App::publishes`]).
    fn declare(app: App<S>) -> App<S>;
}
