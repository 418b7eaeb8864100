//! Smoke tests against the shared Apicurio Registry, through schema_registry_converter.

use apache_avro::types::Value;
use backbone_testkit::{shared_registry, unique};
use schema_registry_converter::async_impl::easy_avro::{EasyAvroDecoder, EasyAvroEncoder};
use schema_registry_converter::async_impl::schema_registry::{SrSettings, get_schema_by_id, post_schema};
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};

const V1: &str = r#"{"type":"record","name":"OrderCreated","namespace":"smoke","fields":[
  {"name":"id","type":"string"},{"name":"quantity","type":"int"}]}"#;
/// Adds a field with a default: BACKWARD compatible.
const V2_COMPATIBLE: &str = r#"{"type":"record","name":"OrderCreated","namespace":"smoke","fields":[
  {"name":"id","type":"string"},{"name":"quantity","type":"int"},
  {"name":"note","type":"string","default":""}]}"#;
/// Adds a field without a default: new readers cannot read old data, so not BACKWARD compatible.
const V2_BREAKING: &str = r#"{"type":"record","name":"OrderCreated","namespace":"smoke","fields":[
  {"name":"id","type":"string"},{"name":"quantity","type":"int"},
  {"name":"customer","type":"string"}]}"#;

fn avro(schema: &str) -> SuppliedSchema {
    SuppliedSchema::new(Some("smoke.OrderCreated".into()), SchemaType::Avro, schema.into())
}

fn settings() -> SrSettings {
    SrSettings::new(shared_registry().url().to_owned())
}

#[tokio::test]
async fn registry_enforces_backward_compatibility_globally() {
    assert_eq!(shared_registry().global_compatibility().expect("config"), "BACKWARD");
}

#[tokio::test]
async fn schema_registered_and_read_back_by_id() {
    let sr = settings();
    let subject = unique("smoke-topic") + "-value";
    let registered = post_schema(&sr, subject.clone(), avro(V1)).await.expect("register v1");
    let fetched = get_schema_by_id(registered.id, &sr).await.expect("fetch by id");
    let parsed = apache_avro::Schema::parse_str(&fetched.schema).expect("the registry returns valid Avro");
    assert_eq!(parsed, apache_avro::Schema::parse_str(V1).expect("v1"));

    // Registering the same schema again answers the same id.
    assert_eq!(post_schema(&sr, subject, avro(V1)).await.expect("re-register").id, registered.id);
}

#[tokio::test]
async fn compatible_version_accepted_incompatible_refused() {
    let sr = settings();
    let subject = unique("smoke-topic") + "-value";
    let v1 = post_schema(&sr, subject.clone(), avro(V1)).await.expect("register v1");
    let v2 =
        post_schema(&sr, subject.clone(), avro(V2_COMPATIBLE)).await.expect("v2 with a default is accepted");
    assert_ne!(v1.id, v2.id);
    let refused = post_schema(&sr, subject.clone(), avro(V2_BREAKING)).await;
    let err = refused.expect_err("a field without a default breaks BACKWARD and is refused");
    let text = format!("{} {:?}", err.error, err.cause);
    assert!(text.contains("409") || text.to_lowercase().contains("compatib"), "refusal says why: {text}");
}

#[tokio::test]
async fn encode_and_decode_through_the_wire_format() {
    let sr = settings();
    let topic = unique("smoke-topic");
    let encoder = EasyAvroEncoder::new(sr.clone());
    let decoder = EasyAvroDecoder::new(sr);
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(topic, false, avro(V1));
    let fields = vec![("id", Value::String("o-1".into())), ("quantity", Value::Int(3))];
    let bytes = encoder.encode(fields.clone(), strategy).await.expect("encode");
    assert_eq!(bytes[0], 0, "Confluent wire format: magic byte 0");
    let decoded = decoder.decode(Some(&bytes)).await.expect("decode");
    let expected = Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
    assert_eq!(decoded.value, expected);
}
