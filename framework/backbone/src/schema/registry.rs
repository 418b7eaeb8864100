//! A client for a Confluent-compatible schema registry (Confluent, Apicurio's `ccompat` API,
//! Karapace), with the schemas it fetched cached by id: one request per schema id per process, never
//! one per message.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use serde::Deserialize;

use super::codec::Decoders;
use super::{AvroEvent, Encoder, SchemaError, SchemaId, wire};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A schema registry client. Cheap to clone; clones share the cache, and so do all clients of the
/// same registry URL in a process (a schema id names one schema in a registry): a schema fetched
/// through one client (the consumer's schema layer, say) decodes through any other (the
/// exactly-once consumer's transactional publisher's).
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    http: reqwest::Client,
    /// Schemas by id, parsed once and kept for the life of the process (they are few); shared by
    /// the clients of one URL ([`schemas_of`]).
    by_id: SchemasById,
    decoders: Decoders,
    /// Encoders by (event type, subject): registered once, then reused.
    encoders: RwLock<HashMap<(TypeId, String), Arc<dyn Any + Send + Sync>>>,
    /// Schema ids the registry said it does not know, and when: asked again only after
    /// [`UNKNOWN_ID_TTL`], so a flood of records naming a bogus id costs one request per interval.
    unknown: Mutex<HashMap<SchemaId, Instant>>,
    /// The subjects each schema id is registered under, and when that was asked.
    subjects: Mutex<HashMap<SchemaId, Subjects>>,
    /// Schema ids refused for a topic, and when: the registry is asked again about that pair only
    /// after [`UNKNOWN_ID_TTL`].
    refused: Mutex<HashMap<(SchemaId, String), Instant>>,
    /// Whether the registry was found not to list an id's subjects (warned once).
    subjects_unsupported: std::sync::atomic::AtomicBool,
}

/// The subjects a schema id is registered under, and when the registry said so.
type Subjects = (Arc<[String]>, Instant);

/// How long an id the registry did not know is answered from memory as unknown (a schema registered
/// meanwhile is found after this at the latest), and how long an id refused for a topic stays
/// refused without asking the registry again.
pub const UNKNOWN_ID_TTL: Duration = Duration::from_secs(10);

/// The most ids remembered as unknown (and subject lists remembered): past it, expired entries are
/// dropped, then the oldest.
pub const UNKNOWN_ID_CAPACITY: usize = 1024;

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &crate::config::redact_url(&self.inner.base))
            .finish_non_exhaustive()
    }
}

/// Inserts `key` into a bounded map of timed entries: at [`UNKNOWN_ID_CAPACITY`], entries older than
/// [`UNKNOWN_ID_TTL`] are dropped first, then the oldest one.
fn insert_bounded<K: std::hash::Hash + Eq + Clone, V>(
    map: &mut HashMap<K, V>,
    key: K,
    value: V,
    at: impl Fn(&V) -> Instant,
) {
    if map.len() >= UNKNOWN_ID_CAPACITY && !map.contains_key(&key) {
        map.retain(|_, v| at(v).elapsed() < UNKNOWN_ID_TTL);
        if map.len() >= UNKNOWN_ID_CAPACITY
            && let Some(oldest) = map.iter().min_by_key(|(_, v)| at(v)).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
    }
    map.insert(key, value);
}

type SchemasById = Arc<RwLock<HashMap<SchemaId, &'static Schema>>>;

/// The schemas fetched from the registry at `base`, shared by its clients in this process. (Only
/// the cache is shared: an HTTP client belongs to the runtime it was first used on.)
fn schemas_of(base: &str) -> SchemasById {
    static BY_URL: OnceLock<Mutex<HashMap<String, SchemasById>>> = OnceLock::new();
    let mut by_url = BY_URL.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    by_url.entry(base.to_owned()).or_default().clone()
}

