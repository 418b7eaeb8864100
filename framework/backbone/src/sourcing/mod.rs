//! Event sourcing and running totals: state kept as the events that made it.
//!
//! Three ways to keep keyed state on Kafka; pick by what the state is:
//!
//! | the state is | use | its topic holds | on restart |
//! |---|---|---|---|
//! | the latest value per key (a price, a stock level) | [`Table`](crate::table::Table) | a compacted topic: each record replaces its key | re-reads the topic (or what is newer than its local store) |
//! | an entity whose history matters (an order, an account) | [`Journal`] and an [`Aggregate`] | every change as an event, keyed by the entity id, kept | rebuilds an entity, or all of them (a projection), by replaying its events |
//! | totals over a stream (sales per product, a balance per account) | [`RunningTotals`] | a compacted private snapshot of the totals, committed with the consumed offsets | loads the snapshot, then resumes from the committed offsets |
//!
//! **Journal.** [`Journal::append`] publishes an event keyed by the entity's id, so an entity's
//! events share a partition and keep their order, and resolves with the [`Delivery`] (the
//! read-your-writes token). [`Journal::rebuild`] replays the entity's partition from the beginning
//! (`read_committed`) and folds its events with [`Aggregate::apply`], starting from
//! [`Default`]; [`Journal::project`] does so for every entity of the topic. A replay reads the whole
//! history: fine for an entity or a small topic, a one-off job for a large one. An entity read often
//! wants a [`Table`](crate::table::Table) of its current state beside the journal. Replays wait
//! for open transactions on what they read to end, so an event whose transaction aborts is never
//! applied, and one that committed just before is.
//!
//! **Running totals** (the "keep totals in memory, snapshot them" pattern). [`RunningTotals`] folds
//! each event of a topic into the total of its key, in memory, in an exactly-once consumer
//! ([`Consumer::exactly_once`]). Every transaction (about [`every`](RunningTotalsBuilder::every)
//! events, or every [`interval`](RunningTotalsBuilder::interval)) writes the totals it changed to
//! a compacted private snapshot topic **in the same Kafka transaction as the consumed offsets**
//! (through [`ConsumerHooks::before_commit`]), so the snapshot and the offsets never disagree; an
//! aborted transaction's changes are forgotten in memory too
//! ([`ConsumerHooks::transaction_ended`]), as its events are handled again. When a partition is assigned, its snapshot is read
//! (`read_committed`, once every transaction below its end has ended) before any event of it is
//! handled; the consumer then resumes from the committed offsets. A crash, a kill or a rebalance
//! therefore neither loses nor double-counts an event, and a restart replays only what came after the
//! last commit. Reads ([`RunningTotals::get`], [`RunningTotals::snapshot`]) see the totals as last
//! committed. A total's key is its event's key, and the snapshot has as many partitions as the
//! input (totals of input partition `p` live in snapshot partition `p`), so instances of a service
//! split the totals as they split the input.
//!
//! ```no_run
//! use backbone::consume::dead_letter_topic;
//! use backbone::sourcing::RunningTotals;
//! use backbone::{Config, Service, TopicSpec};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let sales = TopicSpec::public("shop", "sale", 1).partitions(6).build()?;
//! let totals = TopicSpec::private("shop", "sales-totals").partitions(6).compacted().build()?;
//! let spec = Service::new("shop")
//!     .owns(&sales)
//!     .owns(&totals)
//!     .owns(&dead_letter_topic("shop", &sales)?)
//!     .consumes(&sales)
//!     .spec()?;
//! let config = Config::from_env("shop")?;
//! let running = spec.start(&config).await?;
//! // The payload is the sale's amount in cents, as text; the key the product.
//! let fold = |total: &mut i64, amount: String| *total += amount.parse::<i64>().unwrap_or(0);
//! let per_product = RunningTotals::builder(&running.context(), &sales, &totals, fold).every(1_000).build()?;
//! per_product.run(backbone::shutdown_signal()).await?;
//! # Ok(())
//! # }
//! ```

mod error;
mod journal;
mod reader;
#[cfg(test)]
mod tests;
mod totals;

#[cfg(doc)]
use crate::consume::{Consumer, ConsumerHooks};
#[cfg(doc)]
use crate::publish::Delivery;

pub use error::SourcingError;
pub use journal::{Aggregate, Journal};
pub use totals::{RunningTotals, RunningTotalsBuilder, TotalValue, TotalsStats};
