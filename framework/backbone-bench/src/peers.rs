//! `peers`: backbone against what users would pick instead, on the same broker in one run: Kafka's
//! own Java perf tools (`ProducerPerformance` and `ConsumerPerformance`, from the test kit's Kafka
//! jars, run with `java -cp`), FastStream (Python, its confluent-kafka backend, in a venv the bench
//! makes under `target/`; `peers/faststream_side.py`) and raw rdkafka, interleaved. Writes `docs/benchmarks/peers.md` and
//! `docs/benchmarks/peers.svg`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use backbone::consume::Consumer;
use backbone::handler::{BoxedHandler, Metadata, State};
use backbone::publish::producer_config;
use backbone::{Config, Context, TopicSpec};
use backbone_testkit::unique;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::producer::FutureProducer;

use crate::common::{
    Counter, KEYS, READ_TIMEOUT, cluster, consuming_service, cpu_time_with_children, dev_config, keys,
    raw_consumer, raw_headers,
};
use crate::publish::{PAYLOAD, backbone_round, raw_round};

/// Events per round and side (`BENCH_PEERS_EVENTS` to change): a million, as Kafka's own tools are
/// usually run, so the Java side's start-up and JIT weigh little.
const EVENTS: usize = 1_000_000;
const ROUNDS: usize = 3;

fn events() -> usize {
    std::env::var("BENCH_PEERS_EVENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(EVENTS)
}

/// One side's figures over the rounds.
#[derive(Default, Clone, Copy)]
struct Side {
    rate: f64,
    cpu: Duration,
    rounds: u32,
}

impl Side {
    fn add(&mut self, rate: f64, cpu: Duration) {
        self.rate += rate;
        self.cpu += cpu;
        self.rounds += 1;
    }

    fn mean_rate(&self) -> f64 {
        self.rate / f64::from(self.rounds.max(1))
    }

    fn cpu_us(&self, events: usize) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / (events as f64 * f64::from(self.rounds.max(1)))
    }
}

/// Runs a Kafka tool to its end; its stdout.
async fn tool(class: &'static str, args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let output = backbone_testkit::kafka_tool(class)
            .expect("Kafka's tools")
            .args(&args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run the Java tool");
        assert!(output.status.success(), "{class} failed: {}", String::from_utf8_lossy(&output.stdout));
        String::from_utf8_lossy(&output.stdout).into_owned()
    })
    .await
    .expect("tool thread")
}

/// Kafka's `ProducerPerformance`: records per second as it reports them (first send to last
/// acknowledgement, in the JVM).
async fn java_publish(bootstrap: &str, topic: &str, n: usize, linger_ms: u128) -> f64 {
    let args = [
        "--topic",
        topic,
        "--num-records",
        &n.to_string(),
        "--record-size",
        &PAYLOAD.to_string(),
        "--throughput",
        "-1",
        "--producer-props",
        &format!("bootstrap.servers={bootstrap}"),
        "acks=all",
        "enable.idempotence=true",
        "max.in.flight.requests.per.connection=5",
        &format!("linger.ms={linger_ms}"),
        // librdkafka's default batch size, which both Rust sides use.
        "batch.size=1000000",
    ];
    let out =
        tool("org.apache.kafka.tools.ProducerPerformance", args.iter().map(|s| s.to_string()).collect())
            .await;
    // The last line: "N records sent, R records/sec (M MB/sec), …".
    let last = out.lines().rev().find(|l| l.contains("records/sec")).expect("a summary line");
    let rate = last.split(" records/sec").next().and_then(|l| l.rsplit(", ").next()).expect("records/sec");
    rate.trim().parse().expect("a rate")
}

/// Kafka's `ConsumerPerformance`: `fetch.nMsg.sec` (messages per second once the group has its
/// partitions: the group join left out, as on the Rust sides).
async fn java_consume(bootstrap: &str, topic: &str, n: usize) -> f64 {
    let args = vec![
        "--bootstrap-server".to_owned(),
        bootstrap.to_owned(),
        "--topic".to_owned(),
        topic.to_owned(),
        "--messages".to_owned(),
        n.to_string(),
        "--group".to_owned(),
        unique("java-group"),
        "--timeout".to_owned(),
        READ_TIMEOUT.as_millis().to_string(),
    ];
    let out = tool("org.apache.kafka.tools.ConsumerPerformance", args).await;
    let mut lines = out.lines().filter(|l| l.contains(','));
    let header: Vec<&str> = lines.next().expect("a header").split(',').map(str::trim).collect();
    let values: Vec<&str> = lines.next().expect("a line of figures").split(',').map(str::trim).collect();
    let at = header.iter().position(|h| *h == "fetch.nMsg.sec").expect("fetch.nMsg.sec");
    values[at].parse().expect("a rate")
}

