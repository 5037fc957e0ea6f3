//! The restore drill runs by itself and is watched: `verify --restore-test` writes its result
//! into METRICS_FILE and beside the backups, and `check` reports a drill older than
//! DRILL_MAX_AGE (or none at all) as stale.

mod common;

use common::*;

#[test]
fn a_drill_lands_in_the_metrics_and_check_says_when_it_is_stale() {
    let server = PgServer::start(15);
    server.psql("postgres", "CREATE DATABASE app");
    server.psql(
        "app",
        "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2), (3);",
    );
    let dir = tempfile::tempdir().unwrap();
    let metrics_dir = tempfile::tempdir().unwrap();
    let metrics = metrics_dir.path().join("pg_backups.prom");
    let envs = with(&server.env(), "METRICS_FILE", metrics.to_str().unwrap());
    pgb_run(&envs, dir.path(), &["dump"]).expect(0);

    let watched = with(&envs, "DRILL_MAX_AGE", "8d");
    let never = pgb_run(&watched, dir.path(), &["check"]).expect(1);
    assert_eq!(never.json["status"], "stale", "{}", never.stdout);
    assert_eq!(never.json["drill"]["status"], "never", "{}", never.stdout);
    // Without DRILL_MAX_AGE the drill is not watched.
    pgb_run(&envs, dir.path(), &["check"]).expect(0);

    pgb_run(&envs, dir.path(), &["verify", "latest", "--restore-test"]).expect(0);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("\npg_backups_drill_last_success_timestamp_seconds ")
            && text.contains("\npg_backups_drill_rows 3\n")
            && text.contains("pg_backups_last_run_success{command=\"drill\"} 1"),
        "{text}"
    );
    let fresh = pgb_run(&watched, dir.path(), &["check"]).expect(0);
    assert_eq!(fresh.json["drill"]["status"], "ok", "{}", fresh.stdout);
    assert_eq!(
        fresh.json["drill"]["last_success"]["rows"], 3,
        "{}",
        fresh.stdout
    );

    // Ten days later, as far as the log says.
    let log = dir.path().join(".pg-backups-drill.json");
    let old = (chrono::Utc::now() - chrono::Duration::days(10)).to_rfc3339();
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    v["last_success"]["finished_at"] = old.into();
    std::fs::write(&log, serde_json::to_vec(&v).unwrap()).unwrap();
    let stale = pgb_run(&watched, dir.path(), &["check"]).expect(1);
    assert_eq!(stale.json["drill"]["status"], "stale", "{}", stale.stdout);

    // A failed drill is recorded as such and does not count as a success.
    server.psql("postgres", "DROP DATABASE app");
    let folder = folder_of(dir.path());
    rewrite_backup_file(&dir.path().join(&folder), "postgres_db_app.sql.gz", |sql| {
        sql.replace("\n2\n", "\n")
    });
    pgb_run(&envs, dir.path(), &["verify", "latest", "--restore-test"]).expect(65);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("pg_backups_last_run_success{command=\"drill\"} 0"),
        "{text}"
    );
    let after = pgb_run(&watched, dir.path(), &["check"]).expect(1);
    assert!(
        after.json["drill"]["last_failure"].is_object(),
        "{}",
        after.stdout
    );

    pgb_run(
        &with(&envs, "DRILL_SCHEDULE", "every sunday"),
        dir.path(),
        &["list"],
    )
    .expect(64);
}
