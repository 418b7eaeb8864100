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
//! ## Where things live
//!
//! - [`topic`]: topics as code, the naming convention (`<owner>.public.<event>-v<N>`,
//!   `<owner>.private.<name>`) and durable defaults (replication 3, `min.insync.replicas` 2,
//!   unclean leader election off).
//! - [`service`]: a service's declaration and the ownership rules (single writer, private topics stay
//!   private), checked before anything touches Kafka; the start-up sequence.
//! - [`provision`]: plan and apply topics: create what is missing, report drift, apply safe config
//!   changes, refuse unsafe ones with what to do (also `backbone topics plan|apply`).
//! - [`publish`]: durable idempotent publishing (`acks=all`, idempotence on, keyed order in call
//!   order, backpressure), with headers for event type, producer, correlation id and W3C `traceparent`.
//! - [`handler`]: handlers as plain `async fn`s whose arguments are extractors (`Event<T>`, `Key<K>`,
//!   `Metadata`, `State<S>`, `Publisher` …), axum-style; `HandlerError` says retriable or permanent.
//! - [`consume`]: a handler subscribed in a consumer group, at least once, with retries, dead letters
//!   (origin in headers) and graceful shutdown.
//! - [`layer`]: middleware as tower layers over the per-event service: tracing span, correlation id,
//!   dead letters, retry, timeout, panic recovery, and yours, per consumer or service-wide.
//! - [`trace`]: W3C trace context on tracing spans, and the task's correlation id.
//! - [`health`]: degraded components and why, for the HTTP layer to serve.
//! - [`config`]: configuration from the environment, one clear error per bad value.
//! - [`error`]: the opaque top-level [`Error`]; each area has its own `#[non_exhaustive]` enum with
//!   `is_retriable()`.

pub mod config;
pub mod consume;
pub mod error;
pub mod handler;
pub mod health;
pub mod layer;
pub mod migrate;
pub mod provision;
pub mod publish;
pub mod schema;
pub mod service;
pub mod topic;
pub mod trace;

pub use config::{Config, ConfigError, Profile};
pub use error::{Error, Result};
pub use handler::{
    BoxedHandler, CorrelationId, Event, ExtractError, Handler, HandlerError, IncomingEvent, Json, Key,
    Metadata, State,
};
pub use provision::{Plan, ProvisionError, Provisioner};
pub use publish::{Delivery, Outgoing, Publish, PublishError, Publisher};
pub use service::{Running, Service, ServiceSpec};
pub use topic::{TopicError, TopicSpec};

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
