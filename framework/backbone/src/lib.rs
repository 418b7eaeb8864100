//! # backbone
//!
//! A Rust framework for building microservices on Apache Kafka: events carry state between services,
//! HTTP answers queries. The framework makes the right thing the default.
//!
//! ## Quick start: declare a service and its topics
//!
//! ```
//! use backbone::{Service, topic::TopicSpec};
//!
//! let order_created = TopicSpec::public("orders", "order-created", 1).partitions(6).build()?;
//! let orders = Service::new("orders").owns(&order_created).spec()?;
//! println!("{}", orders.to_json());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Start a service and publish
//!
//! [`ServiceSpec::start`] refuses weak producer settings, provisions the owned topics and opens the
//! durable [`Publisher`]; [`Running::shutdown`] flushes. Runnable: `examples/quickstart.rs`
//! (`cargo run -p backbone --example quickstart` against `backbone dev up`).
//!
//! ## Declare a whole service
//!
//! [`app::App`] runs a service from one declaration (topics, events, handlers, tables, HTTP routes):
//! provisioning, schema registration, consumers, tables, `/healthz` and `/readyz`, graceful shutdown.
//! The macros write that declaration: `#[derive(Event)]` binds a type to its topic, key and schema
//! ([`BoundEvent`], so [`Publisher::emit`] needs neither), `#[handler]` declares an `async fn`
//! handler, and `service!` declares the service with its ownership checked at compile time.
//!
//! ## Where things live
//!
//! - [`app`]: a whole service from one declaration, and running it.
//! - [`event`]: events bound to their topic and key; topics declared in `const`.
//! - [`topic`]: topics as code, the naming convention (`<owner>.public.<event>-v<N>`,
//!   `<owner>.private.<name>`) and durable defaults (replication 3, `min.insync.replicas` 2,
//!   unclean leader election off).
//! - [`service`](mod@service): a service's declaration and the ownership rules (single writer, private topics stay
//!   private), checked before anything touches Kafka; the start-up sequence.
//! - [`provision`]: plan and apply topics: create what is missing, report drift, apply safe config
//!   changes, refuse unsafe ones with what to do (also `backbone topics plan|apply`).
//! - [`publish`]: durable idempotent publishing (`acks=all`, idempotence on, keyed order in call
//!   order, backpressure), with headers for event type, producer, correlation id and W3C `traceparent`.
//! - [`handler`](mod@handler): handlers as plain `async fn`s whose arguments are extractors (`Event<T>`, `Key<K>`,
//!   `Metadata`, `State<S>`, `Publisher` …), axum-style; `HandlerError` says retriable or permanent.
//! - [`consume`]: a handler subscribed in a consumer group, at least once, with retries, dead letters
//!   (origin in headers) and graceful shutdown.
//! - [`request`]: request/response over topics for callers that cannot call the responder directly:
//!   request id, reply-to and deadline in headers, per-request timeouts, bounded pending requests
//!   with metrics, one answer per request across rebalances; and when to prefer HTTP.
//! - [`table`]: keyed state from compacted topics: a view that follows the topic (tombstones
//!   delete), restored before the service is ready, split by partition between instances,
//!   read-your-writes with the publish's partition and offset, optionally kept in a local store.
//! - [`sourcing`]: event sourcing (an entity's events in a journal, rebuilt by replay; projections)
//!   and running totals kept in memory, snapshotted to a compacted topic in the same transaction as
//!   the consumed offsets; when to use which, and when a table instead.
//! - [`layer`]: middleware as tower layers over the per-event service: tracing span, correlation id,
//!   dead letters, retry, timeout, panic recovery, and yours, per consumer or service-wide.
//! - [`testing`]: a [`testing::Probe`] that tells a test what was published to a topic, decoded
//!   the way a handler would.
//! - [`trace`]: W3C trace context on tracing spans, and the task's correlation id.
//! - [`health`]: degraded components and why, for the HTTP layer to serve.
//! - [`config`]: configuration from the environment, one clear error per bad value.
//! - [`dev`]: development without a broker: librdkafka's mock cluster in the process, with
//!   provisioning creating topics through it (demos only; never a replacement for real brokers).
//! - [`error`]: the opaque top-level [`Error`]; each area has its own `#[non_exhaustive]` enum with
//!   `is_retriable()`.

pub mod app;
pub mod config;
pub mod consume;
pub mod dev;
pub mod error;
pub mod event;
pub mod handler;
pub mod health;
pub mod layer;
pub mod migrate;
pub mod provision;
pub mod publish;
pub mod request;
pub mod schema;
pub mod service;
pub mod sourcing;
pub mod table;
pub mod testing;
pub mod topic;
pub mod trace;

pub use app::App;
pub use config::{Config, ConfigError, Profile};
pub use error::{Error, Result};
pub use handler::{
    BoxedHandler, CorrelationId, Event, ExtractError, Handler, HandlerError, IncomingEvent, Json, Key,
    Metadata, State,
};
pub use provision::{Plan, ProvisionError, Provisioner};
pub use publish::{Delivery, Outgoing, Publish, PublishError, Publisher, Transaction};
pub use service::{Running, Service, ServiceSpec};
pub use topic::{TopicError, TopicSpec};

pub use backbone_macros::{AvroEvent, Event, handler, service};
pub use event::{BoundEvent, TopicDecl};

/// The axum version backbone serves HTTP with (for [`App::routes`]).
pub use axum;

/// What the code generated by backbone's macros refers to. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::app::{App, HandlerDecl, HandlerInfo, HandlerOptions};
    pub use crate::event::{BoundEvent, EventKey, TopicDecl, cached_spec};
    pub use crate::handler::{BoxedHandler, FromEvent, IntoOutcome};
    pub use crate::schema::{AvroEvent, parse_once};
    pub use crate::topic::{TopicError, TopicSpec};
    pub use apache_avro;
    pub use std::borrow::Cow;
    pub use std::sync::OnceLock;

    /// Names a handler argument in a compile error when it is not an extractor for state `S`.
    pub const fn assert_extractor<S, T: FromEvent<S>>() {}

    /// Names a handler in a compile error when its future is not `Send` (the runtime moves it
    /// between threads).
    pub fn assert_send<F: std::future::Future + Send>(future: F) -> F {
        future
    }

    /// Names a key field in a compile error when it cannot be a key.
    pub const fn assert_key<T: EventKey + ?Sized>() {}
}

/// Completes when the process is asked to stop: SIGTERM (what Kubernetes and docker send) or Ctrl-C.
/// Hand it to [`consume::Consumer::run`] (or `axum::serve(…).with_graceful_shutdown`) for a graceful
/// shutdown.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only"),
        }
    }
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::warn!(error = %e, "cannot listen for Ctrl-C; never shutting down on a signal");
        std::future::pending::<()>().await;
    }
}
