//! `backbone schemas check`: the compatibility gate for the Avro contracts in `schemas/` (R11).
//!
//! A contract lives in `schemas/<owner>/<event>-v<N>.avsc` and is the schema of the public topic
//! `<owner>.public.<event>-v<N>`, registered under the subject `<topic>-value` (TopicNameStrategy). It
//! is a record, and may declare its compatibility rule with a top-level attribute
//! `"backbone.compatibility": "FULL"` (`BACKWARD`, `BACKWARD_TRANSITIVE`, `FORWARD`,
//! `FORWARD_TRANSITIVE`, `FULL`, `FULL_TRANSITIVE` or `NONE`; `BACKWARD` by default, as in the
//! registry).
//!
//! - **Offline** (the default; no registry needed): every `.avsc` under `--dir` is compared with its
//!   previous versions in git: the one at `--against` (default `HEAD`) for a plain rule, every
//!   committed version up to `--against` (following renames) for a `*_TRANSITIVE` one. BACKWARD means
//!   the new schema reads data written with the old one, FORWARD the old reads the new, FULL both. A
//!   file that is not in `--against` is new; one unchanged since `--against` passes as it is.
//! - **`--registry URL`** (a Confluent-compatible base URL; Apicurio: `…/apis/ccompat/v7`): each schema
//!   is tested against the latest version of its subject by the registry, under the subject's rule
//!   there; a subject the registry does not know is new. For checkouts without git history. The
//!   registry's own messages are printed when it gives any (Confluent's `verbose=true`); the reason is
//!   also worked out here from the subject's latest version and rule, since Apicurio gives none.
//!   User info in the URL, or `SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=user:password`, is sent as basic
//!   authentication; `SCHEMA_REGISTRY_CA_LOCATION` names a CA to trust for an `https://` registry.
//!
//! One line per file: `ok   <path> (…)`, `new  <path> (…)` or `FAIL <path>: <reason>`, where the
//! reason names the field and why it breaks the rule.
//!
//! Exit codes: 0 every schema passes, 1 at least one fails, 2 the check could not run (usage, no git
//! history, an unknown revision, an unreachable registry).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use apache_avro::Schema;
use backbone::TopicSpec;
use backbone::schema::compat::{Rule, RuleKind, incompatibilities, type_name};
use backbone::schema::{SchemaError, SubjectStrategy};
use backbone::topic::validate_service_name;
use clap::{Args, Subcommand};

/// The exit code when the check could not run.
const CANNOT_RUN: u8 = 2;
/// The top-level attribute a schema declares its compatibility rule with.
const RULE_ATTRIBUTE: &str = "backbone.compatibility";

#[derive(Debug, Subcommand)]
pub(crate) enum SchemasCommand {
    /// Check every `.avsc` under --dir against its previous versions in git (or the registry).
    ///
    /// Prints `ok`, `new` or `FAIL` with the reason per file; exits 1 if any fails, 2 if the check
    /// could not run.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The directory holding `<owner>/<event>-v<N>.avsc` contracts.
    #[arg(long, value_name = "DIR", default_value = "schemas")]
    dir: PathBuf,
    /// The git revision whose versions the working files are checked against.
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    against: String,
    /// Ask this schema registry (Confluent-compatible base URL) instead of git history.
    #[arg(long, value_name = "URL", conflicts_with = "against")]
    registry: Option<String>,
}

/// Why the check could not run.
#[derive(Debug)]
enum CheckError {
    /// `--dir` is missing or unreadable.
    Dir { path: PathBuf, reason: String },
    /// The current directory is not in a git repository.
    NoGit(String),
    /// `--against` names no commit.
    UnknownRevision { rev: String, detail: String },
    /// A git command failed unexpectedly.
    Git(String),
    /// The registry could not be asked.
    Registry(String),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir { path, reason } => write!(f, "{}: {reason}", path.display()),
            Self::NoGit(detail) => write!(
                f,
                "not in a git repository ({detail}): the offline check compares each schema with its \
                 history in git; where there is none (a CI checkout without .git, an unpacked archive) \
                 run `backbone schemas check --registry URL` to ask the schema registry instead"
            ),
            Self::UnknownRevision { rev, detail } => write!(
                f,
                "--against {rev}: no such commit ({detail}); a repository without commits, or a shallow \
                 clone that lacks it, has no history to check against: commit or fetch it (e.g. \
                 `git fetch --unshallow`), or run with --registry URL"
            ),
            Self::Git(detail) => write!(f, "git: {detail}"),
            Self::Registry(detail) => write!(f, "schema registry: {detail}"),
        }
    }
}

