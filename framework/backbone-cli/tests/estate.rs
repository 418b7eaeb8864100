//! `backbone estate check|asyncapi|graph` on spec files and on binaries that print their spec.
//! Nothing here needs Kafka.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use backbone::Service;
use backbone::consume::dead_letter_topic;
use backbone::topic::TopicSpec;

fn backbone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backbone")).arg("estate").args(args).output().expect("run backbone")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, file: &str, contents: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, contents).unwrap();
    path
}

fn created() -> TopicSpec {
    TopicSpec::public("orders", "order-created", 1).build().unwrap()
}

fn orders_json() -> String {
    Service::new("orders").owns(&created()).spec().unwrap().to_json()
}

/// Stock reading Orders' topic in group `group`.
fn stock_json(group: &str) -> String {
    Service::new("stock")
        .consumes(&created())
        .owns(&dead_letter_topic("stock", &created()).unwrap())
        .consumer(&created(), group, false)
        .spec()
        .unwrap()
        .to_json()
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn check_passes_a_sound_estate_and_fails_on_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let orders = write(dir.path(), "orders.json", &orders_json());
    let stock = write(dir.path(), "stock.json", &stock_json("stock.reserve"));
    let out = backbone(&["check", "--spec", arg(&orders), "--spec", arg(&stock)]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        text(&out.stderr).contains("2 service(s), 2 topic(s): 0 error(s), 0 warning(s)"),
        "{}",
        text(&out.stderr)
    );

    // One file with both services, Stock's group outside its prefix.
    let both = write(dir.path(), "estate.json", &format!("[{}, {}]", orders_json(), stock_json("reserve")));
    let out = backbone(&["check", "--spec", arg(&both)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("error: service `stock` reads `orders.public.order-created-v1` in group `reserve`"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_service_found_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.json", &orders_json());
    let b = write(dir.path(), "b.json", &orders_json());
    let out = backbone(&["check", "--spec", arg(&a), "--spec", arg(&b)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("service `orders` appears twice in the estate"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn binaries_are_asked_for_their_spec() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(dir.path(), "spec.json", &stock_json("stock.reserve"));
    // A stand-in service binary: prints its spec when its first argument is `--spec`.
    let script = format!("#!/bin/sh\n[ \"$1\" = --spec ] || exit 3\ncat '{}'\n", spec.display());
    let bin = write(dir.path(), "stock", &script);
    let broken = write(dir.path(), "broken", "#!/bin/sh\necho 'no spec here' >&2\nexit 1\n");
    for path in [&bin, &broken] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let orders = write(dir.path(), "orders.json", &orders_json());
    let out = backbone(&["check", "--bin", arg(&bin), "--spec", arg(&orders)]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));

    let out = backbone(&["check", "--bin", arg(&broken)]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("--spec`") && err.contains("no spec here"), "{err}");
}

#[test]
fn asyncapi_and_graph_write_the_exports() {
    let dir = tempfile::tempdir().unwrap();
    let orders = write(dir.path(), "orders.json", &orders_json());
    let stock = write(dir.path(), "stock.json", &stock_json("stock.reserve"));
    let sources = ["--spec", arg(&orders), "--spec", arg(&stock)];

    let out = backbone(&[&["asyncapi"], &sources[..]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "backbone estate");
    assert_eq!(
        doc["channels"]["orders.public.order-created-v1"]["address"],
        "orders.public.order-created-v1"
    );
    assert_eq!(doc["operations"]["stock.receive.orders.public.order-created-v1"]["action"], "receive");

    let svg = dir.path().join("topology.svg");
    let out = backbone(&[&["graph", "--format", "svg", "--out", arg(&svg)], &sources[..]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg "));

    let out = backbone(&[&["graph"], &sources[..]].concat());
    assert!(text(&out.stdout).starts_with("flowchart LR"), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("-->|reads| s1"), "{}", text(&out.stdout));
}

#[test]
fn a_source_is_required() {
    let out = backbone(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--spec <FILE>|--bin <PATH>|--workspace"), "{}", text(&out.stderr));
}

#[test]
fn export_k8s_writes_the_strimzi_resources_of_the_specs() {
    let dir = tempfile::tempdir().unwrap();
    let orders = write(dir.path(), "orders.json", &orders_json());
    let stock = write(dir.path(), "stock.json", &stock_json("stock.reserve"));
    let out_dir = dir.path().join("strimzi");
    let out = Command::new(env!("CARGO_BIN_EXE_backbone"))
        .args(["export", "k8s", "--spec", arg(&orders), "--spec", arg(&stock), "--namespace", "ns"])
        .args(["--cluster", "events", "-o", arg(&out_dir)])
        .output()
        .expect("run backbone");
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("2 service(s), 2 topic(s) written to"), "{}", text(&out.stderr));
    // The same files as the library renders for the same estate and options.
    let estate = backbone_estate::Estate::of([
        backbone::ServiceSpec::from_json(&orders_json()).unwrap(),
        backbone::ServiceSpec::from_json(&stock_json("stock.reserve")).unwrap(),
    ])
    .unwrap();
    let options = backbone_estate::strimzi::Options {
        cluster: "events".into(),
        namespace: Some("ns".into()),
        ..Default::default()
    };
    for (file, expected) in backbone_estate::strimzi::files(&estate, &options) {
        assert_eq!(std::fs::read_to_string(out_dir.join(file)).unwrap(), expected, "{file}");
    }
    let users = std::fs::read_to_string(out_dir.join("users.yaml")).unwrap();
    assert!(users.contains("  name: stock\n  namespace: ns\n"), "{users}");
    assert!(users.contains("strimzi.io/cluster: events"), "{users}");
}
