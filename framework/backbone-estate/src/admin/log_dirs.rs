//! Bytes on disk per partition (`DescribeLogDirs`), over a [`Connection`] of our own to each broker:
//! each answers for the replicas it holds, and librdkafka has no log-dir API.

use std::collections::BTreeMap;

use kafka_protocol::messages::DescribeLogDirsRequest;

use super::error::AdminError;
use super::wire::{Connection, Settings};

/// The bytes each partition takes on disk (the largest of its replicas: a lagging follower holds
/// less), by topic and partition, from each of `brokers` (`host:port`). Future replicas (a move
/// between log dirs in progress) are left out.
pub(crate) async fn sizes(
    settings: &Settings,
    brokers: &[String],
) -> Result<BTreeMap<(String, i32), i64>, AdminError> {
    let mut sizes = BTreeMap::new();
    for broker in brokers {
        let mut one = settings.clone();
        one.bootstrap.clone_from(broker);
        let mut conn = Connection::open(&one).await?;
        // No topics named: every replica the broker holds.
        let answer = conn.call(&DescribeLogDirsRequest::default().with_topics(None)).await?;
        if answer.error_code != 0 {
            return Err(conn.broker_error("describe log dirs", answer.error_code, None));
        }
        for dir in answer.results.iter().filter(|d| d.error_code == 0) {
            for topic in &dir.topics {
                for p in topic.partitions.iter().filter(|p| !p.is_future_key) {
                    let size = sizes.entry((topic.name.0.to_string(), p.partition_index)).or_insert(0);
                    *size = (*size).max(p.partition_size);
                }
            }
        }
    }
    Ok(sizes)
}
