//! The console's HTML: server-rendered with maud (escaped by default), readable without
//! JavaScript; the groups page's values update from the live stream when it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use backbone::headers::dead_letter as h;
use backbone_estate::manifest::Estate;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::collect::Snapshot;
use super::groups::{GroupState, is_group_of};
use super::letters::{self, Listed};
use super::metrics::{self, ServiceMetrics};
use super::schemas::{self, Version};
use super::topics::TopicState;
use crate::dlq::letter::Letter;
use crate::dlq::replay::{Chosen, Replayed};

/// The stylesheet.
pub(crate) const STYLE: &str = include_str!("assets/style.css");
/// The script: live updates of the groups page.
pub(crate) const SCRIPT: &str = include_str!("assets/console.js");

/// What every page's frame shows.
pub(crate) struct Page<'a> {
    pub(crate) title: &'a str,
    pub(crate) section: &'static str,
    pub(crate) allow_replay: bool,
    pub(crate) snapshot: &'a Snapshot,
}

const SECTIONS: [(&str, &str, &str); 5] = [
    ("estate", "/", "Estate"),
    ("topics", "/topics", "Topics"),
    ("groups", "/groups", "Groups"),
    ("dead-letters", "/dead-letters", "Dead letters"),
    ("schemas", "/schemas", "Schemas"),
];

/// The frame: navigation, mode, the snapshot's age.
pub(crate) fn layout(page: &Page<'_>, body: Markup) -> Markup {
    let s = page.snapshot;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (page.title) " · backbone console" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Sections" {
                        a.brand href="/" { "backbone console" }
                        ul {
                            @for (id, href, label) in SECTIONS {
                                li { a href=(href) aria-current=[(id == page.section).then_some("page")] { (label) } }
                            }
                        }
                    }
                    p.mode {
                        @if page.allow_replay { strong { "replay enabled" } } @else { "read-only" }
                    }
                }
                main #main {
                    @if let Some(e) = &s.error {
                        p.notice.bad role="alert" { "The cluster could not be read: " (e) }
                    }
                    (body)
                }
                footer {
                    (s.brokers.len()) " broker(s)"
                    @if let Some(at) = s.at { " · read at " (clock(at)) " in " (s.took.as_millis()) " ms" }
                    @else { " · not read yet" }
                }
            }
        }
    }
}

/// `HH:MM:SS` (UTC) of a moment.
fn clock(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02} UTC", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

/// A timestamp in ms since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest / 60 % 60, rest % 60)
}

fn seconds(s: Option<f64>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s < 10.0 => format!("{s:.1} s").replace(".0 s", " s"),
        Some(s) if s < 120.0 => format!("{s:.0} s"),
        Some(s) if s < 7200.0 => format!("{:.0} min", s / 60.0),
        Some(s) => format!("{:.1} h", s / 3600.0),
    }
}

/// A size in bytes, for people (binary units).
fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn visibility(topic: &str) -> Markup {
    match backbone::topic::parse_topic_name(topic) {
        Some((_, backbone::topic::Visibility::Public)) => html! { span.badge.public { "public" } },
        Some((_, _)) => html! { span.badge.private { "private" } },
        None => html! { span.muted { "–" } },
    }
}

/// The estate's consumer groups: `(service, topic, group, exactly once)`.
fn bindings(estate: &Estate) -> Vec<(&str, &str, &str, bool)> {
    estate
        .services()
        .flat_map(|s| {
            s.consumers().iter().map(move |c| (s.name(), c.topic.as_str(), c.group.as_str(), c.exactly_once))
        })
        .collect()
}

/// The service and binding a group belongs to (its own name, or `<group>.<instance>`).
fn binding_of<'a>(estate: &'a Estate, group: &str) -> Option<(&'a str, &'a str, bool)> {
    bindings(estate)
        .into_iter()
        .find_map(|(service, topic, g, eo)| is_group_of(group, g).then_some((service, topic, eo)))
}

