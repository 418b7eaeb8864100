//! Consuming: a handler subscribed to a topic in a consumer group, at least once.
//!
//! - **Consumer groups** named `<service>.<handler>` (overridable), with the cooperative-sticky
//!   assignor: instances of a service share the partitions; when one stops or dies the others take
//!   its partitions over.
//! - **Order per partition, concurrency across partitions**: each assigned partition gets its own
//!   queue (librdkafka's `rd_kafka_queue_get_partition`) and its own task that handles its events one
//!   at a time; at most [`Consumer::concurrency`] handlers run at once.
//! - **Cheap per event**: a partition's task takes up to 16 events from its queue at once, and each
//!   event stays where librdkafka read it (key, payload and headers are not copied; headers are
//!   parsed only if something asks for one). In the `consume` benchmark backbone reads about as fast
//!   as a raw rdkafka loop (0.94 to 1.21 times its rate); `native.rs`, the crate's one `unsafe`
//!   module, says how and why.
//! - **At least once**: an offset is stored only after its handler succeeded (or the event was
//!   dead-lettered), never past an event that has not. Stored offsets are committed every second, on
//!   revocation (before the partition moves on) and on shutdown, so a rebalance repeats at most the
//!   events in flight. Within one assignment no event is handled twice: librdkafka can hand one out
//!   again after the pause it applies on every rebalance, and the partition's task skips any offset
//!   below the next one it expects.
//! - **Backpressure**: each partition's queue holds at most [`Consumer::queue`] kilobytes and
//!   messages; when a handler is slow its queue fills and librdkafka stops fetching that partition, so
//!   memory stays bounded whatever the inflow.
//! - **Middleware**: every event goes through tower layers ([`crate::layer`]): tracing span continuing
//!   the producer's trace, correlation id, dead letters, the event's time budget (when set), a
//!   responder's reply step (for [`crate::request::responder`]), retry with backoff, the writer's
//!   schema, timeout, panic recovery, then yours.
//! - **Dead letters**: an event whose handler fails permanently, or past its retry budget, is
//!   published to the service's dead-letter topic for its source ([`dead_letter_topic`]) with
//!   headers naming its origin, and the partition moves on. If the dead-letter write fails, the offset
//!   is not stored, health reports degraded, and the write is retried: nothing is dropped silently.
//! - **Health**: the consumer is *starting* until it has its partitions, then ready; it is degraded
//!   while all brokers are unreachable. With a lag budget ([`Consumer::max_ready_lag`]) it is not
//!   ready (component `lag:<group>`) while its lag, all partitions together, exceeds it.
//! - **Metrics** ([`crate::observe`]): events consumed and handled, handler duration, failures and
//!   dead letters, lag per partition in records and seconds, rebalances, assigned partitions, commit
//!   failures.
//! - **Graceful shutdown** ([`Consumer::run`]'s future, e.g. [`crate::shutdown_signal`]): stop
//!   fetching, let the events in hand finish within the shutdown budget, commit, leave the group (the
//!   others take over at once, not after a session timeout).

mod blocking;
mod builder;
pub(crate) mod eos; // Exactly once: the consumer's transaction state, and the `Transaction` hooks see.
mod group;
mod hooks;
mod lag;
mod partition;
mod retry; // Replays of dead letters: the retry topic and its consumer.
mod run;
mod stack;
#[cfg(test)]
mod tests;
mod worker;

pub use builder::{ConsumeError, Consumer, MAX_EVENT_BUDGET};
pub use hooks::{ConsumerHooks, NoHooks};
pub use retry::replay_headers;

pub use crate::layer::naming::{dead_letter_topic, replays_to_source, retry_topic};
pub use crate::layer::{Retry, dead_letter_headers};
