//! A whole service from one declaration: its topics, events, handlers, tables and HTTP routes, and
//! one call that runs it.
//!
//! [`App`] gathers what [`Service`], [`Consumer`], [`Table`] and an axum [`Router`] are wired from by
//! hand, and [`App::run`] does the start-up sequence in order:
//!
//! 1. validate the declaration ([`App::spec`]: names, ownership, every consumed topic's dead-letter
//!    topic, declared for you);
//! 2. start the service ([`ServiceSpec::start`]: refuse weak producer settings, register schemas,
//!    provision the owned topics, open the publisher);
//! 3. build the tables, then the state (which may hold them), then one [`Consumer`] per handler;
//! 4. serve HTTP on [`Config::http_addr`]: your routes, `/healthz` (200 unless something is
//!    degraded) and `/readyz` (200 once every consumer has its partitions and every table has
//!    restored; 503 with `Retry-After` before, and again while shutting down);
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

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::consume::{ConsumeError, Consumer, dead_letter_topic, retry_topic};
use crate::event::{BoundEvent, TopicDecl};
use crate::handler::{BoxedHandler, Handler};
use crate::health::HealthState;
use crate::http::HttpLimits;
use crate::layer::Layers;
use crate::publish::Publisher;
use crate::schema::AvroEvent;
use crate::service::{Running, Service, ServiceSpec};
use crate::table::{Table, TableBuilder, TableError, TableValue};
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

/// How a handler is subscribed: its consumer group and delivery guarantee. `const`, so
/// `#[backbone::handler(…)]` can write it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerOptions {
    group: Option<&'static str>,
    exactly_once: bool,
}

impl HandlerOptions {
    /// At least once, in group `<service>.<handler>`.
    pub const fn new() -> Self {
        Self { group: None, exactly_once: false }
    }

    /// In consumer group `group` instead.
    pub const fn group(mut self, group: &'static str) -> Self {
        self.group = Some(group);
        self
    }

    /// Exactly once ([`Consumer::exactly_once`]).
    pub const fn exactly_once(mut self) -> Self {
        self.exactly_once = true;
        self
    }
}

/// What `#[backbone::handler]` declares about a handler, whatever the state: its name, the topic it
/// consumes and its options. `backbone::service!` reads [`TOPIC`](Self::TOPIC) in `const`.
pub trait HandlerInfo: 'static {
    /// The handler's name (its function's).
    const NAME: &'static str;
    /// The topic it consumes: its `Event<T>` argument's ([`BoundEvent::TOPIC`]), or the attribute's
    /// `topic = …`.
    const TOPIC: TopicDecl;
    /// Group and guarantee.
    const OPTIONS: HandlerOptions;
    /// The topics of the events it emits (`emits(…)`): the service must own them.
    const EMITS: &'static [TopicDecl];
}

/// A handler declared with `#[backbone::handler]`, for state `S`. The attribute implements it on a
/// type named like the function; [`App::handler`] takes it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `#[backbone::handler]` for state `{S}`",
    label = "not a handler declaration",
    note = "put `#[backbone::handler]` on the `async fn`; its `State<…>` argument must be the service's state"
)]
pub trait HandlerDecl<S>: HandlerInfo {
    /// The handler, boxed.
    fn handler() -> BoxedHandler<S>;

    /// Declares what the handler needs of the service besides its subscription: the events it
    /// emits ([`App::publishes`]).
    fn declare(app: App<S>) -> App<S>;
}

type Configure<S> = Box<dyn FnOnce(Consumer<S>) -> Consumer<S> + Send>;

/// One handler subscribed to one topic.
struct Subscription<S> {
    topic: TopicSpec,
    handler: BoxedHandler<S>,
    options: HandlerOptions,
    configure: Option<Configure<S>>,
}

/// A table, its value type erased until start-up.
trait TableDeclaration: Send {
    fn topic(&self) -> &TopicSpec;
    fn build(
        self: Box<Self>,
        config: &Config,
        spec: &ServiceSpec,
        publisher: Publisher,
    ) -> Result<BuiltTable, TableError>;
}

type ConfigureTable<V> = Box<dyn FnOnce(TableBuilder<V>) -> TableBuilder<V> + Send>;

struct TableOf<V> {
    topic: TopicSpec,
    configure: Option<ConfigureTable<V>>,
}

type StopSignal = BoxFuture<'static, ()>;

