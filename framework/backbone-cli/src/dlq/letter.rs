//! One dead letter as read, and how `list` prints it (a line, or a JSON object).

use backbone::headers::dead_letter as dlq_headers;

/// How much of a key `list` prints, in characters.
pub(crate) const KEY_WIDTH: usize = 40;
/// How much of an error message `list` prints, in characters.
const MESSAGE_WIDTH: usize = 120;

/// One dead letter as read.
#[derive(Debug)]
pub(crate) struct Letter {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Letter {
    /// The dead letter a record holds (its payload only if `with_payload`).
    pub(crate) fn of(m: &rdkafka::message::BorrowedMessage<'_>, with_payload: bool) -> Self {
        use rdkafka::message::{Headers as _, Message as _};
        Self {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: if with_payload { m.payload().map(<[u8]>::to_vec) } else { None },
            headers: m
                .headers()
                .map(|hs| hs.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
                .unwrap_or_default(),
        }
    }

    /// The first header called `name`, as bytes.
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_deref())
    }

    /// The handler that failed it, which a replay is for, if the header is there and is a name.
    pub(crate) fn handler(&self) -> Option<&str> {
        self.header(dlq_headers::HANDLER).and_then(|t| std::str::from_utf8(t).ok()).filter(|t| !t.is_empty())
    }

    /// The first header called `name`, as (lossy) text.
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        self.header(name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The first header called `name`, as a number.
    pub(crate) fn number(&self, name: &str) -> Option<i64> {
        self.text(name).and_then(|v| v.trim().parse().ok())
    }

    /// `<dlq-topic>:<offset>`, or `<dlq-topic>[<partition>]:<offset>` beyond partition 0 (backbone's
    /// dead-letter topics have one partition).
    pub(crate) fn location(&self) -> String {
        if self.partition == 0 {
            format!("{}:{}", self.topic, self.offset)
        } else {
            format!("{}[{}]:{}", self.topic, self.partition, self.offset)
        }
    }

    /// `topic:partition:offset` of the event it came from.
    pub(crate) fn origin(&self) -> String {
        let field = |name| self.text(name).unwrap_or_else(|| "?".into());
        format!(
            "{}:{}:{}",
            field(dlq_headers::ORIGIN_TOPIC),
            field(dlq_headers::ORIGIN_PARTITION),
            field(dlq_headers::ORIGIN_OFFSET)
        )
    }

    /// The key as text, for people.
    pub(crate) fn key_text(&self) -> Option<String> {
        self.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned())
    }

    /// The line `list` prints.
    pub(crate) fn line(&self) -> String {
        let key = self.key_text().map_or_else(|| "none".into(), |k| format!("{:?}", truncate(&k, KEY_WIDTH)));
        let message = self.text(dlq_headers::ERROR_MESSAGE).unwrap_or_default();
        format!(
            "{} {}  origin {}  key {}  kind {}  attempts {}  error {:?}",
            if self.partition == 0 {
                self.topic.clone()
            } else {
                format!("{}[{}]", self.topic, self.partition)
            },
            self.offset,
            self.origin(),
            key,
            self.text(dlq_headers::ERROR_KIND).unwrap_or_else(|| "?".into()),
            self.text(dlq_headers::ATTEMPTS).unwrap_or_else(|| "?".into()),
            truncate(&message, MESSAGE_WIDTH),
        )
    }

    /// The object `list --json` prints.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "dlq_topic": self.topic,
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "origin_topic": self.text(dlq_headers::ORIGIN_TOPIC),
            "origin_partition": self.number(dlq_headers::ORIGIN_PARTITION),
            "origin_offset": self.number(dlq_headers::ORIGIN_OFFSET),
            "key": self.key_text(),
            "error_kind": self.text(dlq_headers::ERROR_KIND),
            "error_message": self.text(dlq_headers::ERROR_MESSAGE),
            "handler": self.text(dlq_headers::HANDLER),
            "attempts": self.number(dlq_headers::ATTEMPTS),
            "payload_bytes": self.payload.as_ref().map(Vec::len),
        })
    }
}

/// `text` cut to `width` characters, with `…` when cut.
pub(crate) fn truncate(text: &str, width: usize) -> String {
    match text.char_indices().nth(width) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
