//! Following the topic: partitions assigned (restored from the store and the topic), revoked,
//! and each record applied.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::Offset;
use tokio::sync::watch;

use crate::consume::ConsumerHooks;
use crate::handler::{Event, ExtractError, HandlerError, Metadata, State};

use super::store::Store;
use super::view::{Progress, Shared, View};
use super::*;

impl<V: TableValue> Shared<V> {
    /// `partitions` are about to be assigned: fresh views, restoring; where to start reading each.
    pub(super) fn assign(self: &Arc<Self>, partitions: &[i32]) -> Vec<(i32, Offset)> {
        if partitions.is_empty() {
            return Vec::new();
        }
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let store = self.store();
        let mut starts = Vec::with_capacity(partitions.len());
        {
            let mut views = self.write_views();
            for &partition in partitions {
                let (stored, reset) = match store.as_ref().map(|s| s.applied(partition)) {
                    None | Some(Ok(None)) => (None, false),
                    Some(Ok(Some(offset))) => (Some(offset), false),
                    Some(Err(e)) => {
                        tracing::error!(
                            table = self.name,
                            partition,
                            error = %e,
                            "table store unreadable; restoring from the topic"
                        );
                        (None, true)
                    }
                };
                let replaced = views.insert(
                    partition,
                    View {
                        generation,
                        entries: HashMap::new(),
                        misplaced: HashSet::new(),
                        applied: None,
                        stored,
                        reset,
                        last: None,
                        restoring: None,
                        caught_up: false,
                        loaded: watch::channel(!self.persistent).0,
                        gauges: crate::observe::TableGauges::new(
                            self.health.metrics(),
                            &self.topic,
                            partition,
                        ),
                    },
                );
                // The replaced view zeroes its gauges when dropped: before the new one sets them.
                drop(replaced);
                if let Some(view) = views.get(&partition) {
                    view.measure();
                }
                starts.push((partition, stored.map_or(Offset::Beginning, |o| Offset::Offset(o + 1))));
            }
        }
        for &partition in partitions {
            self.publish_progress(partition, Progress { owned: true, ..Progress::default() });
        }
        tracing::info!(table = self.name, ?starts, "restoring partitions");
        self.refresh();
        match self.runtime.get() {
            Some(runtime) => {
                runtime.spawn(self.clone().restore(partitions.to_vec(), generation));
            }
            None => tracing::error!(table = self.name, "partitions assigned to a table that is not running"),
        }
        starts
    }

    /// `partitions` were revoked (their events in hand have finished): drop their keys.
    pub(super) fn revoke(&self, partitions: &[i32]) {
        {
            let mut views = self.write_views();
            for partition in partitions {
                views.remove(partition);
            }
        }
        if let Some(store) = self.store()
            && let Err(e) = store.flush()
        {
            tracing::warn!(table = self.name, error = %e, "table store not flushed on revocation");
        }
        for &partition in partitions {
            self.publish_progress(partition, Progress::default());
        }
        self.refresh();
    }

    /// Whether any of `partitions` is still held under `generation`.
    pub(super) fn current(&self, partitions: &[i32], generation: u64) -> bool {
        let views = self.read_views();
        partitions.iter().any(|p| views.get(p).is_some_and(|v| v.generation == generation))
    }

