//! An estate of backbone services seen as a whole.
//!
//! Every service declares, in code, the topics it owns and reads and the throughput it may use
//! ([`backbone::ServiceSpec`]). The estate's manifest is the union of those declarations, and it is
//! the one source of truth for what Kafka enforces: the ACLs of each service's principal and its
//! client quotas are derived from it, planned as a diff against the cluster, and applied.
//!
//! - [`acl`]: ACL bindings as plain data (what the estate wants, what the cluster has).
//! - [`admin`]: applying ACLs, SCRAM users and client quotas to a real cluster, as a plan and apply.

pub mod acl;
pub mod admin;
