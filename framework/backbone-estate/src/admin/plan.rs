//! What `estate apply` would change: the diff between what the estate wants (ACLs, quotas) and
//! what the cluster has, computed as a pure function and rendered as text or JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use backbone::service::Quotas;
use serde::{Deserialize, Serialize};

use crate::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};

/// One kind of client quota (Kafka's key for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum QuotaKey {
    /// `producer_byte_rate`: bytes per second produced, per broker.
    ProducerByteRate,
    /// `consumer_byte_rate`: bytes per second fetched, per broker.
    ConsumerByteRate,
    /// `request_percentage`: share of a broker's request and network threads' time.
    RequestPercentage,
}

impl QuotaKey {
    /// Every key, in a fixed order.
    pub const ALL: [QuotaKey; 3] = [Self::ProducerByteRate, Self::ConsumerByteRate, Self::RequestPercentage];

    /// Kafka's name for the key.
    pub fn name(self) -> &'static str {
        match self {
            Self::ProducerByteRate => "producer_byte_rate",
            Self::ConsumerByteRate => "consumer_byte_rate",
            Self::RequestPercentage => "request_percentage",
        }
    }

    /// The key for Kafka's name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// This key's value in `quotas`.
    pub fn get(self, quotas: &Quotas) -> Option<f64> {
        match self {
            Self::ProducerByteRate => quotas.producer_byte_rate.map(|v| v as f64),
            Self::ConsumerByteRate => quotas.consumer_byte_rate.map(|v| v as f64),
            Self::RequestPercentage => quotas.request_percentage,
        }
    }

    /// Sets this key's value in `quotas` (byte rates are whole numbers: Kafka stores them as
    /// doubles, a fraction is dropped).
    pub fn set(self, quotas: &mut Quotas, value: Option<f64>) {
        match self {
            Self::ProducerByteRate => quotas.producer_byte_rate = value.map(|v| v as u64),
            Self::ConsumerByteRate => quotas.consumer_byte_rate = value.map(|v| v as u64),
            Self::RequestPercentage => quotas.request_percentage = value,
        }
    }
}

/// One quota of one user changed: set (`to` is `Some`) or removed (`to` is `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaChange {
    /// The user (the principal's name, without `User:`).
    pub user: String,
    /// Which quota.
    pub key: QuotaKey,
    /// Its value on the cluster now.
    pub from: Option<f64>,
    /// Its value after the change (`None`: removed).
    pub to: Option<f64>,
}

/// The changes that bring a cluster to what the estate declares. Compute it with
/// [`Plan::compute`]; apply it with [`super::Cluster::apply`]. Empty when the cluster already is
/// what the estate declares (so applying twice changes nothing the second time).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// ACLs to create.
    pub create_acls: Vec<AclBinding>,
    /// ACLs to delete (only with prune, and only the estate's own).
    pub delete_acls: Vec<AclBinding>,
    /// Quotas to set or remove.
    pub quotas: Vec<QuotaChange>,
}

/// What a cluster has, as far as the estate is concerned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Current {
    /// ACLs.
    pub acls: BTreeSet<AclBinding>,
    /// Client quotas per user (the user's name, without `User:`).
    pub quotas: BTreeMap<String, Quotas>,
}

/// The estate's services' names from its prefixes (`orders` or `orders.`).
fn services(prefixes: &[String]) -> BTreeSet<&str> {
    prefixes.iter().map(|p| p.trim_end_matches('.')).filter(|p| !p.is_empty()).collect()
}

/// Whether `acl` is the estate's: its principal is one of the estate's services (`User:<svc>`), or
/// its resource's name starts with one of their prefixes (`<svc>.`). Only such ACLs are ever pruned.
pub fn is_estate_acl(acl: &AclBinding, prefixes: &[String]) -> bool {
    services(prefixes).into_iter().any(|svc| {
        acl.principal.strip_prefix("User:") == Some(svc)
            || (acl.resource_type != ResourceType::Cluster
                && acl.resource_name.strip_prefix(svc).is_some_and(|rest| rest.starts_with('.')))
    })
}

/// Whether `user` (without `User:`) is one of the estate's services.
pub fn is_estate_user(user: &str, prefixes: &[String]) -> bool {
    services(prefixes).contains(user)
}

