//! `#[derive(AvroEvent)]`: a derived type carries its `.avsc` and round-trips through Avro; the
//! trybuild cases in `tests/avro_event/` show what compiles and what the derive refuses, and how.

use std::collections::{BTreeMap, HashMap};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use backbone::schema::{AvroEvent, full_name};

/// An order was placed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[serde(rename_all = "camelCase")]
#[avro(schema = "tests/schemas/orders/order-created-v1.avsc")]
struct OrderCreated {
    id: String,
    customer_id: String,
    quantity: i32,
    price: i64,
    note: Option<String>,
    state: OrderState,
    tags: Vec<String>,
    placed_at: i64,
}

/// Where an order is; an Avro enum, checked against its own file.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(schema = "tests/schemas/orders/order-state-v1.avsc")]
enum OrderState {
    Placed,
    Paid,
    Shipped,
}

/// Every mapping the derive knows, in one record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, backbone::AvroEvent)]
#[serde(rename_all = "camelCase")]
#[avro(schema = "tests/schemas/demo/everything-v1.avsc")]
struct Everything {
    flag: bool,
    small: i32,
    day: i32,
    big: i64,
    f: f32,
    d: f64,
    #[serde(with = "apache_avro::serde::bytes")]
    blob: Vec<u8>,
    text: std::string::String,
    maybe_count: Option<i64>,
    count_or_nothing: Option<i64>,
    numbers: Vec<i32>,
    optional_names: Vec<Option<String>>,
    totals: BTreeMap<String, i64>,
    address: Address,
    previous_addresses: Vec<Address>,
    #[serde(with = "apache_avro::serde::fixed")]
    hash: [u8; 16],
    kind: Kind,
    #[serde(rename = "renamed")]
    r#type: String,
    /// Not on the wire.
    #[serde(skip)]
    cache: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Address {
    street: String,
    zip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    SmallThing,
    BigThing,
}

fn writer<T: AvroEvent>() -> GenericDatumWriter<'static> {
    GenericDatumWriter::builder(T::schema()).build().expect("writer")
}

fn reader<T: AvroEvent>() -> GenericDatumReader<'static> {
    GenericDatumReader::builder(T::schema()).build().expect("reader")
}

/// Through apache_avro's `Value`s: `to_value`, encode, decode, `from_value` (what the deprecated
/// `to_avro_datum` / `from_avro_datum` did).
fn by_values<T: AvroEvent>(value: &T) -> T {
    let datum =
        writer::<T>().write_value_to_vec(apache_avro::to_value(value).expect("to_value")).expect("encodes");
    let decoded = reader::<T>().read_value(&mut datum.as_slice()).expect("decodes");
    apache_avro::from_value(&decoded).expect("from_value")
}

/// Through the schema-aware serde (de)serializers, as backbone's codec does.
fn by_serde<T: AvroEvent>(value: &T) -> T {
    let datum = writer::<T>().write_ser_to_vec(value).expect("encodes");
    reader::<T>().read_deser(&mut datum.as_slice()).expect("decodes")
}

fn order() -> OrderCreated {
    OrderCreated {
        id: "7b0c1f9e-2d7a-4a57-9d43-3f5d0f1b2c3d".into(),
        customer_id: "c-42".into(),
        quantity: 3,
        price: 1999,
        note: Some("leave at the door".into()),
        state: OrderState::Paid,
        tags: vec!["gift".into(), "express".into()],
        placed_at: 1_767_225_600_000,
    }
}

#[test]
fn schema_is_the_file_text_parsed_once() {
    let text = include_str!("schemas/orders/order-created-v1.avsc");
    assert_eq!(OrderCreated::SCHEMA, text);
    let first: *const apache_avro::Schema = OrderCreated::schema();
    let second: *const apache_avro::Schema = OrderCreated::schema();
    assert!(std::ptr::eq(first, second), "schema() is parsed once and the same &'static each call");
    assert_eq!(full_name(OrderCreated::schema()), "com.example.orders.OrderCreated");
    assert_eq!(*OrderCreated::schema(), apache_avro::Schema::parse_str(text).unwrap());

    assert_eq!(OrderState::SCHEMA, include_str!("schemas/orders/order-state-v1.avsc"));
    assert_eq!(full_name(OrderState::schema()), "com.example.orders.OrderState");
}

#[test]
fn a_derived_record_round_trips_through_avro() {
    let placed = order();
    let without_note = OrderCreated { note: None, state: OrderState::Shipped, tags: vec![], ..order() };
    for event in [placed, without_note] {
        assert_eq!(by_values(&event), event);
        assert_eq!(by_serde(&event), event);
    }
}

#[test]
fn a_derived_enum_round_trips_through_avro() {
    for state in [OrderState::Placed, OrderState::Paid, OrderState::Shipped] {
        assert_eq!(by_values(&state), state);
        assert_eq!(by_serde(&state), state);
    }
}

#[test]
fn every_mapping_round_trips_through_avro() {
    let everything = Everything {
        flag: true,
        small: -7,
        day: 20_454,
        big: i64::MAX,
        f: 1.5,
        d: -0.25,
        blob: vec![0, 1, 254, 255],
        text: "héllo".into(),
        maybe_count: Some(12),
        count_or_nothing: Some(-1),
        numbers: vec![1, 2, 3],
        optional_names: vec![Some("a".into()), None],
        totals: BTreeMap::from([("eur".into(), 10), ("usd".into(), -3)]),
        address: Address { street: "1 Main St".into(), zip: None },
        previous_addresses: vec![Address { street: "2 Side St".into(), zip: Some("12345".into()) }],
        hash: *b"0123456789abcdef",
        kind: Kind::BigThing,
        r#type: "renamed on the wire".into(),
        cache: HashMap::new(),
    };
    assert_eq!(by_serde(&everything), everything);
    // `to_value` writes an `Option` as a union whose null is first: a `[T, "null"]` union needs the
    // value resolved against the schema before it is written.
    let value = apache_avro::to_value(&everything).unwrap().resolve(Everything::schema()).unwrap();
    let datum = writer::<Everything>().write_value_to_vec(value).unwrap();
    let decoded = reader::<Everything>().read_value(&mut datum.as_slice()).unwrap();
    assert_eq!(apache_avro::from_value::<Everything>(&decoded).unwrap(), everything);
}

/// What compiles and what the derive refuses, with its messages (`.stderr` next to each case;
/// regenerate with `TRYBUILD=overwrite cargo test -p backbone --test derive_avro_event`).
#[test]
fn derive_accepts_matching_types_and_refuses_the_rest() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/avro_event/pass/*.rs");
    cases.compile_fail("tests/avro_event/fail/*.rs");
}
