//! A started service and its shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{AppError, Tables};
use crate::health::HealthState;
use crate::http::HttpLimits;
use crate::publish::Publisher;
use crate::service::{Running, ServiceSpec};

/// The health component that keeps a stopping service out of rotation.
const SHUTDOWN_COMPONENT: &str = "shutdown";

/// A started service: consumers and tables running, the HTTP router ready to serve.
pub struct Started<S> {
    pub(super) running: Running,
    pub(super) router: Router,
    pub(super) http: HttpLimits,
    pub(super) tasks: JoinSet<(String, Result<(), AppError>)>,
    pub(super) stop: watch::Sender<bool>,
    pub(super) tables: Arc<Tables>,
    pub(super) state: S,
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

    /// The HTTP routes with `/healthz`, `/readyz` and `/metrics`, over the state: serve it, or call it in tests
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
        let mut server_ended = served.is_some();
        if let Some(ended) = served {
            failure = Some(server_failure(ended));
        }
        if let Some(e) = &failure {
            tracing::error!(service = %self.spec().name(), error = %e, "stopping");
        }
        // Out of rotation first; asked to stop, keep answering for the shutdown delay while the
        // platform stops routing here (requests in flight and arriving still get answers); then stop
        // serving, consuming and following tables.
        self.health().starting(SHUTDOWN_COMPONENT, "shutting down");
        let delay = self.running.context().config().shutdown_delay;
        if failure.is_none() && !delay.is_zero() {
            tracing::info!(service = %self.spec().name(), ?delay, "out of rotation; serving on for the shutdown delay");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                Some(ended) = self.tasks.join_next() => failure = Some(task_failure(ended)),
                ended = &mut server => {
                    failure = Some(server_failure(ended));
                    server_ended = true;
                }
            }
        }
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

/// The HTTP server ended before it was asked to: why.
fn server_failure(ended: Result<std::io::Result<()>, tokio::task::JoinError>) -> AppError {
    match ended {
        Ok(Ok(())) => AppError::Stopped("HTTP server".into()),
        Ok(Err(e)) => AppError::Http(e),
        Err(e) => AppError::Stopped(format!("HTTP server ({e})")),
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
