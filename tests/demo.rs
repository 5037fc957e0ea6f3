//! README's first command, `scripts/demo.sh`, end to end as a new user runs it (with the binary
//! the suite built, so neither cargo nor install-deps.sh runs inside the test): several runs in a
//! row, since its old port choice failed about every second run; and a server that never gets
//! ready stops it with an error naming the log, instead of a hang.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the demo, killed (and the test failed) if it takes longer than `limit`.
fn demo(envs: &[(&str, &str)], path: Option<&str>, limit: Duration) -> Output {
    let mut cmd = Command::new(root().join("scripts/demo.sh"));
    cmd.env("PG_BACKUPS_DEMO_BIN", env!("CARGO_BIN_EXE_pg-backups"))
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in ["PGHOST", "PGPORT", "PGPASSWORD", "BACKUP_DIR", "S3_ENABLED"] {
        cmd.env_remove(var);
    }
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        stdout.read_to_end(&mut b).unwrap();
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        stderr.read_to_end(&mut b).unwrap();
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "scripts/demo.sh hung for {limit:?}:\n{}",
                String::from_utf8_lossy(&err.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The demo's work folder, from its own words ("data in /tmp/pg-backups-demo.XXXX").
fn work_dir(stderr: &str) -> Option<PathBuf> {
    let at = stderr.find("/tmp/pg-backups-demo.")?;
    let path: String = stderr[at..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ')')
        .collect();
    Some(PathBuf::from(path))
}

#[test]
fn the_demo_runs_end_to_end_several_times_in_a_row() {
    for run in 1..=3 {
        let started = Instant::now();
        let out = demo(&[], None, Duration::from_secs(180));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "run {run}: {}\n{stdout}\n{stderr}",
            out.status
        );
        for step in [
            "$ pg-backups dump",
            "$ pg-backups ship",
            "$ pg-backups verify latest --restore-test",
            "$ pg-backups list",
            "$ pg-backups restore",
            "$ pg-backups check --json",
        ] {
            assert!(stdout.contains(step), "run {run}: no {step:?} in\n{stdout}");
        }
        assert!(
            stderr.contains("rows in shop_restored.products: 5000"),
            "run {run}: {stderr}"
        );
        let check = stdout
            .lines()
            .find(|l| l.starts_with("{\"command\":\"check\""))
            .unwrap_or_else(|| panic!("run {run}: no JSON line of check"));
        let check: serde_json::Value = serde_json::from_str(check).unwrap();
        assert_eq!(check["status"], "ok", "run {run}: {check}");
        assert_eq!(check["destinations"].as_array().unwrap().len(), 2);
        // Nothing left behind: the work folder is gone, and no logs were kept (it succeeded).
        let work = work_dir(&stderr).expect("the demo names its folder");
        assert!(!work.exists(), "run {run}: {} is left", work.display());
        assert!(!Path::new(&format!("{}-logs", work.display())).exists());
        eprintln!("demo run {run}: {:?}", started.elapsed());
    }
}

#[test]
fn a_server_that_never_gets_ready_stops_the_demo_with_its_log_named() {
    // A `weed` that starts and never serves (its shell hangs, as with a master that died).
    let dir = tempfile::tempdir().unwrap();
    let weed = dir.path().join("weed");
    std::fs::write(
        &weed,
        "#!/bin/sh\necho \"weed $1: pretending\"\nexec sleep 600\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&weed, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap()
    );
    let started = Instant::now();
    let out = demo(
        &[("PG_BACKUPS_DEMO_WAIT", "2")],
        Some(&path),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("the S3 bucket not ready after 2 s"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SeaweedFS did not start in 3 tries"),
        "{stderr}"
    );
    // The log it names is there to read.
    let logs = stderr
        .lines()
        .find_map(|l| l.split("the servers' logs are kept in ").nth(1))
        .unwrap_or_else(|| panic!("no kept logs named: {stderr}"));
    let log = Path::new(logs.trim()).join("log");
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(text.contains("pretending"), "{text}");
    std::fs::remove_dir_all(logs.trim()).unwrap();
    let work = work_dir(&stderr);
    assert!(work.is_none_or(|w| !w.exists()));
}
