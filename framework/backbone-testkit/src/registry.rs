//! A real Confluent-compatible schema registry: Apicurio Registry's `ccompat` API.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Result, TestkitError};
use crate::fetch;
use crate::java;
use crate::process::{Managed, free_port};

const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A schema registry for tests: Apicurio Registry (in-memory storage, global compatibility
/// BACKWARD) started by the kit, or an external one named by `SCHEMA_REGISTRY_URL` (see
/// [`crate::shared_registry`]). The process is killed when this is dropped, and by a watchdog if the
/// test process dies first.
#[derive(Debug)]
pub struct SchemaRegistry {
    url: String,
    process: Option<Managed>,
    _dir: Option<tempfile::TempDir>,
}

impl SchemaRegistry {
    /// Fetches Apicurio Registry if needed, starts it on a free loopback port and returns once its
    /// Confluent-compatible API answers with global compatibility BACKWARD.
    pub fn start() -> Result<Self> {
        Self::start_preferring(None)
    }

    /// Like [`SchemaRegistry::start`], on `port` when it is free (`backbone dev up` prefers 8081, the
    /// registry's usual port, so default configurations find it).
    pub fn start_preferring(port: Option<u16>) -> Result<Self> {
        let java = java::java(21, &format!("Apicurio Registry {}", fetch::APICURIO_VERSION))?;
        let app = fetch::apicurio_app()?;
        let dir = tempfile::Builder::new()
            .prefix("backbone-registry-")
            .tempdir()
            .map_err(TestkitError::io("creating a temporary directory"))?;
        let port = match port {
            Some(p) if crate::process::port_is_free(p) => p,
            _ => free_port()?,
        };
        let management = free_port()?;
        let mut cmd = Command::new(&java.bin);
        cmd.current_dir(dir.path())
            .args(["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-Dquarkus.http.host=127.0.0.1")
            .arg(format!("-Dquarkus.http.port={port}"))
            .arg("-Dquarkus.management.host=127.0.0.1")
            .arg(format!("-Dquarkus.management.port={management}"))
            .arg("-Dapicurio.rules.global.compatibility=BACKWARD")
            .arg("-jar")
            .arg(app.join("quarkus-run.jar"));
        let mut process =
            Managed::spawn("Apicurio Registry", cmd, &dir.path().join("registry.log"), dir.path())?;
        let url = format!("http://127.0.0.1:{port}/apis/ccompat/v7");
        let deadline = Instant::now() + START_TIMEOUT;
        let mut registry = Self { url, process: None, _dir: Some(dir) };
        // Ready once it lists subjects and reports its rules: right after the first answers, the
        // second was seen to fail once with an empty body (the rules storage still starting).
        let level = loop {
            if matches!(get(&registry.url, "/subjects"), Ok((200, _))) {
                match registry.global_compatibility() {
                    Ok(level) => break level,
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => {}
                }
            }
            process.check_alive("the registry exited while starting")?;
            if Instant::now() > deadline {
                let url = &registry.url;
                return Err(process.start_error(format!("{url} did not answer within {START_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(100)); // poll interval while the JVM boots
        };
        registry.process = Some(process);
        if level != "BACKWARD" {
            return Err(TestkitError::Command {
                what: "setting global compatibility".into(),
                detail: format!("the registry reports {level}, expected BACKWARD"),
            });
        }
        Ok(registry)
    }

    /// An already running registry at `url` (its Confluent-compatible base URL).
    pub fn external(url: impl Into<String>) -> Self {
        Self { url: url.into().trim_end_matches('/').to_owned(), process: None, _dir: None }
    }

    /// The Confluent-compatible base URL (Apicurio: `…/apis/ccompat/v7`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id of the registry the kit started.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Managed::pid)
    }

    /// The temporary directory holding the registry's log (for leak checks; `None` for an external
    /// registry). Removed like [`KafkaCluster::work_dir`](crate::KafkaCluster::work_dir).
    pub fn work_dir(&self) -> Option<&std::path::Path> {
        self._dir.as_ref().map(tempfile::TempDir::path)
    }

    /// The registry's global compatibility level (`BACKWARD`, `FULL`, …).
    pub fn global_compatibility(&self) -> Result<String> {
        let (status, body) = get(&self.url, "/config")?;
        let level = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|config| config.get("compatibilityLevel")?.as_str().map(str::to_owned));
        match (status, level) {
            (200, Some(level)) => Ok(level),
            _ => Err(TestkitError::Command {
                what: "reading the registry's config".into(),
                detail: format!("HTTP {status}: {body:?}"),
            }),
        }
    }
}

/// A blocking `GET` of the registry (no async runtime needed): status and body; every status is an
/// answer, only a failed connection or a timeout (10 s) is an error.
pub(crate) fn get(base: &str, path: &str) -> Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{base}{path}");
    let failed = |e: ureq::Error| TestkitError::Command { what: format!("GET {url}"), detail: e.to_string() };
    let mut response = agent.get(&url).header("Accept", "application/json").call().map_err(failed)?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(failed)?;
    Ok((status, body))
}
