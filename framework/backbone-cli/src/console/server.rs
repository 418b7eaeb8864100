//! The console's routes: pages rendered from the collector's snapshot, pages that read dead
//! letters and schemas when asked, the live stream of lag, and (with replay allowed) the replay
//! form, checked against a per-process CSRF token and the browser's fetch metadata.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use backbone::Config;
use backbone_estate::manifest::Estate;
use futures::Stream;
use maud::Markup;
use serde::Deserialize;
use tokio::sync::watch;

use super::collect::{self, Snapshot};
use super::letters;
use super::pages::{self, Page, Replay};
use super::schemas::{self, Schemas};
use crate::dlq::args::{Offsets, parse_offsets};
use crate::dlq::replay::{choose_letters, write};

/// The most bytes a request body may have (the replay form is a few hundred).
const BODY_LIMIT: usize = 16 * 1024;
/// How many submitted confirmations are remembered.
const SUBMITTED: usize = 1024;
/// The most time a page may take (the live stream is not bounded).
const PAGE_TIME: Duration = Duration::from_secs(60);

/// The console: what its pages read.
pub(crate) struct Console {
    pub(crate) config: Config,
    pub(crate) estate: Arc<Estate>,
    pub(crate) snapshot: watch::Receiver<Arc<Snapshot>>,
    pub(crate) allow_replay: bool,
    /// The token every state-changing form carries (random per process).
    pub(crate) csrf: String,
    /// The confirmations already submitted (the latest [`SUBMITTED`]), so that a form sent twice
    /// (a reload, a double click) replays once.
    submitted: std::sync::Mutex<std::collections::VecDeque<String>>,
    pub(crate) schemas: Option<Schemas>,
    /// Decodes dead letters' payloads by their schema id.
    pub(crate) registry: Option<backbone::schema::Registry>,
}

impl Console {
    /// A console over `estate` on the cluster of `config`, its collector reading every `refresh` (and
    /// the `metrics` endpoints, `(service, url)`).
    pub(crate) fn start(
        config: Config,
        estate: Estate,
        metrics: Vec<(String, String)>,
        refresh: Duration,
        allow_replay: bool,
    ) -> Self {
        let estate = Arc::new(estate);
        let snapshot = collect::start(config.clone(), estate.clone(), metrics, refresh);
        Self::with_snapshot(config, estate, snapshot, allow_replay)
    }

    /// A console whose snapshots come from `snapshot` (tests give it fixed ones).
    pub(crate) fn with_snapshot(
        config: Config,
        estate: Arc<Estate>,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        allow_replay: bool,
    ) -> Self {
        let schemas = Schemas::new(&config.schema_registry_url, &config.registry_security).ok();
        let registry = backbone::schema::Registry::for_config(&config).ok();
        let csrf = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let submitted = std::sync::Mutex::default();
        Self { config, estate, snapshot, allow_replay, csrf, submitted, schemas, registry }
    }

    fn now(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    fn page(&self, title: &str, section: &'static str, body: Markup) -> Response {
        let page = Page { title, section, allow_replay: self.allow_replay, snapshot: &self.now() };
        pages::layout(&page, body).into_response()
    }
}

type Shared = Arc<Console>;

/// The console's routes. Without replay allowed, no route changes anything.
pub(crate) fn router(console: Shared) -> Router {
    let mut pages = Router::new()
        .route("/", get(estate))
        .route("/topics", get(topics))
        .route("/groups", get(groups))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/{topic}", get(dead_letter_topic))
        .route("/dead-letters/{topic}/{offset}", get(dead_letter))
        .route("/schemas", get(schema_families))
        .route("/schemas/{family}", get(schema_family))
        .route("/healthz", get(|| async { "ok" }))
        .route("/assets/style.css", get(|| async { asset("text/css", pages::STYLE) }))
        .route("/assets/console.js", get(|| async { asset("text/javascript", pages::SCRIPT) }));
    if console.allow_replay {
        pages = pages.route("/replay/{topic}", get(replay_confirm).post(replay_do));
    }
    let pages = pages
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            PAGE_TIME,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT));
    pages
        .route("/groups/live", get(live))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::middleware::map_response(secure))
        .with_state(console)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

/// Headers on every answer: no framing (the replay button cannot be clickjacked), scripts and
/// styles from the console only, no referrer, no sniffing.
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn estate(State(c): State<Shared>) -> Response {
    let body = pages::estate(&c.estate, &c.now());
    c.page("Estate", "estate", body)
}

