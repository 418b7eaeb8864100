//! An estate of backbone services seen as a whole.
//!
//! Every service declares, in code, the topics it owns and reads and the throughput it may use
//! ([`backbone::ServiceSpec`]). The estate's manifest is the union of those declarations, and it is
//! the one source of truth for what Kafka enforces: the ACLs of each service's principal and its
//! client quotas are derived from it, planned as a diff against the cluster, and applied.
//!
//! - [`manifest`]: the [`Estate`], gathered from spec files, from service binaries run with
//!   `--spec`, or from a Cargo workspace's service binaries.
//! - [`check`]: the estate's checks ([`Estate::check`]), run before anything is applied.
//! - [`desired`]: the ACLs ([`Estate::acls`]) and quotas ([`Estate::quotas`]) Kafka should enforce.
//! - [`acl`]: ACL bindings as plain data (what the estate wants, what the cluster has).
//! - [`admin`]: applying ACLs, SCRAM users and client quotas to a real cluster, as a plan and apply.
//! - [`asyncapi`] and [`graph`]: the estate as an AsyncAPI 3.0 document and as a topology graph
//!   (Mermaid, SVG).
//! - [`strimzi`]: the estate as Strimzi resources for Kubernetes (`Kafka`, node pool, `KafkaTopic`s,
//!   `KafkaUser`s with their ACLs and quotas).
//!
//! # Ownership, enforced
//!
//! Every service binary built with [`backbone::app::App`] (or `backbone::service!`) prints its spec
//! when run with `--spec`, connecting to nothing:
//!
//! ```text
//! $ target/debug/orders --spec > orders.json
//! $ backbone estate check --spec orders.json --spec stock.json   # or --bin PATH…, or --workspace
//! $ backbone estate plan --workspace            # topics, ACLs and quotas: the diff (--json)
//! $ backbone estate apply --workspace --prune   # idempotent; prunes only the estate's own
//! $ backbone estate asyncapi --workspace --out docs/estate/asyncapi.json
//! $ backbone estate graph --workspace --format svg --out docs/estate/topology.svg
//! $ backbone export k8s --workspace -o deploy/k8s/strimzi   # Strimzi resources
//! ```
//!
//! From code:
//!
//! ```
//! use backbone::{Quotas, Service, topic::TopicSpec};
//! use backbone_estate::Estate;
//!
//! let created = TopicSpec::public("orders", "order-created", 1).build()?;
//! let orders = Service::new("orders")
//!     .owns(&created)
//!     .quotas(Quotas { producer_byte_rate: Some(10 << 20), ..Quotas::default() })
//!     .spec()?;
//! let stock = Service::new("stock").consumes(&created).spec()?;
//! let estate = Estate::of([orders, stock])?;
//!
//! assert!(estate.check().is_empty());
//! // Stock reads Orders' public topic by its exact name; each service owns its prefix.
//! assert!(estate.acls().iter().any(|acl| acl.principal == "User:stock"
//!     && acl.resource_name == "orders.public.order-created-v1"));
//! assert_eq!(estate.quotas()["orders"].producer_byte_rate, Some(10 << 20));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod acl;
pub mod admin;
pub mod asyncapi;
pub mod check;
pub mod desired;
pub mod graph;
pub mod manifest;
pub mod strimzi;

pub use check::{Finding, Rule, Severity};
pub use manifest::{Estate, EstateError};
