//! The tables an [`App`](super::App) declares, their value types erased until start-up.

use std::any::Any;
use std::collections::HashMap;

use futures::future::BoxFuture;

use super::{AppError, IntoTopicSpec};
use crate::event::BoundEvent;
use crate::publish::Publisher;
use crate::runtime::Context;
use crate::table::{Table, TableBuilder, TableError, TableValue};
use crate::topic::TopicSpec;

/// A table, its value type erased until start-up.
pub(super) trait TableDeclaration: Send {
    fn topic(&self) -> &TopicSpec;
    fn build(self: Box<Self>, context: &Context) -> Result<BuiltTable, TableError>;
}

pub(super) type ConfigureTable<V> = Box<dyn FnOnce(TableBuilder<V>) -> TableBuilder<V> + Send>;

pub(super) struct TableOf<V> {
    pub(super) topic: TopicSpec,
    pub(super) configure: Option<ConfigureTable<V>>,
}

pub(super) type StopSignal = BoxFuture<'static, ()>;

pub(super) struct BuiltTable {
    pub(super) topic: String,
    pub(super) component: String,
    pub(super) handle: Box<dyn Any + Send + Sync>,
    pub(super) run: Box<dyn FnOnce(StopSignal) -> BoxFuture<'static, Result<(), AppError>> + Send>,
}

impl<V: TableValue> TableDeclaration for TableOf<V> {
    fn topic(&self) -> &TopicSpec {
        &self.topic
    }

    fn build(self: Box<Self>, context: &Context) -> Result<BuiltTable, TableError> {
        let mut builder = Table::<V>::builder(context, &self.topic);
        if let Some(configure) = self.configure {
            builder = configure(builder);
        }
        let table = builder.build()?;
        let runner = table.clone();
        Ok(BuiltTable {
            topic: self.topic.name().to_owned(),
            component: table.component().to_owned(),
            handle: Box::new(table),
            run: Box::new(move |stop| {
                Box::pin(async move { runner.run(stop).await.map_err(AppError::from) })
            }),
        })
    }
}

/// The tables of a started service, for building its state: [`Tables::get`]; and its
/// [`publisher`](Tables::publisher), for routes that publish.
pub struct Tables {
    pub(super) by_topic: HashMap<String, Box<dyn Any + Send + Sync>>,
    pub(super) publisher: Publisher,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_topic.keys()).finish()
    }
}

impl Tables {
    /// The table of `topic` (declared with [`App::table`](super::App::table)), with values `V`.
    pub fn get<V: TableValue>(&self, topic: impl IntoTopicSpec) -> Result<Table<V>, AppError> {
        let topic = topic.into_topic_spec()?;
        self.by_topic.get(topic.name()).and_then(|t| t.downcast_ref::<Table<V>>()).cloned().ok_or_else(|| {
            AppError::NoTable { topic: topic.name().to_owned(), value: std::any::type_name::<V>() }
        })
    }

    /// The table of `T`'s own topic, with values `T` (`table T;` in `backbone::service!`).
    pub fn of<T: BoundEvent + TableValue>(&self) -> Result<Table<T>, AppError> {
        self.get::<T>(T::TOPIC)
    }

    /// The service's publisher, for a state whose HTTP routes publish (a `POST` writing an event).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }
}
