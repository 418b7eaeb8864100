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
//!   event's headers (not the `backbone-dlq-*` ones), the producer and event type the origin topic's
//!   name implied when the original left them out (backbone's minimal metadata; the retry topic's
//!   name does not say them), `backbone-replayed-from: <dlq-topic>:<offset>`
//!   and `backbone-replay-handler: <handler that failed>`. Not to the origin topic: that belongs to
//!   another service (the CLI would be its second writer) and every consumer group of it would see the
//!   event again. The service's retry consumer of that handler (group `<group>.retry`, run by
//!   `backbone::App` next to each handler's consumer) handles it; its other handlers skip it. A
//!   service without the retry topic (built before it) is refused. Replays of the service's **own
//!   private topics** go back to the topic itself (`backbone::consume::replays_to_source`): the
//!   service is their one writer and no other service reads them, and the consumer owning the key's
//!   partition handles the replay in order with the key's live events (the service's other
//!   handlers of the topic skip it). The producer is backbone's durable one
//!   (acks=all, idempotence on, at most 5 in flight) and each write is awaited before the next, so a
//!   failure stops the replay with everything before it written and nothing after it. Offsets that are
//!   not in the dead-letter topic are refused before anything is written. Replaying does not remove
//!   dead letters (Kafka cannot): replaying the same offset twice writes the event twice.
//!
//! Brokers and security come from the environment like a service's (`KAFKA_BOOTSTRAP_SERVERS`,
//! `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_USERNAME` …; see `backbone::config`); `--bootstrap-servers`
//! overrides the brokers. With SASL the principal defaults to `backbone-cli`: run with an operator's
//! credentials (reading the dead-letter topics, writing the retry topics).
//!
//! The module's files: `args` (the command line), `error`, `reader` (the group-less reader that reads
//! a dead-letter topic to its end), `letter` (one dead letter and how `list` prints it), `list` and
//! `replay`.

use std::process::ExitCode;

use backbone::topic::validate_service_name;
use backbone::{Config, TopicSpec};

pub(crate) mod args;
pub(crate) mod error;
pub(crate) mod letter;
mod list;
pub(crate) mod reader;
pub(crate) mod replay;
#[cfg(test)]
mod tests;

use args::Connection;
pub(crate) use args::DlqCommand;
pub(crate) use error::DlqError;
use list::list;
use replay::replay;

/// The command's client id (and its SASL principal unless `KAFKA_SASL_USERNAME` says otherwise).
pub(crate) const CLIENT: &str = "backbone-cli";

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
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DlqError> + Send + 'static,
) -> Result<T, DlqError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| DlqError::Kafka { what: "reading dead letters".into(), reason: e.to_string() })?
}

/// The configuration from the environment, with `--bootstrap-servers` on top.
pub(super) fn config(connection: &Connection) -> Result<Config, DlqError> {
    let mut config = Config::from_env(CLIENT)?;
    if let Some(servers) = &connection.bootstrap_servers {
        config.bootstrap_servers.clone_from(servers);
    }
    Ok(config)
}

/// The dead-letter topic of `service` for events from `source`, named as
/// `backbone::consume::dead_letter_topic` names it (that takes a declared source; this, any name).
pub(crate) fn dead_letter_topic_name(service: &str, source: &str) -> Result<String, DlqError> {
    Ok(TopicSpec::private(service, format!("dlq.{source}")).partitions(1).build()?.name().to_owned())
}

/// The retry topic of `service` for events from `source`, named as `backbone::consume::retry_topic`
/// names it.
pub(super) fn retry_topic_name(service: &str, source: &str) -> Result<String, DlqError> {
    Ok(TopicSpec::private(service, format!("retry.{source}")).partitions(1).build()?.name().to_owned())
}

/// Where replays of `service`'s dead letters from `source` go: back to `source` when it is the
/// service's own private topic (`backbone::consume::replays_to_source`), else its retry topic.
pub(super) fn replay_target(service: &str, source: &str) -> Result<String, DlqError> {
    validate_service_name(service)?;
    let own_private = source.strip_prefix(service).and_then(|rest| rest.strip_prefix(".private."));
    match own_private {
        Some(name) if !name.is_empty() => Ok(source.to_owned()),
        _ => retry_topic_name(service, source),
    }
}

/// The prefix of every dead-letter topic of `service`.
pub(super) fn dead_letter_prefix(service: &str) -> Result<String, DlqError> {
    validate_service_name(service)?;
    Ok(format!("{service}.private.dlq."))
}
