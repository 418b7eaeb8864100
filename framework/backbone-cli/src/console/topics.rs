//! The cluster's topics as the console reads them: partitions, replicas, offsets.

/// One partition of a topic, as the cluster has it.
#[derive(Debug, Clone)]
pub(crate) struct PartitionState {
    /// The partition.
    pub(crate) id: i32,
    /// Its leader's broker id (-1: none).
    pub(crate) leader: i32,
    /// Its replicas' broker ids.
    pub(crate) replicas: Vec<i32>,
    /// Its in-sync replicas' broker ids.
    pub(crate) isr: Vec<i32>,
    /// Its first offset.
    pub(crate) low: i64,
    /// Its end offset (the next offset to be written).
    pub(crate) high: i64,
}

/// A topic, as the cluster has it.
#[derive(Debug, Clone)]
pub(crate) struct TopicState {
    /// Its name.
    pub(crate) name: String,
    /// Its partitions, by id.
    pub(crate) partitions: Vec<PartitionState>,
}

impl TopicState {
    /// Records held now (end minus first offsets; compaction and transactions' markers make it an
    /// upper bound).
    pub(crate) fn records(&self) -> i64 {
        self.partitions.iter().map(|p| p.high - p.low).sum()
    }

    /// The replication factor (of its first partition).
    pub(crate) fn replication(&self) -> usize {
        self.partitions.first().map_or(0, |p| p.replicas.len())
    }

    /// Partitions with fewer in-sync replicas than replicas.
    pub(crate) fn under_replicated(&self) -> usize {
        self.partitions.iter().filter(|p| p.isr.len() < p.replicas.len()).count()
    }

    /// The fewest in-sync replicas of any partition.
    pub(crate) fn min_isr(&self) -> usize {
        self.partitions.iter().map(|p| p.isr.len()).min().unwrap_or(0)
    }
}

/// Whether `topic` is Kafka's or a registry's own.
pub(crate) fn is_internal(topic: &str) -> bool {
    topic.starts_with("__") || topic == "_schemas" || topic.starts_with("kafkasql-")
}
