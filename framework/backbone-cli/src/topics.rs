//! `backbone topics plan|apply`: provision the topics that service specs own.
//!
//! A spec file is the JSON of a `ServiceSpec` (`ServiceSpec::to_json`); it is validated again when
//! read (names, settings, ownership). The brokers, security and durability profile come from the
//! environment like a service's (`KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_SECURITY_PROTOCOL`,
//! `KAFKA_SASL_MECHANISM`, `KAFKA_SASL_USERNAME`, `KAFKA_SSL_CA_LOCATION`, `BACKBONE_PROFILE` …; see
//! `backbone::config`). With SASL the principal
//! defaults to `backbone-cli`; set `KAFKA_SASL_USERNAME` to one allowed to create topics.
//!
//! Exit codes: 0 done (or nothing to do), 1 an error, 2 the plan has refusals (nothing applied).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use backbone::provision::{ProvisionError, Provisioner};
use backbone::{Config, Profile, ServiceSpec, TopicSpec};
use clap::{Args, Subcommand};

/// The command's client id (and its SASL principal unless `KAFKA_SASL_USERNAME` says otherwise).
const CLIENT: &str = "backbone-cli";
/// The exit code of a plan with refusals.
const REFUSED: u8 = 2;

#[derive(Debug, Subcommand)]
pub(crate) enum TopicsCommand {
    /// Show what apply would do: `+` create, `~` alter, `=` up to date, `!` refused (exit 2).
    Plan(Specs),
    /// Create missing topics and set drifted configs back; if anything is refused, apply nothing
    /// (exit 2).
    Apply(Specs),
}

#[derive(Debug, Args)]
pub(crate) struct Specs {
    /// A service spec, the JSON of `ServiceSpec::to_json`; repeat for several services. Every topic
    /// a spec owns is provisioned.
    #[arg(long = "spec", value_name = "FILE", required = true)]
    specs: Vec<PathBuf>,
    /// Add partitions where more are declared than exist, instead of refusing. Keys move to other
    /// partitions, so per-key order breaks for consumers that are behind.
    #[arg(long)]
    allow_partition_increase: bool,
}

/// Why a topics command failed.
#[derive(Debug)]
pub(crate) enum TopicsError {
    /// A spec file could not be read or is not a valid spec.
    Spec { path: PathBuf, reason: String },
    /// Configuration or provisioning.
    Backbone(backbone::Error),
}

impl fmt::Display for TopicsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spec { path, reason } => write!(f, "spec {}: {reason}", path.display()),
            Self::Backbone(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TopicsError {}

impl<E: Into<backbone::Error>> From<E> for TopicsError {
    fn from(e: E) -> Self {
        Self::Backbone(e.into())
    }
}

pub(crate) async fn run(command: TopicsCommand) -> Result<ExitCode, TopicsError> {
    let (specs, apply) = match command {
        TopicsCommand::Plan(specs) => (specs, false),
        TopicsCommand::Apply(specs) => (specs, true),
    };
    let topics = read_specs(&specs.specs)?;
    let config = Config::from_env(CLIENT)?;
    eprintln!(
        "backbone topics: {} topic(s) from {} spec(s), {} profile, brokers {}",
        topics.len(),
        specs.specs.len(),
        match config.profile {
            Profile::Development => "development",
            Profile::Production => "production",
        },
        config.bootstrap_servers
    );
    let provisioner =
        Provisioner::new(&config, CLIENT)?.allow_partition_increase(specs.allow_partition_increase);
    let plan = provisioner.plan(&topics).await?;
    if !apply {
        print!("{plan}");
        return Ok(if plan.has_refusals() { ExitCode::from(REFUSED) } else { ExitCode::SUCCESS });
    }
    match provisioner.apply(&plan).await {
        Ok(report) => {
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ ProvisionError::Refused { .. }) => {
            eprintln!("backbone topics apply: {e}");
            Ok(ExitCode::from(REFUSED))
        }
        Err(e) => Err(e.into()),
    }
}

/// Every topic owned by the specs in `paths`, in order.
fn read_specs(paths: &[PathBuf]) -> Result<Vec<TopicSpec>, TopicsError> {
    let mut topics = Vec::new();
    for path in paths {
        topics.extend_from_slice(read_spec(path)?.owned_topics());
    }
    Ok(topics)
}

fn read_spec(path: &Path) -> Result<ServiceSpec, TopicsError> {
    let spec_error = |reason: String| TopicsError::Spec { path: path.to_owned(), reason };
    let json = std::fs::read_to_string(path).map_err(|e| spec_error(e.to_string()))?;
    ServiceSpec::from_json(&json).map_err(|e| spec_error(e.to_string()))
}
