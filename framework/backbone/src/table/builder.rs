//! Building a table: its group, its store, its probe and its consumer.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::watch;

use crate::consume::Consumer;
use crate::handler::BoxedHandler;
use crate::reader::{self, Isolation};
use crate::runtime::Context;
use crate::topic::TopicSpec;

use super::restore::{Hooks, apply};
use super::store::Store;
use super::view::{Counters, Progress, Shared};
use super::*;

/// Builds a [`Table`].
#[must_use = "a table builder does nothing until built"]
pub struct TableBuilder<V> {
    context: Context,
    topic: TopicSpec,
    name: Option<String>,
    path: Option<PathBuf>,
    settings: Vec<(String, String)>,
    replicated: bool,
    max_waiters: usize,
    value: PhantomData<fn() -> V>,
}

impl<V> std::fmt::Debug for TableBuilder<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableBuilder")
            .field("topic", &self.topic.name())
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<V: TableValue> Table<V> {
    /// A table of `topic` for the context's service, which must be allowed to read it and own its
    /// dead-letter topic ([`crate::consume::dead_letter_topic`]: records whose value does not
    /// decode go there, and their key leaves the view). The context's publisher writes the dead
    /// letters and lends its health and schema registry.
    pub fn builder(context: &Context, topic: &TopicSpec) -> TableBuilder<V> {
        TableBuilder {
            context: context.clone(),
            topic: topic.clone(),
            name: None,
            path: None,
            settings: Vec::new(),
            replicated: false,
            max_waiters: DEFAULT_MAX_WAITERS,
            value: PhantomData,
        }
    }
}

impl<V: TableValue> TableBuilder<V> {
    /// Names the table (default: the topic's name): its consumer group is
    /// `<service>.table.<name>`, its health component `table:<name>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Every instance holds every partition (a global table, Kafka Streams' `GlobalKTable`)
    /// instead of sharing them: the table's consumer group is this instance's alone
    /// (`<service>.table.<name>.<uuid>`). For state every instance must answer from (HTTP reads
    /// behind a load balancer, a handler's lookups by another key than its input's); each instance
    /// then reads the whole topic. The group is of this run only, so [`Table::run`] deletes it
    /// once it has left it (on real brokers; the mock cluster of [`crate::dev`] keeps it until the
    /// process ends); one left by a crashed instance expires with the broker's
    /// `offsets.retention.minutes`.
    pub fn replicated(mut self) -> Self {
        self.replicated = true;
        self
    }

    /// Keeps the view in a local store at `path` too (a redb file, created if missing), so a
    /// restart replays only what is newer than the store.
    pub fn persistent(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// At most `limit` waits ([`Table::wait_for`], [`Table::sync`], [`Table::wait_until_key`])
    /// at once (default [`DEFAULT_MAX_WAITERS`]); one more is refused at once with
    /// [`WaitError::Busy`]. Each HTTP request waiting for a consistency token or a key holds one.
    pub fn max_waiters(mut self, limit: usize) -> Self {
        self.max_waiters = limit;
        self
    }

    /// Sets a librdkafka property on the table's consumer (see [`Consumer::client_setting`]).
    pub fn client_setting(mut self, key: &str, value: impl Into<String>) -> Self {
        self.settings.push((key.to_owned(), value.into()));
        self
    }

    /// Checks the declaration, opens the store and creates the consumer. The service is not ready
    /// from here until the table has restored.
    pub fn build(self) -> Result<Table<V>, TableError> {
        let name = self.name.unwrap_or_else(|| self.topic.name().to_owned());
        let (config, service) = (self.context.config(), self.context.spec().name());
        let group = if self.replicated {
            format!("{service}.table.{name}.{}", uuid::Uuid::new_v4().simple())
        } else {
            format!("{service}.table.{name}")
        };
        let store = match &self.path {
            Some(path) => Some(Arc::new(
                Store::open(path, self.topic.name())
                    .map_err(|reason| TableError::Store { path: path.clone(), reason })?,
            )),
            None => None,
        };
        let client = config.client_config(service);
        let probe = reader::settings(client, format!("{group}.probe"), Isolation::Committed, true)
            .create_with_context(reader::ReaderContext)
            .map_err(|e| TableError::Client { table: name.clone(), reason: e.to_string() })?;
        // Made on first use (`Table::sync_acknowledged`), not for every table at start-up.
        let probe_written = reader::settings(
            config.client_config(service),
            format!("{group}.probe"),
            Isolation::Uncommitted,
            true,
        );
        let health = self.context.health().clone();
        // A replicated table's group is of one run only: deleted when the table stops.
        let forget = self.replicated.then(|| (config.clone(), service.to_owned()));
        let shared = Arc::new(Shared {
            group: group.clone(),
            forget,
            component: format!("table:{name}"),
            topic: self.topic.name().to_owned(),
            partitions: self.topic.partitions(),
            health,
            registry: self.context.registry().clone(),
            persistent: store.is_some(),
            store: Mutex::new(store),
            probe: Mutex::new(probe),
            probe_written: (probe_written, Mutex::new(None)),
            syncs: tokio::sync::Mutex::new(HashMap::new()),
            views: RwLock::new(HashMap::new()),
            // One per partition of the topic, made here: waits never add any.
            progress: Mutex::new(
                (0..self.topic.partitions()).map(|p| (p, watch::channel(Progress::default()).0)).collect(),
            ),
            max_waiters: self.max_waiters,
            waiting: AtomicUsize::new(0),
            misplaced_seen: watch::channel(0).0,
            warned: Mutex::new(HashSet::new()),
            status: watch::channel(TableStatus::default()).0,
            runtime: OnceLock::new(),
            generation: AtomicU64::new(0),
            assigned: AtomicBool::new(false),
            running: AtomicBool::new(false),
            stats: Counters::default(),
            name,
        });
        shared.health.starting(&shared.component, format!("table `{}` is not running", shared.name));
        let mut consumer = Consumer::new(
            &self.context,
            &self.topic,
            BoxedHandler::named("table", apply::<V>),
            shared.clone(),
        )?
        .in_group(group)
        .hooks(Hooks(shared.clone()));
        for (key, value) in self.settings {
            consumer = consumer.client_setting(&key, value);
        }
        Ok(Table { shared, consumer: Arc::new(Mutex::new(Some(consumer))) })
    }
}
