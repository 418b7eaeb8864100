//! Where an estate's specs come from: spec files, service binaries, or the workspace's service
//! binaries. Shared by every `backbone estate` subcommand.

use std::path::PathBuf;

use backbone_estate::manifest::{self, Estate, EstateError};
use clap::Args;

/// The sources of an estate's specs (at least one; they add up, and a service found twice is an
/// error).
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = true)]
pub(crate) struct Sources {
    /// A spec file: the JSON of one `ServiceSpec`, or an array of them; repeat for several.
    #[arg(long = "spec", value_name = "FILE")]
    pub(crate) specs: Vec<PathBuf>,
    /// A service binary, run with `--spec` (it prints its spec and exits); repeat for several.
    #[arg(long = "bin", value_name = "PATH")]
    pub(crate) bins: Vec<PathBuf>,
    /// Build the current Cargo workspace's service binaries (packages depending on `backbone` with
    /// a bin target, unless `[package.metadata.backbone] service = false`) and run each with
    /// `--spec`.
    #[arg(long)]
    pub(crate) workspace: bool,
}

/// The estate the sources describe.
pub(crate) fn load(sources: &Sources) -> Result<Estate, EstateError> {
    let mut specs = Vec::new();
    for path in &sources.specs {
        specs.extend(manifest::read_spec_file(path)?);
    }
    let mut bins = sources.bins.clone();
    if sources.workspace {
        bins.extend(manifest::build_workspace_services(&std::env::current_dir().map_err(|e| {
            EstateError::Cargo { step: "metadata", reason: format!("no current directory: {e}") }
        })?)?);
    }
    for bin in &bins {
        specs.push(manifest::spec_of_binary(bin)?);
    }
    Estate::new(specs)
}
