//! The registry contract: ONE set of checks, run against the real thing (Apicurio Registry's
//! Confluent-compatible API, from the test kit) and against the development registry, so the demo
//! teaches no behaviour the real registry lacks. Each contract below becomes two tests,
//! `<contract>::apicurio` and `<contract>::development`.
//!
//! The checks speak HTTP as backbone's client and `backbone schemas check` do. Where Apicurio and
//! Confluent's registry differ, a check accepts both and says what backbone relies on.
//!
//! Subjects are unique per test, and no test changes the global level (the shared Apicurio serves
//! every test in this binary).

use std::sync::OnceLock;

use apache_avro::Schema;
use backbone::schema::{AvroEvent, Registry, SchemaError, SchemaId};
use backbone_devregistry::DevRegistry;
use backbone_testkit::{shared_registry, unique};
use serde_json::{Value, json};

/// One registry under test: its base URL, and the development registry kept alive while in use.
struct Target {
    url: String,
    /// One client per test: each test has its own runtime, which a pooled connection must not outlive.
    http: reqwest::Client,
    _dev: Option<DevRegistry>,
}

impl Target {
    fn apicurio() -> Self {
        Self { url: shared_registry().url().to_owned(), http: reqwest::Client::new(), _dev: None }
    }

    fn development() -> Self {
        let dev = DevRegistry::start().expect("development registry");
        Self { url: dev.url().to_owned(), http: reqwest::Client::new(), _dev: Some(dev) }
    }

    /// `method path` with an optional JSON body: the status and the JSON answer (`null` if none).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request =
            self.http.request(method, &url).header("Accept", "application/vnd.schemaregistry.v1+json");
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string());
        }
        let reply = request.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = reply.status().as_u16();
        let text = reply.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn register(&self, subject: &str, schema: &str) -> (u16, Value) {
        self.call("POST", &format!("/subjects/{subject}/versions"), Some(avro(schema))).await
    }

    /// Registers and returns the id; panics with the answer if refused.
    async fn registered(&self, subject: &str, schema: &str) -> u32 {
        let (status, answer) = self.register(subject, schema).await;
        assert_eq!(status, 200, "registering under {subject}: {answer}");
        id_of(&answer)
    }

    async fn check(&self, subject: &str, schema: &str) -> (u16, Value) {
        let path = format!("/compatibility/subjects/{subject}/versions/latest?verbose=true");
        self.call("POST", &path, Some(avro(schema))).await
    }

    async fn set_level(&self, subject: &str, level: &str) {
        let (status, answer) =
            self.call("PUT", &format!("/config/{subject}"), Some(json!({ "compatibility": level }))).await;
        assert_eq!(status, 200, "PUT /config/{subject} {level}: {answer}");
        assert_eq!(answer["compatibility"], level, "the answer echoes the level");
    }
}

fn avro(schema: &str) -> Value {
    json!({ "schema": schema, "schemaType": "AVRO" })
}

fn id_of(answer: &Value) -> u32 {
    answer["id"].as_u64().and_then(|id| u32::try_from(id).ok()).unwrap_or_else(|| panic!("no id: {answer}"))
}

/// The Confluent error code of an error answer.
fn code(answer: &Value) -> i64 {
    answer["error_code"].as_i64().unwrap_or_else(|| panic!("no error_code: {answer}"))
}

/// A record `test.contract.Order` with `fields` (JSON).
fn order(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Order","namespace":"test.contract","fields":[{fields}]}}"#)
}

const ID: &str = r#"{"name":"id","type":"string"}"#;
const QUANTITY: &str = r#"{"name":"quantity","type":"int"}"#;
const NOTE_WITH_DEFAULT: &str = r#"{"name":"note","type":"string","default":"none"}"#;
const REQUIRED_NOTE: &str = r#"{"name":"note","type":"string"}"#;

fn subject(what: &str) -> String {
    format!("{}-value", unique(what))
}

