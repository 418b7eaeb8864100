//! `backbone dlq list`: print a service's dead letters.

use std::process::ExitCode;

use backbone::Config;

use super::args::ListArgs;
use super::reader::{read_topic, reader, topics};
use super::{DlqError, dead_letter_prefix, dead_letter_topic_name};

pub(super) fn list(config: &Config, args: &ListArgs) -> Result<ExitCode, DlqError> {
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
