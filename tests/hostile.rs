//! Names and bytes are data, never code: hostile database and table names, backup files
//! altered by someone who can write to the bucket, secrets that must not reach child
//! processes, and the races around a restore. Everything against real servers.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::s3::{S3Server, SECRET_KEY};
use common::ssh::SshServer;
use common::*;
use serde_json::Value;

const BUCKET: &str = "pg-backups-hostile";

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn folder_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// The one backup folder (complete or partial) under `dir`.
fn the_folder(dir: &Path) -> String {
    folder_name(&only_folder(dir))
}

fn is_superuser(server: &PgServer, role: &str) -> String {
    server
        .psql(
            "postgres",
            &format!("SELECT rolsuper FROM pg_roles WHERE rolname = '{role}'"),
        )
        .trim()
        .to_string()
}

fn hostile_names_cannot_inject_sql_or_shell(version: u32) {
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("pwned");
    let source = PgServer::start(version);
    source.psql("postgres", "CREATE ROLE app LOGIN PASSWORD 'app-pw'");
    let hostile = [
        "evil\nALTER ROLE app SUPERUSER; -- ".to_string(),
        "cr\rALTER ROLE app SUPERUSER; -- ".to_string(),
        format!("x\n\\! touch {} #", marker.display()),
    ];
    for name in &hostile {
        source.psql("postgres", &format!("CREATE DATABASE {}", ident(name)));
    }
    source.psql("postgres", "CREATE DATABASE plain_app");
    source.psql(
        "plain_app",
        "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2);",
    );
    // A table whose header line contains what the cluster filter looks for.
    let table = "x; Type: DATABASE; Schema: -;";
    source.psql(
        "postgres",
        &format!(
            "CREATE TABLE public.{t}(id int, note text); INSERT INTO public.{t} VALUES (1, 'kept'), (2, 'also kept');",
            t = ident(table)
        ),
    );

    let dir = tempfile::tempdir().unwrap();
    let run = pgb_run(&source.env(), dir.path(), &["dump"]);
    // Each hostile database failed on its own and is named exactly; the rest is there.
    assert_eq!(run.json["status"], "partial", "{}", run.stdout);
    assert_eq!(run.code, 65, "{}", run.stdout);
    let failed: Vec<String> = run.json["databases_failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["database"].as_str().unwrap().to_string())
        .collect();
    for name in &hostile {
        assert!(failed.contains(name), "{name:?} not named in {failed:?}");
    }
    let folder = the_folder(dir.path());
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(&folder).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["status"], "partial");
    let in_manifest: Vec<&str> = manifest["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["database"].as_str().unwrap())
        .collect();
    for name in &hostile {
        assert!(in_manifest.contains(&name.as_str()), "{name:?}");
    }
    let cluster = dir.path().join(&folder).join("postgres_cluster.sql.gz");
    for line in gunzip_text(&cluster).lines() {
        assert!(
            !line.starts_with("ALTER ROLE app SUPERUSER") && !line.starts_with("\\!"),
            "a name started a line: {line:?}"
        );
    }

    // By hand, the documented way.
    let by_hand = PgServer::start(version);
    by_hand.restore_gz(&cluster);
    assert!(!marker.exists(), "the shell command ran");
    assert_eq!(is_superuser(&by_hand, "app"), "f");
    assert_eq!(
        by_hand
            .psql(
                "postgres",
                &format!("SELECT count(*) FROM public.{}", ident(table))
            )
            .trim(),
        "2"
    );
    assert_eq!(
        by_hand.psql("plain_app", "SELECT count(*) FROM t").trim(),
        "2"
    );

    // With `restore`.
    let target = PgServer::start(version);
    let envs = restore_env(
        &target.env(),
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", &folder),
            ("RESTORE_TYPE", "cluster"),
        ],
    );
    let run = pgb_run(&envs, dir.path(), &["restore"]).expect(0);
    assert_eq!(run.json["errors"], 0, "{}", run.stdout);
    assert!(!marker.exists(), "the shell command ran");
    assert_eq!(is_superuser(&target, "app"), "f");
    assert_eq!(
        target
            .psql(
                "postgres",
                &format!("SELECT note FROM public.{} ORDER BY id", ident(table))
            )
            .trim(),
        "kept\nalso kept"
    );
}

