//! What Kafka should enforce for an estate: the ACLs of each service's principal, its quotas, and
//! the prefixes the estate manages (what `--prune` may remove).
//!
//! Service `s` (principal `User:s`) gets:
//!
//! | resource | name | pattern | operations | why |
//! |---|---|---|---|---|
//! | topic | `s.` | prefixed | WRITE, READ, DESCRIBE, DESCRIBE_CONFIGS, CREATE, ALTER_CONFIGS | its own topics: public, private, dead letters `s.private.dlq.…`, retries `s.private.retry.…`, requests or replies it owns, tables' state; provisioning creates and alters them |
//! | topic | each public topic of another service it consumes | literal | READ, DESCRIBE | its handlers, tables and reply readers |
//! | group | `s.` | prefixed | READ | handlers `s.<handler>` and their retries `s.<handler>.retry`, tables `s.table.<topic>[.<uuid>]` and their probes, reply readers `s.replies.<uuid>`, event-sourcing readers `s.reader`, `s.totals.<name>` |
//! | transactional id | `s.` | prefixed | WRITE, DESCRIBE | exactly-once handlers: `<group>.<instance or uuid>`, retries `….retry` |
//! | cluster | `kafka-cluster` | literal | IDEMPOTENT_WRITE | the idempotent producer |
//!
//! Nothing grants anyone but its owner an operation on a private topic. A group declared outside
//! the prefix is a check error ([`crate::check::Rule::GroupPrefix`]), not a wider grant.

use std::collections::{BTreeMap, BTreeSet};

use backbone::Quotas;
use backbone::topic::Visibility;

use crate::acl::{AclBinding, Operation, PatternType, ResourceType};
use crate::manifest::Estate;

/// Kafka's name of the cluster resource.
pub const CLUSTER: &str = "kafka-cluster";

/// What a service may do on its own prefix of topics.
pub const OWN_TOPIC_OPERATIONS: [Operation; 6] = [
    Operation::Write,
    Operation::Read,
    Operation::Describe,
    Operation::DescribeConfigs,
    Operation::Create,
    Operation::AlterConfigs,
];

/// What a service may do on a public topic of another service it consumes.
pub const CONSUMED_TOPIC_OPERATIONS: [Operation; 2] = [Operation::Read, Operation::Describe];

impl Estate {
    /// The ACLs the estate's principals need, and no more (see the [module docs](self)).
    pub fn acls(&self) -> BTreeSet<AclBinding> {
        let mut acls = BTreeSet::new();
        for service in self.services() {
            let me = service.name();
            let prefix = prefix(me);
            for op in OWN_TOPIC_OPERATIONS {
                acls.insert(AclBinding::allow(me, op, ResourceType::Topic, &prefix, PatternType::Prefixed));
            }
            for topic in service.consumed_topics() {
                if topic.is_owned_by(me) || topic.visibility() != Visibility::Public {
                    continue;
                }
                for op in CONSUMED_TOPIC_OPERATIONS {
                    acls.insert(AclBinding::allow(
                        me,
                        op,
                        ResourceType::Topic,
                        topic.name(),
                        PatternType::Literal,
                    ));
                }
            }
            acls.insert(AclBinding::allow(
                me,
                Operation::Read,
                ResourceType::Group,
                &prefix,
                PatternType::Prefixed,
            ));
            for op in [Operation::Write, Operation::Describe] {
                acls.insert(AclBinding::allow(
                    me,
                    op,
                    ResourceType::TransactionalId,
                    &prefix,
                    PatternType::Prefixed,
                ));
            }
            acls.insert(AclBinding::allow(
                me,
                Operation::IdempotentWrite,
                ResourceType::Cluster,
                CLUSTER,
                PatternType::Literal,
            ));
        }
        acls
    }

    /// Each principal's quotas (user name to quotas), for the services that declare any.
    pub fn quotas(&self) -> BTreeMap<String, Quotas> {
        self.services()
            .filter(|s| !s.quotas().is_unlimited())
            .map(|s| (s.name().to_owned(), *s.quotas()))
            .collect()
    }

