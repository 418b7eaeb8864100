//! Dead letters for the console's pages: the latest of a dead-letter topic (headers only), and one
//! record whole, its payload decoded by its schema when it carries a schema id.

use std::time::Duration;

use backbone::Config;
use backbone::headers::dead_letter as h;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message as _;

use crate::dlq::letter::Letter;
use crate::dlq::reader::read_range;

use super::CLIENT;

/// The most dead letters a topic's page lists (the latest ones).
pub(crate) const PAGE: i64 = 200;
/// The most payload bytes a page shows.
pub(crate) const SHOWN_BYTES: usize = 64 * 1024;
/// How long reading may go without progress.
const STALL: Duration = Duration::from_secs(10);

/// A dead-letter topic's service and source: `<service>.private.dlq.<source>`.
pub(crate) fn parts(topic: &str) -> Option<(&str, &str)> {
    let (service, source) = topic.split_once(".private.dlq.")?;
    (!service.is_empty() && !source.is_empty()).then_some((service, source))
}

/// A dead letter as a page lists it: the record's place and headers; the payload's size only.
#[derive(Debug)]
pub(crate) struct Listed {
    /// The letter, its payload dropped.
    pub(crate) letter: Letter,
    /// The payload's size in bytes.
    pub(crate) size: usize,
    /// The record's timestamp (ms since the epoch), when it has one.
    pub(crate) timestamp: Option<i64>,
}

impl Listed {
    /// A dead-letter header as text.
    pub(crate) fn text(&self, name: &str) -> String {
        self.letter.text(name).unwrap_or_default()
    }

    /// The error kind (`handler`, `panic`, `undecodable` …).
    pub(crate) fn kind(&self) -> String {
        self.text(h::ERROR_KIND)
    }
}

fn reader(config: &Config) -> Result<BaseConsumer, String> {
    config
        .client_config(CLIENT)
        .set("group.id", "backbone-console.dlq")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("queued.max.messages.kbytes", "16384")
        .create()
        .map_err(|e| format!("connecting to {}: {e}", config.bootstrap_servers))
}

/// Reads `topic`'s partition 0 from `from` (inclusive) to `to` (exclusive), handing each record to
/// `visit` (`backbone dlq`'s reader, with [`STALL`]).
fn read(
    config: &Config,
    topic: &str,
    from: i64,
    to: i64,
    visit: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<(), String> {
    if from >= to {
        return Ok(());
    }
    let consumer = reader(config)?;
    read_range(&consumer, topic, 0, from..to, STALL, visit).map_err(|e| e.to_string())
}

/// The latest [`PAGE`] dead letters of `topic` (between its offsets `low` and `high`), newest first.
pub(crate) fn latest(config: &Config, topic: &str, low: i64, high: i64) -> Result<Vec<Listed>, String> {
    let mut found = Vec::new();
    read(config, topic, low.max(high - PAGE), high, |m| {
        found.push(Listed {
            size: m.payload().map_or(0, <[u8]>::len),
            timestamp: m.timestamp().to_millis(),
            letter: Letter::of(m, false),
        });
    })?;
    found.reverse();
    Ok(found)
}

/// The dead letter at `offset` of `topic`, whole.
pub(crate) fn one(
    config: &Config,
    topic: &str,
    offset: i64,
) -> Result<Option<(Letter, Option<i64>)>, String> {
    let mut found = None;
    read(config, topic, offset, offset + 1, |m| {
        if m.offset() == offset {
            found = Some((Letter::of(m, true), m.timestamp().to_millis()));
        }
    })?;
    Ok(found)
}

/// How a payload reads: decoded by its schema (as JSON) when it carries a registered schema id,
/// else as JSON or text, else as hex; at most [`SHOWN_BYTES`] of it.
pub(crate) async fn decode(
    registry: Option<&backbone::schema::Registry>,
    payload: &[u8],
) -> (String, String) {
    if let (Some(registry), Ok((id, body))) = (registry, backbone::schema::wire::split(payload)) {
        match registry.schema(id).await {
            Ok(schema) => match apache_avro::reader::datum::GenericDatumReader::builder(schema)
                .build()
                .and_then(|reader| reader.read_value(&mut &body[..]))
            {
                Ok(value) => {
                    let json = serde_json::Value::try_from(value)
                        .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
                        .unwrap_or_else(|e| format!("(not representable as JSON: {e})"));
                    return (format!("Avro, schema id {}", id.0), bounded(&json));
                }
                Err(e) => return (format!("Avro, schema id {}: does not decode", id.0), e.to_string()),
            },
            Err(e) => return (format!("schema id {}: not found", id.0), e.to_string()),
        }
    }
    match std::str::from_utf8(payload) {
        Ok(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => ("JSON".into(), bounded(&serde_json::to_string_pretty(&v).unwrap_or_default())),
            Err(_) => ("text".into(), bounded(text)),
        },
        Err(_) => {
            let shown = &payload[..payload.len().min(SHOWN_BYTES / 3)];
            let hex: Vec<String> = shown
                .chunks(16)
                .map(|c| c.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "))
                .collect();
            ("bytes".into(), hex.join("\n"))
        }
    }
}

fn bounded(text: &str) -> String {
    if text.len() <= SHOWN_BYTES {
        return text.to_owned();
    }
    let mut end = SHOWN_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n… ({} more bytes)", &text[..end], text.len() - end)
}
