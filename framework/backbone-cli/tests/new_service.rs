//! `backbone new service NAME` in a copy of this workspace: the scaffolded service builds without a
//! warning and its own test passes against the real broker and registry; its image target and
//! Kubernetes manifests are added; scaffolding it again is
//! refused without touching anything. The nested build has a build directory of its own, so a cold
//! run compiles the dependencies once more (a few minutes).

use std::path::{Path, PathBuf};
use std::process::Command;

use backbone_testkit::{shared_kafka, shared_registry};

/// This workspace's root (the CLI crate is at `framework/backbone-cli`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("workspace root").to_path_buf()
}

/// Copies the workspace's tracked files (its git index) into `to`.
fn copy_workspace(to: &Path) {
    let root = workspace();
    let listed =
        Command::new("git").arg("-C").arg(&root).args(["ls-files", "-z"]).output().expect("git ls-files");
    assert!(listed.status.success(), "git ls-files: {}", String::from_utf8_lossy(&listed.stderr));
    for file in listed.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let relative = Path::new(std::str::from_utf8(file).expect("utf-8 path"));
        let (from, dest) = (root.join(relative), to.join(relative));
        if !from.is_file() {
            continue; // deleted in the work tree
        }
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&from, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// A build directory of its own for the nested build, kept under this test's (`target/scaffold`)
/// so reruns are warm. Not the shared one: the copy's workspace members hash like this workspace's
/// (cargo hashes members by their path in the workspace), so building them there would overwrite
/// this build's own `libbackbone-*.rlib` and break the doc tests compiled after it (E0460).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    exe.ancestors().nth(3).expect("target/<profile>/deps/<exe>").join("scaffold")
}

fn backbone(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_backbone")).args(args).output().expect("run backbone")
}

#[test]
fn a_scaffolded_service_builds_and_passes_its_test() {
    let copy = tempfile::tempdir().expect("temp dir");
    copy_workspace(copy.path());
    let workspace = copy.path().to_str().unwrap();

    let made = backbone(&["new", "service", "greeter", "--workspace", workspace]);
    let said = String::from_utf8_lossy(&made.stdout);
    assert!(made.status.success(), "{said}{}", String::from_utf8_lossy(&made.stderr));
    for file in [
        "services/greeter/src/lib.rs",
        "services/greeter/tests/service.rs",
        "schemas/greeter/greeted-v1.avsc",
    ] {
        assert!(copy.path().join(file).is_file(), "{file} written");
        assert!(said.contains(file), "{said}");
    }
    let manifest = std::fs::read_to_string(copy.path().join("Cargo.toml")).unwrap();
    assert!(manifest.contains("\"services/greeter\","), "added to the members: {manifest}");
    // Its image target and its Kubernetes manifests, beside the sample services'.
    let dockerfile = std::fs::read_to_string(copy.path().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("ARG SERVICES=\"orders stock greeter\"\n"), "{dockerfile}");
    assert!(dockerfile.contains("\nFROM runtime AS greeter\n"), "{dockerfile}");
    let kustomization =
        std::fs::read_to_string(copy.path().join("deploy/k8s/base/kustomization.yaml")).unwrap();
    assert!(
        kustomization.contains("  - stock.yaml\n  - network-policies.yaml\n  - greeter.yaml\n"),
        "{kustomization}"
    );
    assert!(kustomization.contains("  - name: backbone/greeter\n"), "{kustomization}");
    let k8s = std::fs::read_to_string(copy.path().join("deploy/k8s/base/greeter.yaml")).unwrap();
    assert!(k8s.contains("  name: greeter\n") && k8s.contains("image: backbone/greeter:0.1.0"), "{k8s}");

    // Again: refused, nothing touched.
    let again = backbone(&["new", "service", "greeter", "--workspace", workspace]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    assert_eq!(std::fs::read_to_string(copy.path().join("Cargo.toml")).unwrap(), manifest);

    // Its own test, against this test binary's broker and registry.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let tested = Command::new(cargo)
        .args(["test", "-p", "greeter"])
        .current_dir(copy.path())
        .env("CARGO_TARGET_DIR", target_dir())
        .env("KAFKA_BOOTSTRAP_SERVERS", shared_kafka().bootstrap_servers())
        .env("SCHEMA_REGISTRY_URL", shared_registry().url())
        .env_remove("BACKBONE_PROFILE")
        .output()
        .expect("cargo test");
    let (out, err) = (String::from_utf8_lossy(&tested.stdout), String::from_utf8_lossy(&tested.stderr));
    assert!(tested.status.success(), "the scaffolded service's test failed:\n{out}\n{err}");
    assert!(out.contains("test a_name_given_is_greeted ... ok"), "{out}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning")).collect();
    assert!(warnings.is_empty(), "the scaffolded service builds without warnings: {warnings:?}\n{err}");
}
