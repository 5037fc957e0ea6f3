//! Bad input and faults during `dump`: each gets its exit code and a message that names the
//! cause, and nothing that looks like a complete backup is left behind.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// Folders under `dir` that look like backups (visible, with a manifest).
fn complete_folders(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .filter(|e| e.path().join("manifest.json").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn visible_dirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_type().unwrap().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn assert_no_password(run: &Run) {
    assert!(
        !run.stdout.contains(PASSWORD),
        "password in stdout: {}",
        run.stdout
    );
    assert!(
        !run.stderr.contains(PASSWORD),
        "password in stderr: {}",
        run.stderr
    );
}

#[test]
fn unreachable_server_is_69_and_names_host_and_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let envs = vec![
        ("PGHOST".to_string(), "127.0.0.1".to_string()),
        ("PGPORT".to_string(), port.clone()),
        ("PGPASSWORD".to_string(), PASSWORD.to_string()),
        ("PG_BIN_DIR".to_string(), pg_bin(17).display().to_string()),
    ];
    let run = pgb_run(&envs, dir.path(), &["dump"]).expect(69);
    assert_eq!(run.json["status"], "failed");
    assert_eq!(run.json["error"]["kind"], "pg_unreachable");
    assert!(
        run.message().contains(&format!("127.0.0.1:{port}")),
        "{}",
        run.message()
    );
    assert!(run.message().contains("PGHOST"), "{}", run.message());
    assert!(visible_dirs(dir.path()).is_empty());
    assert_no_password(&run);

    let envs = with(&envs, "PGHOST", "no-such-host.invalid");
    pgb_run(&envs, dir.path(), &["dump"]).expect(69);
}

#[test]
fn wrong_password_is_77_and_never_printed() {
    let server = PgServer::start(17);
    let dir = tempfile::tempdir().unwrap();
    let wrong = "not-the-Password-123";
    let envs = with(&server.env(), "PGPASSWORD", wrong);
    let run = pgb_run(&envs, dir.path(), &["dump"]).expect(77);
    assert_eq!(run.json["error"]["kind"], "pg_auth");
    assert!(
        run.message().contains("password authentication failed"),
        "{}",
        run.message()
    );
    assert!(!run.stdout.contains(wrong) && !run.stderr.contains(wrong));
    assert!(visible_dirs(dir.path()).is_empty());
}

#[test]
fn password_from_a_file_with_a_trailing_newline_works() {
    let server = PgServer::start(17);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pgpassword");
    std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    let envs: Vec<(String, String)> = server
        .env()
        .into_iter()
        .filter(|(k, _)| k != "PGPASSWORD")
        .collect();
    let envs = with(&envs, "PGPASSWORD_FILE", &secret.display().to_string());
    pgb_run(&envs, &dir.path().join("b"), &["dump"]).expect(0);

    // Both the variable and its file is ambiguous: refused before any work.
    let both = with(&envs, "PGPASSWORD", PASSWORD);
    let run = pgb_run(&both, &dir.path().join("b"), &["dump"]).expect(64);
    assert!(
        run.message().contains("PGPASSWORD_FILE"),
        "{}",
        run.message()
    );
    assert_no_password(&run);
}

#[test]
fn settings_from_an_env_file_are_used_and_the_environment_wins() {
    let server = PgServer::start(17);
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("pg-backups.env");
    let mut text = String::from("# settings\n");
    for (k, v) in server.env() {
        text.push_str(&format!("{k}={v}\n"));
    }
    text.push_str(&format!(
        "BACKUP_DIR={}\n",
        dir.path().join("from-file").display()
    ));
    text.push_str("BACKUP_JOBS=1\n");
    std::fs::write(&env_file, text).unwrap();
    let mut cmd = pgb(&[("BACKUP_JOBS".into(), "2".into())]);
    cmd.args(["--env-file", env_file.to_str().unwrap(), "dump"]);
    let run = run(cmd).expect(0);
    assert_eq!(run.json["jobs"], 2, "the environment wins over the file");
    assert_eq!(complete_folders(&dir.path().join("from-file")).len(), 1);
}

#[test]
fn non_superuser_without_rights_is_77() {
    let server = PgServer::start(17);
    server.psql("postgres", "CREATE ROLE weak LOGIN PASSWORD 'weak-pw'");
    let dir = tempfile::tempdir().unwrap();
    let envs = with(&server.env(), "PGUSER", "weak");
    let envs = with(&envs, "PGPASSWORD", "weak-pw");
    let run = pgb_run(&envs, dir.path(), &["dump"]).expect(77);
    assert_eq!(run.json["error"]["kind"], "pg_permission");
    assert!(
        run.message().contains("permission denied"),
        "{}",
        run.message()
    );
    assert!(
        run.message().contains("superuser"),
        "says what is needed: {}",
        run.message()
    );
    assert!(complete_folders(dir.path()).is_empty());
    assert!(
        visible_dirs(dir.path()).is_empty(),
        "the work folder was removed"
    );
}

#[test]
fn backup_dir_that_is_not_writable_is_73() {
    let dir = tempfile::tempdir().unwrap();
    let readonly = dir.path().join("readonly");
    std::fs::create_dir(&readonly).unwrap();
    let mut cmd = pgb(&[("PGHOST".into(), "127.0.0.1".into())]);
    cmd.env("BACKUP_DIR", readonly.join("backups")).arg("dump");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // root writes anywhere: run as `nobody`, like the image's non-root user.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o755)).unwrap();
        cmd.uid(65534).gid(65534);
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let run = run(cmd).expect(73);
    assert!(run.message().contains("BACKUP_DIR"), "{}", run.message());
    assert!(
        run.message()
            .contains(&readonly.join("backups").display().to_string())
    );
}

/// A filesystem that fills up: a 2 MiB tmpfs when we may mount one, else a file-size limit
/// (EFBIG instead of ENOSPC, same exit code). Either way the run must say 74.
#[test]
fn disk_full_while_writing_is_74_and_leaves_no_folder() {
    let server = PgServer::start(17);
    server.psql(
        "postgres",
        "CREATE TABLE noise AS SELECT md5(g::text) || md5((g * 7)::text) AS a, random() AS b \
         FROM generate_series(1, 60000) g",
    );
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("small");
    std::fs::create_dir(&mountpoint).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mountpoint)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    struct Unmount<'a>(&'a Path, bool);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            if self.1 {
                let _ = std::process::Command::new("umount").arg(self.0).status();
            }
        }
    }
    let _unmount = Unmount(&mountpoint, mounted);
    let backups = mountpoint.join("backups");
    let mut cmd = pgb(&server.env());
    cmd.env("BACKUP_DIR", &backups).arg("dump");
    if !mounted {
        eprintln!("cannot mount a tmpfs here: using a 2 MiB file-size limit instead");
        limit_file_size(&mut cmd, 2 << 20);
    }
    let run = run(cmd).expect(74);
    assert_eq!(run.json["status"], "failed");
    let msg = run.message();
    assert!(
        msg.contains("No space left") || msg.contains("File too large"),
        "{msg}"
    );
    assert!(complete_folders(&backups).is_empty());
    assert!(
        visible_dirs(&backups).is_empty(),
        "work folder removed: {:?}",
        visible_dirs(&backups)
    );
}

