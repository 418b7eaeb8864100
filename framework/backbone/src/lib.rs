//! # backbone
//!
//! A Rust framework for building microservices on Apache Kafka: events carry state between services,
//! HTTP answers queries. The framework makes the right thing the default.
//!
//! Every section below points at a runnable example in `framework/backbone/examples/`; each starts
//! with `//! Run with …` and needs `cargo run -p backbone-cli -- dev up` (a local Kafka and schema
//! registry) unless it says otherwise. `cargo test -p backbone --test examples` runs them all
//! against the test kit's broker and registry.
//!
//! ## Quick start
//!
//! A service is declared once: what it owns, publishes, consumes and serves. `#[derive(Event)]`
//! binds a type to its topic, key field and Avro contract ([`BoundEvent`]: [`Publisher::emit`]
//! needs neither topic nor key); `#[handler]` declares an `async fn` handler whose arguments are
//! extractors; `service!` declares the service and checks at compile time that it writes only
//! topics it owns and reads no other service's private topic. [`app::App::run`] provisions the
//! topics, registers the schemas, starts the consumers and tables, serves HTTP (`/livez`,
//! `/healthz`, `/readyz`, `/metrics`, your routes) and shuts down gracefully on SIGTERM.
//!
//! ```ignore
//! #[derive(Clone, serde::Serialize, serde::Deserialize, backbone::Event)]
//! #[serde(rename_all = "camelCase")]
//! #[event(topic = ("warehouse", "order-checked", 1), key = order_id, schema = "schemas/warehouse/order-checked-v1.avsc")]
//! struct OrderChecked { order_id: String, passed: bool }
//!
//! #[backbone::handler(emits(OrderChecked))]
//! async fn check(Event(order): Event<OrderPlaced>, out: Publisher) -> Result<(), HandlerError> {
//!     out.emit(&OrderChecked { order_id: order.id, passed: order.quantity <= 10 }).await?;
//!     Ok(())
//! }
//!
//! backbone::service! {
//!     /// The warehouse: checks new orders.
//!     warehouse: Warehouse { handles check; routes routes(); }
//! }
//!
//! warehouse().run(&Config::from_env("warehouse")?, Warehouse::default(), backbone::shutdown_signal()).await?;
//! ```
//!
//! Runnable: `examples/service.rs`. The same without macros, step by step: `examples/quickstart.rs`
//! ([`ServiceSpec::start`] refuses weak producer settings, provisions, opens the durable
//! [`Publisher`]; [`Running::shutdown`] flushes). Publishing is durable by default: `acks=all`,
//! idempotence on, ordering-safe retries, keyed partitioning for per-entity order.
//!
//! ## Topics and ownership
//!
//! A topic's name says its owner and who may read it: `<owner>.public.<event>-v<N>` for contracts
//! other services read, `<owner>.private.<name>` for a service's own state. Only the owner writes a
//! topic; nobody else reads a private one. Both rules are checked when the service is declared
//! ([`Service::spec`]), by the [`Publisher`] before anything is sent, by `service!` at compile
//! time, and by Kafka ACLs on the broker (one SASL principal per service; see `deploy/`). Durable
//! defaults: replication 3, `min.insync.replicas` 2, unclean leader election off; one partition
//! for a global order. Runnable offline: `examples/ownership.rs` ([`topic`], [`provision`]).
//!
//! ## Handlers and layers
//!
//! A handler is a plain `async fn` whose arguments are extractors ([`Event`](struct@Event), [`Key`], [`Json`],
//! [`Metadata`], [`State`], [`Publisher`], [`CorrelationId`] …). A [`consume::Consumer`] subscribes
//! it in the group `<service>.<handler>` (or [`in_group`](consume::Consumer::in_group)). It is
//! built, as tables, requesters, responders, journals and running totals are, from the started
//! service's [`Context`] ([`Running::context`]: its configuration, declaration, publisher, health
//! and schema registry), with builder methods for what is optional. Instances share the partitions
//! (cooperative-sticky), each partition is handled in order by a task of its own, partitions concurrently; an offset is stored
//! only after its handler succeeded (at least once), committed every second, on revocation and on
//! shutdown. Every event passes through tower layers ([`layer`]): a tracing span continuing the
//! producer's `traceparent`, the correlation id, dead letters, the event's time budget (exactly
//! once), retry with backoff, the writer-schema fetch, a timeout, panic recovery, then yours (per
//! consumer, or shared with [`layer::Layers`]).
//! Runnable: `examples/handlers.rs` (a retried failure and a layer of its own).
//!
//! ## Dead letters
//!
//! An event that cannot be decoded, or whose handler fails permanently or past its retries, goes to
//! `<service>.private.dlq.<topic>` with its origin (topic, partition, offset, key), the error, the
//! handler and the attempts in headers ([`layer::dead_letter_headers`]); the partition flows on. If
//! that write fails, the partition waits and health says why: nothing is dropped silently.
//! `backbone dlq list|replay` shows and replays them. A replay goes to the service's own retry topic
//! `<service>.private.retry.<topic>` ([`consume::retry_topic`]), not back to the origin topic (another
//! service's: it would get a second writer, and every consumer group of it would see the event again):
//! [`App`] declares it and runs, next to each handler's consumer, one on the retry topic
//! ([`consume::Consumer::retries`], group `<group>.retry`) that handles only the replays naming its
//! handler and dead-letters a replay that fails again to the same dead-letter topic. So a replay
//! reaches the handler that failed and no other. Replays of a handler of the service's own private
//! topic go back to that topic instead ([`consume::replays_to_source`]), to be handled in order with
//! the key's live events, never beside them. Runnable: `examples/dead_letters.rs`.
//!
//! ## Schemas and evolution
//!
//! Public events are Avro contracts in `schemas/`, bound to their Rust types at compile time
//! (`#[derive(AvroEvent)]` / `#[derive(Event)]` check fields and types against the `.avsc`),
//! registered in a Confluent-compatible registry at start-up after a compatibility check: an
//! incompatible schema stops the service before anything is produced, naming the field. Consumers
//! decode by the writer's schema id into their own type, so compatible changes work both ways; a
//! breaking change goes to a new `-v<N+1>` topic with [`migrate`] keeping old readers fed.
//! `backbone schemas check` gates CI offline against git history. Runnable: `examples/schemas.rs`
//! ([`schema`]).
//!
//! ## Tables
//!
//! [`table::Table`] is a keyed view of a compacted topic: writes go to the topic, the view follows
//! it, a tombstone deletes. It is restored before the service is ready (reads answer
//! [`table::NotReady`], a 503 with `Retry-After`, meanwhile), split by partition between instances,
//! and a reader can wait for its own write with the publish's partition and offset
//! (read-your-writes). Runnable: `examples/tables.rs`.
//!
//! ## Exactly once, event sourcing, request/response
//!
//! [`consume::Consumer::exactly_once`] commits what a handler publishes and the offsets it consumed
//! in one Kafka transaction (KIP-447 fencing; readers use `read_committed`): `examples/exactly_once.rs`.
//! Each event gets a time budget below the transaction timeout ([`consume::MAX_EVENT_BUDGET`]; past it,
//! another try in a fresh transaction, a dead letter of kind `budget` on the third), and a consumer whose transactional producer is fenced joins again
//! with a new one from the last committed offsets.
//! [`sourcing`] keeps an entity's history in a journal and rebuilds it by replay, and keeps running
//! totals snapshotted in the same transaction as the offsets: `examples/running_totals.rs`.
//! [`request`] does commands and queries over topics where HTTP does not fit.
//!
//! ## Secured clusters
//!
//! [`Config::from_env`] reads SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), TLS with a CA file and
//! mutual TLS (a client certificate and key) into [`config::Security`], which every producer,
//! consumer and admin client gets through [`Config::client_config`]; the registry client sends
//! basic authentication from the URL's user info or `SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`
//! ([`config::RegistrySecurity`]). Passwords are [`config::Secret`]s: `Debug`, `Display` and
//! `Serialize` print `***`, so a logged or serialized [`Config`] carries none.
//!
//! ```sh
//! KAFKA_BOOTSTRAP_SERVERS=kafka-0.example:9093
//! KAFKA_SECURITY_PROTOCOL=SASL_SSL          # or SSL for mutual TLS, SASL_PLAINTEXT, PLAINTEXT
//! KAFKA_SASL_MECHANISM=SCRAM-SHA-512
//! KAFKA_SASL_USERNAME=orders                # the default is the service's name
//! KAFKA_SASL_PASSWORD=…
//! KAFKA_SSL_CA_LOCATION=/etc/kafka/ca.pem   # the CA that signed the brokers' certificates
//! # mutual TLS (KAFKA_SECURITY_PROTOCOL=SSL): the certificate's subject is the principal
//! # KAFKA_SSL_CERTIFICATE_LOCATION=/etc/kafka/orders.crt.pem
//! # KAFKA_SSL_KEY_LOCATION=/etc/kafka/orders.key.pem
//! SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=orders:…
//! ```
//!
//! Start-up fails fast, never waiting out a timeout, and names the principal: wrong credentials or
//! an untrusted certificate are [`provision::ProvisionError::Unauthenticated`] (librdkafka reports
//! them to the client's error callback, which the first metadata request watches), a missing ACL is
//! [`provision::ProvisionError::NotAuthorized`] with the refused operation and topic; neither is
//! retriable. `backbone-testkit` proves each mode on a real broker (`KafkaClusterBuilder::scram`,
//! `tls`, `mtls`; `tests/secured.rs`).
//!
//! ## Metrics
//!
//! Every service built with [`app::App`] serves `/metrics` in Prometheus text format beside
//! `/healthz` and `/readyz` ([`observe`]: the `metrics` facade's handles, rendered by
//! `metrics-exporter-prometheus` into the service's own route; one registry per service). Names
//! carry a `backbone_` prefix; labels are OpenTelemetry messaging attributes
//! (`messaging_destination_name` for the topic, `messaging_consumer_group_name`,
//! `messaging_destination_partition_id`) and `handler`:
//!
//! - per topic and handler: `backbone_events_consumed_total`, `_handled_total`, `_failed_total`,
//!   `_retried_total`, `_dead_lettered_total` (all `backbone_events_…`), and the
//!   `backbone_handler_duration_seconds` histogram;
//! - per partition: `backbone_consumer_lag_records` (high watermark − next offset to handle) and
//!   `backbone_consumer_lag_seconds` (age of the oldest unhandled event), from librdkafka's
//!   statistics every [`observe::STATISTICS_INTERVAL`] (`statistics.interval.ms` overrides it);
//!   per consumer: `backbone_consumer_rebalances_total`, `_assigned_partitions`,
//!   `_commit_failures_total`, `_paused_partitions` (held by a dead letter that cannot be written),
//!   and the `backbone_consumer_commit_duration_seconds` histogram;
//!   exactly once: `backbone_transactions_committed_total`, `_aborted_total`, and the
//!   `backbone_transaction_duration_seconds` histogram (first event to commit);
//! - tables per partition: `backbone_table_restore_remaining_records`, `_remaining_seconds` (an
//!   estimate from the restore's pace so far), `backbone_table_entries`;
//! - publishing per topic: `backbone_events_published_total`, `backbone_publish_failures_total`,
//!   the `backbone_publish_duration_seconds` histogram (call to acknowledgement); the producer's
//!   `backbone_producer_queue_messages` and `backbone_producer_throttle_seconds`;
//! - HTTP: `backbone_http_requests_total` and the `backbone_http_request_duration_seconds`
//!   histogram by `http_route` (axum's matched path), `http_request_method`,
//!   `http_response_status_code`.
//!
//! Readiness can follow lag: [`consume::Consumer::max_ready_lag`] takes a consumer out of rotation
//! (`/readyz` 503, component `lag:<group>`) while its lag exceeds a budget in records (off by
//! default). `tests/metrics.rs` proves all this on a real broker and checks the exposition with
//! Prometheus's `promtool check metrics`.
//!
//! ## Traces
//!
//! [`app::App::main`] installs [`trace::init`]: JSON logs, and W3C trace context on spans
//! ([`trace::TraceContextLayer`]). An HTTP request's span continues the caller's `traceparent`; an
//! event published carries the current span's; a handler's span ([`layer::TracingLayer`])
//! continues the event's. Spans follow OpenTelemetry's conventions (`otel.name`, `otel.kind`,
//! `messaging.*` and `http.*` attributes). With the `otlp` feature and
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, `trace::otlp::OtlpLayer` exports them over OTLP/HTTP with
//! the same ids, and a producer span per published event. `estate/tests/traces.rs` follows one
//! order through both sample services.
//!
//! ## Testing your service
//!
//! `backbone-testkit` starts a real Kafka (KRaft) and schema registry per test binary, fetched from
//! Maven Central (no docker); [`testing::Probe`] asserts what a service published ("this event, with
//! this key, on this topic", decoded as a handler would); [`app::App::start`] runs a service without
//! a socket, its [`app::Started::router`] answering through `tower::ServiceExt::oneshot`. Runnable:
//! `examples/testing.rs`; `backbone new service NAME` scaffolds a service with such a test.
//!
//! ## Where things live
//!
//! - [`app`]: a whole service from one declaration, and running it.
//! - [`event`]: events bound to their topic and key; topics declared in `const`.
//! - [`topic`]: topics as code, the naming convention (`<owner>.public.<event>-v<N>`,
//!   `<owner>.private.<name>`) and durable defaults (replication 3, `min.insync.replicas` 2,
//!   unclean leader election off).
//! - [`service`](mod@service): a service's declaration and the ownership rules (single writer, private topics stay
//!   private), checked before anything touches Kafka. [`ServiceSpec::start`] runs the start-up
//!   sequence and returns the [`Running`] service, whose [`Context`] the service's consumers,
//!   tables, requesters, responders, journals and running totals are built from.
//! - [`provision`]: plan and apply topics: create what is missing, report drift, apply safe config
//!   changes, refuse unsafe ones with what to do (also `backbone topics plan|apply`).
//! - [`publish`]: durable idempotent publishing (`acks=all`, idempotence on, keyed order in call
//!   order, backpressure), with minimal metadata headers: W3C `traceparent`, and the event type and
//!   correlation id only when they add information (see [`headers`]).
//! - [`handler`](mod@handler): handlers as plain `async fn`s whose arguments are extractors (`Event<T>`, `Key<K>`,
//!   `Metadata`, `State<S>`, `Publisher` …), axum-style; `HandlerError` says retriable or permanent.
//! - [`consume`]: a handler subscribed in a consumer group, at least once, with retries, dead letters
//!   (origin in headers) and graceful shutdown.
//! - [`request`]: request/response over topics for callers that cannot call the responder directly:
//!   request id, reply-to and deadline in headers, per-request timeouts, bounded pending requests
//!   with metrics, one answer per request across rebalances; the responder's handler is an ordinary
//!   handler returning the reply, under the consumer's layers; and when to prefer HTTP.
//! - [`table`]: keyed state from compacted topics: a view that follows the topic (tombstones
//!   delete), restored before the service is ready, split by partition between instances,
//!   read-your-writes with the publish's partition and offset, optionally kept in a local store.
//! - [`sourcing`]: event sourcing (an entity's events in a journal, rebuilt by replay; projections)
//!   and running totals kept in memory, snapshotted to a compacted topic in the same transaction as
//!   the consumed offsets; when to use which, and when a table instead.
//! - [`layer`]: middleware as tower layers over the per-event service: tracing span, correlation id,
//!   dead letters, the exactly-once time budget, retry, the writer schema, timeout, panic recovery,
//!   and yours, per consumer or service-wide.
//! - [`http`]: the limits every request is held to and the problem shape every error answers in
//!   ([`http::HttpError`]).
//! - [`testing`]: a [`testing::Probe`] that tells a test what was published to a topic, decoded
//!   the way a handler would.
//! - [`trace`]: W3C trace context on tracing spans, and the task's correlation id.
//! - [`headers`]: every Kafka header name backbone writes or reads, declared once.
//! - [`health`]: degraded components and why, for the HTTP layer to serve.
//! - [`config`]: configuration from the environment, one clear error per bad value.
//! - [`dev`]: development without a broker: librdkafka's mock cluster in the process, with
//!   provisioning creating topics through it (demos only; never a replacement for real brokers).
//! - [`error`]: the opaque top-level [`Error`]; each area has its own `#[non_exhaustive]` enum with
//!   `is_retriable()`.

