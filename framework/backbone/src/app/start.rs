//! Starting an [`App`]: the service, its tables, state and consumers, then HTTP.

use std::collections::HashMap;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::tables::{StopSignal, Tables};
use super::{App, AppError, Started};
use crate::config::Config;
use crate::consume::Consumer;
use crate::health::HealthState;
use crate::service::Running;

impl<S: Clone + Send + Sync + 'static> App<S> {
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
        match self.start_parts(config, &running, make_state) {
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
        running: &Running,
        make_state: impl FnOnce(&Tables) -> Result<S, AppError>,
    ) -> Result<Parts<S>, AppError> {
        let context = running.context();
        let publisher = context.publisher().clone();
        let health = context.health().clone();
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
            let built = declaration.build(&context)?;
            tables.by_topic.insert(built.topic, built.handle);
            runs.push((built.component, built.run));
        }
        let state = make_state(&tables)?;
        let mut consumers = Vec::new();
        for s in self.subscriptions {
            let name = s.handler.name().to_owned();
            let consume_error = |source| AppError::Consume { handler: name.clone(), source };
            let mut consumer =
                Consumer::new(&context, &s.topic, s.handler, state.clone()).map_err(consume_error)?;
            if let Some(group) = s.options.group {
                consumer = consumer.in_group(group);
            }
            consumer = consumer.layers(&self.layers);
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
            // Replayed dead letters come back on the retry topic, to a second consumer (or on
            // the source itself, for the service's own private topics: see `replays_to_source`).
            let retries = match consumer.replays_to_source() {
                true => None,
                false => Some(consumer.retries().map_err(consume_error)?),
            };
            for consumer in std::iter::once(consumer).chain(retries) {
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
        let router = crate::http::problems(routes, &self.http)
            .layer(axum::middleware::from_fn_with_state(health.metrics().clone(), count_request))
            .with_state(state.clone());
        Ok(Parts { router, tasks, stop, tables, state })
    }

    /// Provisions the service's own topics and nothing else (what [`run`](Self::run) does first):
    /// other services may then subscribe to them before this one starts.
    pub async fn provision(&self, config: &Config) -> Result<(), AppError> {
        let spec = self.spec()?;
        let provisioner =
            crate::provision::Provisioner::new(config, spec.name()).map_err(crate::Error::from)?;
        provisioner.provision(spec.owned_topics()).await.map_err(crate::Error::from)?;
        Ok(())
    }

    /// A service binary's whole `main`: JSON logs ([`init_logging`]), the configuration from the
    /// environment ([`Config::from_env`] with the service's name), then [`run`](Self::run) with
    /// `state` until SIGTERM or Ctrl-C ([`crate::shutdown_signal`]). What went wrong is logged; the
    /// exit code says whether the service stopped cleanly.
    ///
    /// ```no_run
    /// # #[derive(Clone)] struct Stock;
    /// # fn app() -> backbone::app::App<Stock> { backbone::app::App::new("stock") }
    /// #[tokio::main]
    /// async fn main() -> std::process::ExitCode {
    ///     app().main(Stock).await
    /// }
    /// ```
    pub async fn main(self, state: S) -> ExitCode {
        self.main_with(|_| Ok(state)).await
    }

    /// [`main`](Self::main) with a state built from the tables.
    ///
    /// Run with `--spec` as its first argument, the binary prints the service's [`ServiceSpec`]
    /// (JSON, [`ServiceSpec::to_json`]) on stdout and exits, connecting to nothing and reading no
    /// configuration: what `backbone estate` collects.
    ///
    /// [`ServiceSpec`]: crate::ServiceSpec
    /// [`ServiceSpec::to_json`]: crate::ServiceSpec::to_json
    pub async fn main_with(self, make_state: impl FnOnce(&Tables) -> Result<S, AppError>) -> ExitCode {
        if std::env::args_os().nth(1).is_some_and(|arg| arg == SPEC_FLAG) {
            return self.print_spec();
        }
        let telemetry = init_logging(&self.name);
        let config = match Config::from_env(&self.name) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(error = %e, "configuration");
                telemetry.shutdown();
                return ExitCode::FAILURE;
            }
        };
        let name = self.name.clone();
        let outcome = match self.run_with(&config, make_state, crate::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(service = name, error = %e, "stopped");
                ExitCode::FAILURE
            }
        };
        // The export's last batch goes from a thread of its own: not on the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        outcome
    }

    /// Prints the spec as JSON on stdout (`--spec`); a declaration error goes to stderr.
    fn print_spec(&self) -> ExitCode {
        match self.spec() {
            Ok(spec) => {
                println!("{}", spec.to_json());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: service declaration: {e}", self.name);
                ExitCode::FAILURE
            }
        }
    }

    /// Runs the service until `shutdown` completes: waits for its input topics (unless
    /// [`await_inputs`](Self::await_inputs) is off), [`start_with`](Self::start_with), then
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
        let mut shutdown = std::pin::pin!(shutdown);
        if self.await_inputs {
            let spec = self.spec()?;
            tokio::select! {
                ready = crate::provision::provision_and_await_inputs(config, &spec) => {
                    ready.map_err(crate::Error::from)?;
                }
                () = &mut shutdown => return Ok(()),
            }
        }
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