#[derive(Deserialize)]
struct IdReply {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaReply {
    schema: String,
}

#[derive(Deserialize)]
struct SubjectVersion {
    subject: String,
}

#[derive(Deserialize)]
struct ErrorReply {
    error_code: Option<i64>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct CompatibilityReply {
    is_compatible: bool,
    #[serde(default)]
    messages: Vec<String>,
}

impl Registry {
    /// A client for the Confluent-compatible API at `url` (Apicurio: `…/apis/ccompat/v7`; user info
    /// in it, `https://user:password@host/…`, is sent as basic authentication and printed as
    /// `user:***`). Also sets apache-avro's decoding allocation limit
    /// ([`super::limit_decoding_allocations`]).
    pub fn new(url: &str) -> Result<Self, SchemaError> {
        Self::with_security(url, &crate::config::RegistrySecurity::default())
    }

    /// A client for the registry of `config`: its URL, its basic authentication and CA
    /// ([`Config::registry_security`](crate::Config::registry_security)).
    pub fn for_config(config: &crate::Config) -> Result<Self, SchemaError> {
        Self::with_security(&config.schema_registry_url, &config.registry_security)
    }

    /// A client for the registry at `url` that sends `security`'s basic authentication on every
    /// request (unless the URL carries user info of its own) and trusts its CA.
    pub fn with_security(url: &str, security: &crate::config::RegistrySecurity) -> Result<Self, SchemaError> {
        super::limit_decoding_allocations();
        let unreachable = |reason: String| SchemaError::Unreachable {
            url: crate::config::redact_url(url).into_owned(),
            reason: crate::config::redact_url(&reason).into_owned(),
        };
        let builder = security
            .apply(reqwest::Client::builder().timeout(Duration::from_secs(10)))
            .map_err(|e| unreachable(e.to_string()))?;
        let http = builder.build().map_err(|e| unreachable(e.to_string()))?;
        let base = url.trim_end_matches('/').to_owned();
        Ok(Self {
            inner: Arc::new(Inner {
                by_id: schemas_of(&base),
                base,
                http,
                decoders: Decoders::default(),
                encoders: RwLock::new(HashMap::new()),
                unknown: Mutex::default(),
                subjects: Mutex::default(),
                refused: Mutex::default(),
                subjects_unsupported: Default::default(),
            }),
        })
    }

    /// The registry's base URL, as given (with its user info, if any: print
    /// [`redact_url`](crate::config::redact_url)`(url)` instead).
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    /// Registers `schema` under `subject` (or finds it there) and returns its id. A schema that
    /// breaks the subject's compatibility rule is refused with [`SchemaError::Incompatible`],
    /// carrying the registry's reason; nothing is registered.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<SchemaId, SchemaError> {
        // Ask first, so a refusal carries the registry's reasons (a refused registration says less).
        self.check(subject, schema).await?;
        let url = format!("{}/subjects/{}/versions", self.inner.base, encode(subject));
        let reply = self.post(&url, &serde_json::json!({ "schema": schema, "schemaType": "AVRO" })).await?;
        match reply.status().as_u16() {
            200 => Ok(SchemaId(self.json::<IdReply>(reply).await?.id)),
            409 => {
                let reason = self.error(reply).await.1;
                Err(SchemaError::Incompatible { subject: subject.to_owned(), reason })
            }
            422 => Err(SchemaError::InvalidSchema { reason: self.error(reply).await.1 }),
            status => Err(self.unexpected(status, reply).await),
        }
    }

    /// Whether `subject` has a version in the registry (`GET /subjects/{subject}/versions/latest`).
    pub async fn has_subject(&self, subject: &str) -> Result<bool, SchemaError> {
        let url = format!("{}/subjects/{}/versions/latest", self.inner.base, encode(subject));
        let reply = self.get(&url).await?;
        match reply.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(self.unexpected(status, reply).await),
        }
    }

