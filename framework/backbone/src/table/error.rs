//! Why a table cannot answer, wait, be built or run.

use std::path::PathBuf;
use std::time::Duration;

use crate::consume::ConsumeError;

use super::*;

/// A key found on another partition than the one murmur2 names for it: its record was written by
/// a producer that does not use the Java client's partitioner (see the
/// [module docs](crate::table#the-partitioner-contract)). Keyed lookups never look there, so they answer
/// this instead of `None` or waiting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "table `{table}`: key `{key}` was written to partition {actual} of `{topic}`, but murmur2 places \
     it on partition {expected}: its producer does not use the Java client's (murmur2) partitioner"
)]
pub struct MisplacedKey {
    /// The table.
    pub table: String,
    /// The topic.
    pub topic: String,
    /// The key, as text (lossy; cut after 128 characters).
    pub key: String,
    /// The partition murmur2 names, where lookups look.
    pub expected: i32,
    /// The partition the record was read from.
    pub actual: i32,
}

/// Why a table cannot answer a read now. Each but [`NotReady::Misplaced`] is a 503 with
/// `Retry-After` for the HTTP layer ([`NotReady::status`], [`NotReady::retry_after`]); none is
/// "absent".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// The table holds no partitions: not running (yet, or any more), or waiting for the group.
    #[error("table `{table}` is not serving: not running, or no partitions assigned yet")]
    Starting {
        /// The table.
        table: String,
    },
    /// The key's partition is still being restored.
    #[error("table `{table}` is restoring partition {partition}")]
    Restoring {
        /// The table.
        table: String,
        /// The partition.
        partition: i32,
    },
    /// This instance does not hold the key's partition: another instance of the service does.
    #[error("partition {partition} of table `{table}` is held by another instance")]
    NotOwned {
        /// The table.
        table: String,
        /// The partition.
        partition: i32,
    },
    /// The key is absent from its partition but was read from another one: a producer broke the
    /// partitioner contract. Asking again does not help.
    #[error(transparent)]
    Misplaced(Box<MisplacedKey>),
}

impl NotReady {
    /// The HTTP status to answer: 503 Service Unavailable; 500 for [`NotReady::Misplaced`] (the
    /// topic's data breaks the contract: not the client's fault, and not passing).
    pub fn status(&self) -> u16 {
        match self {
            Self::Misplaced(_) => 500,
            _ => 503,
        }
    }

    /// Whether asking again later may answer: all but [`NotReady::Misplaced`].
    pub fn is_retriable(&self) -> bool {
        !matches!(self, Self::Misplaced(_))
    }

    /// The `Retry-After` to answer with.
    pub fn retry_after(&self) -> Duration {
        RETRY_AFTER
    }

    /// [`retry_after`](Self::retry_after) in whole seconds, as the header wants it.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after().as_secs().max(1)
    }
}

/// Why [`Table::wait_for`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The view had not applied the offset within the timeout.
    #[error(
        "table `{table}` has not applied offset {offset} of partition {partition} within {timeout:?} \
         (applied: {applied:?})"
    )]
    Timeout {
        /// The table.
        table: String,
        /// The partition.
        partition: i32,
        /// The offset waited for (-1 for [`Table::wait_until_key`]).
        offset: i64,
        /// The offset applied last, if the partition is held here.
        applied: Option<i64>,
        /// The timeout.
        timeout: Duration,
    },
    /// This instance does not hold the partition: another instance of the service does.
    #[error("partition {partition} of table `{table}` is held by another instance")]
    NotOwned {
        /// The table.
        table: String,
        /// The partition.
        partition: i32,
    },
    /// Where the partition ends could not be looked up ([`Table::sync`]).
    #[error("table `{table}`: cannot see where partition {partition} ends: {reason}")]
    End {
        /// The table.
        table: String,
        /// The partition.
        partition: i32,
        /// Why.
        reason: String,
    },
    /// The partition asked for is not one of the topic's (a consistency token naming a partition
    /// that does not exist, say): refused at once, nothing is kept for it.
    #[error(
        "table `{table}`: `{topic}` has no partition {partition} (its partitions are 0 to {})",
        partitions - 1
    )]
    NoSuchPartition {
        /// The table.
        table: String,
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many partitions the topic has.
        partitions: i32,
    },
    /// As many waits as the table allows ([`TableBuilder::max_waiters`]) are running: refused at
    /// once instead of queued.
    #[error("table `{table}`: {limit} waits are running already; try again later")]
    Busy {
        /// The table.
        table: String,
        /// The bound.
        limit: usize,
    },
    /// The key is absent from its partition but was read from another one: a producer broke the
    /// partitioner contract, and waiting would not find it.
    #[error(transparent)]
    Misplaced(Box<MisplacedKey>),
}

impl WaitError {
    /// Whether waiting again may succeed: not for [`WaitError::NoSuchPartition`] (the caller's
    /// mistake) nor [`WaitError::Misplaced`] (the data's).
    pub fn is_retriable(&self) -> bool {
        !matches!(self, Self::NoSuchPartition { .. } | Self::Misplaced(_))
    }
}

/// Why a table could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// Its consumer could not be created or failed.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// The local store could not be opened.
    #[error("table store `{path}`: {reason}")]
    Store {
        /// Its path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The client that looks at partition ends could not be created.
    #[error("table `{table}`: {reason}")]
    Client {
        /// The table.
        table: String,
        /// librdkafka's words.
        reason: String,
    },
    /// [`Table::run`] was called twice.
    #[error("table `{table}` is already running (or has run)")]
    AlreadyRunning {
        /// The table.
        table: String,
    },
}