/// Generates `<contract>::apicurio` and `<contract>::development` for each contract.
macro_rules! contracts {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn apicurio() {
                    super::$name(&super::Target::apicurio()).await;
                }

                #[tokio::test]
                async fn development() {
                    super::$name(&super::Target::development()).await;
                }
            }
        )*
    };
}

contracts!(
    registering_the_same_schema_again_answers_the_same_id,
    schemas_are_served_by_id,
    schemas_list_the_subjects_they_are_registered_under,
    versions_are_listed_and_served,
    a_compatible_change_is_accepted,
    an_incompatible_change_is_refused_with_409,
    subject_levels_decide_what_is_compatible,
    transitive_levels_check_every_version,
    earlier_versions_are_found_and_keep_their_ids,
    unknown_subjects_versions_and_ids_are_errors,
    invalid_schemas_are_refused_with_42201,
    the_global_level_is_backward,
    backbones_client_registers_encodes_and_decodes,
    backbones_client_refuses_incompatible_schemas_naming_the_field,
    backbones_client_refuses_a_schema_id_of_another_topic,
);

/// Same schema, same subject: same id, no new version. Same schema, another subject: same id
/// (ids are global, as the wire format needs: a reader resolves an id without knowing the subject).
async fn registering_the_same_schema_again_answers_the_same_id(registry: &Target) {
    let (a, b) = (subject("same-id-a"), subject("same-id-b"));
    let first = registry.registered(&a, &order(ID)).await;
    let again = registry.registered(&a, &order(ID)).await;
    assert_eq!(first, again, "re-registering answers the same id");
    let (status, versions) = registry.call("GET", &format!("/subjects/{a}/versions"), None).await;
    assert_eq!((status, versions), (200, json!([1])), "and adds no version");

    let elsewhere = registry.registered(&b, &order(ID)).await;
    assert_eq!(elsewhere, first, "the same schema under another subject has the same id");
    let other = registry.registered(&b, &order(&format!("{ID},{NOTE_WITH_DEFAULT}"))).await;
    assert_ne!(other, first, "another schema has another id");

    let (status, subjects) = registry.call("GET", "/subjects", None).await;
    assert_eq!(status, 200);
    for s in [&a, &b] {
        assert!(subjects.as_array().unwrap().contains(&json!(s)), "{s} listed in {subjects}");
    }
}

/// `GET /schemas/ids/{id}` serves what was registered (the same Avro schema; the text may be
/// reformatted by a real registry, so it is compared parsed).
async fn schemas_are_served_by_id(registry: &Target) {
    let text = order(&format!("{ID},{QUANTITY}"));
    let id = registry.registered(&subject("by-id"), &text).await;
    let (status, answer) = registry.call("GET", &format!("/schemas/ids/{id}"), None).await;
    assert_eq!(status, 200, "{answer}");
    let served = Schema::parse_str(answer["schema"].as_str().expect("schema text")).expect("valid Avro");
    assert_eq!(served, Schema::parse_str(&text).unwrap());
}

/// `GET /schemas/ids/{id}/versions` lists every subject (and version) a schema is registered under:
/// what a consumer asks to refuse a record that names another topic's contract.
async fn schemas_list_the_subjects_they_are_registered_under(registry: &Target) {
    let (a, b) = (subject("ids-subjects-a"), subject("ids-subjects-b"));
    let shared = registry.registered(&a, &order(ID)).await;
    registry.registered(&b, &order(&format!("{ID},{NOTE_WITH_DEFAULT}"))).await;
    assert_eq!(registry.registered(&b, &order(ID)).await, shared, "the same schema under b: same id");

    let (status, answer) = registry.call("GET", &format!("/schemas/ids/{shared}/versions"), None).await;
    assert_eq!(status, 200, "{answer}");
    let mut found: Vec<(String, i64)> = answer
        .as_array()
        .unwrap_or_else(|| panic!("a list: {answer}"))
        .iter()
        .map(|v| (v["subject"].as_str().unwrap().to_owned(), v["version"].as_i64().unwrap()))
        .filter(|(s, _)| *s == a || *s == b) // other tests register the same schema at once
        .collect();
    found.sort();
    assert_eq!(found, [(a, 1), (b, 2)], "both subjects, each with its own version: {answer}");

    let (status, answer) = registry.call("GET", "/schemas/ids/2000000000/versions", None).await;
    assert_eq!((status, code(&answer)), (404, 40403), "{answer}");
}