    /// Checks `schema` against the latest version of `subject` under the subject's rule; a subject
    /// that does not exist yet accepts anything.
    pub async fn check(&self, subject: &str, schema: &str) -> Result<(), SchemaError> {
        let url = format!(
            "{}/compatibility/subjects/{}/versions/latest?verbose=true",
            self.inner.base,
            encode(subject)
        );
        let reply = self.post(&url, &serde_json::json!({ "schema": schema, "schemaType": "AVRO" })).await?;
        match reply.status().as_u16() {
            200 => {
                let verdict: CompatibilityReply = self.json(reply).await?;
                if verdict.is_compatible {
                    Ok(())
                } else {
                    let reason = if verdict.messages.is_empty() {
                        // Apicurio says no more than `false`: work the reason out from the latest version.
                        self.explain(subject, schema).await.unwrap_or_else(|| {
                            "incompatible with the latest version (the registry gave no details)".to_owned()
                        })
                    } else {
                        verdict.messages.join("; ")
                    };
                    Err(SchemaError::Incompatible { subject: subject.to_owned(), reason })
                }
            }
            404 => Ok(()),
            422 => Err(SchemaError::InvalidSchema { reason: self.error(reply).await.1 }),
            status => Err(self.unexpected(status, reply).await),
        }
    }

    /// Why `schema` breaks `subject`'s rule against its latest version, in words naming the field.
    async fn explain(&self, subject: &str, schema: &str) -> Option<String> {
        let get = |path: String| async move {
            let reply = self.inner.http.get(path).header("Accept", CONTENT_TYPE).send().await.ok()?;
            if !reply.status().is_success() {
                return None;
            }
            reply.json::<serde_json::Value>().await.ok()
        };
        let base = &self.inner.base;
        let latest = get(format!("{base}/subjects/{}/versions/latest", encode(subject))).await?;
        let latest = Schema::parse_str(latest.get("schema")?.as_str()?).ok()?;
        let config = match get(format!("{base}/config/{}?defaultToGlobal=true", encode(subject))).await {
            Some(config) => Some(config),
            None => get(format!("{base}/config")).await,
        };
        let rule = config
            .as_ref()
            .and_then(|c| c.get("compatibilityLevel").or_else(|| c.get("compatibility")))
            .and_then(serde_json::Value::as_str)
            .and_then(super::compat::Rule::parse)
            .unwrap_or(super::compat::Rule { kind: super::compat::RuleKind::Backward, transitive: false });
        let new = Schema::parse_str(schema).ok()?;
        let reasons = super::compat::incompatibilities(rule, &latest, &new);
        (!reasons.is_empty()).then(|| format!("{rule} against the latest version: {}", reasons.join("; ")))
    }

