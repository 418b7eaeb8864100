//! A real Confluent-compatible schema registry: Apicurio Registry's `ccompat` API.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
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
            if matches!(http(&registry.url, "GET", "/subjects", None), Ok((200, _))) {
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
        let (status, body) = http(&self.url, "GET", "/config", None)?;
        let level = body
            .split("\"compatibilityLevel\"")
            .nth(1)
            .and_then(|rest| rest.split('"').nth(1))
            .map(str::to_owned);
        match (status, level) {
            (200, Some(level)) => Ok(level),
            _ => Err(TestkitError::Command {
                what: "reading the registry's config".into(),
                detail: format!("HTTP {status}: {body:?}"),
            }),
        }
    }
}

/// A minimal HTTP/1.0 client (no async runtime needed): returns status and body.
pub(crate) fn http(base: &str, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| TestkitError::Unsupported(format!("{base}: only http:// URLs")))?;
    let (authority, prefix) =
        rest.split_once('/').map_or((rest, String::new()), |(a, p)| (a, format!("/{p}")));
    let io = TestkitError::io(format!("{method} {base}{path}"));
    let mut stream = TcpStream::connect(authority).map_err(io)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(TestkitError::io("setting a timeout"))?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {prefix}{path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\
         Content-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(TestkitError::io("writing an HTTP request"))?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(TestkitError::io("reading an HTTP response"))?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}
