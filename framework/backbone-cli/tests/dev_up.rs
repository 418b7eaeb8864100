//! `backbone dev up` starts real Kafka and a registry, prints where they are, and stops them on SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn accepts(addr: &str) -> bool {
    TcpStream::connect(addr).is_ok()
}

#[test]
fn dev_up_prints_both_addresses_and_sigterm_stops_everything() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backbone"))
        .args(["dev", "up", "--brokers", "1"])
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("SCHEMA_REGISTRY_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn backbone dev up");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().expect("a line before exit").expect("utf-8 line");

    let bootstrap =
        next().strip_prefix("KAFKA_BOOTSTRAP_SERVERS=").expect("first the bootstrap servers").to_owned();
    let registry = next().strip_prefix("SCHEMA_REGISTRY_URL=").expect("then the registry URL").to_owned();
    let registry_addr =
        registry.strip_prefix("http://").and_then(|r| r.split('/').next()).expect("an http URL").to_owned();
    assert!(accepts(&bootstrap), "Kafka listens at {bootstrap}");
    assert!(accepts(&registry_addr), "the registry listens at {registry_addr}");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait for backbone dev up");
    assert!(exit.success(), "a clean stop: {exit}");
    // The JVMs were killed and reaped before the command exited: nothing listens any more.
    assert!(!accepts(&bootstrap), "Kafka stopped");
    assert!(!accepts(&registry_addr), "the registry stopped");
}
