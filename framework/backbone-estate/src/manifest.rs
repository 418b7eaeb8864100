//! The estate's manifest: every service's [`ServiceSpec`], gathered from spec files, from service
//! binaries run with `--spec`, or from the binaries of a Cargo workspace.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backbone::ServiceSpec;
use backbone::topic::TopicSpec;

/// Why an estate could not be gathered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EstateError {
    /// Two specs name the same service.
    #[error("service `{service}` appears twice in the estate ({first} and {second})")]
    Duplicate {
        /// The service.
        service: String,
        /// Where it was first found.
        first: String,
        /// Where it was found again.
        second: String,
    },
    /// A spec file could not be read.
    #[error("reading spec {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A spec is not valid JSON of a [`ServiceSpec`] (names, settings, ownership are checked again).
    #[error("spec from {origin}: {reason}")]
    Spec {
        /// The file or binary it came from.
        origin: String,
        /// Why it is refused.
        reason: String,
    },
    /// A service binary could not be run, or failed, when asked for its spec.
    #[error("running `{} --spec`: {reason}", binary.display())]
    Binary {
        /// The binary.
        binary: PathBuf,
        /// Why.
        reason: String,
    },
    /// `cargo metadata` or `cargo build` failed.
    #[error("cargo {step}: {reason}")]
    Cargo {
        /// What cargo was asked to do.
        step: &'static str,
        /// Why it failed.
        reason: String,
    },
}

/// An estate: its services' specs, by service name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Estate {
    services: BTreeMap<String, ServiceSpec>,
}

impl Estate {
    /// An estate of `specs`, each with where it came from (for messages); a service appearing
    /// twice is refused.
    pub fn new(specs: impl IntoIterator<Item = (String, ServiceSpec)>) -> Result<Self, EstateError> {
        let mut services = BTreeMap::new();
        let mut origins: BTreeMap<String, String> = BTreeMap::new();
        for (origin, spec) in specs {
            let name = spec.name().to_owned();
            if let Some(first) = origins.get(&name) {
                return Err(EstateError::Duplicate { service: name, first: first.clone(), second: origin });
            }
            origins.insert(name.clone(), origin);
            services.insert(name, spec);
        }
        Ok(Self { services })
    }

    /// An estate of `specs` (from code: tests, generators).
    pub fn of(specs: impl IntoIterator<Item = ServiceSpec>) -> Result<Self, EstateError> {
        Self::new(specs.into_iter().map(|s| (format!("the spec of `{}`", s.name()), s)))
    }

    /// The services, by name.
    pub fn services(&self) -> impl Iterator<Item = &ServiceSpec> {
        self.services.values()
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.get(name)
    }

    /// Every topic of the estate by name: the owner's declaration where the owner is in the
    /// estate, else the first consumer's.
    pub fn topics(&self) -> BTreeMap<&str, &TopicSpec> {
        let mut topics = BTreeMap::new();
        for spec in self.services() {
            for topic in spec.owned_topics() {
                topics.insert(topic.name(), topic);
            }
        }
        for spec in self.services() {
            for topic in spec.consumed_topics() {
                topics.entry(topic.name()).or_insert(topic);
            }
        }
        topics
    }

    /// The services that write `topic` (its owner, when in the estate).
    pub fn writers(&self, topic: &str) -> Vec<&str> {
        self.services().filter(|s| s.owned(topic).is_some()).map(ServiceSpec::name).collect()
    }

    /// The services that read `topic` (its owner included when it consumes it too).
    pub fn readers(&self, topic: &str) -> Vec<&str> {
        self.services()
            .filter(|s| {
                s.consumed_topics().iter().any(|t| t.name() == topic)
                    || s.consumers().iter().any(|c| c.topic == topic)
            })
            .map(ServiceSpec::name)
            .collect()
    }
}