/// The handler: counts the event's bytes, as `ConsumerPerformance` does (no decoding).
async fn count_bytes(event: Metadata, State(count): State<Arc<Counter>>) {
    std::hint::black_box(event.payload().map_or(0, <[u8]>::len));
    count.seen();
}

async fn backbone_consume(context: &Context, topic: &TopicSpec, n: usize) -> f64 {
    let count = Arc::new(Counter::new(n));
    let consumer = Consumer::new(context, topic, BoxedHandler::named("count", count_bytes), count.clone())
        .expect("consumer")
        .in_group(unique("backbone-peers"));
    let done = count.clone();
    tokio::time::timeout(READ_TIMEOUT, consumer.run(async move { done.done.notified().await }))
        .await
        .expect("backbone read in time")
        .expect("clean stop");
    n as f64 / count.elapsed().as_secs_f64()
}

async fn raw_consume(config: &Config, service: &str, topic: &str, n: usize) -> f64 {
    let count = Counter::new(n);
    let consumer = raw_consumer(config, service, &unique("raw-peers"), topic);
    let read = async {
        loop {
            let message = consumer.recv().await.expect("raw recv");
            std::hint::black_box(message.payload().map_or(0, <[u8]>::len));
            let last = count.seen();
            consumer.store_offset_from_message(&message).expect("store offset");
            if last {
                break;
            }
        }
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.expect("raw read in time");
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    n as f64 / count.elapsed().as_secs_f64()
}

const SIDES: [&str; 4] = ["Kafka Java perf tool", "FastStream (confluent)", "raw rdkafka", "backbone"];
/// The FastStream release the bench installs (its confluent-kafka backend, the faster of its two).
const FASTSTREAM: &str = "faststream[confluent]==0.7.8";

/// The Python of a venv under `target/` holding FastStream, made on first use; why not, if it cannot be.
fn faststream_python() -> Result<std::path::PathBuf, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-peers");
    let python = root.join("venv/bin/python");
    let ready = |python: &std::path::Path| {
        std::process::Command::new(python)
            .args(["-c", "import faststream.confluent"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return Ok(python);
    }
    println!("making a venv with {FASTSTREAM} under {} …", root.display());
    let run = |program: &std::path::Path, args: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!("{} {args:?}: {}", program.display(), String::from_utf8_lossy(&out.stderr))),
        }
    };
    run(std::path::Path::new("python3"), &["-m", "venv", &root.join("venv").to_string_lossy()])?;
    run(&root.join("venv/bin/pip"), &["install", "--quiet", FASTSTREAM])?;
    ready(&python).then_some(python).ok_or_else(|| "faststream does not import".to_owned())
}

/// Runs the FastStream side (`peers/faststream_side.py`); its rate.
async fn faststream(python: &std::path::Path, args: Vec<String>) -> f64 {
    let python = python.to_owned();
    tokio::task::spawn_blocking(move || {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/faststream_side.py");
        let output = std::process::Command::new(python)
            .arg(script)
            .args(&args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run the FastStream side");
        let out = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "the FastStream side failed: {out}");
        let rate = out.lines().find_map(|l| l.strip_prefix("RATE ")).expect("a RATE line");
        rate.trim().parse().expect("a rate")
    })
    .await
    .expect("FastStream thread")
}

