//! `prune`, `pin`, `check` and the metrics file at local, S3 and remote destinations.

mod common;

use std::path::Path;

use chrono::{Duration, Utc};
use common::s3::{READONLY_ACCESS_KEY, READONLY_SECRET_KEY, S3Server};
use common::ssh::SshServer;
use common::*;
use serde_json::Value;

const BUCKET: &str = "pg-backups-test";

fn ago(hours: i64) -> String {
    pg_backups::backup::FolderName::from_time(Utc::now() - Duration::hours(hours)).to_string()
}

fn small() -> Vec<(&'static str, usize)> {
    vec![
        ("postgres_globals.sql.gz", 1000),
        ("postgres_cluster.sql.gz", 5000),
    ]
}

fn names(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["folder"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn dest<'a>(run: &'a Run, name: &str) -> &'a Value {
    run.json["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == name)
        .unwrap_or_else(|| panic!("no {name} in {}", run.stdout))
}

/// Retention without the keep-last safety net (1 keeps only the newest, which is kept anyway),
/// to see the other rules at work.
fn keep_one(envs: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = envs.to_vec();
    for var in ["LOCAL_KEEP_LAST", "S3_KEEP_LAST", "RSYNC_KEEP_LAST"] {
        out = with(&out, var, "1");
    }
    out
}

fn exists(dir: &Path, name: &str) -> bool {
    dir.join(name).exists()
}

#[test]
fn prune_keeps_the_window_and_the_newest_backup_before_it_and_cleans_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old1, old2, old3, recent) = (ago(24 * 30), ago(24 * 20), ago(24 * 10), ago(2));
    for name in [&old1, &old2, &old3, &recent] {
        make_folder(d, name, &small());
    }
    // Leftovers: a killed dump's work folder, and two folders without manifest.
    let (stale_a, stale_b) = (ago(24 * 9), ago(24 * 8));
    let work = format!(".{}.partial", ago(30));
    std::fs::create_dir(d.join(&work)).unwrap();
    std::fs::create_dir(d.join(&stale_a)).unwrap();
    std::fs::create_dir(d.join(&stale_b)).unwrap();
    std::fs::create_dir(d.join("20250101_000000;rm -rf ~")).unwrap();
    let envs = keep_one(&[("LOCAL_RETENTION_DAYS".to_string(), "5".to_string())]);

    let dry = pgb_run(&envs, d, &["prune", "--dry-run"]).expect(0);
    assert_eq!(dry.json["dry_run"], true);
    let local = dest(&dry, "local");
    let mut expected = vec![old1.clone(), old2.clone(), stale_a.clone(), work.clone()];
    expected.sort();
    assert_eq!(names(&local["would_delete"]), expected, "{}", dry.stdout);
    assert!(exists(d, &old1), "a dry run deletes nothing");

    let run = pgb_run(&envs, d, &["prune"]).expect(0);
    let local = dest(&run, "local");
    assert_eq!(names(&local["deleted"]), expected);
    assert!(local["bytes_freed"].as_u64().unwrap() >= 2 * 6000);
    for gone in [&old1, &old2, &stale_a] {
        assert!(!exists(d, gone), "{gone}");
    }
    for kept in [&old3, &recent, &stale_b, "20250101_000000;rm -rf ~"] {
        assert!(exists(d, kept), "{kept}");
    }
    let reasons = |folder: &str| {
        local["kept"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["folder"] == folder)
            .unwrap()["reasons"]
            .to_string()
    };
    assert!(reasons(&old3).contains("keeps the whole window restorable"));
    assert!(reasons(&recent).contains("newest complete backup"));
    assert!(reasons(&stale_b).contains("newest incomplete"));
    assert!(reasons("20250101_000000;rm -rf ~").contains("invalid name"));
}