async fn topics(State(c): State<Shared>) -> Response {
    let body = pages::topics(&c.estate, &c.now());
    c.page("Topics", "topics", body)
}

async fn groups(State(c): State<Shared>) -> Response {
    let body = pages::groups(&c.estate, &c.now());
    c.page("Consumer groups", "groups", body)
}

/// Lag as it changes: one `lag` event per collector read, the values the groups page shows.
async fn live(State(c): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = c.snapshot.clone();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let snapshot = rx.borrow_and_update().clone();
        Some((Ok(Event::default().event("lag").data(pages::live_json(&snapshot))), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn dead_letters(State(c): State<Shared>) -> Response {
    let body = pages::dead_letters(&c.now());
    c.page("Dead letters", "dead-letters", body)
}

/// The dead-letter topic named `topic`, if it is one the cluster has: its first and end offsets.
fn dead_letter_offsets(c: &Console, topic: &str) -> Result<(i64, i64), (StatusCode, String)> {
    let not_found = |what: String| (StatusCode::NOT_FOUND, what);
    if letters::parts(topic).is_none() {
        return Err(not_found(format!(
            "{topic} is not a dead-letter topic (<service>.private.dlq.<source>)"
        )));
    }
    let snapshot = c.now();
    let found = snapshot.topic(topic).ok_or_else(|| not_found(format!("no topic {topic} on the cluster")))?;
    let p = found.partitions.first().ok_or_else(|| not_found(format!("{topic} has no partitions")))?;
    Ok((p.low, p.high))
}

async fn dead_letter_topic(State(c): State<Shared>, Path(topic): Path<String>) -> Response {
    let (low, high) = match dead_letter_offsets(&c, &topic) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    let (config, name) = (c.config.clone(), topic.clone());
    let read = tokio::task::spawn_blocking(move || letters::latest(&config, &name, low, high))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let body = pages::dead_letter_topic(&topic, low, high, read, c.allow_replay);
    c.page(&topic, "dead-letters", body)
}

async fn dead_letter(State(c): State<Shared>, Path((topic, offset)): Path<(String, i64)>) -> Response {
    let (low, high) = match dead_letter_offsets(&c, &topic) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    if !(low..high).contains(&offset) {
        return (StatusCode::NOT_FOUND, format!("{topic} holds offsets {low} to {}", high - 1))
            .into_response();
    }
    let (config, name) = (c.config.clone(), topic.clone());
    let read = tokio::task::spawn_blocking(move || letters::one(&config, &name, offset))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let letter = match read {
        Ok(Some(found)) => found,
        Ok(None) => return (StatusCode::NOT_FOUND, format!("no record at {topic}:{offset}")).into_response(),
        Err(e) => return (StatusCode::BAD_GATEWAY, e).into_response(),
    };
    let decoded = match &letter.0.payload {
        Some(payload) => Some(letters::decode(c.registry.as_ref(), payload).await),
        None => None,
    };
    let body = pages::dead_letter(&letter.0, letter.1, decoded, c.allow_replay);
    c.page(&format!("{topic}:{offset}"), "dead-letters", body)
}

/// The offsets a replay names: `all`, or a list like `3,7,10-12`.
fn chosen_offsets(value: &str) -> Result<Option<Offsets>, String> {
    match value.trim() {
        "all" => Ok(None),
        list => parse_offsets(list).map(Some),
    }
}

#[derive(Debug, Deserialize)]
struct ReplayQuery {
    offsets: String,
}

/// The confirmation step: what would be replayed, and where to; nothing is written.
async fn replay_confirm(
    State(c): State<Shared>,
    Path(topic): Path<String>,
    Query(query): Query<ReplayQuery>,
) -> Response {
    let Some((service, source)) = letters::parts(&topic) else {
        return (StatusCode::NOT_FOUND, "not a dead-letter topic").into_response();
    };
    let offsets = match chosen_offsets(&query.offsets) {
        Ok(offsets) => offsets,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("offsets: {e}")).into_response(),
    };
    let chosen = choose_letters(&c.config, service, source, offsets).await.map_err(|e| e.to_string());
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let body = pages::replay(&topic, &query.offsets, Replay::Confirm(chosen), &c.csrf, &nonce);
    c.page("Replay dead letters", "dead-letters", body)
}

#[derive(Debug, Deserialize)]
struct ReplayForm {
    csrf: String,
    /// This confirmation's own id: a second submission of it is refused.
    nonce: String,
    offsets: String,
}

/// Whether the request comes from the console's own pages: fetch metadata says same origin (or a
/// typed URL), or, from older browsers, `Origin` names this host.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin";
    }
    match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (Some(origin), Some(host)) => {
            let origin = origin.to_str().unwrap_or_default();
            let origin = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            host.to_str().is_ok_and(|host| host == origin)
        }
        _ => true,
    }
}

