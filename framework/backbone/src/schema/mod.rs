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

/// The short name of a record's full name: `OrderCreated` for `com.example.OrderCreated` (what
/// backbone calls the event's type).
pub(crate) fn short_name(full: &str) -> &str {
    full.rsplit('.').next().unwrap_or(full)
}

/// The largest record backbone decodes: Kafka's default `max.message.bytes` (1 MiB), which
/// backbone's topics keep. A topic raised above it may need [`MAX_DECODE_ALLOCATION`] raised too.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// The most apache-avro may allocate for one string, bytes or fixed value, or for one array's or
/// map's items, while decoding: 64 × [`MAX_RECORD_BYTES`] = 64 MiB.
///
/// A string or bytes value is never longer than its record, so a length prefix past
/// [`MAX_RECORD_BYTES`] is already a lie; arrays and maps are counted by items × their in-memory size
/// (an `apache_avro::types::Value` is 56 bytes, a map entry 80), so this admits a record of
/// [`MAX_RECORD_BYTES`] filled with one-byte array items, and nothing like apache-avro's default of
/// 512 MiB, which one record of a few bytes claiming a huge length could make the process allocate.
/// A record over the limit fails to decode (dead-lettered, kind `undecodable-payload`).
pub const MAX_DECODE_ALLOCATION: usize = 64 * MAX_RECORD_BYTES;

/// Sets apache-avro's process-wide allocation limit to [`MAX_DECODE_ALLOCATION`] and returns the
/// limit in force. apache-avro takes the first value it is given, so this must run before the first
/// decode: [`Registry::new`] calls it (every consumer, table and publisher makes one), and so may a
/// service's `main`. Later calls change nothing.
pub fn limit_decoding_allocations() -> usize {
    apache_avro::util::max_allocation_bytes(MAX_DECODE_ALLOCATION)
}

pub mod codec;
pub mod compat;
pub mod registry;

pub use codec::Encoder;
pub use registry::Registry;
pub use wire::WireError;

/// What went wrong with a schema, the registry or a codec.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The schema breaks the subject's compatibility rule; nothing was registered or produced.
    #[error("schema refused for subject `{subject}`: {reason}")]
    Incompatible {
        /// The subject.
        subject: String,
        /// The registry's reason.
        reason: String,
    },
    /// The registry does not know this schema id.
    #[error("schema id {0} is unknown to the registry")]
    UnknownId(SchemaId),
    /// A record names a schema id that is not registered under the subject of the topic it was
    /// read from (another topic's contract): refused rather than decoded against the wrong contract.
    #[error(
        "schema id {id} is not a schema of topic `{topic}` (registered under {}); a record may only \
         carry its topic's contract",
        if subjects.is_empty() { "no subject".to_owned() } else { subjects.join(", ") }
    )]
    ForeignSchemaId {
        /// The writer schema id the record names.
        id: SchemaId,
        /// The topic the record was read from.
        topic: String,
        /// The subjects the id is registered under.
        subjects: Vec<String>,
    },
    /// The registry could not be reached.
    #[error("schema registry at {url} unreachable: {reason}")]
    Unreachable {
        /// Its URL (with any password in it redacted).
        url: String,
        /// Why (with any password in it redacted).
        reason: String,
    },
    /// The registry answered with an error.
    #[error("schema registry answered {status}: {message}")]
    Registry {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// Not a valid Avro schema.
    #[error("invalid schema: {reason}")]
    InvalidSchema {
        /// Why.
        reason: String,
    },
    /// The payload is not framed as the wire format says.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A value does not fit its schema.
    #[error("cannot encode `{type_name}` with its schema: {reason}")]
    Encode {
        /// The type.
        type_name: &'static str,
        /// Why.
        reason: String,
    },
    /// A body does not decode with its writer's schema into the reader's type.
    #[error("cannot decode schema {id} data as `{type_name}`: {reason}")]
    Decode {
        /// The writer's schema id.
        id: SchemaId,
        /// The reader's type.
        type_name: &'static str,
        /// Why.
        reason: String,
    },
}

impl SchemaError {
    /// Whether trying again may help (the registry unreachable or failing, not a refusal).
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
            || matches!(self, Self::Registry { status, .. } if *status >= 500)
    }

    /// A short name for dead-letter headers and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Incompatible { .. } => "incompatible-schema",
            Self::UnknownId(_) => "unknown-schema-id",
            Self::ForeignSchemaId { .. } => "foreign-schema-id",
            Self::Unreachable { .. } | Self::Registry { .. } => "registry",
            Self::InvalidSchema { .. } => "invalid-schema",
            Self::Wire(e) => e.kind(),
            Self::Encode { .. } => "unencodable",
            Self::Decode { .. } => "undecodable-payload",
        }
    }
}