    /// The schema with `id`, fetched once and then served from the cache. An id the registry said it
    /// does not know is answered [`SchemaError::UnknownId`] from memory for [`UNKNOWN_ID_TTL`].
    pub async fn schema(&self, id: SchemaId) -> Result<&'static Schema, SchemaError> {
        if let Some(schema) = self.cached(id) {
            return Ok(schema);
        }
        if self.known_unknown(id) {
            return Err(SchemaError::UnknownId(id));
        }
        let url = format!("{}/schemas/ids/{}", self.inner.base, id.0);
        let reply = self.get(&url).await?;
        match reply.status().as_u16() {
            200 => {
                let text = self.json::<SchemaReply>(reply).await?.schema;
                let parsed = Schema::parse_str(&text)
                    .map_err(|e| SchemaError::InvalidSchema { reason: format!("schema {id}: {e}") })?;
                let mut by_id = self.inner.by_id.write().unwrap_or_else(PoisonError::into_inner);
                // Leaked on purpose: a process sees a handful of schema ids, and readers borrow them.
                let schema: &'static Schema = by_id.entry(id).or_insert_with(|| Box::leak(Box::new(parsed)));
                Ok(schema)
            }
            404 => {
                let mut unknown = self.inner.unknown.lock().unwrap_or_else(PoisonError::into_inner);
                insert_bounded(&mut unknown, id, Instant::now(), |at| *at);
                Err(SchemaError::UnknownId(id))
            }
            status => Err(self.unexpected(status, reply).await),
        }
    }

    /// Whether `id` was answered unknown less than [`UNKNOWN_ID_TTL`] ago.
    fn known_unknown(&self, id: SchemaId) -> bool {
        let unknown = self.inner.unknown.lock().unwrap_or_else(PoisonError::into_inner);
        unknown.get(&id).is_some_and(|at| at.elapsed() < UNKNOWN_ID_TTL)
    }

    /// The subjects schema `id` is registered under (`GET /schemas/ids/{id}/versions`), from memory
    /// unless `fresh`; `None` when the registry does not serve that request (it answers 404 or 405
    /// for an id whose schema it has just served).
    async fn subjects(&self, id: SchemaId, fresh: bool) -> Result<Option<Arc<[String]>>, SchemaError> {
        if !fresh {
            let known = self.inner.subjects.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((subjects, _)) = known.get(&id) {
                return Ok(Some(subjects.clone()));
            }
        }
        let url = format!("{}/schemas/ids/{}/versions", self.inner.base, id.0);
        let reply = self.get(&url).await?;
        let subjects: Arc<[String]> = match reply.status().as_u16() {
            200 => self.json::<Vec<SubjectVersion>>(reply).await?.into_iter().map(|v| v.subject).collect(),
            404 | 405 => return Ok(None),
            status => return Err(self.unexpected(status, reply).await),
        };
        let mut known = self.inner.subjects.lock().unwrap_or_else(PoisonError::into_inner);
        insert_bounded(&mut known, id, (subjects.clone(), Instant::now()), |(_, at)| *at);
        Ok(Some(subjects))
    }

    /// Checks that schema `id` is one `topic` may carry: registered under `<topic>-value`
    /// (TopicNameStrategy), or under its own record's full name (RecordNameStrategy, where the
    /// subject names the record rather than the topic). A record may name any id in the registry;
    /// one registered only under other subjects (another topic's contract) is refused with
    /// [`SchemaError::ForeignSchemaId`] instead of being decoded against the wrong contract.
    ///
    /// Fetches the schema if needed. Subject lists are remembered; one that lacks the topic's
    /// subject is asked again (the same schema may have been registered under that subject since:
    /// the registry then gives the same id), and a refusal is remembered for [`UNKNOWN_ID_TTL`] so a
    /// flood of such records asks once per interval. A registry that cannot list an id's subjects
    /// (answering 404 or 405 to `GET /schemas/ids/{id}/versions`, as some older registries do) is
    /// not checked against, with a warning once.
    pub async fn check_topic(&self, id: SchemaId, topic: &str) -> Result<(), SchemaError> {
        let schema = self.schema(id).await?;
        let value_subject = super::SubjectStrategy::TopicName.subject(topic, "");
        let record = super::full_name(schema);
        let fits = |subjects: &[String]| subjects.iter().any(|s| *s == value_subject || *s == record);
        let Some(subjects) = self.subjects(id, false).await? else {
            self.cannot_check_subjects();
            return Ok(());
        };
        if fits(&subjects) {
            return Ok(());
        }
        let key = (id, topic.to_owned());
        let refused_lately = {
            let refused = self.inner.refused.lock().unwrap_or_else(PoisonError::into_inner);
            refused.get(&key).is_some_and(|at| at.elapsed() < UNKNOWN_ID_TTL)
        };
        let subjects = if refused_lately {
            subjects
        } else if let Some(subjects) = self.subjects(id, true).await? {
            subjects
        } else {
            self.cannot_check_subjects();
            return Ok(());
        };
        if fits(&subjects) {
            return Ok(());
        }
        if !refused_lately {
            let mut refused = self.inner.refused.lock().unwrap_or_else(PoisonError::into_inner);
            insert_bounded(&mut refused, key, Instant::now(), |at| *at);
        }
        Err(SchemaError::ForeignSchemaId { id, topic: topic.to_owned(), subjects: subjects.to_vec() })
    }

    /// A registry that cannot say which subjects an id belongs to: the check is skipped, with a warning once per client.
    fn cannot_check_subjects(&self) {
        if !self.inner.subjects_unsupported.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                url = %crate::config::redact_url(&self.inner.base),
                "the schema registry does not serve GET /schemas/ids/{{id}}/versions: records' schema ids \
                 are not checked against their topic's subject"
            );
        }
    }

    /// Caches `schema` as the one with `id`, as if fetched (for tools and tests that know their
    /// schemas, and for the development registry). An id already cached keeps its schema.
    pub fn remember(&self, id: SchemaId, schema: &str) -> Result<&'static Schema, SchemaError> {
        if let Some(known) = self.cached(id) {
            return Ok(known);
        }
        let parsed = Schema::parse_str(schema)
            .map_err(|e| SchemaError::InvalidSchema { reason: format!("schema {id}: {e}") })?;
        let mut by_id = self.inner.by_id.write().unwrap_or_else(PoisonError::into_inner);
        Ok(*by_id.entry(id).or_insert_with(|| Box::leak(Box::new(parsed))))
    }

    /// The schema with `id` if it was fetched before (no request).
    pub fn cached(&self, id: SchemaId) -> Option<&'static Schema> {
        self.inner.by_id.read().unwrap_or_else(PoisonError::into_inner).get(&id).copied()
    }

    /// An encoder for `T` under `subject`: registers `T`'s schema there on first use (refused with
    /// [`SchemaError::Incompatible`] if it breaks the subject's rule), then serves it from a cache.
    pub async fn encoder<T: AvroEvent>(&self, subject: &str) -> Result<Arc<Encoder<T>>, SchemaError> {
        let key = (TypeId::of::<T>(), subject.to_owned());
        if let Some(found) = self.inner.encoders.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Ok(found.clone().downcast::<Encoder<T>>().expect("encoders are stored by their type"));
        }
        let id = self.register(subject, T::SCHEMA).await?;
        let encoder: Arc<dyn Any + Send + Sync> = Arc::new(Encoder::<T>::new(id)?);
        let stored = self
            .inner
            .encoders
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert(encoder)
            .clone();
        Ok(stored.downcast::<Encoder<T>>().expect("encoders are stored by their type"))
    }

    /// Fetches the writer's schema of a framed `payload` if it is not cached yet, so
    /// [`decode`](Self::decode) can run synchronously. Payloads that are not framed are left to
    /// `decode` to refuse.
    pub async fn prepare(&self, payload: &[u8]) -> Result<(), SchemaError> {
        if let Ok((id, _)) = wire::split(payload)
            && self.cached(id).is_none()
        {
            self.schema(id).await?;
        }
        Ok(())
    }

    /// The event type of a framed `payload`: the short name of its writer schema's record
    /// (`OrderCreated` for `com.example.OrderCreated`), from the schema cache that decoding fills
    /// (fetched once per schema id). `Ok(None)` when `payload` is not framed (a schemaless event:
    /// read its type with [`IncomingEvent::event_type`](crate::handler::IncomingEvent::event_type)).
    pub async fn event_type(&self, payload: &[u8]) -> Result<Option<String>, SchemaError> {
        let Ok((id, _)) = wire::split(payload) else {
            return Ok(None);
        };
        let schema = self.schema(id).await?;
        Ok(Some(super::short_name(&super::full_name(schema)).to_owned()))
    }

    /// Decodes a framed `payload` as a `T`, resolving the writer's schema (fetched earlier by
    /// [`prepare`](Self::prepare) or [`schema`](Self::schema)) against `T`'s.
    pub fn decode<T: AvroEvent>(&self, payload: &[u8]) -> Result<T, SchemaError> {
        let (id, body) = wire::split(payload)?;
        let writer = self.cached(id).ok_or(SchemaError::UnknownId(id))?;
        self.inner.decoders.decode::<T>(id, writer, body)
    }

    /// Sets `subject`'s compatibility rule (`BACKWARD`, `FORWARD`, `FULL`, `…_TRANSITIVE`, `NONE`).
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), SchemaError> {
        let url = format!("{}/config/{}", self.inner.base, encode(subject));
        let reply = self
            .inner
            .http
            .put(&url)
            .header("Content-Type", CONTENT_TYPE)
            .json(&serde_json::json!({ "compatibility": level }))
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        match reply.status().as_u16() {
            200 => Ok(()),
            status => Err(self.unexpected(status, reply).await),
        }
    }

    async fn post(&self, url: &str, body: &serde_json::Value) -> Result<reqwest::Response, SchemaError> {
        self.inner
            .http
            .post(url)
            .header("Content-Type", CONTENT_TYPE)
            .header("Accept", CONTENT_TYPE)
            .json(body)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, reply: reqwest::Response) -> Result<T, SchemaError> {
        reply.json().await.map_err(|e| SchemaError::Registry {
            status: 200,
            message: crate::config::redact_url(&format!("unexpected reply from {}: {e}", self.inner.base))
                .into_owned(),
        })
    }

    async fn error(&self, reply: reqwest::Response) -> (Option<i64>, String) {
        let text = reply.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorReply>(&text) {
            Ok(ErrorReply { error_code, message: Some(message) }) => (error_code, message),
            _ => (None, text),
        }
    }

    async fn unexpected(&self, status: u16, reply: reqwest::Response) -> SchemaError {
        SchemaError::Registry { status, message: self.error(reply).await.1 }
    }

    /// The registry could not be asked: its URL and the client's reason, both without passwords
    /// (the error reaches logs, health reasons and dead-letter headers).
    /// A GET of `url` with the registry's content type; unreachable if no answer comes.
    async fn get(&self, url: &str) -> Result<reqwest::Response, SchemaError> {
        self.inner.http.get(url).header("Accept", CONTENT_TYPE).send().await.map_err(|e| self.unreachable(&e))
    }

    fn unreachable(&self, e: &reqwest::Error) -> SchemaError {
        SchemaError::Unreachable {
            url: crate::config::redact_url(&self.inner.base).into_owned(),
            reason: crate::config::redact_url(&e.to_string()).into_owned(),
        }
    }
}

