//! `backbone estate check|plan|apply|asyncapi|graph`: the estate as a whole, from its services' specs.
//!
//! The specs come from files (`--spec`), from service binaries run with `--spec` (`--bin`), or from
//! the workspace's service binaries (`--workspace`); see [`source::Sources`].
//!
//! Exit codes: 0 done, 1 an error (for `check`: a finding of severity error; for `plan` and
//! `apply`, see [`apply`]).

mod apply;
mod source;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use backbone_estate::{Severity, asyncapi, graph};
use clap::{Subcommand, ValueEnum};

pub(crate) use source::{Sources, load};

#[derive(Debug, Subcommand)]
pub(crate) enum EstateCommand {
    /// Check the estate: one writer per topic, producers for what is read, records and keys that
    /// agree, dead-letter/request/reply topics and groups where they belong (exit 1 on an error).
    Check(#[command(flatten)] Sources),
    /// Show what `apply` would change on the cluster: the estate's topics, its principals' ACLs and
    /// quotas, as a diff (`--json` for JSON).
    Plan(apply::PlanArgs),
    /// Make the cluster enforce the estate: create and fix its topics, grant its principals' ACLs,
    /// set their quotas (`--prune`: and remove the estate's stale ones). Idempotent.
    Apply(apply::PlanArgs),
    /// Write the estate's AsyncAPI 3.0 document (JSON).
    Asyncapi {
        #[command(flatten)]
        sources: Sources,
        /// The document's title.
        #[arg(long, default_value = asyncapi::DEFAULT_TITLE)]
        title: String,
        /// Write to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Draw the estate's topology: services, topics, writes and reads.
    Graph {
        #[command(flatten)]
        sources: Sources,
        /// Mermaid text or a standalone SVG.
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
        /// Write to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// The graph's output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum GraphFormat {
    /// A Mermaid flowchart.
    Mermaid,
    /// An SVG document.
    Svg,
}

/// Why an estate command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EstateCommandError {
    /// Gathering the specs failed.
    #[error(transparent)]
    Estate(#[from] backbone_estate::EstateError),
    /// Writing the output failed.
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    /// The estate has errors: nothing is planned or applied.
    #[error("{0}")]
    Refused(String),
    /// Planning or applying against the cluster failed.
    #[error("{0}")]
    Cluster(String),
}

pub(crate) async fn run(command: EstateCommand) -> Result<ExitCode, EstateCommandError> {
    match command {
        EstateCommand::Plan(args) => apply::run(args, false).await,
        EstateCommand::Apply(args) => apply::run(args, true).await,
        EstateCommand::Check(sources) => {
            let estate = load(&sources)?;
            let findings = estate.check();
            for finding in &findings {
                println!("{finding}");
            }
            let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
            eprintln!(
                "backbone estate check: {} service(s), {} topic(s): {errors} error(s), {} warning(s)",
                estate.services().count(),
                estate.topics().len(),
                findings.len() - errors
            );
            Ok(if errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        EstateCommand::Asyncapi { sources, title, out } => {
            let estate = load(&sources)?;
            write(out.as_deref(), &asyncapi::to_string(&asyncapi::document(&estate, &title)))
        }
        EstateCommand::Graph { sources, format, out } => {
            let estate = load(&sources)?;
            let text = match format {
                GraphFormat::Mermaid => graph::mermaid(&estate),
                GraphFormat::Svg => graph::svg(&estate),
            };
            write(out.as_deref(), &text)
        }
    }
}

fn write(out: Option<&Path>, text: &str) -> Result<ExitCode, EstateCommandError> {
    match out {
        Some(path) => std::fs::write(path, text)
            .map_err(|source| EstateCommandError::Write { path: path.to_owned(), source })?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
