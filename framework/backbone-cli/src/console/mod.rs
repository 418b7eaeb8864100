//! `backbone console`: the estate in a browser. One page per concern, served by the CLI:
//!
//! - **Estate**: the services of the estate manifest, their consumer groups and live instances
//!   (group members: client ids and hosts), and the topology (private topics dashed).
//! - **Topics**: public or private, owner, partitions, replicas and in-sync replicas, offsets, and
//!   each declared topic's configuration against its declaration (drift marked).
//! - **Groups**: per handler, members and assignments, lag per partition in records and in seconds
//!   (the age of the oldest event not yet handled), live over server-sent events, with a sparkline
//!   of the last ten minutes.
//! - **Dead letters**: per service and origin topic, the latest dead letters with their error, one
//!   record's headers and payload (decoded by its schema), and (with `--allow-replay`) replay of one,
//!   a range or all, through the code path of `backbone dlq replay`.
//! - **Schemas**: each public event's subjects and versions, the compatibility rule, a diff between
//!   any two, and the topics and services that use them.
//!
//! How it works: a collector task reads the cluster every `--refresh` seconds (metadata, end
//! offsets, groups and their committed offsets, the timestamps of the oldest unhandled events) into
//! one snapshot that pages render from, so a page costs a render, never a round trip to every
//! broker; dead letters and schemas are read when their page is asked for, bounded.
//!
//! Read-only by default: without `--allow-replay` no route changes anything. With it, a replay is a
//! form with a confirmation step, checked against a per-process CSRF token and the browser's
//! `Sec-Fetch-Site`/`Origin`. Listens on loopback unless `--listen` says otherwise. Passwords are
//! never shown (the registry URL is printed redacted).
//!
//! The module's files: `collect` (the collector and its snapshot), `groups` (consumer-group
//! assignments and lag), `letters` (reading dead letters for pages), `schemas` (the registry's
//! subjects, versions and diffs), `metrics` (the services' own counters, from their `/metrics`),
//! `pages` (the HTML), `server` (routes, CSRF, server-sent events), `topics` (the cluster's topics).

mod collect;
mod groups;
mod letters;
mod metrics;
mod pages;
mod schemas;
mod server;
#[cfg(test)]
mod tests;
mod topics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backbone::Config;
use clap::Args;

use crate::estate::{Sources, load};

pub(crate) use server::{Console, router};

/// The console's client id (and its SASL principal unless `KAFKA_SASL_USERNAME` says otherwise).
const CLIENT: &str = "backbone-console";
/// How long one metadata or offsets request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `backbone console`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct ConsoleArgs {
    #[command(flatten)]
    sources: Sources,
    /// The brokers (else `KAFKA_BOOTSTRAP_SERVERS`, as for a service).
    #[arg(long, alias = "bootstrap", value_name = "HOST:PORT,…")]
    bootstrap_servers: Option<String>,
    /// The schema registry's Confluent-compatible API (else `SCHEMA_REGISTRY_URL`).
    #[arg(long, value_name = "URL")]
    registry: Option<String>,
    /// Where to listen. Loopback by default: the console shows dead letters' payloads.
    #[arg(long, env = "BACKBONE_CONSOLE_LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Enable replaying dead letters from the console (off: no route changes anything).
    #[arg(long, env = "BACKBONE_CONSOLE_ALLOW_REPLAY")]
    allow_replay: bool,
    /// A service instance's metrics endpoint, `SERVICE=URL` (repeat for each instance): its event
    /// counters are shown with the service. Without any, the console shows Kafka's numbers only.
    #[arg(long = "metrics", value_name = "SERVICE=URL", env = "BACKBONE_CONSOLE_METRICS", value_delimiter = ',',
          value_parser = metrics::parse_endpoint)]
    metrics: Vec<(String, String)>,
    /// Seconds between reads of the cluster (lag, offsets, members).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=300))]
    refresh: u64,
}

/// Errors of `backbone console`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ConsoleError {
    /// The estate's specs could not be read.
    #[error(transparent)]
    Estate(#[from] backbone_estate::manifest::EstateError),
    /// The configuration is incomplete or wrong.
    #[error(transparent)]
    Config(#[from] backbone::config::ConfigError),
    /// The listener could not be opened or failed.
    #[error("listening on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Runs the console until interrupted.
pub(crate) async fn run(args: ConsoleArgs) -> Result<(), ConsoleError> {
    let estate = load(&args.sources)?;
    let mut config = Config::from_env(CLIENT)?;
    if let Some(servers) = args.bootstrap_servers {
        config.bootstrap_servers = servers;
    }
    if let Some(registry) = args.registry {
        config.schema_registry_url = registry;
    }
    let console =
        Console::start(config, estate, args.metrics, Duration::from_secs(args.refresh), args.allow_replay);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| ConsoleError::Listen { addr: args.listen, reason: e.to_string() })?;
    let addr = listener
        .local_addr()
        .map_err(|e| ConsoleError::Listen { addr: args.listen, reason: e.to_string() })?;
    if !addr.ip().is_loopback() {
        eprintln!(
            "backbone console: listening on {addr}, beyond loopback: anyone who reaches it reads dead letters"
        );
    }
    println!(
        "backbone console on http://{addr}/ ({})",
        if args.allow_replay { "replay enabled" } else { "read-only" }
    );
    let app = router(Arc::new(console));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            backbone::shutdown_signal().await;
        })
        .await
        .map_err(|e| ConsoleError::Listen { addr, reason: e.to_string() })
}
