//! Child processes that never outlive the test process.
//!
//! Each JVM runs in a process group of its own (so a terminal's Ctrl-C reaches only the test
//! process, which then cleans up in order). Beside it runs a tiny watchdog shell whose stdin is a
//! pipe held open by the test process alone: however the test process ends (normal exit with
//! un-dropped statics, a panic, SIGKILL), the kernel closes that pipe, the watchdog's `read` returns
//! and it SIGKILLs the JVM's process group, then removes the process's working directory (a test
//! binary's shared broker lives in a static that is never dropped, so its temporary directory would
//! otherwise stay behind in `/tmp` after every run). Dropping a [`Managed`] kills the JVM at once
//! and leaves the directory to its owner.
//! No `unsafe` (`pre_exec`/`prctl`) is needed, and unlike a parent-death signal this does not fire when
//! the *thread* that spawned the child exits.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::{Result, TestkitError};

/// A child process bound to the life of the test process.
#[derive(Debug)]
pub(crate) struct Managed {
    name: String,
    child: Child,
    watchdog: Child,
    log: PathBuf,
}

impl Managed {
    /// Spawns `cmd` with stdout and stderr appended to `log`, guarded by a watchdog that removes
    /// `workdir` once it has killed the process on the test process's death.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path, workdir: &Path) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(TestkitError::io(format!("opening {}", log.display())))?;
        let err = out.try_clone().map_err(TestkitError::io("duplicating a log handle"))?;
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(TestkitError::io(format!("spawning {name}")))?;
        let watchdog = Command::new("sh")
            .arg("-c")
            // POSIX sh (dash) has no `--` for kill: `-PID` names the process group directly. The
            // directory goes once the process is gone (at most 5 s: a zombie nobody reaps still
            // answers `kill -0`), so no write of its last moment lands after the removal.
            .arg(concat!(
                r#"trap '' INT TERM HUP; read -r _; kill -9 -"$1" 2>/dev/null || kill -9 "$1" 2>/dev/null; "#,
                r#"n=0; while kill -0 "$1" 2>/dev/null && [ "$n" -lt 50 ]; do sleep 0.1; n=$((n+1)); done; "#,
                r#"rm -rf -- "$2""#
            ))
            .arg("backbone-watchdog")
            .arg(child.id().to_string())
            .arg(workdir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let watchdog = match watchdog {
            Ok(w) => w,
            Err(e) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                return Err(TestkitError::Io { context: "spawning the watchdog (sh)".into(), source: e });
            }
        };
        Ok(Self { name: name.to_owned(), child, watchdog, log: log.to_owned() })
    }

    /// The process id (also its process group id).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns an error with the log's tail if the process has exited.
    pub(crate) fn check_alive(&mut self, reason_if_dead: &str) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.start_error(format!("{reason_if_dead} ({status})"))),
            Err(e) => Err(TestkitError::Io { context: format!("waiting for {}", self.name), source: e }),
        }
    }

    /// A start error for this process, with the last lines of its log.
    pub(crate) fn start_error(&self, reason: String) -> TestkitError {
        TestkitError::Start {
            what: self.name.clone(),
            reason,
            log: self.log.clone(),
            tail: tail(&self.log, 30),
        }
    }

    /// SIGKILLs the process and reaps it, then retires its watchdog.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of a log file (reads at most its last 64 KiB).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let lines: Vec<String> = BufReader::new(file).lines().map_while(std::result::Result::ok).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free TCP port on the loopback interface, not handed out before by this process.
pub(crate) fn free_port() -> Result<u16> {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(TestkitError::io("finding a free port"))?;
        let port = listener.local_addr().map_err(TestkitError::io("finding a free port"))?.port();
        let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
}

/// Whether `port` can be bound on the loopback interface right now.
pub(crate) fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}
