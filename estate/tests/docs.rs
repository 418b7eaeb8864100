//! The sample estate's generated documents in `docs/estate` are what its code says today: this
//! fails when they are stale. `BACKBONE_BLESS=1` rewrites them.

use std::path::PathBuf;

use backbone_estate::{Estate, asyncapi, graph};

/// The commands that regenerate the documents, from the workspace root.
const REGENERATE: &str = "\
cargo run -p backbone-cli -- estate asyncapi --workspace --out docs/estate/asyncapi.json
cargo run -p backbone-cli -- estate graph --workspace --out docs/estate/topology.mmd
cargo run -p backbone-cli -- estate graph --workspace --format svg --out docs/estate/topology.svg
(or: BACKBONE_BLESS=1 cargo test -p estate --test docs)";

fn sample_estate() -> Estate {
    Estate::of([orders::app().spec().unwrap(), stock::app().spec().unwrap()]).unwrap()
}

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/estate")
}

#[test]
fn the_sample_estate_checks_clean() {
    let estate = sample_estate();
    assert_eq!(estate.check(), []);
    // The checks have something to compare: what each reads, and the producers' keys.
    let stock = estate.service("stock").unwrap();
    let expected = stock.expects().iter().find(|e| e.topic == "orders.public.order-v1").unwrap();
    assert_eq!(
        (expected.record.as_str(), expected.key.as_deref()),
        ("backbone.orders.v1.Order", Some("string"))
    );
    let orders = estate.service("orders").unwrap();
    assert!(orders.events().iter().all(|e| e.key.as_deref() == Some("string")), "{:?}", orders.events());
}

#[test]
fn generated_documents_are_up_to_date() {
    let estate = sample_estate();
    let generated = [
        ("asyncapi.json", asyncapi::to_string(&asyncapi::document(&estate, asyncapi::DEFAULT_TITLE))),
        ("topology.mmd", graph::mermaid(&estate)),
        ("topology.svg", graph::svg(&estate)),
    ];
    let bless = std::env::var_os("BACKBONE_BLESS").is_some();
    let mut stale = Vec::new();
    for (file, text) in generated {
        let path = docs().join(file);
        if bless {
            std::fs::create_dir_all(docs()).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(format!("docs/estate/{file}"));
        }
    }
    assert!(
        stale.is_empty(),
        "{} no longer match(es) the services' code; regenerate with:\n{REGENERATE}",
        stale.join(", ")
    );
}
