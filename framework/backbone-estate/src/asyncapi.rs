//! The estate as an [AsyncAPI 3.0.0](https://www.asyncapi.com/docs/reference/specification/v3.0.0)
//! document: one channel per topic (its address is the topic's name), the Avro schemas of the
//! events published on it as messages, and one operation per service and topic: `send` for the
//! owner, `receive` for each reader (its consumer groups in the operation's Kafka binding).
//!
//! Private topics carry the tag `private` and `x-backbone-visibility: private` (public ones
//! `public`); every channel says its owner in `x-backbone-owner`. Channels and operations are
//! sorted, so the same estate always gives the same document.

use serde_json::{Map, Value, json};

use crate::manifest::Estate;

/// The AsyncAPI version of the document.
pub const ASYNCAPI_VERSION: &str = "3.0.0";
/// The document's title unless one is given (`backbone estate asyncapi --title`).
pub const DEFAULT_TITLE: &str = "backbone estate";
/// The schema format of the messages' payloads.
pub const AVRO_SCHEMA_FORMAT: &str = "application/vnd.apache.avro+json;version=1.9.0";
/// The version of the Kafka bindings used.
const KAFKA_BINDING_VERSION: &str = "0.5.0";

/// The estate's AsyncAPI document, titled `title`.
pub fn document(estate: &Estate, title: &str) -> Value {
    let mut channels = Map::new();
    let mut operations = Map::new();
    for (name, topic) in estate.topics() {
        let visibility = match topic.visibility() {
            backbone::topic::Visibility::Public => "public",
            backbone::topic::Visibility::Private => "private",
        };
        let mut messages = Map::new();
        if let Some(owner) = estate.service(topic.owner()) {
            for event in owner.events().iter().filter(|e| e.topic == name) {
                let schema: Value = serde_json::from_str(&event.schema)
                    .unwrap_or_else(|_| Value::String(event.schema.clone()));
                let mut message = json!({
                    "name": event.record,
                    "title": event.record,
                    "summary": format!("`{}`, registered under subject `{}`.", event.record, event.subject),
                    "contentType": "application/octet-stream",
                    "payload": { "schemaFormat": AVRO_SCHEMA_FORMAT, "schema": schema },
                });
                if let Some(key) = event.key.as_deref().and_then(key_schema) {
                    message["bindings"] =
                        json!({ "kafka": { "key": key, "bindingVersion": KAFKA_BINDING_VERSION } });
                }
                messages.insert(message_id(&event.record), message);
            }
        }
        let channel_ref = format!("#/channels/{}", pointer(name));
        let message_refs: Vec<Value> = messages
            .keys()
            .map(|id| json!({ "$ref": format!("{channel_ref}/messages/{}", pointer(id)) }))
            .collect();
        channels.insert(
            name.to_owned(),
            json!({
                "address": name,
                "title": name,
                "description": format!(
                    "A {visibility} topic of `{}`: {} partition(s).{}",
                    topic.owner(),
                    topic.partitions(),
                    if messages.is_empty() { " Its records are not Avro events the estate declares." } else { "" }
                ),
                "messages": messages,
                "tags": [{ "name": visibility }],
                "bindings": { "kafka": {
                    "topic": name,
                    "partitions": topic.partitions(),
                    "replicas": topic.replication(),
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }},
                "x-backbone-visibility": visibility,
                "x-backbone-owner": topic.owner(),
            }),
        );
        for writer in estate.writers(name) {
            operations.insert(
                format!("{writer}.send.{name}"),
                json!({
                    "action": "send",
                    "title": format!("{writer} sends to {name}"),
                    "channel": { "$ref": channel_ref },
                    "messages": message_refs,
                    "x-backbone-service": writer,
                }),
            );
        }
        for reader in estate.readers(name) {
            let groups: Vec<&str> = estate
                .service(reader)
                .into_iter()
                .flat_map(|s| s.consumers())
                .filter(|c| c.topic == name)
                .map(|c| c.group.as_str())
                .collect();
            let mut operation = json!({
                "action": "receive",
                "title": format!("{reader} receives from {name}"),
                "channel": { "$ref": channel_ref },
                "messages": message_refs,
                "x-backbone-service": reader,
            });
            if !groups.is_empty() {
                operation["bindings"] = json!({ "kafka": {
                    "groupId": { "type": "string", "enum": groups },
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }});
            }
            operations.insert(format!("{reader}.receive.{name}"), operation);
        }
    }
    let services: Vec<&str> = estate.services().map(|s| s.name()).collect();
    json!({
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": "1.0.0",
            "description": format!(
                "The topics of the services {} and who sends and receives on each, generated from their \
                 code by `backbone estate asyncapi`.",
                services.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
            ),
        },
        "defaultContentType": "application/octet-stream",
        "channels": channels,
        "operations": operations,
    })
}

