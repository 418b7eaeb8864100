//! `cargo run -p estate`: Orders and Stock in one process. Without `KAFKA_BOOTSTRAP_SERVERS` it
//! brings its own Kafka (librdkafka's mock cluster) and schema registry (the development registry):
//! nothing to install beyond Rust. With it (and `SCHEMA_REGISTRY_URL`), it runs on them.
//!
//! Prints `ORDERS_URL=http://…` and `STOCK_URL=http://…` on lines of their own once both services
//! are ready, then a curl walkthrough; logs go to stderr (`RUST_LOG`, default `warn`). Addresses:
//! `ESTATE_ORDERS_ADDR` and `ESTATE_STOCK_ADDR` (default `127.0.0.1:0`, an ephemeral port).

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use estate::Estate;

fn addr(var: &str) -> Result<SocketAddr, String> {
    match std::env::var(var) {
        Ok(text) => text.parse().map_err(|e| format!("{var}={text}: {e}")),
        Err(_) => Ok(SocketAddr::from(([127, 0, 0, 1], 0))),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Logs (warnings by default) on stderr; spans get trace contexts whatever the log level, so an
    // order is one trace through both services here too (`traceparent` on every event).
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let spans = tracing_subscriber::filter::filter_fn(backbone::trace::is_traced);
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).with_filter(filter))
        .with(backbone::trace::TraceContextLayer.with_filter(spans))
        .init();
    let (orders_addr, stock_addr) = match (addr("ESTATE_ORDERS_ADDR"), addr("ESTATE_STOCK_ADDR")) {
        (Ok(o), Ok(s)) => (o, s),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("estate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = if std::env::var_os("KAFKA_BOOTSTRAP_SERVERS").is_some() {
        match (backbone::Config::from_env("orders"), backbone::Config::from_env("stock")) {
            (Ok(orders), Ok(stock)) => Estate::start(&orders, &stock, orders_addr, stock_addr).await,
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("estate: configuration: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        eprintln!(
            "estate: no KAFKA_BOOTSTRAP_SERVERS: using librdkafka's mock cluster and the development registry"
        );
        Estate::development(orders_addr, stock_addr).await
    };
    let mut estate = match started {
        Ok(estate) => estate,
        Err(e) => {
            eprintln!("estate: could not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ORDERS_URL={}", estate.orders_url);
    let _ = writeln!(out, "STOCK_URL={}", estate.stock_url);
    let _ = writeln!(out, "{}", estate::walkthrough());
    let _ = out.flush();
    drop(out);
    let failed = tokio::select! {
        () = backbone::shutdown_signal() => None,
        (service, outcome) = estate.stopped() => Some((service, outcome)),
    };
    if let Some((service, outcome)) = failed {
        eprintln!("estate: {service} stopped: {outcome:?}");
        let _ = estate.shutdown().await;
        return ExitCode::FAILURE;
    }
    eprintln!("estate: shutting down");
    match estate.shutdown().await {
        Ok(()) => {
            eprintln!("estate: stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("estate: stopped with an error: {e}");
            ExitCode::FAILURE
        }
    }
}