/// Versions count from 1; `latest` and a number serve subject, version, id and schema.
async fn versions_are_listed_and_served(registry: &Target) {
    let s = subject("versions");
    let v1 = registry.registered(&s, &order(ID)).await;
    let v2 = registry.registered(&s, &order(&format!("{ID},{NOTE_WITH_DEFAULT}"))).await;
    let (status, versions) = registry.call("GET", &format!("/subjects/{s}/versions"), None).await;
    assert_eq!((status, versions), (200, json!([1, 2])));

    let (status, latest) = registry.call("GET", &format!("/subjects/{s}/versions/latest"), None).await;
    assert_eq!(status, 200, "{latest}");
    assert_eq!((&latest["subject"], &latest["version"], id_of(&latest)), (&json!(s), &json!(2), v2));
    let (status, first) = registry.call("GET", &format!("/subjects/{s}/versions/1"), None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!((&first["version"], id_of(&first)), (&json!(1), v1));
    assert_eq!(
        Schema::parse_str(first["schema"].as_str().unwrap()).unwrap(),
        Schema::parse_str(&order(ID)).unwrap()
    );

    let (status, missing) = registry.call("GET", &format!("/subjects/{s}/versions/3"), None).await;
    assert_eq!((status, code(&missing)), (404, 40402), "an unknown version: {missing}");
}

/// Under the default level (BACKWARD), a field added with a default is accepted by the check and by
/// registration.
async fn a_compatible_change_is_accepted(registry: &Target) {
    let s = subject("compatible");
    let v1 = registry.registered(&s, &order(ID)).await;
    let v2 = order(&format!("{ID},{NOTE_WITH_DEFAULT}"));
    let (status, verdict) = registry.check(&s, &v2).await;
    assert_eq!((status, &verdict["is_compatible"]), (200, &json!(true)), "{verdict}");
    let id = registry.registered(&s, &v2).await;
    assert_ne!(id, v1);
}

/// A field added without a default breaks BACKWARD: the check says `is_compatible: false`,
/// registration answers 409 (error_code 409) and adds no version.
///
/// What backbone relies on: 200 with `is_compatible: false` and 409 on registering. Confluent (and the
/// development registry) explain in `messages` with `?verbose=true`; Apicurio gives none, and
/// backbone's client then works the reason out itself, so `messages` is not part of the contract.
async fn an_incompatible_change_is_refused_with_409(registry: &Target) {
    let s = subject("incompatible");
    registry.registered(&s, &order(ID)).await;
    let v2 = order(&format!("{ID},{REQUIRED_NOTE}"));
    let (status, verdict) = registry.check(&s, &v2).await;
    assert_eq!((status, &verdict["is_compatible"]), (200, &json!(false)), "{verdict}");
    let (status, refused) = registry.register(&s, &v2).await;
    assert_eq!((status, code(&refused)), (409, 409), "{refused}");
    let (_, versions) = registry.call("GET", &format!("/subjects/{s}/versions"), None).await;
    assert_eq!(versions, json!([1]), "nothing registered");
}

/// A subject's own level overrides the global one, and is read back; FORWARD accepts what BACKWARD
/// refuses (a required field added: old readers ignore it), FULL refuses it, NONE accepts anything;
/// an unknown level is refused with 422, error_code 42203.
async fn subject_levels_decide_what_is_compatible(registry: &Target) {
    let s = subject("levels");
    registry.registered(&s, &order(ID)).await;
    let added_required = order(&format!("{ID},{REQUIRED_NOTE}"));

    registry.set_level(&s, "FULL").await;
    let (status, config) = registry.call("GET", &format!("/config/{s}"), None).await;
    assert_eq!((status, &config["compatibilityLevel"]), (200, &json!("FULL")), "{config}");
    let (status, refused) = registry.register(&s, &added_required).await;
    assert_eq!((status, code(&refused)), (409, 409), "FULL refuses: {refused}");

    registry.set_level(&s, "FORWARD").await;
    let (status, verdict) = registry.check(&s, &added_required).await;
    assert_eq!((status, &verdict["is_compatible"]), (200, &json!(true)), "{verdict}");
    registry.registered(&s, &added_required).await;

    registry.set_level(&s, "NONE").await;
    registry.registered(&s, &order(r#"{"name":"id","type":"long"}"#)).await;
    let (_, versions) = registry.call("GET", &format!("/subjects/{s}/versions"), None).await;
    assert_eq!(versions, json!([1, 2, 3]));

    let (status, refused) =
        registry.call("PUT", &format!("/config/{s}"), Some(json!({ "compatibility": "SIDEWAYS" }))).await;
    assert_eq!((status, code(&refused)), (422, 42203), "an unknown level: {refused}");
    // (`DELETE /config/{s}` is not part of the contract: backbone never removes a level, and Apicurio
    // 3.3.3 kept answering the removed level right after deleting it.)
}

/// `BACKWARD_TRANSITIVE` checks against every version, `BACKWARD` against the latest only: v3 reads
/// v2 (the field is missing there, its default fills it) but not v1 (an int cannot be read as a
/// string).
///
/// A check against `versions/latest` (what backbone's client asks before registering) compares with
/// the latest version alone even under a transitive rule, in both registries; `…/versions` (no
/// version) and registering honour the rule. backbone relies on registering: a service whose schema
/// breaks a transitive rule is refused at start-up with the registry's 409.
async fn transitive_levels_check_every_version(registry: &Target) {
    let s = subject("transitive");
    registry.registered(&s, &order(r#"{"name":"x","type":"int"}"#)).await;
    registry.set_level(&s, "NONE").await;
    registry.registered(&s, &order(ID)).await;
    let v3 = order(&format!(r#"{ID},{{"name":"x","type":"string","default":""}}"#));

    registry.set_level(&s, "BACKWARD_TRANSITIVE").await;
    let verdict = |path: &'static str| {
        let (s, v3) = (s.clone(), v3.clone());
        async move {
            let path = format!("/compatibility/subjects/{s}/{path}");
            let (status, verdict) = registry.call("POST", &path, Some(avro(&v3))).await;
            assert_eq!(status, 200, "{path}: {verdict}");
            verdict["is_compatible"].as_bool().unwrap_or_else(|| panic!("{path}: {verdict}"))
        }
    };
    assert!(verdict("versions/latest").await, "compatible with the latest version alone");
    assert!(!verdict("versions/1").await, "not with version 1");
    assert!(!verdict("versions").await, "so not under the transitive rule");
    let (status, refused) = registry.register(&s, &v3).await;
    assert_eq!((status, code(&refused)), (409, 409), "{refused}");

    // (Under BACKWARD, `…/versions` still compares with every version in Apicurio, with the latest
    // in Confluent's registry and the development one: backbone does not ask it.)
    registry.set_level(&s, "BACKWARD").await;
    registry.registered(&s, &v3).await;
}

/// A schema registered earlier under a subject is found there (`POST /subjects/{s}`), and registering
/// it again answers its id without a new version, even when it is no longer the latest: an instance
/// of the previous release starting during a rolling deploy gets its id back.
async fn earlier_versions_are_found_and_keep_their_ids(registry: &Target) {
    let s = subject("earlier");
    let v1 = registry.registered(&s, &order(ID)).await;
    registry.registered(&s, &order(&format!("{ID},{NOTE_WITH_DEFAULT}"))).await;
    assert_eq!(registry.registered(&s, &order(ID)).await, v1);
    let (_, versions) = registry.call("GET", &format!("/subjects/{s}/versions"), None).await;
    assert_eq!(versions, json!([1, 2]));

    let (status, found) = registry.call("POST", &format!("/subjects/{s}"), Some(avro(&order(ID)))).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!((&found["subject"], &found["version"], id_of(&found)), (&json!(s), &json!(1), v1));
    let (status, missing) =
        registry.call("POST", &format!("/subjects/{s}"), Some(avro(&order(QUANTITY)))).await;
    assert_eq!((status, code(&missing)), (404, 40403), "{missing}");
}

/// Unknown subjects answer 404 with 40401, unknown ids 404 with 40403.
///
/// A compatibility check against a subject that does not exist: Apicurio (and the development
/// registry) answer `is_compatible: true`, Confluent 404 with 40401. backbone relies only on it not
/// being a refusal: its client takes either as "a new subject accepts anything".
async fn unknown_subjects_versions_and_ids_are_errors(registry: &Target) {
    let s = subject("unknown");
    for path in [format!("/subjects/{s}/versions"), format!("/subjects/{s}/versions/latest")] {
        let (status, answer) = registry.call("GET", &path, None).await;
        assert_eq!((status, code(&answer)), (404, 40401), "GET {path}: {answer}");
    }
    let (status, answer) = registry.call("GET", "/schemas/ids/2000000000", None).await;
    assert_eq!((status, code(&answer)), (404, 40403), "{answer}");

    let (status, verdict) = registry.check(&s, &order(ID)).await;
    let accepted = (status == 200 && verdict["is_compatible"] == json!(true))
        || (status == 404 && code(&verdict) == 40401);
    assert!(accepted, "a new subject accepts anything: {status} {verdict}");
}

/// Text that is not an Avro schema is refused with 422, error_code 42201, and nothing is registered.
async fn invalid_schemas_are_refused_with_42201(registry: &Target) {
    let s = subject("invalid");
    for bad in [r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"strin"}]}"#, "{not json"] {
        let (status, answer) = registry.register(&s, bad).await;
        assert_eq!((status, code(&answer)), (422, 42201), "{bad}: {answer}");
    }
    let (status, answer) = registry.call("GET", &format!("/subjects/{s}/versions"), None).await;
    assert_eq!((status, code(&answer)), (404, 40401), "{answer}");
}

/// The global level is BACKWARD (Confluent's default; the test kit starts Apicurio so), and a subject
/// without a level of its own follows it: `backbone schemas check` and the client's explanations read
/// `/config/{subject}?defaultToGlobal=true`, then `/config`.
async fn the_global_level_is_backward(registry: &Target) {
    let (status, config) = registry.call("GET", "/config", None).await;
    assert_eq!((status, &config["compatibilityLevel"]), (200, &json!("BACKWARD")), "{config}");
    let s = subject("global");
    registry.registered(&s, &order(ID)).await;
    let (status, config) = registry.call("GET", &format!("/config/{s}?defaultToGlobal=true"), None).await;
    assert_eq!((status, &config["compatibilityLevel"]), (200, &json!("BACKWARD")), "{config}");
}

/// Version 1 of the event backbone's client publishes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct OrderV1 {
    id: String,
    quantity: i32,
}

/// Version 2: a field added with a default.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct OrderV2 {
    id: String,
    quantity: i32,
    note: String,
}

/// A breaking change: `quantity` changes type from int to string.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct OrderBroken {
    id: String,
    quantity: String,
}

macro_rules! avro_event {
    ($ty:ident, $schema:expr) => {
        impl AvroEvent for $ty {
            const SCHEMA: &'static str = $schema;
            fn schema() -> &'static Schema {
                static SCHEMA: OnceLock<Schema> = OnceLock::new();
                backbone::schema::parse_once(&SCHEMA, Self::SCHEMA)
            }
        }
    };
}
avro_event!(
    OrderV1,
    r#"{"type":"record","name":"Order","namespace":"test.contract","fields":[
        {"name":"id","type":"string"},{"name":"quantity","type":"int"}]}"#
);
avro_event!(
    OrderV2,
    r#"{"type":"record","name":"Order","namespace":"test.contract","fields":[
        {"name":"id","type":"string"},{"name":"quantity","type":"int"},
        {"name":"note","type":"string","default":"none"}]}"#
);
avro_event!(
    OrderBroken,
    r#"{"type":"record","name":"Order","namespace":"test.contract","fields":[
        {"name":"id","type":"string"},{"name":"quantity","type":"string"}]}"#
);

