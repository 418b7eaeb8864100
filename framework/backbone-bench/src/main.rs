//! Benchmarks of backbone against raw rdkafka on the same broker, in one run, and of its Avro codec.
//!
//! Run with `cargo run --release -p backbone-bench -- <publish|consume|latency|codec|metrics|estate|peers>`. The first three
//! start a broker with the test kit (or use `KAFKA_BOOTSTRAP_SERVERS`) and compare backbone with raw
//! rdkafka doing the same work on the same broker, interleaving the two; `codec` needs no broker nor
//! registry. Each prints a table and a last `RESULT` line.
//!
//! `publish`: the same events through a raw rdkafka `FutureProducer` and through a backbone
//! `Publisher`, with the same producer settings (backbone's durable ones), interleaved over five
//! rounds, against raw with headers of the sizes backbone writes (`raw`; `BENCH_LEGACY_HEADERS=1`:
//! the four headers backbone wrote before its metadata went minimal) and raw without headers
//! (`bare`); the events are `OrderCreated`s on the topic named for them. Prints a table and a last
//! line `RESULT publish ratio=<backbone/raw msgs per s> vs_bare=<backbone/bare> msgs_per_s=<backbone>
//! cpu_ratio=<backbone/raw client CPU per event> cpu_vs_bare=<backbone/bare>`. Client CPU is the
//! process's user + system time over each side's rounds (`/proc/self/stat`; the broker is another
//! process): on a machine shared with the broker, throughput swings from round to round where CPU per
//! event holds still.
//!
//! `consume`: one topic (6 partitions) pre-filled once with 200,000 JSON events (~110 bytes, 1,000
//! keys, backbone's headers), then read from the beginning to the end by a fresh consumer group per
//! read: one untimed warm-up read per side (the broker's JIT), then five rounds interleaved. raw = a
//! `StreamConsumer` with backbone's group and fetch-queue settings that decodes each payload with
//! serde_json, touches a field and stores its offset; backbone = a `Consumer` whose handler takes
//! `Json<Order>` and counts. Throughput runs from the first event seen to the last (group join and
//! shutdown excluded, they are the same for both); last line
//! `RESULT consume ratio=<backbone/raw msgs per s> vs_poll=<backbone/raw poll> msgs_per_s=<backbone>
//! cpu_ratio=<backbone/raw client CPU per event> cpu_vs_poll=<backbone/raw poll>`, where raw poll is a
//! `BaseConsumer` polled in a loop on a thread of its own (rust-rdkafka's fastest safe path: it has
//! no safe batch call). `BENCH_RAW_SPLIT=1` adds raw rdkafka shaped like
//! backbone (a queue and a task per partition), outside the ratio.
//!
//! `latency`: end to end, producer to handler, at a fixed 2,000 events/s for 10 s per round after a
//! warm-up, linger 0 on both sides: raw = `FutureProducer` (backbone's durable settings) to a raw
//! `StreamConsumer`; backbone = `Publisher` (`BACKBONE_LINGER_MS=0`) to a `Consumer` handler. Each
//! payload carries its send time (nanoseconds since one `Instant`, the same process), stamped just
//! before the send call. Two rounds per side, interleaved; prints p50/p99/p99.9/max per side and a last
//! line `RESULT latency p50_ms=<backbone> p99_ms=<backbone> p999_ms=<backbone>
//! p99_ratio=<backbone p99/raw p99> p999_ratio=<backbone p99.9/raw p99.9>`.
//!
//! `estate`: the sample estate on the broker, over HTTP (see `estate.rs`); last line
//! `RESULT estate orders_per_s=<POST to VALIDATED> get_p99_ms=<GET /v1/orders/{id} under that load>
//! offered_per_s=<fixed load> offered_p50_ms= offered_p99_ms=<POST to VALIDATED at that load>`.
//!
//! `peers`: backbone against Kafka's own Java perf tools (`ProducerPerformance`,
//! `ConsumerPerformance`, from the test kit's Kafka jars, a JVM per round) and raw rdkafka: a million
//! 100-byte events per round and side (`BENCH_PEERS_EVENTS`), acks=all + idempotence, the same linger
//! and batch size, three rounds interleaved; consume reads backbone's topic from the beginning with a
//! fresh group and counts bytes (no decoding, as the Java tool). Writes `docs/benchmarks/peers.md` and
//! `peers.svg`; last line `RESULT peers publish_vs_java= consume_vs_java= publish_vs_raw=
//! consume_vs_raw=` (ratios of msg/s, backbone over the other).
//!
//! `codec`: one ~126-byte framed Avro event (an `OrderCreated`: uuid string id, customer id, product,
//! quantity, price, timestamp-millis, enum state; its `AvroEvent` written by hand, serde name = record
//! name so decoding takes the schema-aware path), in process: backbone's `Encoder::encode` (and
//! `encode_into` a reused buffer) and `Registry::decode` (schema id 1 seeded with `remember`, no
//! network), against apache-avro's bare `write_ser` / `read_deser` of the body (the floor) and serde_json
//! `to_vec` / `from_slice` of the same struct. Checks both round trips
//! give the original back, warms each case up and sizes its runs to ~1 s, then five runs per case,
//! interleaved; prints ns/op (median, min, max) and a last line
//! `RESULT codec encode_ns=<median encode> decode_ns=<median decode>`.
//!
//! `metrics`: the consume path's per-event metric work through backbone's `Metrics` handles, in
//! process (no broker), against an empty loop and a JSON decode, then on two threads sharing the
//! handles; last line `RESULT metrics ns_per_event= contended_ns_per_event= vs_json_decode=`.
//!
//! One module per benchmark (`publish`, `consume`, `latency`, `codec`, `estate`); `common` holds what
//! the broker benchmarks share: the cluster, the keys and headers, configurations, consumers, rates.

mod codec;
mod common;
mod consume;
mod estate;
mod latency;
mod metrics;
mod peers;
mod publish;

fn main() -> std::process::ExitCode {
    let what = std::env::args().nth(1).unwrap_or_default();
    match what.as_str() {
        "publish" | "consume" | "latency" | "estate" | "peers" => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
            match what.as_str() {
                "publish" => runtime.block_on(publish::publish()),
                "consume" => runtime.block_on(consume::consume()),
                "estate" => runtime.block_on(estate::estate()),
                "peers" => runtime.block_on(peers::peers()),
                _ => runtime.block_on(latency::latency()),
            }
            std::process::ExitCode::SUCCESS
        }
        "codec" => {
            codec::codec();
            std::process::ExitCode::SUCCESS
        }
        "metrics" => {
            metrics::metrics();
            std::process::ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: backbone-bench <publish|consume|latency|codec|metrics|estate|peers>");
            std::process::ExitCode::from(2)
        }
    }
}
