//! What the nodes are started with: each node's `node.properties`, the clients' JAAS line and the
//! logging configuration.

use std::fmt::Write as _;
use std::path::Path;

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

#[allow(clippy::too_many_arguments)]
pub(super) fn node_properties(
    spec: &KafkaClusterBuilder,
    dir: &Path,
    id: i32,
    role: Role,
    port: Option<u16>,
    controller_id: i32,
    controller_port: u16,
    listener: &str,
) -> String {
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
        "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
    );
    let mut listeners = Vec::new();
    if let Some(port) = port {
        listeners.push(format!("{listener}://127.0.0.1:{port}"));
    }
    if role != Role::Broker {
        listeners.push(format!("CONTROLLER://127.0.0.1:{controller_port}"));
    }
    set("listeners", &listeners.join(","));
    if let Some(port) = port {
        set("advertised.listeners", &format!("{listener}://127.0.0.1:{port}"));
        set("inter.broker.listener.name", listener);
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
        if port.is_some() {
            set("sasl.enabled.mechanisms", "PLAIN");
            set("sasl.mechanism.inter.broker.protocol", "PLAIN");
            let mut jaas = format!(
                "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"{ADMIN_USER}\" password=\"{}\"",
                password_for(ADMIN_USER)
            );
            for user in std::iter::once(ADMIN_USER).chain(users.iter().map(String::as_str)) {
                let _ = write!(jaas, " user_{user}=\"{}\"", password_for(user));
            }
            jaas.push(';');
            set("listener.name.sasl_plaintext.plain.sasl.jaas.config", &jaas);
        }
    }
    for (k, v) in &spec.broker_properties {
        if role != Role::Controller {
            set(k, v);
        }
    }
    p
}
