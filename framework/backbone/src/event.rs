//! Events bound to their topic: a type that knows its topic, its key and its schema, so publishing it
//! needs neither (`publisher.emit(&event)`), and a service declaration can check at compile time
//! what it produces and consumes.
//!
//! `#[derive(backbone::Event)]` implements [`BoundEvent`] (and [`crate::schema::AvroEvent`]); by
//! hand it reads:
//!
//! ```
//! use backbone::event::{BoundEvent, TopicDecl};
//!
//! /// Declared once, in `const`: what the compile-time ownership checks read.
//! pub const ORDER_CREATED: TopicDecl = TopicDecl::public("orders", "order-created", 1).partitions(6);
//!
//! assert_eq!(ORDER_CREATED.owner(), "orders");
//! assert!(ORDER_CREATED.is_public());
//! assert_eq!(ORDER_CREATED.spec()?.name(), "orders.public.order-created-v1");
//! // What `service!` evaluates in `const` for each topic a service produces or consumes:
//! const _: () = assert!(ORDER_CREATED.may_be_written_by("orders"));
//! const _: () = assert!(!ORDER_CREATED.may_be_written_by("stock"));
//! const _: () = assert!(ORDER_CREATED.may_be_read_by("stock"));
//! # Ok::<(), backbone::TopicError>(())
//! ```
//!
//! The rules are [`crate::topic`]'s (a topic has one writer, its owner; a private topic has one
//! reader, its owner), evaluated on the declaration instead of the built [`TopicSpec`] so that they
//! can run in `const`; [`crate::Service::spec`] checks them again at run time.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use crate::publish::{Delivery, PublishError, Publisher};
use crate::schema::AvroEvent;
use crate::topic::{TopicError, TopicSpec, Visibility};

/// A topic declared in `const`: owner, name, visibility and settings. [`spec`](Self::spec) builds
/// (and validates) the [`TopicSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicDecl {
    owner: &'static str,
    name: &'static str,
    /// `Some` for a public contract topic.
    version: Option<u32>,
    partitions: Option<i32>,
    replication: Option<i16>,
    min_insync_replicas: Option<i16>,
    global_order: bool,
    compacted: bool,
    /// `Some(None)`: keep forever.
    retention: Option<Option<Duration>>,
}

impl TopicDecl {
    /// A public contract topic of `owner` (`<owner>.public.<event>-v<version>`), as
    /// [`TopicSpec::public`].
    pub const fn public(owner: &'static str, event: &'static str, version: u32) -> Self {
        Self::new(owner, event, Some(version))
    }

    /// A private topic of `owner` (`<owner>.private.<name>`), as [`TopicSpec::private`].
    pub const fn private(owner: &'static str, name: &'static str) -> Self {
        Self::new(owner, name, None)
    }

    const fn new(owner: &'static str, name: &'static str, version: Option<u32>) -> Self {
        Self {
            owner,
            name,
            version,
            partitions: None,
            replication: None,
            min_insync_replicas: None,
            global_order: false,
            compacted: false,
            retention: None,
        }
    }

    /// Number of partitions (see [`crate::topic::TopicBuilder::partitions`]).
    pub const fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// A single partition, for global order.
    pub const fn global_order(mut self) -> Self {
        self.global_order = true;
        self
    }

    /// Replication factor (default 3).
    pub const fn replication(mut self, replication: i16) -> Self {
        self.replication = Some(replication);
        self
    }

    /// `min.insync.replicas` (default 2).
    pub const fn min_insync_replicas(mut self, min: i16) -> Self {
        self.min_insync_replicas = Some(min);
        self
    }

    /// Compacted: the latest record per key is kept (tables).
    pub const fn compacted(mut self) -> Self {
        self.compacted = true;
        self
    }

    /// Delete records older than `retention`.
    pub const fn retention(mut self, retention: Duration) -> Self {
        self.retention = Some(Some(retention));
        self
    }

