//! Broker control: which broker leads a partition, killing, pausing, resuming and restarting brokers,
//! and waiting for the cluster to come back (leaders moved, replicas in sync, brokers listed).

use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};

use super::KafkaCluster;
use super::builder::spawn_node;
use crate::error::{Result, TestkitError};
use crate::process::Managed;

/// How long a start (or restart) may take until metadata lists the brokers.
const START_TIMEOUT: Duration = Duration::from_secs(180);

impl KafkaCluster {
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

    /// A client for metadata requests that does not log (brokers may be down on purpose).
    fn metadata_client(&self) -> Result<BaseConsumer> {
        self.client_config().set("log_level", "0").create().map_err(|e| TestkitError::Command {
            what: "creating a metadata client".into(),
            detail: e.to_string(),
        })
    }

    /// Waits until metadata answers and lists every running broker (or, with `broker`, that one).
    pub(super) fn wait_ready(&mut self, broker: Option<i32>) -> Result<()> {
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
