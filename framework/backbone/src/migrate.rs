//! Breaking schema changes: a new versioned topic, and a way for old readers to keep working.
//!
//! A compatible change (a field added with a default, say) stays on its topic: the registry's rule
//! lets it through and readers resolve it. A **breaking** change goes to a new topic,
//! `<owner>.public.<event>-v<N+1>`, with its own contract file, and the owner keeps the old topic fed
//! until its readers have moved, in one of two ways:
//!
//! - **Dual publishing** ([`publish_both`]): the owner publishes every event to both topics, the old
//!   one converted. Simple, but the two writes are not atomic (at least once each).
//! - **A down-converter** ([`converter`]): the owner publishes only to the new topic; a
//!   consume-transform-produce process (a [`Consumer`]) converts each new event to the old schema
//!   and publishes it to the old topic, in the new topic's per-key order. Started from the beginning
//!   of the new topic it ports historic events too; pointed the other way (old → new) it backfills
//!   the new topic with history. At least once: a crash between publishing and committing repeats
//!   a converted event (the exactly-once flavour comes with transactions).
//!
//! Runnable: the `r11`/migration tests in `tests/migration.rs` show a v1-only reader served throughout
//! a v1 → v2 switch.

use std::sync::Arc;

use crate::consume::{ConsumeError, Consumer};
use crate::handler::{BoxedHandler, Event, HandlerError, Key, State};
use crate::publish::{Delivery, PublishError, Publisher};
use crate::runtime::Context;
use crate::schema::AvroEvent;
use crate::topic::TopicSpec;

/// What a converter holds: where to write and how to convert.
pub struct Conversion<From, To> {
    to: TopicSpec,
    convert: Box<dyn Fn(From) -> To + Send + Sync>,
}

impl<From, To> std::fmt::Debug for Conversion<From, To> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversion").field("to", &self.to.name()).finish_non_exhaustive()
    }
}

/// A consumer that converts every event of `from` with `convert` and publishes it, with its key,
/// through the context's publisher to `to` (in group `<service>.convert-<from>-to-<to>`; change it
/// with [`Consumer::in_group`]). The context's service must read `from` and own `to` (and the
/// dead-letter topic for `from`); events that do not decode go to the dead-letter topic as with any
/// consumer.
pub fn converter<From: AvroEvent, To: AvroEvent>(
    context: &Context,
    from: &TopicSpec,
    to: &TopicSpec,
    convert: impl Fn(From) -> To + Send + Sync + 'static,
) -> Result<Consumer<Arc<Conversion<From, To>>>, ConsumeError> {
    let state = Arc::new(Conversion { to: to.clone(), convert: Box::new(convert) });
    let handler = BoxedHandler::named(
        format!("convert-{}-to-{}", from.name(), to.name()),
        |Event(event): Event<From>,
         Key(key): Key<Vec<u8>>,
         State(conversion): State<Arc<Conversion<From, To>>>,
         publisher: Publisher| async move {
            let converted = (conversion.convert)(event);
            publisher
                .publish_event(&conversion.to, &key, &converted)
                .await
                .map(|_| ())
                .map_err(HandlerError::from)
        },
    );
    Consumer::new(context, from, handler, state)
}

/// Dual publishing: `new` to `new_topic` and `convert(&new)` to `old_topic`, both keyed `key`;
/// resolves once both are acknowledged (new first, then old).
pub async fn publish_both<New: AvroEvent, Old: AvroEvent>(
    publisher: &Publisher,
    key: &[u8],
    (new_topic, new): (&TopicSpec, &New),
    (old_topic, convert): (&TopicSpec, impl FnOnce(&New) -> Old),
) -> Result<(Delivery, Delivery), PublishError> {
    let old = convert(new);
    let (a, b) = futures::join!(
        publisher.publish_event(new_topic, key, new),
        publisher.publish_event(old_topic, key, &old)
    );
    Ok((a?, b?))
}