#[test]
fn nothing_is_ever_left_empty_even_with_only_old_backups() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "20200101_000000",
        "20200102_000000",
        "20200103_000000",
        "20200104_000000",
        "20200105_000000",
    ] {
        make_folder(dir.path(), name, &small());
    }
    // Dumps stopped years ago (or the clock jumped ahead): the 3 newest stay by default.
    let run = pgb_run(&[], dir.path(), &["prune"]).expect(0);
    assert_eq!(
        names(&dest(&run, "local")["deleted"]),
        ["20200101_000000", "20200102_000000"]
    );
    let kept = dest(&run, "local")["kept"].to_string();
    assert!(kept.contains("keep-last"), "{kept}");
    // Even with keep-last at 1, the newest complete backup is never pruned.
    let run = pgb_run(&keep_one(&[]), dir.path(), &["prune"]).expect(0);
    assert_eq!(
        names(&dest(&run, "local")["deleted"]),
        ["20200103_000000", "20200104_000000"]
    );
    assert!(exists(dir.path(), "20200105_000000"));
    let again = pgb_run(&keep_one(&[]), dir.path(), &["prune"]).expect(0);
    assert!(names(&dest(&again, "local")["deleted"]).is_empty());
}

#[test]
fn retention_days_of_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for var in [
        "LOCAL_RETENTION_DAYS",
        "S3_RETENTION_DAYS",
        "RSYNC_RETENTION_DAYS",
    ] {
        let run = pgb_run(&[(var.into(), "0".into())], dir.path(), &["prune"]).expect(64);
        assert!(run.message().contains(var), "{}", run.message());
        assert!(
            run.message().contains("delete everything"),
            "{}",
            run.message()
        );
    }
    for (var, value) in [("LOCAL_KEEP_DAILY", "-1"), ("S3_KEEP_WEEKLY", "x")] {
        let run = pgb_run(&[(var.into(), value.into())], dir.path(), &["prune"]).expect(64);
        assert!(run.message().contains(var));
    }
}

/// S3 and remote are pruned by their own rules; local folders stay until shipped; names that
/// are not ours are listed as invalid and never touched, at every destination.
#[test]
fn prune_at_every_destination_never_touches_planted_names() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let ssh = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old1, old2, recent) = ("20200101_000000", "20200102_000000", ago(1));
    for name in [old1, old2, recent.as_str()] {
        make_folder(d, name, &small());
    }
    let mut envs = ssh.env();
    envs.extend(s3.env(BUCKET, "p"));
    envs.push(("S3_RETENTION_DAYS".into(), "1".into()));
    envs.push(("RSYNC_RETENTION_DAYS".into(), "1".into()));
    let envs = keep_one(&envs);
    pgb_run(&envs, d, &["ship"]).expect(0);
    // Another folder, only local: it must wait until it is shipped.
    let unshipped = "20200103_000000";
    make_folder(d, unshipped, &small());
    // Planted at each destination.
    // (SeaweedFS refuses keys with `..` segments outright.)
    s3.put(BUCKET, "p/..etc/passwd", b"x");
    s3.put(BUCKET, "p/20250101_000000;rm -rf ~/manifest.json", b"{}");
    std::fs::create_dir_all(ssh.remote().join("20250101_000000;rm -rf ~")).unwrap();
    std::fs::create_dir_all(ssh.remote().join("..hidden")).unwrap();

    let run = pgb_run(&envs, d, &["prune"]).expect(0);
    // SeaweedFS takes the batched DeleteObjects (other providers that answer MissingContentMD5
    // get one DELETE per key; that fallback logs this line).
    assert!(
        !run.stderr.contains("refused a batched delete"),
        "{}",
        run.stderr
    );
    let local = dest(&run, "local");
    assert_eq!(names(&local["deleted"]), [old1, old2], "{}", run.stdout);
    let kept = local["kept"].to_string();
    assert!(
        kept.contains("not shipped to s3") && kept.contains("not shipped to remote"),
        "{kept}"
    );
    assert!(exists(d, unshipped));
    for name in ["s3", "remote"] {
        // old2 is the newest backup before the 1-day window there: it stays.
        assert_eq!(names(&dest(&run, name)["deleted"]), [old1], "{name}");
        let kept = dest(&run, name)["kept"].to_string();
        assert!(kept.contains("invalid name"), "{name}: {kept}");
    }
    assert!(
        s3.keys(BUCKET, "p/")
            .iter()
            .any(|(k, _)| k == "p/20250101_000000;rm -rf ~/manifest.json")
    );
    assert_eq!(s3.keys(BUCKET, "p/..etc/").len(), 1);
    assert!(ssh.remote().join("20250101_000000;rm -rf ~").exists());
    assert!(!ssh.remote().join(old1).exists());
    assert!(ssh.remote().join(&recent).exists());
    assert!(s3.keys(BUCKET, &format!("p/{old1}/")).is_empty());
    assert!(!s3.keys(BUCKET, &format!("p/{recent}/")).is_empty());
}