pub(crate) async fn peers() {
    let n = events();
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers().to_owned();
    let mut config = dev_config(&cluster, None);
    config.publish_queue = n;
    let (spec, topic, context) = consuming_service(&config, "bench-peers").await;
    let publisher = backbone::Publisher::new(&config, &spec).expect("publisher");
    let (java_topic, raw_topic) = (format!("{}-java", topic.name()), format!("{}-raw", topic.name()));
    cluster.create_topic(&java_topic, 6, 1).await.expect("create topic");
    cluster.create_topic(&raw_topic, 6, 1).await.expect("create topic");
    let raw: FutureProducer = producer_config(&config, spec.name()).create().expect("raw producer");
    let (keys, payload, headers) = (keys(), vec![b'x'; PAYLOAD], raw_headers(spec.name()));
    let linger = config.linger.as_millis();

    println!(
        "peers: {n} events of {PAYLOAD} bytes per round and side, 6 partitions, acks=all + idempotence, \
         linger {linger} ms, batch 1,000,000 bytes; {ROUNDS} rounds, interleaved"
    );
    println!(
        "Java = Kafka {}'s ProducerPerformance / ConsumerPerformance (a JVM per round; unkeyed records, \
         the tool has no keys); raw rdkafka and backbone: {KEYS} keys, backbone's traceparent header",
        backbone_testkit::KAFKA_VERSION
    );
    let python = match faststream_python() {
        Ok(python) => Some(python),
        Err(why) => {
            println!("FastStream left out: {why}");
            None
        }
    };
    let fs_topic = format!("{}-faststream", topic.name());
    cluster.create_topic(&fs_topic, 6, 1).await.expect("create topic");
    let present = |who: usize| who != 1 || python.is_some();
    // Publish: the Rust sides warm their connections first; the JVM and Python cannot keep one.
    raw_round(1_000, &raw, &raw_topic, &keys, &payload, Some(&headers)).await;
    backbone_round(1_000, &publisher, &topic, &keys, &payload).await;
    let header = || {
        println!(
            "{:<8} {:>12} {:>12} {:>12} {:>14}",
            "", "Java msg/s", "FastStream", "raw msg/s", "backbone msg/s"
        )
    };
    let line = |label: &str, r: &[f64; 4]| {
        println!("{label:<8} {:>12.0} {:>12.0} {:>12.0} {:>14.0}", r[0], r[1], r[2], r[3])
    };
    let fs = |args: &[&str]| {
        let python = python.clone().expect("python");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move { faststream(&python, args).await }
    };
    let (n_text, linger_text) = (n.to_string(), linger.to_string());
    header();
    let publish = rounds("publish", &present, &line, async |who| match who {
        0 => java_publish(&bootstrap, &java_topic, n, linger).await,
        1 => fs(&["publish", &bootstrap, &fs_topic, &n_text, &linger_text]).await,
        2 => n as f64 / raw_round(n, &raw, &raw_topic, &keys, &payload, Some(&headers)).await.as_secs_f64(),
        _ => n as f64 / backbone_round(n, &publisher, &topic, &keys, &payload).await.as_secs_f64(),
    })
    .await;
    // Consume: every side reads the first `n` events of backbone's topic from its beginning, with
    // a fresh group, counting bytes (no decoding, as ConsumerPerformance).
    let consume = rounds("consume", &present, &line, async |who| match who {
        0 => java_consume(&bootstrap, topic.name(), n).await,
        1 => fs(&["consume", &bootstrap, topic.name(), &n_text]).await,
        2 => raw_consume(&config, spec.name(), topic.name(), n).await,
        _ => backbone_consume(&context, &topic, n).await,
    })
    .await;

    let rates = |sides: &[Side; 4]| sides.map(|s| s.mean_rate());
    let cpus = |sides: &[Side; 4]| sides.map(|s| s.cpu_us(n));
    let (p, c) = (rates(&publish), rates(&consume));
    let (pc, cc) = (cpus(&publish), cpus(&consume));
    header();
    line("publish", &p);
    line("consume", &c);
    println!(
        "client CPU µs per event (Java's and Python's include their start-up): publish {:.2} / {:.2} / {:.2} / {:.2}, \
         consume {:.2} / {:.2} / {:.2} / {:.2}",
        pc[0], pc[1], pc[2], pc[3], cc[0], cc[1], cc[2], cc[3]
    );
    write_report(n, &p, &c, &pc, &cc, python.is_some());
    let vs = |a: f64, b: f64| if b > 0.0 { format!("{:.3}", a / b) } else { "n/a".to_owned() };
    println!(
        "RESULT peers publish_vs_java={} consume_vs_java={} publish_vs_faststream={} consume_vs_faststream={} \
         publish_vs_raw={} consume_vs_raw={}",
        vs(p[3], p[0]),
        vs(c[3], c[0]),
        vs(p[3], p[1]),
        vs(c[3], c[1]),
        vs(p[3], p[2]),
        vs(c[3], c[2])
    );
}

