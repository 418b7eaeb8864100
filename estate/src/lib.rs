//! The estate in one process: Orders and Stock started together, each serving HTTP on its own
//! address, on whatever Kafka and registry the configuration names; [`Estate::development`] brings
//! its own (librdkafka's mock cluster and the embedded development registry: nothing to install).

use std::net::SocketAddr;
use std::time::Duration;

use backbone::Config;
use backbone::app::AppError;
use backbone::dev::MockKafka;
use backbone_devregistry::DevRegistry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the services may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// Orders and Stock, running and serving.
#[derive(Debug)]
pub struct Estate {
    /// Orders' base URL, `http://host:port`.
    pub orders_url: String,
    /// Stock's base URL.
    pub stock_url: String,
    stop: watch::Sender<bool>,
    servers: Vec<(&'static str, JoinHandle<Result<(), AppError>>)>,
    /// The development Kafka and registry, stopped when the estate is dropped.
    development: Option<(MockKafka, DevRegistry)>,
}

/// Why the estate could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum EstateError {
    /// A service could not start.
    App(AppError),
    /// An address could not be bound, or the development registry not started.
    Io(std::io::Error),
    /// The mock cluster could not start.
    Mock(backbone::dev::MockError),
    /// A service was not ready in time.
    NotReady(&'static str),
}

impl std::fmt::Display for EstateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::App(e) => write!(f, "{e}"),
            Self::Io(e) => write!(f, "{e}"),
            Self::Mock(e) => write!(f, "{e}"),
            Self::NotReady(service) => write!(f, "{service} was not ready within {READY_WITHIN:?}"),
        }
    }
}

impl std::error::Error for EstateError {}

impl From<AppError> for EstateError {
    fn from(e: AppError) -> Self {
        Self::App(e)
    }
}

impl From<std::io::Error> for EstateError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl Estate {
    /// The estate on librdkafka's mock cluster and the development registry, in this process.
    pub async fn development(orders_addr: SocketAddr, stock_addr: SocketAddr) -> Result<Self, EstateError> {
        let kafka = MockKafka::start(1).map_err(EstateError::Mock)?;
        let registry = DevRegistry::start()?;
        let mut config = kafka.config();
        config.schema_registry_url = registry.url().to_owned();
        let mut estate = Self::start(&config, &config, orders_addr, stock_addr).await?;
        estate.development = Some((kafka, registry));
        Ok(estate)
    }

    /// Starts both services with their configurations and serves them on the addresses (port 0:
    /// an ephemeral one); returns once both are ready.
    pub async fn start(
        orders_config: &Config,
        stock_config: &Config,
        orders_addr: SocketAddr,
        stock_addr: SocketAddr,
    ) -> Result<Self, EstateError> {
        // Each provisions its topics before either subscribes to the other's.
        orders::app().provision(orders_config).await?;
        stock::app().provision(stock_config).await?;
        let (orders, stock) = tokio::try_join!(orders::start(orders_config), stock::start(stock_config))?;
        within(orders.ready(), "orders").await?;
        within(stock.ready(), "stock").await?;
        let orders_listener = tokio::net::TcpListener::bind(orders_addr).await?;
        let stock_listener = tokio::net::TcpListener::bind(stock_addr).await?;
        let orders_url = format!("http://{}", orders_listener.local_addr()?);
        let stock_url = format!("http://{}", stock_listener.local_addr()?);
        let (stop, _) = watch::channel(false);
        let stopped = |stop: &watch::Sender<bool>| {
            let mut stopping = stop.subscribe();
            async move {
                let _ = stopping.wait_for(|s| *s).await;
            }
        };
        let servers = vec![
            ("orders", tokio::spawn(orders.serve(orders_listener, stopped(&stop)))),
            ("stock", tokio::spawn(stock.serve(stock_listener, stopped(&stop)))),
        ];
        tracing::info!(orders_url, stock_url, "estate ready");
        Ok(Self { orders_url, stock_url, stop, servers, development: None })
    }

    /// Completes when a service stops on its own (an error), with its name and outcome.
    pub async fn stopped(&mut self) -> (&'static str, Result<(), AppError>) {
        let servers = &mut self.servers;
        let (index, outcome) = std::future::poll_fn(|cx| {
            for (index, (_, task)) in servers.iter_mut().enumerate() {
                if let std::task::Poll::Ready(ended) = std::pin::Pin::new(task).poll(cx) {
                    let outcome =
                        ended.unwrap_or_else(|e| Err(AppError::Stopped(format!("a service ({e})"))));
                    return std::task::Poll::Ready((index, outcome));
                }
            }
            std::task::Poll::Pending
        })
        .await;
        let (name, _) = self.servers.remove(index);
        (name, outcome)
    }

    /// Stops both services gracefully (consumers commit, publishers flush); the first error.
    pub async fn shutdown(self) -> Result<(), AppError> {
        let _ = self.stop.send(true);
        let mut first = Ok(());
        for (name, server) in self.servers {
            let outcome = server.await.unwrap_or_else(|e| Err(AppError::Stopped(format!("{name} ({e})"))));
            if let Err(e) = outcome {
                tracing::error!(service = name, error = %e, "stopped with an error");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        drop(self.development);
        first
    }
}

/// `ready`, within [`READY_WITHIN`].
async fn within(ready: impl Future<Output = ()>, service: &'static str) -> Result<(), EstateError> {
    tokio::time::timeout(READY_WITHIN, ready).await.map_err(|_| EstateError::NotReady(service))
}

/// The walkthrough printed once the estate is up: place an order, watch it validate, run out of
/// stock, cancel.
pub fn walkthrough() -> &'static str {
    r#"
# The estate is up. Paste the two lines above into your shell, then:

# 1. Stock 5 widgets (an event; answered once Stock has applied it).
curl -s -X PUT "$STOCK_URL/v1/stock/widget" -H 'content-type: application/json' -d '{"quantity": 5}'

# 2. Place an order for 3 (201, Location and Consistency-Token headers).
curl -si -X POST "$ORDERS_URL/v1/orders" -H 'content-type: application/json' -H 'Idempotency-Key: order-1' \
     -d '{"customerId": "alice", "product": "widget", "quantity": 3, "price": 2997}'

# 3. Watch it validate (long-poll: answers as soon as Stock has reserved it).
curl -s "$ORDERS_URL/v1/orders/order-1/validated?timeout=10000"
curl -s "$STOCK_URL/v1/stock/widget"          # reserved 3, available 2

# 4. Run out of stock: 3 more do not fit; the order FAILS with a reason and reserves nothing.
curl -s -X POST "$ORDERS_URL/v1/orders" -H 'content-type: application/json' \
     -d '{"id": "order-2", "customerId": "bob", "product": "widget", "quantity": 3, "price": 2997}'
curl -s "$ORDERS_URL/v1/orders/order-2/validated?timeout=10000"

# 5. Cancel the first order: Stock releases its 3.
curl -s -X POST "$ORDERS_URL/v1/orders/order-1/cancel"
curl -s "$STOCK_URL/v1/stock/widget"          # reserved 0 (once Stock has seen the cancellation)

# Also: a bad order is refused with the field and the reason, a retried POST with the same
# Idempotency-Key answers the same order, and each service documents itself:
curl -s -X POST "$ORDERS_URL/v1/orders" -H 'content-type: application/json' -d '{"customerId": "x", "product": "widget", "quantity": 0, "price": 1}'
curl -s "$ORDERS_URL/openapi.json" | head -c 300; echo
curl -s "$ORDERS_URL/readyz"

# Ctrl-C stops both services gracefully.
"#
}
