//! The runtime side of a service's declaration: [`ServiceSpec::start`] (refuse weak producer
//! settings, register the schemas, provision the owned topics, open the publisher) and the
//! [`Running`] service it returns. The declaration itself, plain data, is in
//! [`service`](mod@crate::service).

use std::time::Duration;

use crate::config::Config;
use crate::health::HealthState;
use crate::provision::Provisioner;
use crate::publish::Publisher;
use crate::service::ServiceSpec;

/// A started service: its topics provisioned, its publisher ready.
///
/// [`ServiceSpec::start`] is the start-up sequence in one call: refuse weak producer settings (R4),
/// provision the owned topics (create what is missing, fix safe drift, refuse unsafe drift), then
/// open the durable publisher. [`Running::shutdown`] flushes it, so nothing acknowledged is lost.
#[derive(Debug)]
pub struct Running {
    spec: ServiceSpec,
    publisher: Publisher,
    health: HealthState,
    shutdown_timeout: Duration,
}

impl ServiceSpec {
    /// Starts the service against the cluster in `config`; see [`Running`].
    pub async fn start(&self, config: &Config) -> crate::Result<Running> {
        config.check_producer_durability()?;
        // Contracts first: an incompatible schema stops the service before anything is created or
        // produced (R10).
        if !self.events().is_empty() {
            let registry = crate::schema::Registry::new(&config.schema_registry_url)?;
            for event in self.events() {
                let id = registry.register(&event.subject, &event.schema).await?;
                tracing::info!(service = %self.name(), subject = %event.subject, %id, "schema registered");
            }
        }
        let provisioner = Provisioner::new(config, self.name())?;
        let report = provisioner.provision(self.owned_topics()).await?;
        tracing::info!(service = %self.name(), "topics provisioned:\n{report}");
        let health = HealthState::default();
        let publisher = Publisher::with_health(config, self, health.clone())?;
        Ok(Running { spec: self.clone(), publisher, health, shutdown_timeout: config.shutdown_timeout })
    }
}

impl Running {
    /// The service's declaration.
    pub fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    /// The service's publisher (clone it freely).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The service's health.
    pub fn health(&self) -> &HealthState {
        &self.health
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
        self.publisher.close(budget).await?;
        Ok(())
    }
}
