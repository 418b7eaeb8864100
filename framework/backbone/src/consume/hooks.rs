//! [`ConsumerHooks`]: what a [`Consumer`](super::Consumer) tells about its partitions, offsets and
//! transactions.

use super::eos::transaction::Transaction;
use crate::publish::PublishError;

/// Lifecycle hooks of a [`Consumer`](super::Consumer), called on its group thread (keep them quick).
/// Every method has a default that does nothing.
pub trait ConsumerHooks: Send + Sync + 'static {
    /// `partitions` of `topic` were assigned to this instance; their tasks have started.
    fn assigned(&self, topic: &str, partitions: &[i32]) {
        let _ = (topic, partitions);
    }

    /// `partitions` of `topic` were revoked from this instance, after their events in hand finished
    /// and their offsets were committed.
    fn revoked(&self, topic: &str, partitions: &[i32]) {
        let _ = (topic, partitions);
    }

    /// Offsets were committed: `(partition, next offset to handle)` of `topic`.
    fn committed(&self, topic: &str, offsets: &[(i32, i64)]) {
        let _ = (topic, offsets);
    }

    /// Where to start reading `partitions` of `topic`, about to be assigned to this instance:
    /// `(partition, offset)` for those that should not resume from the group's committed offset (a
    /// [`crate::table::Table`] replays from the beginning, or from its local store's offset). Called
    /// on the group thread before the assignment takes effect, so fetching starts there.
    fn start_offsets(&self, topic: &str, partitions: &[i32]) -> Vec<(i32, rdkafka::Offset)> {
        let _ = (topic, partitions);
        Vec::new()
    }

    /// librdkafka's statistics (every `statistics.interval.ms`: [`crate::observe::STATISTICS_INTERVAL`]
    /// unless set with [`Consumer::client_setting`](super::Consumer::client_setting)): fetch queue sizes, lag,
    /// broker round trips.
    fn statistics(&self, statistics: &rdkafka::Statistics) {
        let _ = statistics;
    }

    /// Exactly once only: the open transaction is about to commit with the handled offsets; every
    /// event in hand has finished and none starts until it ends. What `transaction` publishes
    /// commits with those offsets or not at all (the running totals' snapshot,
    /// [`crate::sourcing`]); an error aborts the transaction, and its events are handled again.
    /// Called on the committing thread: it holds the consumer up, so enqueue and return.
    fn before_commit(&self, transaction: &Transaction<'_>) -> Result<(), PublishError> {
        let _ = transaction;
        Ok(())
    }

    /// Exactly once only: the transaction [`before_commit`](Self::before_commit) saw ended,
    /// `committed` or aborted. After an abort its partitions are rewound to the last committed
    /// offsets and their events are handled again: forget what they changed in memory.
    fn transaction_ended(&self, committed: bool) {
        let _ = committed;
    }
}

/// No hooks.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl ConsumerHooks for NoHooks {}
