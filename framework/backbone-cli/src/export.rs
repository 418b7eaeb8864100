//! `backbone export k8s`: the estate as Strimzi resources for Kubernetes, from its services' specs
//! (the same sources as `backbone estate`: `--spec`, `--bin`, `--workspace`).

use std::path::PathBuf;
use std::process::ExitCode;

use backbone_estate::strimzi::{self, Authentication, Options};
use clap::{Subcommand, ValueEnum};

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
        /// How the services authenticate: SCRAM-SHA-512 over TLS, or mutual TLS.
        #[arg(long, value_enum, default_value_t = Auth::ScramSha512)]
        auth: Auth,
        /// The directory to write the files to (created if missing).
        #[arg(short = 'o', long = "out", value_name = "DIR", default_value = "deploy/k8s/strimzi")]
        out: PathBuf,
    },
}

/// How the services authenticate (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Auth {
    /// SASL SCRAM-SHA-512 on the TLS listener.
    #[value(name = "scram-sha-512")]
    ScramSha512,
    /// Mutual TLS (client certificates).
    Tls,
}

pub(crate) fn run(command: ExportCommand) -> Result<ExitCode, EstateCommandError> {
    match command {
        ExportCommand::K8s { sources, namespace, cluster, auth, out } => {
            let estate = load(&sources)?;
            let authentication = match auth {
                Auth::ScramSha512 => Authentication::ScramSha512,
                Auth::Tls => Authentication::Tls,
            };
            let options = Options { cluster, namespace, authentication, ..Options::default() };
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
