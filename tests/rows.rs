//! Proof of every row (guarantee 10): the manifest records each table's rows as the dump
//! stream carried them, and `restore` and `verify --restore-test` compare what arrived.

mod common;

use common::*;

fn manifest(dir: &std::path::Path, folder: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(folder).join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn a_restore_proves_every_row_and_names_a_table_that_lost_some() {
    let server = PgServer::start(15);
    server.psql("postgres", "CREATE DATABASE \"Shop\"");
    server.psql(
        "Shop",
        "CREATE SCHEMA \"Sales\";
         CREATE TABLE \"Sales\".\"Order Lines\"(id int, note text);
         INSERT INTO \"Sales\".\"Order Lines\" SELECT g, 'line ' || g FROM generate_series(1, 50) g;
         CREATE TABLE public.empty(x int);",
    );
    let dir = tempfile::tempdir().unwrap();
    let envs = server.env();
    pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    let folder = folder_of(dir.path());
    let m = manifest(dir.path(), &folder);
    let shop = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["database"] == "Shop")
        .unwrap();
    let tables = shop["tables"].to_string();
    assert!(
        tables.contains(r#"{"table":["Sales","Order Lines"],"rows":50}"#),
        "{tables}"
    );
    assert!(
        tables.contains(r#"{"table":["public","empty"],"rows":0}"#),
        "{tables}"
    );

    let drill = pgb_run(&envs, dir.path(), &["verify", &folder, "--restore-test"]).expect(0);
    assert!(
        drill
            .stdout
            .contains(r#""row_check":{"status":"as_dumped","tables":2,"rows":50}"#),
        "{}",
        drill.stdout
    );
    let restore = |extra: &[(&str, &str)]| {
        let mut pairs = vec![
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", folder.as_str()),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "Shop"),
            ("RESTORE_TARGET_DATABASE", "Shop copy"),
        ];
        pairs.extend_from_slice(extra);
        pgb_run(&restore_env(&envs, &pairs), dir.path(), &["restore"])
    };
    let ok = restore(&[]).expect(0);
    assert_eq!(ok.json["row_check"]["status"], "as_dumped", "{}", ok.stdout);
    assert_eq!(ok.json["row_check"]["rows"], 50, "{}", ok.stdout);

    // A COPY block that lost a row, with checksums that match: 65, naming the table.
    rewrite_backup_file(
        &dir.path().join(&folder),
        "postgres_db_Shop.sql.gz",
        |sql| sql.replace("17\tline 17\n", ""),
    );
    let drill = pgb_run(&envs, dir.path(), &["verify", &folder, "--restore-test"]).expect(65);
    assert!(
        drill.stdout.contains("Order Lines")
            && drill.stdout.contains("50 rows dumped, 49 restored"),
        "{}",
        drill.stdout
    );
    let bad = restore(&[("RESTORE_DROP_EXISTING", "true")]).expect(65);
    assert!(
        bad.message().contains("50 rows dumped, 49 restored"),
        "{}",
        bad.stdout
    );
    assert!(bad.message().contains("Order Lines"), "{}", bad.stdout);
}

/// A custom archive's rows are counted as dump streams it through pg_restore, and checked
/// after pg_restore fills the database; a folder made before counts were kept says so.
#[test]
fn a_custom_archive_proves_its_rows_and_an_older_folder_says_they_were_not_checked() {
    let server = PgServer::start(17);
    server.psql("postgres", "CREATE DATABASE app");
    server.psql(
        "app",
        "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2);",
    );
    let dir = tempfile::tempdir().unwrap();
    let envs = with(&server.env(), "BACKUP_FORMAT", "custom");
    pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    let folder = folder_of(dir.path());
    let restore = restore_env(
        &envs,
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", &folder),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "app"),
            ("RESTORE_TARGET_DATABASE", "app2"),
        ],
    );
    let run = pgb_run(&restore, dir.path(), &["restore"]).expect(0);
    assert_eq!(
        run.json["row_check"]["status"], "as_dumped",
        "{}",
        run.stdout
    );
    assert_eq!(run.json["row_check"]["rows"], 2, "{}", run.stdout);
    // The same folder as an older pg-backups wrote it: no counts in its manifest.
    let path = dir.path().join(&folder).join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        f.as_object_mut().unwrap().remove("tables");
    }
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let restore = restore_env(&restore, &[("RESTORE_TARGET_DATABASE", "app3")]);
    let run = pgb_run(&restore, dir.path(), &["restore"]).expect(0);
    assert_eq!(
        run.json["row_check"]["status"], "not_recorded",
        "{}",
        run.stdout
    );
}
