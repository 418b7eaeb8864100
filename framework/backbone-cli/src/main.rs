//! The `backbone` command.
//!
//! - `backbone dev up [--brokers 1|3] [--sasl]`: real Kafka and a schema registry for local work.
//!
//! Run with `cargo run -p backbone-cli -- --help`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod dev;

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
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev { command } => dev::run(command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backbone: {e}");
            ExitCode::FAILURE
        }
    }
}