    /// Keep records forever.
    pub const fn retain_forever(mut self) -> Self {
        self.retention = Some(None);
        self
    }

    /// The owning service.
    pub const fn owner(&self) -> &'static str {
        self.owner
    }

    /// The event or state name (without owner, visibility or version).
    pub const fn base_name(&self) -> &'static str {
        self.name
    }

    /// Whether this is a public contract topic.
    pub const fn is_public(&self) -> bool {
        self.version.is_some()
    }

    /// Public or private.
    pub const fn visibility(&self) -> Visibility {
        if self.is_public() { Visibility::Public } else { Visibility::Private }
    }

    /// The write rule in `const`: only the owner writes a topic.
    pub const fn may_be_written_by(&self, service: &str) -> bool {
        str_eq(self.owner, service)
    }

    /// The read rule in `const`: everyone reads a public topic, only the owner a private one.
    pub const fn may_be_read_by(&self, service: &str) -> bool {
        self.is_public() || str_eq(self.owner, service)
    }

    /// Builds and validates the [`TopicSpec`].
    pub fn spec(&self) -> Result<TopicSpec, TopicError> {
        let mut builder = match self.version {
            Some(version) => TopicSpec::public(self.owner, self.name, version),
            None => TopicSpec::private(self.owner, self.name),
        };
        if self.compacted {
            builder = builder.compacted();
        }
        match self.retention {
            Some(Some(retention)) => builder = builder.retention(retention),
            Some(None) => builder = builder.retain_forever(),
            None => {}
        }
        if let Some(partitions) = self.partitions {
            builder = builder.partitions(partitions);
        }
        if self.global_order {
            builder = builder.global_order();
        }
        if let Some(replication) = self.replication {
            builder = builder.replication(replication);
        }
        if let Some(min) = self.min_insync_replicas {
            builder = builder.min_insync_replicas(min);
        }
        builder.build()
    }
}

/// String equality in `const`.
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// An event type bound to its topic and key: what `#[derive(backbone::Event)]` implements.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not bound to a topic",
    label = "not a `#[derive(backbone::Event)]` type",
    note = "derive it: `#[derive(backbone::Event)]` with `#[event(topic = (\"owner\", \"name\", 1), key = field, schema = \"….avsc\")]`"
)]
pub trait BoundEvent: AvroEvent {
    /// Its topic.
    const TOPIC: TopicDecl;

    /// Its topic, built once (see [`cached_spec`]).
    fn topic() -> Result<&'static TopicSpec, TopicError>;

    /// Its key's bytes (the key field's [`EventKey`]).
    fn key(&self) -> Cow<'_, [u8]>;

    /// Its key's type as estate checks compare producers' and consumers' (`string`, `bytes`,
    /// `i32`, `i64`, `u32`, `u64`), or empty when the derive cannot tell (another type).
    const KEY_TYPE: &'static str = "";
}

/// Builds `decl`'s spec once into `cell`: how derived [`BoundEvent::topic`]s cache theirs.
pub fn cached_spec(
    cell: &'static OnceLock<Result<TopicSpec, TopicError>>,
    decl: &TopicDecl,
) -> Result<&'static TopicSpec, TopicError> {
    cell.get_or_init(|| decl.spec()).as_ref().map_err(Clone::clone)
}

/// A field that can be an event's Kafka key: its bytes. Strings are their UTF-8, byte vectors
/// themselves, integers their decimal text (readable in tools, stable across languages).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an event key",
    label = "the key field",
    note = "a key is a `String`, `Vec<u8>`, `[u8; N]` or an integer (its decimal text), or implement `backbone::event::EventKey`"
)]
pub trait EventKey {
    /// The key's bytes.
    fn key_bytes(&self) -> Cow<'_, [u8]>;
}

