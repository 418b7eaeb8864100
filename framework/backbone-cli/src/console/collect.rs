//! The collector: a thread that reads the cluster every refresh into one [`Snapshot`] (metadata,
//! offsets, consumer groups with their lag, and now and then each declared topic's drift), and
//! publishes it through a `watch` channel that pages and the live stream read.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backbone::Config;
use backbone::provision::{Action, Provisioner};
use backbone_estate::admin::Cluster;
use backbone_estate::manifest::Estate;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::groups::{GroupState, Groups, is_group_of};
use super::metrics::{ServiceMetrics, scrape};
use super::topics::{PartitionState, TopicState, is_internal};
use super::{CLIENT, REQUEST_TIMEOUT};

/// How many lag samples each group's sparkline keeps (ten minutes at the default refresh).
const HISTORY: usize = 300;
/// Drift is read every this many refreshes (it asks for every declared topic's configuration).
const DRIFT_EVERY: u64 = 15;

/// What the console knows of the cluster at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// When it was read (`None`: not yet).
    pub(crate) at: Option<SystemTime>,
    /// How long reading it took.
    pub(crate) took: Duration,
    /// The brokers: id and `host:port`.
    pub(crate) brokers: Vec<(i32, String)>,
    /// Every topic but Kafka's internal ones, by name.
    pub(crate) topics: Vec<TopicState>,
    /// Every consumer group, by name.
    pub(crate) groups: Vec<GroupState>,
    /// Each declared topic's differences from its declaration (empty: as declared); absent until
    /// first read.
    pub(crate) drift: BTreeMap<String, Vec<String>>,
    /// Each topic's bytes on disk (the largest replica of each partition, summed); absent until
    /// first read, or when the brokers refused to say.
    pub(crate) sizes: BTreeMap<String, i64>,
    /// The services' own numbers, from their metrics endpoints (none given: empty).
    pub(crate) metrics: BTreeMap<String, ServiceMetrics>,
    /// Each group's total lag over the last minutes, oldest first.
    pub(crate) history: BTreeMap<String, Vec<i64>>,
    /// What went wrong reading it, if anything.
    pub(crate) error: Option<String>,
}

impl Snapshot {
    /// The topic named `name`.
    pub(crate) fn topic(&self, name: &str) -> Option<&TopicState> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// Starts the collector thread; it stops when every receiver is gone.
pub(super) fn start(
    config: Config,
    estate: Arc<Estate>,
    metrics: Vec<(String, String)>,
    refresh: Duration,
) -> watch::Receiver<Arc<Snapshot>> {
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("console-collector".into())
        .spawn(move || {
            let mut collector = Collector::new(config, estate, metrics, runtime);
            for round in 0.. {
                let started = Instant::now();
                let snapshot = collector.collect(round % DRIFT_EVERY == 0);
                if tx.send(Arc::new(snapshot)).is_err() {
                    return;
                }
                std::thread::sleep(refresh.saturating_sub(started.elapsed()).max(Duration::from_millis(200)));
            }
        })
        .expect("spawn the console's collector thread");
    rx
}

/// The collector's clients and what it carries from one read to the next.
struct Collector {
    config: Config,
    estate: Arc<Estate>,
    runtime: tokio::runtime::Handle,
    /// Metadata and offsets (no group).
    client: Option<BaseConsumer>,
    groups: Groups,
    /// The services' metrics endpoints, `(service, url)`, and the client that reads them.
    endpoints: Vec<(String, String)>,
    http: reqwest::Client,
    drift: BTreeMap<String, Vec<String>>,
    /// The admin connection that reads log-dir sizes, and the last sizes read.
    cluster: Option<Cluster>,
    sizes: BTreeMap<String, i64>,
    history: BTreeMap<String, VecDeque<i64>>,
}

impl Collector {
    fn new(
        config: Config,
        estate: Arc<Estate>,
        endpoints: Vec<(String, String)>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let groups = Groups::new(config.clone());
        let http = reqwest::Client::new();
        let (drift, history) = (BTreeMap::new(), BTreeMap::new());
        let (cluster, sizes) = (None, BTreeMap::new());
        Self {
            config,
            estate,
            runtime,
            client: None,
            groups,
            endpoints,
            http,
            drift,
            cluster,
            sizes,
            history,
        }
    }

    fn collect(&mut self, with_drift: bool) -> Snapshot {
        let started = Instant::now();
        let mut snapshot = Snapshot { at: Some(SystemTime::now()), ..Snapshot::default() };
        if let Err(e) = self.read(&mut snapshot) {
            snapshot.error = Some(e);
        }
        if with_drift || self.drift.is_empty() {
            self.drift = self.read_drift();
            let brokers: Vec<String> = snapshot.brokers.iter().map(|(_, address)| address.clone()).collect();
            self.sizes = self.read_sizes(&brokers).unwrap_or_default();
        }
        snapshot.sizes.clone_from(&self.sizes);
        snapshot.drift.clone_from(&self.drift);
        if !self.endpoints.is_empty() {
            snapshot.metrics = self.runtime.block_on(scrape(&self.http, &self.endpoints));
        }
        for group in &snapshot.groups {
            let samples = self.history.entry(group.name.clone()).or_default();
            if samples.len() == HISTORY {
                samples.pop_front();
            }
            samples.push_back(group.total_lag());
        }
        self.history.retain(|name, _| snapshot.groups.iter().any(|g| &g.name == name));
        snapshot.history =
            self.history.iter().map(|(k, v)| (k.clone(), v.iter().copied().collect())).collect();
        snapshot.took = started.elapsed();
        snapshot
    }