#[test]
fn hostile_names_cannot_inject_sql_or_shell_on_15() {
    hostile_names_cannot_inject_sql_or_shell(15);
}

#[test]
fn hostile_names_cannot_inject_sql_or_shell_on_17() {
    hostile_names_cannot_inject_sql_or_shell(17);
}

#[test]
fn a_restore_target_name_with_a_line_break_is_64() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["a\nb", "a\rb"] {
        let envs: Vec<(String, String)> = vec![
            ("RESTORE_SOURCE".into(), "local".into()),
            ("RESTORE_FOLDER".into(), "latest".into()),
            ("RESTORE_TYPE".into(), "database".into()),
            ("RESTORE_DATABASE".into(), "app".into()),
            ("RESTORE_TARGET_DATABASE".into(), bad.into()),
        ];
        let run = pgb_run(&envs, dir.path(), &["restore"]).expect(64);
        assert!(
            run.message().contains("RESTORE_TARGET_DATABASE"),
            "{}",
            run.message()
        );
    }
}

/// A dump whose database file someone rewrote, with a manifest that matches.
fn dumped_with(
    version: u32,
    edit: impl FnOnce(String) -> String,
) -> (PgServer, tempfile::TempDir, String) {
    let source = PgServer::start(version);
    source.psql("postgres", "CREATE DATABASE app");
    source.psql(
        "app",
        "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2), (3);",
    );
    let dir = tempfile::tempdir().unwrap();
    pgb_run(&source.env(), dir.path(), &["dump"]).expect(0);
    let folder = the_folder(dir.path());
    rewrite_backup_file(&dir.path().join(&folder), "postgres_db_app.sql.gz", edit);
    (source, dir, folder)
}

fn inject_after_settings(sql: String, injected: &str) -> String {
    let anchor = "SET row_security = off;\n";
    assert!(sql.contains(anchor));
    sql.replacen(anchor, &format!("{anchor}{injected}"), 1)
}

/// The same after the file's `\connect` (pg_dump repeats its settings there), where SQL of
/// the database's own belongs.
fn inject_after_connect(sql: String, injected: &str) -> String {
    let anchor = "SET row_security = off;\n";
    let at = sql.rfind(anchor).expect("the settings after the connect") + anchor.len();
    assert!(
        sql[..at].contains("\\connect"),
        "no settings after the connect"
    );
    format!("{}{injected}{}", &sql[..at], &sql[at..])
}

#[test]
fn a_backup_file_with_a_shell_escape_is_refused_before_any_sql() {
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("pwned");
    for injected in [
        format!("\\! touch {}\n", marker.display()),
        format!("SELECT 1; \\! touch {}\n", marker.display()),
        format!("\\o |touch {}\nSELECT 1;\n", marker.display()),
        "\\connect -reuse-previous=on \"host=203.0.113.9 dbname='app'\"\n".to_string(),
    ] {
        let (source, dir, folder) = dumped_with(17, |sql| inject_after_settings(sql, &injected));
        let run = pgb_run(&[], dir.path(), &["verify", &folder]).expect(65);
        assert_eq!(
            run.json["error"]["kind"], "unsafe_content",
            "{}",
            run.stdout
        );
        assert!(run.message().contains("line "), "{}", run.message());
        assert!(
            run.message().contains("postgres_db_app.sql.gz"),
            "{}",
            run.message()
        );
        source.psql("postgres", "DROP DATABASE app");
        let envs = restore_env(
            &source.env(),
            &[
                ("RESTORE_SOURCE", "local"),
                ("RESTORE_FOLDER", &folder),
                ("RESTORE_TYPE", "database"),
                ("RESTORE_DATABASE", "app"),
            ],
        );
        let run = pgb_run(&envs, dir.path(), &["restore"]).expect(65);
        assert_eq!(
            run.json["error"]["kind"], "unsafe_content",
            "{}",
            run.stdout
        );
        assert!(!marker.exists(), "the shell command ran for {injected:?}");
        let exists = source.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'app'",
        );
        assert_eq!(
            exists.trim(),
            "0",
            "no SQL reached the server for {injected:?}"
        );
    }
}