/// `ROUNDS` rounds of every present side (`side(who)` gives its rate), rotating who goes first;
/// each side's rates and client CPU.
async fn rounds(
    label: &str,
    present: &impl Fn(usize) -> bool,
    line: &impl Fn(&str, &[f64; 4]),
    mut side: impl AsyncFnMut(usize) -> f64,
) -> [Side; 4] {
    let mut sides = [Side::default(); 4];
    for round in 1..=ROUNDS {
        let mut rates = [0.0; 4];
        for step in 0..4 {
            let who = (round + step) % 4;
            if present(who) {
                let before = cpu_time_with_children();
                rates[who] = side(who).await;
                sides[who].add(rates[who], cpu_time_with_children().saturating_sub(before));
            }
        }
        line(&format!("{label} {round}"), &rates);
    }
    sides
}

/// `docs/benchmarks/peers.md` (a table) and `peers.svg` (bars), from this run.
fn write_report(
    n: usize,
    publish: &[f64; 4],
    consume: &[f64; 4],
    publish_cpu: &[f64; 4],
    consume_cpu: &[f64; 4],
    with_faststream: bool,
) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks");
    std::fs::create_dir_all(&dir).expect("docs/benchmarks");
    let mut md = String::from(
        "# backbone against its peers\n\nWritten by `cargo run --release -p backbone-bench -- peers`: one \
         broker (the test kit's), one run, the sides interleaved. Messages per second (mean of the rounds) \
         and the client's CPU per event (the Java side's includes its JVM's start-up).\n\n",
    );
    md.push_str(&format!(
        "{n} events of {PAYLOAD} bytes per round, acks=all + idempotence, 6 partitions, on {} cores.\n\n",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    ));
    md.push_str("| | publish msg/s | publish CPU µs/event | consume msg/s | consume CPU µs/event |\n|---|---:|---:|---:|---:|\n");
    for i in (0..4).filter(|i| *i != 1 || with_faststream) {
        md.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.0} | {:.2} |\n",
            SIDES[i], publish[i], publish_cpu[i], consume[i], consume_cpu[i]
        ));
    }
    std::fs::write(dir.join("peers.md"), md).expect("peers.md");
    // Two groups of three bars, scaled to the largest rate.
    let max = publish.iter().chain(consume).copied().fold(1.0, f64::max);
    let colours = ["#8c6d31", "#d62728", "#6b6ecf", "#2ca02c"];
    let mut svg = String::from(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"300\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"640\" height=\"300\" fill=\"white\"/>\n\
         <text x=\"320\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">messages per second, same broker, one run</text>\n",
    );
    for (g, (label, rates)) in [("publish", publish), ("consume", consume)].iter().enumerate() {
        let x0 = 30 + g * 310;
        svg.push_str(&format!("<text x=\"{}\" y=\"290\" text-anchor=\"middle\">{label}</text>\n", x0 + 140));
        for (i, rate) in rates.iter().enumerate() {
            let h = (rate / max * 220.0).round();
            let x = x0 + i * 72;
            svg.push_str(&format!(
                "<rect x=\"{x}\" y=\"{}\" width=\"60\" height=\"{h}\" fill=\"{}\"><title>{}: {rate:.0}</title></rect>\n\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{:.0}k</text>\n",
                260.0 - h,
                colours[i],
                SIDES[i],
                x + 30,
                255.0 - h,
                rate / 1000.0
            ));
        }
    }
    for (i, side) in SIDES.iter().enumerate() {
        svg.push_str(&format!(
            "<rect x=\"{}\" y=\"32\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"41\">{side}</text>\n",
            20 + i * 155,
            colours[i],
            35 + i * 155
        ));
    }
    svg.push_str("</svg>\n");
    std::fs::write(dir.join("peers.svg"), svg).expect("peers.svg");
    println!("wrote {}/peers.md and peers.svg", dir.display());
}