struct BuiltTable {
    topic: String,
    component: String,
    handle: Box<dyn Any + Send + Sync>,
    run: Box<dyn FnOnce(StopSignal) -> BoxFuture<'static, Result<(), AppError>> + Send>,
}

impl<V: TableValue> TableDeclaration for TableOf<V> {
    fn topic(&self) -> &TopicSpec {
        &self.topic
    }

    fn build(
        self: Box<Self>,
        config: &Config,
        spec: &ServiceSpec,
        publisher: Publisher,
    ) -> Result<BuiltTable, TableError> {
        let mut builder = Table::<V>::builder(config, spec, &self.topic, publisher);
        if let Some(configure) = self.configure {
            builder = configure(builder);
        }
        let table = builder.build()?;
        let runner = table.clone();
        Ok(BuiltTable {
            topic: self.topic.name().to_owned(),
            component: table.component().to_owned(),
            handle: Box::new(table),
            run: Box::new(move |stop| {
                Box::pin(async move { runner.run(stop).await.map_err(AppError::from) })
            }),
        })
    }
}

/// The tables of a started service, for building its state: [`Tables::get`]; and its
/// [`publisher`](Tables::publisher), for routes that publish.
pub struct Tables {
    by_topic: HashMap<String, Box<dyn Any + Send + Sync>>,
    publisher: Publisher,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_topic.keys()).finish()
    }
}

impl Tables {
    /// The table of `topic` (declared with [`App::table`]), with values `V`.
    pub fn get<V: TableValue>(&self, topic: impl IntoTopicSpec) -> Result<Table<V>, AppError> {
        let topic = topic.into_topic_spec()?;
        self.by_topic.get(topic.name()).and_then(|t| t.downcast_ref::<Table<V>>()).cloned().ok_or_else(|| {
            AppError::NoTable { topic: topic.name().to_owned(), value: std::any::type_name::<V>() }
        })
    }

    /// The table of `T`'s own topic, with values `T` (`table T;` in `backbone::service!`).
    pub fn of<T: BoundEvent + TableValue>(&self) -> Result<Table<T>, AppError> {
        self.get::<T>(T::TOPIC)
    }

    /// The service's publisher, for a state whose HTTP routes publish (a `POST` writing an event).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }
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
    /// ([`Publisher::emit`]).
    pub fn publishes<T: BoundEvent>(self) -> Self {
        self.event::<T>(T::TOPIC)
    }

    /// Subscribes `handler` to `topic` in group `<service>.<handler>`, at least once; its
    /// dead-letter topic is declared for you.
    pub fn consume<H: Handler<T, S>, T: 'static>(self, topic: impl IntoTopicSpec, handler: H) -> Self {
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

    /// Holds the HTTP server to `limits` (request timeout, requests in progress, body size,
    /// header-read timeout, connections) instead of [`HttpLimits::default`]; see [`crate::http`].
    pub fn http_limits(mut self, limits: HttpLimits) -> Self {
        self.http = limits;
        self
    }