/// The estate: counts, services with their topics, groups and instances, the topology.
pub(crate) fn estate(estate: &Estate, s: &Snapshot) -> Markup {
    let letters: i64 =
        s.topics.iter().filter(|t| letters::parts(&t.name).is_some()).map(TopicState::records).sum();
    let services: Vec<_> = estate.services().collect();
    html! {
        h1 { "Estate" }
        section.cards aria-label="Summary" {
            div.card { span.n { (services.len()) } span.l { "services" } }
            div.card { span.n { (estate.topics().len()) } span.l { "declared topics" } }
            div.card { span.n { (s.topics.len()) } span.l { "topics on the cluster" } }
            div.card { span.n { (s.groups.len()) } span.l { "consumer groups" } }
            div.card { span.n.(if letters > 0 { "warn" } else { "" }) { (letters) } span.l { "dead letters" } }
            div.card { span.n { (s.brokers.len()) } span.l { "brokers" } }
        }
        h2 #services { "Services" }
        div.scroll {
            table {
                thead { tr { th scope="col" { "Service" } th scope="col" { "Owns" } th scope="col" { "Reads" } th scope="col" { "Consumer groups" } th scope="col" { "Instances" } } }
                tbody {
                    @for service in &services {
                        @let groups: Vec<&GroupState> = s.groups.iter().filter(|g| binding_of(estate, &g.name).is_some_and(|(svc, _, _)| svc == service.name())).collect();
                        @let instances: BTreeSet<(String, String)> = groups.iter().flat_map(|g| &g.members).map(|m| (m.client_id.clone(), m.host.clone())).collect();
                        tr data-service=(service.name()) {
                            th scope="row" { (service.name()) (service_metrics(s.metrics.get(service.name()))) }
                            td { @for t in service.owned_topics() { div { code { (t.name()) } " " (visibility(t.name())) } } }
                            td { @for t in service.consumed_topics() { div { code { (t.name()) } } } }
                            td {
                                @for g in &groups {
                                    div { a href="/groups" { code { (g.name) } } " " span.muted { (g.state) ", " (g.members.len()) " member(s)" } }
                                }
                                @if groups.is_empty() { span.muted { "none live" } }
                            }
                            td {
                                @for (client, host) in &instances { div { code { (client) } " " span.muted { "@" (host) } } }
                                @if instances.is_empty() { span.muted { "none" } }
                            }
                        }
                    }
                }
            }
        }
        h2 #topology { "Topology" }
        p.muted { "Services write (blue) and read (green) topics; private topics are dashed." }
        figure.graph role="img" aria-label="The estate's topology: services, the topics they write and read" {
            (PreEscaped(svg_body(&backbone_estate::graph::svg(estate))))
        }
    }
}

/// A service's event counters, as its instances' `/metrics` report them.
fn service_metrics(found: Option<&ServiceMetrics>) -> Markup {
    html! {
        @match found {
            None => {},
            Some(m) => div.metrics aria-label="events, from the service's /metrics" {
                @for (family, label) in metrics::FAMILIES {
                    @if let Some(v) = m.totals.get(label) { div data-metric=(family) { (label) " " strong { (format!("{v:.0}")) } } }
                }
                div { (m.reached) " of " (m.asked) " instance(s) answered" }
                @if let Some(e) = &m.error { div.bad { (e) } }
            },
        }
    }
}

/// An SVG document without its XML declaration, to inline.
fn svg_body(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |at| &svg[at..])
}