impl Plan {
    /// The plan that brings `current` to the desired ACLs and quotas.
    ///
    /// - ACLs the estate wants and the cluster lacks are created.
    /// - With `prune`, ACLs the cluster has and the estate no longer wants are deleted, but only
    ///   the estate's own ([`is_estate_acl`]): never the super user's, never another team's.
    /// - A user's quotas the estate declares are set where they differ. With `prune`, quotas the
    ///   cluster has for one of the estate's users and the estate does not declare are removed.
    pub fn compute(
        desired_acls: &BTreeSet<AclBinding>,
        desired_quotas: &BTreeMap<String, Quotas>,
        current: &Current,
        prefixes: &[String],
        prune: bool,
    ) -> Plan {
        let create_acls = desired_acls.difference(&current.acls).cloned().collect();
        let delete_acls = if prune {
            current
                .acls
                .difference(desired_acls)
                .filter(|acl| is_estate_acl(acl, prefixes))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let none = Quotas::default();
        let mut quotas = Vec::new();
        let users: BTreeSet<&String> = desired_quotas.keys().chain(current.quotas.keys()).collect();
        for user in users {
            let have = current.quotas.get(user).unwrap_or(&none);
            let want = desired_quotas.get(user);
            if want.is_none() && !(prune && is_estate_user(user, prefixes)) {
                continue;
            }
            let want = want.unwrap_or(&none);
            for key in QuotaKey::ALL {
                let (from, to) = (key.get(have), key.get(want));
                let change = match (from, to) {
                    (f, Some(t)) => f != Some(t),
                    (Some(_), None) => prune,
                    (None, None) => false,
                };
                if change {
                    quotas.push(QuotaChange { user: user.clone(), key, from, to });
                }
            }
        }
        Plan { create_acls, delete_acls, quotas }
    }

    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.create_acls.is_empty() && self.delete_acls.is_empty() && self.quotas.is_empty()
    }

    /// The plan as a JSON value (the same shape as its `Serialize`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a plan is plain data")
    }
}

/// The text diff: one line per change, `+` created, `-` deleted, `~` changed quota.
///
/// ```text
/// + ALLOW User:orders WRITE topic prefixed orders.
/// - ALLOW User:orders READ group literal orders.old
/// ~ quota User:orders producer_byte_rate 1048576 -> 10485760
/// ```
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no changes: the cluster is what the estate declares");
        }
        for acl in &self.create_acls {
            writeln!(f, "+ {}", AclLine(acl))?;
        }
        for acl in &self.delete_acls {
            writeln!(f, "- {}", AclLine(acl))?;
        }
        for q in &self.quotas {
            let show = |v: Option<f64>| v.map_or_else(|| "(none)".to_owned(), |v| v.to_string());
            writeln!(f, "~ quota User:{} {} {} -> {}", q.user, q.key.name(), show(q.from), show(q.to))?;
        }
        Ok(())
    }
}

/// An ACL as one line of the diff: `ALLOW User:orders WRITE topic prefixed orders.` (and
/// `from <host>` when it is not every host).
pub struct AclLine<'a>(pub &'a AclBinding);

impl fmt::Display for AclLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let acl = self.0;
        let permission = match acl.permission {
            Permission::Allow => "ALLOW",
            Permission::Deny => "DENY",
        };
        let resource = match acl.resource_type {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::TransactionalId => "transactional-id",
            ResourceType::Cluster => "cluster",
        };
        let pattern = match acl.pattern_type {
            PatternType::Literal => "literal",
            PatternType::Prefixed => "prefixed",
        };
        write!(
            f,
            "{permission} {} {} {resource} {pattern} {}",
            acl.principal,
            operation_name(acl.operation),
            acl.resource_name
        )?;
        if acl.host != "*" {
            write!(f, " from {}", acl.host)?;
        }
        Ok(())
    }
}

