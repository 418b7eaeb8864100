//! `backbone estate plan|apply`: what Kafka should enforce for the estate, as one idempotent diff.
//!
//! - **Topics**: every service's own topics, planned and applied as `backbone topics plan|apply`
//!   does (created, configuration drift set back; what cannot be changed safely is refused).
//! - **ACLs** of each service's principal and its **client quotas**, derived from the specs
//!   (`backbone_estate::desired`) and compared with the cluster's
//!   (`backbone_estate::admin::Plan`). With `--prune`, ACLs and quotas the manifest no longer has
//!   are removed, but only those of the estate's principals or on its prefixes.
//!
//! - **SCRAM users** (`--scram-credentials FILE`, lines `user=password`): a user without a
//!   SCRAM-SHA-512 credential gets one (a credential is never read back, so an existing one is left as
//!   it is: rotate passwords with Kafka's tools or a new user).
//!
//! The estate is checked first: an estate with an error finding is refused before anything is
//! planned. Exit codes: 0 done (or, for `plan`, nothing to change or changes shown), 1 an error,
//! 2 a topic change refused.

use std::process::ExitCode;

use backbone::provision::Provisioner;
use backbone::{Config, Profile};
use backbone_estate::admin::{Cluster, ScramMechanism};
use backbone_estate::{Estate, Severity};
use clap::Args;

use super::{EstateCommandError, Sources, load};

/// The principal-less client id the CLI connects with.
const CLIENT: &str = "backbone-cli";

/// Exit code of a plan or apply with a refused topic change.
const REFUSED: u8 = 2;

/// The arguments of `backbone estate plan` and `backbone estate apply`.
#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    sources: Sources,
    /// Also remove ACLs and quotas of the estate's principals and prefixes that the manifest no
    /// longer has (never anything else's).
    #[arg(long)]
    prune: bool,
    /// Print the plan as JSON (`{"topics": …, "access": …}`).
    #[arg(long)]
    json: bool,
    /// Brokers, overriding `KAFKA_BOOTSTRAP_SERVERS`. The rest of the connection (SASL, TLS) comes
    /// from the environment as for a service; connect as a principal allowed to create topics and
    /// ACLs and to alter quotas (a super user).
    #[arg(long, value_name = "HOST:PORT,…")]
    bootstrap_servers: Option<String>,
    /// SCRAM users to create where missing: a file of `user=password` lines (`#` starts a comment).
    /// Each user without a SCRAM-SHA-512 credential gets one; existing credentials are left alone.
    #[arg(long, value_name = "FILE")]
    scram_credentials: Option<std::path::PathBuf>,
}

/// PBKDF2 iterations of the SCRAM credentials apply creates (Kafka's minimum is 4,096).
const SCRAM_ITERATIONS: i32 = 8192;

/// Reads `user=password` lines.
fn read_credentials(path: &std::path::Path) -> Result<Vec<(String, String)>, EstateCommandError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EstateCommandError::Refused(format!("reading {}: {e}", path.display())))?;
    let mut users = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((user, password)) if !user.trim().is_empty() && !password.is_empty() => {
                users.push((user.trim().to_owned(), password.to_owned()));
            }
            // The line may hold a password: it is not quoted.
            _ => {
                return Err(EstateCommandError::Refused(format!(
                    "{} line {}: expected `user=password`",
                    path.display(),
                    n + 1
                )));
            }
        }
    }
    Ok(users)
}

/// Plans (and with `apply`, applies) the estate's topics, ACLs and quotas.
pub(crate) async fn run(args: PlanArgs, apply: bool) -> Result<ExitCode, EstateCommandError> {
    let estate = load(&args.sources)?;
    refuse_errors(&estate)?;
    let mut config = Config::from_env(CLIENT).map_err(access)?;
    if let Some(servers) = &args.bootstrap_servers {
        config.bootstrap_servers.clone_from(servers);
    }
    eprintln!(
        "backbone estate: {} service(s), {} topic(s), {} ACL(s), {} quota(s); {} profile, brokers {}",
        estate.services().count(),
        estate.topics().len(),
        estate.acls().len(),
        estate.quotas().len(),
        match config.profile {
            Profile::Development => "development",
            Profile::Production => "production",
        },
        config.bootstrap_servers
    );

    let owned: Vec<backbone::TopicSpec> =
        estate.services().flat_map(|s| s.owned_topics().iter().cloned()).collect();
    let provisioner = Provisioner::new(&config, CLIENT).map_err(access)?;
    let topics = provisioner.plan(&owned).await.map_err(access)?;
    let cluster = Cluster::connect(&config).await.map_err(access)?;
    let (acls, quotas) = (estate.acls(), estate.quotas());
    let prefixes: Vec<String> = estate.prefixes().into_iter().collect();
    let access_plan = cluster.plan(&acls, &quotas, &prefixes, args.prune).await.map_err(access)?;
    let credentials = match &args.scram_credentials {
        Some(path) => read_credentials(path)?,
        None => Vec::new(),
    };
    let users: Vec<String> = credentials.iter().map(|(user, _)| user.clone()).collect();
    let known = cluster.describe_scram_credentials(&users).await.map_err(access)?;
    let missing: Vec<&(String, String)> = credentials
        .iter()
        .filter(|(user, _)| {
            !known.get(user).is_some_and(|c| c.iter().any(|c| c.mechanism == ScramMechanism::Sha512))
        })
        .collect();

    let scram: Vec<String> = missing.iter().map(|(user, _)| user.clone()).collect();
    if args.json {
        let all =
            serde_json::json!({ "topics": topics, "access": access_plan.to_json(), "scram_users": scram });
        println!("{}", serde_json::to_string_pretty(&all).expect("plain data"));
    } else {
        print!("{topics}{access_plan}");
        for user in &scram {
            println!("+ SCRAM-SHA-512 credential for User:{user}");
        }
    }
    if topics.has_refusals() {
        eprintln!("backbone estate: topic changes refused (see `!` above); nothing applied");
        return Ok(ExitCode::from(REFUSED));
    }
    if !apply {
        return Ok(ExitCode::SUCCESS);
    }
    if topics.is_noop() && access_plan.is_empty() && missing.is_empty() {
        eprintln!("backbone estate apply: nothing to change");
        return Ok(ExitCode::SUCCESS);
    }
    // Users first: a service may connect as soon as its credential exists.
    for (user, password) in missing {
        cluster
            .upsert_scram_credentials(user, ScramMechanism::Sha512, password, SCRAM_ITERATIONS)
            .await
            .map_err(access)?;
    }
    let report = provisioner.apply(&topics).await.map_err(access)?;
    if !args.json {
        print!("{report}");
    }
    cluster.apply(&access_plan).await.map_err(access)?;
    eprintln!("backbone estate apply: applied");
    Ok(ExitCode::SUCCESS)
}

/// Refuses an estate with an error finding (two writers of a topic, a reader of another's private
/// topic, records or keys that disagree …) before anything touches the cluster.
fn refuse_errors(estate: &Estate) -> Result<(), EstateCommandError> {
    let errors: Vec<String> =
        estate.check().into_iter().filter(|f| f.severity == Severity::Error).map(|f| f.to_string()).collect();
    if errors.is_empty() {
        return Ok(());
    }
    Err(EstateCommandError::Refused(format!(
        "the estate has {} error(s); nothing planned:\n{}",
        errors.len(),
        errors.join("\n")
    )))
}

fn access(e: impl std::fmt::Display) -> EstateCommandError {
    EstateCommandError::Cluster(e.to_string())
}
