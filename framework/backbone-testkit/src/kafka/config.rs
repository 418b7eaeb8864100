//! What the nodes are started with: each node's `node.properties`, the clients' JAAS line and the
//! logging configuration.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{ADMIN_USER, KafkaClusterBuilder, Role, password_for};

/// The nodes' logging: warnings, and the line that tells a broker started.
pub(super) const LOG4J2: &str = "status = error
appender.file.type = Console
appender.file.name = OUT
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.ak.name = org.apache.kafka
logger.ak.level = WARN
logger.started.name = kafka.server.BrokerServer
logger.started.level = INFO
";

pub(super) fn jaas_client(user: &str) -> String {
    format!(
        "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"{user}\" password=\"{}\";",
        password_for(user)
    )
}

/// Where a node sits in the cluster and what it listens on.
pub(super) struct NodeLayout<'a> {
    pub(super) id: i32,
    pub(super) role: Role,
    /// The broker's listeners, the main one (inter-broker) first; empty on a controller-only node.
    pub(super) listeners: &'a [(String, u16)],
    pub(super) controller_id: i32,
    pub(super) controller_port: u16,
}

/// The brokers' TLS material.
pub(super) struct TlsFiles {
    /// Key and certificate chain, one PEM file.
    pub(super) keystore: PathBuf,
    /// The CA's certificate.
    pub(super) truststore: PathBuf,
    /// Whether the `SSL` listener requires client certificates.
    pub(super) client_auth: bool,
}

/// Maps a client certificate's subject `CN=name,…` to the principal `User:name`.
const PRINCIPAL_MAPPING: &str = "RULE:^CN=([^,]+).*$/$1/,DEFAULT";

pub(super) fn node_properties(
    spec: &KafkaClusterBuilder,
    dir: &Path,
    node: NodeLayout<'_>,
    tls: Option<&TlsFiles>,
) -> String {
    let NodeLayout { id, role, listeners, controller_id, controller_port } = node;
    let mut p = String::new();
    let mut set = |k: &str, v: &str| {
        let _ = writeln!(p, "{k}={v}");
    };
    set("node.id", &id.to_string());
    set(
        "process.roles",
        match role {
            Role::Combined => "broker,controller",
            Role::Broker => "broker",
            Role::Controller => "controller",
        },
    );
    set("controller.quorum.voters", &format!("{controller_id}@127.0.0.1:{controller_port}"));
    set("controller.listener.names", "CONTROLLER");
    set(
        "listener.security.protocol.map",
        "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
    );
    let advertised: Vec<String> =
        listeners.iter().map(|(name, port)| format!("{name}://127.0.0.1:{port}")).collect();
    let mut all = advertised.clone();
    if role != Role::Broker {
        all.push(format!("CONTROLLER://127.0.0.1:{controller_port}"));
    }
    set("listeners", &all.join(","));
    if let Some((main, _)) = listeners.first() {
        set("advertised.listeners", &advertised.join(","));
        set("inter.broker.listener.name", main);
    }
    set("log.dirs", &dir.join("data").display().to_string());
    set("auto.create.topics.enable", "false");
    set("group.initial.rebalance.delay.ms", "0");
    set("offsets.topic.num.partitions", "4");
    set("transaction.state.log.num.partitions", "4");
    set("num.network.threads", "2");
    set("num.io.threads", "4");
    if spec.brokers == 1 {
        for k in [
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
            "transaction.state.log.min.isr",
            "share.coordinator.state.topic.replication.factor",
            "share.coordinator.state.topic.min.isr",
        ] {
            set(k, "1");
        }
    } else {
        set("default.replication.factor", "3");
        set("min.insync.replicas", "2");
        set("unclean.leader.election.enable", "false");
        set("offsets.topic.replication.factor", "3");
        set("transaction.state.log.replication.factor", "3");
        set("transaction.state.log.min.isr", "2");
        set("share.coordinator.state.topic.replication.factor", "3");
        set("share.coordinator.state.topic.min.isr", "2");
        set("broker.session.timeout.ms", "6000");
        set("broker.heartbeat.interval.ms", "1000");
    }
    if let Some(users) = &spec.sasl_users {
        set("authorizer.class.name", "org.apache.kafka.metadata.authorizer.StandardAuthorizer");
        // The CONTROLLER listener is the only PLAINTEXT one: brokers reach the controller as ANONYMOUS.
        set("super.users", &format!("User:{ADMIN_USER};User:ANONYMOUS"));
        set("allow.everyone.if.no.acl.found", "false");
        let sasl_listeners: Vec<String> = listeners
            .iter()
            .filter(|(name, _)| name.starts_with("SASL"))
            .map(|(n, _)| n.to_lowercase())
            .collect();
        if !sasl_listeners.is_empty() {
            set(
                "sasl.enabled.mechanisms",
                if spec.scram { "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512" } else { "PLAIN" },
            );
            set("sasl.mechanism.inter.broker.protocol", "PLAIN");
            let mut jaas = format!(
                "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"{ADMIN_USER}\" password=\"{}\"",
                password_for(ADMIN_USER)
            );
            for user in std::iter::once(ADMIN_USER).chain(users.iter().map(String::as_str)) {
                let _ = write!(jaas, " user_{user}=\"{}\"", password_for(user));
            }
            jaas.push(';');
            for listener in &sasl_listeners {
                set(&format!("listener.name.{listener}.plain.sasl.jaas.config"), &jaas);
                if spec.scram {
                    for mechanism in ["scram-sha-256", "scram-sha-512"] {
                        set(
                            &format!("listener.name.{listener}.{mechanism}.sasl.jaas.config"),
                            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                        );
                    }
                }
            }
        }
    }
    if let Some(tls) = tls.filter(|_| !listeners.is_empty()) {
        set("ssl.keystore.type", "PEM");
        set("ssl.keystore.location", &tls.keystore.display().to_string());
        set("ssl.truststore.type", "PEM");
        set("ssl.truststore.location", &tls.truststore.display().to_string());
        set("listener.name.ssl.ssl.client.auth", if tls.client_auth { "required" } else { "none" });
        set("ssl.principal.mapping.rules", PRINCIPAL_MAPPING);
    }
    for (k, v) in &spec.broker_properties {
        if role != Role::Controller {
            set(k, v);
        }
    }
    p
}