    /// The validated declaration: [`Service::spec`] with every consumed topic's dead-letter topic
    /// ([`dead_letter_topic`]) among the owned ones, and each handler's source's retry topic
    /// ([`retry_topic`], where `backbone dlq replay` writes).
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
            service = service.owns(&retry_topic(&self.name, &subscription.topic)?);
        }
        service.spec()
    }

    /// Starts everything but the HTTP server, with `state` (see [`start_with`](Self::start_with)).
    pub async fn start(self, config: &Config, state: S) -> Result<Started<S>, AppError> {
        self.start_with(config, |_| Ok(state)).await
    }

    /// Starts everything but the HTTP server: the service (schemas, topics, publisher), the tables,
    /// then the state from `make_state` (which may take the tables), then the consumers. The
    /// returned [`Started`] holds the parts and the [`Router`] to serve.
    pub async fn start_with(
        self,
        config: &Config,
        make_state: impl FnOnce(&Tables) -> Result<S, AppError>,
    ) -> Result<Started<S>, AppError> {
        let spec = self.spec()?;
        let running = spec.start(config).await?;
        let http = self.http;
        match self.start_parts(config, &spec, &running, make_state) {
            Ok(Parts { router, tasks, stop, tables, state }) => {
                tracing::info!(service = %spec.name(), "started");
                Ok(Started { running, router, http, tasks, stop, tables: Arc::new(tables), state })
            }
            Err(e) => {
                // Nothing was spawned; what the publisher holds is flushed.
                if let Err(flush) = running.shutdown().await {
                    tracing::warn!(error = %flush, "flushing after a failed start");
                }
                Err(e)
            }
        }
    }

    /// The tables, the state, the consumers (spawned) and the router, once the service has started.
    fn start_parts(
        self,
        config: &Config,
        spec: &ServiceSpec,
        running: &Running,
        make_state: impl FnOnce(&Tables) -> Result<S, AppError>,
    ) -> Result<Parts<S>, AppError> {
        let publisher = running.publisher().clone();
        let health = running.health().clone();
        let (stop, _) = watch::channel(false);
        let stop_signal = |stop: &watch::Sender<bool>| -> StopSignal {
            let mut watching = stop.subscribe();
            Box::pin(async move {
                let _ = watching.wait_for(|stopping| *stopping).await;
            })
        };
        let mut tasks = JoinSet::new();
        let mut tables = Tables { by_topic: HashMap::new(), publisher: publisher.clone() };
        let mut runs = Vec::new();
        for declaration in self.tables {
            let built = declaration.build(config, spec, publisher.clone())?;
            tables.by_topic.insert(built.topic, built.handle);
            runs.push((built.component, built.run));
        }
        let state = make_state(&tables)?;
        let mut consumers = Vec::new();
        for s in self.subscriptions {
            let name = s.handler.name().to_owned();
            let consume_error = |source| AppError::Consume { handler: name.clone(), source };
            let mut consumer = Consumer::new(
                config,
                spec,
                &s.topic,
                s.handler,
                state.clone(),
                publisher.clone(),
                s.options.group,
            )
            .map_err(consume_error)?
            .layers(&self.layers);
            if s.options.exactly_once {
                consumer = consumer.exactly_once();
                if let Some(instance) = &config.instance_id {
                    let id = format!("{}.{instance}", consumer.group());
                    consumer = consumer.transactional_id(id);
                }
            }
            if let Some(configure) = s.configure {
                consumer = configure(consumer);
            }
            // Replayed dead letters come back on the retry topic, to a second consumer.
            let retries = consumer.retries().map_err(consume_error)?;
            for consumer in [consumer, retries] {
                // Not ready from now on, not only once the task has started.
                let component = format!("consumer:{}", consumer.group());
                health.starting(&component, format!("waiting for partitions of `{}`", consumer.topic_name()));
                consumers.push((component, name.clone(), consumer));
            }
        }
        for (component, run) in runs {
            let stopping = stop_signal(&stop);
            tasks.spawn(async move { (component, run(stopping).await) });
        }
        for (component, name, consumer) in consumers {
            let stopping = stop_signal(&stop);
            tasks.spawn(async move {
                let outcome = consumer.run(stopping).await;
                (component, outcome.map_err(|source| AppError::Consume { handler: name, source }))
            });
        }
        // The service's routes within the limits; health answers beside them (a busy service is
        // not a dead one); every error in the problem shape.
        let routes = crate::http::limit(self.routes, &self.http).merge(health_routes(&health));
        let router = crate::http::problems(routes, &self.http).with_state(state.clone());
        Ok(Parts { router, tasks, stop, tables, state })
    }

    /// Runs the service until `shutdown` completes: [`start_with`](Self::start_with), then
    /// [`Started::serve`] on [`Config::http_addr`].
    pub async fn run(
        self,
        config: &Config,
        state: S,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AppError> {
        self.run_with(config, |_| Ok(state), shutdown).await
    }

    /// [`run`](Self::run) with a state built from the tables.
    pub async fn run_with(
        self,
        config: &Config,
        make_state: impl FnOnce(&Tables) -> Result<S, AppError>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AppError> {
        let started = self.start_with(config, make_state).await?;
        let listener = match tokio::net::TcpListener::bind(config.http_addr).await {
            Ok(listener) => listener,
            Err(e) => {
                let _ = started.shutdown().await;
                return Err(e.into());
            }
        };
        tracing::info!(addr = %config.http_addr, "serving HTTP");
        started.serve(listener, shutdown).await
    }
}

/// `/healthz` and `/readyz` over `health`.
fn health_routes<S: Clone + Send + Sync + 'static>(health: &HealthState) -> Router<S> {
    use axum::routing::get;
    let live = health.clone();
    let ready = health.clone();
    Router::new()
        .route(
            "/healthz",
            get(move || {
                let now = live.snapshot();
                async move {
                    let status =
                        if now.is_healthy() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    (status, axum::Json(now)).into_response()
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let now = ready.snapshot();
                async move {
                    if now.is_ready() {
                        (StatusCode::OK, axum::Json(now)).into_response()
                    } else {
                        let mut response: Response =
                            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(now)).into_response();
                        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                        response
                    }
                }
            }),
        )
}

