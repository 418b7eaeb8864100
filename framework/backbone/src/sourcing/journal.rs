//! Event sourcing: an entity's events in a journal, rebuilt by replay.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::message::Message as _;

use crate::handler::{Decode, DecodeError};
use crate::publish::{Delivery, Outgoing, PublishError, Publisher};
use crate::runtime::Context;
use crate::schema::Registry;
use crate::table::partition_for;
use crate::topic::TopicSpec;

use super::reader::Reader;
use super::*;

/// An entity rebuilt from its events: it starts as [`Default`] and [`apply`](Self::apply) folds
/// each of its events in, in order. `apply` only changes state: deciding whether an event may
/// happen belongs before [`Journal::append`].
pub trait Aggregate: Default {
    /// What happens to the entity, decoded from the journal's payloads.
    type Event: Decode;

    /// Folds `event` into the entity.
    fn apply(&mut self, event: &Self::Event);
}

/// A record as read back.
struct Record {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

/// An entity's events on a topic: appends them keyed by the entity's id, rebuilds entities by
/// replay (see the [module docs](crate::sourcing)). Cheap to clone; clones share one reader, so their replays
/// run one at a time. An entity's partition is found from the topic's declared partition count
/// (as [`crate::table::partition_for`] computes it), like the publisher places it.
pub struct Journal<A> {
    topic: TopicSpec,
    publisher: Publisher,
    reader: Arc<Mutex<Reader>>,
    aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for Journal<A> {
    fn clone(&self) -> Self {
        Self {
            topic: self.topic.clone(),
            publisher: self.publisher.clone(),
            reader: self.reader.clone(),
            aggregate: PhantomData,
        }
    }
}

impl<A> std::fmt::Debug for Journal<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("topic", &self.topic.name()).finish_non_exhaustive()
    }
}

impl<A: Aggregate> Journal<A> {
    /// The journal of `topic` for the context's service, which must be allowed to read it.
    /// Appending (through the context's publisher) needs the service to own it too (the publisher
    /// refuses otherwise); a service that only reads another's public journal rebuilds and projects.
    pub fn new(context: &Context, topic: &TopicSpec) -> Result<Self, SourcingError> {
        let service = context.spec().name();
        crate::topic::check_may_read(service, topic)?;
        let reader = Reader::new(context.config(), service, topic.name())?;
        Ok(Self {
            topic: topic.clone(),
            publisher: context.publisher().clone(),
            reader: Arc::new(Mutex::new(reader)),
            aggregate: PhantomData,
        })
    }

    /// The topic.
    pub fn topic(&self) -> &TopicSpec {
        &self.topic
    }

    /// Appends an event of entity `id`: publishes `payload` (of type `event_type`) keyed by `id`,
    /// so the entity's events keep their order, and resolves once acknowledged with where it was
    /// written.
    pub async fn append(
        &self,
        id: impl AsRef<[u8]>,
        event_type: &str,
        payload: &[u8],
    ) -> Result<Delivery, PublishError> {
        self.publisher.publish(&self.topic, Outgoing::new(event_type, id.as_ref(), payload)).await
    }

    /// Appends an Avro event of entity `id` (see [`Publisher::publish_event`]).
    pub async fn append_event<T: crate::schema::AvroEvent>(
        &self,
        id: impl AsRef<[u8]>,
        event: &T,
    ) -> Result<Delivery, PublishError> {
        self.publisher.publish_event(&self.topic, id.as_ref(), event).await
    }

    /// Rebuilds entity `id` from its events, read from the beginning of its partition
    /// (`read_committed`): `None` if it has none. A tombstone (an event without payload) ends the
    /// entity; events after it start it over.
    pub async fn rebuild(&self, id: impl AsRef<[u8]>) -> Result<Option<A>, SourcingError> {
        let id = id.as_ref().to_vec();
        let partition = partition_for(&id, self.topic.partitions());
        let records = self.read(vec![partition], Some(id)).await?;
        Ok(self.fold(records).await?.into_values().next())
    }

    /// Every entity of the topic, rebuilt (a projection), by id.
    pub async fn project(&self) -> Result<BTreeMap<Vec<u8>, A>, SourcingError> {
        let records = self.read((0..self.topic.partitions()).collect(), None).await?;
        self.fold(records).await
    }

    /// The records of `partitions` (only those of `key`, if given), in order per partition.
    async fn read(&self, partitions: Vec<i32>, key: Option<Vec<u8>>) -> Result<Vec<Record>, SourcingError> {
        let (reader, topic) = (self.reader.clone(), self.topic.name().to_owned());
        let read = tokio::task::spawn_blocking(move || {
            let reader = reader.lock().unwrap_or_else(PoisonError::into_inner);
            let mut records = Vec::new();
            reader
                .read(&topic, &partitions, |m| {
                    if key.is_none() || m.key() == key.as_deref() {
                        records.push(Record {
                            partition: m.partition(),
                            offset: m.offset(),
                            key: m.key().map(<[u8]>::to_vec),
                            payload: m.payload().map(<[u8]>::to_vec),
                        });
                    }
                })
                .map(|_| records)
        })
        .await;
        let topic = self.topic.name().to_owned();
        match read {
            Ok(Ok(records)) => Ok(records),
            Ok(Err(e)) => Err(SourcingError::Read { topic, reason: e.to_string() }),
            Err(e) => Err(SourcingError::Read { topic, reason: e.to_string() }),
        }
    }

    /// Folds `records` into their entities.
    async fn fold(&self, records: Vec<Record>) -> Result<BTreeMap<Vec<u8>, A>, SourcingError> {
        let registry = self.publisher.registry();
        let mut entities = BTreeMap::new();
        for record in records {
            let Some(key) = record.key else { continue };
            let Some(payload) = record.payload else {
                entities.remove(&key);
                continue;
            };
            let topic = self.topic.name();
            let event = decode::<A::Event>(&payload, topic, registry).await.map_err(|e| match e {
                Undecodable::Registry(e) if e.is_retriable() => SourcingError::Registry(e),
                e => SourcingError::Decode {
                    topic: topic.to_owned(),
                    partition: record.partition,
                    offset: record.offset,
                    reason: e.to_string(),
                },
            })?;
            entities.entry(key).or_insert_with(A::default).apply(&event);
        }
        Ok(entities)
    }
}

/// Why a journal's event did not decode.
#[derive(Debug, thiserror::Error)]
enum Undecodable {
    /// The payload is not an event of the journal's type.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Its writer's schema could not be fetched, or is not one of the journal topic's.
    #[error(transparent)]
    Registry(#[from] crate::schema::SchemaError),
}

/// Decodes `payload` read from `topic`. A schema-framed payload's writer schema is fetched if it
/// is not cached yet and must be one of the topic's ([`Registry::check_topic`]), as for events
/// handled by a consumer.
async fn decode<T: Decode>(payload: &[u8], topic: &str, registry: &Registry) -> Result<T, Undecodable> {
    if let Ok((id, _)) = crate::schema::wire::split(payload) {
        registry.check_topic(id, topic).await?;
    }
    Ok(T::decode_with(payload, Some(registry))?)
}
