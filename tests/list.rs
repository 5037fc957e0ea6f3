//! `pg-backups list` at the local destination: every folder with its status, size and age.

mod common;

use common::*;

#[test]
fn list_shows_complete_partial_incomplete_and_invalid_folders() {
    let server = PgServer::start(17);
    server.psql("postgres", "CREATE DATABASE app");
    server.psql("postgres", "CREATE DATABASE other");
    let dir = tempfile::tempdir().unwrap();
    pgb_run(&server.env(), dir.path(), &["dump"]).expect(0);
    let complete = only_folder(dir.path());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    server.reject_connections_to("other");
    pgb_run(&server.env(), dir.path(), &["dump"]).expect(77);

    // A folder without manifest (a dump that died after the rename) and two bad names.
    std::fs::create_dir(dir.path().join("20200101_000000")).unwrap();
    std::fs::write(
        dir.path().join("20200101_000000/postgres_globals.sql.gz"),
        b"x",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("not-a-backup")).unwrap();
    std::fs::create_dir(dir.path().join("20250101_000000;rm -rf ~")).unwrap();

    let run = pgb_run(&server.env(), dir.path(), &["list", "--source", "local"]).expect(0);
    let source = &run.json["sources"][0];
    assert_eq!(source["source"], "local");
    let folders = source["folders"].as_array().unwrap();
    let status_of = |name: &str| {
        folders
            .iter()
            .find(|f| f["folder"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {}", run.stdout))["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let complete_name = complete.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(status_of(&complete_name), "complete");
    assert_eq!(status_of("20200101_000000"), "incomplete");
    assert_eq!(status_of("not-a-backup"), "invalid");
    assert_eq!(status_of("20250101_000000;rm -rf ~"), "invalid");
    let partial = folders.iter().find(|f| f["status"] == "partial").unwrap();
    assert_eq!(partial["failed_databases"][0], "other");
    assert_eq!(source["complete"], 1);

    // Newest first; sizes and databases from the manifest; ages from the folder name.
    let first = &folders[0];
    assert_eq!(first["status"], "partial");
    let c = folders
        .iter()
        .find(|f| f["folder"] == complete_name.as_str())
        .unwrap();
    assert!(c["bytes"].as_u64().unwrap() > 0);
    assert!(c["age_seconds"].as_i64().unwrap() >= 0);
    assert_eq!(
        c["databases"],
        serde_json::json!(["app", "other", "postgres"])
    );
    let old = folders
        .iter()
        .find(|f| f["folder"] == "20200101_000000")
        .unwrap();
    assert!(old["age_seconds"].as_i64().unwrap() > 365 * 86400);
}

#[test]
fn list_of_a_missing_backup_dir_is_66() {
    let dir = tempfile::tempdir().unwrap();
    let run = pgb_run(
        &[],
        &dir.path().join("nope"),
        &["list", "--source", "local"],
    )
    .expect(66);
    assert!(
        run.message().contains("does not exist"),
        "{}",
        run.message()
    );
}
