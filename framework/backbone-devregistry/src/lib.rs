//! # backbone-devregistry
//!
//! An embedded **development** schema registry: the part of the Confluent Schema Registry REST API
//! that backbone uses ([`backbone::schema::Registry`], `backbone schemas check --registry`), served on
//! a loopback port from memory, so a demo or a test needs no JVM:
//!
//! ```no_run
//! let registry = backbone_devregistry::DevRegistry::start()?; // 127.0.0.1, an ephemeral port
//! let mut config = backbone::Config::default();
//! config.schema_registry_url = registry.url().to_owned(); // http://127.0.0.1:<port>/apis/ccompat/v7
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! It serves under [`BASE_PATH`] (`/apis/ccompat/v7`, where Apicurio Registry serves the same API), so
//! the URL has the shape `SCHEMA_REGISTRY_URL` has against Apicurio.
//!
//! ## What it does
//!
//! | endpoint | answer |
//! |---|---|
//! | `POST /subjects/{s}/versions` | registers a schema: the same schema again answers the same id and adds no version; a schema that breaks the subject's rule is refused with 409 (`error_code` 409), an invalid one with 422 (42201) |
//! | `POST /subjects/{s}` | the version of a schema already under the subject; 40401 / 40403 |
//! | `GET /subjects`, `GET /subjects/{s}/versions` | subjects; a subject's versions (40401 when unknown) |
//! | `GET /subjects/{s}/versions/{v}` | `v` a number, `latest` or `-1`: subject, version, id, schema (40401, 40402, 42202) |
//! | `GET /schemas/ids/{id}` | the schema text (40403 when unknown) |
//! | `GET /schemas/ids/{id}/versions` | every subject and version the schema is registered under (40403 when unknown) |
//! | `POST /compatibility/subjects/{s}/versions/{v}` | `is_compatible` against that one version (`latest` included, even under a transitive rule), with the reasons in `messages` when `?verbose=true` |
//! | `POST /compatibility/subjects/{s}/versions` | what registering would decide: against the latest version, or every one under a transitive rule |
//! | `GET`/`PUT /config`, `GET`/`PUT`/`DELETE /config/{s}` | compatibility levels, global (default `BACKWARD`) and per subject; `?defaultToGlobal=true`; 40408 for a subject without a level, 42203 for an unknown level |
//!
//! Compatibility is backbone's own checker ([`backbone::schema::compat`], on apache-avro's schema
//! resolution): `BACKWARD`, `FORWARD`, `FULL`, their `_TRANSITIVE` forms (every earlier version,
//! not only the latest) and `NONE`, the same verdicts `backbone schemas check` gives offline.
//! Ids are global: one id per distinct schema, shared by every subject that holds it, as in
//! Confluent's and Apicurio's registries. Schemas are compared as JSON, so whitespace and key order
//! do not matter (as in Confluent's; Apicurio compares the text and gives a reformatted schema a new
//! id: backbone registers the same text every time, so it relies on neither).
//!
//! ## What it does not do (compared with a real registry)
//!
//! - **Memory only**: everything is gone when the [`DevRegistry`] is dropped or the process ends. Ids
//!   start at 1 in every run, so data written to a durable Kafka with one run's ids means nothing to
//!   the next run's registry. Pair it with an in-memory Kafka (`backbone::dev::MockKafka`).
//! - **Avro only**, and no schema **references**: `schemaType` other than `AVRO`, or `references`,
//!   are refused with 42201.
//! - No deletes of subjects or versions, no modes (`READONLY`, `IMPORT`), no contexts, no
//!   `normalize`, no authentication, no TLS, no clustering: one process, loopback only.
//! - An unknown subject's compatibility check answers `is_compatible: true` (as Apicurio does;
//!   Confluent answers 40401). backbone's client accepts both: a new subject takes any schema.
//! - Where Confluent and Apicurio answer differently and backbone relies on neither, it answers as
//!   Confluent: `GET /config/{unknown subject}?defaultToGlobal=true` gives the global level (Apicurio:
//!   40401), a malformed version such as `abc` is 422 with 42202 (Apicurio: 404 with 40402), and a
//!   subject without a level of its own is 40408 without `defaultToGlobal` (Apicurio: the global level),
//!   and `POST /compatibility/subjects/{s}/versions` follows the subject's rule (Apicurio compares with
//!   every version whatever the rule).
//! - Verdicts come from apache-avro's resolution rules rather than the Java Avro library, so exotic
//!   cases (logical types, aliases on nested names) may be judged differently from a real registry.
//!   The contract tests (`tests/contract.rs`) run one set of checks against this registry and against
//!   Apicurio Registry, so what backbone relies on behaves the same in both.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use apache_avro::Schema;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use backbone::schema::compat::{Rule, RuleKind, incompatibilities};
use serde::Deserialize;
use serde_json::{Value, json};