/// What [`Started`] holds besides the running service.
struct Parts<S> {
    router: Router,
    tasks: JoinSet<(String, Result<(), AppError>)>,
    stop: watch::Sender<bool>,
    tables: Tables,
    state: S,
}

/// The health component that keeps a stopping service out of rotation.
const SHUTDOWN_COMPONENT: &str = "shutdown";

/// A started service: consumers and tables running, the HTTP router ready to serve.
pub struct Started<S> {
    running: Running,
    router: Router,
    http: HttpLimits,
    tasks: JoinSet<(String, Result<(), AppError>)>,
    stop: watch::Sender<bool>,
    tables: Arc<Tables>,
    state: S,
}

impl<S> std::fmt::Debug for Started<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("service", &self.running.spec().name())
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl<S> Started<S> {
    /// The service's declaration.
    pub fn spec(&self) -> &ServiceSpec {
        self.running.spec()
    }

    /// The service's publisher.
    pub fn publisher(&self) -> &Publisher {
        self.running.publisher()
    }

    /// The service's health (what `/healthz` and `/readyz` serve).
    pub fn health(&self) -> &HealthState {
        self.running.health()
    }

    /// The service's state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The tables.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The HTTP routes with `/healthz` and `/readyz`, over the state: serve it, or call it in tests
    /// (`tower::ServiceExt::oneshot`).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Waits until every consumer has its partitions and every table has restored.
    pub async fn ready(&self) {
        self.health().wait_until(crate::health::Health::is_ready).await;
    }

    /// Serves the router on `listener` until `shutdown` completes or a consumer or table stops on
    /// its own; then shuts down gracefully ([`shutdown`](Self::shutdown)) and returns the first
    /// error.
    pub async fn serve(
        mut self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AppError> {
        let server = crate::http::serve(listener, self.router.clone(), self.http, self.stop.subscribe());
        let mut server = tokio::spawn(server);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut failure = None;
        let mut served = None;
        tokio::select! {
            () = &mut shutdown => tracing::info!(service = %self.spec().name(), "shutting down"),
            Some(ended) = self.tasks.join_next() => failure = Some(task_failure(ended)),
            ended = &mut server => served = Some(ended),
        }
        let server_ended = served.is_some();
        if let Some(ended) = served {
            failure = Some(match ended {
                Ok(Ok(())) => AppError::Stopped("HTTP server".into()),
                Ok(Err(e)) => AppError::Http(e),
                Err(e) => AppError::Stopped(format!("HTTP server ({e})")),
            });
        }
        if let Some(e) = &failure {
            tracing::error!(service = %self.spec().name(), error = %e, "stopping");
        }
        // Out of rotation first, then stop serving, consuming and following tables.
        self.health().starting(SHUTDOWN_COMPONENT, "shutting down");
        let _ = self.stop.send(true);
        if !server_ended && let Ok(Err(e)) = server.await {
            failure.get_or_insert(AppError::Http(e));
        }
        let stopped = self.shutdown().await;
        match failure {
            Some(e) => Err(e),
            None => stopped,
        }
    }

    /// Stops the consumers (they finish the events in hand and commit) and the tables, then flushes
    /// the publisher; returns the first error any of them stopped with.
    ///
    /// The whole of it keeps within the shutdown budget (`BACKBONE_SHUTDOWN_TIMEOUT_MS`), whatever
    /// Kafka does: each consumer bounds its own stop by the budget, and what has not stopped a
    /// second after it is named in the log and abandoned (its events are handled again by the next
    /// owner); the publisher gets what is left to flush.
    pub async fn shutdown(mut self) -> Result<(), AppError> {
        let budget = self.running.shutdown_budget();
        let deadline = tokio::time::Instant::now() + budget;
        self.running.health().starting(SHUTDOWN_COMPONENT, "shutting down");
        let _ = self.stop.send(true);
        let mut first = None;
        loop {
            match tokio::time::timeout_at(deadline + Duration::from_secs(1), self.tasks.join_next_with_id())
                .await
            {
                Ok(None) => break,
                Ok(Some(ended)) => {
                    if let Err(e) = flatten(ended.map(|(_, outcome)| outcome)) {
                        tracing::error!(error = %e, "stopped with an error");
                        first.get_or_insert(e);
                    }
                }
                Err(_) => {
                    tracing::error!(
                        service = %self.running.spec().name(),
                        tasks = self.tasks.len(),
                        ?budget,
                        "tasks still stopping after the shutdown budget: abandoned"
                    );
                    self.tasks.abort_all();
                    first.get_or_insert(AppError::Stopped(format!(
                        "{} task(s) did not stop within the shutdown budget of {budget:?}",
                        self.tasks.len()
                    )));
                    self.tasks.detach_all();
                    break;
                }
            }
        }
        let left =
            deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_secs(1));
        let flushed = self.running.shutdown_within(left).await;
        match (first, flushed) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e.into()),
            (None, Ok(())) => Ok(()),
        }
    }
}