#[test]
fn an_unreachable_destination_is_left_alone_while_the_others_are_pruned() {
    let mut s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let ssh = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    for name in ["20200101_000000", "20200102_000000", "20200103_000000"] {
        make_folder(dir.path(), name, &small());
    }
    let mut envs = ssh.env();
    envs.extend(s3.env(BUCKET, ""));
    let envs = keep_one(&envs);
    pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    s3.kill();
    let run = pgb_run(&envs, dir.path(), &["prune"]).expect(69);
    assert_eq!(run.json["status"], "partial");
    assert_eq!(dest(&run, "s3")["status"], "failed");
    assert_eq!(names(&dest(&run, "remote")["deleted"]).len(), 2);
    // Local folders stay: whether S3 still holds them cannot be known.
    assert!(names(&dest(&run, "local")["deleted"]).is_empty());
    assert!(
        dest(&run, "local")["kept"]
            .to_string()
            .contains("cannot check s3")
    );
    s3.restart();
    assert_eq!(s3.keys(BUCKET, "").len(), 3 * 3, "nothing deleted at S3");
}

#[test]
fn s3_delete_denied_is_77() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    for name in ["20200101_000000", "20200102_000000"] {
        make_folder(dir.path(), name, &small());
    }
    pgb_run(&s3.env(BUCKET, ""), dir.path(), &["ship"]).expect(0);
    let envs = keep_one(&with(
        &with(&s3.env(BUCKET, ""), "S3_ACCESS_KEY", READONLY_ACCESS_KEY),
        "S3_SECRET_KEY",
        READONLY_SECRET_KEY,
    ));
    let run = pgb_run(&envs, dir.path(), &["prune"]).expect(77);
    assert_eq!(dest(&run, "s3")["status"], "failed");
    assert_eq!(s3.keys(BUCKET, "").len(), 6);
}

#[test]
fn prune_waits_for_a_running_dump() {
    let server = PgServer::start(17);
    server.psql("postgres", "CREATE DATABASE app");
    server.psql("app", "CREATE TABLE t(x int)");
    let lock = TableLock::hold(&server, "app", "t");
    let dir = tempfile::tempdir().unwrap();
    let dump = pgb_spawn(&server.env(), dir.path(), &["dump"]);
    wait_for(30, "the dump to hold the lock", || {
        std::fs::read_to_string(dir.path().join(".pg-backups.lock"))
            .map(|s| s.contains("`dump`"))
            .unwrap_or(false)
    });
    let run = pgb_run(&[], dir.path(), &["prune"]).expect(75);
    assert!(run.message().contains("`dump`"), "{}", run.message());
    drop(lock);
    parse_run(dump.wait_with_output().unwrap()).expect(0);
}

#[test]
fn a_pinned_folder_survives_every_rule_until_unpinned() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    for name in ["20200101_000000", "20200102_000000", "20200103_000000"] {
        make_folder(dir.path(), name, &small());
    }
    let envs = keep_one(&s3.env(BUCKET, ""));
    pgb_run(&envs, dir.path(), &["ship"]).expect(0);

    let run = pgb_run(&envs, dir.path(), &["pin", "20200101_000000"]).expect(0);
    assert_eq!(run.json["pinned"], true);
    assert_eq!(dest(&run, "local")["result"], "pinned");
    assert_eq!(dest(&run, "s3")["result"], "pinned");
    let manifest_before = std::fs::read(dir.path().join("20200101_000000/manifest.json")).unwrap();

    let list = pgb_run(&envs, dir.path(), &["list"]).expect(0);
    for source in list.json["sources"].as_array().unwrap() {
        let f = source["folders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["folder"] == "20200101_000000")
            .unwrap();
        assert_eq!(f["pinned"], true, "{}", source["source"]);
    }

    let run = pgb_run(&envs, dir.path(), &["prune"]).expect(0);
    for name in ["local", "s3"] {
        assert_eq!(
            names(&dest(&run, name)["deleted"]),
            ["20200102_000000"],
            "{name}"
        );
    }
    assert!(exists(dir.path(), "20200101_000000"));
    assert_eq!(
        std::fs::read(dir.path().join("20200101_000000/manifest.json")).unwrap(),
        manifest_before,
        "the manifest is never rewritten"
    );

    pgb_run(&envs, dir.path(), &["pin", "--unpin", "20200101_000000"]).expect(0);
    let run = pgb_run(&envs, dir.path(), &["prune"]).expect(0);
    assert_eq!(names(&dest(&run, "local")["deleted"]), ["20200101_000000"]);

    pgb_run(&envs, dir.path(), &["pin", "20190101_000000"]).expect(66);
    pgb_run(&envs, dir.path(), &["pin", "../20200103_000000"]).expect(64);
}

