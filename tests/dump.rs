//! `pg-backups dump` against real PostgreSQL 15 and 17 servers: the folder it writes, and
//! that what it wrote restores exactly.

mod common;

use std::path::Path;

use common::fixture::{self, LONG_NAME, nasty_names};
use common::*;

fn manifest(folder: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap()
}

fn db_file(name: &str) -> String {
    pg_backups::backup::database_file_name(name)
}

#[test]
fn dump_writes_a_complete_checked_private_folder() {
    let server = PgServer::start(17);
    fixture::create(&server);
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");

    let run = pgb_run(&server.env(), &backups, &["dump"]).expect(0);
    assert_eq!(run.json["command"], "dump");
    assert_eq!(run.json["status"], "ok");
    assert_eq!(run.json["backup_status"], "complete");
    assert_eq!(run.json["server_version"], run.json["pg_dump_version"]);

    let folder = only_folder(&backups);
    let name = folder.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        pg_backups::backup::FolderName::parse(&name).is_some(),
        "{name}"
    );
    assert_eq!(run.json["folder"], name.as_str());
    assert_eq!(mode(&backups), 0o700);
    assert_eq!(mode(&folder), 0o700);

    // Every database but the templates, by real name, under percent-encoded file names.
    let m = manifest(&folder);
    assert_eq!(m["status"], "complete");
    assert_eq!(m["format"], 1);
    assert!(m["server"]["version"].as_str().unwrap().starts_with("17"));
    let mut expected: Vec<String> = nasty_names().iter().map(|s| s.to_string()).collect();
    expected.push("postgres".into());
    let mut dumped: Vec<String> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "database")
        .map(|f| f["database"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    dumped.sort();
    assert_eq!(dumped, expected, "templates are not dumped on their own");
    assert!(folder.join("postgres_db_my%20db.sql.gz").exists());
    assert!(folder.join("postgres_db_donn%C3%A9es.sql.gz").exists());
    assert!(folder.join(db_file(LONG_NAME)).exists());

    // Each file: on disk, private, a valid gzip, with the size and SHA-256 of the manifest
    // and of the JSON result.
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 2 + expected.len());
    for f in files {
        let path = folder.join(f["name"].as_str().unwrap());
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        assert!(gzip_ok(&path), "gzip -t {}", path.display());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            f["bytes"].as_u64().unwrap()
        );
        assert_eq!(sha256_file(&path), f["sha256"].as_str().unwrap());
        let in_json = run.json["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == f["name"])
            .unwrap();
        assert_eq!(in_json["sha256"], f["sha256"]);
        assert_eq!(
            gunzip_text(&path).len() as u64,
            f["sql_bytes"].as_u64().unwrap()
        );
    }
    assert_eq!(mode(&folder.join("manifest.json")), 0o600);
    let no_leftovers: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(no_leftovers.is_empty(), "{no_leftovers:?}");
    assert!(
        std::fs::read_dir(&backups)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".partial")),
        "the work folder was renamed into place"
    );

    // The globals and the cluster file end the way pg_dumpall ends them.
    let globals = gunzip_text(&folder.join("postgres_globals.sql.gz"));
    assert!(globals.contains("CREATE ROLE app_owner;"));
    assert!(
        globals
            .trim_end()
            .ends_with("-- PostgreSQL database cluster dump complete\n--")
    );
    let cluster = gunzip_text(&folder.join("postgres_cluster.sql.gz"));
    assert!(
        cluster
            .trim_end()
            .ends_with("-- PostgreSQL database cluster dump complete\n--")
    );
    assert_eq!(
        cluster
            .matches("-- PostgreSQL database cluster dump complete")
            .count(),
        1,
        "the globals' trailer is not repeated inside the cluster file"
    );
    assert!(cluster.contains("\\connect template1"));
    assert!(cluster.contains("in_template1"));
}

#[test]
fn database_files_restore_through_gunzip_psql_on_15() {
    database_files_restore_through_gunzip_psql(15);
}

#[test]
fn database_files_restore_through_gunzip_psql_on_17() {
    database_files_restore_through_gunzip_psql(17);
}

