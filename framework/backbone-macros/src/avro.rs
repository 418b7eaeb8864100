//! Just enough of an Avro schema (from its JSON) to check a Rust type against it.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

/// An Avro type, as far as the derive checks it.
#[derive(Debug, Clone)]
pub(crate) enum Avro {
    Null,
    Boolean,
    /// `int`, with its logical type if any (`date`, `time-millis`).
    Int(Option<String>),
    /// `long`, with its logical type if any (`timestamp-millis` …).
    Long(Option<String>),
    Float,
    Double,
    /// `bytes`, with its logical type if any (`decimal`).
    Bytes(Option<String>),
    /// `string`, with its logical type if any (`uuid`).
    String(Option<String>),
    Array(Box<Avro>),
    Map(Box<Avro>),
    Union(Vec<Avro>),
    /// A record, enum or fixed, defined here or referred to by name.
    Named(Named),
}

/// A named type: its kind and full name.
#[derive(Debug, Clone)]
pub(crate) struct Named {
    pub(crate) kind: NamedKind,
    pub(crate) full_name: String,
}

impl Named {
    /// The name without its namespace: what the Rust type is called.
    pub(crate) fn simple_name(&self) -> &str {
        self.full_name.rsplit('.').next().unwrap_or(&self.full_name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NamedKind {
    Record,
    Enum,
    /// With its size in bytes.
    Fixed(u64),
}

impl NamedKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Record => "record",
            Self::Enum => "enum",
            Self::Fixed(_) => "fixed",
        }
    }
}

/// A record's field.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) ty: Avro,
}

/// A whole `.avsc`: the top-level type and, if it is a record or an enum, its fields or symbols.
#[derive(Debug)]
pub(crate) enum TopLevel {
    Record { full_name: String, fields: Vec<Field> },
    Enum { full_name: String, symbols: Vec<String> },
    Other(Avro),
}

impl Avro {
    /// The Rust type this maps to, as text (`Option<i32>`); `None` if the derive has no mapping for it
    /// (a union other than `["null", T]`).
    pub(crate) fn rust(&self) -> Option<String> {
        Some(match self {
            Self::Null => "()".into(),
            Self::Boolean => "bool".into(),
            Self::Int(_) => "i32".into(),
            Self::Long(_) => "i64".into(),
            Self::Float => "f32".into(),
            Self::Double => "f64".into(),
            Self::Bytes(_) => "Vec<u8>".into(),
            Self::String(_) => "String".into(),
            Self::Array(items) => format!("Vec<{}>", items.rust()?),
            Self::Map(values) => format!("HashMap<String, {}>", values.rust()?),
            Self::Union(variants) => format!("Option<{}>", optional(variants)?.rust()?),
            Self::Named(named) => named.simple_name().into(),
        })
    }
}

/// `T` of a `["null", T]` or `[T, "null"]` union.
pub(crate) fn optional(variants: &[Avro]) -> Option<&Avro> {
    match variants {
        [Avro::Null, t] | [t, Avro::Null] if !matches!(t, Avro::Null) => Some(t),
        _ => None,
    }
}

impl fmt::Display for Avro {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_logical = |f: &mut fmt::Formatter<'_>, base: &str, logical: &Option<String>| match logical {
            Some(l) => write!(f, "{base}/{l}"),
            None => f.write_str(base),
        };
        match self {
            Self::Null => f.write_str("null"),
            Self::Boolean => f.write_str("boolean"),
            Self::Int(l) => with_logical(f, "int", l),
            Self::Long(l) => with_logical(f, "long", l),
            Self::Float => f.write_str("float"),
            Self::Double => f.write_str("double"),
            Self::Bytes(l) => with_logical(f, "bytes", l),
            Self::String(l) => with_logical(f, "string", l),
            Self::Array(items) => write!(f, "array<{items}>"),
            Self::Map(values) => write!(f, "map<{values}>"),
            Self::Union(variants) => {
                f.write_str("[")?;
                for (i, v) in variants.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Self::Named(named) => write!(f, "{} {}", named.kind.as_str(), named.simple_name()),
        }
    }
}