#[test]
fn server_killed_mid_dump_fails_and_leaves_no_complete_folder() {
    let mut server = PgServer::start(17);
    server.psql("postgres", "CREATE DATABASE app; ");
    server.psql("app", "CREATE TABLE t(x int); INSERT INTO t VALUES (1);");
    let lock = TableLock::hold(&server, "app", "t");
    let dir = tempfile::tempdir().unwrap();
    let child = pgb_spawn(&server.env(), dir.path(), &["dump"]);
    // pg_dump of `app` now waits for the table lock, mid-run.
    wait_for(30, "the dump to reach app", || {
        visible_dirs(dir.path()).iter().any(|d| d.ends_with(".partial"))
            && server
                .psql(
                    "postgres",
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND wait_event_type = 'Lock'",
                )
                .trim()
                == "1"
    });
    server.kill();
    drop(lock);
    let out = child.wait_with_output().unwrap();
    let run = parse_run(out);
    assert_ne!(run.code, 0);
    assert_eq!(run.json["status"], "failed", "{}", run.stdout);
    assert_eq!(run.code, 69, "{}", run.stdout);
    assert!(complete_folders(dir.path()).is_empty());
    assert!(
        visible_dirs(dir.path()).is_empty(),
        "{:?}",
        visible_dirs(dir.path())
    );
}

