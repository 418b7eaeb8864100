//! `backbone dlq list|replay`: inspect a service's dead letters and send chosen ones back.
//!
//! The consumer runtime dead-letters an event it cannot handle to `<service>.private.dlq.<source>`
//! (`backbone::consume::dead_letter_topic`), keyed and with the payload as it came, and with
//! `backbone-dlq-*` headers naming its origin and the failure (`backbone::consume::dead_letter_headers`).
//!
//! - `list` reads every dead-letter topic of the service (or the one for `--topic`) from its beginning
//!   to the end offsets seen at start, and prints one line (or, with `--json`, one JSON object) per
//!   dead letter.
//! - `replay` republishes chosen dead letters, named by their offset in the dead-letter topic, to the
//!   service's **retry topic** for that source, `<service>.private.retry.<source>`
//!   (`backbone::consume::retry_topic`), in offset order: original key and payload, the original
//!   event's headers (not the `backbone-dlq-*` ones), `backbone-replayed-from: <dlq-topic>:<offset>`
//!   and `backbone-replay-handler: <handler that failed>`. Not to the origin topic: that belongs to
//!   another service (the CLI would be its second writer) and every consumer group of it would see the
//!   event again. The service's retry consumer of that handler (group `<group>.retry`, run by
//!   `backbone::App` next to each handler's consumer) handles it; its other handlers skip it. A
//!   service without the retry topic (built before it) is refused. The producer is backbone's durable one
//!   (acks=all, idempotence on, at most 5 in flight) and each write is awaited before the next, so a
//!   failure stops the replay with everything before it written and nothing after it. Offsets that are
//!   not in the dead-letter topic are refused before anything is written. Replaying does not remove
//!   dead letters (Kafka cannot): replaying the same offset twice writes the event twice.
//!
//! Brokers and security come from the environment like a service's (`KAFKA_BOOTSTRAP_SERVERS`,
//! `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_USERNAME` …; see `backbone::config`); `--bootstrap-servers`
//! overrides the brokers. With SASL the principal defaults to `backbone-cli`: run with an operator's
//! credentials (reading the dead-letter topics, writing the retry topics).

use std::collections::BTreeSet;
use std::fmt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use backbone::headers::{dead_letter as dlq_headers, replay};
use backbone::topic::validate_service_name;
use backbone::{Config, TopicSpec};
use clap::{ArgGroup, Args, Subcommand};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// The command's client id (and its SASL principal unless `KAFKA_SASL_USERNAME` says otherwise).
const CLIENT: &str = "backbone-cli";
/// The consumer group named for reading (offsets are assigned, never committed; the group is not
/// joined).
const READ_GROUP: &str = "backbone-cli.dlq";
/// The prefix every dead-letter header shares; these are dropped when replaying.
const DLQ_HEADER_PREFIX: &str = dlq_headers::PREFIX;
/// The header a replayed event carries: `<dlq-topic>:<dlq-offset>`.
const REPLAYED_FROM: &str = replay::REPLAYED_FROM;
/// The header naming the handler a replayed event is for.
const REPLAY_HANDLER: &str = replay::HANDLER;
/// How long metadata and watermark requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading may go without a message before it is called stuck.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a key `list` prints, in characters.
const KEY_WIDTH: usize = 40;
/// How much of an error message `list` prints, in characters.
const MESSAGE_WIDTH: usize = 120;

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// Print the dead letters of a service: one line each, or one JSON object each with `--json`.
    List(ListArgs),
    /// Send chosen dead letters back to the handler that failed them, through the service's retry
    /// topic.
    ///
    /// Writes to `<service>.private.retry.<SOURCE_TOPIC>`, never to the origin topic (another
    /// service's, read by other consumer groups that handled the event already): the service's retry
    /// consumer for the handler named in the dead letter handles it, its other handlers skip it. In
    /// dead-letter offset order, with the original key, payload and headers,
    /// `backbone-replayed-from: <dlq-topic>:<offset>` and `backbone-replay-handler: <handler>`; each
    /// write is acknowledged (acks=all, idempotent) before the next. Refused if the retry topic does
    /// not exist (the service predates retry topics). Dead letters stay in the dead-letter topic, so
    /// replaying one twice writes it twice.
    Replay(ReplayArgs),
}

