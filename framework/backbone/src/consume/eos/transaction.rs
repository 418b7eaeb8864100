//! The producer side of exactly once: the open transaction as hooks see it.

use std::fmt;
use std::time::Duration;

use crate::publish::{Context, Outgoing, PublishError, Publisher};
use crate::topic::TopicSpec;
use crate::trace;

/// The open transaction of an exactly-once consumer (see [`crate::consume::Consumer::exactly_once`]),
/// lent to [`crate::consume::ConsumerHooks::before_commit`] while the consumer commits: what is
/// published here commits with the consumed offsets, or not at all.
pub struct Transaction<'a> {
    publisher: &'a Publisher,
}

impl fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction").field("service", &self.publisher.service()).finish()
    }
}

impl<'a> Transaction<'a> {
    /// The transaction `publisher` (a transactional one) has open.
    pub(crate) fn new(publisher: &'a Publisher) -> Self {
        Self { publisher }
    }

    /// Adds `event` to the transaction. Synchronous: it enqueues the event and returns; the commit
    /// waits for its acknowledgement, and a write that fails aborts the whole transaction (the
    /// consumer then handles its events again). Fails at once if the service does not own `topic`.
    pub fn publish(&self, topic: &TopicSpec, event: Outgoing<'_>) -> Result<(), PublishError> {
        let publisher = self.publisher;
        publisher.admit(topic)?;
        // The span ends with the enqueue: the commit, not this call, waits for the acknowledgement.
        let span = trace::publish_span(topic.name());
        let context = Context::current(&span);
        let deadline = std::time::Instant::now() + publisher.delivery_timeout();
        loop {
            // The delivery future may go: the commit flushes, and fails if a write did.
            match publisher.enqueue(topic, &event, &context)? {
                Some(_delivery) => return Ok(()),
                // librdkafka's byte bound (no event says when there is room): back off briefly.
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                None => {
                    return Err(PublishError::TimedOut {
                        topic: topic.name().to_owned(),
                        timeout: publisher.delivery_timeout(),
                    });
                }
            }
        }
    }
}