/// The documented manual restore: `gunzip -c postgres_db_X.sql.gz | psql -U postgres`.
fn database_files_restore_through_gunzip_psql(version: u32) {
    let source = PgServer::start(version);
    fixture::create(&source);
    let dir = tempfile::tempdir().unwrap();
    pgb_run(&source.env(), dir.path(), &["dump"]).expect(0);
    let folder = only_folder(dir.path());

    let target = PgServer::start(version);
    target.restore_gz(&folder.join("postgres_globals.sql.gz"));
    for db in nasty_names() {
        let stderr = target.restore_gz(&folder.join(db_file(db)));
        assert!(!stderr.contains("ERROR"), "{db}: {stderr}");
        assert_eq!(
            source.dump_normalized(db),
            target.dump_normalized(db),
            "{db} restored differently"
        );
    }
    assert_eq!(fixture::row_count(&target, "my db", "app.items"), 500);
    assert_eq!(
        target
            .psql("my db", "SELECT convert_from(lo_get(424242), 'UTF8')")
            .trim(),
        "large object"
    );
    assert_eq!(
        target
            .psql("postgres", "SELECT pg_catalog.shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'my db'")
            .trim(),
        "the app's database"
    );
}

#[test]
fn cluster_file_restores_like_pg_dumpall_on_15() {
    cluster_file_restores_like_pg_dumpall(15);
}

#[test]
fn cluster_file_restores_like_pg_dumpall_on_17() {
    cluster_file_restores_like_pg_dumpall(17);
}

/// The cluster file is built from the per-database streams instead of a second read of the
/// server; restored into a fresh cluster it must give what a real `pg_dumpall` gives.
fn cluster_file_restores_like_pg_dumpall(version: u32) {
    let source = PgServer::start(version);
    fixture::create(&source);
    let dir = tempfile::tempdir().unwrap();
    pgb_run(&source.env(), &dir.path().join("b"), &["dump"]).expect(0);
    let folder = only_folder(&dir.path().join("b"));

    let real = dir.path().join("real_pg_dumpall.sql.gz");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("\"$0\" | gzip -6 > '{}'", real.display()))
        .arg(source.bin().join("pg_dumpall"))
        .envs(source.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .status()
        .unwrap();
    assert!(status.success());

    let from_real = PgServer::start(version);
    from_real.restore_gz(&real);
    let from_ours = PgServer::start(version);
    from_ours.restore_gz(&folder.join("postgres_cluster.sql.gz"));

    let expected = from_real.dumpall_normalized();
    let actual = from_ours.dumpall_normalized();
    assert_same(
        &expected,
        &actual,
        "cluster restore differs from pg_dumpall's",
    );
    // And the restored cluster has the data, not only the same shape.
    assert_eq!(
        fixture::row_count(&from_ours, "Sales-2025", "sales.orders"),
        4
    );
    assert_eq!(
        fixture::row_count(&from_ours, "postgres", "public.in_postgres"),
        2
    );
    assert_eq!(
        fixture::row_count(&from_ours, "template1", "public.in_template1"),
        1
    );
}