/// Where the brokers are.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// Brokers, overriding `KAFKA_BOOTSTRAP_SERVERS`.
    #[arg(long, value_name = "HOST:PORT,…", value_parser = parse_bootstrap_servers)]
    bootstrap_servers: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The service whose dead letters to list.
    #[arg(long, value_name = "NAME")]
    service: String,
    /// Only the dead letters of events from this topic (default: every `<service>.private.dlq.*`).
    #[arg(long, value_name = "SOURCE_TOPIC")]
    topic: Option<String>,
    /// One JSON object per line, with the full key and error message.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["offsets", "all"])))]
pub(crate) struct ReplayArgs {
    /// The service whose dead letters to replay.
    #[arg(long, value_name = "NAME")]
    service: String,
    /// The topic the events came from: replays from `<service>.private.dlq.<SOURCE_TOPIC>` to
    /// `<service>.private.retry.<SOURCE_TOPIC>`.
    #[arg(long, value_name = "SOURCE_TOPIC")]
    topic: String,
    /// The dead letters to replay, by offset in the dead-letter topic: `3,7,10-12`.
    #[arg(long, value_name = "LIST", value_parser = parse_offsets)]
    offsets: Option<Offsets>,
    /// Replay every dead letter in the dead-letter topic.
    #[arg(long)]
    all: bool,
    /// Print what would be replayed; write nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    connection: Connection,
}

/// Dead-letter offsets chosen on the command line, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Offsets(BTreeSet<i64>);

/// Why a dlq command failed.
#[derive(Debug)]
pub(crate) enum DlqError {
    /// Configuration, or a name that breaks backbone's naming rules.
    Backbone(backbone::Error),
    /// Kafka refused or failed a request.
    Kafka { what: String, reason: String },
    /// The replay was refused before anything was written.
    Refused(String),
    /// A replay write failed; those before it were written, none after it.
    ReplayFailed { letter: String, target: String, reason: String, replayed: usize, chosen: usize },
}

impl fmt::Display for DlqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Backbone(e) => e.fmt(f),
            Self::Kafka { what, reason } => write!(f, "{what}: {reason}"),
            Self::Refused(why) => write!(f, "{why}; nothing replayed"),
            Self::ReplayFailed { letter, target, reason, replayed, chosen } => write!(
                f,
                "replaying {letter} to {target} failed: {reason}; {replayed} of {chosen} dead letter(s) \
                 were replayed before it (listed above), the rest were not attempted"
            ),
        }
    }
}

impl std::error::Error for DlqError {}

impl<E: Into<backbone::Error>> From<E> for DlqError {
    fn from(e: E) -> Self {
        Self::Backbone(e.into())
    }
}

/// A Kafka failure while doing `what`.
fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> DlqError {
    let what = what.into();
    move |e| DlqError::Kafka { what, reason: e.to_string() }
}

pub(crate) async fn run(command: DlqCommand) -> Result<ExitCode, DlqError> {
    match command {
        DlqCommand::List(args) => {
            let config = config(&args.connection)?;
            blocking(move || list(&config, &args)).await
        }
        DlqCommand::Replay(args) => replay(args).await,
    }
}

/// Runs blocking librdkafka calls (metadata, watermarks, polling) off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DlqError> + Send + 'static,
) -> Result<T, DlqError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| DlqError::Kafka { what: "reading dead letters".into(), reason: e.to_string() })?
}

/// The configuration from the environment, with `--bootstrap-servers` on top.
fn config(connection: &Connection) -> Result<Config, DlqError> {
    let mut config = Config::from_env(CLIENT)?;
    if let Some(servers) = &connection.bootstrap_servers {
        config.bootstrap_servers.clone_from(servers);
    }
    Ok(config)
}

