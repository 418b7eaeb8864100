//! What the development registry does beyond the contract (`tests/contract.rs`), as its module doc
//! says: behaviour backbone does not rely on, where it answers as Confluent's registry does, and what
//! it refuses. Not run against Apicurio: a global level change would disturb the shared instance, and
//! the rest is where the two registries differ.

use backbone_devregistry::{BASE_PATH, DevRegistry};
use serde_json::{Value, json};

async fn call(registry: &DevRegistry, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    // One client per thread (a test's runtime is single-threaded), so pooled connections never outlive
    // the runtime that made them.
    thread_local!(static HTTP: reqwest::Client = reqwest::Client::new());
    let http = HTTP.with(Clone::clone);
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http.request(method, format!("{}{path}", registry.url()));
    if let Some(body) = body {
        request =
            request.header("Content-Type", "application/vnd.schemaregistry.v1+json").body(body.to_string());
    }
    let reply = request.send().await.unwrap();
    let status = reply.status().as_u16();
    let content_type = reply.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/vnd.schemaregistry.v1+json");
    (status, serde_json::from_str(&reply.text().await.unwrap()).unwrap_or(Value::Null))
}

fn avro(schema: &str) -> Option<Value> {
    Some(json!({ "schema": schema }))
}

fn order(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Order","namespace":"test.dev","fields":[{fields}]}}"#)
}

#[tokio::test]
async fn it_serves_on_loopback_under_the_ccompat_path() {
    let registry = DevRegistry::start().unwrap();
    assert!(registry.addr().ip().is_loopback());
    assert_ne!(registry.addr().port(), 0, "an ephemeral port was chosen");
    assert_eq!(registry.url(), format!("http://{}{BASE_PATH}", registry.addr()));
    assert_eq!(call(&registry, "GET", "/subjects", None).await, (200, json!([])));
    let (status, answer) = call(&registry, "GET", "/no/such/endpoint", None).await;
    assert_eq!((status, answer["error_code"].as_i64()), (404, Some(404)), "{answer}");
}

#[tokio::test]
async fn the_global_level_can_be_changed_and_subjects_without_their_own_follow_it() {
    let registry = DevRegistry::start().unwrap();
    call(&registry, "POST", "/subjects/s/versions", avro(&order(r#"{"name":"id","type":"string"}"#))).await;
    let added_required = order(r#"{"name":"id","type":"string"},{"name":"n","type":"int"}"#);
    let (status, _) = call(&registry, "POST", "/subjects/s/versions", avro(&added_required)).await;
    assert_eq!(status, 409, "BACKWARD by default");

    let (status, answer) =
        call(&registry, "PUT", "/config", Some(json!({ "compatibility": "FORWARD_TRANSITIVE" }))).await;
    assert_eq!((status, answer), (200, json!({ "compatibility": "FORWARD_TRANSITIVE" })));
    assert_eq!(
        call(&registry, "GET", "/config", None).await,
        (200, json!({ "compatibilityLevel": "FORWARD_TRANSITIVE" }))
    );
    let (status, answer) = call(&registry, "POST", "/subjects/s/versions", avro(&added_required)).await;
    assert_eq!((status, answer), (200, json!({ "id": 2 })), "FORWARD_TRANSITIVE accepts it");
}

#[tokio::test]
async fn it_answers_as_confluent_where_apicurio_differs() {
    let registry = DevRegistry::start().unwrap();
    let v1 = order(r#"{"name":"id","type":"string"}"#);
    call(&registry, "POST", "/subjects/s/versions", avro(&v1)).await;

    // No level of its own: 40408, or the global one with defaultToGlobal (even for an unknown subject).
    let (status, answer) = call(&registry, "GET", "/config/s", None).await;
    assert_eq!((status, answer["error_code"].as_i64()), (404, Some(40408)), "{answer}");
    for subject in ["s", "unknown"] {
        let (status, answer) =
            call(&registry, "GET", &format!("/config/{subject}?defaultToGlobal=true"), None).await;
        assert_eq!((status, answer), (200, json!({ "compatibilityLevel": "BACKWARD" })));
    }
    // A malformed version is 42202; an unknown one 40402.
    let (status, answer) = call(&registry, "GET", "/subjects/s/versions/abc", None).await;
    assert_eq!((status, answer["error_code"].as_i64()), (422, Some(42202)), "{answer}");
    let (status, answer) = call(&registry, "GET", "/subjects/s/versions/-1", None).await;
    assert_eq!((status, answer["version"].as_i64()), (200, Some(1)), "-1 is latest: {answer}");

    // Reformatted JSON (whitespace, key order) is the same schema: same id, no new version.
    let reformatted = r#"{ "namespace": "test.dev", "name": "Order", "type": "record",
        "fields": [ { "type": "string", "name": "id" } ] }"#;
    let (status, answer) = call(&registry, "POST", "/subjects/s/versions", avro(reformatted)).await;
    assert_eq!((status, answer), (200, json!({ "id": 1 })));
    assert_eq!(call(&registry, "GET", "/subjects/s/versions", None).await, (200, json!([1])));

    // `…/versions` (no version) follows the rule: BACKWARD compares with the latest only.
    call(&registry, "PUT", "/config/s", Some(json!({ "compatibility": "NONE" }))).await;
    call(&registry, "POST", "/subjects/s/versions", avro(&order(r#"{"name":"id","type":"long"}"#))).await;
    call(&registry, "PUT", "/config/s", Some(json!({ "compatibility": "BACKWARD" }))).await;
    let reads_only_v2 = order(r#"{"name":"id","type":"double"}"#);
    let (status, answer) =
        call(&registry, "POST", "/compatibility/subjects/s/versions", avro(&reads_only_v2)).await;
    assert_eq!((status, answer), (200, json!({ "is_compatible": true })));
    let (status, answer) =
        call(&registry, "POST", "/compatibility/subjects/s/versions/1?verbose=true", avro(&reads_only_v2))
            .await;
    assert_eq!(status, 200);
    assert_eq!(answer["is_compatible"], json!(false), "{answer}");
    let messages = answer["messages"].to_string();
    assert!(messages.contains("version 1") && messages.contains("`id`"), "{messages}");

    // A level removed: back to the global one.
    let (status, answer) = call(&registry, "DELETE", "/config/s", None).await;
    assert_eq!((status, answer), (200, json!({ "compatibilityLevel": "BACKWARD" })));
    let (status, _) = call(&registry, "GET", "/config/s", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn other_schema_types_and_references_are_refused() {
    let registry = DevRegistry::start().unwrap();
    let protobuf = json!({ "schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF" });
    let referencing = json!({
        "schema": order(r#"{"name":"customer","type":"test.dev.Customer"}"#),
        "references": [{ "name": "test.dev.Customer", "subject": "customer", "version": 1 }],
    });
    for body in [protobuf, referencing] {
        let (status, answer) = call(&registry, "POST", "/subjects/s/versions", Some(body)).await;
        assert_eq!((status, answer["error_code"].as_i64()), (422, Some(42201)), "{answer}");
    }
    let (status, answer) =
        call(&registry, "PUT", "/config", Some(json!({ "compatibility": "SIDEWAYS" }))).await;
    assert_eq!((status, answer["error_code"].as_i64()), (422, Some(42203)), "{answer}");
}

#[tokio::test]
async fn dropping_it_stops_the_server() {
    let registry = DevRegistry::start().unwrap();
    let addr = registry.addr();
    drop(registry);
    assert!(std::net::TcpStream::connect(addr).is_err(), "nothing listens on {addr} any more");
}
