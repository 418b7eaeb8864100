//! A whole service from one declaration: its topics, events, handlers, tables and HTTP routes, and
//! one call that runs it.
//!
//! [`App`] gathers what [`Service`], [`Consumer`], [`Table`](crate::table::Table) and an axum [`Router`] are wired from by
//! hand, and [`App::run`] does the start-up sequence in order:
//!
//! 1. validate the declaration ([`App::spec`]: names, ownership, every consumed topic's dead-letter
//!    topic, declared for you);
//! 2. start the service ([`ServiceSpec::start`]: refuse weak producer settings, register schemas,
//!    provision the owned topics, open the publisher);
//! 3. build the tables, then the state (which may hold them), then one [`Consumer`] per handler;
//! 4. serve HTTP on [`Config::http_addr`](crate::Config::http_addr): your routes, `/livez` (200 while the process serves:
//!    liveness, whatever Kafka does), `/healthz` (200 unless something is degraded) and `/readyz` (200 once every consumer has its partitions and every table has
//!    restored; 503 with `Retry-After` before, and again while shutting down), `/metrics`
//!    (Prometheus text, [`crate::observe`]; every request counted by route and status);
//!    your routes within [`crate::http::HttpLimits`] (request timeout, requests in progress, body
//!    size, header-read timeout, connections; [`App::http_limits`]), every error in the JSON
//!    problem shape;
//! 5. on `shutdown` (e.g. [`crate::shutdown_signal`]): stop being ready, stop the HTTP server, let
//!    the consumers finish the events in hand and commit, stop the tables, flush the publisher.
//!
//! If a consumer or table stops on its own (a fatal error), the rest is shut down the same way and
//! [`App::run`] returns the error.
//!
//! ```no_run
//! use backbone::app::App;
//! use backbone::{Config, Event, HandlerError, Publisher, State, TopicSpec};
//!
//! #[derive(Clone)]
//! struct Stock;
//!
//! async fn reserve(Event(order): Event<String>, State(_): State<Stock>, _out: Publisher) -> Result<(), HandlerError> {
//!     println!("{order}");
//!     Ok(())
//! }
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let created = TopicSpec::public("orders", "order-created", 1).build()?;
//! let reservations = TopicSpec::private("stock", "reservations").compacted().build()?;
//! let app = App::new("stock")
//!     .owns(&reservations)
//!     .consume(&created, reserve)              // group `stock.reserve`, dead letters declared
//!     .routes(axum::Router::new().route("/v1/ping", axum::routing::get(|| async { "pong" })));
//! app.run(&Config::from_env("stock")?, Stock, backbone::shutdown_signal()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Tests drive the same thing without a socket: [`App::start`] returns the [`Started`] parts (the
//! publisher, health, tables, and [`Started::router`] for `tower::ServiceExt::oneshot`), and
//! [`Started::shutdown`] stops them.
//!
//! `backbone::service!` and `#[backbone::handler]` write this declaration for you, with the
//! ownership checks done at compile time.

mod handlers;
mod start;
mod started;
mod tables;
#[cfg(test)]
mod tests;

pub use handlers::{HandlerDecl, HandlerInfo, HandlerOptions};
pub use start::{SPEC_FLAG, init_logging};
pub use started::Started;
pub use tables::Tables;

use axum::Router;

use self::tables::{ConfigureTable, TableDeclaration, TableOf};
use crate::consume::{ConsumeError, Consumer, dead_letter_topic, replays_to_source, retry_topic};
use crate::event::{BoundEvent, TopicDecl};
use crate::handler::{BoxedHandler, Handler, IntoOutcome};
use crate::http::HttpLimits;
use crate::layer::Layers;
use crate::schema::AvroEvent;
use crate::service::{Quotas, Service, ServiceSpec};
use crate::table::{TableBuilder, TableError, TableValue};
use crate::topic::{TopicError, TopicSpec};