fn parse_bootstrap_servers(value: &str) -> Result<String, String> {
    if value.trim().is_empty() || value.split(',').any(|s| !s.contains(':')) {
        return Err("expected a comma-separated list of host:port".into());
    }
    Ok(value.to_owned())
}

/// Parses `3,7,10-12`: offsets and inclusive ranges, comma-separated.
fn parse_offsets(value: &str) -> Result<Offsets, String> {
    let offset = |s: &str| {
        s.trim().parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            format!("`{}` is not an offset (a whole number from 0); expected a list like 3,7,10-12", s.trim())
        })
    };
    let mut offsets = BTreeSet::new();
    for part in value.split(',') {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (offset(from)?, offset(to)?);
                if from > to {
                    return Err(format!("the range `{}` runs backwards", part.trim()));
                }
                if to - from >= 1_000_000 {
                    return Err(format!("the range `{}` is over a million offsets", part.trim()));
                }
                offsets.extend(from..=to);
            }
            None => {
                offsets.insert(offset(part)?);
            }
        }
    }
    Ok(Offsets(offsets))
}

/// The dead-letter topic of `service` for events from `source`, named as
/// `backbone::consume::dead_letter_topic` names it (that takes a declared source; this, any name).
fn dead_letter_topic_name(service: &str, source: &str) -> Result<String, DlqError> {
    Ok(TopicSpec::private(service, format!("dlq.{source}")).partitions(1).build()?.name().to_owned())
}

/// The retry topic of `service` for events from `source`, named as `backbone::consume::retry_topic`
/// names it: where replays go.
fn retry_topic_name(service: &str, source: &str) -> Result<String, DlqError> {
    Ok(TopicSpec::private(service, format!("retry.{source}")).partitions(1).build()?.name().to_owned())
}

/// The prefix of every dead-letter topic of `service`.
fn dead_letter_prefix(service: &str) -> Result<String, DlqError> {
    validate_service_name(service)?;
    Ok(format!("{service}.private.dlq."))
}

/// A reader that is assigned partitions and never commits.
fn reader(config: &Config) -> Result<BaseConsumer, DlqError> {
    config
        .client_config(CLIENT)
        .set("group.id", READ_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(kafka(format!("connecting to {}", config.bootstrap_servers)))
}

/// The partitions of every topic whose name `matches`, from metadata of the whole cluster (asking for
/// a named topic would let a broker with `auto.create.topics.enable` create it). Sorted by name.
fn topics(
    consumer: &BaseConsumer,
    matches: impl Fn(&str) -> bool,
) -> Result<Vec<(String, Vec<i32>)>, DlqError> {
    let metadata =
        consumer.fetch_metadata(None, REQUEST_TIMEOUT).map_err(kafka("fetching cluster metadata"))?;
    let mut found: Vec<(String, Vec<i32>)> = metadata
        .topics()
        .iter()
        .filter(|t| matches(t.name()))
        .map(|t| (t.name().to_owned(), t.partitions().iter().map(|p| p.id()).collect()))
        .collect();
    found.sort();
    Ok(found)
}

/// One dead letter as read.
#[derive(Debug)]
struct Letter {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Letter {
    /// The first header called `name`, as bytes.
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_deref())
    }

    /// The handler that failed it, which a replay is for, if the header is there and is a name.
    fn handler(&self) -> Option<&str> {
        self.header(dlq_headers::HANDLER).and_then(|t| std::str::from_utf8(t).ok()).filter(|t| !t.is_empty())
    }

    /// The first header called `name`, as (lossy) text.
    fn text(&self, name: &str) -> Option<String> {
        self.header(name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The first header called `name`, as a number.
    fn number(&self, name: &str) -> Option<i64> {
        self.text(name).and_then(|v| v.trim().parse().ok())
    }

    /// `<dlq-topic>:<offset>`, or `<dlq-topic>[<partition>]:<offset>` beyond partition 0 (backbone's
    /// dead-letter topics have one partition).
    fn location(&self) -> String {
        if self.partition == 0 {
            format!("{}:{}", self.topic, self.offset)
        } else {
            format!("{}[{}]:{}", self.topic, self.partition, self.offset)
        }
    }

    /// `topic:partition:offset` of the event it came from.
    fn origin(&self) -> String {
        let field = |name| self.text(name).unwrap_or_else(|| "?".into());
        format!(
            "{}:{}:{}",
            field(dlq_headers::ORIGIN_TOPIC),
            field(dlq_headers::ORIGIN_PARTITION),
            field(dlq_headers::ORIGIN_OFFSET)
        )
    }

    /// The key as text, for people.
    fn key_text(&self) -> Option<String> {
        self.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned())
    }

    /// The line `list` prints.
    fn line(&self) -> String {
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
    fn json(&self) -> serde_json::Value {
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

    /// The headers a replay carries: the original event's, as the consumer kept them
    /// (`backbone-dlq-original-<name>`), or, for a letter without them, every header but the
    /// dead-letter ones (and an earlier replay's marks); then where this replay comes from and the
    /// handler it is for.
    fn replay_headers(&self) -> OwnedHeaders {
        let replay_mark = |k: &str| k == REPLAYED_FROM || k == REPLAY_HANDLER;
        let original = dlq_headers::ORIGINAL_PREFIX;
        let has_originals = self.headers.iter().any(|(k, _)| k.starts_with(original));
        let kept: Vec<(&str, Option<&[u8]>)> = if has_originals {
            self.headers
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(original)?, v.as_deref())))
                .filter(|(k, _)| !replay_mark(k))
                .collect()
        } else {
            self.headers
                .iter()
                .filter(|(k, _)| !k.starts_with(DLQ_HEADER_PREFIX) && !replay_mark(k))
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect()
        };
        let mut headers = OwnedHeaders::new_with_capacity(kept.len() + 2);
        for (key, value) in kept {
            headers = headers.insert(Header { key, value });
        }
        headers
            .insert(Header { key: REPLAYED_FROM, value: Some(&format!("{}:{}", self.topic, self.offset)) })
            .insert(Header { key: REPLAY_HANDLER, value: self.handler().map(str::as_bytes) })
    }
}

