//! A real Apache Kafka cluster (KRaft) on loopback: one combined node, or three brokers and a
//! controller-only node; optionally SASL/PLAIN with the StandardAuthorizer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

use crate::error::{Result, TestkitError};
use crate::fetch;
use crate::java::{self, Java};
use crate::process::{Managed, free_port};

/// The SASL user that is a super user of a SASL cluster (brokers talk to each other as it).
pub const ADMIN_USER: &str = "admin";
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// The password the kit gives a SASL user: `<name>-secret`.
pub fn password_for(user: &str) -> String {
    format!("{user}-secret")
}

/// How to start a [`KafkaCluster`].
#[derive(Debug, Clone, Default)]
pub struct KafkaClusterBuilder {
    brokers: usize,
    sasl_users: Option<Vec<String>>,
    broker_properties: BTreeMap<String, String>,
    preferred_ports: Vec<u16>,
}

impl KafkaClusterBuilder {
    /// One combined broker+controller node (`1`, the default), or three brokers beside a
    /// controller-only node (`3`) with durable defaults: replication 3, `min.insync.replicas` 2,
    /// unclean leader election off.
    pub fn brokers(mut self, brokers: usize) -> Self {
        self.brokers = brokers;
        self
    }

    /// Turns on SASL/PLAIN with the StandardAuthorizer (`allow.everyone.if.no.acl.found=false`): one
    /// user per principal named here (password [`password_for`]), plus the super user [`ADMIN_USER`].
    pub fn sasl<I, S>(mut self, users: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.sasl_users = Some(users.into_iter().map(Into::into).collect());
        self
    }

    /// Sets an extra broker property (quotas, timeouts …) on every broker.
    pub fn broker_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.broker_properties.insert(key.into(), value.into());
        self
    }

    /// Client ports to use when every one of them is free (one per broker), as `backbone dev up`
    /// does with 9092…, so default configurations find the cluster; otherwise free ports are chosen.
    pub fn preferred_ports(mut self, ports: &[u16]) -> Self {
        self.preferred_ports = ports.to_vec();
        self
    }

    /// Fetches Kafka if needed, formats and starts the nodes, and returns once metadata lists
    /// every broker.
    pub fn start(self) -> Result<KafkaCluster> {
        KafkaCluster::start_local(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Combined,
    Broker,
    Controller,
}

#[derive(Debug)]
struct Node {
    id: i32,
    role: Role,
    props: PathBuf,
    log: PathBuf,
    process: Option<Managed>,
}

/// How to run a Kafka class: the Java binary and an `@argfile` with the classpath and logging config
/// (a short command line in `ps`, whatever the classpath's length).
#[derive(Debug, Clone)]
struct Jvm {
    java: Java,
    argfile: PathBuf,
    /// The cluster's temporary directory, which every node's watchdog removes if the test process
    /// dies without dropping the cluster.
    workdir: PathBuf,
}

/// Flags for short-lived tool JVMs (format, ACLs): start fast, stay small.
const TOOL_FLAGS: [&str; 3] = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m"];

impl Jvm {
    fn command(&self, flags: &[&str], main_class: &str) -> Command {
        let mut cmd = Command::new(&self.java.bin);
        cmd.args(flags).arg(format!("@{}", self.argfile.display())).arg(main_class);
        cmd
    }
}

#[derive(Debug)]
struct Local {
    // Fields drop in declaration order: the processes go before their directory.
    nodes: Vec<Node>,
    jvm: Jvm,
    dir: tempfile::TempDir,
}

/// A Kafka cluster for tests: started by the kit on loopback, or an external one named by
/// `KAFKA_BOOTSTRAP_SERVERS` (see [`crate::shared_kafka`]). Every process it started is killed when
/// it is dropped, and by a watchdog if the test process dies first.
#[derive(Debug)]
pub struct KafkaCluster {
    bootstrap: String,
    sasl: bool,
    broker_count: usize,
    local: Option<Local>,
}

/// A resource an ACL applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AclResource {
    /// One topic, by exact name.
    Topic(String),
    /// Every topic whose name starts with the prefix.
    TopicPrefix(String),
    /// One consumer group, by exact name.
    Group(String),
    /// Every consumer group whose name starts with the prefix.
    GroupPrefix(String),
    /// One transactional id, by exact name.
    TransactionalId(String),
    /// The cluster (for `IdempotentWrite`, `Create`, `Describe`, …).
    Cluster,
}

