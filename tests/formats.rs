//! The other formats: custom-format archives restored by pg_restore (in parallel), and zstd
//! for plain SQL, alone and with age encryption, from local, S3 and the remote host, compared
//! with the source the way the fidelity tests do.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::fixture::{self, LONG_NAME, nasty_names};
use common::s3::S3Server;
use common::ssh::SshServer;
use common::*;
use serde_json::Value;

const BUCKET: &str = "pg-backups-formats";

fn files_of(dir: &Path, folder: &str) -> Vec<String> {
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join(folder).join("manifest.json")).unwrap())
            .unwrap();
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

struct Case {
    version: u32,
    settings: Vec<(&'static str, &'static str)>,
    jobs: &'static str,
    suffix: &'static str,
    encrypted: bool,
}

/// Dump the fixture with `settings`, ship it, and restore: the globals, every database (each
/// from one of local, S3 and remote in turn), one database under another name, and the whole
/// cluster onto a fresh server, each compared with the source.
fn round_trip(case: Case) {
    let source = PgServer::start(case.version);
    fixture::create(&source);
    // A database with nothing in it (template1 has a table here): its archive lists only
    // database-level entries.
    source.psql("postgres", "CREATE DATABASE nothing_yet TEMPLATE template0");
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let ssh = SshServer::start();
    let keys = tempfile::tempdir().unwrap();
    let mut envs = source.env();
    envs.extend(s3.env(BUCKET, ""));
    envs.extend(ssh.env());
    for (k, v) in &case.settings {
        envs = with(&envs, k, v);
    }
    if case.encrypted {
        let (key, recipient) = age_keygen(keys.path(), "key.txt");
        envs = with(&envs, "AGE_RECIPIENTS", &recipient);
        envs = with(&envs, "AGE_IDENTITY_FILE", key.to_str().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    let folder = folder_of(dir.path());
    let files = files_of(dir.path(), &folder);
    for f in &files {
        assert!(
            f.ends_with(case.suffix)
                || f.starts_with("postgres_globals")
                || f.starts_with("postgres_cluster"),
            "{f} does not end with {}",
            case.suffix
        );
    }
    for source_kind in ["local", "s3", "remote"] {
        let run = pgb_run(
            &envs,
            dir.path(),
            &["verify", &folder, "--source", source_kind],
        )
        .expect(0);
        assert_eq!(run.json["content_checked"], true, "{}", run.stdout);
    }

    let target = PgServer::start(case.version);
    let base = restore_env(
        &with(&envs, "PGPORT", &target.port.to_string()),
        &[("RESTORE_FOLDER", &folder), ("RESTORE_JOBS", case.jobs)],
    );
    let run = pgb_run(
        &restore_env(
            &base,
            &[("RESTORE_SOURCE", "local"), ("RESTORE_TYPE", "globals")],
        ),
        dir.path(),
        &["restore"],
    )
    .expect(0);
    assert_eq!(run.json["tolerated"], 1, "{}", run.stdout);
    let sources = ["local", "s3", "remote"];
    for (i, db) in nasty_names().into_iter().enumerate() {
        let from = sources[i % 3];
        let envs = restore_env(
            &base,
            &[
                ("RESTORE_SOURCE", from),
                ("RESTORE_TYPE", "database"),
                ("RESTORE_DATABASE", db),
            ],
        );
        let run = pgb_run(&envs, dir.path(), &["restore"]).expect(0);
        assert_eq!(run.json["errors"], 0, "{}", run.stdout);
        assert_same(
            &source.dump_normalized(db),
            &target.dump_normalized(db),
            &format!("{db} from {from}"),
        );
    }
    // Under another name: the database's own properties follow it.
    let envs = restore_env(
        &base,
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "my db"),
            ("RESTORE_TARGET_DATABASE", "my db (renamed)"),
        ],
    );
    let run = pgb_run(&envs, dir.path(), &["restore"]).expect(0);
    assert_eq!(run.json["errors"], 0, "{}", run.stdout);
    assert_same(
        &source.dump_normalized("my db").replace("my db", "NAME"),
        &target
            .dump_normalized("my db (renamed)")
            .replace("my db (renamed)", "NAME"),
        "a database restored under another name",
    );
    let envs = restore_env(
        &base,
        &[
            ("RESTORE_SOURCE", "s3"),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", LONG_NAME),
            ("RESTORE_TARGET_DATABASE", "renamed"),
        ],
    );
    pgb_run(&envs, dir.path(), &["restore"]).expect(0);
    assert_eq!(fixture::row_count(&target, "renamed", "public.t"), 100);

    // The whole cluster onto a fresh server.
    let fresh = PgServer::start(case.version);
    let envs = restore_env(
        &with(&base, "PGPORT", &fresh.port.to_string()),
        &[("RESTORE_SOURCE", "remote"), ("RESTORE_TYPE", "cluster")],
    );
    let run = pgb_run(&envs, dir.path(), &["restore"]).expect(0);
    assert_eq!(run.json["errors"], 0, "{}", run.stdout);
    for db in nasty_names() {
        assert_same(
            &source.dump_normalized(db),
            &fresh.dump_normalized(db),
            &format!("{db} after a cluster restore"),
        );
    }
    let exists = fresh.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = 'nothing_yet'",
    );
    assert_eq!(
        exists.trim(),
        "1",
        "the empty database after a cluster restore"
    );
    // And the restore test uses the same path.
    let run = pgb_run(
        &with(&envs, "PGPORT", &source.port.to_string()),
        dir.path(),
        &["verify", &folder, "--restore-test"],
    )
    .expect(0);
    let tests = run.json["restore_test"].as_array().unwrap();
    let my_db = tests.iter().find(|t| t["database"] == "my db").unwrap();
    assert_eq!(my_db["rows"], 500, "{}", run.stdout);
}

