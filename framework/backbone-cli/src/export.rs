//! `backbone export k8s`: the estate as Strimzi resources for Kubernetes, from its services' specs
//! (the same sources as `backbone estate`: `--spec`, `--bin`, `--workspace`).

use std::path::PathBuf;
use std::process::ExitCode;

use backbone_estate::strimzi::{self, Options};
use clap::Subcommand;

use crate::estate::{EstateCommandError, Sources, load};

#[derive(Debug, Subcommand)]
pub(crate) enum ExportCommand {
    /// Write the estate's Strimzi resources: a KRaft `Kafka` and its node pool (kafka.yaml), a
    /// `KafkaTopic` per owned topic (topics.yaml), a `KafkaUser` per service with its ACLs and
    /// quotas (users.yaml), and a kustomization.yaml listing them.
    K8s {
        #[command(flatten)]
        sources: Sources,
        /// The namespace written in every resource (default: none, left to kustomize or kubectl).
        #[arg(long)]
        namespace: Option<String>,
        /// The `Kafka` resource's name.
        #[arg(long, default_value = strimzi::DEFAULT_CLUSTER)]
        cluster: String,
        /// The directory to write the files to (created if missing).
        #[arg(short = 'o', long = "out", value_name = "DIR", default_value = "deploy/k8s/strimzi")]
        out: PathBuf,
    },
}

pub(crate) fn run(command: ExportCommand) -> Result<ExitCode, EstateCommandError> {
    match command {
        ExportCommand::K8s { sources, namespace, cluster, out } => {
            let estate = load(&sources)?;
            let options = Options { cluster, namespace, ..Options::default() };
            let write_error = |path: PathBuf| move |source| EstateCommandError::Write { path, source };
            std::fs::create_dir_all(&out).map_err(write_error(out.clone()))?;
            for (file, text) in strimzi::files(&estate, &options) {
                let path = out.join(file);
                std::fs::write(&path, text).map_err(write_error(path.clone()))?;
            }
            eprintln!(
                "backbone export k8s: {} service(s), {} topic(s) written to {}",
                estate.services().count(),
                strimzi::owned_topics(&estate).len(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