impl std::error::Error for CheckError {}

pub(crate) async fn run(command: SchemasCommand) -> ExitCode {
    let SchemasCommand::Check(args) = command;
    match check(&args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("backbone schemas check: {e}");
            ExitCode::from(CANNOT_RUN)
        }
    }
}

async fn check(args: &CheckArgs) -> Result<ExitCode, CheckError> {
    let files = avsc_files(&args.dir)?;
    let mut source = match &args.registry {
        Some(url) => Source::Registry(Registry::new(url)?),
        None => Source::Git(Git::open(&args.against)?),
    };
    if files.is_empty() {
        eprintln!("backbone schemas check: no .avsc files under {}", args.dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0;
    for file in &files {
        let outcome = match Contract::read(&args.dir, file) {
            Err(reason) => Outcome::Fail(reason),
            Ok(contract) => match &mut source {
                Source::Git(git) => git.check(file, &contract),
                Source::Registry(registry) => registry.check(&contract).await?,
            },
        };
        match outcome {
            Outcome::Ok(note) => println!("ok   {} ({note})", file.display()),
            Outcome::New(note) => println!("new  {} ({note})", file.display()),
            Outcome::Fail(reason) => {
                failed += 1;
                println!("FAIL {}: {reason}", file.display());
            }
        }
    }
    eprintln!("backbone schemas check: {} schema(s), {failed} failed", files.len());
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Every `.avsc` file under `dir`, sorted.
fn avsc_files(dir: &Path) -> Result<Vec<PathBuf>, CheckError> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), CheckError> {
        let error = |e: std::io::Error| CheckError::Dir { path: dir.to_owned(), reason: e.to_string() };
        for entry in std::fs::read_dir(dir).map_err(error)? {
            let path = entry.map_err(error)?.path();
            if path.is_dir() {
                walk(&path, files)?;
            } else if path.extension().is_some_and(|e| e == "avsc") {
                files.push(path);
            }
        }
        Ok(())
    }
    if !dir.is_dir() {
        return Err(CheckError::Dir {
            path: dir.to_owned(),
            reason: "no such directory (choose another with --dir)".into(),
        });
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// What became of one file.
#[derive(Debug)]
enum Outcome {
    Ok(String),
    New(String),
    Fail(String),
}

/// A contract file, read, parsed and named.
#[derive(Debug)]
struct Contract {
    text: String,
    schema: Schema,
    rule: Rule,
    /// The subject it is registered under.
    subject: String,
}

impl Contract {
    /// Reads `file` (under `dir`) and checks the rules any version must obey; `Err` is the failure.
    fn read(dir: &Path, file: &Path) -> Result<Self, String> {
        let topic = topic_of(dir, file)?;
        let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read it: {e}"))?;
        let schema = Schema::parse_str(&text).map_err(|e| format!("not a valid Avro schema: {e}"))?;
        if !matches!(schema, Schema::Record(_)) {
            return Err(format!(
                "the schema is {}, not a record: an event's contract is a record",
                type_name(&schema)
            ));
        }
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("not valid JSON: {e}"))?;
        let rule = match json.get(RULE_ATTRIBUTE) {
            None => Rule { kind: RuleKind::Backward, transitive: false },
            Some(serde_json::Value::String(name)) => Rule::parse(name).ok_or_else(|| {
                format!("\"{RULE_ATTRIBUTE}\": \"{name}\" is not a rule: use {}", Rule::NAMES)
            })?,
            Some(other) => {
                return Err(format!("\"{RULE_ATTRIBUTE}\" is {other}, not a string: use {}", Rule::NAMES));
            }
        };
        let subject = SubjectStrategy::TopicName.subject(&topic, &backbone::schema::full_name(&schema));
        Ok(Self { text, schema, rule, subject })
    }
}

/// The public topic a contract file is the schema of, from its path: `<owner>/<event>-v<N>.avsc`.
fn topic_of(dir: &Path, file: &Path) -> Result<String, String> {
    let convention = "a contract is <dir>/<owner>/<event>-v<N>.avsc, in lower-case letters, digits and '-' \
                      (e.g. schemas/orders/order-created-v1.avsc)";
    let rel = file.strip_prefix(dir).map_err(|_| format!("not under {}", dir.display()))?;
    let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
    let [owner, name] = parts.as_slice() else {
        return Err(format!("misnamed: {convention}"));
    };
    validate_service_name(owner).map_err(|e| format!("misnamed: owner `{owner}`: {e}"))?;
    let stem = name.strip_suffix(".avsc").unwrap_or(name);
    let misnamed = |why: &str| format!("misnamed: `{name}` {why}; {convention}");
    let (event, version) = stem.rsplit_once("-v").ok_or_else(|| misnamed("has no -v<N> version suffix"))?;
    let version = match version.parse::<u32>() {
        Ok(v) if v >= 1 && version == v.to_string() => v,
        _ => return Err(misnamed("has no -v<N> version suffix (N a number from 1, no leading zeros)")),
    };
    let event_ok = event.starts_with(|c: char| c.is_ascii_lowercase())
        && !event.ends_with('-')
        && event.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !event_ok {
        return Err(misnamed(
            "is not an event name (lower-case letters, digits and '-', starting with a letter)",
        ));
    }
    let topic =
        TopicSpec::public(owner.as_ref(), event, version).build().map_err(|e| format!("misnamed: {e}"))?;
    Ok(topic.name().to_owned())
}

/// Where previous versions come from.
enum Source {
    Git(Git),
    Registry(Registry),
}

/// The offline check: previous versions from git.
struct Git {
    /// The repository's top level (canonical).
    root: PathBuf,
    /// `--against` as given.
    rev: String,
    /// Whether the clone is shallow (transitive checks may then miss old versions).
    shallow: bool,
    /// Whether the shallow warning was printed.
    warned: bool,
}

impl Git {
    fn open(rev: &str) -> Result<Self, CheckError> {
        let root = match git_in(Path::new("."), &["rev-parse", "--show-toplevel"]) {
            Ok(out) => PathBuf::from(out.trim_end()),
            Err(detail) => return Err(CheckError::NoGit(detail)),
        };
        let root = root.canonicalize().map_err(|e| CheckError::Git(format!("{}: {e}", root.display())))?;
        git_in(&root, &["rev-parse", "--verify", "--end-of-options", &format!("{rev}^{{commit}}")])
            .map_err(|detail| CheckError::UnknownRevision { rev: rev.to_owned(), detail })?;
        let shallow =
            git_in(&root, &["rev-parse", "--is-shallow-repository"]).map_err(CheckError::Git)?.trim()
                == "true";
        Ok(Self { root, rev: rev.to_owned(), shallow, warned: false })
    }

    fn check(&mut self, file: &Path, contract: &Contract) -> Outcome {
        let path = match self.repo_path(file) {
            Ok(path) => path,
            Err(reason) => return Outcome::Fail(reason),
        };
        let rule = contract.rule;
        let at_rev = self.show(&self.rev, &path);
        if at_rev.as_deref() == Some(contract.text.as_str()) {
            return Outcome::Ok(format!("{rule}, unchanged since {}", self.rev));
        }
        // (label, text) of each previous version to check against.
        let mut previous: Vec<(String, String)> = at_rev.map(|t| (self.rev.clone(), t)).into_iter().collect();
        if rule.transitive {
            if self.shallow && !self.warned {
                self.warned = true;
                eprintln!(
                    "backbone schemas check: warning: this clone is shallow, so *_TRANSITIVE rules see \
                     only the history it has (`git fetch --unshallow` for all of it)"
                );
            }
            match self.history(&path) {
                Ok(versions) => previous.extend(versions),
                Err(detail) => return Outcome::Fail(format!("reading its git history: {detail}")),
            }
        }
        let mut seen = BTreeSet::new();
        previous.retain(|(_, text)| seen.insert(text.clone()));
        if previous.is_empty() {
            return Outcome::New(format!("not in {}", self.rev));
        }
        if rule.kind == RuleKind::None {
            return Outcome::Ok(format!("{rule}: compatibility not checked"));
        }
        let mut failures = Vec::new();
        for (label, text) in &previous {
            let old = match Schema::parse_str(text) {
                Ok(old) => old,
                Err(e) => {
                    // Nothing can have been written with a schema that does not parse.
                    eprintln!(
                        "backbone schemas check: warning: {} at {label} is not valid Avro ({e}); skipped",
                        path
                    );
                    continue;
                }
            };
            let reasons = incompatibilities(rule, &old, &contract.schema);
            if !reasons.is_empty() {
                failures.push(format!("{rule} against {label}: {}", reasons.join("; ")));
            }
        }
        if !failures.is_empty() {
            return Outcome::Fail(failures.join("; "));
        }
        if rule.transitive {
            Outcome::Ok(format!("{rule} against {} version(s) up to {}", previous.len(), self.rev))
        } else {
            Outcome::Ok(format!("{rule} against {}", self.rev))
        }
    }

    /// `file`'s path from the repository's top level, with `/` separators.
    fn repo_path(&self, file: &Path) -> Result<String, String> {
        let canonical = file.canonicalize().map_err(|e| format!("cannot resolve its path: {e}"))?;
        let rel = canonical
            .strip_prefix(&self.root)
            .map_err(|_| format!("outside the git repository at {}", self.root.display()))?;
        Ok(rel.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>().join("/"))
    }

    /// The file's text at `rev`, or `None` if it is not there.
    fn show(&self, rev: &str, path: &str) -> Option<String> {
        git_in(&self.root, &["show", &format!("{rev}:{path}")]).ok()
    }

    /// Every committed version of the file up to `--against`, following renames, labelled by commit.
    fn history(&self, path: &str) -> Result<Vec<(String, String)>, String> {
        let log =
            git_in(&self.root, &["log", "--format=%H", "--name-only", "--follow", &self.rev, "--", path])?;
        let mut versions = Vec::new();
        let mut commit: Option<&str> = None;
        for line in log.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if line.len() >= 40 && line.chars().all(|c| c.is_ascii_hexdigit()) {
                commit = Some(line);
            } else if let Some(sha) = commit.take() {
                // Absent when the commit deleted the file.
                if let Some(text) = self.show(sha, line) {
                    versions.push((format!("commit {}", &sha[..12]), text));
                }
            }
        }
        Ok(versions)
    }
}

/// Runs git in `dir`; its stdout, or why it failed.
fn git_in(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out =
        Command::new("git").args(args).current_dir(dir).output().map_err(|e| format!("running git: {e}"))?;
    if out.status.success() {
        String::from_utf8(out.stdout).map_err(|e| format!("git printed non-UTF-8: {e}"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// The `--registry` check: the registry tests each schema against its subject's latest version,
/// through the framework's own client (`backbone::schema::Registry`: basic authentication and a CA
/// from `SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO` and `SCHEMA_REGISTRY_CA_LOCATION`, as services take
/// them; the reasons worked out from the latest version when the registry gives none; URLs with
/// user info printed redacted).
struct Registry {
    client: backbone::schema::Registry,
}

impl Registry {
    fn new(url: &str) -> Result<Self, CheckError> {
        let base = url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CheckError::Registry(format!(
                "--registry {}: expected an http:// or https:// URL",
                backbone::config::redact_url(url)
            )));
        }
        let security = backbone::config::RegistrySecurity::from_env()
            .map_err(|e| CheckError::Registry(e.to_string()))?;
        let client = backbone::schema::Registry::with_security(base, &security)
            .map_err(|e| CheckError::Registry(e.to_string()))?;
        Ok(Self { client })
    }

    async fn check(&self, contract: &Contract) -> Result<Outcome, CheckError> {
        let subject = &contract.subject;
        // Asked first: Apicurio answers `is_compatible: true` for a subject it does not know.
        if !self.client.has_subject(subject).await.map_err(unreachable)? {
            return Ok(Outcome::New(format!("subject {subject} not in the registry")));
        }
        match self.client.check(subject, &contract.text).await {
            Ok(()) => Ok(Outcome::Ok(format!("registry: compatible with the latest version of {subject}"))),
            Err(SchemaError::Incompatible { reason, .. }) => {
                Ok(Outcome::Fail(format!("incompatible with the latest version of {subject}: {reason}")))
            }
            Err(SchemaError::InvalidSchema { reason }) => {
                Ok(Outcome::Fail(format!("the registry refused the check: {reason}")))
            }
            Err(e) => Err(unreachable(e)),
        }
    }
}

/// A registry that could not be asked (its error names the URL redacted).
fn unreachable(e: SchemaError) -> CheckError {
    CheckError::Registry(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(r#"{{"type":"record","name":"E","namespace":"t","fields":[{fields}]}}"#))
            .unwrap()
    }

    const BACKWARD: Rule = Rule { kind: RuleKind::Backward, transitive: false };
    const FORWARD: Rule = Rule { kind: RuleKind::Forward, transitive: false };

    #[tokio::test]
    async fn item_7_registry_errors_print_no_password() {
        let refused = Registry::new("ftp://ci:registry-s3cret@registry.example").err().unwrap().to_string();
        assert!(refused.contains("ftp://ci:***@registry.example"), "{refused}");
        // Nothing listens on port 1: the client's error quotes the URL, which is redacted.
        let registry = Registry::new("http://ci:registry-s3cret@127.0.0.1:1/apis/ccompat/v7").unwrap();
        let contract = Contract {
            subject: "orders.public.order-v1-value".into(),
            text: r#"{"type":"string"}"#.into(),
            schema: Schema::parse_str(r#"{"type":"string"}"#).unwrap(),
            rule: Rule { kind: RuleKind::Backward, transitive: false },
        };
        let unreachable = match registry.check(&contract).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("nothing listens on port 1"),
        };
        assert!(unreachable.contains("http://ci:***@127.0.0.1:1/apis/ccompat/v7"), "{unreachable}");
        for text in [refused, unreachable] {
            assert!(!text.contains("s3cret"), "a password in `{text}`");
        }
    }

    #[test]
    fn rules_parse_and_print_as_the_registry_names_them() {
        for name in [
            "BACKWARD",
            "BACKWARD_TRANSITIVE",
            "FORWARD",
            "FORWARD_TRANSITIVE",
            "FULL",
            "FULL_TRANSITIVE",
            "NONE",
        ] {
            assert_eq!(Rule::parse(name).unwrap().to_string(), name);
        }
        assert_eq!(Rule::parse("NONE_TRANSITIVE"), None);
        assert_eq!(Rule::parse("backward"), None);
    }

    #[test]
    fn narrowing_and_enum_symbols_are_explained() {
        let old = schema(r#"{"name":"n","type":"long"}"#);
        let new = schema(r#"{"name":"n","type":"int"}"#);
        let reasons = incompatibilities(BACKWARD, &old, &new);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains("field `n` changed type from long to int: a narrowing"), "{reasons:?}");
        // Widening is fine for BACKWARD but breaks FORWARD.
        assert!(incompatibilities(BACKWARD, &new, &old).is_empty());
        let reasons = incompatibilities(FORWARD, &new, &old);
        assert!(reasons[0].contains("from int to long"), "{reasons:?}");

        let old = schema(r#"{"name":"s","type":{"type":"enum","name":"S","symbols":["A","B","C"]}}"#);
        let new = schema(r#"{"name":"s","type":{"type":"enum","name":"S","symbols":["A","C"]}}"#);
        let reasons = incompatibilities(BACKWARD, &old, &new);
        assert!(reasons[0].contains("field `s`: enum symbol(s) B removed"), "{reasons:?}");
        let reasons = incompatibilities(FORWARD, &new, &old);
        assert!(reasons[0].contains("enum symbol(s) B added"), "{reasons:?}");
    }

    #[test]
    fn full_says_a_type_change_once() {
        let full = Rule { kind: RuleKind::Full, transitive: false };
        let old = schema(r#"{"name":"n","type":"int"}"#);
        let new = schema(r#"{"name":"n","type":"string"}"#);
        let reasons = incompatibilities(full, &old, &new);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].starts_with("field `n` changed type from int to string: "), "{reasons:?}");
    }

    #[test]
    fn nested_records_name_the_field_path() {
        let old = schema(
            r#"{"name":"a","type":{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}}"#,
        );
        let new = schema(
            r#"{"name":"a","type":{"type":"record","name":"A","fields":[{"name":"x","type":"int"},{"name":"y","type":"string"}]}}"#,
        );
        let reasons = incompatibilities(BACKWARD, &old, &new);
        assert!(reasons[0].starts_with("field `a.y` was added and has no default"), "{reasons:?}");
    }

    #[test]
    fn paths_follow_the_convention() {
        let dir = Path::new("schemas");
        assert_eq!(
            topic_of(dir, Path::new("schemas/orders/order-created-v1.avsc")).unwrap(),
            "orders.public.order-created-v1"
        );
        for bad in [
            "schemas/orders/OrderCreated.avsc",
            "schemas/orders/order-created.avsc",
            "schemas/orders/order-created-v0.avsc",
            "schemas/orders/order-created-v01.avsc",
            "schemas/orders/order_created-v1.avsc",
            "schemas/Orders/order-created-v1.avsc",
            "schemas/order-created-v1.avsc",
            "schemas/orders/x/order-created-v1.avsc",
        ] {
            let e = topic_of(dir, Path::new(bad)).unwrap_err();
            assert!(e.starts_with("misnamed"), "{bad}: {e}");
        }
    }
}