    /// The estate's prefixes, `<service>.` for each service: ACLs on resources under them, and
    /// the services' principals, are the estate's to prune.
    pub fn prefixes(&self) -> BTreeSet<String> {
        self.services().map(|s| prefix(s.name())).collect()
    }
}

/// A service's prefix of topics, groups and transactional ids: `<service>.`.
pub fn prefix(service: &str) -> String {
    format!("{service}.")
}

#[cfg(test)]
mod tests {
    use backbone::consume::dead_letter_topic;
    use backbone::topic::TopicSpec;
    use backbone::{Service, ServiceSpec};

    use super::*;

    fn estate() -> Estate {
        let order = TopicSpec::public("orders", "order", 1).build().unwrap();
        let state = TopicSpec::private("orders", "state").build().unwrap();
        let validation = TopicSpec::public("stock", "order-validation", 1).build().unwrap();
        let orders = Service::new("orders")
            .owns(&order)
            .owns(&state)
            .consumes(&state)
            .consumes(&validation)
            .owns(&dead_letter_topic("orders", &validation).unwrap())
            .quotas(Quotas { producer_byte_rate: Some(1024), ..Quotas::default() })
            .spec()
            .unwrap();
        let stock: ServiceSpec = Service::new("stock").owns(&validation).consumes(&order).spec().unwrap();
        Estate::of([orders, stock]).unwrap()
    }

    fn names(
        acls: &BTreeSet<AclBinding>,
        principal: &str,
    ) -> BTreeSet<(ResourceType, String, PatternType, Operation)> {
        acls.iter()
            .filter(|a| a.principal == principal)
            .map(|a| (a.resource_type, a.resource_name.clone(), a.pattern_type, a.operation))
            .collect()
    }

    #[test]
    fn each_principal_gets_its_prefix_and_what_it_reads() {
        use Operation::*;
        use PatternType::*;
        use ResourceType::*;
        let acls = estate().acls();
        let stock = names(&acls, "User:stock");
        let mut expected: BTreeSet<_> =
            OWN_TOPIC_OPERATIONS.iter().map(|op| (Topic, "stock.".to_owned(), Prefixed, *op)).collect();
        expected.extend([
            (Topic, "orders.public.order-v1".to_owned(), Literal, Read),
            (Topic, "orders.public.order-v1".to_owned(), Literal, Describe),
            (Group, "stock.".to_owned(), Prefixed, Read),
            (TransactionalId, "stock.".to_owned(), Prefixed, Write),
            (TransactionalId, "stock.".to_owned(), Prefixed, Describe),
            (Cluster, "kafka-cluster".to_owned(), Literal, IdempotentWrite),
        ]);
        assert_eq!(stock, expected);
        assert!(acls.iter().all(|a| a.host == "*" && a.permission == crate::acl::Permission::Allow));
        // Orders reads Stock's public topic by its exact name, and its own private one by prefix.
        let orders = names(&acls, "User:orders");
        assert!(orders.contains(&(Topic, "stock.public.order-validation-v1".to_owned(), Literal, Read)));
        assert!(!orders.iter().any(|(_, name, pattern, _)| name.contains("private") && *pattern == Literal));
        assert_eq!(acls.len(), 2 * (6 + 2 + 1 + 2 + 1));
    }

    #[test]
    fn nobody_but_the_owner_gets_anything_on_a_private_topic() {
        let private = ["orders.private.state", "orders.private.dlq.stock.public.order-validation-v1"];
        for acl in estate().acls() {
            let matches = |topic: &str| match acl.pattern_type {
                PatternType::Literal => acl.resource_name == topic,
                PatternType::Prefixed => topic.starts_with(&acl.resource_name),
            };
            if acl.resource_type == ResourceType::Topic && private.iter().any(|t| matches(t)) {
                assert_eq!(acl.principal, "User:orders", "{acl}");
            }
        }
    }

    #[test]
    fn quotas_and_prefixes() {
        let estate = estate();
        assert_eq!(
            estate.quotas(),
            BTreeMap::from([(
                "orders".to_owned(),
                Quotas { producer_byte_rate: Some(1024), ..Quotas::default() }
            )])
        );
        assert_eq!(estate.prefixes(), BTreeSet::from(["orders.".to_owned(), "stock.".to_owned()]));
    }
}
