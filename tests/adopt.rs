//! `adopt`: folders the backup scripts made become backups, with what they really hold. A
//! folder with its cluster file is complete, and its cluster restore may reach every
//! database that file connects to (names that pg_dump quotes included); a folder without it
//! is adopted `partial`, at every destination, so it never counts for KEEP_LAST, `check` or
//! `restore latest`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::s3::S3Server;
use common::*;

const BUCKET: &str = "pg-backups-adopt";

/// `TOOL ARGS | gzip > FOLDER/FILE`, as the scripts did.
fn gzip_into(server: &PgServer, tool: &str, args: &[&str], file: &Path) {
    let mut producer = server
        .client(tool)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = Command::new("gzip")
        .stdin(producer.stdout.take().unwrap())
        .stdout(std::fs::File::create(file).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success() && producer.wait().unwrap().success(),
        "{tool}"
    );
}

fn manifest_of(dir: &Path, folder: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(folder).join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn a_scripts_folder_with_its_cluster_file_is_complete_and_restores_every_database() {
    let server = PgServer::start(15);
    for db in ["MyApp", "other"] {
        server.psql("postgres", &format!("CREATE DATABASE \"{db}\""));
        server.psql(db, "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2);");
    }
    let dir = tempfile::tempdir().unwrap();
    let folder = "20250101_000000";
    let path = dir.path().join(folder);
    std::fs::create_dir_all(&path).unwrap();
    gzip_into(
        &server,
        "pg_dumpall",
        &[],
        &path.join("postgres_cluster.sql.gz"),
    );
    gzip_into(
        &server,
        "pg_dumpall",
        &["--globals-only"],
        &path.join("postgres_globals.sql.gz"),
    );
    // Only MyApp has a file of its own; `other` is in the cluster file only.
    gzip_into(
        &server,
        "pg_dump",
        &["--create", "--dbname=MyApp"],
        &path.join("postgres_db_MyApp.sql.gz"),
    );
    let envs = server.env();
    pgb_run(&envs, dir.path(), &["adopt", folder]).expect(0);
    let manifest = manifest_of(dir.path(), folder);
    assert_eq!(manifest["status"], "complete", "{manifest}");
    let databases = manifest["databases"].to_string();
    for db in ["MyApp", "other", "postgres", "template1"] {
        assert!(databases.contains(&format!("\"{db}\"")), "{db}: {manifest}");
    }
    pgb_run(&envs, dir.path(), &["verify", folder, "--restore-test"]).expect(0);
    for db in ["MyApp", "other"] {
        server.psql(db, "INSERT INTO t VALUES (3)");
    }
    let restore = restore_env(
        &envs,
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", "latest"),
            ("RESTORE_TYPE", "cluster"),
            ("RESTORE_DROP_EXISTING", "true"),
        ],
    );
    pgb_run(&restore, dir.path(), &["restore"]).expect(0);
    for db in ["MyApp", "other"] {
        assert_eq!(
            server.psql(db, "SELECT count(*) FROM t").trim(),
            "2",
            "{db}"
        );
    }
}

#[test]
fn a_scripts_folder_without_its_cluster_file_is_adopted_partial_everywhere() {
    let server = PgServer::start(15);
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let folder = "20250101_000000";
    let path = dir.path().join(folder);
    std::fs::create_dir_all(&path).unwrap();
    let globals = path.join("postgres_globals.sql.gz");
    gzip_into(&server, "pg_dumpall", &["--globals-only"], &globals);
    s3.put(
        BUCKET,
        &format!("{folder}/postgres_globals.sql.gz"),
        &std::fs::read(&globals).unwrap(),
    );
    let mut envs = server.env();
    envs.extend(s3.env(BUCKET, ""));
    let adopted = pgb_run(&envs, dir.path(), &["adopt", "--all", "--source", "all"]).expect(0);
    assert_eq!(
        manifest_of(dir.path(), folder)["status"],
        "partial",
        "{}",
        adopted.stdout
    );
    let at_s3: serde_json::Value =
        serde_json::from_slice(&s3.get(BUCKET, &format!("{folder}/manifest.json"))).unwrap();
    assert_eq!(at_s3["status"], "partial", "{at_s3}");
    // A partial folder is no one's latest complete backup.
    let check = pgb_run(&envs, dir.path(), &["check", "--max-age", "100000d"]);
    assert_eq!(check.code, 1, "{}", check.stdout);
    pgb_run(
        &restore_env(
            &envs,
            &[
                ("RESTORE_SOURCE", "local"),
                ("RESTORE_FOLDER", "latest"),
                ("RESTORE_TYPE", "globals"),
            ],
        ),
        dir.path(),
        &["restore"],
    )
    .expect(66);
}