/// Topics: ownership, partitions, replication, offsets, drift from the declaration.
pub(crate) fn topics(estate: &Estate, s: &Snapshot) -> Markup {
    let declared = estate.topics();
    let missing: Vec<&&str> = declared.keys().filter(|name| s.topic(name).is_none()).collect();
    html! {
        h1 { "Topics" }
        @if !missing.is_empty() && s.at.is_some() {
            p.notice.bad { "Declared but not on the cluster: " @for m in &missing { code { (m) } " " } }
        }
        div.scroll {
            table {
                thead { tr {
                    th scope="col" { "Topic" } th scope="col" { "Visibility" } th scope="col" { "Owner" }
                    th.num scope="col" { "Partitions" } th.num scope="col" { "Replicas" } th.num scope="col" { "In sync (min)" }
                    th.num scope="col" { "Records" } th.num scope="col" { "Size" } th.num.hide-narrow scope="col" { "End offsets" } th scope="col" { "Declaration" }
                } }
                tbody {
                    @for t in &s.topics {
                        @let spec = declared.get(t.name.as_str());
                        @let under = t.under_replicated();
                        tr data-topic=(t.name) {
                            th scope="row" {
                                details {
                                    summary { code { (t.name) } }
                                    table {
                                        thead { tr { th { "Partition" } th { "Leader" } th { "Replicas" } th { "In sync" } th.num { "First" } th.num { "End" } } }
                                        tbody { @for p in &t.partitions { tr {
                                            td { (p.id) } td { (p.leader) } td { (format!("{:?}", p.replicas)) } td { (format!("{:?}", p.isr)) }
                                            td.num { (p.low) } td.num { (p.high) }
                                        } } }
                                    }
                                }
                            }
                            td { (visibility(&t.name)) }
                            td { @match spec { Some(spec) => (spec.owner()), None => span.muted { "not declared" } } }
                            td.num { (t.partitions.len()) }
                            td.num { (t.replication()) }
                            td.num.(if under > 0 { "bad" } else { "" }) { (t.min_isr()) @if under > 0 { " (" (under) " under-replicated)" } }
                            td.num { (t.records()) }
                            td.num { (s.sizes.get(&t.name).map_or_else(|| "–".to_owned(), |b| bytes(*b))) }
                            td.num.hide-narrow { (t.partitions.iter().map(|p| p.high).sum::<i64>()) }
                            td {
                                @match (spec, s.drift.get(&t.name)) {
                                    (None, _) => span.muted { "–" },
                                    (Some(_), None) => span.muted { "not checked yet" },
                                    (Some(_), Some(d)) if d.is_empty() => span.ok { "✓ as declared" },
                                    (Some(_), Some(d)) => span.bad { strong { "drift: " } @for line in d { div { (line) } } },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The keys of the live values: one per group value and per partition value.
fn key(parts: &[&str]) -> String {
    parts.join("\u{1f}")
}

/// The sparkline points of a group's lag history (160 × 32).
fn spark_points(history: &[i64]) -> String {
    let max = history.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if history.len() > 1 { 158.0 / (history.len() - 1) as f64 } else { 0.0 };
    history
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", 1.0 + i as f64 * step, 31.0 - (*v as f64 / max) * 30.0))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every live value the groups page shows, by key.
fn live_cells(s: &Snapshot) -> BTreeMap<String, String> {
    let mut cells = BTreeMap::new();
    for g in &s.groups {
        cells.insert(key(&["lag", &g.name]), g.total_lag().to_string());
        cells.insert(key(&["age", &g.name]), seconds(g.max_seconds().or(Some(0.0))));
        cells.insert(key(&["state", &g.name]), g.state.clone());
        cells.insert(key(&["members", &g.name]), g.members.len().to_string());
        for l in &g.lags {
            let p = l.partition.to_string();
            cells.insert(key(&["lag", &g.name, &l.topic, &p]), l.lag.to_string());
            cells.insert(key(&["age", &g.name, &l.topic, &p]), seconds(l.seconds));
            let committed = if l.uncommitted { "none".to_owned() } else { l.committed.to_string() };
            cells.insert(key(&["committed", &g.name, &l.topic, &p]), committed);
            cells.insert(key(&["end", &g.name, &l.topic, &p]), l.end.to_string());
            let owner =
                g.owner_of(&l.topic, l.partition).map_or_else(|| "–".to_owned(), |m| m.client_id.clone());
            cells.insert(key(&["owner", &g.name, &l.topic, &p]), owner);
        }
    }
    cells
}

/// The live stream's event: every live value and sparkline, and when they were read.
pub(crate) fn live_json(s: &Snapshot) -> String {
    let sparks: BTreeMap<&String, String> = s.history.iter().map(|(g, h)| (g, spark_points(h))).collect();
    serde_json::json!({
        "at": s.at.map(clock).unwrap_or_default(),
        "cells": live_cells(s),
        "sparks": sparks,
    })
    .to_string()
}

/// Consumer groups: per group, its service, members, lag per partition, a sparkline; live.
pub(crate) fn groups(estate: &Estate, s: &Snapshot) -> Markup {
    let cells = live_cells(s);
    let cell = |k: String| {
        let text = cells.get(&k).cloned().unwrap_or_default();
        html! { span data-live=(k) { (text) } }
    };
    html! {
        h1 { "Consumer groups" }
        p.muted { span #live-status { "Values as read at " (s.at.map(clock).unwrap_or_default()) "; they update live when scripts run." } }
        @if s.groups.is_empty() { p { "No consumer groups yet." } }
        @for g in &s.groups {
            @let binding = binding_of(estate, &g.name);
            section.group data-group=(g.name) aria-labelledby=(format!("g-{}", g.name)) {
                header {
                    div {
                        h2 id=(format!("g-{}", g.name)) { code { (g.name) } }
                        span.muted {
                            @match binding {
                                Some((service, topic, eo)) => { (service) " reads " code { (topic) } @if eo { " · exactly once" } }
                                None => "not in the estate",
                            }
                            " · " (cell(key(&["state", &g.name]))) " · " (cell(key(&["members", &g.name]))) " member(s)"
                        }
                    }
                    div {
                        "lag " strong { (cell(key(&["lag", &g.name]))) } " records, oldest " strong { (cell(key(&["age", &g.name]))) } " "
                        svg.spark viewBox="0 0 160 32" role="img" aria-label=(format!("lag of {} over the last minutes", g.name)) {
                            polyline data-spark=(g.name) points=(spark_points(s.history.get(&g.name).map_or(&[][..], Vec::as_slice))) {}
                        }
                    }
                }
                @if !g.lags.is_empty() {
                    div.scroll {
                        table {
                            thead { tr { th scope="col" { "Topic" } th.num scope="col" { "Partition" } th scope="col" { "Member" } th.num.hide-narrow scope="col" { "Committed" } th.num.hide-narrow scope="col" { "End" } th.num scope="col" { "Lag" } th.num scope="col" { "Oldest unhandled" } } }
                            tbody {
                                @for l in &g.lags {
                                    @let p = l.partition.to_string();
                                    tr {
                                        td { code { (l.topic) } } td.num { (l.partition) }
                                        td { (cell(key(&["owner", &g.name, &l.topic, &p]))) }
                                        td.num.hide-narrow { (cell(key(&["committed", &g.name, &l.topic, &p]))) }
                                        td.num.hide-narrow { (cell(key(&["end", &g.name, &l.topic, &p]))) }
                                        td.num { (cell(key(&["lag", &g.name, &l.topic, &p]))) }
                                        td.num { (cell(key(&["age", &g.name, &l.topic, &p]))) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if !g.members.is_empty() {
                    details {
                        summary { "Members and assignments" }
                        ul { @for m in &g.members {
                            li { code { (m.client_id) } " @" (m.host) " · "
                                @for (t, ps) in &m.assignment { code { (t) } " " (format!("{ps:?}")) " " }
                                span.muted { " (" (m.id) ")" } }
                        } }
                    }
                }
            }
        }
    }
}

/// Dead letters: every dead-letter topic, by service and origin.
pub(crate) fn dead_letters(s: &Snapshot) -> Markup {
    let topics: Vec<(&str, &str, &TopicState)> =
        s.topics.iter().filter_map(|t| letters::parts(&t.name).map(|(svc, src)| (svc, src, t))).collect();
    html! {
        h1 { "Dead letters" }
        p.muted { "Events a handler could not handle, kept with their origin and error; replay sends them back to the handler that failed." }
        @if topics.is_empty() { p { "No dead-letter topics." } }
        @else {
            div.scroll { table {
                thead { tr { th scope="col" { "Service" } th scope="col" { "Origin topic" } th.num scope="col" { "Dead letters" } th scope="col" { "Topic" } } }
                tbody { @for (service, source, t) in &topics {
                    tr {
                        td { (service) } td { code { (source) } }
                        td.num.(if t.records() > 0 { "warn" } else { "" }) { (t.records()) }
                        td { a href=(format!("/dead-letters/{}", t.name)) { (t.name) } }
                    }
                } }
            } }
        }
    }
}

fn short(text: &str, width: usize) -> String {
    crate::dlq::letter::truncate(text, width)
}

fn replay_form(topic: &str, value: &str) -> Markup {
    html! {
        form.inline method="get" action=(format!("/replay/{topic}")) {
            label { "Offsets to replay (3,7,10-12 or all)" input name="offsets" value=(value) required pattern="all|[0-9, -]+"; }
            button type="submit" { "Replay…" }
        }
    }
}

/// One dead-letter topic: its latest dead letters.
pub(crate) fn dead_letter_topic(
    topic: &str,
    low: i64,
    high: i64,
    read: Result<Vec<Listed>, String>,
    allow_replay: bool,
) -> Markup {
    html! {
        h1 { "Dead letters in " code { (topic) } }
        p.muted { "Offsets " (low) " to " (high - 1) "; the latest " (letters::PAGE) " are listed, newest first." }
        @if allow_replay && high > low { (replay_form(topic, "all")) }
        @match read {
            Err(e) => p.notice.bad { "Could not read them: " (e) },
            Ok(list) if list.is_empty() => p { "None." },
            Ok(list) => div.scroll { table {
                thead { tr {
                    th.num scope="col" { "Offset" } th scope="col" { "Time" } th scope="col" { "Error" } th scope="col" { "Message" }
                    th scope="col" { "Handler" } th.num scope="col" { "Attempts" } th scope="col" { "Origin" } th.hide-narrow scope="col" { "Key" } th.num.hide-narrow scope="col" { "Bytes" }
                } }
                tbody { @for l in &list {
                    tr data-offset=(l.letter.offset) {
                        td.num { a href=(format!("/dead-letters/{topic}/{}", l.letter.offset)) { (l.letter.offset) } }
                        td { (l.timestamp.map(when).unwrap_or_default()) }
                        td { span.badge.bad { (l.kind()) } }
                        td { (short(&l.text(h::ERROR_MESSAGE), 160)) }
                        td { code { (l.letter.handler().unwrap_or_default()) } }
                        td.num { (l.text(h::ATTEMPTS)) }
                        td { code { (l.letter.origin()) } }
                        td.hide-narrow { code { (short(&l.letter.key_text().unwrap_or_default(), 40)) } }
                        td.num.hide-narrow { (l.size) }
                    }
                } }
            } },
        }
    }
}

/// One dead letter, whole: its headers and its payload, decoded.
pub(crate) fn dead_letter(
    letter: &Letter,
    timestamp: Option<i64>,
    decoded: Option<(String, String)>,
    allow_replay: bool,
) -> Markup {
    let header_text = |v: &Option<Vec<u8>>| {
        v.as_deref().map(|v| short(&String::from_utf8_lossy(v), 2000)).unwrap_or_else(|| "(null)".into())
    };
    html! {
        h1 { "Dead letter " code { (letter.location()) } }
        dl.kv {
            dt { "Error" } dd { span.badge.bad { (letter.text(h::ERROR_KIND).unwrap_or_default()) } " " (letter.text(h::ERROR_MESSAGE).unwrap_or_default()) }
            dt { "Handler" } dd { code { (letter.handler().unwrap_or_default()) } }
            dt { "Attempts" } dd { (letter.text(h::ATTEMPTS).unwrap_or_default()) }
            dt { "Origin" } dd { code { (letter.origin()) } }
            dt { "Dead-lettered" } dd { (timestamp.map(when).unwrap_or_default()) }
            dt { "Key" } dd { code { (letter.key_text().unwrap_or_else(|| "(none)".into())) } }
        }
        @if allow_replay {
            a.button href=(format!("/replay/{}?offsets={}", letter.topic, letter.offset)) { "Replay this one…" }
        }
        h2 { "Payload" }
        @match decoded {
            None => p.muted { "(no payload)" },
            Some((how, text)) => { p.muted { (how) } pre aria-label="payload" { (text) } },
        }
        h2 { "Headers" }
        div.scroll { table {
            thead { tr { th scope="col" { "Header" } th scope="col" { "Value" } } }
            tbody { @for (k, v) in &letter.headers { tr { td { code { (k) } } td { code { (header_text(v)) } } } } }
        } }
    }
}

/// The two steps of a replay.
pub(crate) enum Replay {
    /// What would be replayed (nothing written yet).
    Confirm(Result<Chosen, String>),
    /// What was: the target and the replays, or why it stopped.
    Done(Result<(String, Vec<Replayed>), String>),
}

/// The replay's confirmation or its result.
pub(crate) fn replay(topic: &str, offsets: &str, step: Replay, csrf: &str, nonce: &str) -> Markup {
    html! {
        h1 { "Replay dead letters from " code { (topic) } }
        @match step {
            Replay::Confirm(Err(e)) => { p.notice.bad role="alert" { "Refused: " (e) } (replay_form(topic, offsets)) },
            Replay::Confirm(Ok(chosen)) if chosen.letters.is_empty() => p { "No dead letters in " code { (chosen.dlq) } ": nothing to replay." },
            Replay::Confirm(Ok(chosen)) => {
                p { (chosen.letters.len()) " dead letter(s) will be written to " code { (chosen.target) } ", each to the handler that failed it:" }
                div.scroll { table {
                    thead { tr { th.num scope="col" { "Offset" } th scope="col" { "Handler" } th scope="col" { "Error" } th scope="col" { "Origin" } } }
                    tbody { @for l in &chosen.letters { tr {
                        td.num { (l.offset) } td { code { (l.handler().unwrap_or_default()) } }
                        td { (short(&l.text(h::ERROR_MESSAGE).unwrap_or_default(), 120)) } td { code { (l.origin()) } }
                    } } }
                } }
                form.inline method="post" action=(format!("/replay/{topic}")) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="nonce" value=(nonce);
                    input type="hidden" name="offsets" value=(offsets);
                    button type="submit" #confirm-replay { "Replay " (chosen.letters.len()) " dead letter(s)" }
                    a.button.secondary href=(format!("/dead-letters/{topic}")) { "Cancel" }
                }
            },
            Replay::Done(Err(e)) => p.notice.bad role="alert" { "The replay stopped: " (e) },
            Replay::Done(Ok((target, done))) => {
                p.notice.ok role="status" #replay-result { "Replayed " (done.len()) " dead letter(s) to " code { (target) } "." }
                ul { @for r in &done { li { code { (r.from) } " → " code { (r.to) } " for " code { (r.handler) } } } }
                p { a href=(format!("/dead-letters/{topic}")) { "Back to " (topic) } }
            },
        }
    }
}

/// Who uses a topic: its owner (writes) and its readers, from the estate.
fn users(estate: &Estate, topic: &str) -> Markup {
    let owner = estate.topics().get(topic).map(|t| t.owner().to_owned());
    let readers = estate.readers(topic);
    html! {
        @if let Some(owner) = owner { (owner) " writes" } @else { span.muted { "not in the estate" } }
        @if !readers.is_empty() { "; " (readers.join(", ")) " read" }
    }
}

/// Schemas: every event family, its topic versions, who uses them.
pub(crate) fn schema_families(
    estate: &Estate,
    found: Result<BTreeMap<String, Vec<(schemas::Named, String)>>, String>,
) -> Markup {
    html! {
        h1 { "Schemas" }
        @match found {
            Err(e) => p.notice.bad { "The registry could not be read: " (e) },
            Ok(families) if families.is_empty() => p { "No subjects registered." },
            Ok(families) => div.scroll { table {
                thead { tr { th scope="col" { "Event" } th scope="col" { "Subjects (topic versions)" } th scope="col" { "Used by" } } }
                tbody { @for (family, subjects) in &families {
                    tr data-family=(family) {
                        th scope="row" { a href=(format!("/schemas/{family}")) { code { (family) } } }
                        td { @for (n, subject) in subjects { div { code { (subject) } @if n.topic_version > 0 { " " span.badge { "v" (n.topic_version) } } } } }
                        td { @for (n, _) in subjects { div { (users(estate, &n.topic)) } } }
                    }
                } }
            } },
        }
    }
}

/// One event family: every version of its subjects, a diff between two.
pub(crate) fn schema_family(
    estate: &Estate,
    family: &str,
    versions: &[Version],
    rules: &BTreeMap<String, String>,
    a: Option<usize>,
    b: Option<usize>,
) -> Markup {
    let label = |v: &Version| format!("{}@{}", v.subject, v.version);
    let title = |v: &Version| {
        let n = schemas::named(&v.subject);
        if n.topic_version > 0 {
            format!("v{} (registered version {})", n.topic_version, v.version)
        } else {
            format!("version {}", v.version)
        }
    };
    html! {
        h1 { "Schemas of " code { (family) } }
        div.scroll { table {
            thead { tr { th scope="col" { "Subject" } th scope="col" { "Topic version" } th.num scope="col" { "Version" } th.num scope="col" { "Schema id" } th scope="col" { "Compatibility" } th scope="col" { "Used by" } } }
            tbody { @for v in versions {
                @let n = schemas::named(&v.subject);
                tr data-subject=(v.subject) data-version=(v.version) {
                    td { code { (v.subject) } } td { @if n.topic_version > 0 { "v" (n.topic_version) } }
                    td.num { (v.version) } td.num { (v.id) }
                    td { (rules.get(&v.subject).cloned().unwrap_or_default()) }
                    td { (users(estate, &n.topic)) }
                }
            } }
        } }
        h2 #diff { "Diff" }
        form.inline method="get" action=(format!("/schemas/{family}")) {
            label { "From" select name="a" { @for (i, v) in versions.iter().enumerate() { option value=(label(v)) selected[Some(i) == a] { (v.subject) " — " (title(v)) } } } }
            label { "To" select name="b" { @for (i, v) in versions.iter().enumerate() { option value=(label(v)) selected[Some(i) == b] { (v.subject) " — " (title(v)) } } } }
            button type="submit" { "Compare" }
        }
        @if let (Some(a), Some(b)) = (a.and_then(|i| versions.get(i)), b.and_then(|i| versions.get(i))) {
            p { "From " code { (label(a)) } " to " code { (label(b)) } ":" }
            pre.diff aria-label="schema diff" {
                @for (tag, line) in schemas::diff(&a.pretty(), &b.pretty()) {
                    @match tag {
                        '+' => span.add { "+ " (line) },
                        '-' => span.del { "- " (line) },
                        '…' => span.gap { "  …" },
                        _ => span.same { "  " (line) },
                    }
                }
            }
            details { summary { "The whole of " (label(b)) } pre { (b.pretty()) } }
        }
    }
}