/// The first argument that makes a service binary print its spec and exit ([`App::main_with`]).
pub const SPEC_FLAG: &str = "--spec";

/// Counts an HTTP request and its duration by route (axum's [`MatchedPath`](axum::extract::MatchedPath),
/// `unmatched` for none), method and status; and runs it in a server span (OpenTelemetry's HTTP
/// attribute names) that continues the caller's trace from its `traceparent` header, so what the
/// request publishes belongs to the caller's trace.
async fn count_request(
    axum::extract::State(metrics): axum::extract::State<crate::observe::Metrics>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument as _;
    let start = std::time::Instant::now();
    let route = request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned());
    let method = request.method().clone();
    let route_name = route.as_deref().unwrap_or("unmatched");
    let span = tracing::info_span!(
        "request",
        otel.name = format_args!("{method} {route_name}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method.as_str(),
        http.route = route_name,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        traceparent =
            request.headers().get(crate::headers::TRACEPARENT).and_then(|v| v.to_str().ok()).unwrap_or(""),
    );
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    let labels = [
        ("http_route", route_name),
        ("http_request_method", method.as_str()),
        ("http_response_status_code", status.as_str()),
    ];
    metrics.counter("backbone_http_requests_total", &labels).increment(1);
    metrics.histogram("backbone_http_request_duration_seconds", &labels).record(start.elapsed());
    response
}

/// `/livez`, `/healthz`, `/readyz` and `/metrics` over `health`.
///
/// `/livez` answers 200 while the process serves, whatever Kafka does: what a liveness probe asks
/// (restarting a pod cures no broker outage). `/healthz` says whether anything is degraded,
/// `/readyz` whether the service should get traffic.
pub(super) fn health_routes<S: Clone + Send + Sync + 'static>(health: &HealthState) -> Router<S> {
    use axum::routing::get;
    let live = health.clone();
    let ready = health.clone();
    let metrics = health.metrics().clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move {
                    let kind = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
                    ([(header::CONTENT_TYPE, kind)], text).into_response()
                }
            }),
        )
        .route("/livez", get(|| async { "ok" }))
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

/// Logs as JSON lines through `tracing` to stdout, filtered by `RUST_LOG` (default `info`), with
/// W3C trace contexts on spans and, with the `otlp` feature, spans exported when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set: [`crate::trace::init`] for a service named `service`. Does
/// nothing if a subscriber is already set.
pub fn init_logging(service: &str) -> crate::trace::Telemetry {
    crate::trace::init(service)
}