/// `text` cut to `width` characters, with `…` when cut.
fn truncate(text: &str, width: usize) -> String {
    match text.char_indices().nth(width) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Reads `topic`'s `partitions` from their beginning to the end offsets they have now, handing each
/// dead letter to `visit` in partition order, offset order within a partition. Stops at the captured
/// high watermarks (or the end of a partition, whichever comes first), so it never waits for more.
fn read_topic(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    mut visit: impl FnMut(Letter),
) -> Result<(), DlqError> {
    for &partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(kafka(format!("fetching the end offsets of {topic}[{partition}]")))?;
        if low >= high {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(low))
            .map_err(kafka(format!("assigning {topic}[{partition}]")))?;
        consumer.assign(&tpl).map_err(kafka(format!("assigning {topic}[{partition}]")))?;
        let mut progress = Instant::now();
        let mut next = low;
        while next < high {
            match consumer.poll(Duration::from_millis(500)) {
                None if progress.elapsed() > STALL_TIMEOUT => {
                    return Err(DlqError::Kafka {
                        what: format!("reading {topic}[{partition}]"),
                        reason: format!(
                            "no progress for {}s at offset {next} (end offset {high})",
                            STALL_TIMEOUT.as_secs()
                        ),
                    });
                }
                None => {}
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(kafka(format!("reading {topic}[{partition}]"))(e)),
                Some(Ok(m)) => {
                    progress = Instant::now();
                    next = m.offset() + 1;
                    if m.offset() >= high {
                        break;
                    }
                    visit(Letter {
                        topic: topic.to_owned(),
                        partition,
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                        headers: m
                            .headers()
                            .map(|hs| {
                                hs.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect()
                            })
                            .unwrap_or_default(),
                    });
                }
            }
        }
    }
    consumer.unassign().map_err(kafka(format!("unassigning {topic}")))
}