/// The path the API is served under (Apicurio Registry's Confluent-compatible API lives there too).
pub const BASE_PATH: &str = "/apis/ccompat/v7";

/// The content type of the Confluent Schema Registry API.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A running development registry. It serves on its own thread (with its own single-threaded
/// runtime), so it works from sync code, from any async runtime, and outlives the test or task that
/// started it; dropping it stops the server.
#[derive(Debug)]
pub struct DevRegistry {
    url: String,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DevRegistry {
    /// Starts an empty registry on an ephemeral loopback port (`127.0.0.1:0`).
    pub fn start() -> std::io::Result<Self> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts an empty registry on `addr` (port 0: an ephemeral one). It accepts connections as soon
    /// as this returns.
    pub fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router();
        let thread = std::thread::Builder::new().name("backbone-devregistry".into()).spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => {
                        tracing::error!(error = %e, "development registry: cannot listen");
                        return;
                    }
                };
                // Stopping drops the runtime, and with it every open connection: no graceful drain,
                // as clients keep idle keep-alive connections open.
                tokio::select! {
                    served = axum::serve(listener, app) => {
                        if let Err(e) = served {
                            tracing::error!(error = %e, "development registry stopped");
                        }
                    }
                    _ = stopped => {}
                }
            });
        })?;
        let url = format!("http://{addr}{BASE_PATH}");
        tracing::info!(%url, "development schema registry listening");
        Ok(Self { url, addr, stop: Some(stop), thread: Some(thread) })
    }

    /// The Confluent-compatible base URL, `http://127.0.0.1:<port>/apis/ccompat/v7`: what
    /// `SCHEMA_REGISTRY_URL` (and [`backbone::Config::schema_registry_url`]) should hold.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DevRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The API as an axum router over a fresh, empty store, with every route under [`BASE_PATH`]: for
/// serving it from an HTTP server of your own instead of [`DevRegistry`].
pub fn router() -> Router {
    let api = Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/compatibility/subjects/{subject}/versions", post(compatible_with_all))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(compatible_with))
        .route("/config", get(global_config).put(set_global_config))
        .route("/config/{subject}", get(subject_config).put(set_subject_config).delete(delete_subject_config))
        .with_state(Registry::default());
    Router::new().nest(BASE_PATH, api).fallback(not_found)
}

/// Anything else: 404 in the registry's error shape.
async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, 404, format!("HTTP 404 Not Found: {uri}"))
}

/// The shared in-memory store.
#[derive(Clone, Default)]
struct Registry(Arc<Mutex<Store>>);

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Everything the registry knows.
#[derive(Default)]
struct Store {
    /// Schemas by id - 1: the text as first registered, and its parsed form.
    schemas: Vec<Stored>,
    /// Ids by the schema's normalized JSON.
    ids: HashMap<String, u32>,
    /// Each subject's versions, in order: version `n` is the schema id at index `n - 1`.
    subjects: BTreeMap<String, Vec<u32>>,
    /// The global level; `None` is the default, `BACKWARD`.
    global: Option<Rule>,
    /// Per-subject levels.
    levels: HashMap<String, Rule>,
}