/// Why a service declared with [`App`] could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The declaration breaks a rule (a name, ownership, a topic declared twice …).
    #[error("service declaration: {0}")]
    Declaration(#[from] TopicError),
    /// Start-up failed: configuration, schema registration, provisioning or the publisher.
    #[error("starting: {0}")]
    Start(#[from] crate::Error),
    /// A consumer could not start or stopped with an error.
    #[error("handler `{handler}`: {source}")]
    Consume {
        /// The handler.
        handler: String,
        /// Why.
        source: ConsumeError,
    },
    /// A table could not be built or stopped with an error.
    #[error(transparent)]
    Table(#[from] TableError),
    /// A table was asked for that the declaration does not have, or with another value type.
    #[error("no table of `{topic}` with values `{value}` is declared")]
    NoTable {
        /// The topic asked for.
        topic: String,
        /// The value type asked for.
        value: &'static str,
    },
    /// The HTTP server could not bind or failed.
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
    /// Building the state failed.
    #[error("building the state: {0}")]
    State(Box<dyn std::error::Error + Send + Sync>),
    /// A consumer or table stopped before it was asked to (without an error of its own).
    #[error("`{0}` stopped before shutdown")]
    Stopped(String),
}

impl AppError {
    /// Whether starting again may help: a start-up that failed on something transient.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Start(e) => e.is_retriable(),
            Self::Consume { source, .. } => source.is_retriable(),
            _ => false,
        }
    }
}

/// Something that names a topic: a built [`TopicSpec`] or a `const` [`TopicDecl`].
pub trait IntoTopicSpec {
    /// The spec (validated).
    fn into_topic_spec(self) -> Result<TopicSpec, TopicError>;
}

impl IntoTopicSpec for TopicSpec {
    fn into_topic_spec(self) -> Result<TopicSpec, TopicError> {
        Ok(self)
    }
}

impl IntoTopicSpec for &TopicSpec {
    fn into_topic_spec(self) -> Result<TopicSpec, TopicError> {
        Ok(self.clone())
    }
}

impl IntoTopicSpec for TopicDecl {
    fn into_topic_spec(self) -> Result<TopicSpec, TopicError> {
        self.spec()
    }
}

impl IntoTopicSpec for &TopicDecl {
    fn into_topic_spec(self) -> Result<TopicSpec, TopicError> {
        self.spec()
    }
}

type Configure<S> = Box<dyn FnOnce(Consumer<S>) -> Consumer<S> + Send>;

/// One handler subscribed to one topic.
struct Subscription<S> {
    topic: TopicSpec,
    handler: BoxedHandler<S>,
    options: HandlerOptions,
    configure: Option<Configure<S>>,
}

/// A service's whole declaration: topics, events, handlers, tables and HTTP routes. See the
/// [module docs](self).
#[must_use = "a service declaration does nothing until run"]
pub struct App<S> {
    name: String,
    service: Service,
    subscriptions: Vec<Subscription<S>>,
    tables: Vec<Box<dyn TableDeclaration>>,
    routes: Router<S>,
    http: HttpLimits,
    layers: Layers<S>,
    errors: Vec<TopicError>,
    await_inputs: bool,
}

