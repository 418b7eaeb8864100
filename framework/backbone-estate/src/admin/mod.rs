//! Applying an estate to a real cluster: its ACLs, SCRAM users and client quotas, through Kafka's
//! admin protocol from Rust, as an idempotent plan and apply.
//!
//! ```no_run
//! # async fn example(config: backbone::Config, desired: std::collections::BTreeSet<backbone_estate::acl::AclBinding>,
//! #   quotas: std::collections::BTreeMap<String, backbone::service::Quotas>) -> Result<(), backbone_estate::admin::AdminError> {
//! use backbone_estate::admin::Cluster;
//! let cluster = Cluster::connect(&config).await?;
//! let prefixes = vec!["orders".to_owned(), "stock".to_owned()];
//! let plan = cluster.plan(&desired, &quotas, &prefixes, /* prune */ false).await?;
//! print!("{plan}"); // or plan.to_json()
//! cluster.apply(&plan).await?;
//! assert!(cluster.plan(&desired, &quotas, &prefixes, false).await?.is_empty());
//! # Ok(()) }
//! ```
//!
//! - [`plan`]: the diff, a pure function ([`Plan::compute`]), as text or JSON.
//! - [`Cluster`]: connect with a [`backbone::Config`], read what the cluster has
//!   ([`Cluster::current`]), apply a plan ([`Cluster::apply`]), and the single operations.
//! - ACLs and SCRAM credentials go through librdkafka's admin API (`native`, the one module with
//!   `unsafe`); client quotas, which librdkafka lacks, through the `kafka-protocol` crate over a
//!   connection of our own (`wire`, authenticated as the configuration says: PLAIN, SCRAM, TLS).

mod cluster;
mod error;
mod log_dirs;
mod native;
pub mod plan;
mod quota;
mod scram;
mod wire;

pub use cluster::{Cluster, DEFAULT_TIMEOUT};
pub use error::{AdminError, BindingFailure};
pub use native::{AclFilter, ScramCredential, ScramMechanism};
pub use plan::{AclLine, Current, Plan, QuotaChange, QuotaKey};
