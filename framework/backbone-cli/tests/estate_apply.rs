//! `backbone estate plan|apply` against a real broker with SASL and the StandardAuthorizer, as the
//! super user: the estate's topics, ACLs and quotas in one idempotent diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use backbone::consume::dead_letter_topic;
use backbone::topic::TopicSpec;
use backbone::{Quotas, Service};
use backbone_testkit::{ClientAuth, KafkaCluster, unique};
use rdkafka::consumer::Consumer as _;
use serde_json::Value;

/// `backbone estate <args>` as `user` on `kafka`.
fn backbone(kafka: &KafkaCluster, user: &str, args: &[&str]) -> Output {
    let env: BTreeMap<String, String> = kafka.client_env(user, ClientAuth::Plain).expect("a SASL cluster");
    Command::new(env!("CARGO_BIN_EXE_backbone"))
        .arg("estate")
        .args(args)
        .env_clear()
        .envs(env)
        .env("BACKBONE_PROFILE", "development")
        .output()
        .expect("run backbone")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn write(dir: &Path, file: &str, contents: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn apply_twice_changes_nothing_prune_removes_only_the_stale_and_a_bad_estate_is_refused_first() {
    let kafka =
        KafkaCluster::builder().scram(["orders", "stock"]).start().expect("a SASL (PLAIN, SCRAM) broker");
    let dir = tempfile::tempdir().unwrap();
    let created = TopicSpec::public("orders", unique("created"), 1).partitions(2).build().unwrap();
    let orders = Service::new("orders")
        .owns(&created)
        .quotas(Quotas { producer_byte_rate: Some(1 << 20), ..Quotas::default() })
        .spec()
        .unwrap();
    let dlq = dead_letter_topic("stock", &created).unwrap();
    let stock =
        Service::new("stock").owns(&dlq).consumes(&created).consumer(&created, "stock.reserve", false);
    let orders_file = write(dir.path(), "orders.json", &orders.to_json());
    let stock_file = write(dir.path(), "stock.json", &stock.clone().spec().unwrap().to_json());
    let specs = ["--spec", orders_file.to_str().unwrap(), "--spec", stock_file.to_str().unwrap()];

    // The plan shows everything to do, as JSON too; applying does it.
    let plan = ok(&backbone(&kafka, "admin", &[&["plan"][..], &specs].concat()));
    assert!(plan.contains(&format!("+ create {}", created.name())), "{plan}");
    assert!(plan.contains(&format!("+ ALLOW User:stock READ topic literal {}", created.name())), "{plan}");
    assert!(plan.contains("quota User:orders producer_byte_rate"), "{plan}");
    let json: Value =
        serde_json::from_str(&ok(&backbone(&kafka, "admin", &[&["plan", "--json"][..], &specs].concat())))
            .expect("JSON");
    assert_eq!(json["topics"]["actions"][0]["action"], "create", "{json}");
    assert!(json["access"]["create_acls"].as_array().is_some_and(|a| !a.is_empty()), "{json}");
    let applied = backbone(&kafka, "admin", &[&["apply"][..], &specs].concat());
    ok(&applied);
    assert!(text(&applied.stderr).contains("applied"), "{}", text(&applied.stderr));

    // Twice: nothing to change.
    let again = backbone(&kafka, "admin", &[&["apply", "--prune"][..], &specs].concat());
    ok(&again);
    assert!(
        text(&again.stderr).contains("nothing to change"),
        "{}{}",
        text(&again.stdout),
        text(&again.stderr)
    );

    // Stock no longer reads Orders' topic: --prune removes its READ and DESCRIBE on it, nothing else.
    let stock_alone =
        write(dir.path(), "stock-alone.json", &Service::new("stock").owns(&dlq).spec().unwrap().to_json());
    let fewer = ["--spec", orders_file.to_str().unwrap(), "--spec", stock_alone.to_str().unwrap()];
    let plan = ok(&backbone(&kafka, "admin", &[&["plan", "--prune"][..], &fewer].concat()));
    let removed: Vec<&str> = plan.lines().filter(|l| l.starts_with("- ")).collect();
    assert_eq!(removed.len(), 2, "{plan}");
    assert!(removed.iter().all(|l| l.contains("User:stock") && l.contains(created.name())), "{plan}");
    assert!(!plan.lines().any(|l| l.starts_with("+ ")), "{plan}");
    let without_prune = ok(&backbone(&kafka, "admin", &[&["plan"][..], &fewer].concat()));
    assert!(
        !without_prune.lines().any(|l| l.starts_with("- ")),
        "nothing removed without --prune: {without_prune}"
    );
    ok(&backbone(&kafka, "admin", &[&["apply", "--prune"][..], &fewer].concat()));
    let after = backbone(&kafka, "admin", &[&["apply", "--prune"][..], &fewer].concat());
    assert!(
        text(&after.stderr).contains("nothing to change"),
        "{}{}",
        text(&after.stdout),
        text(&after.stderr)
    );

    // Two writers of one topic: refused before anything is planned or applied.
    let forged = {
        let mut json: Value = serde_json::from_str(&orders.to_json()).unwrap();
        json["name"] = "stock".into();
        json
    };
    let two_writers = write(dir.path(), "two-writers.json", &forged.to_string());
    let both = ["--spec", orders_file.to_str().unwrap(), "--spec", two_writers.to_str().unwrap()];
    let refused = backbone(&kafka, "admin", &[&["apply"][..], &both].concat());
    assert!(!refused.status.success());
    let why = text(&refused.stderr);
    assert!(why.contains(created.name()) && why.contains("orders"), "{why}");
    assert!(!why.contains("applied"), "{why}");

    // SCRAM users from a credentials file: created where missing, then nothing to change; the user
    // logs in with SCRAM-SHA-512.
    let carol = unique("carol");
    let credentials = write(dir.path(), "scram.txt", &format!("# users\n{carol}=s3cret-{carol}\n"));
    let with_users = [&fewer[..], &["--scram-credentials", credentials.to_str().unwrap()]].concat();
    let plan = ok(&backbone(&kafka, "admin", &[&["plan"][..], &with_users].concat()));
    assert!(plan.contains(&format!("+ SCRAM-SHA-512 credential for User:{carol}")), "{plan}");
    ok(&backbone(&kafka, "admin", &[&["apply"][..], &with_users].concat()));
    let after = backbone(&kafka, "admin", &[&["apply"][..], &with_users].concat());
    assert!(
        text(&after.stderr).contains("nothing to change"),
        "{}{}",
        text(&after.stdout),
        text(&after.stderr)
    );
    let login: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", &carol)
        .set("sasl.password", format!("s3cret-{carol}"))
        .create()
        .unwrap();
    login.fetch_metadata(None, std::time::Duration::from_secs(30)).expect("carol logs in with SCRAM");

    // A principal that may not manage ACLs: a clear refusal, not a hang.
    let denied = backbone(&kafka, "stock", &[&["plan"][..], &specs].concat());
    assert!(!denied.status.success());
    assert!(text(&denied.stderr).contains("User:stock"), "{}", text(&denied.stderr));
}
