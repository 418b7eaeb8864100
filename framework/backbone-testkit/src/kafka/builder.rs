//! How to ask for a cluster the kit starts ([`KafkaClusterBuilder`]'s methods), and starting it: the
//! JVM's argument file, ports, each node's properties, formatting the storage, spawning the nodes.

use base64::Engine as _;

use super::config::{LOG4J2, NodeLayout, TlsFiles, jaas_client, node_properties};
use super::{
    ADMIN_USER, Jvm, KafkaCluster, KafkaClusterBuilder, Local, Node, Role, TOOL_FLAGS, TlsRequest, TlsSetup,
    password_for,
};
use crate::error::{Result, TestkitError};
use crate::fetch;
use crate::java;
use crate::process::{Managed, free_port};

impl KafkaClusterBuilder {
    /// One combined broker+controller node (`1`, the default), or three brokers beside a
    /// controller-only node (`3`) with durable defaults: replication 3, `min.insync.replicas` 2,
    /// unclean leader election off.
    pub fn brokers(mut self, brokers: usize) -> Self {
        self.brokers = brokers;
        self
    }

    /// Turns on SASL/PLAIN with the StandardAuthorizer (`allow.everyone.if.no.acl.found=false`): one
    /// user per principal named here (password [`password_for`](super::password_for)), plus the super
    /// user [`ADMIN_USER`].
    pub fn sasl<I, S>(mut self, users: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.sasl_users = Some(users.into_iter().map(Into::into).collect());
        self
    }

    /// Turns on SASL with the StandardAuthorizer as [`sasl`](Self::sasl) does, with SCRAM-SHA-256 and
    /// SCRAM-SHA-512 enabled beside PLAIN: every user named here (and [`ADMIN_USER`]) gets SCRAM
    /// credentials of both kinds with password [`password_for`](super::password_for), added when the
    /// storage is formatted (`StorageTool format --add-scram`).
    pub fn scram<I, S>(mut self, users: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scram = true;
        self.sasl(users)
    }

    /// Adds a TLS listener (`SSL`, and `SASL_SSL` beside it on a SASL cluster) on every broker, with a
    /// CA and a broker certificate for `127.0.0.1`/`localhost` made for this run. Clients trust
    /// [`KafkaCluster::ca_location`]; the main listener stays as it was (the kit's own admin uses it).
    /// Without client certificates a TLS client is `ANONYMOUS`, which a SASL cluster makes a super
    /// user (the brokers reach the controller as it): use [`mtls`](Self::mtls) to test ACLs over TLS.
    pub fn tls(mut self) -> Self {
        self.tls.get_or_insert_with(TlsRequest::default);
        self
    }