struct Stored {
    text: String,
    schema: Schema,
}

const DEFAULT_RULE: Rule = Rule { kind: RuleKind::Backward, transitive: false };

impl Store {
    fn global(&self) -> Rule {
        self.global.unwrap_or(DEFAULT_RULE)
    }

    fn rule(&self, subject: &str) -> Rule {
        self.levels.get(subject).copied().unwrap_or_else(|| self.global())
    }

    fn versions(&self, subject: &str) -> Result<&Vec<u32>, ApiError> {
        self.subjects
            .get(subject)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::subject_not_found(subject))
    }

    /// The id a path names, if a schema has it (40403 otherwise).
    fn known_id(&self, id: &str) -> Result<u32, ApiError> {
        let not_found = || ApiError::new(StatusCode::NOT_FOUND, 40403, format!("Schema {id} not found"));
        let id = id.parse::<u32>().map_err(|_| not_found())?;
        if id == 0 || usize::try_from(id).unwrap_or(usize::MAX) > self.schemas.len() {
            return Err(not_found());
        }
        Ok(id)
    }

    fn stored(&self, id: u32) -> &Stored {
        &self.schemas[usize::try_from(id).unwrap_or(usize::MAX) - 1]
    }

    /// Why `new` breaks `subject`'s rule against `against` (version numbers), in words.
    fn reasons(&self, subject: &str, against: &[usize], new: &Schema) -> Vec<String> {
        let rule = self.rule(subject);
        let Ok(versions) = self.versions(subject) else { return Vec::new() };
        against
            .iter()
            .flat_map(|&version| {
                let old = &self.stored(versions[version - 1]).schema;
                incompatibilities(rule, old, new)
                    .into_iter()
                    .map(move |reason| format!("{rule} against version {version}: {reason}"))
            })
            .collect()
    }

    /// The versions a new schema is checked against under the subject's rule: the latest, or every
    /// one for a transitive rule (latest first).
    fn checked_versions(&self, subject: &str) -> Vec<usize> {
        let count = self.subjects.get(subject).map_or(0, Vec::len);
        if count == 0 {
            return Vec::new();
        }
        if self.rule(subject).transitive { (1..=count).rev().collect() } else { vec![count] }
    }
}

/// A registry error, as Confluent's API answers it: `{"error_code": …, "message": …}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    fn subject_not_found(subject: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40401, format!("Subject '{subject}' not found."))
    }

    fn invalid_schema(reason: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, 42201, format!("Invalid schema: {reason}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        reply(self.status, &json!({ "error_code": self.code, "message": self.message }))
    }
}

/// A JSON answer with the registry's content type.
fn reply(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

fn ok(body: &Value) -> Response {
    reply(StatusCode::OK, body)
}

/// A schema in a request body (`POST …/versions`, compatibility checks, lookups).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

/// The schema a request carries, parsed and checked: `(text, parsed, normalized JSON)`.
fn parse_request(body: &Bytes) -> Result<(String, Schema, String), ApiError> {
    let request: SchemaRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, 422, format!("Unrecognized request body: {e}"))
    })?;
    if let Some(kind) = request.schema_type.as_deref().filter(|k| *k != "AVRO") {
        return Err(ApiError::invalid_schema(format!(
            "schemaType {kind} is not supported by the development registry (AVRO only)"
        )));
    }
    if !request.references.is_empty() {
        return Err(ApiError::invalid_schema(
            "schema references are not supported by the development registry",
        ));
    }
    let schema = Schema::parse_str(&request.schema).map_err(ApiError::invalid_schema)?;
    let normalized =
        serde_json::from_str::<Value>(&request.schema).map_err(ApiError::invalid_schema)?.to_string();
    Ok((request.schema, schema, normalized))
}