#[test]
fn a_meta_command_hidden_from_the_scan_is_refused_by_psql_itself() {
    // A COPY that fails on the server (no such table): psql then reads its data as SQL, where
    // the scan (which cannot know the COPY will fail) read COPY data holding an escaped
    // backslash. psql's \restrict mode refuses the meta-command at replay.
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("pwned");
    let injected = format!(
        "COPY public.no_such_table (a) FROM stdin;\n\\\\! touch {}\n\\.\n",
        marker.display()
    );
    let (source, dir, folder) = dumped_with(17, |sql| inject_after_connect(sql, &injected));
    source.psql("postgres", "DROP DATABASE app");
    let envs = restore_env(
        &source.env(),
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", &folder),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "app"),
        ],
    );
    let run = pgb_run(&envs, dir.path(), &["restore"]).expect(65);
    assert!(!marker.exists(), "the shell command ran");
    let errors = run.json["first_errors"].to_string();
    assert!(errors.contains("restricted"), "{}", run.stdout);
}

#[test]
fn rename_never_touches_bodies_literals_or_copy_data() {
    let source = PgServer::start(15);
    source.psql("postgres", "CREATE DATABASE app");
    source.psql(
        "app",
        "CREATE FUNCTION public.f() RETURNS text LANGUAGE plpgsql AS $body$
BEGIN
RETURN '
ALTER DATABASE app OWNER TO x;
CREATE DATABASE app;
\\connect app
';
END
$body$;
CREATE TABLE public.notes(n text);
INSERT INTO public.notes VALUES (E'\\\\connect app'), ('CREATE DATABASE app'), (E'line\\nALTER DATABASE app SET x TO 1;');",
    );
    let dir = tempfile::tempdir().unwrap();
    pgb_run(&source.env(), dir.path(), &["dump"]).expect(0);
    let envs = restore_env(
        &source.env(),
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", "latest"),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "app"),
            ("RESTORE_TARGET_DATABASE", "app_copy"),
        ],
    );
    let run = pgb_run(&envs, dir.path(), &["restore"]).expect(0);
    assert_eq!(run.json["errors"], 0, "{}", run.stdout);
    let body = |db: &str| source.psql(db, "SELECT pg_get_functiondef('public.f'::regproc)");
    assert_eq!(body("app"), body("app_copy"));
    let rows = |db: &str| source.psql(db, "SELECT n FROM public.notes ORDER BY n");
    assert_eq!(rows("app"), rows("app_copy"));
}

