//! The `backbone` command.
//!
//! - `backbone dev up [--brokers 1|3] [--sasl]`: real Kafka and a schema registry for local work.
//! - `backbone topics plan|apply --spec FILE …`: provision the topics service specs own (exit 2 when
//!   the plan has refusals).
//! - `backbone dlq list|replay --service NAME …`: inspect a service's dead letters and send chosen
//!   ones back to the handler that failed them.
//! - `backbone estate check|plan|apply|asyncapi|graph (--spec FILE… | --bin PATH… | --workspace)`:
//!   the estate as a whole: its checks (exit 1 on an error); its topics, ACLs and quotas planned and
//!   applied as one idempotent diff (`--prune`, `--json`); its AsyncAPI 3.0 document; its topology
//!   (Mermaid, SVG).
//! - `backbone export k8s (--spec FILE… | --bin PATH… | --workspace) [-o DIR]`: the estate as
//!   Strimzi resources (a KRaft `Kafka`, its node pool, `KafkaTopic`s, `KafkaUser`s with their ACLs
//!   and quotas), written to `deploy/k8s/strimzi` by default.
//! - `backbone console (--spec FILE… | --bin PATH… | --workspace) [--listen 127.0.0.1:9000]
//!   [--allow-replay]`: the estate in a browser (see the `console` module).
//! - `backbone new service NAME`: scaffold a service crate (contracts, a handler, a route, a test).
//! - `backbone schemas check [--dir schemas] [--against REV | --registry URL]`: the compatibility gate
//!   for the Avro contracts in `schemas/` (exit 1 when one breaks its rule, 2 when the check cannot run).
//!
//! Run with `cargo run -p backbone-cli -- --help`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod console;
mod dev;
mod dlq;
mod estate;
mod export;
mod new_service;
mod schemas;
mod topics;

/// backbone: microservices on Apache Kafka.
#[derive(Debug, Parser)]
#[command(name = "backbone", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Local development infrastructure.
    Dev {
        #[command(subcommand)]
        command: dev::DevCommand,
    },
    /// Topics as code: plan and apply the topics of service specs.
    Topics {
        #[command(subcommand)]
        command: topics::TopicsCommand,
    },
    /// Dead letters: list a service's, replay chosen ones to their origin topic.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// The estate as a whole, from its services' specs: checks, AsyncAPI, topology.
    Estate {
        #[command(subcommand)]
        command: estate::EstateCommand,
    },
    /// Exports of the estate for deployment: Strimzi resources for Kubernetes.
    Export {
        #[command(subcommand)]
        command: export::ExportCommand,
    },
    /// The estate in a browser: services, topics, groups with live lag, dead letters (replay with
    /// `--allow-replay`), schemas with diffs.
    Console(console::ConsoleArgs),
    /// Scaffold a new service crate in the workspace.
    New {
        #[command(subcommand)]
        command: new_service::NewCommand,
    },
    /// Avro contracts: check edits in `schemas/` against their history in git or the registry.
    Schemas {
        #[command(subcommand)]
        command: schemas::SchemasCommand,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<ExitCode, Box<dyn std::error::Error>> = match cli.command {
        Command::Dev { command } => dev::run(command).await.map(|()| ExitCode::SUCCESS).map_err(Into::into),
        Command::Topics { command } => topics::run(command).await.map_err(Into::into),
        Command::Dlq { command } => dlq::run(command).await.map_err(Into::into),
        Command::Estate { command } => estate::run(command).await.map_err(Into::into),
        Command::Export { command } => export::run(command).map_err(Into::into),
        Command::Console(args) => console::run(args).await.map(|()| ExitCode::SUCCESS).map_err(Into::into),
        Command::New { command } => new_service::run(command).map(|()| ExitCode::SUCCESS).map_err(Into::into),
        Command::Schemas { command } => Ok(schemas::run(command).await),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("backbone: {e}");
            ExitCode::FAILURE
        }
    }
}