/// backbone's `Registry` end to end: encoders register (once), a fresh client (another process,
/// say) fetches the writer's schema by id and decodes, across versions both ways.
async fn backbones_client_registers_encodes_and_decodes(registry: &Target) {
    let s = subject("client");
    let writer = Registry::new(&registry.url).unwrap();
    let v1 = writer.encoder::<OrderV1>(&s).await.unwrap();
    let v2 = writer.encoder::<OrderV2>(&s).await.unwrap();
    assert_ne!(v1.id(), v2.id());
    assert_eq!(writer.register(&s, OrderV1::SCHEMA).await.unwrap(), v1.id(), "registering again: same id");

    let old = v1.encode(&OrderV1 { id: "o-1".into(), quantity: 3 }).unwrap();
    let new = v2.encode(&OrderV2 { id: "o-2".into(), quantity: 4, note: "gift".into() }).unwrap();
    let reader = Registry::new(&registry.url).unwrap();
    for payload in [&old, &new] {
        reader.prepare(payload).await.unwrap();
    }
    assert_eq!(
        reader.decode::<OrderV2>(&old).unwrap(),
        OrderV2 { id: "o-1".into(), quantity: 3, note: "none".into() },
        "a new reader reads old data, the default filling the new field"
    );
    assert_eq!(reader.decode::<OrderV1>(&new).unwrap(), OrderV1 { id: "o-2".into(), quantity: 4 });

    let unknown = reader.schema(SchemaId(2_000_000_000)).await.unwrap_err();
    assert!(matches!(unknown, SchemaError::UnknownId(SchemaId(2_000_000_000))), "{unknown:?}");
}

