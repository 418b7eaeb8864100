//! `codec`: backbone's Avro encoder and decoder on one event, in process, against apache-avro's bare
//! paths and serde_json.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The Avro contract of the codec benchmark's event.
const ORDER_CREATED_SCHEMA: &str = r#"{
  "type": "record", "name": "OrderCreated", "namespace": "bench.orders",
  "fields": [
    {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "customerId", "type": "string"},
    {"name": "product", "type": "string"},
    {"name": "quantity", "type": "int"},
    {"name": "price", "type": "long"},
    {"name": "createdAt", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "state", "type": {"type": "enum", "name": "OrderState",
      "symbols": ["CREATED", "PAID", "SHIPPED", "CANCELLED"]}}
  ]
}"#;

/// The event both codecs write and read. Its serde name is the record's, so backbone decodes it on
/// the schema-aware path.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename = "OrderCreated", rename_all = "camelCase")]
struct OrderEvent {
    id: String,
    customer_id: String,
    product: String,
    quantity: i32,
    /// In cents.
    price: i64,
    /// Milliseconds since the epoch.
    created_at: i64,
    state: OrderState,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum OrderState {
    Created,
    Paid,
    Shipped,
    Cancelled,
}

impl backbone::schema::AvroEvent for OrderEvent {
    const SCHEMA: &'static str = ORDER_CREATED_SCHEMA;
    fn schema() -> &'static apache_avro::Schema {
        static SCHEMA: OnceLock<apache_avro::Schema> = OnceLock::new();
        backbone::schema::parse_once(&SCHEMA, Self::SCHEMA)
    }
}

const CODEC_ROUNDS: usize = 5;
/// Roughly how long one timed run of an operation lasts.
const CODEC_RUN: Duration = Duration::from_millis(1_000);
const CODEC_WARMUP: Duration = Duration::from_millis(300);

/// Warms `op` up and returns how many iterations make a run of about `CODEC_RUN`.
fn size_run(op: &mut dyn FnMut()) -> u64 {
    let started = Instant::now();
    let mut warm = 0u64;
    while started.elapsed() < CODEC_WARMUP {
        for _ in 0..1_000 {
            op();
        }
        warm += 1_000;
    }
    let per_op = started.elapsed().as_secs_f64() / warm as f64;
    ((CODEC_RUN.as_secs_f64() / per_op) as u64).clamp(10_000, 100_000_000)
}

/// Nanoseconds per operation over `n` calls of `op`.
fn time_run(op: &mut dyn FnMut(), n: u64) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        op();
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

/// One benchmarked operation.
pub(crate) type CodecOp<'a> = dyn FnMut() + 'a;

fn median(runs: &[f64]) -> f64 {
    let mut sorted = runs.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

pub(crate) fn codec() {
    use backbone::schema::{AvroEvent as _, Encoder, Registry, SchemaId};
    use std::hint::black_box;

    let order = OrderEvent {
        id: "3f2c8e1a-9b7d-4c5e-a1f0-6d2b8c4e9a17".to_owned(),
        customer_id: "customer-004217".to_owned(),
        product: "Mechanical keyboard, 104 keys, brown switches, US layout".to_owned(),
        quantity: 2,
        price: 12_999,
        created_at: 1_767_225_600_123,
        state: OrderState::Paid,
    };
    let id = SchemaId(1);
    let encoder = Encoder::<OrderEvent>::new(id).expect("encoder");
    let registry = Registry::new("http://127.0.0.1:9").expect("registry");
    registry.remember(id, ORDER_CREATED_SCHEMA).expect("remember the schema");

    // Both round trips give the original back.
    let avro = encoder.encode(&order).expect("encode");
    assert_eq!(registry.decode::<OrderEvent>(&avro).expect("decode"), order, "Avro round trip");
    let json = serde_json::to_vec(&order).expect("json encode");
    assert_eq!(serde_json::from_slice::<OrderEvent>(&json).expect("json decode"), order, "JSON round trip");

    println!(
        "codec: one OrderCreated event, {} bytes framed Avro (5-byte header + {} body), {} bytes JSON; \
         schema id 1 remembered by the registry client (no network)",
        avro.len(),
        avro.len() - 5,
        json.len()
    );
    // The floor: apache-avro's own schema-aware paths on the bare body, no framing and no caches.
    let raw_writer = apache_avro::writer::datum::GenericDatumWriter::builder(OrderEvent::schema())
        .build()
        .expect("writer");
    let raw_reader = apache_avro::reader::datum::GenericDatumReader::builder(OrderEvent::schema())
        .build()
        .expect("reader");
    let body = &avro[5..];
    let mut raw_buf = Vec::with_capacity(256);

    let mut buf = Vec::with_capacity(256);
    let cases: [(&str, Box<CodecOp<'_>>); 7] = [
        ("backbone encode", Box::new(|| drop(black_box(encoder.encode(black_box(&order)).expect("encode"))))),
        (
            "backbone encode_into",
            Box::new(|| {
                buf.clear();
                encoder.encode_into(black_box(&order), &mut buf).expect("encode");
                black_box(&buf);
            }),
        ),
        (
            "backbone decode",
            Box::new(|| drop(black_box(registry.decode::<OrderEvent>(black_box(&avro)).expect("decode")))),
        ),
        (
            "avro write_ser (raw)",
            Box::new(|| {
                raw_buf.clear();
                raw_writer.write_ser(&mut raw_buf, black_box(&order)).expect("write_ser");
                black_box(&raw_buf);
            }),
        ),
        (
            "avro read_deser (raw)",
            Box::new(|| {
                let mut input = black_box(body);
                drop(black_box(raw_reader.read_deser::<OrderEvent>(&mut input).expect("read_deser")))
            }),
        ),
        ("json encode", Box::new(|| drop(black_box(serde_json::to_vec(black_box(&order)).expect("json"))))),
        (
            "json decode",
            Box::new(|| {
                drop(black_box(serde_json::from_slice::<OrderEvent>(black_box(&json)).expect("json")))
            }),
        ),
    ];
    let medians = measure(cases.into());
    println!("RESULT codec encode_ns={:.0} decode_ns={:.0}", medians[0], medians[2]);
}

/// Warms up and sizes every case, runs them [`CODEC_ROUNDS`] times interleaved (noise hits all
/// alike), prints ns/op (median, min, max) per case and returns the medians.
pub(crate) fn measure(cases: Vec<(&str, Box<CodecOp<'_>>)>) -> Vec<f64> {
    println!(
        "{:<21} {:>10} {:>9} {:>9} {:>9}   (ns/op; {CODEC_ROUNDS} runs of ~{} s each)",
        "op",
        "iterations",
        "median",
        "min",
        "max",
        CODEC_RUN.as_secs_f64()
    );
    let (names, mut ops): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
    let sizes: Vec<u64> = ops.iter_mut().map(|op| size_run(op)).collect();
    let mut runs = vec![Vec::with_capacity(CODEC_ROUNDS); ops.len()];
    for _ in 0..CODEC_ROUNDS {
        for (i, op) in ops.iter_mut().enumerate() {
            runs[i].push(time_run(op, sizes[i]));
        }
    }
    let mut medians = Vec::new();
    for ((name, n), runs) in names.iter().zip(&sizes).zip(&runs) {
        let (min, max) = runs.iter().fold((f64::MAX, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        let m = median(runs);
        println!("{name:<21} {n:>10} {m:>9.0} {min:>9.0} {max:>9.0}");
        medians.push(m);
    }
    medians
}