/// Kafka's name for an operation (`DESCRIBE_CONFIGS`).
pub fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::All => "ALL",
        Operation::Read => "READ",
        Operation::Write => "WRITE",
        Operation::Create => "CREATE",
        Operation::Delete => "DELETE",
        Operation::Alter => "ALTER",
        Operation::Describe => "DESCRIBE",
        Operation::DescribeConfigs => "DESCRIBE_CONFIGS",
        Operation::AlterConfigs => "ALTER_CONFIGS",
        Operation::IdempotentWrite => "IDEMPOTENT_WRITE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(svc: &str, op: Operation, rt: ResourceType, name: &str, pt: PatternType) -> AclBinding {
        AclBinding::allow(svc, op, rt, name, pt)
    }

    fn prefixes() -> Vec<String> {
        vec!["orders".into(), "stock.".into()]
    }

    fn quotas(p: Option<u64>, c: Option<u64>, r: Option<f64>) -> Quotas {
        Quotas { producer_byte_rate: p, consumer_byte_rate: c, request_percentage: r }
    }

    #[test]
    fn missing_acls_are_created_and_present_ones_left_alone() {
        let write = allow("orders", Operation::Write, ResourceType::Topic, "orders.", PatternType::Prefixed);
        let read =
            allow("stock", Operation::Read, ResourceType::Topic, "orders.placed", PatternType::Literal);
        let desired: BTreeSet<_> = [write.clone(), read.clone()].into();
        let current = Current { acls: [read].into(), ..Current::default() };
        let plan = Plan::compute(&desired, &BTreeMap::new(), &current, &prefixes(), true);
        assert_eq!(plan.create_acls, vec![write]);
        assert!(plan.delete_acls.is_empty() && plan.quotas.is_empty());
        assert_eq!(plan.to_string(), "+ ALLOW User:orders WRITE topic prefixed orders.\n");
    }

    #[test]
    fn the_same_state_plans_nothing() {
        let write = allow("orders", Operation::Write, ResourceType::Topic, "orders.", PatternType::Prefixed);
        let desired: BTreeSet<_> = [write].into();
        let desired_quotas: BTreeMap<_, _> =
            [("orders".to_owned(), quotas(Some(1024), None, Some(50.0)))].into();
        let current = Current { acls: desired.clone(), quotas: desired_quotas.clone() };
        let plan = Plan::compute(&desired, &desired_quotas, &current, &prefixes(), true);
        assert!(plan.is_empty(), "{plan}");
        assert_eq!(plan.to_string(), "no changes: the cluster is what the estate declares\n");
    }

    #[test]
    fn prune_deletes_only_the_estates_stale_acls() {
        let stale_principal =
            allow("orders", Operation::Read, ResourceType::Group, "legacy-group", PatternType::Literal);
        let stale_resource = allow(
            "billing",
            Operation::Read,
            ResourceType::Topic,
            "stock.private.levels",
            PatternType::Literal,
        );
        let admins = allow("admin", Operation::All, ResourceType::Topic, "ops.", PatternType::Prefixed);
        let other_team =
            allow("billing", Operation::Write, ResourceType::Topic, "billing.", PatternType::Prefixed);
        // A name that merely starts like a service is not that service's.
        let lookalike =
            allow("billing", Operation::Read, ResourceType::Topic, "orders-archive.x", PatternType::Literal);
        let current = Current {
            acls: [stale_principal.clone(), stale_resource.clone(), admins, other_team, lookalike].into(),
            ..Current::default()
        };
        let without = Plan::compute(&BTreeSet::new(), &BTreeMap::new(), &current, &prefixes(), false);
        assert!(without.is_empty(), "nothing is deleted without prune: {without}");
        let plan = Plan::compute(&BTreeSet::new(), &BTreeMap::new(), &current, &prefixes(), true);
        let mut expected = vec![stale_principal, stale_resource];
        expected.sort();
        assert_eq!(plan.delete_acls, expected);
        assert!(plan.to_string().contains("- ALLOW User:orders READ group literal legacy-group\n"), "{plan}");
    }

    #[test]
    fn quotas_are_set_where_different_and_pruned_only_for_estate_users() {
        let desired: BTreeMap<_, _> = [("orders".to_owned(), quotas(Some(10_485_760), None, None))].into();
        let current = Current {
            quotas: [
                ("orders".to_owned(), quotas(Some(1_048_576), Some(5), None)),
                ("stock".to_owned(), quotas(None, None, Some(25.0))),
                ("billing".to_owned(), quotas(Some(1), None, None)),
            ]
            .into(),
            ..Current::default()
        };
        let plan = Plan::compute(&BTreeSet::new(), &desired, &current, &prefixes(), false);
        assert_eq!(
            plan.quotas,
            vec![QuotaChange {
                user: "orders".into(),
                key: QuotaKey::ProducerByteRate,
                from: Some(1_048_576.0),
                to: Some(10_485_760.0)
            }]
        );
        assert_eq!(plan.to_string(), "~ quota User:orders producer_byte_rate 1048576 -> 10485760\n");

        let pruned = Plan::compute(&BTreeSet::new(), &desired, &current, &prefixes(), true);
        let changes: Vec<_> = pruned.quotas.iter().map(|q| (q.user.as_str(), q.key, q.to)).collect();
        assert_eq!(
            changes,
            vec![
                ("orders", QuotaKey::ProducerByteRate, Some(10_485_760.0)),
                ("orders", QuotaKey::ConsumerByteRate, None),
                ("stock", QuotaKey::RequestPercentage, None),
            ],
            "billing is not the estate's: its quota stays"
        );
    }

    #[test]
    fn a_desired_acl_or_quota_outside_the_prefixes_is_not_planned_again_once_there() {
        let foreign =
            allow("billing", Operation::Read, ResourceType::Topic, "billing.x", PatternType::Literal);
        let desired: BTreeSet<_> = [foreign].into();
        let desired_quotas: BTreeMap<_, _> = [("billing".to_owned(), quotas(Some(5), None, None))].into();
        let current = Current { acls: desired.clone(), quotas: desired_quotas.clone() };
        assert!(Plan::compute(&desired, &desired_quotas, &current, &prefixes(), true).is_empty());
    }

    #[test]
    fn the_plan_renders_as_json() {
        let write = allow("orders", Operation::Write, ResourceType::Topic, "orders.", PatternType::Prefixed);
        let plan = Plan { create_acls: vec![write], ..Plan::default() };
        let json = plan.to_json();
        assert_eq!(json["create_acls"][0]["operation"], "write");
        assert_eq!(json["create_acls"][0]["principal"], "User:orders");
        let back: Plan = serde_json::from_value(json).unwrap();
        assert_eq!(back, plan);
    }
}
