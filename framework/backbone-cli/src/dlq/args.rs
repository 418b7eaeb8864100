//! The command line of `backbone dlq`: its subcommands, their arguments and the parsers of those.

use std::collections::BTreeSet;

use clap::{ArgGroup, Args, Subcommand};

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
    /// not exist (the service predates retry topics). Dead letters of the service's own private
    /// topics go back to that topic instead (the service is its one writer; the consumer owning the
    /// key handles the replay in order with its live events). Dead letters stay in the dead-letter
    /// topic, so replaying one twice writes it twice.
    Replay(ReplayArgs),
}

/// Where the brokers are.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// Brokers, overriding `KAFKA_BOOTSTRAP_SERVERS`.
    #[arg(long, value_name = "HOST:PORT,…", value_parser = parse_bootstrap_servers)]
    pub(super) bootstrap_servers: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The service whose dead letters to list.
    #[arg(long, value_name = "NAME")]
    pub(super) service: String,
    /// Only the dead letters of events from this topic (default: every `<service>.private.dlq.*`).
    #[arg(long, value_name = "SOURCE_TOPIC")]
    pub(super) topic: Option<String>,
    /// One JSON object per line, with the full key and error message.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    pub(super) connection: Connection,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["offsets", "all"])))]
pub(crate) struct ReplayArgs {
    /// The service whose dead letters to replay.
    #[arg(long, value_name = "NAME")]
    pub(super) service: String,
    /// The topic the events came from: replays from `<service>.private.dlq.<SOURCE_TOPIC>` to
    /// `<service>.private.retry.<SOURCE_TOPIC>`.
    #[arg(long, value_name = "SOURCE_TOPIC")]
    pub(super) topic: String,
    /// The dead letters to replay, by offset in the dead-letter topic: `3,7,10-12`.
    #[arg(long, value_name = "LIST", value_parser = parse_offsets)]
    pub(super) offsets: Option<Offsets>,
    /// Replay every dead letter in the dead-letter topic.
    #[arg(long)]
    all: bool,
    /// Print what would be replayed; write nothing.
    #[arg(long)]
    pub(super) dry_run: bool,
    #[command(flatten)]
    pub(super) connection: Connection,
}

/// Dead-letter offsets chosen on the command line, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Offsets(pub(crate) BTreeSet<i64>);

fn parse_bootstrap_servers(value: &str) -> Result<String, String> {
    if value.trim().is_empty() || value.split(',').any(|s| !s.contains(':')) {
        return Err("expected a comma-separated list of host:port".into());
    }
    Ok(value.to_owned())
}

/// Parses `3,7,10-12`: offsets and inclusive ranges, comma-separated.
pub(crate) fn parse_offsets(value: &str) -> Result<Offsets, String> {
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