pub mod app;
mod backoff; // The one backoff (exponential, capped, with jitter) of the framework's retry loops.
pub mod config;
pub mod consume;
pub mod dev;
pub mod error;
pub mod event;
pub mod handler;
pub mod headers;
pub mod health;
pub mod http;
pub mod layer;
pub mod migrate;
mod native; // The crate's only `unsafe`: librdkafka on the consumer's hot path (it says why).
pub mod observe;
pub mod provision;
pub mod publish;
mod reader; // Readers that assign their partitions, without a consumer group.
pub mod request;
mod runtime; // `ServiceSpec::start` and the `Running` service (re-exported here and in `service`).
pub mod schema;
pub mod service;
pub mod sourcing;
pub mod table;
pub mod testing;
pub mod topic;
pub mod trace;

pub use app::App;
pub use config::{Config, ConfigError, Profile, Provisioning};
pub use error::{Error, Result};
pub use handler::{
    BoxedHandler, CorrelationId, Event, ExtractError, Handler, HandlerError, IncomingEvent, Json, Key,
    Metadata, State,
};
pub use provision::{Plan, ProvisionError, Provisioner};
pub use publish::{Delivery, Outgoing, Publish, PublishError, Publisher, Transaction};
pub use runtime::{Context, Running};
pub use service::{ConsumerBinding, EventBinding, ExpectedEvent, Quotas, Service, ServiceSpec};
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
