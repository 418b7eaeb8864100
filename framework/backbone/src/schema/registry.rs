//! A client for a Confluent-compatible schema registry (Confluent, Apicurio's `ccompat` API,
//! Karapace), with the schemas it fetched cached by id: one request per schema id per process, never
//! one per message.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

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
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("url", &self.inner.base).finish_non_exhaustive()
    }
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
    /// A client for the Confluent-compatible API at `url` (Apicurio: `…/apis/ccompat/v7`).
    pub fn new(url: &str) -> Result<Self, SchemaError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SchemaError::Unreachable { url: url.to_owned(), reason: e.to_string() })?;
        let base = url.trim_end_matches('/').to_owned();
        Ok(Self {
            inner: Arc::new(Inner {
                by_id: schemas_of(&base),
                base,
                http,
                decoders: Decoders::default(),
                encoders: RwLock::new(HashMap::new()),
            }),
        })
    }

    /// The registry's base URL.
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

    /// The schema with `id`, fetched once and then served from the cache.
    pub async fn schema(&self, id: SchemaId) -> Result<&'static Schema, SchemaError> {
        if let Some(schema) = self.cached(id) {
            return Ok(schema);
        }
        let url = format!("{}/schemas/ids/{}", self.inner.base, id.0);
        let reply = self
            .inner
            .http
            .get(&url)
            .header("Accept", CONTENT_TYPE)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
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
            404 => Err(SchemaError::UnknownId(id)),
            status => Err(self.unexpected(status, reply).await),
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
            message: format!("unexpected reply from {}: {e}", self.inner.base),
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

    fn unreachable(&self, e: &reqwest::Error) -> SchemaError {
        SchemaError::Unreachable { url: self.inner.base.clone(), reason: e.to_string() }
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
    #[test]
    fn subjects_are_encoded_for_paths() {
        assert_eq!(
            super::encode("orders.public.order-created-v1-value"),
            "orders.public.order-created-v1-value"
        );
        assert_eq!(super::encode("a b/c"), "a%20b%2Fc");
    }
}
