//! Fetching Apache Kafka and Apicurio Registry from Maven Central, once.
//!
//! Maven keeps the artifacts in `~/.m2`; the kit keeps what it derives from them (Kafka's runtime
//! classpath, the unpacked registry) under the workspace's `target/backbone-cache` (or
//! `BACKBONE_CACHE_DIR`). A second run finds both and downloads nothing. A file lock keeps parallel
//! test binaries from fetching the same thing twice.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Result, TestkitError};
use crate::java;

/// The Apache Kafka version the kit runs (KRaft, from Maven Central).
pub const KAFKA_VERSION: &str = "4.1.1";
/// The Apicurio Registry version the kit runs (its Confluent-compatible API).
pub const APICURIO_VERSION: &str = "3.3.3";
const LOG4J_VERSION: &str = "2.25.3";
const SLF4J_VERSION: &str = "2.0.17";
const DEPENDENCY_PLUGIN: &str = "org.apache.maven.plugins:maven-dependency-plugin:3.11.0";

/// Where the kit keeps what it derives from downloads.
pub(crate) fn cache_root() -> PathBuf {
    std::env::var_os("BACKBONE_CACHE_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/backbone-cache"),
        PathBuf::from,
    )
}

/// Says on stderr (past the test harness's capture) that a fetch is under way, every few seconds.
fn with_progress<T>(what: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    let say = |line: String| {
        let _ = writeln!(std::io::stderr(), "backbone-testkit: {line}");
    };
    say(format!("fetching {what} from Maven Central (first use; cached afterwards) …"));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let label = what.to_owned();
    let ticker = std::thread::spawn(move || {
        while let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(Duration::from_secs(10)) {
            let _ = writeln!(
                std::io::stderr(),
                "backbone-testkit: … still fetching {label} ({} s)",
                started.elapsed().as_secs()
            );
        }
    });
    let result = work();
    drop(done_tx);
    let _ = ticker.join();
    if result.is_ok() {
        say(format!("fetched {what} in {:.1} s", started.elapsed().as_secs_f64()));
    }
    result
}

/// Holds an exclusive lock on a file in the cache for as long as it lives.
struct CacheLock(#[allow(dead_code)] File);

fn lock(name: &str) -> Result<CacheLock> {
    let root = cache_root();
    fs::create_dir_all(&root).map_err(TestkitError::io(format!("creating {}", root.display())))?;
    let path = root.join(format!(".{name}.lock"));
    let file = File::create(&path).map_err(TestkitError::io(format!("creating {}", path.display())))?;
    file.lock().map_err(TestkitError::io(format!("locking {}", path.display())))?;
    Ok(CacheLock(file))
}

fn run_maven(what: &str, dir: &Path, args: &[&str]) -> Result<()> {
    let mvn = java::maven()?;
    let out = Command::new(mvn)
        .current_dir(dir)
        .args(["-B", "-q", "--no-transfer-progress"])
        .args(args)
        .output()
        .map_err(TestkitError::io("running mvn"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut detail = String::from_utf8_lossy(&out.stdout).into_owned();
    detail.push_str(&String::from_utf8_lossy(&out.stderr));
    let detail: Vec<&str> = detail.lines().filter(|l| l.contains("ERROR")).take(5).collect();
    Err(TestkitError::Fetch { what: what.to_owned(), detail: detail.join("\n") })
}

/// Kafka's runtime classpath (jars in `~/.m2`), fetched on first use.
pub(crate) fn kafka_classpath() -> Result<String> {
    let dir = cache_root().join(format!("kafka-{KAFKA_VERSION}"));
    let file = dir.join("classpath.txt");
    let read = || -> Option<String> {
        let cp = fs::read_to_string(&file).ok()?;
        let cp = cp.trim().to_owned();
        cp.split(':').all(|jar| Path::new(jar).is_file()).then_some(cp)
    };
    if let Some(cp) = read() {
        return Ok(cp);
    }
    let _lock = lock("kafka")?;
    if let Some(cp) = read() {
        return Ok(cp);
    }
    fs::create_dir_all(&dir).map_err(TestkitError::io(format!("creating {}", dir.display())))?;
    // The release tarball's libs/ is kafka_2.13 + kafka-tools at runtime scope; the logging backend
    // (Log4j 2 through SLF4J 2) is not among their dependencies, and Maven would otherwise pick an
    // SLF4J 1.7 API that finds no binding.
    let pom = format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.backbone</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>{SLF4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>{LOG4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"#
    );
    fs::write(dir.join("pom.xml"), pom).map_err(TestkitError::io("writing pom.xml"))?;
    let what = format!("Apache Kafka {KAFKA_VERSION}");
    with_progress(&what, || {
        run_maven(
            &what,
            &dir,
            &[
                &format!("{DEPENDENCY_PLUGIN}:build-classpath"),
                "-Dmdep.includeScope=runtime",
                "-Dmdep.outputFile=classpath.txt",
            ],
        )
    })?;
    read().ok_or_else(|| TestkitError::Fetch {
        what,
        detail: format!("{} is missing or names jars that do not exist", file.display()),
    })
}

/// The unpacked Apicurio Registry application (the directory holding `quarkus-run.jar`).
pub(crate) fn apicurio_app() -> Result<PathBuf> {
    let dir = cache_root().join(format!("apicurio-registry-{APICURIO_VERSION}"));
    let done = dir.join(".complete");
    if done.is_file() {
        return Ok(dir);
    }
    let _lock = lock("apicurio")?;
    if done.is_file() {
        return Ok(dir);
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(TestkitError::io(format!("creating {}", dir.display())))?;
    let what = format!("Apicurio Registry {APICURIO_VERSION} (about 160 MB)");
    with_progress(&what, || {
        run_maven(
            &what,
            &dir,
            &[
                &format!("{DEPENDENCY_PLUGIN}:copy"),
                &format!("-Dartifact=io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"),
                "-DoutputDirectory=.",
            ],
        )?;
        let tarball = format!("apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz");
        let out = Command::new("tar")
            .current_dir(&dir)
            .args(["xzf", &tarball])
            .output()
            .map_err(TestkitError::io("running tar"))?;
        if !out.status.success() {
            return Err(TestkitError::Fetch {
                what: what.clone(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        // Maven keeps the tarball in ~/.m2; the unpacked copy is all we need here.
        let _ = fs::remove_file(dir.join(&tarball));
        if !dir.join("quarkus-run.jar").is_file() {
            return Err(TestkitError::Fetch {
                what: what.clone(),
                detail: "no quarkus-run.jar in the tarball".into(),
            });
        }
        File::create(&done).map_err(TestkitError::io("marking the registry fetched"))?;
        Ok(())
    })?;
    Ok(dir)
}