/// A version in a path: a number from 1, `latest` or `-1`. Resolved against `count` versions.
fn parse_version(subject: &str, version: &str, count: usize) -> Result<usize, ApiError> {
    let number = match version {
        "latest" | "-1" => return Ok(count),
        v => v.parse::<i32>().ok().filter(|n| *n > 0),
    };
    let Some(number) = number else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
            format!(
                "The specified version '{version}' is not a valid version id. Allowed values are between \
                 [1, 2^31-1] and the string \"latest\""
            ),
        ));
    };
    let number = usize::try_from(number).unwrap_or(usize::MAX);
    if number > count {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            40402,
            format!("Version {version} not found for subject '{subject}'."),
        ));
    }
    Ok(number)
}

fn version_body(store: &Store, subject: &str, version: usize) -> Value {
    let id = store.subjects[subject][version - 1];
    json!({ "subject": subject, "version": version, "id": id, "schema": store.stored(id).text })
}

/// `GET /subjects`
async fn subjects(State(registry): State<Registry>) -> Response {
    let store = registry.lock();
    let names: Vec<&String> = store.subjects.iter().filter(|(_, v)| !v.is_empty()).map(|(s, _)| s).collect();
    ok(&json!(names))
}

/// `GET /subjects/{subject}/versions`
async fn versions(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
) -> Result<Response, ApiError> {
    let store = registry.lock();
    let count = store.versions(&subject)?.len();
    Ok(ok(&json!((1..=count).collect::<Vec<_>>())))
}

/// `GET /subjects/{subject}/versions/{version}`
async fn version(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let store = registry.lock();
    let count = store.versions(&subject)?.len();
    let version = parse_version(&subject, &version, count)?;
    Ok(ok(&version_body(&store, &subject, version)))
}

/// `POST /subjects/{subject}/versions`: register (or find) a schema under a subject.
async fn register(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (text, schema, normalized) = parse_request(&body)?;
    let mut store = registry.lock();
    let known = store.ids.get(&normalized).copied();
    let versions = store.subjects.get(&subject).map_or(&[][..], Vec::as_slice);
    if let Some(id) = known.filter(|id| versions.contains(id)) {
        return Ok(ok(&json!({ "id": id })));
    }
    let reasons = store.reasons(&subject, &store.checked_versions(&subject), &schema);
    if !reasons.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", \
                 details: [{}]",
                reasons.join("; ")
            ),
        ));
    }
    let id = match known {
        Some(id) => id,
        None => {
            store.schemas.push(Stored { text, schema });
            let id = u32::try_from(store.schemas.len()).unwrap_or(u32::MAX);
            store.ids.insert(normalized, id);
            id
        }
    };
    store.subjects.entry(subject.clone()).or_default().push(id);
    tracing::debug!(%subject, id, "development registry: schema registered");
    Ok(ok(&json!({ "id": id })))
}

/// `POST /subjects/{subject}`: the version under which a schema is registered in a subject.
async fn lookup(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (_, _, normalized) = parse_request(&body)?;
    let store = registry.lock();
    let versions = store.versions(&subject)?;
    let found = store.ids.get(&normalized).and_then(|id| versions.iter().position(|v| v == id));
    match found {
        Some(index) => Ok(ok(&version_body(&store, &subject, index + 1))),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, 40403, "Schema not found")),
    }
}

/// `GET /schemas/ids/{id}`
async fn schema_by_id(
    State(registry): State<Registry>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = registry.lock();
    let id = store.known_id(&id)?;
    Ok(ok(&json!({ "schema": store.stored(id).text })))
}

/// `GET /schemas/ids/{id}/versions`: the subjects (and versions) schema `id` is registered under,
/// which a consumer uses to refuse a record naming another topic's contract.
async fn versions_of_id(
    State(registry): State<Registry>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = registry.lock();
    let id = store.known_id(&id)?;
    let found: Vec<Value> = store
        .subjects
        .iter()
        .flat_map(|(subject, ids)| {
            ids.iter()
                .enumerate()
                .filter(move |(_, v)| **v == id)
                .map(move |(index, _)| json!({ "subject": subject, "version": index + 1 }))
        })
        .collect();
    Ok(ok(&json!(found)))
}

