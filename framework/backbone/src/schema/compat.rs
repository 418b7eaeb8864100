//! Compatibility between two versions of a schema, under the registry's rules, with reasons that
//! name the field and say why: used by `backbone schemas check` offline and to explain a registry's
//! refusal when it gives no details (Apicurio answers a bare `is_compatible: false`).

use std::collections::BTreeSet;
use std::fmt;

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};

/// A compatibility rule, as the registry names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Which directions must read.
    pub kind: RuleKind,
    /// Against every earlier version rather than the latest.
    pub transitive: bool,
}

/// What a rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// Nothing.
    None,
    /// New readers read old data.
    Backward,
    /// Old readers read new data.
    Forward,
    /// Both.
    Full,
}

impl Rule {
    /// The names [`Rule::parse`] accepts.
    pub const NAMES: &'static str =
        "BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE or NONE";

    /// Parses a rule's registry name (`BACKWARD`, `FULL_TRANSITIVE` …).
    pub fn parse(name: &str) -> Option<Self> {
        let (base, transitive) = name.strip_suffix("_TRANSITIVE").map_or((name, false), |base| (base, true));
        let kind = match base {
            "NONE" if !transitive => RuleKind::None,
            "BACKWARD" => RuleKind::Backward,
            "FORWARD" => RuleKind::Forward,
            "FULL" => RuleKind::Full,
            _ => return None,
        };
        Some(Self { kind, transitive })
    }

    /// The directions to check, as (writer, reader) roles.
    pub fn directions(self) -> &'static [Direction] {
        match self.kind {
            RuleKind::None => &[],
            RuleKind::Backward => &[Direction::Backward],
            RuleKind::Forward => &[Direction::Forward],
            RuleKind::Full => &[Direction::Backward, Direction::Forward],
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = match self.kind {
            RuleKind::None => "NONE",
            RuleKind::Backward => "BACKWARD",
            RuleKind::Forward => "FORWARD",
            RuleKind::Full => "FULL",
        };
        write!(f, "{base}{}", if self.transitive { "_TRANSITIVE" } else { "" })
    }
}

/// Who reads whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The new schema reads data written with the old one.
    Backward,
    /// The old schema reads data written with the new one.
    Forward,
}

impl Direction {
    /// (writer, reader).
    pub fn roles<'a>(self, old: &'a Schema, new: &'a Schema) -> (&'a Schema, &'a Schema) {
        match self {
            Self::Backward => (old, new),
            Self::Forward => (new, old),
        }
    }
}

/// Why `new` breaks `rule` against `old`: empty when it does not.
pub fn incompatibilities(rule: Rule, old: &Schema, new: &Schema) -> Vec<String> {
    let mut reasons = Vec::new();
    for &direction in rule.directions() {
        let (writer, reader) = direction.roles(old, new);
        let before = reasons.len();
        match SchemaCompatibility::can_read(writer, reader) {
            Ok(Compatibility::Full) => continue,
            Ok(Compatibility::Partial) => {
                explain(direction, "", writer, reader, &mut reasons);
                if reasons.len() == before {
                    reasons.push(format!(
                        "{}: only some values can be read (an enum symbol or union branch is missing)",
                        direction_says(direction)
                    ));
                }
            }
            Err(e) => {
                explain(direction, "", writer, reader, &mut reasons);
                if reasons.len() == before {
                    let mut message = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(cause) = source {
                        message.push_str(": ");
                        message.push_str(&cause.to_string());
                        source = cause.source();
                    }
                    reasons.push(format!("{}: {message}", direction_says(direction)));
                }
            }
        }
    }
    // Under FULL a type change fails both ways: say it once.
    let mut seen = BTreeSet::new();
    reasons.retain(|r| {
        let key = r
            .split_once(": ")
            .filter(|(head, _)| head.contains(" changed type from "))
            .map_or(r.as_str(), |(h, _)| h);
        seen.insert(key.to_owned())
    });
    reasons
}

fn direction_says(direction: Direction) -> &'static str {
    match direction {
        Direction::Backward => "the new schema cannot read old data",
        Direction::Forward => "old readers cannot read new data",
    }
}

