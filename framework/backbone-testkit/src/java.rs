//! Finding Java and Maven on this machine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{Result, TestkitError};

/// A Java installation and its feature version (17, 21, 25 …).
#[derive(Debug, Clone)]
pub(crate) struct Java {
    pub(crate) bin: PathBuf,
    pub(crate) major: u32,
}

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for var in ["BACKBONE_JAVA_HOME", "JAVA_HOME"] {
        if let Some(home) = std::env::var_os(var) {
            out.push(Path::new(&home).join("bin/java"));
        }
    }
    out.push(PathBuf::from("java"));
    if let Ok(entries) = std::fs::read_dir("/usr/lib/jvm") {
        let mut dirs: Vec<_> = entries.flatten().map(|e| e.path().join("bin/java")).collect();
        dirs.sort();
        out.extend(dirs);
    }
    out
}

/// Parses the feature version out of `java -version` output (`version "17.0.15"`, `version "25"`).
fn parse_major(version_output: &str) -> Option<u32> {
    let start = version_output.find("version \"")? + "version \"".len();
    let rest = &version_output[start..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    match digits.parse().ok()? {
        1 => rest.split('.').nth(1)?.parse().ok(), // 1.8.0 style
        n => Some(n),
    }
}

fn installed() -> &'static [Java] {
    static FOUND: OnceLock<Vec<Java>> = OnceLock::new();
    FOUND.get_or_init(|| {
        let mut found: Vec<Java> = Vec::new();
        for bin in candidates() {
            let Ok(out) = Command::new(&bin).arg("-version").output() else {
                continue;
            };
            let text = String::from_utf8_lossy(&out.stderr);
            if let Some(major) = parse_major(&text) {
                found.push(Java { bin, major });
            }
        }
        found
    })
}

/// The first Java (in the order `BACKBONE_JAVA_HOME`, `JAVA_HOME`, `PATH`, `/usr/lib/jvm/*`) whose
/// version is at least `min`.
pub(crate) fn java(min: u32, needed_by: &str) -> Result<Java> {
    installed().iter().find(|j| j.major >= min).cloned().ok_or_else(|| {
        let seen: Vec<String> =
            installed().iter().map(|j| format!("{} ({})", j.bin.display(), j.major)).collect();
        TestkitError::MissingTool {
            tool: "java",
            hint: format!(
                "{needed_by} needs Java {min} or newer (found: {}); install a JDK {min}+ \
                 (Debian: apt-get install openjdk-17-jdk-headless for Kafka) or set BACKBONE_JAVA_HOME, \
                 or point the tests at running servers with KAFKA_BOOTSTRAP_SERVERS / SCHEMA_REGISTRY_URL",
                if seen.is_empty() { "none".to_owned() } else { seen.join(", ") }
            ),
        }
    })
}

/// Maven's `mvn`, or a clear error.
pub(crate) fn maven() -> Result<PathBuf> {
    let mvn = std::env::var_os("BACKBONE_MVN").map_or_else(|| PathBuf::from("mvn"), PathBuf::from);
    match Command::new(&mvn).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(mvn),
        _ => Err(TestkitError::MissingTool {
            tool: "mvn",
            hint: "the test kit fetches Kafka and the schema registry from Maven Central with Maven; \
                   install it (Debian: apt-get install maven) or set KAFKA_BOOTSTRAP_SERVERS and \
                   SCHEMA_REGISTRY_URL to use running servers"
                .to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_major;

    #[test]
    fn parses_java_versions() {
        assert_eq!(parse_major("openjdk version \"17.0.15\" 2025-04-15"), Some(17));
        assert_eq!(parse_major("openjdk version \"25\" 2025-09-16"), Some(25));
        assert_eq!(parse_major("java version \"1.8.0_392\""), Some(8));
        assert_eq!(parse_major("no java here"), None);
    }
}