#[test]
fn no_child_process_sees_a_secret() {
    let source = PgServer::start(17);
    source.psql("postgres", "CREATE DATABASE app");
    source.psql("app", "CREATE TABLE t(x int); INSERT INTO t VALUES (1);");
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let ssh = SshServer::start();
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("children.log");
    let pg_wrappers = work.path().join("pgbin");
    logging_wrappers(
        &pg_wrappers,
        &["pg_dump", "pg_dumpall", "psql"],
        Some(&source.bin()),
        &log,
    );
    let ssh_wrappers = work.path().join("sshbin");
    // ssh and rsync also log what their inherited descriptors hold: an in-memory password
    // file that is not close-on-exec would be read here.
    fd_reading_wrappers(&ssh_wrappers, &["ssh", "rsync"], None, &log);
    let path = format!(
        "{}:{}",
        ssh_wrappers.display(),
        std::env::var("PATH").unwrap()
    );
    // The password comes from an env file, the S3 keys from the environment, and an AWS
    // secret sits in the environment too: none may reach a child.
    let env_file = work.path().join("pg-backups.env");
    std::fs::write(&env_file, format!("PGPASSWORD={PASSWORD}\n")).unwrap();
    let mut envs = without(&source.env(), "PGPASSWORD");
    envs = with(&envs, "PG_BIN_DIR", &pg_wrappers.display().to_string());
    envs = with(&envs, "PATH", &path);
    envs = with(
        &envs,
        "AWS_SECRET_ACCESS_KEY",
        "aws-secret-that-must-not-leak",
    );
    envs.extend(s3.env(BUCKET, ""));
    envs.extend(ssh.env());
    let file_arg = env_file.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let run_with = |args: &[&str], envs: &[(String, String)]| {
        let mut all = vec!["--env-file", file_arg.as_str()];
        all.extend_from_slice(args);
        pgb_run(envs, dir.path(), &all)
    };
    run_with(&["dump"], &envs).expect(0);
    run_with(&["ship"], &envs).expect(0);
    run_with(&["verify", "latest", "--restore-test"], &envs).expect(0);
    source.psql("postgres", "DROP DATABASE app");
    let restore = restore_env(
        &envs,
        &[
            ("RESTORE_SOURCE", "s3"),
            ("RESTORE_FOLDER", "latest"),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "app"),
        ],
    );
    run_with(&["restore"], &restore).expect(0);
    // From the remote host, ssh and rsync run while the PostgreSQL tools are set up.
    run_with(
        &["restore"],
        &restore_env(
            &restore,
            &[
                ("RESTORE_SOURCE", "remote"),
                ("RESTORE_DROP_EXISTING", "true"),
            ],
        ),
    )
    .expect(0);
    let text = std::fs::read_to_string(&log).unwrap();
    for tool in ["pg_dump", "pg_dumpall", "psql", "ssh", "rsync"] {
        assert!(text.contains(&format!("== {tool} ")), "{tool} never ran");
    }
    for secret in [PASSWORD, SECRET_KEY, "aws-secret-that-must-not-leak"] {
        assert!(!text.contains(secret), "a child saw {secret:?}");
    }
    // The in-memory password file (`*:*:*:*:<escaped password>`) is not inherited by them.
    assert!(
        !text.contains("*:*:*:*:"),
        "ssh or rsync could read the password file"
    );
    // The password reaches the PostgreSQL tools only through the in-memory passfile.
    assert!(
        text.contains("PGPASSFILE=/proc/self/fd/"),
        "{}",
        &text[..text.len().min(3000)]
    );
}