#[test]
fn custom_format_round_trips_on_15_with_two_jobs() {
    round_trip(Case {
        version: 15,
        settings: vec![("BACKUP_FORMAT", "custom")],
        jobs: "2",
        suffix: ".dump",
        encrypted: false,
    });
}

#[test]
fn custom_format_round_trips_on_17_with_one_job() {
    round_trip(Case {
        version: 17,
        settings: vec![("BACKUP_FORMAT", "custom"), ("BACKUP_COMPRESSION", "zstd")],
        jobs: "1",
        suffix: ".dump",
        encrypted: false,
    });
}

#[test]
fn zstd_round_trips_on_17() {
    round_trip(Case {
        version: 17,
        settings: vec![
            ("BACKUP_COMPRESSION", "zstd"),
            ("BACKUP_COMPRESSION_LEVEL", "9"),
        ],
        jobs: "1",
        suffix: ".sql.zst",
        encrypted: false,
    });
}

#[test]
fn custom_format_with_age_round_trips_with_two_jobs() {
    round_trip(Case {
        version: 17,
        settings: vec![("BACKUP_FORMAT", "custom")],
        jobs: "2",
        suffix: ".dump.age",
        encrypted: true,
    });
}

/// Also zstd on 15: clear zstd is round-tripped on 17 above.
#[test]
fn zstd_with_age_round_trips_on_15() {
    round_trip(Case {
        version: 15,
        settings: vec![("BACKUP_COMPRESSION", "zstd")],
        jobs: "1",
        suffix: ".sql.zst.age",
        encrypted: true,
    });
}

