//! `backbone topics apply|plan` against the shared broker, with spec files as `ServiceSpec::to_json`
//! writes them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use backbone::Service;
use backbone::topic::TopicSpec;
use backbone_testkit::{shared_kafka, unique};

/// Runs `backbone <args>` against the shared broker, in the development profile.
fn backbone(args: &[&str], spec: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backbone"))
        .args(args)
        .arg("--spec")
        .arg(spec)
        .env("KAFKA_BOOTSTRAP_SERVERS", shared_kafka().bootstrap_servers())
        .env("BACKBONE_PROFILE", "development")
        .env_remove("BACKBONE_CONFIG_FILE")
        .env_remove("KAFKA_SECURITY_PROTOCOL")
        .output()
        .expect("run backbone")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_spec(dir: &tempfile::TempDir, file: &str, json: &str) -> PathBuf {
    let path = dir.path().join(file);
    std::fs::write(&path, json).expect("write spec");
    path
}

#[test]
fn apply_creates_the_owned_topics_and_plan_then_says_up_to_date() {
    let owner = unique("cli");
    let created = TopicSpec::public(&owner, "created", 1).partitions(3).build().unwrap();
    let state = TopicSpec::private(&owner, "state").compacted().build().unwrap();
    let spec = Service::new(&owner).owns(&created).owns(&state).spec().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_spec(&dir, "spec.json", &spec.to_json());

    let apply = backbone(&["topics", "apply"], &path);
    let out = text(&apply.stdout);
    assert!(apply.status.success(), "{out}{}", text(&apply.stderr));
    assert!(out.contains(&format!("+ created {created} (partitions 3, replication 1)\n")), "{out}");
    assert!(out.contains(&format!("+ created {state} (partitions 6, replication 1)\n")), "{out}");

    let plan = backbone(&["topics", "plan"], &path);
    let out = text(&plan.stdout);
    assert!(plan.status.success(), "{out}{}", text(&plan.stderr));
    assert_eq!(
        out,
        format!(
            "= {created} up to date\n= {state} up to date\n\
             plan: 0 to create, 0 to alter, 0 to add partitions, 2 up to date, 0 refused\n"
        )
    );
}

#[test]
fn refusals_exit_2_and_apply_nothing() {
    let owner = unique("cli");
    let dir = tempfile::tempdir().unwrap();
    let four = TopicSpec::private(&owner, "jobs").partitions(4).build().unwrap();
    let wide = write_spec(&dir, "wide.json", &Service::new(&owner).owns(&four).spec().unwrap().to_json());
    assert!(backbone(&["topics", "apply"], &wide).status.success());

    let two = TopicSpec::private(&owner, "jobs").partitions(2).build().unwrap();
    let narrow = write_spec(&dir, "narrow.json", &Service::new(&owner).owns(&two).spec().unwrap().to_json());
    let plan = backbone(&["topics", "plan"], &narrow);
    assert_eq!(plan.status.code(), Some(2));
    let out = text(&plan.stdout);
    assert!(
        out.contains(&format!(
            "! refused {two}: 2 partitions are declared but the topic has 4; Kafka cannot remove partitions"
        )),
        "{out}"
    );

    let apply = backbone(&["topics", "apply"], &narrow);
    assert_eq!(apply.status.code(), Some(2));
    let err = text(&apply.stderr);
    assert!(err.contains("nothing applied") && err.contains(&format!("! refused {two}")), "{err}");

    // Back to the declaration that matches: nothing to do.
    let plan = backbone(&["topics", "plan"], &wide);
    assert!(text(&plan.stdout).contains(&format!("= {four} up to date")));
}

#[test]
fn an_invalid_spec_is_refused_before_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let created = TopicSpec::public("orders", "created", 1).build().unwrap();
    let orders = Service::new("orders").owns(&created).spec().unwrap().to_json();
    let path =
        write_spec(&dir, "stolen.json", &orders.replacen("\"name\": \"orders\"", "\"name\": \"stock\"", 1));
    let out = backbone(&["topics", "plan"], &path);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("stolen.json") && err.contains("owned by service `orders`"), "{err}");
}