/// Parses a whole `.avsc`'s JSON.
pub(crate) fn parse_top_level(json: &Value) -> Result<TopLevel, String> {
    let mut parser = Parser::default();
    let ty = parser.parse(json, None)?;
    if let (Value::Object(obj), Avro::Named(named)) = (json, &ty) {
        match named.kind {
            NamedKind::Record => {
                return Ok(TopLevel::Record {
                    full_name: named.full_name.clone(),
                    fields: parser.records.remove(&named.full_name).unwrap_or_default(),
                });
            }
            NamedKind::Enum => {
                return Ok(TopLevel::Enum {
                    full_name: named.full_name.clone(),
                    symbols: string_list(obj, "symbols")?,
                });
            }
            NamedKind::Fixed(_) => {}
        }
    }
    Ok(TopLevel::Other(ty))
}

#[derive(Default)]
struct Parser {
    /// Named types defined so far, by full name.
    names: HashMap<String, NamedKind>,
    /// Each record's fields, by full name.
    records: HashMap<String, Vec<Field>>,
}

impl Parser {
    fn parse(&mut self, json: &Value, namespace: Option<&str>) -> Result<Avro, String> {
        match json {
            Value::String(name) => self.by_name(name, None, namespace),
            Value::Array(variants) => {
                Ok(Avro::Union(variants.iter().map(|v| self.parse(v, namespace)).collect::<Result<_, _>>()?))
            }
            Value::Object(obj) => {
                let logical = obj.get("logicalType").and_then(Value::as_str).map(str::to_owned);
                match obj.get("type") {
                    Some(Value::String(ty)) => match ty.as_str() {
                        "record" | "error" => self.record(obj, namespace),
                        "enum" => self.named(obj, namespace, NamedKind::Enum).map(Avro::Named),
                        "fixed" => {
                            let size =
                                obj.get("size").and_then(Value::as_u64).ok_or("a fixed without a `size`")?;
                            self.named(obj, namespace, NamedKind::Fixed(size)).map(Avro::Named)
                        }
                        "array" => {
                            let items = obj.get("items").ok_or("an array without `items`")?;
                            Ok(Avro::Array(Box::new(self.parse(items, namespace)?)))
                        }
                        "map" => {
                            let values = obj.get("values").ok_or("a map without `values`")?;
                            Ok(Avro::Map(Box::new(self.parse(values, namespace)?)))
                        }
                        other => self.by_name(other, logical, namespace),
                    },
                    Some(nested @ (Value::Object(_) | Value::Array(_))) => self.parse(nested, namespace),
                    _ => Err(format!("a type without a valid `type`: {json}")),
                }
            }
            other => Err(format!("`{other}` is not an Avro type")),
        }
    }

    fn by_name(
        &mut self,
        name: &str,
        logical: Option<String>,
        namespace: Option<&str>,
    ) -> Result<Avro, String> {
        Ok(match name {
            "null" => Avro::Null,
            "boolean" => Avro::Boolean,
            "int" => Avro::Int(logical),
            "long" => Avro::Long(logical),
            "float" => Avro::Float,
            "double" => Avro::Double,
            "bytes" => Avro::Bytes(logical),
            "string" => Avro::String(logical),
            _ => {
                let full_name = full_name(name, namespace);
                let kind = match self.names.get(&full_name).or_else(|| self.names.get(name)) {
                    Some(kind) => *kind,
                    None => return Err(format!("unknown type `{name}`")),
                };
                Avro::Named(Named { kind, full_name })
            }
        })
    }

    /// Registers an enum, fixed or record's name (before its fields, which may refer to it).
    fn named(
        &mut self,
        obj: &Map<String, Value>,
        namespace: Option<&str>,
        kind: NamedKind,
    ) -> Result<Named, String> {
        let name = obj.get("name").and_then(Value::as_str).ok_or("a named type without a `name`")?;
        let namespace = obj.get("namespace").and_then(Value::as_str).or(namespace);
        let full_name = full_name(name, namespace);
        if self.names.insert(full_name.clone(), kind).is_some() {
            return Err(format!("`{full_name}` is defined twice"));
        }
        Ok(Named { kind, full_name })
    }