/// The specs in `json`: one spec, or an array of them; `origin` names it in errors.
pub fn parse_specs(json: &str, origin: &str) -> Result<Vec<ServiceSpec>, EstateError> {
    let spec_error =
        |e: serde_json::Error| EstateError::Spec { origin: origin.to_owned(), reason: e.to_string() };
    let value: serde_json::Value = serde_json::from_str(json).map_err(spec_error)?;
    match value {
        serde_json::Value::Array(items) => {
            items.into_iter().map(|v| serde_json::from_value(v).map_err(spec_error)).collect()
        }
        one => Ok(vec![serde_json::from_value(one).map_err(spec_error)?]),
    }
}

/// The specs in a file (one spec or an array), each with its origin.
pub fn read_spec_file(path: &Path) -> Result<Vec<(String, ServiceSpec)>, EstateError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| EstateError::Read { path: path.to_owned(), source })?;
    let origin = path.display().to_string();
    Ok(parse_specs(&text, &origin)?.into_iter().map(|s| (origin.clone(), s)).collect())
}

/// How long a binary may take to print its spec ([`spec_of_binary`]).
pub const SPEC_TIMEOUT: Duration = Duration::from_secs(60);

/// The spec a service binary prints when run with `--spec` ([`backbone::app::SPEC_FLAG`]), within
/// [`SPEC_TIMEOUT`].
pub fn spec_of_binary(binary: &Path) -> Result<(String, ServiceSpec), EstateError> {
    spec_of_binary_within(binary, SPEC_TIMEOUT)
}

/// [`spec_of_binary`] within `timeout`: a binary that does not know `--spec` (one not built with
/// `App`) may start its work instead of printing; it is stopped and refused.
pub fn spec_of_binary_within(binary: &Path, timeout: Duration) -> Result<(String, ServiceSpec), EstateError> {
    let failed = |reason: String| EstateError::Binary { binary: binary.to_owned(), reason };
    let mut child = Command::new(binary)
        .arg(backbone::app::SPEC_FLAG)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    // Read both pipes while waiting, so a large spec cannot fill one and stall the binary.
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| failed(e.to_string()))? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!(
                "no spec within {timeout:?}: is it a service built with backbone's App (which answers `--spec`)?"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    if !status.success() {
        return Err(failed(format!("{status}: {}", String::from_utf8_lossy(&stderr).trim())));
    }
    let json = String::from_utf8(stdout).map_err(|e| failed(e.to_string()))?;
    let origin = binary.display().to_string();
    let spec = ServiceSpec::from_json(&json).map_err(|e| failed(format!("not a service spec: {e}")))?;
    Ok((origin, spec))
}

/// A service binary of a Cargo workspace: its package and binary name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceBinary {
    /// The package.
    pub package: String,
    /// The binary target.
    pub bin: String,
}

/// The service binaries in the `cargo metadata --format-version 1 --no-deps` output `metadata`:
/// every binary of a package that depends on `backbone`, unless its manifest says
/// `[package.metadata.backbone] service = false` (tools such as the `backbone` command itself).
pub fn service_binaries(metadata: &serde_json::Value) -> Vec<ServiceBinary> {
    let mut binaries = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let depends = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["name"] == "backbone" && (d["kind"].is_null() || d["kind"] == "normal"));
        let opted_out = package["metadata"]["backbone"]["service"] == false;
        if !depends || opted_out {
            continue;
        }
        for target in package["targets"].as_array().into_iter().flatten() {
            if target["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")) {
                binaries.push(ServiceBinary {
                    package: package["name"].as_str().unwrap_or_default().to_owned(),
                    bin: target["name"].as_str().unwrap_or_default().to_owned(),
                });
            }
        }
    }
    binaries
}

