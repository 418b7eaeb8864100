//! `backbone dlq replay`: send chosen dead letters back, through the service's retry topic.

use std::collections::BTreeSet;
use std::process::ExitCode;

use backbone::Config;
use backbone::headers::{EVENT_TYPE, PRODUCER, dead_letter as dlq_headers, replay};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::args::{Offsets, ReplayArgs};
use super::error::kafka;
use super::letter::{KEY_WIDTH, Letter, truncate};
use super::reader::{read_topic, reader, topics};
use super::{CLIENT, DlqError, blocking, config, dead_letter_topic_name, replay_target};

/// The prefix every dead-letter header shares; these are dropped when replaying.
pub(super) const DLQ_HEADER_PREFIX: &str = dlq_headers::PREFIX;
/// The header a replayed event carries: `<dlq-topic>:<dlq-offset>`.
pub(super) const REPLAYED_FROM: &str = replay::REPLAYED_FROM;
/// The header naming the handler a replayed event is for.
pub(super) const REPLAY_HANDLER: &str = replay::HANDLER;

pub(super) async fn replay(args: ReplayArgs) -> Result<ExitCode, DlqError> {
    let config = config(&args.connection)?;
    let chosen = choose_letters(&config, &args.service, &args.topic, args.offsets.clone()).await?;
    let Chosen { dlq, target, letters } = &chosen;
    if letters.is_empty() {
        println!("no dead letters in {dlq}: nothing to replay");
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        for letter in letters {
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
    for done in write(&config, &chosen).await? {
        println!("replayed {} -> {} for {}", done.from, done.to, done.handler);
    }
    println!("replayed {} dead letter(s) from {dlq} to {target}", letters.len());
    Ok(ExitCode::SUCCESS)
}

/// The dead letters a replay will write, checked, and where they go.
pub(crate) struct Chosen {
    /// The dead-letter topic.
    pub(crate) dlq: String,
    /// Where the replays go: the service's retry topic for the source, or the source itself.
    pub(crate) target: String,
    /// The dead letters, in offset order.
    pub(crate) letters: Vec<Letter>,
}

/// One dead letter written back.
pub(crate) struct Replayed {
    /// `<dlq-topic>:<offset>`.
    pub(crate) from: String,
    /// `<target>:<partition>@<offset>`.
    pub(crate) to: String,
    /// The handler it is for.
    pub(crate) handler: String,
}

/// The dead letters of `service` from `source` at `offsets` (all when `None`), read and checked
/// (`backbone dlq replay` and the console's replay share it): nothing is written.
pub(crate) async fn choose_letters(
    config: &Config,
    service: &str,
    source: &str,
    offsets: Option<Offsets>,
) -> Result<Chosen, DlqError> {
    let dlq = dead_letter_topic_name(service, source)?;
    let target = replay_target(service, source)?;
    let letters = {
        let (config, dlq, target) = (config.clone(), dlq.clone(), target.clone());
        blocking(move || choose(&config, &dlq, &target, offsets.as_ref())).await?
    };
    Ok(Chosen { dlq, target, letters })
}

/// Writes `chosen`'s dead letters to their target in offset order, each awaited before the next
/// (backbone's durable producer). A failure stops it, with everything before it written.
pub(crate) async fn write(config: &Config, chosen: &Chosen) -> Result<Vec<Replayed>, DlqError> {
    let Chosen { target, letters, .. } = chosen;
    let producer: FutureProducer = backbone::publish::producer_config(config, CLIENT)
        .create()
        .map_err(kafka(format!("creating a producer for {}", config.bootstrap_servers)))?;
    let mut replayed = Vec::with_capacity(letters.len());
    for (done, letter) in letters.iter().enumerate() {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(target).headers(letter.replay_headers());
        if let Some(key) = &letter.key {
            record = record.key(key);
        }
        if let Some(payload) = &letter.payload {
            record = record.payload(payload);
        }
        match producer.send(record, config.delivery_timeout).await {
            Ok(d) => replayed.push(Replayed {
                from: letter.location(),
                to: format!("{target}:{}@{}", d.partition, d.offset),
                handler: letter.handler().unwrap_or_default().to_owned(),
            }),
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
    Ok(replayed)
}

/// The dead letters in `dlq` at `offsets` (or all), in offset order, to replay to `target`. Refuses
/// a missing retry topic, offsets that are not there and dead letters that do not name their handler.
fn choose(
    config: &Config,
    dlq: &str,
    target: &str,
    offsets: Option<&Offsets>,
) -> Result<Vec<Letter>, DlqError> {
    let consumer = reader(config)?;
    let all = topics(&consumer, |name| name == dlq || name == target)?;
    let Some((_, partitions)) = all.iter().find(|(name, _)| name == dlq) else {
        return Err(DlqError::Refused(format!("dead-letter topic {dlq} does not exist")));
    };
    if !all.iter().any(|(name, _)| name == target) && target != dlq_source(dlq) {
        return Err(DlqError::Refused(format!(
            "retry topic {target} does not exist: replays go to the service's retry topic, not to the \
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

/// The source topic a dead-letter topic `<service>.private.dlq.<source>` is for.
fn dlq_source(dlq: &str) -> &str {
    dlq.split_once(".private.dlq.").map_or(dlq, |(_, source)| source)
}

/// Refuses dead letters that hold only a truncated copy of their event (its whole was too large
/// to dead-letter): replaying one would hand the handler a different event.
pub(super) fn refuse_truncated(letters: &[Letter]) -> Result<(), DlqError> {
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

impl Letter {
    /// The headers a replay carries: the original event's, as the consumer kept them
    /// (`backbone-dlq-original-<name>`), or, for a letter without them, every header but the
    /// dead-letter ones (and an earlier replay's marks); then what the origin topic's name said of
    /// the event and the retry topic's name no longer says (backbone leaves out the producer, the
    /// topic's owner, and the type of an event on the public topic named for it): the producer and,
    /// for a payload not framed with a schema id, the topic's declared type, unless the original
    /// headers name them; then where this replay comes from and the handler it is for.
    pub(super) fn replay_headers(&self) -> OwnedHeaders {
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
        let mut headers = OwnedHeaders::new_with_capacity(kept.len() + 4);
        let names = |name: &str| kept.iter().any(|(k, _)| *k == name);
        let (names_type, names_producer) = (names(EVENT_TYPE), names(PRODUCER));
        for (key, value) in kept {
            headers = headers.insert(Header { key, value });
        }
        let origin = self.header(dlq_headers::ORIGIN_TOPIC).and_then(|t| std::str::from_utf8(t).ok());
        let framed = self.payload.as_deref().is_some_and(|p| backbone::schema::wire::split(p).is_ok());
        if !names_type
            && !framed
            && let Some(event_type) = origin.and_then(backbone::topic::declared_event_type)
        {
            headers = headers.insert(Header { key: EVENT_TYPE, value: Some(&event_type) });
        }
        if !names_producer && let Some((owner, _)) = origin.and_then(backbone::topic::parse_topic_name) {
            headers = headers.insert(Header { key: PRODUCER, value: Some(owner) });
        }
        headers
            .insert(Header { key: REPLAYED_FROM, value: Some(&format!("{}:{}", self.topic, self.offset)) })
            .insert(Header { key: REPLAY_HANDLER, value: self.handler().map(str::as_bytes) })
    }
}
