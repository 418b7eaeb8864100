//! `backbone dev up`: the test kit's real Kafka and Apicurio Registry, for local work.

use std::io::Write as _;

use backbone_testkit::{ADMIN_USER, KafkaCluster, SchemaRegistry, TestkitError, password_for};
use clap::Subcommand;
use tokio::signal::unix::{SignalKind, signal};

/// The sample estate's services: each gets its own SASL principal with `--sasl`.
const ESTATE_PRINCIPALS: [&str; 2] = ["orders", "stock"];

#[derive(Debug, Subcommand)]
pub(crate) enum DevCommand {
    /// Start Kafka and a schema registry, print their addresses, stop both on Ctrl-C or SIGTERM.
    Up {
        /// One combined KRaft node, or three brokers beside a controller-only node.
        #[arg(long, default_value_t = 1, value_parser = parse_brokers)]
        brokers: usize,
        /// SASL/PLAIN with ACLs enforced, one principal per estate service (password `<name>-secret`).
        #[arg(long)]
        sasl: bool,
    },
}

fn parse_brokers(value: &str) -> Result<usize, String> {
    match value {
        "1" => Ok(1),
        "3" => Ok(3),
        other => Err(format!("{other}: a dev cluster has 1 or 3 brokers")),
    }
}

pub(crate) async fn run(command: DevCommand) -> Result<(), TestkitError> {
    match command {
        DevCommand::Up { brokers, sasl } => up(brokers, sasl).await,
    }
}

async fn up(brokers: usize, sasl: bool) -> Result<(), TestkitError> {
    // Install the handlers first, so a signal during start-up still stops what was started.
    let mut terminate = signal(SignalKind::terminate()).map_err(io_error("installing a SIGTERM handler"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(io_error("installing a SIGINT handler"))?;
    eprintln!(
        "backbone dev up: starting Kafka ({brokers} broker(s){}) and the schema registry …",
        if sasl { ", SASL/PLAIN with ACLs" } else { "" }
    );

    let kafka = tokio::task::spawn_blocking(move || {
        let builder =
            KafkaCluster::builder().brokers(brokers).preferred_ports(&[9092, 9093, 9094][..brokers]);
        if sasl { builder.sasl(ESTATE_PRINCIPALS).start() } else { builder.start() }
    });
    let registry = tokio::task::spawn_blocking(|| SchemaRegistry::start_preferring(Some(8081)));
    let started = async {
        let (kafka, registry) = tokio::join!(kafka, registry);
        Ok::<_, TestkitError>((kafka.expect("start-up thread")?, registry.expect("start-up thread")?))
    };
    let (kafka, registry) = tokio::select! {
        started = started => started?,
        _ = terminate.recv() => return Ok(()),
        _ = interrupt.recv() => return Ok(()),
    };

    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "KAFKA_BOOTSTRAP_SERVERS={}", kafka.bootstrap_servers());
    let _ = writeln!(out, "SCHEMA_REGISTRY_URL={}", registry.url());
    if brokers == 1 {
        // One broker cannot hold replication 3: say so explicitly, as the configuration requires.
        let _ = writeln!(out, "BACKBONE_PROFILE=development");
    }
    if sasl {
        let _ = writeln!(out, "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT");
        let _ = writeln!(out, "KAFKA_SASL_MECHANISM=PLAIN");
        let _ = writeln!(out, "KAFKA_SASL_USERNAME={ADMIN_USER}");
        let _ = writeln!(out, "KAFKA_SASL_PASSWORD={}", password_for(ADMIN_USER));
    }
    let _ = out.flush();
    drop(out);
    eprintln!("backbone dev up: ready; Ctrl-C or SIGTERM stops everything");

    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    eprintln!("backbone dev up: stopping …");
    drop(kafka);
    drop(registry);
    eprintln!("backbone dev up: stopped");
    Ok(())
}

fn io_error(context: &'static str) -> impl FnOnce(std::io::Error) -> TestkitError {
    move |source| TestkitError::Io { context: context.into(), source }
}
