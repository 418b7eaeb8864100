//! Tables: keyed state materialized from a compacted topic (Goka's group table, Kafka Streams'
//! KTable).
//!
//! Writes go to the topic (publish through the service's [`Publisher`]); the [`Table`] follows it:
//! each record sets its key, a tombstone deletes it. The view is served to the HTTP layer:
//!
//! - **Restore**: when a partition is assigned the table reads it from the start (or, with a local
//!   store, from where the store left off) up to the last record visible at assignment. Until then
//!   the service is not ready ([`HealthState::starting`] has `table:<name>`) and reads of that
//!   partition answer [`NotReady`], for a 503 with `Retry-After`: never stale data silently.
//! - **Partitioned**: the instances of a service share the table's partitions through one consumer
//!   group (`<service>.table.<name>`); an instance holds the partitions it owns and drops those it
//!   loses. [`Table::partition_for`] (the publisher's murmur2 partitioner) tells "not mine"
//!   ([`NotReady::NotOwned`]) from "absent" (`Ok(None)`).
//! - **Read your writes**: [`Publisher::publish`] resolves with a [`Delivery`] (partition and
//!   offset, the consistency token); [`Table::wait_for`] waits, without polling, until the view has
//!   applied it.
//! - **In memory by default**; [`TableBuilder::persistent`] adds a local store (redb: pure Rust, no
//!   dependencies, ACID) holding each partition's entries and the offset applied last, committed
//!   together. A restart reads the store and replays only what is newer: the consumer is sought to
//!   the stored offset + 1 when the partition is assigned (in the assignment itself, see
//!   [`ConsumerHooks::start_offsets`]), since the store, not the group's committed offset, says
//!   what the view holds.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use backbone::consume::dead_letter_topic;
//! use backbone::table::Table;
//! use backbone::{Config, Outgoing, Service, TopicSpec};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let levels = TopicSpec::private("stock", "levels").compacted().build()?;
//! let spec = Service::new("stock")
//!     .owns(&levels)
//!     .owns(&dead_letter_topic("stock", &levels)?)
//!     .consumes(&levels)
//!     .spec()?;
//! let config = Config::from_env("stock")?;
//! let running = spec.start(&config).await?;
//! let table = Table::<String>::builder(&running.context(), &levels)
//!     .persistent("/var/lib/stock/levels.redb")
//!     .build()?;
//! tokio::spawn({
//!     let table = table.clone();
//!     async move { table.run(backbone::shutdown_signal()).await }
//! });
//!
//! // A write, then a read that sees it.
//! let at = running.publisher().publish(&levels, Outgoing::new("Level", b"sku-1", b"7")).await?;
//! table.wait_for_delivery(at, Duration::from_secs(5)).await?;
//! assert_eq!(table.get("sku-1")?, Some("7".to_owned()));
//! # Ok(())
//! # }
//! ```
//!
//! Records the runtime dead-letters before the table sees them (a schema id the registry does not
//! know) are skipped; if such a record is the last of its partition, that partition stays restoring
//! until the next write to it.
//!
//! Waits are bounded: at most [`TableBuilder::max_waiters`] run at once (more are refused with
//! [`WaitError::Busy`]), and a wait for a partition the topic does not have (a consistency token
//! naming partition 7 of a topic of 6, say) is refused with [`WaitError::NoSuchPartition`] without
//! keeping anything for it.
//!
//! # The partitioner contract
//!
//! Keyed lookups ([`Table::get`], [`Table::wait_until_key`]) look for a key only on the partition
//! murmur2 names for it ([`partition_for`]: the Java client's default partitioner, and
//! librdkafka's `murmur2_random`, which backbone's [`Publisher`] uses). **Every producer writing a
//! keyed topic that a table follows must partition the same way.** librdkafka's default
//! (`consistent_random`, CRC32) does not, nor do most non-Java clients' defaults: set
//! `partitioner=murmur2_random` there (or write explicitly to [`partition_for`]'s partition).
//!
//! A record read from another partition than the one its key belongs on is a *misplaced key*. The
//! table counts it ([`Table::misplaced`], [`TableStats::misplaced`]), warns once per partition in
//! the log, and keeps it in the view of the partition it was read from (so the view still mirrors
//! the topic, [`Table::snapshot`] includes it, and a tombstone written the same way deletes it),
//! indexed as misplaced. A lookup of a key absent from its own partition but present as misplaced
//! on a partition this instance holds fails at once with [`NotReady::Misplaced`] /
//! [`WaitError::Misplaced`] (not retriable; the key, the partition murmur2 names and the one it was
//! read from), instead of answering "absent" or waiting for a record that never comes there. A
//! correctly placed record of the same key wins over a misplaced one. The index costs one key per
//! misplaced entry (bounded as the view is: by the topic's live keys), and is rebuilt from the
//! local store on restart. On a table split between instances, a misplaced key on a partition
//! another instance holds cannot be seen: there the lookup answers as if the key were absent.

mod builder;
mod error;
mod handle;
mod partition;
mod probe;
mod restore;
mod store;
#[cfg(test)]
mod tests;
mod view;
mod wait;

use std::time::Duration;

#[cfg(doc)]
use crate::consume::ConsumerHooks;
use crate::handler::Decode;
#[cfg(doc)]
use crate::health::HealthState;
#[cfg(doc)]
use crate::publish::{Delivery, Publisher};

pub use builder::TableBuilder;
pub use error::{MisplacedKey, NotReady, TableError, WaitError};
pub use handle::{Table, TableStats, TableStatus};
pub use partition::{parse_token, partition_for};

/// How long an HTTP client should wait before asking again while a table cannot answer.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How many waits ([`Table::wait_for`], [`Table::sync`], [`Table::wait_until_key`]) a table lets
/// run at once unless told otherwise ([`TableBuilder::max_waiters`]).
pub const DEFAULT_MAX_WAITERS: usize = 10_000;

/// What a table holds: decoded with [`Decode`] (`String`, `Vec<u8>`, [`crate::Json<T>`], Avro
/// events), cloned out by [`Table::get`].
pub trait TableValue: Decode + Clone + Send + Sync + 'static {}

impl<T: Decode + Clone + Send + Sync + 'static> TableValue for T {}