#[test]
fn custom_restores_follow_the_consent_and_error_rules() {
    let source = PgServer::start(17);
    fixture::create(&source);
    // A database with nothing in it (template1 has a table here): its archive lists only
    // database-level entries.
    source.psql("postgres", "CREATE DATABASE nothing_yet TEMPLATE template0");
    let dir = tempfile::tempdir().unwrap();
    let envs = with(&source.env(), "BACKUP_FORMAT", "custom");
    pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    source.psql(
        "O'Brien",
        "INSERT INTO public.people VALUES ('added after the backup')",
    );
    let restore = restore_env(
        &envs,
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", "latest"),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "O'Brien"),
            ("RESTORE_JOBS", "2"),
        ],
    );
    let run = pgb_run(&restore, dir.path(), &["restore"]).expect(73);
    assert!(
        run.message().contains("RESTORE_DROP_EXISTING=true"),
        "{}",
        run.message()
    );
    assert_eq!(fixture::row_count(&source, "O'Brien", "public.people"), 3);
    let run = pgb_run(
        &with(&restore, "RESTORE_DROP_EXISTING", "true"),
        dir.path(),
        &["restore"],
    )
    .expect(0);
    assert_eq!(run.json["dropped"], serde_json::json!(["O'Brien"]));
    assert_eq!(fixture::row_count(&source, "O'Brien", "public.people"), 2);
    // Without the globals the owners do not exist: SQL errors, 65, listed.
    let target = PgServer::start(17);
    let errors = restore_env(
        &with(&restore, "PGPORT", &target.port.to_string()),
        &[("RESTORE_DATABASE", "my db")],
    );
    let run = pgb_run(&errors, dir.path(), &["restore"]).expect(65);
    assert!(run.json["errors"].as_u64().unwrap() > 0);
    assert!(
        run.json["first_errors"].to_string().contains("app_owner"),
        "{}",
        run.stdout
    );
    // The empty database restores (and verifies below) like any other.
    let empty = restore_env(
        &with(&restore, "PGPORT", &target.port.to_string()),
        &[("RESTORE_DATABASE", "nothing_yet")],
    );
    pgb_run(&empty, dir.path(), &["restore"]).expect(0);
    let exists = target.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = 'nothing_yet'",
    );
    assert_eq!(exists.trim(), "1");
    pgb_run(&envs, dir.path(), &["verify", "latest"]).expect(0);
    // A damaged archive whose manifest matches it is caught before any SQL.
    let folder = folder_of(dir.path());
    let file = dir
        .path()
        .join(&folder)
        .join(pg_backups::backup::database_file_name_with(
            "données", ".dump",
        ));
    let mut bytes = std::fs::read(&file).unwrap();
    let len = bytes.len();
    bytes.truncate(len - len / 3);
    std::fs::write(&file, &bytes).unwrap();
    let mpath = dir.path().join(&folder).join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["database"] == "données" {
            f["bytes"] = bytes.len().into();
            f["sha256"] = sha256_file(&file).into();
        }
    }
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let run = pgb_run(&envs, dir.path(), &["verify", &folder]).expect(65);
    assert!(
        run.message().contains("postgres_db_donn%C3%A9es.dump"),
        "{}",
        run.message()
    );
    let damaged = restore_env(
        &with(&restore, "PGPORT", &target.port.to_string()),
        &[("RESTORE_DATABASE", "données")],
    );
    pgb_run(&damaged, dir.path(), &["restore"]).expect(65);
    let exists = target.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = 'données'",
    );
    assert_eq!(exists.trim(), "0", "nothing reached the server");
}

#[test]
fn the_manual_paths_of_the_readme_work_as_written() {
    let source = PgServer::start(17);
    source.psql("postgres", "CREATE DATABASE mydb");
    source.psql(
        "mydb",
        "CREATE TABLE t(x int); INSERT INTO t SELECT generate_series(1, 1000);",
    );
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for line in [
        "zstd -dc  20251005_120000/postgres_db_mydb.sql.zst | psql -U postgres",
        "pg_restore -U postgres -C -d postgres -j 4 20251005_120000/postgres_db_mydb.dump",
    ] {
        assert!(readme.contains(line), "README lacks {line}");
    }
    for (setting, value, file) in [
        ("BACKUP_COMPRESSION", "zstd", "postgres_db_mydb.sql.zst"),
        ("BACKUP_FORMAT", "custom", "postgres_db_mydb.dump"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        pgb_run(&with(&source.env(), setting, value), dir.path(), &["dump"]).expect(0);
        let path = only_folder(dir.path()).join(file);
        source.psql("postgres", "DROP DATABASE mydb");
        if file.ends_with(".sql.zst") {
            let mut zstd = Command::new("zstd")
                .arg("-dc")
                .arg(&path)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let out = source
                .client("psql")
                .args(["-X", "-q", "-U", "postgres", "-d", "postgres"])
                .stdin(zstd.stdout.take().unwrap())
                .output()
                .unwrap();
            assert!(zstd.wait().unwrap().success() && out.status.success());
        } else {
            let out = source
                .client("pg_restore")
                .args(["-U", "postgres", "-C", "-d", "postgres", "-j", "4"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(
            source.psql("mydb", "SELECT count(*) FROM t").trim(),
            "1000",
            "{file}"
        );
    }
}