    /// Restores freshly assigned partitions: finds where each ends now, loads the store's entries
    /// (if any), then lets records through; each is restored once its last record is applied.
    pub(super) async fn restore(self: Arc<Self>, partitions: Vec<i32>, generation: u64) {
        let ends = loop {
            let (shared, asked) = (self.clone(), partitions.clone());
            match tokio::task::spawn_blocking(move || shared.probe_ends(&asked)).await {
                Ok(Ok(ends)) => break ends,
                Ok(Err(e)) => {
                    tracing::warn!(table = self.name, error = %e, "cannot see partition ends; retrying")
                }
                Err(e) => tracing::warn!(table = self.name, error = %e, "partition ends"),
            }
            if !self.current(&partitions, generation) {
                return;
            }
            tokio::time::sleep(crate::backoff::jitter(Duration::from_secs(1))).await;
        };
        for (partition, end) in partitions.iter().copied().zip(ends) {
            let mut loaded = None;
            if let Some(store) = self.store() {
                let Some((stored, reset)) = self
                    .read_views()
                    .get(&partition)
                    .filter(|v| v.generation == generation)
                    .map(|v| (v.stored, v.reset))
                else {
                    continue;
                };
                // A store ahead of the topic follows an older topic of the same name: start over (the
                // consumer, sought past the end, starts from the beginning too).
                if reset || stored.is_some_and(|s| s >= end.high) {
                    tracing::warn!(
                        table = self.name,
                        partition,
                        ?stored,
                        high = end.high,
                        "table store discarded"
                    );
                    if let Err(e) = blocking(move || store.clear(partition)).await {
                        tracing::error!(table = self.name, partition, error = %e, "table store not cleared");
                    }
                    loaded = Some((None, HashMap::new()));
                } else {
                    loaded = Some((stored, self.load(&store, partition).await));
                }
            }
            let now = {
                let mut views = self.write_views();
                let Some(view) = views.get_mut(&partition).filter(|v| v.generation == generation) else {
                    continue;
                };
                if let Some((stored, entries)) = loaded {
                    self.stats.loaded.fetch_add(entries.len() as u64, Ordering::Relaxed);
                    view.misplaced = entries
                        .keys()
                        .filter(|k| partition_for(k, self.partitions) != partition)
                        .cloned()
                        .collect();
                    if let Some(key) = view.misplaced.iter().next() {
                        let expected = partition_for(key, self.partitions);
                        self.count_misplaced(partition, key, expected, view.misplaced.len() as u64);
                    }
                    view.entries = entries;
                    view.applied = stored;
                }
                view.last = Some(end.last);
                view.caught_up = view.reached();
                view.restore_from_here();
                view.measure();
                view.loaded.send_replace(true);
                if !view.misplaced.is_empty() {
                    self.misplaced_seen.send_modify(|n| *n += 1);
                }
                view.progress()
            };
            tracing::info!(
                table = self.name,
                partition,
                ?end,
                caught_up = now.caught_up,
                "partition end seen"
            );
            self.publish_progress(partition, now);
        }
        self.refresh();
    }

    /// The store's entries of `partition`, decoded (undecodable ones are left out, with a warning).
    pub(super) async fn load(&self, store: &Arc<Store>, partition: i32) -> HashMap<Vec<u8>, V> {
        let store = store.clone();
        let raw = match blocking(move || store.entries(partition)).await {
            Ok(raw) => raw,
            Err(e) => {
                tracing::error!(table = self.name, partition, error = %e, "table store unreadable");
                Vec::new()
            }
        };
        let mut entries = HashMap::with_capacity(raw.len());
        for (key, payload) in raw {
            match self.decode_stored(&payload, partition).await {
                Ok(value) => {
                    entries.insert(key, value);
                }
                Err(e) => tracing::warn!(table = self.name, partition, error = %e, "stored value left out"),
            }
        }
        entries
    }

