//! Schema-checked events: Avro contracts, the Confluent wire format, a schema registry client and
//! cached codecs.
//!
//! - **Contracts** live in `schemas/<owner>/<event>-v<N>.avsc`, the source of truth for public
//!   events. A Rust type is bound to its file with `#[derive(AvroEvent)]`
//!   (`#[avro(schema = "schemas/orders/order-created-v1.avsc")]`), which reads the file at compile
//!   time and refuses, pointing at the field, a type whose fields do not match it. We derive and
//!   check rather than generate: the type stays the author's (docs, derives, methods), and a drift is
//!   a compile error either way.
//! - **Wire format**: Confluent's framing, magic byte 0, a 4-byte big-endian [`SchemaId`], then the
//!   Avro body ([`wire`]).
//! - **Subjects**: TopicNameStrategy (`<topic>-value`) by default; RecordNameStrategy (the record's
//!   full name) for topics that carry several event types ([`SubjectStrategy`]).

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub mod wire;

/// A schema's id in the registry: what the wire format carries after the magic byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct SchemaId(pub u32);

impl fmt::Display for SchemaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a topic's subject in the registry is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectStrategy {
    /// `<topic>-value`: one schema (and its versions) per topic. The default.
    #[default]
    TopicName,
    /// The record's full name (`com.example.OrderCreated`): for topics carrying several event types.
    RecordName,
}

impl SubjectStrategy {
    /// The subject for `topic` carrying records named `record` (full name).
    pub fn subject(self, topic: &str, record: &str) -> String {
        match self {
            Self::TopicName => format!("{topic}-value"),
            Self::RecordName => record.to_owned(),
        }
    }
}

/// An event type bound to an Avro schema. Derive it with `#[derive(AvroEvent)]`; by hand, set
/// [`SCHEMA`](AvroEvent::SCHEMA) to the `.avsc` text and return its parsed form from a static:
///
/// ```
/// use std::sync::OnceLock;
/// use backbone::schema::AvroEvent;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Ping {
///     n: i64,
/// }
///
/// impl AvroEvent for Ping {
///     const SCHEMA: &'static str =
///         r#"{"type":"record","name":"Ping","namespace":"demo","fields":[{"name":"n","type":"long"}]}"#;
///     fn schema() -> &'static apache_avro::Schema {
///         static SCHEMA: OnceLock<apache_avro::Schema> = OnceLock::new();
///         backbone::schema::parse_once(&SCHEMA, Self::SCHEMA)
///     }
/// }
/// assert_eq!(backbone::schema::full_name(Ping::schema()), "demo.Ping");
/// ```
pub trait AvroEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The schema's JSON text (the contents of its `.avsc`).
    const SCHEMA: &'static str;

    /// The parsed schema, parsed once.
    fn schema() -> &'static apache_avro::Schema;
}

/// Parses `text` into `cell` once and returns it. Panics if `text` is not a valid Avro schema: for
/// a derived [`AvroEvent`] the derive has already parsed it at compile time.
pub fn parse_once(
    cell: &'static std::sync::OnceLock<apache_avro::Schema>,
    text: &str,
) -> &'static apache_avro::Schema {
    cell.get_or_init(|| {
        apache_avro::Schema::parse_str(text).unwrap_or_else(|e| panic!("invalid Avro schema: {e}"))
    })
}

/// A named schema's full name (`namespace.Name`), or its type name for other schemas.
pub fn full_name(schema: &apache_avro::Schema) -> String {
    match schema.name() {
        Some(name) => name.fullname(None),
        None => format!("{:?}", apache_avro::schema::SchemaKind::from(schema)).to_lowercase(),
    }
}
