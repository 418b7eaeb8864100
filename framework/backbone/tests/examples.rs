//! Every example in `examples/` runs against the real broker and registry of the test kit, as a
//! reader would run it (the binary `cargo test` built, the same environment variables `backbone dev
//! up` prints), and says what its guide section promises.

use std::path::PathBuf;
use std::process::Command;

use backbone_testkit::{shared_kafka, shared_registry};

/// The example binaries `cargo test` built beside this test binary (`target/<profile>/examples`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    profile_dir.join("examples").join(name)
}

/// Runs example `name` (within 3 minutes) and returns what it printed; panics with its output if it
/// failed.
fn run(name: &str) -> String {
    let path = example(name);
    assert!(path.exists(), "{} not built (cargo test builds the examples)", path.display());
    let mut command = Command::new(&path);
    command
        .env("KAFKA_BOOTSTRAP_SERVERS", shared_kafka().bootstrap_servers())
        .env("SCHEMA_REGISTRY_URL", shared_registry().url())
        .env("BACKBONE_PROFILE", "development")
        .env_remove("BACKBONE_HTTP_ADDR");
    let output = command.output().expect("example runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "example {name} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn assert_says(name: &str, out: &str, expected: &[&str]) {
    for line in expected {
        assert!(out.contains(line), "example {name} should say {line:?}; it said:\n{out}");
    }
}

#[test]
fn quickstart() {
    let out = run("quickstart");
    assert_says("quickstart", &out, &["written to orders.public.order-created-v1 at "]);
}

#[test]
fn ownership() {
    let out = run("ownership");
    assert_says(
        "ownership",
        &out,
        &["stock consumes orders.public.order-created-v1: allowed", "refused:", "private"],
    );
    assert_eq!(out.matches("refused:").count(), 2, "{out}");
}

#[test]
fn service() {
    let out = run("service");
    assert_says(
        "service",
        &out,
        &["-> PASS", "-> FAIL", "checked 5 orders; the warehouse shut down cleanly"],
    );
}

#[test]
fn handlers() {
    let out = run("handlers");
    // 10 orders of 1, 2, 3, 1, 2, 3 … items; one extra attempt for the retried first one.
    assert_says("handlers", &out, &["handled 10 orders, reserved 19 items; our layer saw 11 attempts"]);
}

#[test]
fn dead_letters() {
    let out = run("dead_letters");
    assert_says("dead_letters", &out, &["p-1: booked 1200 cents", "p-4: booked 99 cents"]);
    assert_eq!(out.matches("dead letter:").count(), 2, "{out}");
    assert!(out.contains("key p-2") && out.contains("key p-3"), "{out}");
}

#[test]
fn schemas() {
    let out = run("schemas");
    assert_says("schemas", &out, &["v1 event read as v2:", "gift_note: None", "refused:", "quantity"]);
}

#[test]
fn tables() {
    let out = run("tables");
    assert_says(
        "tables",
        &out,
        &["jumper: Some(\"12\")", "socks: Some(\"40\")", "scarf after its tombstone: None"],
    );
}

#[test]
fn exactly_once() {
    let out = run("exactly_once");
    assert_eq!(out.matches("committed receipt:").count(), 5, "{out}");
    assert_says("exactly_once", &out, &[r#"{"payment":"payment-4","euros":12.50}"#]);
}

#[test]
fn testing() {
    let out = run("testing");
    assert_says("testing", &out, &["with key ada: Greeting { text: \"hello, ada\" }"]);
}

#[test]
fn running_totals() {
    let out = run("running_totals");
    assert_says("running_totals", &out, &["snapshot records:", "payments counted so far"]);
}