/// backbone's `Registry` refuses a breaking schema with `SchemaError::Incompatible`, naming the field
/// (from the registry's messages, or worked out by the client when the registry gives none), and
/// registers nothing; `set_compatibility(NONE)` then lets it through.
async fn backbones_client_refuses_incompatible_schemas_naming_the_field(registry: &Target) {
    let s = subject("client-refused");
    let client = Registry::new(&registry.url).unwrap();
    client.encoder::<OrderV1>(&s).await.unwrap();
    let refused = client.encoder::<OrderBroken>(&s).await.unwrap_err();
    let SchemaError::Incompatible { subject, reason } = &refused else { panic!("{refused:?}") };
    assert_eq!(subject, &s);
    assert!(reason.contains("`quantity`") && reason.contains("BACKWARD"), "{reason}");
    let (_, versions) = registry.call("GET", &format!("/subjects/{s}/versions"), None).await;
    assert_eq!(versions, json!([1]), "nothing registered");

    client.set_compatibility(&s, "NONE").await.unwrap();
    client.encoder::<OrderBroken>(&s).await.unwrap();
}

/// backbone's `Registry::check_topic` accepts a schema id registered under the topic's subject and
/// refuses one registered only under another topic's (`SchemaError::ForeignSchemaId`, naming the
/// subjects it has): against both registries, so the demo checks what production checks.
async fn backbones_client_refuses_a_schema_id_of_another_topic(registry: &Target) {
    let (own, other) = (unique("own-topic"), unique("other-topic"));
    let client = Registry::new(&registry.url).unwrap();
    let ours = client.register(&format!("{own}-value"), OrderV1::SCHEMA).await.unwrap();
    let theirs = client.register(&format!("{other}-value"), OrderBroken::SCHEMA).await.unwrap();
    client.check_topic(ours, &own).await.unwrap();
    let refused = client.check_topic(theirs, &own).await.unwrap_err();
    let SchemaError::ForeignSchemaId { id, topic, subjects } = &refused else { panic!("{refused:?}") };
    assert_eq!((*id, topic.as_str()), (theirs, own.as_str()));
    assert_eq!(subjects, &[format!("{other}-value")]);
}
