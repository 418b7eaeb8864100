//! The runtime side of a service's declaration: [`ServiceSpec::start`] (refuse weak producer
//! settings, register the schemas, provision the owned topics, open the publisher), the
//! [`Running`] service it returns, and the [`Context`] the service's runtime parts (consumers,
//! tables, requesters and responders, journals, running totals) are built from. The declaration
//! itself, plain data, is in [`service`](mod@crate::service).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::health::HealthState;
use crate::provision::Provisioner;
use crate::publish::{PublishError, Publisher};
use crate::schema::Registry;
use crate::service::ServiceSpec;

/// A started service: its topics provisioned, its publisher ready.
///
/// [`ServiceSpec::start`] is the start-up sequence in one call: refuse weak producer settings (R4),
/// provision the owned topics (create what is missing, fix safe drift, refuse unsafe drift), then
/// open the durable publisher. [`Running::shutdown`] flushes it, so nothing acknowledged is lost.
///
/// Its [`context`](Running::context) is what the service's runtime parts are built from:
/// [`Consumer::new`](crate::consume::Consumer::new), [`Table::builder`](crate::table::Table::builder),
/// [`Requester::builder`](crate::request::Requester::builder), [`responder`](crate::request::responder),
/// [`Journal::new`](crate::sourcing::Journal::new) and
/// [`RunningTotals::builder`](crate::sourcing::RunningTotals::builder).
#[derive(Debug)]
pub struct Running {
    context: Context,
    shutdown_timeout: Duration,
}

impl ServiceSpec {
    /// Starts the service against the cluster in `config`; see [`Running`].
    pub async fn start(&self, config: &Config) -> crate::Result<Running> {
        config.check_producer_durability()?;
        // Contracts first: an incompatible schema stops the service before anything is created or
        // produced (R10).
        if !self.events().is_empty() {
            let registry = crate::schema::Registry::for_config(config)?;
            for event in self.events() {
                let id = registry.register(&event.subject, &event.schema).await?;
                tracing::info!(service = %self.name(), subject = %event.subject, %id, "schema registered");
            }
        }
        let provisioner = Provisioner::new(config, self.name())?;
        let report = provisioner.provision(self.owned_topics()).await?;
        tracing::info!(service = %self.name(), "topics provisioned:\n{report}");
        let publisher = Publisher::with_health(config, self, HealthState::default())?;
        let context = Context::from_parts(config, self, publisher);
        Ok(Running { context, shutdown_timeout: config.shutdown_timeout })
    }
}

impl Running {
    /// The service's runtime context (cheap to clone): what its consumers, tables, requesters,
    /// responders, journals and running totals are built from.
    pub fn context(&self) -> Context {
        self.context.clone()
    }

    /// The service's declaration.
    pub fn spec(&self) -> &ServiceSpec {
        self.context.spec()
    }

    /// The service's publisher (clone it freely).
    pub fn publisher(&self) -> &Publisher {
        self.context.publisher()
    }

    /// The service's health.
    pub fn health(&self) -> &HealthState {
        self.context.health()
    }

    /// The shutdown budget (`BACKBONE_SHUTDOWN_TIMEOUT_MS`).
    pub fn shutdown_budget(&self) -> Duration {
        self.shutdown_timeout
    }

    /// Stops publishing and flushes within the configured shutdown budget.
    pub async fn shutdown(self) -> crate::Result<()> {
        let budget = self.shutdown_timeout;
        self.shutdown_within(budget).await
    }

    /// Stops publishing and flushes within `budget` (what is left of the shutdown budget).
    pub async fn shutdown_within(self, budget: Duration) -> crate::Result<()> {
        self.context.publisher().close(budget).await?;
        Ok(())
    }
}

/// A service's runtime context: its configuration, its declaration, its publisher, and through the
/// publisher its health and schema registry. Cheap to clone (clones share one); a started service
/// hands it out with [`Running::context`].
///
/// The service's runtime parts are built from it, each with builder methods for what is optional:
/// [`Consumer::new`](crate::consume::Consumer::new), [`Table::builder`](crate::table::Table::builder),
/// [`Requester::builder`](crate::request::Requester::builder), [`responder`](crate::request::responder),
/// [`Journal::new`](crate::sourcing::Journal::new),
/// [`RunningTotals::builder`](crate::sourcing::RunningTotals::builder) and
/// [`migrate::converter`](crate::migrate::converter). They publish (dead letters, replies, appends)
/// through its publisher, report into its health and decode through its registry.
///
/// ```no_run
/// use backbone::consume::{Consumer, dead_letter_topic};
/// use backbone::handler::{BoxedHandler, Event, HandlerError};
/// use backbone::{Config, Service, TopicSpec};
///
/// async fn reserve(Event(order): Event<String>) -> Result<(), HandlerError> {
///     println!("reserving {order}");
///     Ok(())
/// }
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let created = TopicSpec::public("orders", "order-created", 1).build()?;
/// let stock = Service::new("stock").owns(&dead_letter_topic("stock", &created)?).consumes(&created).spec()?;
/// let running = stock.start(&Config::from_env("stock")?).await?;
/// let ctx = running.context();
/// let consumer = Consumer::new(&ctx, &created, BoxedHandler::new(reserve), ())?.in_group("stock.reserve");
/// consumer.run(backbone::shutdown_signal()).await?;
/// running.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Context {
    inner: Arc<Parts>,
}

struct Parts {
    config: Config,
    spec: ServiceSpec,
    publisher: Publisher,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("service", &self.inner.spec.name()).finish_non_exhaustive()
    }
}

impl Context {
    /// A context for `spec`'s service without starting it (no schema registered, no topic
    /// provisioned): it opens a publisher of its own, as [`Publisher::new`] does, refusing
    /// configurations that weaken durability. For tools and tests; a service gets its context from
    /// [`Running::context`].
    pub fn open(config: &Config, spec: &ServiceSpec) -> Result<Self, PublishError> {
        Ok(Self::from_parts(config, spec, Publisher::new(config, spec)?))
    }

    /// A context of `publisher`, which was opened for `spec`'s service with `config`.
    pub(crate) fn from_parts(config: &Config, spec: &ServiceSpec, publisher: Publisher) -> Self {
        Self { inner: Arc::new(Parts { config: config.clone(), spec: spec.clone(), publisher }) }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The service's declaration.
    pub fn spec(&self) -> &ServiceSpec {
        &self.inner.spec
    }

    /// The service's publisher (clone it freely).
    pub fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }

    /// The service's health (its publisher's).
    pub fn health(&self) -> &HealthState {
        self.inner.publisher.health()
    }

    /// The schema registry Avro events go through (its publisher's).
    pub fn registry(&self) -> &Registry {
        self.inner.publisher.registry()
    }

    /// A transactional publisher for the service with `transactional_id`, reporting into the
    /// service's health: see [`Publisher::transactional`] (what the exactly-once consumer uses).
    pub async fn transactional_publisher(&self, transactional_id: &str) -> Result<Publisher, PublishError> {
        Publisher::transactional(self.config(), self.spec(), self.health().clone(), transactional_id).await
    }
}