    fn record(&mut self, obj: &Map<String, Value>, namespace: Option<&str>) -> Result<Avro, String> {
        let named = self.named(obj, namespace, NamedKind::Record)?;
        // Fields' named types default to the record's namespace.
        let inner_namespace = named.full_name.rsplit_once('.').map(|(ns, _)| ns.to_owned());
        let fields = obj
            .get("fields")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("record `{}` without `fields`", named.full_name))?;
        let mut parsed = Vec::with_capacity(fields.len());
        for field in fields {
            let name = field
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("a field of `{}` without a `name`", named.full_name))?;
            let ty = field
                .get("type")
                .ok_or_else(|| format!("field `{name}` of `{}` without a `type`", named.full_name))?;
            let ty = self.parse(ty, inner_namespace.as_deref())?;
            parsed.push(Field { name: name.to_owned(), ty });
        }
        self.records.insert(named.full_name.clone(), parsed);
        Ok(Avro::Named(named))
    }
}

fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_owned(),
    }
}

fn string_list(obj: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    obj.get(key)
        .and_then(Value::as_array)
        .and_then(|items| items.iter().map(|s| s.as_str().map(str::to_owned)).collect())
        .ok_or_else(|| format!("`{key}` is not a list of strings"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(json: &str) -> Result<TopLevel, String> {
        parse_top_level(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn a_record_with_every_kind_of_field() {
        let TopLevel::Record { full_name, fields } = top(r#"{
            "type": "record", "name": "A", "namespace": "x.y",
            "fields": [
                {"name": "s", "type": {"type": "string", "logicalType": "uuid"}},
                {"name": "o", "type": ["null", "long"]},
                {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["P"]}},
                {"name": "e2", "type": "E"},
                {"name": "e3", "type": "x.y.E"},
                {"name": "f", "type": {"type": "fixed", "name": "F", "size": 4}},
                {"name": "m", "type": {"type": "map", "values": {"type": "array", "items": "int"}}},
                {"name": "r", "type": {"type": "record", "name": "R", "namespace": "z",
                                       "fields": [{"name": "back", "type": ["null", "x.y.A"]}]}},
                {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "u", "type": ["int", "string"]}
            ]
        }"#)
        .unwrap() else {
            panic!("a record")
        };
        assert_eq!(full_name, "x.y.A");
        let shown: Vec<String> =
            fields.iter().map(|f| format!("{}: {} => {:?}", f.name, f.ty, f.ty.rust())).collect();
        assert_eq!(
            shown,
            [
                "s: string/uuid => Some(\"String\")",
                "o: [null, long] => Some(\"Option<i64>\")",
                "e: enum E => Some(\"E\")",
                "e2: enum E => Some(\"E\")",
                "e3: enum E => Some(\"E\")",
                "f: fixed F => Some(\"F\")",
                "m: map<array<int>> => Some(\"HashMap<String, Vec<i32>>\")",
                "r: record R => Some(\"R\")",
                "t: long/timestamp-millis => Some(\"i64\")",
                "u: [int, string] => None",
            ]
        );
    }

    #[test]
    fn an_enum_and_other_top_levels() {
        let TopLevel::Enum { full_name, symbols } =
            top(r#"{"type": "enum", "name": "S", "namespace": "n", "symbols": ["A", "B"]}"#).unwrap()
        else {
            panic!("an enum")
        };
        assert_eq!(
            (full_name.as_str(), symbols.as_slice()),
            ("n.S", ["A".to_owned(), "B".to_owned()].as_slice())
        );
        assert!(matches!(top(r#""string""#), Ok(TopLevel::Other(Avro::String(None)))));
    }

    #[test]
    fn broken_schemas_say_why() {
        assert_eq!(
            top(r#"{"type": "record", "name": "A", "fields": [{"name": "x", "type": "Nope"}]}"#).unwrap_err(),
            "unknown type `Nope`"
        );
        assert_eq!(top(r#"{"type": "record", "name": "A"}"#).unwrap_err(), "record `A` without `fields`");
        assert_eq!(top(r#"{"type": "fixed", "name": "F"}"#).unwrap_err(), "a fixed without a `size`");
        assert_eq!(top("42").unwrap_err(), "`42` is not an Avro type");
    }
}