/// Percent-encodes a subject for a URL path (subjects hold dots, dashes and underscores; anything
/// else is encoded).
fn encode(subject: &str) -> String {
    subject
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_framed_payloads_type_is_its_schemas_record_name() {
        let registry = Registry::new("http://127.0.0.1:9").unwrap();
        let schema = r#"{"type":"record","name":"OrderCreated","namespace":"com.example","fields":[]}"#;
        registry.remember(SchemaId(7), schema).unwrap();
        let mut payload = Vec::new();
        wire::write_header(&mut payload, SchemaId(7));
        assert_eq!(registry.event_type(&payload).await.unwrap().as_deref(), Some("OrderCreated"));
        // Not framed: nothing to ask the registry.
        assert_eq!(registry.event_type(b"{}").await.unwrap(), None);
    }

    #[tokio::test]
    async fn item_8_unknown_ids_are_remembered_for_a_while() {
        let (url, mut heads) = recording().await;
        // Each request's head is handed over before it is answered: all are there once answered.
        let mut asked = move || std::iter::from_fn(|| heads.try_recv().ok()).count();
        let registry = Registry::new(&url).unwrap();
        // A flood of records naming one bogus id: one question to the registry, not one per record.
        for _ in 0..50 {
            assert!(matches!(
                registry.schema(SchemaId(4242)).await,
                Err(SchemaError::UnknownId(SchemaId(4242)))
            ));
        }
        assert_eq!(asked(), 1);
        // Another id is asked about on its own.
        let _ = registry.schema(SchemaId(4243)).await;
        assert_eq!(asked(), 1);
        // The memory is bounded: past its capacity, the oldest entries go.
        for id in 0..(UNKNOWN_ID_CAPACITY as u32 + 10) {
            let mut unknown = registry.inner.unknown.lock().unwrap();
            insert_bounded(&mut unknown, SchemaId(10_000 + id), Instant::now(), |at| *at);
        }
        assert_eq!(registry.inner.unknown.lock().unwrap().len(), UNKNOWN_ID_CAPACITY);
    }

    #[tokio::test]
    async fn item_7_registry_urls_and_errors_print_no_password() {
        // Nothing listens on port 1: the request fails, and the error quotes the URL.
        let registry = Registry::new("http://svc:registry-s3cret@127.0.0.1:1/apis/ccompat/v7").unwrap();
        let err = registry.schema(SchemaId(1)).await.unwrap_err();
        assert!(err.is_retriable(), "{err}");
        let printed = [format!("{registry:?}"), err.to_string(), format!("{err:?}")];
        for text in &printed {
            assert!(!text.contains("s3cret"), "a password in `{text}`");
        }
        assert!(printed[0].contains("http://svc:***@127.0.0.1:1/apis/ccompat/v7"), "{}", printed[0]);
        assert!(printed[1].contains("schema registry at http://svc:***@127.0.0.1:1/"), "{}", printed[1]);
    }

    /// A registry stand-in on a loopback port that answers every request 404 (`error_code` 40403,
    /// schema not found) and hands over each request's head before answering it.
    async fn recording() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/apis/ccompat/v7", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                let body = r#"{"error_code":40403,"message":"Schema not found"}"#;
                let reply = format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn basic_auth_from_the_configuration_is_sent_and_never_printed() {
        let (url, mut requests) = recording().await;
        let config = crate::Config::from_lookup("orders", |k| match k {
            "SCHEMA_REGISTRY_URL" => Some(url.clone()),
            "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO" => Some("orders:basic-s3cret".into()),
            _ => None,
        })
        .unwrap();
        let registry = Registry::for_config(&config).unwrap();
        let _ = registry.schema(SchemaId(7)).await;
        let head = requests.recv().await.unwrap();
        // `orders:basic-s3cret` in base64.
        assert!(head.contains("authorization: Basic b3JkZXJzOmJhc2ljLXMzY3JldA=="), "{head}");
        assert!(head.starts_with("GET /apis/ccompat/v7/schemas/ids/7"), "{head}");
        assert!(!format!("{registry:?} {config:?}").contains("s3cret"));
        // Without it, no header; with user info in the URL, that is sent.
        let _ = Registry::new(&url).unwrap().schema(SchemaId(8)).await;
        let head = requests.recv().await.unwrap();
        assert!(!head.to_ascii_lowercase().contains("authorization"), "{head}");
        let with_user = url.replace("http://", "http://svc:url-s3cret@");
        let _ =
            Registry::with_security(&with_user, &config.registry_security).unwrap().schema(SchemaId(9)).await;
        let head = requests.recv().await.unwrap();
        // `svc:url-s3cret` in base64: the URL's user info wins over the configured one.
        assert!(head.contains("authorization: Basic c3ZjOnVybC1zM2NyZXQ="), "{head}");
    }

    #[test]
    fn item_10_decoding_allocations_are_limited() {
        let _registry = Registry::new("http://127.0.0.1:1").unwrap();
        assert_eq!(apache_avro::util::max_allocation_bytes(usize::MAX), super::super::MAX_DECODE_ALLOCATION);
        // The bound admits a full record of one-byte array items (counted at their in-memory size).
        assert!(
            super::super::MAX_RECORD_BYTES * std::mem::size_of::<apache_avro::types::Value>()
                <= super::super::MAX_DECODE_ALLOCATION
        );
        // A body of a few bytes claiming a string of 100 MiB is refused before anything is allocated.
        let schema =
            Schema::parse_str(r#"{"type":"record","name":"R","fields":[{"name":"s","type":"string"}]}"#)
                .unwrap();
        let mut body = Vec::new();
        let len: i64 = 100 << 20;
        let mut zigzag = ((len << 1) ^ (len >> 63)) as u64;
        while zigzag >= 0x80 {
            body.push((zigzag as u8) | 0x80);
            zigzag >>= 7;
        }
        body.push(zigzag as u8);
        body.extend_from_slice(b"abc");
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema).build().unwrap();
        let err = reader.read_value(&mut &body[..]).unwrap_err().to_string();
        assert!(err.contains("maximum allowed"), "{err}");
    }

    #[test]
    fn subjects_are_encoded_for_paths() {
        assert_eq!(
            super::encode("orders.public.order-created-v1-value"),
            "orders.public.order-created-v1-value"
        );
        assert_eq!(super::encode("a b/c"), "a%20b%2Fc");
    }
}