#[test]
fn check_is_0_when_fresh_1_when_stale_or_empty_and_69_when_unreachable() {
    let mut s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let envs = s3.env(BUCKET, "");

    let run = pgb_run(&envs, dir.path(), &["check"]).expect(1);
    assert_eq!(run.json["status"], "stale");
    assert_eq!(dest(&run, "local")["status"], "empty");
    // A BACKUP_DIR that does not exist is not "empty": it is missing (66), as `list` says.
    let run = pgb_run(&envs, &dir.path().join("nope"), &["check"]).expect(66);
    assert_eq!(dest(&run, "local")["status"], "missing");
    assert!(
        run.message().contains("does not exist"),
        "{}",
        run.message()
    );

    make_folder(dir.path(), &ago(30), &small());
    pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    let run = pgb_run(&envs, dir.path(), &["check", "--max-age", "26h"]).expect(1);
    assert_eq!(dest(&run, "local")["status"], "stale");
    assert_eq!(run.json["stale"], serde_json::json!(["local", "s3"]));
    let run = pgb_run(&envs, dir.path(), &["check", "--max-age", "2d"]).expect(0);
    assert_eq!(dest(&run, "s3")["status"], "ok");
    assert!(dest(&run, "s3")["age_seconds"].as_i64().unwrap() >= 30 * 3600);

    // Default from BACKUP_SCHEDULE: every 6 hours allows 8 hours.
    let run = pgb_run(
        &with(&envs, "BACKUP_SCHEDULE", "0 */6 * * *"),
        dir.path(),
        &["check"],
    )
    .expect(1);
    assert_eq!(run.json["max_age_seconds"], 8 * 3600);
    let run = pgb_run(
        &with(&envs, "BACKUP_SCHEDULE", "15 1 * * *"),
        dir.path(),
        &["check"],
    )
    .expect(1);
    assert_eq!(
        run.json["max_age"], "26h",
        "a daily schedule allows 26 hours; 30 is stale"
    );

    // A backup less than half the size of the one before: a warning, still exit 0.
    make_folder(dir.path(), &ago(1), &[("postgres_globals.sql.gz", 100)]);
    let run = pgb_run(&envs, dir.path(), &["check", "--max-age", "2d"]).expect(0);
    assert!(
        dest(&run, "local")["warning"]
            .as_str()
            .unwrap()
            .contains("less than half")
    );
    assert_eq!(
        run.json["warnings"].as_array().unwrap().len(),
        1,
        "S3 does not have it yet"
    );

    pgb_run(&envs, dir.path(), &["check", "--max-age", "soon"]).expect(64);
    // A number without a unit could mean hours or seconds: refused.
    pgb_run(&envs, dir.path(), &["check", "--max-age", "26"]).expect(64);
    s3.kill();
    let run = pgb_run(&envs, dir.path(), &["check", "--max-age", "2d"]).expect(69);
    assert_eq!(dest(&run, "s3")["status"], "unreachable");
    assert_eq!(dest(&run, "local")["status"], "ok");
}