#[test]
fn prune_leaves_alone_a_folder_that_a_restore_is_reading() {
    let source = PgServer::start(15);
    source.psql("postgres", "CREATE DATABASE slow");
    // Each restored row waits in its CHECK: the restore takes a few seconds.
    source.psql(
        "slow",
        "CREATE FUNCTION public.slow_ok(int) RETURNS boolean LANGUAGE sql AS 'SELECT pg_sleep(0.3) IS NOT NULL';
         CREATE TABLE public.t(x int CHECK (public.slow_ok(x)));
         INSERT INTO public.t SELECT generate_series(1, 12);",
    );
    let dir = tempfile::tempdir().unwrap();
    pgb_run(&source.env(), dir.path(), &["dump"]).expect(0);
    let old = folder_hours_ago(24 * 10);
    rename_folder(dir.path(), &the_folder(dir.path()), &old);
    let newer = folder_hours_ago(48);
    make_folder(dir.path(), &newer, &[("postgres_globals.sql.gz", 10)]);
    make_folder(
        dir.path(),
        &folder_hours_ago(1),
        &[("postgres_globals.sql.gz", 10)],
    );

    let envs = restore_env(
        &source.env(),
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", &old),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "slow"),
            ("RESTORE_TARGET_DATABASE", "slow_copy"),
            ("LOCAL_KEEP_LAST", "1"),
        ],
    );
    let restore = pgb_spawn(&envs, dir.path(), &["restore"]);
    wait_for(60, "the restore to start replaying", || {
        source
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname = 'slow_copy'",
            )
            .trim()
            == "1"
    });
    let prune = pgb_run(&envs, dir.path(), &["prune"]).expect(0);
    let local = &prune.json["destinations"][0];
    let kept = local["kept"].as_array().unwrap();
    let why = kept
        .iter()
        .find(|k| k["folder"] == old.as_str())
        .unwrap_or_else(|| panic!("{old} was not kept: {}", prune.stdout));
    assert_eq!(
        why["reasons"][0], "a restore is reading it",
        "{}",
        prune.stdout
    );
    assert!(dir.path().join(&old).exists());
    let run = parse_run(restore.wait_with_output().unwrap()).expect(0);
    assert_eq!(run.json["errors"], 0, "{}", run.stdout);
    assert_eq!(
        source.psql("slow_copy", "SELECT count(*) FROM t").trim(),
        "12"
    );
    // Once the restore is over, the next prune takes it.
    let prune = pgb_run(&envs, dir.path(), &["prune"]).expect(0);
    let deleted = prune.json["destinations"][0]["deleted"].to_string();
    assert!(deleted.contains(&old), "{}", prune.stdout);
    assert!(!dir.path().join(&old).exists());
    assert!(!dir.path().join(format!(".restore-{old}.lock")).exists());
}