/// An operation an ACL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AclOperation {
    /// Fetch from a topic, join a group.
    Read,
    /// Produce to a topic, write a transactional id.
    Write,
    /// Create topics.
    Create,
    /// Describe a resource (metadata, offsets).
    Describe,
    /// Describe and alter configs.
    DescribeConfigs,
    /// Idempotent produce (on the cluster).
    IdempotentWrite,
    /// Every operation.
    All,
}

impl AclOperation {
    fn as_arg(self) -> &'static str {
        match self {
            Self::Read => "Read",
            Self::Write => "Write",
            Self::Create => "Create",
            Self::Describe => "Describe",
            Self::DescribeConfigs => "DescribeConfigs",
            Self::IdempotentWrite => "IdempotentWrite",
            Self::All => "All",
        }
    }
}

/// A random KRaft cluster id (22 characters of URL-safe base64). Never starting with `-`, which
/// StorageTool's argument parser would take for an option.
fn cluster_id() -> String {
    loop {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

const LOG4J2: &str = "status = error
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

impl KafkaCluster {
    /// A builder for a cluster the kit starts.
    pub fn builder() -> KafkaClusterBuilder {
        KafkaClusterBuilder { brokers: 1, ..KafkaClusterBuilder::default() }
    }

    /// Starts one combined KRaft node without authentication.
    pub fn start_single() -> Result<Self> {
        Self::builder().start()
    }

    /// Starts three brokers and a controller-only node without authentication.
    pub fn start_three() -> Result<Self> {
        Self::builder().brokers(3).start()
    }

    /// An already running cluster at `bootstrap` (PLAINTEXT); the kit starts and stops nothing.
    pub fn external(bootstrap: impl Into<String>) -> Self {
        Self { bootstrap: bootstrap.into(), sasl: false, broker_count: 0, local: None }
    }

    /// `host:port,…` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Whether SASL/PLAIN with ACLs is on.
    pub fn is_sasl(&self) -> bool {
        self.sasl
    }

    /// How many brokers the kit started (0 for an external cluster).
    pub fn broker_count(&self) -> usize {
        self.broker_count
    }

    /// The ids of the brokers the kit started.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.local
            .iter()
            .flat_map(|l| l.nodes.iter())
            .filter(|n| n.role != Role::Controller)
            .map(|n| n.id)
            .collect()
    }

    /// A client configuration with `bootstrap.servers` set; on a SASL cluster it authenticates as
    /// the super user [`ADMIN_USER`].
    pub fn client_config(&self) -> ClientConfig {
        if self.sasl { self.client_config_as(ADMIN_USER) } else { self.plain_config() }
    }

    /// A client configuration that authenticates as `user` (SASL clusters; on others the user is
    /// ignored).
    pub fn client_config_as(&self, user: &str) -> ClientConfig {
        let mut config = self.plain_config();
        if self.sasl {
            config
                .set("security.protocol", "SASL_PLAINTEXT")
                .set("sasl.mechanism", "PLAIN")
                .set("sasl.username", user)
                .set("sasl.password", password_for(user));
        }
        config
    }

    fn plain_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
    }

    /// Creates a topic and waits until its leaders are known.
    pub async fn create_topic(&self, name: &str, partitions: i32, replication: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create().map_err(|e| {
            TestkitError::Command { what: "creating an admin client".into(), detail: e.to_string() }
        })?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin.create_topics([&topic], &opts).await.map_err(|e| TestkitError::Command {
            what: format!("creating topic {name}"),
            detail: e.to_string(),
        })?;
        for r in results {
            r.map_err(|(t, e)| TestkitError::Command {
                what: format!("creating topic {t}"),
                detail: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// The broker leading `topic`'s `partition`, from fresh metadata.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Result<i32> {
        let consumer: BaseConsumer = self.client_config().create().map_err(|e| TestkitError::Command {
            what: "creating a metadata client".into(),
            detail: e.to_string(),
        })?;
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(|e| {
            TestkitError::Command { what: format!("metadata for {topic}"), detail: e.to_string() }
        })?;
        md.topics()
            .iter()
            .flat_map(|t| t.partitions())
            .find(|p| p.id() == partition)
            .map(|p| p.leader())
            .filter(|l| *l >= 0)
            .ok_or_else(|| TestkitError::Command {
                what: format!("metadata for {topic}"),
                detail: format!("partition {partition} has no leader"),
            })
    }

    /// SIGKILLs broker `id` (no clean shutdown, as a crash).
    pub fn kill_broker(&mut self, id: i32) -> Result<()> {
        let node = self.node_mut(id)?;
        match node.process.take() {
            Some(mut p) => {
                p.kill();
                Ok(())
            }
            None => Err(TestkitError::Unsupported(format!("broker {id} is not running"))),
        }
    }

    /// Freezes broker `id` with SIGSTOP: its process stays, its sockets stay open, it answers nothing
    /// (a long GC pause, a stalled VM) until [`resume_broker`](Self::resume_broker). Past the
    /// controller's `broker.session.timeout.ms` (6 s in a three-broker cluster) it is fenced and its
    /// partitions get new leaders while clients still wait on it.
    pub fn pause_broker(&mut self, id: i32) -> Result<()> {
        self.signal_broker(id, "STOP")
    }

    /// Thaws broker `id` after [`pause_broker`](Self::pause_broker) with SIGCONT.
    pub fn resume_broker(&mut self, id: i32) -> Result<()> {
        self.signal_broker(id, "CONT")
    }

    fn signal_broker(&mut self, id: i32, signal: &str) -> Result<()> {
        let node = self.node_mut(id)?;
        let pid = node
            .process
            .as_ref()
            .map(Managed::pid)
            .ok_or_else(|| TestkitError::Unsupported(format!("broker {id} is not running")))?;
        let out = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .output()
            .map_err(TestkitError::io("running kill"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(TestkitError::Command {
                what: format!("sending SIG{signal} to broker {id} (pid {pid})"),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// Sets (`Some`) or removes (`None`) the produce quota `producer_byte_rate` of the clients whose
    /// `client.id` is `client_id`, in bytes per second per broker, through Kafka's own
    /// `ConfigCommand` (`kafka.admin.ConfigCommand` in Kafka 4.1). A broker throttles a client past
    /// its quota: it answers with a `throttle_time_ms` and stops reading the connection that long.
    pub fn set_produce_quota(&self, client_id: &str, bytes_per_second: Option<u64>) -> Result<()> {
        let local = self.local.as_ref().ok_or_else(Self::external_error)?;
        let mut cmd = local.jvm.command(&TOOL_FLAGS, "kafka.admin.ConfigCommand");
        cmd.args(["--bootstrap-server", &self.bootstrap]);
        if self.sasl {
            cmd.arg("--command-config").arg(local.dir.path().join("admin.properties"));
        }
        cmd.args(["--alter", "--entity-type", "clients", "--entity-name", client_id]);
        match bytes_per_second {
            Some(rate) => cmd.args(["--add-config", &format!("producer_byte_rate={rate}")]),
            None => cmd.args(["--delete-config", "producer_byte_rate"]),
        };
        let out = cmd.output().map_err(TestkitError::io("running ConfigCommand"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(TestkitError::Command {
                what: format!("setting the produce quota of client {client_id} to {bytes_per_second:?}"),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }

    /// Starts broker `id` again with its data (no re-format) and waits until metadata lists it.
    pub fn restart_broker(&mut self, id: i32) -> Result<()> {
        let local = self.local.as_ref().ok_or_else(Self::external_error)?;
        let jvm = local.jvm.clone();
        let node = self.node_mut(id)?;
        if node.process.is_some() {
            return Err(TestkitError::Unsupported(format!("broker {id} is already running")));
        }
        node.process = Some(spawn_node(&jvm, node)?);
        self.wait_ready(Some(id))
    }

    /// Waits until `topic`'s `partition` has a leader other than broker `not` (the controller
    /// noticed `not` crashed or froze and moved the leadership) and returns it.
    pub fn wait_leader_moved(&self, topic: &str, partition: i32, not: i32, timeout: Duration) -> Result<i32> {
        let consumer = self.metadata_client()?;
        let deadline = Instant::now() + timeout;
        loop {
            let leader = consumer.fetch_metadata(Some(topic), Duration::from_secs(1)).ok().and_then(|md| {
                md.topics()
                    .iter()
                    .flat_map(|t| t.partitions())
                    .find(|p| p.id() == partition)
                    .map(|p| p.leader())
            });
            match leader {
                Some(l) if l >= 0 && l != not => return Ok(l),
                _ if Instant::now() > deadline => {
                    return Err(TestkitError::Command {
                        what: format!("waiting for {topic}-{partition} to leave broker {not}"),
                        detail: format!("leader still {leader:?} after {timeout:?}"),
                    });
                }
                // No event tells the leadership moved: look again shortly.
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Waits until every partition of `topics` has all its replicas in sync again (after a broker
    /// restart, before the next one is killed: otherwise two brokers down at once leave partitions
    /// below `min.insync.replicas`, which is a different failure than one broker's crash).
    pub fn wait_in_sync(&self, topics: &[&str], timeout: Duration) -> Result<()> {
        let consumer = self.metadata_client()?;
        let deadline = Instant::now() + timeout;
        loop {
            let mut lagging = Vec::new();
            for topic in topics {
                match consumer.fetch_metadata(Some(topic), Duration::from_secs(1)) {
                    Ok(md) => lagging.extend(
                        md.topics()
                            .iter()
                            .flat_map(|t| t.partitions())
                            .filter(|p| p.isr().len() < p.replicas().len() || p.leader() < 0)
                            .map(|p| format!("{topic}-{}", p.id())),
                    ),
                    Err(e) => lagging.push(format!("{topic}: {e}")),
                }
            }
            if lagging.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestkitError::Command {
                    what: format!("waiting for {topics:?} in sync"),
                    detail: format!("still out of sync after {timeout:?}: {lagging:?}"),
                });
            }
            // No event tells a replica caught up: look again shortly.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Process ids of the JVMs the kit started (for leak checks).
    pub fn pids(&self) -> Vec<u32> {
        self.local
            .iter()
            .flat_map(|l| l.nodes.iter())
            .filter_map(|n| n.process.as_ref().map(Managed::pid))
            .collect()
    }

    /// The temporary directory holding the brokers' configuration, logs and data (for leak checks;
    /// `None` for an external cluster). Dropping the cluster removes it, and so do the brokers'
    /// watchdogs if the test process dies with the cluster still alive.
    pub fn work_dir(&self) -> Option<&std::path::Path> {
        self.local.as_ref().map(|l| l.dir.path())
    }

    /// Adds an ACL allowing `principal` (a user name, without `User:`) `operation` on `resource`,
    /// through Kafka's own `AclCommand` as the super user.
    pub fn allow(&self, principal: &str, operation: AclOperation, resource: &AclResource) -> Result<()> {
        let local = self.local.as_ref().ok_or_else(Self::external_error)?;
        if !self.sasl {
            return Err(TestkitError::Unsupported("ACLs need a cluster started with .sasl(…)".into()));
        }
        let admin_props = local.dir.path().join("admin.properties");
        let mut cmd = local.jvm.command(&TOOL_FLAGS, "org.apache.kafka.tools.AclCommand");
        cmd.args(["--bootstrap-server", &self.bootstrap, "--command-config"])
            .arg(&admin_props)
            .args(["--add", "--allow-principal", &format!("User:{principal}")])
            .args(["--operation", operation.as_arg()]);
        let (flag, name, prefixed) = match resource {
            AclResource::Topic(t) => ("--topic", t.as_str(), false),
            AclResource::TopicPrefix(t) => ("--topic", t.as_str(), true),
            AclResource::Group(g) => ("--group", g.as_str(), false),
            AclResource::GroupPrefix(g) => ("--group", g.as_str(), true),
            AclResource::TransactionalId(t) => ("--transactional-id", t.as_str(), false),
            AclResource::Cluster => ("--cluster", "", false),
        };
        cmd.arg(flag);
        if !name.is_empty() {
            cmd.arg(name);
        }
        if prefixed {
            cmd.args(["--resource-pattern-type", "prefixed"]);
        }
        let out = cmd.output().map_err(TestkitError::io("running AclCommand"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(TestkitError::Command {
                what: format!("allowing {principal} {operation:?} on {resource:?}"),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }

    fn external_error() -> TestkitError {
        TestkitError::Unsupported(
            "this is an external cluster (KAFKA_BOOTSTRAP_SERVERS): the kit did not start it and cannot \
             kill, restart or reconfigure it; start one with KafkaCluster::builder()"
                .into(),
        )
    }

    fn node_mut(&mut self, id: i32) -> Result<&mut Node> {
        let local = self.local.as_mut().ok_or_else(Self::external_error)?;
        local
            .nodes
            .iter_mut()
            .find(|n| n.id == id && n.role != Role::Controller)
            .ok_or_else(|| TestkitError::Unsupported(format!("no broker with id {id}")))
    }

    fn start_local(spec: KafkaClusterBuilder) -> Result<Self> {
        if spec.brokers != 1 && spec.brokers != 3 {
            return Err(TestkitError::Unsupported(format!(
                "a test cluster has 1 or 3 brokers, not {}",
                spec.brokers
            )));
        }
        let java = java::java(17, "Apache Kafka 4")?;
        let classpath = fetch::kafka_classpath()?;
        let dir = tempfile::Builder::new()
            .prefix("backbone-kafka-")
            .tempdir()
            .map_err(TestkitError::io("creating a temporary directory"))?;
        let log4j = dir.path().join("log4j2.properties");
        std::fs::write(&log4j, LOG4J2).map_err(TestkitError::io("writing log4j2.properties"))?;
        let argfile = dir.path().join("jvm.args");
        let args = format!("-Dlog4j2.configurationFile=\"{}\"\n-cp \"{classpath}\"\n", log4j.display());
        std::fs::write(&argfile, args).map_err(TestkitError::io("writing jvm.args"))?;
        let jvm = Jvm { java, argfile, workdir: dir.path().to_owned() };

        let controller_port = free_port()?;
        let broker_ports: Vec<u16> = if spec.preferred_ports.len() == spec.brokers
            && spec.preferred_ports.iter().all(|p| crate::process::port_is_free(*p))
        {
            spec.preferred_ports.clone()
        } else {
            (0..spec.brokers).map(|_| free_port()).collect::<Result<_>>()?
        };
        let listener = if spec.sasl_users.is_some() { "SASL_PLAINTEXT" } else { "PLAINTEXT" };
        let (controller_id, layout): (i32, Vec<(i32, Role, Option<u16>)>) = if spec.brokers == 1 {
            (1, vec![(1, Role::Combined, Some(broker_ports[0]))])
        } else {
            let mut l = vec![(0, Role::Controller, None)];
            l.extend(broker_ports.iter().enumerate().map(|(i, p)| (i as i32 + 1, Role::Broker, Some(*p))));
            (0, l)
        };

        let mut nodes = Vec::new();
        for (id, role, port) in layout {
            let node_dir = dir.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&node_dir).map_err(TestkitError::io("creating a node directory"))?;
            let props =
                node_properties(&spec, &node_dir, id, role, port, controller_id, controller_port, listener);
            let props_path = node_dir.join("node.properties");
            std::fs::write(&props_path, props).map_err(TestkitError::io("writing node.properties"))?;
            nodes.push(Node { id, role, props: props_path, log: node_dir.join("server.log"), process: None });
        }
        if spec.sasl_users.is_some() {
            let admin = format!(
                "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config={}\n",
                jaas_client(ADMIN_USER)
            );
            std::fs::write(dir.path().join("admin.properties"), admin)
                .map_err(TestkitError::io("writing admin.properties"))?;
        }

        // Format every node's storage (in parallel: each is a JVM start).
        let id = cluster_id();
        std::thread::scope(|s| {
            let jobs: Vec<_> = nodes.iter().map(|n| s.spawn(|| format_node(&jvm, &id, n))).collect();
            jobs.into_iter().try_for_each(|j| {
                j.join().unwrap_or_else(|_| Err(TestkitError::Unsupported("format panicked".into())))
            })
        })?;

        let bootstrap = broker_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        let mut cluster = Self {
            bootstrap,
            sasl: spec.sasl_users.is_some(),
            broker_count: spec.brokers,
            local: Some(Local { nodes: Vec::new(), jvm, dir }),
        };
        let local = cluster.local.as_mut().expect("just set");
        for mut node in nodes {
            node.process = Some(spawn_node(&local.jvm, &node)?);
            local.nodes.push(node);
        }
        cluster.wait_ready(None)?;
        Ok(cluster)
    }

    /// A client for metadata requests that does not log (brokers may be down on purpose).
    fn metadata_client(&self) -> Result<BaseConsumer> {
        self.client_config().set("log_level", "0").create().map_err(|e| TestkitError::Command {
            what: "creating a metadata client".into(),
            detail: e.to_string(),
        })
    }

    /// Waits until metadata answers and lists every running broker (or, with `broker`, that one).
    fn wait_ready(&mut self, broker: Option<i32>) -> Result<()> {
        let consumer = self.metadata_client()?;
        let want: Vec<i32> = match broker {
            Some(id) => vec![id],
            None => self.broker_ids(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(md) = consumer.fetch_metadata(None, Duration::from_secs(1)) {
                let up: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
                if want.iter().all(|id| up.contains(id)) {
                    return Ok(());
                }
            }
            let local = self.local.as_mut().ok_or_else(Self::external_error)?;
            for node in &mut local.nodes {
                if let Some(p) = node.process.as_mut() {
                    p.check_alive("the process exited while starting")?;
                }
            }
            if Instant::now() > deadline {
                let node = local.nodes.iter().find(|n| n.process.is_some()).expect("a node was started");
                return Err(node.process.as_ref().expect("running").start_error(format!(
                    "metadata did not list brokers {want:?} within {START_TIMEOUT:?}"
                )));
            }
            // fetch_metadata itself waits up to a second per attempt; no extra sleep.
        }
    }
}

fn jaas_client(user: &str) -> String {
    format!(
        "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"{user}\" password=\"{}\";",
        password_for(user)
    )
}

#[allow(clippy::too_many_arguments)]
fn node_properties(
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

fn format_node(jvm: &Jvm, cluster_id: &str, node: &Node) -> Result<()> {
    let out = jvm
        .command(&TOOL_FLAGS, "kafka.tools.StorageTool")
        .args(["format", "-t", cluster_id, "-c"])
        .arg(&node.props)
        .arg("--ignore-formatted")
        .output()
        .map_err(TestkitError::io("running StorageTool"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestkitError::Command {
            what: format!("formatting node {}", node.id),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

fn spawn_node(jvm: &Jvm, node: &Node) -> Result<Managed> {
    let mut cmd =
        jvm.command(&["-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"], "kafka.Kafka");
    cmd.arg(&node.props);
    let what = match node.role {
        Role::Controller => format!("Kafka controller {}", node.id),
        _ => format!("Kafka broker {}", node.id),
    };
    Managed::spawn(&what, cmd, &node.log, &jvm.workdir)
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        if let Some(local) = self.local.as_mut() {
            // Brokers first, then the controller, so none waits on a vanished quorum.
            for node in local.nodes.iter_mut().rev() {
                if let Some(mut p) = node.process.take() {
                    p.kill();
                }
            }
        }
    }
}