impl EventKey for String {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl EventKey for str {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl EventKey for Vec<u8> {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}

impl<const N: usize> EventKey for [u8; N] {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}

macro_rules! integer_keys {
    ($($t:ty),*) => {$(
        impl EventKey for $t {
            fn key_bytes(&self) -> Cow<'_, [u8]> {
                Cow::Owned(self.to_string().into_bytes())
            }
        }
    )*};
}

integer_keys!(i32, i64, u32, u64);

impl<K: EventKey + ?Sized> EventKey for &K {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        (**self).key_bytes()
    }
}

impl Publisher {
    /// Publishes a bound event to its own topic under its own key (see
    /// [`publish_event`](Self::publish_event)): `publisher.emit(&verdict).await?`.
    pub async fn emit<T: BoundEvent>(&self, event: &T) -> Result<Delivery, PublishError> {
        let topic =
            T::topic().map_err(|e| PublishError::Client(format!("invalid topic declaration: {e}")))?;
        self.publish_event(topic, &event.key(), event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_build_the_specs_the_builder_does() {
        let decl = TopicDecl::private("stock", "levels")
            .compacted()
            .partitions(3)
            .replication(1)
            .min_insync_replicas(1);
        let spec = TopicSpec::private("stock", "levels")
            .compacted()
            .partitions(3)
            .replication(1)
            .min_insync_replicas(1)
            .build()
            .unwrap();
        assert_eq!(decl.spec().unwrap(), spec);
        let forever = TopicDecl::public("orders", "order-created", 2).retain_forever().global_order();
        let spec =
            TopicSpec::public("orders", "order-created", 2).retain_forever().global_order().build().unwrap();
        assert_eq!(forever.spec().unwrap(), spec);
        assert!(TopicDecl::public("orders", "Bad Name", 1).spec().is_err());
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Placed {
        id: String,
    }

    impl AvroEvent for Placed {
        const SCHEMA: &'static str =
            r#"{"type":"record","name":"Placed","fields":[{"name":"id","type":"string"}]}"#;

        fn schema() -> &'static apache_avro::Schema {
            static SCHEMA: OnceLock<apache_avro::Schema> = OnceLock::new();
            crate::schema::parse_once(&SCHEMA, Self::SCHEMA)
        }
    }

    impl BoundEvent for Placed {
        const TOPIC: TopicDecl = TopicDecl::public("shop", "placed", 1);

        fn topic() -> Result<&'static TopicSpec, TopicError> {
            static SPEC: OnceLock<Result<TopicSpec, TopicError>> = OnceLock::new();
            cached_spec(&SPEC, &Self::TOPIC)
        }

        fn key(&self) -> Cow<'_, [u8]> {
            self.id.key_bytes()
        }
    }

    #[tokio::test]
    async fn emitting_an_event_of_a_topic_the_service_does_not_own_is_refused() {
        let stock = crate::Service::new("stock").spec().unwrap();
        // Creating a producer does not connect; the refusal comes before anything is sent.
        let config = crate::Config { bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
        let publisher = Publisher::new(&config, &stock).unwrap();
        let err = publisher.emit(&Placed { id: "o-1".into() }).await.unwrap_err();
        assert!(
            matches!(&err, PublishError::NotOwner { topic, owner, .. } if topic == "shop.public.placed-v1" && owner == "shop"),
            "{err}"
        );
        assert_eq!(&*Placed { id: "o-1".into() }.key(), b"o-1");
    }

    #[test]
    fn the_const_rules_agree_with_the_topic_rules() {
        for decl in [TopicDecl::public("orders", "created", 1), TopicDecl::private("orders", "state")] {
            let spec = decl.spec().unwrap();
            for service in ["orders", "stock", "order", "orders2"] {
                assert_eq!(decl.may_be_written_by(service), spec.is_owned_by(service), "{service}");
                assert_eq!(
                    decl.may_be_read_by(service),
                    crate::topic::check_may_read(service, &spec).is_ok(),
                    "{service}"
                );
            }
        }
    }
}