#[test]
fn each_command_updates_the_metrics_file() {
    let server = PgServer::start(17);
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("pg_backups.prom");
    let envs = with(&server.env(), "METRICS_FILE", metrics.to_str().unwrap());
    let backups = dir.path().join("b");
    pgb_run(&envs, &backups, &["dump"]).expect(0);
    pgb_run(&envs, &backups, &["check"]).expect(0);
    pgb_run(&envs, &backups, &["prune"]).expect(0);
    let text = std::fs::read_to_string(&metrics).unwrap();
    for needle in [
        "pg_backups_last_success_timestamp_seconds{command=\"dump\"}",
        "pg_backups_last_success_timestamp_seconds{command=\"check\"}",
        "pg_backups_last_run_exit_code{command=\"prune\"} 0",
        "pg_backups_bytes{command=\"dump\",destination=\"local\"}",
        "pg_backups_newest_complete_timestamp_seconds{destination=\"local\"}",
        "pg_backups_stale{destination=\"local\"} 0",
        "# TYPE pg_backups_last_run_duration_seconds gauge",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(series.starts_with("pg_backups_"), "{line}");
        value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
    }
    // A failed run is recorded as such.
    let envs = with(&envs, "PGPORT", &free_port().to_string());
    pgb_run(&envs, &backups, &["dump"]).expect(69);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("pg_backups_last_run_success{command=\"dump\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("pg_backups_last_run_exit_code{command=\"dump\"} 69"),
        "{text}"
    );
}

#[test]
fn listing_pages_through_more_than_a_thousand_keys() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    // 600 folders of 2 keys each at S3, put straight in: 1,200 keys, two pages.
    let client = s3.client();
    s3.rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..600u32 {
            let client = client.clone();
            set.spawn(async move {
                let t = Utc::now() - Duration::hours(i as i64 + 1);
                let name = pg_backups::backup::FolderName::from_time(t).to_string();
                for file in ["postgres_globals.sql.gz", "postgres_cluster.sql.gz"] {
                    client
                        .put_object()
                        .bucket(BUCKET)
                        .key(format!("{name}/{file}"))
                        .body(b"x".to_vec().into())
                        .send()
                        .await
                        .unwrap();
                }
            });
            if set.len() >= 32 {
                set.join_next().await;
            }
        }
        while set.join_next().await.is_some() {}
    });
    let run = pgb_run(&s3.env(BUCKET, ""), dir.path(), &["list", "--source", "s3"]).expect(0);
    assert_eq!(
        run.json["sources"][0]["folders"].as_array().unwrap().len(),
        600
    );
}

#[test]
fn multipart_uploads_left_by_failed_ships_are_aborted_only_when_stale() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let client = s3.client();
    s3.rt
        .block_on(
            client
                .create_multipart_upload()
                .bucket(BUCKET)
                .key("20250101_000000/postgres_db_x.sql.gz")
                .send(),
        )
        .unwrap();
    assert_eq!(s3.multipart_uploads(BUCKET), 1);
    // A fresh one may be a ship in progress elsewhere: prune leaves it alone.
    let dir = tempfile::tempdir().unwrap();
    let run = pgb_run(&s3.env(BUCKET, ""), dir.path(), &["prune"]).expect(0);
    assert!(
        dest(&run, "s3").get("aborted_uploads").is_none(),
        "{}",
        run.stdout
    );
    assert_eq!(s3.multipart_uploads(BUCKET), 1);
    // Asked as of a day later, the same storage aborts it.
    use pg_backups::storage::Storage;
    let cfg = pg_backups::config::S3Config {
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
        endpoint: Some(s3.endpoint()),
        prefix: String::new(),
        force_path_style: true,
        credentials: Some(pg_backups::config::S3Credentials::new(
            common::s3::ACCESS_KEY,
            common::s3::SECRET_KEY,
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
    let tomorrow = Utc::now() + Duration::days(1);
    let listed = storage
        .abort_stale_uploads(tomorrow + Duration::hours(1), true)
        .unwrap();
    assert_eq!(listed, ["20250101_000000/postgres_db_x.sql.gz"]);
    assert_eq!(s3.multipart_uploads(BUCKET), 1, "a dry run aborts nothing");
    storage
        .abort_stale_uploads(tomorrow + Duration::hours(1), false)
        .unwrap();
    assert_eq!(s3.multipart_uploads(BUCKET), 0);
}