/// Query of the compatibility endpoints.
#[derive(Deserialize)]
struct Verbose {
    #[serde(default)]
    verbose: bool,
}

fn verdict(reasons: Vec<String>, verbose: bool) -> Response {
    if verbose && !reasons.is_empty() {
        ok(&json!({ "is_compatible": false, "messages": reasons }))
    } else {
        ok(&json!({ "is_compatible": reasons.is_empty() }))
    }
}

/// `POST /compatibility/subjects/{subject}/versions/{version}`: is this schema compatible with that
/// one version (`latest` included) under the subject's rule? Even a transitive rule is checked against
/// that version alone, as Confluent's and Apicurio's registries do; `…/versions` asks what registering
/// would.
async fn compatible_with(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(query): Query<Verbose>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (_, schema, _) = parse_request(&body)?;
    let store = registry.lock();
    let count = store.subjects.get(&subject).map_or(0, Vec::len);
    if count == 0 {
        // As Apicurio answers (Confluent: 40401); backbone's client takes either as "accepted".
        return Ok(verdict(Vec::new(), query.verbose));
    }
    let against = parse_version(&subject, &version, count)?;
    Ok(verdict(store.reasons(&subject, &[against], &schema), query.verbose))
}

/// `POST /compatibility/subjects/{subject}/versions`: would registering accept this schema? Against
/// the latest version, or every one under a transitive rule.
async fn compatible_with_all(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(query): Query<Verbose>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (_, schema, _) = parse_request(&body)?;
    let store = registry.lock();
    Ok(verdict(store.reasons(&subject, &store.checked_versions(&subject), &schema), query.verbose))
}

/// A compatibility level in a `PUT /config` body.
#[derive(Deserialize)]
struct LevelRequest {
    compatibility: String,
}

fn parse_level(body: &Bytes) -> Result<Rule, ApiError> {
    let request: LevelRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, 42203, format!("Invalid compatibility level: {e}"))
    })?;
    Rule::parse(&request.compatibility.to_uppercase()).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            format!("Invalid compatibility level {}: expected {}", request.compatibility, Rule::NAMES),
        )
    })
}

/// `GET /config`
async fn global_config(State(registry): State<Registry>) -> Response {
    ok(&json!({ "compatibilityLevel": registry.lock().global().to_string() }))
}

/// `PUT /config`
async fn set_global_config(State(registry): State<Registry>, body: Bytes) -> Result<Response, ApiError> {
    let rule = parse_level(&body)?;
    registry.lock().global = Some(rule);
    Ok(ok(&json!({ "compatibility": rule.to_string() })))
}

/// Query of `GET /config/{subject}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigQuery {
    #[serde(default)]
    default_to_global: bool,
}

/// `GET /config/{subject}`: the subject's level; without one, 40408 unless `?defaultToGlobal=true`.
async fn subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(query): Query<ConfigQuery>,
) -> Result<Response, ApiError> {
    let store = registry.lock();
    match store.levels.get(&subject) {
        Some(rule) => Ok(ok(&json!({ "compatibilityLevel": rule.to_string() }))),
        None if query.default_to_global => {
            Ok(ok(&json!({ "compatibilityLevel": store.global().to_string() })))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        )),
    }
}

/// `PUT /config/{subject}`
async fn set_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let rule = parse_level(&body)?;
    registry.lock().levels.insert(subject, rule);
    Ok(ok(&json!({ "compatibility": rule.to_string() })))
}

/// `DELETE /config/{subject}`: back to the global level; answers the level removed.
async fn delete_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
) -> Result<Response, ApiError> {
    match registry.lock().levels.remove(&subject) {
        Some(rule) => Ok(ok(&json!({ "compatibilityLevel": rule.to_string() }))),
        None => Err(ApiError::subject_not_found(&subject)),
    }
}