    /// Decodes a value from the store. An Avro payload whose writer's schema is not cached yet is
    /// decoded once the registry has served it; while the registry cannot be reached, the load
    /// waits for it (with backoff, the partition not ready meanwhile): the store's offsets are past
    /// this value, so a value left out for an outage would be gone from the view until its key is
    /// written again. Only a value that cannot decode whatever the registry says is left out.
    async fn decode_stored(&self, payload: &[u8], partition: i32) -> Result<V, crate::handler::DecodeError> {
        use crate::layer::{REGISTRY_BACKOFF, REGISTRY_MAX_BACKOFF};
        let mut backoff = crate::backoff::Backoff::new(REGISTRY_BACKOFF, REGISTRY_MAX_BACKOFF);
        let mut warned = false;
        loop {
            let decoded = V::decode_with(payload, Some(&self.registry));
            if decoded.is_ok() {
                return decoded;
            }
            match self.registry.prepare(payload).await {
                Ok(()) => return V::decode_with(payload, Some(&self.registry)),
                Err(e) if e.is_retriable() => {
                    if !warned {
                        warned = true;
                        tracing::warn!(
                            table = self.name,
                            partition,
                            error = %e,
                            "the schema registry cannot be reached: the table's restore waits for it"
                        );
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(_) => return decoded,
            }
        }
    }

    /// Applies one record: sets its key, or deletes it for a tombstone (and for a value that does
    /// not decode, which is then dead-lettered).
    pub(super) async fn apply(
        &self,
        meta: &Metadata,
        value: Result<Option<Event<V>>, ExtractError>,
    ) -> Result<(), HandlerError> {
        let (partition, offset) = (meta.partition(), meta.offset());
        let (generation, mut loaded) = {
            let views = self.read_views();
            // Not held (revoked meanwhile): its next owner applies it.
            let Some(view) = views.get(&partition) else { return Ok(()) };
            (view.generation, view.loaded.subscribe())
        };
        if loaded.wait_for(|l| *l).await.is_err() {
            return Ok(()); // revoked while loading
        }
        if self.read_views().get(&partition).and_then(|v| v.applied).is_some_and(|a| offset <= a) {
            return Ok(()); // in the store already
        }
        let key = meta.key().map(<[u8]>::to_vec);
        let (update, failure) = match (&key, value) {
            (None, _) => (None, Some(HandlerError::permanent("a table record needs a key"))),
            (Some(_), Ok(Some(Event(value)))) => (Some(value), None),
            (Some(_), Ok(None)) => (None, None),
            (Some(_), Err(e)) => (None, Some(HandlerError::permanent(e))),
        };
        if let Some(store) = self.store() {
            let (key, payload) = (key.clone(), update.as_ref().and(meta.payload()).map(<[u8]>::to_vec));
            let change =
                move || store.write(partition, key.as_deref().map(|k| (k, payload.as_deref())), offset);
            blocking(change).await.map_err(|e| HandlerError::retriable(format!("table store: {e}")))?;
        }
        // Where lookups look for the key: elsewhere than here, the producer broke the contract.
        let expected = key.as_deref().map(|k| partition_for(k, self.partitions)).filter(|&e| e != partition);
        let mut indexed = false;
        let (now, restored) = {
            let mut views = self.write_views();
            let Some(view) = views.get_mut(&partition).filter(|v| v.generation == generation) else {
                return Ok(());
            };
            if let Some(key) = &key {
                match update {
                    Some(value) => {
                        if expected.is_some() {
                            indexed = view.misplaced.insert(key.clone());
                        }
                        view.entries.insert(key.clone(), value);
                    }
                    None => {
                        view.misplaced.remove(key);
                        view.entries.remove(key);
                    }
                }
            }
            view.applied = Some(view.applied.map_or(offset, |a| a.max(offset)));
            self.stats.applied.fetch_add(1, Ordering::Relaxed);
            let restored = !view.caught_up && view.reached();
            if !view.caught_up {
                self.stats.restored.fetch_add(1, Ordering::Relaxed);
                view.caught_up = restored;
            }
            view.measure();
            (view.progress(), restored)
        };
        if let (Some(expected), Some(key)) = (expected, &key) {
            self.count_misplaced(partition, key, expected, 1);
        }
        if indexed {
            self.misplaced_seen.send_modify(|n| *n += 1);
        }
        self.publish_progress(partition, now);
        if restored {
            tracing::info!(table = self.name, partition, offset, "partition restored");
            self.refresh();
        }
        failure.map_or(Ok(()), Err)
    }
}

/// The handler: applies each record to the table.
pub(super) async fn apply<V: TableValue>(
    meta: Metadata,
    value: Result<Option<Event<V>>, ExtractError>,
    State(table): State<Arc<Shared<V>>>,
) -> Result<(), HandlerError> {
    table.apply(&meta, value).await
}

/// Runs blocking store work off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, redb::Error> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The table's rebalance hooks.
pub(super) struct Hooks<V>(pub(super) Arc<Shared<V>>);

impl<V: TableValue> ConsumerHooks for Hooks<V> {
    fn start_offsets(&self, _topic: &str, partitions: &[i32]) -> Vec<(i32, Offset)> {
        self.0.assign(partitions)
    }

    fn assigned(&self, _topic: &str, _partitions: &[i32]) {
        self.0.assigned.store(true, Ordering::Release);
        self.0.refresh();
    }

    fn revoked(&self, _topic: &str, partitions: &[i32]) {
        self.0.revoke(partitions);
    }
}