    /// Like [`tls`](Self::tls), with client certificates required on the `SSL` listener (mutual
    /// TLS), one made for each name here (subject `CN=<name>`,
    /// [`KafkaCluster::client_certificate`]). The brokers map a certificate's CN to the principal
    /// (`ssl.principal.mapping.rules`): with `.sasl(…)` too, ACLs for `User:<name>` apply to it.
    pub fn mtls<I, S>(mut self, clients: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let tls = self.tls.get_or_insert_with(TlsRequest::default);
        tls.client_auth = true;
        tls.clients.extend(clients.into_iter().map(Into::into));
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
        // Per broker: its main listener first (inter-broker and the kit's admin), then TLS ones.
        let mut broker_listeners: Vec<Vec<(String, u16)>> =
            broker_ports.iter().map(|p| vec![(listener.to_owned(), *p)]).collect();
        let mut tls_setup = None;
        let tls_files = match &spec.tls {
            Some(request) => {
                let pki = dir.path().join("tls");
                std::fs::create_dir_all(&pki).map_err(TestkitError::io("creating the tls directory"))?;
                let ca = crate::tls::CertificateAuthority::generate(&pki, "backbone-test-ca")?;
                let keystore = ca.broker_keystore("broker")?;
                let mut clients = std::collections::BTreeMap::new();
                for name in &request.clients {
                    clients.insert(name.clone(), ca.client_certificate(name)?);
                }
                let mut names = vec!["SSL"];
                if spec.sasl_users.is_some() {
                    names.push("SASL_SSL");
                }
                let mut bootstraps = vec![Vec::new(); names.len()];
                for listeners in &mut broker_listeners {
                    for (name, servers) in names.iter().zip(&mut bootstraps) {
                        let port = free_port()?;
                        servers.push(format!("127.0.0.1:{port}"));
                        listeners.push(((*name).to_owned(), port));
                    }
                }
                tls_setup = Some(TlsSetup {
                    bootstrap: bootstraps[0].join(","),
                    sasl_bootstrap: bootstraps.get(1).map(|b| b.join(",")),
                    ca: ca.ca_file().to_owned(),
                    clients,
                });
                Some(TlsFiles {
                    keystore,
                    truststore: ca.ca_file().to_owned(),
                    client_auth: request.client_auth,
                })
            }
            None => None,
        };
        let (controller_id, layout): (i32, Vec<(i32, Role, Option<usize>)>) = if spec.brokers == 1 {
            (1, vec![(1, Role::Combined, Some(0))])
        } else {
            let mut l = vec![(0, Role::Controller, None)];
            l.extend((0..spec.brokers).map(|i| (i as i32 + 1, Role::Broker, Some(i))));
            (0, l)
        };

        let mut nodes = Vec::new();
        for (id, role, broker) in layout {
            let node_dir = dir.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&node_dir).map_err(TestkitError::io("creating a node directory"))?;
            let listeners = broker.map_or(&[][..], |i| &broker_listeners[i][..]);
            let props = node_properties(
                &spec,
                &node_dir,
                NodeLayout { id, role, listeners, controller_id, controller_port },
                tls_files.as_ref(),
            );
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
        // SCRAM credentials go into the metadata log the controllers bootstrap from.
        let scram: Vec<String> = match (&spec.sasl_users, spec.scram) {
            (Some(users), true) => std::iter::once(ADMIN_USER)
                .chain(users.iter().map(String::as_str))
                .flat_map(|user| {
                    ["SCRAM-SHA-256", "SCRAM-SHA-512"]
                        .map(|m| format!("{m}=[name={user},password={}]", password_for(user)))
                })
                .collect(),
            _ => Vec::new(),
        };

        // Format every node's storage (in parallel: each is a JVM start).
        let id = cluster_id();
        std::thread::scope(|s| {
            let jobs: Vec<_> = nodes.iter().map(|n| s.spawn(|| format_node(&jvm, &id, n, &scram))).collect();
            jobs.into_iter().try_for_each(|j| {
                j.join().unwrap_or_else(|_| Err(TestkitError::Unsupported("format panicked".into())))
            })
        })?;

        let bootstrap = broker_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        let mut cluster = Self {
            bootstrap,
            sasl: spec.sasl_users.is_some(),
            scram: spec.scram && spec.sasl_users.is_some(),
            tls: tls_setup,
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

fn format_node(jvm: &Jvm, cluster_id: &str, node: &Node, scram: &[String]) -> Result<()> {
    let mut cmd = jvm.command(&TOOL_FLAGS, "kafka.tools.StorageTool");
    cmd.args(["format", "-t", cluster_id, "-c"]).arg(&node.props).arg("--ignore-formatted");
    if node.role != Role::Broker {
        for credential in scram {
            cmd.args(["--add-scram", credential]);
        }
    }
    let out = cmd.output().map_err(TestkitError::io("running StorageTool"))?;
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

pub(super) fn spawn_node(jvm: &Jvm, node: &Node) -> Result<Managed> {
    let mut cmd =
        jvm.command(&["-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"], "kafka.Kafka");
    cmd.arg(&node.props);
    let what = match node.role {
        Role::Controller => format!("Kafka controller {}", node.id),
        _ => format!("Kafka broker {}", node.id),
    };
    Managed::spawn(&what, cmd, &node.log, &jvm.workdir)
}