/// The document as pretty JSON, ending with a newline.
pub fn to_string(document: &Value) -> String {
    let mut text = serde_json::to_string_pretty(document).expect("JSON values serialize");
    text.push('\n');
    text
}

/// The Kafka key's schema for a key type as [`backbone::event::BoundEvent::KEY_TYPE`] names it:
/// the key's bytes are not Avro but UTF-8 text (integers as their decimal text) or raw bytes.
fn key_schema(key: &str) -> Option<Value> {
    let text = |what: &str| json!({ "type": "string", "description": what });
    Some(match key {
        "string" => text("UTF-8 text"),
        "bytes" => text("raw bytes"),
        "i32" | "i64" | "u32" | "u64" => text(&format!("the decimal text of an {key}")),
        _ => return None,
    })
}

/// A message id from a record's full name: letters, digits, `.`, `-`, `_`.
fn message_id(record: &str) -> String {
    record
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect()
}

/// `name` as a JSON pointer segment.
fn pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use backbone::topic::TopicSpec;
    use backbone::{Service, ServiceSpec};

    use super::*;

    fn estate() -> Estate {
        let created = TopicSpec::public("orders", "order-created", 1).partitions(3).build().unwrap();
        let state = TopicSpec::private("orders", "state").build().unwrap();
        let orders = Service::new("orders").owns(&created).owns(&state).spec().unwrap();
        let mut json: Value = serde_json::from_str(&orders.to_json()).unwrap();
        json["events"] = json!([{
            "topic": created.name(), "subject": "orders.public.order-created-v1-value",
            "record": "shop.OrderCreated", "key": "i64",
            "schema": r#"{"type":"record","name":"OrderCreated","namespace":"shop","fields":[{"name":"id","type":"string"}]}"#,
        }]);
        let orders = ServiceSpec::from_json(&json.to_string()).unwrap();
        let stock = Service::new("stock")
            .consumes(&created)
            .consumer(&created, "stock.reserve", false)
            .spec()
            .unwrap();
        Estate::of([orders, stock]).unwrap()
    }

    #[test]
    fn channels_are_topics_with_their_avro_messages() {
        let doc = document(&estate(), "shop");
        assert_eq!(doc["asyncapi"], "3.0.0");
        let channel = &doc["channels"]["orders.public.order-created-v1"];
        assert_eq!(channel["address"], "orders.public.order-created-v1");
        assert_eq!(channel["x-backbone-visibility"], "public");
        assert_eq!(channel["bindings"]["kafka"]["partitions"], 3);
        let payload = &channel["messages"]["shop.OrderCreated"]["payload"];
        assert_eq!(payload["schemaFormat"], AVRO_SCHEMA_FORMAT);
        assert_eq!(payload["schema"]["name"], "OrderCreated", "the schema is JSON, not a string");
        let key = &channel["messages"]["shop.OrderCreated"]["bindings"]["kafka"]["key"];
        assert_eq!(key["description"], "the decimal text of an i64");
        let private = &doc["channels"]["orders.private.state"];
        assert_eq!(private["x-backbone-visibility"], "private");
        assert_eq!(private["tags"], json!([{ "name": "private" }]));
    }

    #[test]
    fn operations_say_who_sends_and_who_receives() {
        let doc = document(&estate(), "shop");
        let ops = doc["operations"].as_object().unwrap();
        assert_eq!(
            ops.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "orders.send.orders.private.state",
                "orders.send.orders.public.order-created-v1",
                "stock.receive.orders.public.order-created-v1",
            ]
        );
        let receive = &ops["stock.receive.orders.public.order-created-v1"];
        assert_eq!(receive["action"], "receive");
        assert_eq!(receive["channel"]["$ref"], "#/channels/orders.public.order-created-v1");
        assert_eq!(
            receive["messages"],
            json!([{ "$ref": "#/channels/orders.public.order-created-v1/messages/shop.OrderCreated" }])
        );
        assert_eq!(receive["bindings"]["kafka"]["groupId"]["enum"], json!(["stock.reserve"]));
        assert_eq!(to_string(&doc), to_string(&document(&estate(), "shop")), "deterministic");
    }
}