    fn client(&mut self) -> Result<&BaseConsumer, String> {
        if self.client.is_none() {
            let client: BaseConsumer = self
                .config
                .client_config(CLIENT)
                .set("group.id", "backbone-console")
                .set("enable.auto.commit", "false")
                .create()
                .map_err(|e| format!("connecting to {}: {e}", self.config.bootstrap_servers))?;
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("set above"))
    }

    fn read(&mut self, snapshot: &mut Snapshot) -> Result<(), String> {
        let client = self.client()?;
        let metadata = client
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map_err(|e| format!("reading the cluster's metadata: {e}"))?;
        snapshot.brokers =
            metadata.brokers().iter().map(|b| (b.id(), format!("{}:{}", b.host(), b.port()))).collect();
        snapshot.brokers.sort();
        let mut topics: Vec<TopicState> = metadata
            .topics()
            .iter()
            .filter(|t| !is_internal(t.name()) && t.error().is_none())
            .map(|t| TopicState {
                name: t.name().to_owned(),
                partitions: t
                    .partitions()
                    .iter()
                    .map(|p| PartitionState {
                        id: p.id(),
                        leader: p.leader(),
                        replicas: p.replicas().to_vec(),
                        isr: p.isr().to_vec(),
                        low: 0,
                        high: 0,
                    })
                    .collect(),
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        for t in &mut topics {
            t.partitions.sort_by_key(|p| p.id);
        }
        // End and first offsets of every partition: one ListOffsets per broker each.
        for (which, offset) in [(true, Offset::End), (false, Offset::Beginning)] {
            let mut asked = TopicPartitionList::new();
            for t in &topics {
                for p in &t.partitions {
                    asked.add_partition_offset(&t.name, p.id, offset).map_err(|e| e.to_string())?;
                }
            }
            if asked.count() == 0 {
                break;
            }
            let found = client
                .offsets_for_times(asked, REQUEST_TIMEOUT)
                .map_err(|e| format!("reading the topics' offsets: {e}"))?;
            let found: HashMap<(String, i32), i64> = found
                .elements()
                .iter()
                .filter_map(|e| Some(((e.topic().to_owned(), e.partition()), e.offset().to_raw()?)))
                .collect();
            for t in &mut topics {
                for p in &mut t.partitions {
                    let value = found.get(&(t.name.clone(), p.id)).copied().filter(|o| *o >= 0).unwrap_or(0);
                    if which {
                        p.high = value;
                    } else {
                        p.low = value;
                    }
                }
            }
        }
        let estate = &self.estate;
        let reads = |group: &str| -> Vec<String> {
            estate
                .services()
                .flat_map(|s| s.consumers())
                .filter(|c| is_group_of(group, &c.group))
                .map(|c| c.topic.clone())
                .collect()
        };
        snapshot.groups = self.groups.read(self.client.as_ref().expect("connected above"), &topics, reads)?;
        snapshot.topics = topics;
        Ok(())
    }

    /// Each topic's bytes on disk, from every broker's log dirs (`None`: unreadable, say for a
    /// principal without DESCRIBE on the cluster).
    fn read_sizes(&mut self, brokers: &[String]) -> Option<BTreeMap<String, i64>> {
        if self.cluster.is_none() {
            self.cluster = self
                .runtime
                .block_on(Cluster::connect_with(self.config.client_config(CLIENT), REQUEST_TIMEOUT))
                .ok();
        }
        let cluster = self.cluster.as_ref()?;
        let partitions = match self.runtime.block_on(cluster.partition_sizes(brokers)) {
            Ok(found) => found,
            Err(_) => {
                self.cluster = None;
                return None;
            }
        };
        let mut sizes = BTreeMap::new();
        for ((topic, _), bytes) in partitions {
            *sizes.entry(topic).or_insert(0) += bytes;
        }
        Some(sizes)
    }

    /// Each declared topic's differences from its declaration, as `backbone topics plan` sees them
    /// (through the owning service's provisioner, under this configuration's profile).
    fn read_drift(&self) -> BTreeMap<String, Vec<String>> {
        let mut drift = BTreeMap::new();
        for service in self.estate.services() {
            let topics = service.owned_topics();
            let planned = Provisioner::new(&self.config, service.name())
                .map(|p| p.timeout(REQUEST_TIMEOUT))
                .map_err(|e| e.to_string())
                .and_then(|p| self.runtime.block_on(p.plan(topics)).map_err(|e| e.to_string()));
            for topic in topics {
                let found = match &planned {
                    Err(e) => vec![format!("not checked: {e}")],
                    Ok(plan) => plan
                        .actions_for(topic.name())
                        .filter(|a| !matches!(a, Action::UpToDate))
                        .map(|a| match a {
                            Action::Create { .. } => "missing: the topic does not exist".to_owned(),
                            Action::AlterConfigs { changes } => {
                                changes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                            }
                            Action::AddPartitions { from, to } => format!("{from} partitions, {to} declared"),
                            Action::Refuse { reason, .. } => reason.clone(),
                            other => format!("{other:?}"),
                        })
                        .collect(),
                };
                drift.insert(topic.name().to_owned(), found);
            }
        }
        drift
    }
}
