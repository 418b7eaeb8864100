//! `backbone schemas check` (R11): edits to `schemas/` checked against their history in a real git
//! repository, and against the shared schema registry with `--registry`.

use std::path::Path;
use std::process::{Command, Output};

use backbone_testkit::{shared_registry, unique};

const PATH: &str = "schemas/orders/order-created-v1.avsc";

/// `OrderCreated` with `fields` (JSON field objects) and, when given, a declared compatibility rule.
fn record(rule: Option<&str>, fields: &str) -> String {
    let rule = rule.map_or_else(String::new, |r| format!(r#""backbone.compatibility": "{r}","#));
    format!(
        r#"{{"type": "record", "name": "OrderCreated", "namespace": "orders", {rule}
  "fields": [{fields}]}}"#
    )
}

const ID: &str = r#"{"name": "id", "type": "string"}"#;
const QUANTITY: &str = r#"{"name": "quantity", "type": "int"}"#;

fn v1() -> String {
    record(None, &format!("{ID}, {QUANTITY}"))
}

/// A scratch git repository with a committer of its own.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Self {
        let repo = Self { dir: tempfile::tempdir().expect("tempdir") };
        repo.git(&["init", "--quiet"]);
        repo.git(&["config", "user.name", "Schema Tester"]);
        repo.git(&["config", "user.email", "tester@example.com"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git").args(args).current_dir(self.path()).output().expect("run git");
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    fn write(&self, rel: &str, contents: &str) {
        write(self.path(), rel, contents);
    }

    /// Commits everything; returns the commit's id.
    fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// A repository with v1 of the contract committed.
    fn with_v1() -> Self {
        let repo = Self::new();
        repo.write(PATH, &v1());
        repo.commit("order-created v1");
        repo
    }
}

fn write(dir: &Path, rel: &str, contents: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, contents).expect("write");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `backbone schemas check <args>` in `dir`: exit code, stdout, stderr.
fn check(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_backbone"))
        .args(["schemas", "check"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run backbone");
    (out.status.code().expect("exit code"), text(&out.stdout), text(&out.stderr))
}

#[test]
fn r11_an_incompatible_edit_fails_naming_the_field() {
    let repo = Repo::with_v1();

    // A field without a default: the new schema cannot read events written before it.
    repo.write(
        PATH,
        &record(None, &format!(r#"{ID}, {QUANTITY}, {{"name": "customer", "type": "string"}}"#)),
    );
    let (code, out, err) = check(repo.path(), &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with(&format!("FAIL {PATH}: BACKWARD against HEAD: ")), "{out}");
    assert!(out.contains("field `customer` was added and has no default"), "{out}");

    // A type change: the field and both types.
    repo.write(PATH, &record(None, &format!(r#"{ID}, {{"name": "quantity", "type": "string"}}"#)));
    let (code, out, err) = check(repo.path(), &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("field `quantity` changed type from int to string"), "{out}");

    // Narrowing a committed long.
    repo.write(PATH, &record(None, &format!(r#"{ID}, {{"name": "quantity", "type": "long"}}"#)));
    repo.commit("quantity widened to long");
    repo.write(PATH, &v1());
    let (code, out, _) = check(repo.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("field `quantity` changed type from long to int: a narrowing"), "{out}");

    // An enum symbol removed.
    let status = |symbols: &str| {
        record(
            None,
            &format!(
                r#"{ID}, {{"name": "status", "type": {{"type": "enum", "name": "Status", "symbols": [{symbols}]}}}}"#
            ),
        )
    };
    repo.write(PATH, &status(r#""NEW", "PAID", "SHIPPED""#));
    repo.commit("status");
    repo.write(PATH, &status(r#""NEW", "SHIPPED""#));
    let (code, out, _) = check(repo.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("field `status`: enum symbol(s) PAID removed"), "{out}");
}

#[test]
fn a_compatible_edit_passes() {
    let repo = Repo::with_v1();
    let (code, out, err) = check(repo.path(), &[]);
    assert_eq!(
        (code, out.as_str()),
        (0, format!("ok   {PATH} (BACKWARD, unchanged since HEAD)\n").as_str()),
        "{err}"
    );

    repo.write(
        PATH,
        &record(None, &format!(r#"{ID}, {QUANTITY}, {{"name": "note", "type": "string", "default": ""}}"#)),
    );
    let (code, out, err) = check(repo.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, format!("ok   {PATH} (BACKWARD against HEAD)\n"));

    // --against another revision, from a subdirectory with --dir.
    let first = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    repo.commit("note");
    let (code, out, err) = check(&repo.path().join("schemas"), &["--dir", ".", "--against", &first]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, format!("ok   ./orders/order-created-v1.avsc (BACKWARD against {first})\n"));
}

#[test]
fn forward_and_full_transitive_rules_declared_in_the_file() {
    // FORWARD: old readers read new data, so a field they require cannot go.
    let repo = Repo::new();
    repo.write(PATH, &record(Some("FORWARD"), &format!("{ID}, {QUANTITY}")));
    repo.commit("v1, FORWARD");
    repo.write(PATH, &record(Some("FORWARD"), ID));
    let (code, out, err) = check(repo.path(), &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with(&format!("FAIL {PATH}: FORWARD against HEAD: ")), "{out}");
    assert!(out.contains("field `quantity` was removed and has no default in the old schema"), "{out}");
    // Adding a field without a default is fine under FORWARD: old readers ignore it.
    repo.write(
        PATH,
        &record(Some("FORWARD"), &format!(r#"{ID}, {QUANTITY}, {{"name": "c", "type": "string"}}"#)),
    );
    let (code, out, err) = check(repo.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, format!("ok   {PATH} (FORWARD against HEAD)\n"));

    // FULL_TRANSITIVE: v3 is FULL-compatible with v2 but changes the type v1 gave `a`.
    let repo = Repo::new();
    let a = |ty: &str, default: &str| format!(r#"{{"name": "a", "type": "{ty}", "default": {default}}}"#);
    repo.write(PATH, &record(Some("FULL_TRANSITIVE"), &format!("{ID}, {}", a("int", "0"))));
    let first = repo.commit("v1");
    repo.write(PATH, &record(Some("FULL_TRANSITIVE"), ID));
    repo.commit("v2 drops a (it had a default)");
    repo.write(PATH, &record(Some("FULL_TRANSITIVE"), &format!("{ID}, {}", a("string", "\"\""))));
    let (code, out, err) = check(repo.path(), &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(&format!("FULL_TRANSITIVE against commit {}: ", &first[..12])), "{out}");
    assert!(out.contains("field `a` changed type from int to string"), "{out}");
    assert!(!out.contains("against HEAD"), "v2 (HEAD) is not broken: {out}");

    // The same edit under plain FULL compares with HEAD only, and passes.
    repo.write(PATH, &record(Some("FULL"), &format!("{ID}, {}", a("string", "\"\""))));
    let (code, out, err) = check(repo.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, format!("ok   {PATH} (FULL against HEAD)\n"));

    // An unknown rule fails.
    repo.write(PATH, &record(Some("SIDEWAYS"), ID));
    let (code, out, _) = check(repo.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\"backbone.compatibility\": \"SIDEWAYS\" is not a rule"), "{out}");
}

#[test]
fn new_files_pass_and_misnamed_or_invalid_ones_fail() {
    let repo = Repo::with_v1();
    repo.write("schemas/orders/order-shipped-v1.avsc", &record(None, ID));
    let (code, out, err) = check(repo.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("new  schemas/orders/order-shipped-v1.avsc (not in HEAD)\n"), "{out}");
    assert!(out.contains(&format!("ok   {PATH} (BACKWARD, unchanged since HEAD)\n")), "{out}");

    repo.write("schemas/orders/OrderCreated.avsc", &v1());
    repo.write("schemas/orders/broken-v1.avsc", r#"{"type": "record", "name": "Broken", "fields": [}"#);
    repo.write("schemas/orders/plain-v1.avsc", r#""string""#);
    let (code, out, err) = check(repo.path(), &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "FAIL schemas/orders/OrderCreated.avsc: misnamed: `OrderCreated.avsc` has no -v<N> version suffix"
        ),
        "{out}"
    );
    assert!(out.contains("<dir>/<owner>/<event>-v<N>.avsc"), "{out}");
    assert!(out.contains("FAIL schemas/orders/broken-v1.avsc: not a valid Avro schema"), "{out}");
    assert!(out.contains("FAIL schemas/orders/plain-v1.avsc: the schema is string, not a record"), "{out}");
    assert!(err.contains("5 schema(s), 3 failed"), "{err}");
}

#[test]
fn without_git_history_the_check_refuses_and_suggests_the_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), PATH, &v1());
    let (code, out, err) = check(dir.path(), &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("not in a git repository") && err.contains("--registry URL"), "{err}");

    // A repository without commits has no history either.
    let repo = Repo::new();
    repo.write(PATH, &v1());
    let (code, _, err) = check(repo.path(), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--against HEAD: no such commit") && err.contains("--registry"), "{err}");

    // Usage errors.
    let (code, _, err) = check(repo.path(), &["--dir", "nowhere"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nowhere: no such directory"), "{err}");
    let (code, _, err) = check(repo.path(), &["--against", "HEAD", "--registry", "http://127.0.0.1:1"]);
    assert_eq!(code, 2, "{err}");
}

#[tokio::test]
async fn registry_mode_asks_the_registry() {
    registry_mode_asks(shared_registry().url()).await;
}

/// The same against the development registry (`backbone-devregistry`), which the one-command demo
/// uses: the check behaves as against Apicurio.
#[tokio::test]
async fn registry_mode_asks_the_development_registry() {
    let registry = backbone_devregistry::DevRegistry::start().expect("development registry");
    registry_mode_asks(registry.url()).await;
}

async fn registry_mode_asks(url: &str) {
    let url = url.to_owned();
    let owner = unique("orders");
    let subject = format!("{owner}.public.order-created-v1-value");
    let path = format!("schemas/{owner}/order-created-v1.avsc");
    let client = reqwest::Client::new();
    let registered = client
        .post(format!("{url}/subjects/{subject}/versions"))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(serde_json::json!({ "schema": v1(), "schemaType": "AVRO" }).to_string())
        .send()
        .await
        .expect("register v1");
    assert!(registered.status().is_success(), "{:?}", registered.text().await);

    // No git here: the registry is the history.
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), &path, &v1());
    let (code, out, err) = check(dir.path(), &["--registry", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, format!("ok   {path} (registry: compatible with the latest version of {subject})\n"));

    write(
        dir.path(),
        &path,
        &record(None, &format!(r#"{ID}, {QUANTITY}, {{"name": "customer", "type": "string"}}"#)),
    );
    let (code, out, err) = check(dir.path(), &["--registry", &url]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with(&format!("FAIL {path}: incompatible with the latest version of {subject}: ")),
        "{out}"
    );
    // Apicurio answers a bare `is_compatible: false` (the development registry gives reasons too);
    // the field is named from the registry's latest version and the subject's rule there.
    assert!(
        out.contains("BACKWARD") && out.contains("field `customer` was added and has no default"),
        "{out}"
    );

    let other = unique("stock");
    let new_path = format!("schemas/{other}/stock-reserved-v1.avsc");
    let new_dir = tempfile::tempdir().expect("tempdir");
    write(new_dir.path(), &new_path, &v1());
    let (code, out, err) = check(new_dir.path(), &["--registry", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!("new  {new_path} (subject {other}.public.stock-reserved-v1-value not in the registry)\n")
    );
}