#[test]
fn dump_takes_only_the_databases_asked_for() {
    let server = PgServer::start(17);
    fixture::create(&server);
    let dir = tempfile::tempdir().unwrap();
    let envs = with(
        &server.env(),
        "BACKUP_DATABASES",
        "my db, Sales-2025,postgres",
    );
    let envs = with(&envs, "BACKUP_EXCLUDE_DATABASES", "postgres");
    let run = pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    let dumped: Vec<&str> = run.json["databases_dumped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["database"].as_str().unwrap())
        .collect();
    assert_eq!(dumped, ["Sales-2025", "my db"]);
    let cluster = gunzip_text(&only_folder(dir.path()).join("postgres_cluster.sql.gz"));
    assert!(cluster.contains("-- Database \"my db\" dump"));
    assert!(
        !cluster.contains("-- Database \"postgres\" dump"),
        "excluded"
    );
    assert!(
        !cluster.contains("-- Database \"O'Brien\" dump"),
        "not selected"
    );
}

#[test]
fn dump_of_a_database_that_does_not_exist_is_66_before_anything_is_written() {
    let server = PgServer::start(17);
    let dir = tempfile::tempdir().unwrap();
    let envs = with(&server.env(), "BACKUP_DATABASES", "postgres,nope");
    let run = pgb_run(&envs, dir.path(), &["dump"]).expect(66);
    assert!(run.message().contains("\"nope\""), "{}", run.message());
    assert!(run.message().contains("postgres"), "lists what exists");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn dump_is_partial_when_one_database_fails_and_says_which() {
    let server = PgServer::start(17);
    fixture::create(&server);
    server.reject_connections_to("Sales-2025");
    let dir = tempfile::tempdir().unwrap();
    let run = pgb_run(&server.env(), dir.path(), &["dump"]);
    assert_eq!(run.json["status"], "partial", "{}", run.stdout);
    assert_ne!(run.code, 0);
    assert_eq!(run.json["exit_code"], run.json["error"]["exit_code"]);
    let failed = run.json["databases_failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{}", run.stdout);
    assert_eq!(failed[0]["database"], "Sales-2025");
    assert!(
        failed[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pg_hba.conf"),
        "{}",
        run.stdout
    );
    assert_eq!(run.code, 77, "refused by pg_hba.conf");

    let folder = only_folder(dir.path());
    let m = manifest(&folder);
    assert_eq!(m["status"], "partial");
    assert_eq!(m["failed"][0]["database"], "Sales-2025");
    assert!(!folder.join(db_file("Sales-2025")).exists());
    assert!(folder.join(db_file("my db")).exists());
    let cluster = gunzip_text(&folder.join("postgres_cluster.sql.gz"));
    assert!(cluster.contains("Database \"Sales-2025\" is NOT in this backup"));
}

#[test]
fn dump_with_pg_dump_older_than_the_server_says_which_tools_to_use() {
    let server = PgServer::start(18);
    let dir = tempfile::tempdir().unwrap();
    let tools17 = pg_bin(17);
    let envs = with(&server.env(), "PG_BIN_DIR", &tools17.display().to_string());
    let run = pgb_run(&envs, dir.path(), &["dump"]).expect(78);
    let msg = run.message();
    assert!(msg.contains("older than the server"), "{msg}");
    assert!(msg.contains("PostgreSQL 18"), "{msg}");
    assert!(
        msg.contains(tools17.to_str().unwrap()),
        "names the tools it found: {msg}"
    );
    assert!(
        msg.contains("pg-backups:18-alpine"),
        "names the image to use: {msg}"
    );
    assert_eq!(run.json["error"]["kind"], "pg_tool_too_old");
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".pg-backups")
    }));
}

/// With several client versions installed, each server is dumped by the tools of its own
/// major, and restores use the psql of the target's major.
#[test]
fn the_tools_of_the_servers_major_are_chosen_among_several() {
    let all = [15, 17, 18]
        .map(|v| pg_bin(v).display().to_string())
        .join(":");
    for version in [15, 17, 18] {
        let server = PgServer::start(version);
        server.psql("postgres", "CREATE DATABASE app");
        let dir = tempfile::tempdir().unwrap();
        let envs = with(&server.env(), "PG_BIN_DIR", &all);
        let run = pgb_run(&envs, dir.path(), &["dump"]).expect(0);
        assert!(
            run.json["pg_dump_version"]
                .as_str()
                .unwrap()
                .starts_with(&version.to_string()),
            "{version}: {}",
            run.stdout
        );
        let path = run.json["pg_dump_path"].as_str().unwrap();
        assert!(
            path.starts_with(pg_bin(version).to_str().unwrap()),
            "{path}"
        );
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(only_folder(dir.path()).join("manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["pg_dump_path"], path);
        server.psql("postgres", "DROP DATABASE app");
        let mut restore = envs.clone();
        for (k, v) in [
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", "latest"),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "app"),
        ] {
            restore = with(&restore, k, v);
        }
        let run = pgb_run(&restore, dir.path(), &["restore"]).expect(0);
        assert!(
            run.json["psql_version"]
                .as_str()
                .unwrap()
                .starts_with(&version.to_string()),
            "{}",
            run.stdout
        );
    }
}

#[test]
fn newer_pg_dump_dumps_an_older_server() {
    let server = PgServer::start(15);
    let dir = tempfile::tempdir().unwrap();
    let envs = with(
        &server.env(),
        "PG_BIN_DIR",
        &pg_bin(17).display().to_string(),
    );
    let run = pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    assert!(
        run.json["server_version"]
            .as_str()
            .unwrap()
            .starts_with("15")
    );
    assert!(
        run.json["pg_dump_version"]
            .as_str()
            .unwrap()
            .starts_with("17")
    );
}
