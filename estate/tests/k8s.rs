//! The sample estate's generated Strimzi resources in `deploy/k8s/strimzi` are what its code says
//! today: this fails when they are stale. `BACKBONE_BLESS=1` rewrites them.

use std::path::PathBuf;

use backbone_estate::Estate;
use backbone_estate::strimzi::{self, Options};

/// The commands that regenerate the files, from the workspace root.
const REGENERATE: &str = "\
cargo run -p backbone-cli -- export k8s --workspace -o deploy/k8s/strimzi
(or: BACKBONE_BLESS=1 cargo test -p estate --test k8s)";

fn sample_estate() -> Estate {
    Estate::of([orders::app().spec().unwrap(), stock::app().spec().unwrap()]).unwrap()
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s/strimzi")
}

#[test]
fn generated_strimzi_resources_are_up_to_date() {
    let bless = std::env::var_os("BACKBONE_BLESS").is_some();
    let mut stale = Vec::new();
    for (file, text) in strimzi::files(&sample_estate(), &Options::default()) {
        let path = dir().join(file);
        if bless {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(format!("deploy/k8s/strimzi/{file}"));
        }
    }
    assert!(
        stale.is_empty(),
        "{} no longer match(es) the services' code; regenerate with:\n{REGENERATE}",
        stale.join(", ")
    );
}

#[test]
fn every_service_is_a_user_and_every_owned_topic_a_topic() {
    let estate = sample_estate();
    let users = strimzi::users(&estate, &Options::default());
    let names: Vec<_> = users.iter().map(|u| u["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["orders", "stock"]);
    let topics = strimzi::topics(&estate, &Options::default());
    let owned: usize = estate.services().map(|s| s.owned_topics().len()).sum();
    assert_eq!(topics.len(), owned);
    for topic in &topics {
        assert_eq!(topic["spec"]["replicas"], 3, "{topic}");
        assert_eq!(topic["spec"]["config"]["min.insync.replicas"], 2, "{topic}");
    }
}