/// Builds the service binaries of the Cargo workspace at `dir` ([`service_binaries`]) and
/// returns their paths.
pub fn build_workspace_services(dir: &Path) -> Result<Vec<PathBuf>, EstateError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let run = |step: &'static str, args: &[&str]| -> Result<Vec<u8>, EstateError> {
        let output = Command::new(&cargo)
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| EstateError::Cargo { step, reason: e.to_string() })?;
        if !output.status.success() {
            let reason = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            return Err(EstateError::Cargo { step, reason });
        }
        Ok(output.stdout)
    };
    let metadata = run("metadata", &["metadata", "--format-version", "1", "--no-deps"])?;
    let metadata: serde_json::Value = serde_json::from_slice(&metadata)
        .map_err(|e| EstateError::Cargo { step: "metadata", reason: e.to_string() })?;
    let binaries = service_binaries(&metadata);
    if binaries.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec!["build", "--quiet"];
    for b in &binaries {
        args.extend(["-p", &b.package, "--bin", &b.bin]);
    }
    run("build", &args)?;
    let target = PathBuf::from(metadata["target_directory"].as_str().unwrap_or("target"));
    Ok(binaries
        .iter()
        .map(|b| target.join("debug").join(format!("{}{}", b.bin, std::env::consts::EXE_SUFFIX)))
        .collect())
}

#[cfg(test)]
mod tests {
    use backbone::Service;

    use super::*;

    fn spec(name: &str) -> ServiceSpec {
        let topic = TopicSpec::public(name, "things", 1).build().unwrap();
        Service::new(name).owns(&topic).spec().unwrap()
    }

    #[test]
    fn a_service_appearing_twice_is_refused() {
        let err = Estate::new([("a.json".into(), spec("orders")), ("b.json".into(), spec("orders"))])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "service `orders` appears twice in the estate (a.json and b.json)");
        assert!(Estate::of([spec("orders"), spec("stock")]).is_ok());
    }

    #[test]
    fn spec_files_hold_one_spec_or_an_array() {
        let one = parse_specs(&spec("orders").to_json(), "x").unwrap();
        assert_eq!(one, [spec("orders")]);
        let array = format!("[{}, {}]", spec("orders").to_json(), spec("stock").to_json());
        assert_eq!(parse_specs(&array, "x").unwrap(), [spec("orders"), spec("stock")]);
        // A second writer of Orders' topic is refused when read, before any check or apply.
        let mut theirs: serde_json::Value = serde_json::from_str(&spec("stock").to_json()).unwrap();
        theirs["owns"].as_array_mut().unwrap().extend(
            serde_json::from_str::<serde_json::Value>(&spec("orders").to_json()).unwrap()["owns"]
                .as_array()
                .unwrap()
                .clone(),
        );
        let err = parse_specs(&theirs.to_string(), "stock.json").unwrap_err().to_string();
        assert!(err.starts_with("spec from stock.json:"), "{err}");
        assert!(err.contains("may not write to `orders.public.things-v1`"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_binary_that_does_not_answer_is_stopped_and_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("busy");
        std::fs::write(&bin, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let started = Instant::now();
        let err = spec_of_binary_within(&bin, Duration::from_millis(300)).unwrap_err().to_string();
        assert!(err.contains("no spec within 300ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "stopped, not waited for");
    }

    #[test]
    fn workspace_service_binaries_are_packages_on_backbone_with_a_bin() {
        let metadata = serde_json::json!({"packages": [
            {"name": "orders", "dependencies": [{"name": "backbone", "kind": null}],
             "targets": [{"name": "orders", "kind": ["bin"]}, {"name": "orders", "kind": ["lib"]}],
             "metadata": null},
            {"name": "backbone-cli", "dependencies": [{"name": "backbone", "kind": null}],
             "targets": [{"name": "backbone", "kind": ["bin"]}],
             "metadata": {"backbone": {"service": false}}},
            {"name": "tool", "dependencies": [{"name": "backbone", "kind": "dev"}],
             "targets": [{"name": "tool", "kind": ["bin"]}], "metadata": null},
            {"name": "lib-only", "dependencies": [{"name": "backbone", "kind": null}],
             "targets": [{"name": "lib-only", "kind": ["lib"]}], "metadata": null},
        ]});
        assert_eq!(
            service_binaries(&metadata),
            [ServiceBinary { package: "orders".into(), bin: "orders".into() }]
        );
    }
}