fn list(config: &Config, args: &ListArgs) -> Result<ExitCode, DlqError> {
    let prefix = dead_letter_prefix(&args.service)?;
    let wanted =
        args.topic.as_deref().map(|source| dead_letter_topic_name(&args.service, source)).transpose()?;
    let consumer = reader(config)?;
    let topics = topics(&consumer, |name| match &wanted {
        Some(wanted) => name == wanted,
        None => name.starts_with(&prefix),
    })?;
    let mut count = 0usize;
    for (topic, partitions) in &topics {
        read_topic(&consumer, topic, partitions, |letter| {
            count += 1;
            if args.json {
                println!("{}", letter.json());
            } else {
                println!("{}", letter.line());
            }
        })?;
    }
    let summary = match (&wanted, topics.len(), count) {
        (Some(wanted), 0, _) => format!("no dead letters: topic {wanted} does not exist"),
        (None, 0, _) => format!("no dead letters: service {} has no topics named {prefix}*", args.service),
        (_, n, 0) => {
            format!("no dead letters: {n} dead-letter topic(s) of service {} are empty", args.service)
        }
        (_, n, c) => format!("{c} dead letter(s) in {n} topic(s)"),
    };
    // The summary is for people: on stdout unless stdout is JSON lines.
    if args.json || count > 0 {
        eprintln!("backbone dlq list: {summary}");
    } else {
        println!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(args: ReplayArgs) -> Result<ExitCode, DlqError> {
    let config = config(&args.connection)?;
    let dlq = dead_letter_topic_name(&args.service, &args.topic)?;
    let target = retry_topic_name(&args.service, &args.topic)?;
    let chosen = args.offsets.clone();
    let letters = {
        let (config, dlq, target) = (config.clone(), dlq.clone(), target.clone());
        blocking(move || choose(&config, &dlq, &target, chosen.as_ref())).await?
    };
    if letters.is_empty() {
        println!("no dead letters in {dlq}: nothing to replay");
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        for letter in &letters {
            println!(
                "would replay {} -> {target} for {}  key {}  ({} payload bytes)",
                letter.location(),
                letter.handler().unwrap_or_default(),
                letter.key_text().map_or_else(|| "none".into(), |k| format!("{:?}", truncate(&k, KEY_WIDTH))),
                letter.payload.as_ref().map_or(0, Vec::len),
            );
        }
        println!("dry run: {} dead letter(s) would be replayed; nothing written", letters.len());
        return Ok(ExitCode::SUCCESS);
    }
    let producer: FutureProducer = backbone::publish::producer_config(&config, CLIENT)
        .create()
        .map_err(kafka(format!("creating a producer for {}", config.bootstrap_servers)))?;
    for (done, letter) in letters.iter().enumerate() {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&target).headers(letter.replay_headers());
        if let Some(key) = &letter.key {
            record = record.key(key);
        }
        if let Some(payload) = &letter.payload {
            record = record.payload(payload);
        }
        match producer.send(record, config.delivery_timeout).await {
            Ok(d) => println!(
                "replayed {} -> {target}:{}@{} for {}",
                letter.location(),
                d.partition,
                d.offset,
                letter.handler().unwrap_or_default()
            ),
            Err((e, _)) => {
                return Err(DlqError::ReplayFailed {
                    letter: letter.location(),
                    target: target.clone(),
                    reason: e.to_string(),
                    replayed: done,
                    chosen: letters.len(),
                });
            }
        }
    }
    println!("replayed {} dead letter(s) from {dlq} to {target}", letters.len());
    Ok(ExitCode::SUCCESS)
}

/// The dead letters in `dlq` at `offsets` (or all), in offset order, to replay to `retry`. Refuses
/// a missing retry topic, offsets that are not there and dead letters that do not name their handler.
fn choose(
    config: &Config,
    dlq: &str,
    retry: &str,
    offsets: Option<&Offsets>,
) -> Result<Vec<Letter>, DlqError> {
    let consumer = reader(config)?;
    let all = topics(&consumer, |name| name == dlq || name == retry)?;
    let Some((_, partitions)) = all.iter().find(|(name, _)| name == dlq) else {
        return Err(DlqError::Refused(format!("dead-letter topic {dlq} does not exist")));
    };
    if !all.iter().any(|(name, _)| name == retry) {
        return Err(DlqError::Refused(format!(
            "retry topic {retry} does not exist: replays go to the service's retry topic, not to the \
             origin topic (which every consumer group of it would read again); upgrade the service to a \
             backbone that declares and consumes its retry topics, and start it"
        )));
    }
    if partitions.len() != 1 {
        return Err(DlqError::Refused(format!(
            "{dlq} has {} partitions; backbone's dead-letter topics have one, and replay names dead letters \
             by their offset in it",
            partitions.len()
        )));
    }
    let mut letters = Vec::new();
    let mut seen = (i64::MAX, i64::MIN);
    read_topic(&consumer, dlq, partitions, |letter| {
        seen = (seen.0.min(letter.offset), seen.1.max(letter.offset));
        if offsets.is_none_or(|o| o.0.contains(&letter.offset)) {
            letters.push(letter);
        }
    })?;
    if let Some(Offsets(wanted)) = offsets {
        let found: BTreeSet<i64> = letters.iter().map(|l| l.offset).collect();
        let missing: Vec<String> = wanted.difference(&found).map(i64::to_string).collect();
        if !missing.is_empty() {
            let holds = if seen.0 > seen.1 {
                "it is empty".to_owned()
            } else {
                format!("it holds offsets {} to {}", seen.0, seen.1)
            };
            return Err(DlqError::Refused(format!(
                "no dead letter at offset(s) {} in {dlq} ({holds})",
                missing.join(", ")
            )));
        }
    }
    refuse_truncated(&letters)?;
    let unknown: Vec<String> =
        letters.iter().filter(|l| l.handler().is_none()).map(Letter::location).collect();
    if !unknown.is_empty() {
        return Err(DlqError::Refused(format!(
            "dead letter(s) {} have no valid {} header, so which handler to replay them to is unknown",
            unknown.join(", "),
            dlq_headers::HANDLER
        )));
    }
    Ok(letters)
}

/// Refuses dead letters that hold only a truncated copy of their event (its whole was too large
/// to dead-letter): replaying one would hand the handler a different event.
fn refuse_truncated(letters: &[Letter]) -> Result<(), DlqError> {
    let truncated: Vec<String> = letters
        .iter()
        .filter(|l| l.header(dlq_headers::TRUNCATED).is_some_and(|v| v == b"true"))
        .map(Letter::location)
        .collect();
    if truncated.is_empty() {
        return Ok(());
    }
    Err(DlqError::Refused(format!(
        "dead letter(s) {} hold only a truncated copy of their event (too large to dead-letter whole); \
         replaying it would deliver another event: read the original at its origin topic and offset \
         (the {} and {} headers)",
        truncated.join(", "),
        dlq_headers::ORIGIN_TOPIC,
        dlq_headers::ORIGIN_OFFSET
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_dead_letters_are_not_replayed() {
        let letter = |offset: i64, truncated: Option<&[u8]>| Letter {
            topic: "s.private.dlq.t".into(),
            partition: 0,
            offset,
            key: None,
            payload: Some(b"the first 64 KiB".to_vec()),
            headers: truncated
                .map(|v| (dlq_headers::TRUNCATED.to_owned(), Some(v.to_vec())))
                .into_iter()
                .collect(),
        };
        assert!(refuse_truncated(&[letter(1, None), letter(2, Some(b"false"))]).is_ok());
        let refused = refuse_truncated(&[letter(1, None), letter(7, Some(b"true"))]).unwrap_err().to_string();
        assert!(refused.contains("s.private.dlq.t:7") && refused.contains("truncated"), "{refused}");
        assert!(refused.ends_with("nothing replayed"), "{refused}");
    }

    #[test]
    fn offsets_parse_lists_and_ranges() {
        assert_eq!(parse_offsets("3,7,10-12").unwrap().0, BTreeSet::from([3, 7, 10, 11, 12]));
        assert_eq!(parse_offsets(" 5 , 5,4-4").unwrap().0, BTreeSet::from([4, 5]));
        for bad in ["", "a", "3,", "-1", "5-3", "1-2-3", "0-99999999"] {
            assert!(parse_offsets(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_offsets("5-3").unwrap_err().contains("backwards"));
    }

    #[test]
    fn the_dead_letter_topic_is_named_as_the_consumer_names_it() {
        let source = TopicSpec::public("orders", "created", 1).build().unwrap();
        let framework = backbone::consume::dead_letter_topic("stock", &source).unwrap();
        assert_eq!(dead_letter_topic_name("stock", source.name()).unwrap(), framework.name());
        let retry = backbone::consume::retry_topic("stock", &source).unwrap();
        assert_eq!(retry_topic_name("stock", source.name()).unwrap(), retry.name());
        assert!(framework.name().starts_with(&dead_letter_prefix("stock").unwrap()));
        assert!(dead_letter_prefix("Stock*").is_err());
    }

    #[test]
    fn every_dead_letter_header_is_dropped_on_replay() {
        use dlq_headers as h;
        for name in [
            h::ORIGIN_TOPIC,
            h::ORIGIN_PARTITION,
            h::ORIGIN_OFFSET,
            h::ORIGIN_KEY,
            h::ERROR_KIND,
            h::ERROR_MESSAGE,
            h::HANDLER,
            h::ATTEMPTS,
        ] {
            assert!(name.starts_with(DLQ_HEADER_PREFIX), "{name}");
        }
        let letter = Letter {
            topic: "s.private.dlq.t".into(),
            partition: 0,
            offset: 4,
            key: None,
            payload: None,
            headers: vec![
                (h::ORIGIN_TOPIC.into(), Some(b"t".to_vec())),
                (h::HANDLER.into(), Some(b"reserve".to_vec())),
                ("tenant".into(), Some(b"acme".to_vec())),
                (REPLAYED_FROM.into(), Some(b"s.private.dlq.t:1".to_vec())),
                (REPLAY_HANDLER.into(), Some(b"audit".to_vec())),
                ("empty".into(), None),
            ],
        };
        let headers = letter.replay_headers();
        let got: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|h| (h.key, h.value)).collect();
        assert_eq!(
            got,
            [
                ("tenant", Some(&b"acme"[..])),
                ("empty", None),
                (REPLAYED_FROM, Some(&b"s.private.dlq.t:4"[..])),
                (REPLAY_HANDLER, Some(&b"reserve"[..]))
            ]
        );
    }

    #[test]
    fn replay_restores_the_original_headers_the_consumer_kept() {
        use dlq_headers as h;
        let original = |name: &str| format!("{}{name}", h::ORIGINAL_PREFIX);
        let letter = Letter {
            topic: "s.private.dlq.t".into(),
            partition: 0,
            offset: 9,
            key: None,
            payload: None,
            headers: vec![
                (h::ORIGIN_TOPIC.into(), Some(b"t".to_vec())),
                (h::HANDLER.into(), Some(b"apply".to_vec())),
                // A replayed event that failed again: its earlier replay's marks are replaced.
                (original(REPLAYED_FROM), Some(b"s.private.dlq.t:2".to_vec())),
                (original(REPLAY_HANDLER), Some(b"apply".to_vec())),
                // The dead letter's own publish headers: not the original's.
                (backbone::headers::EVENT_TYPE.into(), Some(b"DeadLetter".to_vec())),
                (original(backbone::headers::EVENT_TYPE), Some(b"OrderCreated".to_vec())),
                (original("traceparent"), Some(b"00-abc".to_vec())),
            ],
        };
        let headers = letter.replay_headers();
        let got: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|h| (h.key, h.value)).collect();
        assert_eq!(
            got,
            [
                (backbone::headers::EVENT_TYPE, Some(&b"OrderCreated"[..])),
                ("traceparent", Some(&b"00-abc"[..])),
                (REPLAYED_FROM, Some(&b"s.private.dlq.t:9"[..])),
                (REPLAY_HANDLER, Some(&b"apply"[..]))
            ]
        );
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo", 2), "hé…");
    }
}