impl<S> std::fmt::Debug for App<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("service", &self.service)
            .field("handlers", &self.subscriptions.iter().map(|s| s.handler.name()).collect::<Vec<_>>())
            .field("tables", &self.tables.iter().map(|t| t.topic().name()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<S: Clone + Send + Sync + 'static> App<S> {
    /// A service called `name`, with state `S` (handlers' `State<S>`, the routes' axum `State<S>`).
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            service: Service::new(name.clone()),
            name,
            subscriptions: Vec::new(),
            tables: Vec::new(),
            routes: Router::new(),
            http: HttpLimits::default(),
            layers: Layers::new(),
            errors: Vec::new(),
            await_inputs: true,
        }
    }

    fn with_topic(mut self, topic: impl IntoTopicSpec, add: impl FnOnce(Self, TopicSpec) -> Self) -> Self {
        match topic.into_topic_spec() {
            Ok(topic) => add(self, topic),
            Err(e) => {
                self.errors.push(e);
                self
            }
        }
    }

    /// Declares a topic this service owns (provisioned at start-up, written by this service alone).
    pub fn owns(self, topic: impl IntoTopicSpec) -> Self {
        self.with_topic(topic, |mut app, topic| {
            app.service = app.service.owns(&topic);
            app
        })
    }

    /// Declares that this service publishes Avro events `T` on `topic` (which it owns): the schema
    /// is registered at start-up ([`Service::event`]).
    pub fn event<T: AvroEvent>(self, topic: impl IntoTopicSpec) -> Self {
        self.with_topic(topic, |mut app, topic| {
            app.service = app.service.owns(&topic).event::<T>(&topic);
            app
        })
    }

    /// Declares that this service publishes the bound event `T` on its own topic
    /// ([`Publisher::emit`](crate::Publisher::emit)).
    pub fn publishes<T: BoundEvent>(self) -> Self {
        self.event::<T>(T::TOPIC).with_topic(T::TOPIC, |mut app, topic| {
            app.service = app.service.event_key::<T>(&topic, T::KEY_TYPE);
            app
        })
    }

    /// Subscribes `handler` to `topic` in group `<service>.<handler>`, at least once; its
    /// dead-letter topic is declared for you.
    pub fn consume<H: Handler<T, S, Output: IntoOutcome>, T: 'static>(
        self,
        topic: impl IntoTopicSpec,
        handler: H,
    ) -> Self {
        self.consume_with(topic, BoxedHandler::new(handler), HandlerOptions::new(), |c| c)
    }

    /// Subscribes a boxed handler with `options`, and `configure` for the rest of [`Consumer`]'s
    /// settings (retries, timeout, concurrency, layers …).
    pub fn consume_with(
        self,
        topic: impl IntoTopicSpec,
        handler: BoxedHandler<S>,
        options: HandlerOptions,
        configure: impl FnOnce(Consumer<S>) -> Consumer<S> + Send + 'static,
    ) -> Self {
        self.subscribe(topic, handler, options, Some(Box::new(configure)))
    }

    /// Subscribes a `#[backbone::handler]`: `app.handler::<reserve>()` (its topic, group and
    /// guarantee come from the declaration, and the events it emits are declared).
    pub fn handler<H: HandlerDecl<S>>(self) -> Self {
        H::declare(self).subscribe(H::TOPIC, H::handler(), H::OPTIONS, None)
    }

    /// [`handler`](Self::handler), with `configure` for the rest of [`Consumer`]'s settings
    /// (hooks, retries, timeout, concurrency …): `app.handler_with::<apply>(|c| c.hooks(cache))`.
    pub fn handler_with<H: HandlerDecl<S>>(
        self,
        configure: impl FnOnce(Consumer<S>) -> Consumer<S> + Send + 'static,
    ) -> Self {
        H::declare(self).subscribe(H::TOPIC, H::handler(), H::OPTIONS, Some(Box::new(configure)))
    }

    /// Declares that this service consumes `topic` and subscribes `handler` to it.
    fn subscribe(
        self,
        topic: impl IntoTopicSpec,
        handler: BoxedHandler<S>,
        options: HandlerOptions,
        configure: Option<Configure<S>>,
    ) -> Self {
        self.with_topic(topic, |mut app, topic| {
            app.service = app.service.consumes(&topic);
            app.subscriptions.push(Subscription { topic, handler, options, configure });
            app
        })
    }

    /// Declares a table of `topic` with values `V` (see [`crate::table`]): built and restored at
    /// start-up, handed to the state builder through [`Tables`]. A topic of this service's is
    /// owned (and provisioned); another service's is consumed.
    pub fn table<V: TableValue>(self, topic: impl IntoTopicSpec) -> Self {
        self.add_table::<V>(topic, None)
    }

    /// [`table`](Self::table), with `configure` for the rest of its settings:
    /// `app.table_with::<Order>(ORDERS, |t| t.replicated())`.
    pub fn table_with<V: TableValue>(
        self,
        topic: impl IntoTopicSpec,
        configure: impl FnOnce(TableBuilder<V>) -> TableBuilder<V> + Send + 'static,
    ) -> Self {
        self.add_table::<V>(topic, Some(Box::new(configure)))
    }

    fn add_table<V: TableValue>(
        self,
        topic: impl IntoTopicSpec,
        configure: Option<ConfigureTable<V>>,
    ) -> Self {
        self.with_topic(topic, |mut app, topic| {
            if topic.is_owned_by(&app.name) {
                app.service = app.service.owns(&topic);
            }
            app.service = app.service.consumes(&topic);
            app.tables.push(Box::new(TableOf::<V> { topic, configure }));
            app
        })
    }

    /// Declares that this service reads Avro events `T` on `topic` (`#[backbone::handler]` declares
    /// its `Event<T>`): estate checks hold the topic's producer to publishing that record.
    pub fn expects<T: AvroEvent>(self, topic: impl IntoTopicSpec) -> Self {
        self.with_topic(topic, |mut app, topic| {
            app.service = app.service.expects::<T>(&topic);
            app
        })
    }

    /// Declares the throughput quotas of this service's principal, in its spec
    /// ([`Service::quotas`]; `backbone estate apply` sets them on the cluster).
    pub fn quotas(mut self, quotas: Quotas) -> Self {
        self.service = self.service.quotas(quotas);
        self
    }

    /// [`expects`](Self::expects), keyed by `key` (a type name as [`BoundEvent::KEY_TYPE`] writes
    /// it): `#[backbone::handler]` declares its `Event<T>` so.
    pub fn expects_keyed<T: AvroEvent>(self, topic: impl IntoTopicSpec, key: &str) -> Self {
        self.with_topic(topic, |mut app, topic| {
            app.service = app.service.expects_keyed::<T>(&topic, key);
            app
        })
    }

    /// Adds `layers` around every handler (inside the built-in ones).
    pub fn layers(mut self, layers: &Layers<S>) -> Self {
        self.layers = std::mem::take(&mut self.layers).extend(layers);
        self
    }

    /// Adds HTTP routes (merged with those added before), served over the same state.
    pub fn routes(mut self, routes: Router<S>) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Whether [`run`](Self::run) first provisions the service's own topics and then waits until
    /// every topic it reads from other services exists (default: yes), so that services of an
    /// estate can start in any order: a service started before the one it reads from waits for it
    /// (not ready, logging what it waits for) instead of failing to subscribe. `false` starts at once
    /// and fails on a missing input topic. [`start`](Self::start) never waits.
    pub fn await_inputs(mut self, wait: bool) -> Self {
        self.await_inputs = wait;
        self
    }

    /// Holds the HTTP server to `limits` (request timeout, requests in progress, body size,
    /// header-read timeout, connections) instead of [`HttpLimits::default`]; see [`crate::http`].
    pub fn http_limits(mut self, limits: HttpLimits) -> Self {
        self.http = limits;
        self
    }

    /// The validated declaration: [`Service::spec`] with every consumed topic's dead-letter topic
    /// ([`dead_letter_topic`]) among the owned ones, and each handler's source's retry topic
    /// ([`retry_topic`], where `backbone dlq replay` writes), but for sources that are the service's
    /// own private topics, whose replays go back to the source ([`replays_to_source`]); and every
    /// consumer's group: a handler's `<service>.<handler>` (or its declared group), its retry
    /// consumer's `<group>.retry`, a table's `<service>.table.<topic>`. A group a `configure`
    /// closure sets with [`Consumer::in_group`] is not seen here.
    pub fn spec(&self) -> Result<ServiceSpec, TopicError> {
        if let Some(e) = self.errors.first() {
            return Err(e.clone());
        }
        let mut service = self.service.clone();
        let consumed =
            self.subscriptions.iter().map(|s| &s.topic).chain(self.tables.iter().map(|t| t.topic()));
        for topic in consumed {
            service = service.owns(&dead_letter_topic(&self.name, topic)?);
        }
        for subscription in &self.subscriptions {
            let group = match subscription.options.group {
                Some(group) => group.to_owned(),
                None => format!("{}.{}", self.name, subscription.handler.name()),
            };
            let exactly_once = subscription.options.exactly_once;
            service = service.consumer(&subscription.topic, &group, exactly_once);
            if !replays_to_source(&self.name, &subscription.topic) {
                let retries = retry_topic(&self.name, &subscription.topic)?;
                service = service.owns(&retries).consumer(&retries, format!("{group}.retry"), exactly_once);
            }
        }
        for table in &self.tables {
            let topic = table.topic();
            service = service.consumer(topic, format!("{}.table.{}", self.name, topic.name()), false);
        }
        service.spec()
    }
}