type TaskEnd = Result<(String, Result<(), AppError>), tokio::task::JoinError>;

fn flatten(ended: TaskEnd) -> Result<(), AppError> {
    match ended {
        Ok((_, outcome)) => outcome,
        Err(e) => Err(AppError::Stopped(format!("a task ({e})"))),
    }
}

/// A task that ended before shutdown: its error, or that it stopped.
fn task_failure(ended: TaskEnd) -> AppError {
    match ended {
        Ok((_, Err(e))) => e,
        Ok((component, Ok(()))) => AppError::Stopped(component),
        Err(e) => AppError::Stopped(format!("a task ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt as _;

    use super::*;

    async fn reserve(_event: crate::Event<String>) {}

    #[test]
    fn the_spec_declares_dead_letter_topics_and_what_tables_read() {
        let orders = TopicSpec::public("orders", "order-created", 1).build().unwrap();
        let levels = TopicDecl::private("stock", "levels").compacted();
        let prices = TopicDecl::public("pricing", "prices", 1).compacted();
        let spec = App::<()>::new("stock")
            .consume(&orders, reserve)
            // A second handler of the same source: one dead-letter topic, one retry topic.
            .consume_with(&orders, BoxedHandler::named("audit", reserve), HandlerOptions::new(), |c| c)
            .table::<String>(levels)
            .table::<String>(prices)
            .spec()
            .unwrap();
        let mut owned: Vec<&str> = spec.owned_topics().iter().map(TopicSpec::name).collect();
        owned.sort_unstable();
        assert_eq!(
            owned,
            [
                "stock.private.dlq.orders.public.order-created-v1",
                "stock.private.dlq.pricing.public.prices-v1",
                "stock.private.dlq.stock.private.levels",
                "stock.private.levels",
                // Replays of the handlers' dead letters; tables have none (they re-read their topic).
                "stock.private.retry.orders.public.order-created-v1",
            ]
        );
        assert_eq!(spec.consumed_topics().len(), 3);
    }

    #[test]
    fn declaration_mistakes_surface_from_spec() {
        let err = App::<()>::new("stock").owns(TopicDecl::private("stock", "Bad Name")).spec().unwrap_err();
        assert!(matches!(err, TopicError::InvalidTopic { .. }), "{err}");

        let theirs = TopicDecl::private("orders", "state");
        let err = App::<()>::new("stock").table::<String>(theirs).spec().unwrap_err();
        assert!(err.to_string().contains("private topic of service `orders`"), "{err}");

        let err = App::<()>::new("stock").owns(theirs).spec().unwrap_err();
        assert!(err.to_string().contains("owned by service `orders`"), "{err}");
    }

    async fn status(router: &Router, path: &str) -> (StatusCode, Option<HeaderValue>) {
        let request = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        (response.status(), response.headers().get(header::RETRY_AFTER).cloned())
    }

    #[tokio::test]
    async fn health_routes_follow_the_health_state() {
        let health = HealthState::default();
        let router = health_routes::<()>(&health).with_state(());
        assert_eq!(status(&router, "/readyz").await, (StatusCode::OK, None));
        assert_eq!(status(&router, "/healthz").await.0, StatusCode::OK);

        health.starting("consumer:stock.reserve", "waiting for partitions");
        assert_eq!(
            status(&router, "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, Some(HeaderValue::from_static("1")))
        );
        health.ready("consumer:stock.reserve");
        assert_eq!(status(&router, "/readyz").await.0, StatusCode::OK);

        health.degrade("publisher", "all brokers are down");
        assert_eq!(status(&router, "/healthz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        health.recover("publisher");
        assert_eq!(status(&router, "/healthz").await.0, StatusCode::OK);
    }
}