/// Two dumps at once: the second exits 75 at once and names the first; `kill -9` of the
/// first frees the lock for the next run. Meanwhile no process shows the password.
#[test]
fn second_dump_is_75_and_a_killed_run_does_not_block_the_next() {
    let server = PgServer::start(17);
    server.psql("postgres", "CREATE DATABASE app");
    server.psql("app", "CREATE TABLE t(x int)");
    let lock = TableLock::hold(&server, "app", "t");
    let dir = tempfile::tempdir().unwrap();
    let mut first = pgb(&server.env());
    first
        .env("BACKUP_DIR", dir.path())
        .arg("dump")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut first = first.spawn().unwrap();
    let lock_file = dir.path().join(".pg-backups.lock");
    wait_for(30, "the first dump to hold the lock", || {
        std::fs::read_to_string(&lock_file)
            .map(|s| s.contains("`dump`"))
            .unwrap_or(false)
    });
    wait_for(30, "pg_dump to wait on the table", || {
        server
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND wait_event_type = 'Lock'",
            )
            .trim()
            == "1"
    });

    // No process argument anywhere carries the password; pg_dump gets it from a private
    // password file, not from its arguments or PGPASSWORD.
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(ps.contains("pg_dump"), "{ps}");
    assert!(!ps.contains(PASSWORD), "password visible in ps:\n{ps}");
    let pg_dump_pid = std::process::Command::new("pgrep")
        .args(["-P", &first.id().to_string(), "pg_dump"])
        .output()
        .unwrap();
    let pg_dump_pid = String::from_utf8_lossy(&pg_dump_pid.stdout)
        .lines()
        .next()
        .expect("a pg_dump child")
        .trim()
        .to_string();
    let environ = std::fs::read(format!("/proc/{pg_dump_pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains(PASSWORD),
        "password in pg_dump's environment"
    );
    assert!(environ.contains("PGPASSFILE="), "{environ}");

    let started = Instant::now();
    let second = pgb_run(&server.env(), dir.path(), &["dump"]).expect(75);
    assert!(started.elapsed() < Duration::from_secs(5), "exits at once");
    assert_eq!(second.json["error"]["kind"], "locked");
    assert!(
        second.message().contains(&format!("pid {}", first.id())),
        "names the holder: {}",
        second.message()
    );

    first.kill().unwrap(); // SIGKILL: no cleanup code runs
    first.wait().unwrap();
    drop(lock);
    // A new second, so the next run does not reuse (and clean) the killed run's folder name.
    std::thread::sleep(Duration::from_millis(1100));
    let third = pgb_run(&server.env(), dir.path(), &["dump"]).expect(0);
    assert_eq!(third.json["status"], "ok");
    // The killed run's work folder is still there, and listed as incomplete.
    let list = pgb_run(&server.env(), dir.path(), &["list", "--source", "local"]).expect(0);
    let folders = list.json["sources"][0]["folders"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        folders
            .iter()
            .any(|f| f["status"] == "incomplete"
                && f["folder"].as_str().unwrap().ends_with(".partial")),
        "{}",
        list.stdout
    );
}

#[test]
fn bad_values_are_refused_with_64_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("BACKUP_JOBS", "0"),
        ("BACKUP_JOBS", "two"),
        ("BACKUP_COMPRESSION_LEVEL", "12"),
        ("PGPORT", "abc"),
        ("PGPORT", "70000"),
        ("S3_ENABLED", "maybe"),
        ("LOG_FORMAT", "xml"),
        ("LOCAL_RETENTION_DAYS", "0"),
        ("S3_RETENTION_DAYS", "-1"),
        ("S3_ENDPOINT", "not a url"),
        ("PGSSLMODE", "sometimes"),
    ];
    for (var, value) in cases {
        let envs = vec![(var.to_string(), value.to_string())];
        let run = pgb_run(&envs, dir.path(), &["dump"]).expect(64);
        assert!(
            run.message().contains(var),
            "{var}={value}: message must name the variable: {}",
            run.message()
        );
        assert!(
            visible_dirs(dir.path()).is_empty(),
            "no work started for {var}"
        );
    }
    let run = pgb_run(&[], dir.path(), &["dump", "--no-such-flag"]).expect(64);
    assert_eq!(run.json["command"], "dump");
    assert_eq!(run.json["error"]["kind"], "usage");
}

#[test]
fn json_logs_go_to_stderr_and_the_result_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let envs = vec![
        ("PGHOST".to_string(), "127.0.0.1".to_string()),
        ("PGPORT".to_string(), free_port().to_string()),
        ("LOG_FORMAT".to_string(), "json".to_string()),
        ("PG_BIN_DIR".to_string(), pg_bin(17).display().to_string()),
    ];
    let run = pgb_run(&envs, dir.path(), &["dump"]).expect(69);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
}

