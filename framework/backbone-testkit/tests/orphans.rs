//! No JVM, and no temporary directory, outlives its owner: dropped, panicked, exited with a live
//! static, or SIGKILLed.
//!
//! Each test re-runs this test binary as a child (`child_process` below, selected with an
//! environment variable), which starts real processes, prints their pids and directories and then
//! ends in the way under test; the parent waits until every pid and directory is gone.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use backbone_testkit::{KafkaCluster, SchemaRegistry};

const MODE: &str = "BACKBONE_ORPHAN_TEST_MODE";

/// The child side: does nothing unless the parent asked for a mode.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let kafka = KafkaCluster::start_single().expect("start a broker");
    let mut pids = kafka.pids();
    let mut dirs = vec![kafka.work_dir().expect("a local cluster's directory").to_owned()];
    let registry = if mode == "sigkill" {
        let registry = SchemaRegistry::start().expect("start the registry");
        pids.extend(registry.pid());
        dirs.extend(registry.work_dir().map(Path::to_owned));
        Some(registry)
    } else {
        None
    };
    let line: Vec<String> = pids.iter().map(u32::to_string).collect();
    println!("PIDS {}", line.join(" "));
    let line: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    println!("DIRS {}", line.join(" "));
    match mode.as_str() {
        "drop" => {
            // Drop only when the parent has seen the processes alive (it writes a line).
            let mut go = String::new();
            std::io::stdin().read_line(&mut go).expect("the parent's go-ahead");
            drop(kafka);
            println!("DROPPED");
            loop {
                std::thread::park(); // the parent checks, then kills us
            }
        }
        "panic" => panic!("a test panics while it owns a cluster"),
        "exit" => {
            // A static is never dropped: only the watchdog can clean up.
            static KEPT: OnceLock<KafkaCluster> = OnceLock::new();
            let _ = KEPT.set(kafka);
            std::process::exit(0);
        }
        "sigkill" => {
            let _keep = (kafka, registry);
            loop {
                std::thread::park();
            }
        }
        other => panic!("unknown mode {other}"),
    }
}

fn spawn_child(mode: &str) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_process", "--nocapture", "--test-threads=1"])
        .env(MODE, mode)
        .env("RUST_BACKTRACE", "0")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    (child, stdout)
}

fn read_until(stdout: &mut BufReader<std::process::ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = stdout.read_line(&mut line).expect("read the child's stdout");
        assert!(n > 0, "the child ended before printing {prefix}");
        // The harness may have printed `test child_process ... ` on the same line first.
        if let Some((_, rest)) = line.trim_end().split_once(prefix) {
            return rest.trim().to_owned();
        }
    }
}

fn pids_of(stdout: &mut BufReader<std::process::ChildStdout>) -> Vec<u32> {
    let pids: Vec<u32> =
        read_until(stdout, "PIDS").split_whitespace().map(|p| p.parse().expect("pid")).collect();
    assert!(!pids.is_empty(), "the child started processes");
    pids
}

/// The child's processes and their temporary directories (each of which exists now).
fn started(stdout: &mut BufReader<std::process::ChildStdout>) -> (Vec<u32>, Vec<PathBuf>) {
    let pids = pids_of(stdout);
    let dirs: Vec<PathBuf> = read_until(stdout, "DIRS").split_whitespace().map(PathBuf::from).collect();
    assert!(!dirs.is_empty() && dirs.iter().all(|d| d.is_dir()), "the child's directories {dirs:?} exist");
    (pids, dirs)
}

/// Alive means present and not a zombie (a zombie has been killed, only not yet reaped).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

fn assert_all_gone(pids: &[u32], dirs: &[PathBuf], how: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "processes {pids:?} still alive 30 s after {how}");
        std::thread::sleep(Duration::from_millis(50)); // polling /proc: there is no exit event for a non-child
    }
    // The watchdog removes a directory after its process is gone; no event announces that either.
    while let Some(left) = dirs.iter().find(|d| d.exists()) {
        assert!(Instant::now() < deadline, "{} still there 30 s after {how}", left.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dropping_a_cluster_kills_its_processes() {
    let (mut child, mut stdout) = spawn_child("drop");
    let (pids, dirs) = started(&mut stdout);
    assert!(pids.iter().all(|p| alive(*p)));
    child.stdin.take().expect("stdin").write_all(b"drop\n").expect("tell the child to drop");
    read_until(&mut stdout, "DROPPED");
    assert_all_gone(&pids, &dirs, "drop");
    child.kill().expect("kill the child");
    child.wait().expect("reap the child");
}

#[test]
fn a_panicking_test_leaves_no_process() {
    let (mut child, mut stdout) = spawn_child("panic");
    let (pids, dirs) = started(&mut stdout);
    let status = child.wait().expect("reap the child");
    assert!(!status.success(), "the child test failed by panicking");
    assert_all_gone(&pids, &dirs, "the panic");
}

#[test]
fn exiting_with_a_cluster_in_a_static_leaves_no_process() {
    let (mut child, mut stdout) = spawn_child("exit");
    let (pids, dirs) = started(&mut stdout);
    let status = child.wait().expect("reap the child");
    assert!(status.success());
    assert_all_gone(&pids, &dirs, "process exit");
}

#[test]
fn a_sigkilled_test_process_leaves_no_process() {
    let (mut child, mut stdout) = spawn_child("sigkill");
    let (pids, dirs) = started(&mut stdout);
    assert_eq!(pids.len(), 2, "a broker and a registry");
    assert!(pids.iter().all(|p| alive(*p)));
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    assert_all_gone(&pids, &dirs, "SIGKILL");
}