/// Constant-time equality of the submitted token and the console's.
fn token_matches(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The replay: the same choice as the confirmation, then the writes of `backbone dlq replay`.
async fn replay_do(
    State(c): State<Shared>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ReplayForm>,
) -> Response {
    if !same_origin(&headers) || !token_matches(&form.csrf, &c.csrf) {
        return (StatusCode::FORBIDDEN, "refused: the form did not come from this console (CSRF check)")
            .into_response();
    }
    {
        let mut submitted = c.submitted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if form.nonce.len() != 32 || submitted.contains(&form.nonce) {
            return (StatusCode::CONFLICT, "this replay was submitted already: nothing written again")
                .into_response();
        }
        if submitted.len() == SUBMITTED {
            submitted.pop_front();
        }
        submitted.push_back(form.nonce.clone());
    }
    let Some((service, source)) = letters::parts(&topic) else {
        return (StatusCode::NOT_FOUND, "not a dead-letter topic").into_response();
    };
    let offsets = match chosen_offsets(&form.offsets) {
        Ok(offsets) => offsets,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("offsets: {e}")).into_response(),
    };
    let result = match choose_letters(&c.config, service, source, offsets).await {
        Ok(chosen) => write(&c.config, &chosen).await.map(|done| (chosen.target, done)),
        Err(e) => Err(e),
    }
    .map_err(|e| e.to_string());
    let failed = result.is_err();
    let body = pages::replay(&topic, &form.offsets, Replay::Done(result), &c.csrf, "");
    let mut response = c.page("Replay dead letters", "dead-letters", body);
    if failed {
        *response.status_mut() = StatusCode::BAD_GATEWAY;
    }
    response
}

async fn schema_families(State(c): State<Shared>) -> Response {
    let found = match &c.schemas {
        Some(s) => s.families().await,
        None => Err("no schema registry configured (--registry or SCHEMA_REGISTRY_URL)".into()),
    };
    let body = pages::schema_families(&c.estate, found);
    c.page("Schemas", "schemas", body)
}

#[derive(Debug, Deserialize)]
struct DiffQuery {
    /// `subject@version` to diff from.
    a: Option<String>,
    /// `subject@version` to diff to.
    b: Option<String>,
}

async fn schema_family(
    State(c): State<Shared>,
    Path(family): Path<String>,
    Query(q): Query<DiffQuery>,
) -> Response {
    let Some(registry) = &c.schemas else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no schema registry configured").into_response();
    };
    let subjects = match registry.families().await {
        Ok(mut families) => families.remove(&family).unwrap_or_default(),
        Err(e) => return (StatusCode::BAD_GATEWAY, e).into_response(),
    };
    if subjects.is_empty() {
        return (StatusCode::NOT_FOUND, format!("no subjects for {family}")).into_response();
    }
    // Every version of every subject of the family, oldest topic version first.
    let mut versions: Vec<schemas::Version> = Vec::new();
    let mut rules: BTreeMap<String, String> = BTreeMap::new();
    for (_, subject) in &subjects {
        let numbers = match registry.versions(subject).await {
            Ok(n) => n,
            Err(e) => return (StatusCode::BAD_GATEWAY, e).into_response(),
        };
        for n in numbers.into_iter().rev().take(20).rev() {
            match registry.version(subject, n).await {
                Ok(Some(v)) => versions.push(v),
                Ok(None) => {}
                Err(e) => return (StatusCode::BAD_GATEWAY, e).into_response(),
            }
        }
        rules.insert(
            subject.clone(),
            registry.compatibility(subject).await.unwrap_or_else(|e| format!("unknown: {e}")),
        );
    }
    let pick = |key: &Option<String>, default: Option<usize>| {
        key.as_deref()
            .and_then(|k| versions.iter().position(|v| format!("{}@{}", v.subject, v.version) == k))
            .or(default)
    };
    let last = versions.len().checked_sub(1);
    let b = pick(&q.b, last);
    let a = pick(&q.a, last.and_then(|l| l.checked_sub(1)).or(last));
    let body = pages::schema_family(&c.estate, &family, &versions, &rules, a, b);
    c.page(&family, "schemas", body)
}