/// Explains the common ways `reader` fails to read `writer` at `path` (a field path, empty for the top
/// level), in words about the old and the new schema. Cases it does not know add nothing; the caller
/// then falls back to apache_avro's message.
fn explain(direction: Direction, path: &str, writer: &Schema, reader: &Schema, out: &mut Vec<String>) {
    let (old, new) = match direction {
        Direction::Backward => (writer, reader),
        Direction::Forward => (reader, writer),
    };
    let what = if path.is_empty() { "the record".to_owned() } else { format!("field `{path}`") };
    match (writer, reader) {
        (Schema::Record(w), Schema::Record(r)) => {
            if w.name.name() != r.name.name() {
                out.push(format!(
                    "{what} was renamed from {} to {}: a reader resolves records by name",
                    old.name().map_or_else(String::new, |n| n.fullname(None)),
                    new.name().map_or_else(String::new, |n| n.fullname(None)),
                ));
                return;
            }
            explain_record(direction, path, w, r, out);
        }
        (Schema::Enum(w), Schema::Enum(r)) if r.default.is_none() => {
            let missing: Vec<&str> =
                w.symbols.iter().filter(|s| !r.symbols.contains(s)).map(String::as_str).collect();
            if missing.is_empty() {
                return;
            }
            let symbols = missing.join(", ");
            out.push(match direction {
                Direction::Backward => format!(
                    "{what}: enum symbol(s) {symbols} removed: the new schema cannot read old events that \
                     carry them (keep them, or give the enum a \"default\")"
                ),
                Direction::Forward => format!(
                    "{what}: enum symbol(s) {symbols} added: old readers cannot read new events that carry \
                     them (the old enum has no \"default\")"
                ),
            });
        }
        (Schema::Array(w), Schema::Array(r)) => {
            explain(direction, &format!("{path}[]"), &w.items, &r.items, out);
        }
        (Schema::Map(w), Schema::Map(r)) => {
            explain(direction, &format!("{path}{{}}"), &w.types, &r.types, out);
        }
        _ => {
            if matches!(SchemaCompatibility::can_read(writer, reader), Ok(Compatibility::Full)) {
                return;
            }
            let (old_type, new_type) = (type_name(old), type_name(new));
            let narrowing = match (numeric_rank(writer), numeric_rank(reader)) {
                (Some(w), Some(r)) => w > r,
                _ => false,
            };
            let why = match (direction, narrowing) {
                (Direction::Backward, true) => {
                    format!("a narrowing: the new {new_type} cannot hold every old {old_type} value")
                }
                (Direction::Forward, true) => {
                    format!("old readers' {old_type} cannot hold every new {new_type} value")
                }
                (Direction::Backward, false) => {
                    format!("the new schema's {new_type} cannot read old {old_type} values")
                }
                (Direction::Forward, false) => {
                    format!("old readers' {old_type} cannot read new {new_type} values")
                }
            };
            out.push(format!("{what} changed type from {old_type} to {new_type}: {why}"));
        }
    }
}

fn explain_record(
    direction: Direction,
    path: &str,
    w: &RecordSchema,
    r: &RecordSchema,
    out: &mut Vec<String>,
) {
    for r_field in &r.fields {
        let field_path =
            if path.is_empty() { r_field.name.clone() } else { format!("{path}.{}", r_field.name) };
        let w_field = std::iter::once(&r_field.name)
            .chain(&r_field.aliases)
            .find_map(|name| w.fields.iter().find(|f| &f.name == name));
        match w_field {
            Some(w_field) => explain(direction, &field_path, &w_field.schema, &r_field.schema, out),
            None if r_field.default.is_none() => out.push(match direction {
                Direction::Backward => format!(
                    "field `{field_path}` was added and has no default: the new schema cannot read old \
                     events, which lack it (give it a \"default\")"
                ),
                Direction::Forward => format!(
                    "field `{field_path}` was removed and has no default in the old schema: old readers \
                     cannot read new events, which lack it"
                ),
            }),
            None => {}
        }
    }
}

/// The promotion order of Avro's numbers: each reads the ones before it.
fn numeric_rank(schema: &Schema) -> Option<u8> {
    match schema {
        Schema::Int => Some(1),
        Schema::Long => Some(2),
        Schema::Float => Some(3),
        Schema::Double => Some(4),
        _ => None,
    }
}

/// A short name of a schema's type: `int`, `array<string>`, `["null", "string"]`, `enum orders.Status`.
pub fn type_name(schema: &Schema) -> String {
    let named =
        |kind: &str| format!("{kind} {}", schema.name().map_or_else(String::new, |n| n.fullname(None)));
    match schema {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int => "int".into(),
        Schema::Long => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String => "string".into(),
        Schema::Array(a) => format!("array<{}>", type_name(&a.items)),
        Schema::Map(m) => format!("map<{}>", type_name(&m.types)),
        Schema::Union(u) => {
            format!("[{}]", u.variants().iter().map(type_name).collect::<Vec<_>>().join(", "))
        }
        Schema::Record(_) => named("record"),
        Schema::Enum(_) => named("enum"),
        Schema::Fixed(f) => format!("{} ({} bytes)", named("fixed"), f.size),
        Schema::Decimal(d) => format!("decimal({}, {})", d.precision, d.scale),
        Schema::BigDecimal => "big-decimal".into(),
        Schema::Uuid(_) => "uuid".into(),
        Schema::Date => "date".into(),
        Schema::TimeMillis => "time-millis".into(),
        Schema::TimeMicros => "time-micros".into(),
        Schema::TimestampMillis => "timestamp-millis".into(),
        Schema::TimestampMicros => "timestamp-micros".into(),
        Schema::TimestampNanos => "timestamp-nanos".into(),
        Schema::LocalTimestampMillis => "local-timestamp-millis".into(),
        Schema::LocalTimestampMicros => "local-timestamp-micros".into(),
        Schema::LocalTimestampNanos => "local-timestamp-nanos".into(),
        Schema::Duration(_) => "duration".into(),
        Schema::Ref { name } => name.fullname(None),
    }
}