#[test]
fn staging_never_uses_a_directory_prepared_at_a_predictable_path() {
    let source = PgServer::start(17);
    source.psql("postgres", "CREATE DATABASE app");
    source.psql(
        "app",
        "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2);",
    );
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let mut envs = source.env();
    envs.extend(s3.env(BUCKET, ""));
    pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    let folder = the_folder(dir.path());
    // Another user prepares the staging paths of the next few hundred pids, writable by
    // them, as the old predictable `pg-backups-restore-<folder>-<pid>` allowed.
    let staging = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        staging.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap();
    let next_pid: u32 = loadavg.split_whitespace().last().unwrap().parse().unwrap();
    for pid in next_pid..next_pid + 400 {
        let d = staging
            .path()
            .join(format!("pg-backups-restore-{folder}-{pid}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("planted"), "x").unwrap();
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    source.psql("postgres", "DROP DATABASE app");
    let envs = restore_env(
        &envs,
        &[
            ("RESTORE_SOURCE", "s3"),
            ("RESTORE_FOLDER", &folder),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "app"),
            ("RESTORE_DIR", &staging.path().display().to_string()),
        ],
    );
    pgb_run(&envs, dir.path(), &["restore"]).expect(0);
    assert_eq!(source.psql("app", "SELECT count(*) FROM t").trim(), "2");
    let mut prepared = 0;
    for entry in std::fs::read_dir(staging.path()).unwrap() {
        let entry = entry.unwrap();
        let names: Vec<String> = std::fs::read_dir(entry.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["planted"], "{} was used", entry.path().display());
        prepared += 1;
    }
    assert_eq!(
        prepared, 400,
        "the restore left its own staging folder behind"
    );
}

#[test]
fn a_damaged_remote_copy_that_looks_unchanged_is_copied_again_and_flushed() {
    let ssh = SshServer::start();
    // Log every remote command (rsync's server side included), then run it.
    let log = ssh.path("commands.log");
    let forced = ssh.path("forced.sh");
    std::fs::write(
        &forced,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$SSH_ORIGINAL_COMMAND\" >> '{}'\nexec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&forced, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let key = std::fs::read_to_string(ssh.path("client_key.pub")).unwrap();
    std::fs::write(
        ssh.path("authorized_keys"),
        format!("command=\"{}\" {key}", forced.display()),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = "20250101_000000";
    make_folder(
        dir.path(),
        folder,
        &[
            ("postgres_globals.sql.gz", 5000),
            ("postgres_db_app.sql.gz", 200_000),
        ],
    );
    pgb_run(&ssh.env(), dir.path(), &["ship"]).expect(0);
    let commands = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = commands.lines().collect();
    let position = |needle: &str| lines.iter().position(|l| l.contains(needle));
    let data_sync = position("sync -- 'postgres_globals.sql.gz'").expect(&commands);
    let manifest_copy = lines
        .iter()
        .rposition(|l| l.starts_with("rsync --server"))
        .unwrap();
    let manifest_sync = position("sync -- 'manifest.json'").expect(&commands);
    assert!(
        data_sync < manifest_copy && manifest_copy < manifest_sync,
        "{commands}"
    );

    // An interrupted ship left the data but not the manifest, and one file got damaged on
    // the remote disk without changing its size or time: rsync's quick check skips it.
    let remote = ssh.remote().join(folder);
    std::fs::remove_file(remote.join("manifest.json")).unwrap();
    let victim = remote.join("postgres_db_app.sql.gz");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[1000] ^= 0xff;
    let mtime = std::fs::metadata(&victim).unwrap().modified().unwrap();
    std::fs::write(&victim, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let run = pgb_run(&ssh.env(), dir.path(), &["ship"]).expect(0);
    assert_eq!(run.json["destinations"][0]["shipped"], 1, "{}", run.stdout);
    assert_eq!(
        sha256_file(&victim),
        sha256_file(&dir.path().join(folder).join("postgres_db_app.sql.gz"))
    );
}

#[test]
fn one_unreadable_entry_never_stops_a_run() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let good = folder_hours_ago(1);
    make_folder(dir.path(), &good, &[("postgres_globals.sql.gz", 100)]);
    for entry in walk(dir.path()) {
        std::os::unix::fs::chown(&entry, Some(65534), Some(65534)).unwrap();
    }
    // Made by root, readable by nobody else.
    let locked = dir.path().join(folder_hours_ago(2));
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).unwrap();
    let envs = with(
        &s3.env(BUCKET, ""),
        "HOME",
        &home.path().display().to_string(),
    );
    let run_as_nobody = |args: &[&str]| {
        let mut cmd = pgb(&envs);
        cmd.env("BACKUP_DIR", dir.path()).args(args);
        as_nobody(&mut cmd);
        run(cmd)
    };
    let list = run_as_nobody(&["list", "--source", "local"]).expect(0);
    let locked_name = folder_name(&locked);
    assert_eq!(
        listed_status(&list, &locked_name),
        "invalid",
        "{}",
        list.stdout
    );
    assert_eq!(listed_status(&list, &good), "complete");
    run_as_nobody(&["ship"]).expect(0);
    run_as_nobody(&["prune"]).expect(0);
    run_as_nobody(&["check", "--max-age", "2h"]).expect(0);
    assert!(locked.exists());
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn latest_never_picks_a_folder_from_the_future() {
    let source = PgServer::start(15);
    source.psql("postgres", "CREATE DATABASE app");
    let dir = tempfile::tempdir().unwrap();
    pgb_run(&source.env(), dir.path(), &["dump"]).expect(0);
    let real = the_folder(dir.path());
    // A clock that ran a year ahead left a folder named after a time to come.
    let future = folder_hours_ago(-24 * 365);
    copy_dir(
        &dir.path().join(&real),
        &dir.path().join(&real).with_file_name("copy"),
    );
    rename_folder(dir.path(), "copy", &future);
    let run = pgb_run(&source.env(), dir.path(), &["verify", "latest"]).expect(0);
    assert_eq!(run.json["folder"], real.as_str());
    source.psql("postgres", "DROP DATABASE app");
    let envs = restore_env(
        &source.env(),
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", "latest"),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "app"),
        ],
    );
    let run = pgb_run(&envs, dir.path(), &["restore"]).expect(0);
    assert_eq!(run.json["folder"], real.as_str());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn schedules_are_parsed_as_cron_and_out_of_range_fields_are_64() {
    let dir = tempfile::tempdir().unwrap();
    make_folder(
        dir.path(),
        &folder_hours_ago(30),
        &[("postgres_globals.sql.gz", 10)],
    );
    let run = pgb_run(
        &[("BACKUP_SCHEDULE".into(), "0 1,30 * * *".into())],
        dir.path(),
        &["check"],
    )
    .expect(64);
    assert!(
        run.message().contains("BACKUP_SCHEDULE"),
        "{}",
        run.message()
    );
    // Weekly: a 30-hour-old backup is fresh.
    let run = pgb_run(
        &[("BACKUP_SCHEDULE".into(), "0 3 * * 1".into())],
        dir.path(),
        &["check"],
    )
    .expect(0);
    assert_eq!(run.json["max_age_seconds"], (7 * 24 + 2) * 3600);
    // Daily: it is stale.
    pgb_run(
        &[("BACKUP_SCHEDULE".into(), "@daily".into())],
        dir.path(),
        &["check"],
    )
    .expect(1);
}

#[test]
fn sigterm_during_a_multipart_upload_aborts_it_at_once() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    make_folder(
        dir.path(),
        "20250101_000000",
        &[("postgres_db_big.sql.gz", 600 << 20)],
    );
    let envs = with(&s3.env(BUCKET, ""), "S3_PART_SIZE", "5MiB");
    let child = pgb_spawn(&envs, dir.path(), &["ship"]);
    wait_for(60, "the multipart upload to start", || {
        s3.multipart_uploads(BUCKET) > 0
    });
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let run = parse_run(child.wait_with_output().unwrap());
    let took = signalled.elapsed();
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        took < Duration::from_secs(3),
        "the ship took {took:?} to stop"
    );
    assert_eq!(
        s3.multipart_uploads(BUCKET),
        0,
        "the upload was not aborted"
    );
    assert!(s3.keys(BUCKET, "20250101_000000/").is_empty());
}

#[test]
fn stale_upload_cleanup_touches_only_our_keys() {
    use chrono::Utc;
    use pg_backups::storage::Storage;
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let client = s3.client();
    for key in [
        "20250101_000000/postgres_db_x.sql.gz",
        "videos/holiday.mp4",
        "20250101_000000/somebody-elses.bin",
    ] {
        s3.rt
            .block_on(
                client
                    .create_multipart_upload()
                    .bucket(BUCKET)
                    .key(key)
                    .send(),
            )
            .unwrap();
    }
    let cfg = pg_backups::config::S3Config {
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
        endpoint: Some(s3.endpoint()),
        prefix: String::new(),
        force_path_style: true,
        credentials: Some(pg_backups::config::S3Credentials::new(
            common::s3::ACCESS_KEY,
            SECRET_KEY,
        )),
        part_size: None,
        max_parts: 10_000,
        sse: None,
        storage_class: None,
        object_lock: None,
        retention: pg_backups::config::RetentionRules {
            days: 7,
            keep_last: 3,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
        },
    };
    let storage = pg_backups::storage::s3::S3Storage::new(&cfg).unwrap();
    let later = Utc::now() + chrono::Duration::days(2);
    let aborted = storage.abort_stale_uploads(later, false).unwrap();
    assert_eq!(aborted, ["20250101_000000/postgres_db_x.sql.gz"]);
    assert_eq!(s3.multipart_uploads(BUCKET), 2);
}

#[test]
fn prune_without_backup_dir_still_prunes_s3_and_says_local_is_missing() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let staging = tempfile::tempdir().unwrap();
    for hours in [24 * 30, 24 * 20, 24 * 10, 24 * 5, 1] {
        make_folder(
            staging.path(),
            &folder_hours_ago(hours),
            &[("postgres_globals.sql.gz", 10)],
        );
    }
    pgb_run(&s3.env(BUCKET, ""), staging.path(), &["ship"]).expect(0);
    let missing = staging.path().join("not-there");
    let run = pgb_run(&s3.env(BUCKET, ""), &missing, &["prune"]).expect(66);
    assert_eq!(run.json["status"], "partial", "{}", run.stdout);
    let local = &run.json["destinations"][0];
    assert_eq!(local["destination"], "local");
    assert_eq!(local["status"], "failed");
    let s3_dest = &run.json["destinations"][1];
    assert_eq!(s3_dest["status"], "ok", "{}", run.stdout);
    assert!(
        !s3_dest["deleted"].as_array().unwrap().is_empty(),
        "{}",
        run.stdout
    );
    assert!(!missing.exists(), "prune does not create BACKUP_DIR");
}

#[test]
fn an_unreachable_remote_host_while_opening_a_file_is_69() {
    let ssh = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    make_folder(
        dir.path(),
        "20250101_000000",
        &[("postgres_globals.sql.gz", 100)],
    );
    pgb_run(&ssh.env(), dir.path(), &["ship"]).expect(0);
    // From now on the host drops the connection when asked whether a file exists, as a
    // network cut at that moment would.
    let forced = ssh.path("cut.sh");
    std::fs::write(
        &forced,
        "#!/bin/sh\ncase \"$SSH_ORIGINAL_COMMAND\" in *__found__*) kill -9 $PPID;; esac\nexec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&forced, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let key = std::fs::read_to_string(ssh.path("client_key.pub")).unwrap();
    std::fs::write(
        ssh.path("authorized_keys"),
        format!("command=\"{}\" {key}", forced.display()),
    )
    .unwrap();
    let run = pgb_run(
        &ssh.env(),
        dir.path(),
        &["verify", "20250101_000000", "--source", "remote"],
    );
    let codes: Vec<i64> = run.json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["error"]["exit_code"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(run.code, 69, "{}", run.stdout);
    assert!(codes.contains(&69), "{}", run.stdout);
}

#[test]
fn a_local_file_we_cannot_read_is_74_not_77() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let folder = "20250101_000000";
    make_folder(dir.path(), folder, &[("postgres_globals.sql.gz", 100)]);
    std::os::unix::fs::chown(dir.path().join(folder), Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::chown(
        dir.path().join(folder).join("manifest.json"),
        Some(65534),
        Some(65534),
    )
    .unwrap();
    // The data file stays root's, mode 0600.
    std::fs::set_permissions(
        dir.path().join(folder).join("postgres_globals.sql.gz"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut cmd = pgb(&[]);
    cmd.env("BACKUP_DIR", dir.path()).args(["verify", folder]);
    as_nobody(&mut cmd);
    let run = run(cmd);
    assert_eq!(run.code, 74, "{}", run.stdout);
}

#[test]
fn secrets_have_no_flags_and_urls_lose_their_credentials() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--pgpassword", "--s3-secret-key", "--s3-access-key"] {
        let run = pgb_run(&[], dir.path(), &["list", flag, "hunter2"]).expect(64);
        assert!(!run.stdout.contains("hunter2"), "{}", run.stdout);
    }
    let envs: Vec<(String, String)> = vec![
        ("S3_ENABLED".into(), "true".into()),
        ("S3_BUCKET".into(), "b-x".into()),
        (
            "S3_ENDPOINT".into(),
            "https://AKIAEXAMPLE:topsecret@s3.example.com".into(),
        ),
    ];
    let run = pgb_run(&envs, dir.path(), &["list"]).expect(64);
    assert!(run.message().contains("S3_ENDPOINT"), "{}", run.message());
    assert!(!run.stdout.contains("topsecret") && !run.stderr.contains("topsecret"));
}