/// A PG_BIN_DIR whose pg_dump, for database `app`, does what a restore would refuse: with
/// `--create` it slips a `\connect victim` in before the completion line; with
/// `--format=custom` it dumps `victim` instead. The other tools are the real ones.
fn lying_pg_dump(real: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for tool in ["pg_dumpall", "psql", "pg_restore"] {
        std::os::unix::fs::symlink(real.join(tool), dir.join(tool)).unwrap();
    }
    let script = format!(
        r#"#!/bin/sh
real='{}/pg_dump'
case "$*" in
  *--format=custom*"dbname='app'"*)
    exec "$real" -w --format=custom "--dbname=dbname='victim'" ;;
  *"dbname='app'"*)
    "$real" "$@" | sed 's/^-- PostgreSQL database dump complete$/\\connect victim\n&/' ;;
  *) exec "$real" "$@" ;;
esac
"#,
        real.display()
    );
    let path = dir.join("pg_dump");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Guarantee 9: dump runs a restore's checks on each file as it writes it, so a database
/// whose file a restore would refuse makes the run `partial` with the reason, and the rest of
/// the folder still restores.
#[test]
fn a_database_a_restore_would_refuse_makes_the_dump_partial() {
    let server = PgServer::start(15);
    for db in ["app", "victim", "other"] {
        server.psql("postgres", &format!("CREATE DATABASE {db}"));
        server.psql(db, "CREATE TABLE t(x int); INSERT INTO t VALUES (1);");
    }
    let bin = tempfile::tempdir().unwrap();
    lying_pg_dump(&server.bin(), bin.path());
    let envs = with(&server.env(), "PG_BIN_DIR", bin.path().to_str().unwrap());
    for (format, reason) in [
        ("plain", "may not write"),
        ("custom", "CREATE DATABASE victim"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let envs = with(&envs, "BACKUP_FORMAT", format);
        let run = pgb_run(&envs, dir.path(), &["dump"]).expect(65);
        assert_eq!(run.json["status"], "partial", "{format}: {}", run.stdout);
        assert!(run.stdout.contains(reason), "{format}: {}", run.stdout);
        let folder = folder_of(dir.path());
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(&folder).join("manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["status"], "partial", "{format}: {manifest}");
        assert_eq!(
            manifest["failed"][0]["database"], "app",
            "{format}: {manifest}"
        );
        assert!(
            !dir.path()
                .join(&folder)
                .join("postgres_db_app.sql.gz")
                .exists()
                && !dir
                    .path()
                    .join(&folder)
                    .join("postgres_db_app.dump")
                    .exists(),
            "{format}: the refused file was kept"
        );
        // What is in the folder passes a restore's checks.
        pgb_run(&envs, dir.path(), &["verify", &folder]).expect(0);
        // A restore from it says what it lacks.
        let restored = pgb_run(
            &restore_env(
                &envs,
                &[
                    ("RESTORE_SOURCE", "local"),
                    ("RESTORE_FOLDER", &folder),
                    ("RESTORE_TYPE", "database"),
                    ("RESTORE_DATABASE", "other"),
                    ("RESTORE_TARGET_DATABASE", &format!("other_{format}")),
                ],
            ),
            dir.path(),
            &["restore"],
        )
        .expect(0);
        assert_eq!(
            restored.json["backup_status"], "partial",
            "{}",
            restored.stdout
        );
        assert_eq!(
            restored.json["not_in_backup"][0], "app",
            "{}",
            restored.stdout
        );
    }
}

/// A database whose name is not UTF-8 (bytes stored by a LATIN1 database) is reported failed
/// by its bytes; it never stops the backup of the others, nor is dumped under another name.
#[test]
fn a_database_named_in_latin1_is_reported_and_the_others_are_dumped() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let server = PgServer::start(15);
    server.psql(
        "postgres",
        "CREATE DATABASE l1 TEMPLATE template0 ENCODING 'LATIN1' LOCALE 'C'",
    );
    server.psql("postgres", "CREATE DATABASE caf");
    let out = server
        .client("psql")
        .env("PGCLIENTENCODING", "LATIN1")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-d", "l1", "-c"])
        .arg(OsStr::from_bytes(b"CREATE DATABASE \"caf\xe9\""))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dir = tempfile::tempdir().unwrap();
    let run = pgb_run(&server.env(), dir.path(), &["dump"]).expect(65);
    assert_eq!(run.json["status"], "partial", "{}", run.stdout);
    assert!(run.stdout.contains("636166e9"), "{}", run.stdout);
    let folder = folder_of(dir.path());
    assert!(
        dir.path()
            .join(&folder)
            .join("postgres_db_caf.sql.gz")
            .exists()
    );
    assert!(
        dir.path()
            .join(&folder)
            .join("postgres_db_l1.sql.gz")
            .exists()
    );
}
