//! `pg-backups ship` to a real S3 server (SeaweedFS, keys checked): complete, checked,
//! resumable copies, and a clear error for every way it can go wrong.

mod common;

use std::time::{Duration, Instant};

use common::s3::{S3Server, SECRET_KEY};
use common::*;

const BUCKET: &str = "pg-backups-test";

fn files() -> Vec<(&'static str, usize)> {
    vec![
        ("postgres_cluster.sql.gz", 300_000),
        ("postgres_globals.sql.gz", 2_000),
        ("postgres_db_app.sql.gz", 12 * 1024 * 1024 + 123),
        ("postgres_db_my%20db.sql.gz", 50_000),
    ]
}

#[test]
fn ship_copies_every_file_checked_and_a_second_ship_transfers_nothing() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path(), "20250101_000000", &files());
    make_folder(dir.path(), "20250102_000000", &files()[..2]);
    // Multipart for the 12 MiB file: 5 MiB parts, the last one shorter.
    let envs = with(&s3.env(BUCKET, "prod/db1"), "S3_PART_SIZE", "5MiB");

    let run = pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    let dest = &run.json["destinations"][0];
    assert_eq!(dest["destination"], "s3");
    assert_eq!(dest["shipped"], 2, "{}", run.stdout);
    assert_eq!(
        dest["folders"][0]["folder"], "20250102_000000",
        "newest first"
    );
    assert!(dest["folders"][1]["mb_per_s"].as_f64().unwrap() > 0.0);

    // Every file is there with the local bytes, and carries its SHA-256; the manifest too.
    for (folder, count) in [("20250101_000000", 4), ("20250102_000000", 2)] {
        for (name, _) in &files()[..count] {
            let key = format!("prod/db1/{folder}/{name}");
            let local = dir.path().join(folder).join(name);
            let body = s3.get(BUCKET, &key);
            assert_eq!(
                body.len() as u64,
                std::fs::metadata(&local).unwrap().len(),
                "{key}"
            );
            let remote_sha = {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(&body))
            };
            assert_eq!(remote_sha, sha256_file(&local), "{key}");
            assert_eq!(s3.metadata(BUCKET, &key)["sha256"], remote_sha, "{key}");
        }
        let manifest = s3.get(BUCKET, &format!("prod/db1/{folder}/manifest.json"));
        assert_eq!(
            manifest,
            std::fs::read(dir.path().join(folder).join("manifest.json")).unwrap()
        );
    }
    assert_eq!(s3.multipart_uploads(BUCKET), 0, "no upload left open");

    let started = Instant::now();
    let again = pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let dest = &again.json["destinations"][0];
    assert_eq!(dest["shipped"], 0);
    assert_eq!(dest["skipped"], 2);
    assert_eq!(dest["bytes"], 0);

    // The same statuses as locally.
    s3.put(
        BUCKET,
        "prod/db1/20250103_000000/postgres_globals.sql.gz",
        b"half a ship",
    );
    s3.put(BUCKET, "prod/db1/not-a-backup/x", b"x");
    let list = pgb_run(&envs, dir.path(), &["list", "--source", "s3"]).expect(0);
    let status = |name: &str| listed_status(&list, name);
    assert_eq!(status("20250101_000000"), "complete");
    assert_eq!(status("20250103_000000"), "incomplete");
    assert_eq!(status("not-a-backup"), "invalid");
    let all = pgb_run(&envs, dir.path(), &["list"]).expect(0);
    assert_eq!(
        all.json["sources"].as_array().unwrap().len(),
        2,
        "local and s3"
    );
}

#[test]
fn dump_then_ship_end_to_end() {
    let server = PgServer::start(17);
    fixture::create(&server);
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let mut envs = server.env();
    envs.extend(s3.env(BUCKET, ""));
    pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    let folder = only_folder(dir.path());
    let name = folder.file_name().unwrap().to_string_lossy().into_owned();
    pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    let keys = s3.keys(BUCKET, &format!("{name}/"));
    let local: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .flatten()
        .map(|e| format!("{name}/{}", e.file_name().to_string_lossy()))
        .collect();
    assert_eq!(keys.len(), local.len(), "{keys:?}");
    assert!(
        keys.iter()
            .any(|(k, _)| k.ends_with("postgres_db_donn%C3%A9es.sql.gz"))
    );
}

#[test]
fn ship_killed_s3_mid_multipart_leaves_no_manifest_and_the_next_ship_completes() {
    let mut s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    make_folder(
        dir.path(),
        "20250101_000000",
        &[
            ("postgres_globals.sql.gz", 1000),
            ("postgres_db_big.sql.gz", 160 << 20),
        ],
    );
    let envs = with(&s3.env(BUCKET, ""), "S3_PART_SIZE", "5MiB");
    let child = pgb_spawn(&envs, dir.path(), &["ship"]);
    // Kill the server once the multipart upload is under way.
    wait_for(60, "the multipart upload to start", || {
        s3.multipart_uploads(BUCKET) > 0
    });
    std::thread::sleep(Duration::from_millis(300));
    s3.kill();
    let run = parse_run(child.wait_with_output().unwrap());
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.code, 69, "{}", run.stdout);
    assert!(!run.stdout.contains(SECRET_KEY) && !run.stderr.contains(SECRET_KEY));

    s3.restart();
    let keys = s3.keys(BUCKET, "20250101_000000/");
    assert!(
        keys.iter().all(|(k, _)| !k.ends_with("manifest.json")),
        "no manifest after a failed ship: {keys:?}"
    );
    let run = pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    assert_eq!(run.json["destinations"][0]["shipped"], 1);
    let body = s3.get(BUCKET, "20250101_000000/postgres_db_big.sql.gz");
    assert_eq!(body.len(), 160 << 20);
    let list = pgb_run(&envs, dir.path(), &["list", "--source", "s3"]).expect(0);
    assert_eq!(list.json["sources"][0]["folders"][0]["status"], "complete");
}

#[test]
fn a_local_file_changed_after_dump_is_never_shipped() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let folder = make_folder(dir.path(), "20250101_000000", &files());
    let envs = with(&s3.env(BUCKET, ""), "S3_PART_SIZE", "5MiB");
    for victim in ["postgres_globals.sql.gz", "postgres_db_app.sql.gz"] {
        let path = folder.join(victim);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let run = pgb_run(&envs, dir.path(), &["ship"]).expect(65);
        assert_eq!(run.json["status"], "failed");
        assert!(run.message().contains(victim), "{}", run.message());
        assert!(run.message().contains("SHA-256"), "{}", run.message());
        let keys = s3.keys(BUCKET, "20250101_000000/");
        assert!(
            keys.iter()
                .all(|(k, _)| !k.ends_with(victim) && !k.ends_with("manifest.json")),
            "{victim}: {keys:?}"
        );
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    assert_eq!(
        s3.multipart_uploads(BUCKET),
        0,
        "the bad multipart upload was aborted"
    );
}

#[test]
fn s3_errors_have_their_exit_codes_and_never_show_the_secret() {
    let mut s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path(), "20250101_000000", &files()[..2]);
    let envs = s3.env(BUCKET, "");

    let run = pgb_run(
        &with(&envs, "S3_SECRET_KEY", "wrong-secret-key-000"),
        dir.path(),
        &["ship"],
    )
    .expect(77);
    assert!(run.message().contains("S3_SECRET_KEY"), "{}", run.message());
    assert!(!run.stdout.contains("wrong-secret-key-000"));

    let run = pgb_run(
        &with(&envs, "S3_ACCESS_KEY", "AKIDUNKNOWN"),
        dir.path(),
        &["ship"],
    )
    .expect(77);
    assert!(!run.stdout.contains(SECRET_KEY) && !run.stderr.contains(SECRET_KEY));

    let run = pgb_run(
        &with(&envs, "S3_BUCKET", "no-such-bucket"),
        dir.path(),
        &["ship"],
    )
    .expect(66);
    assert!(
        run.message().contains("no-such-bucket"),
        "{}",
        run.message()
    );

    let run = pgb_run(&without(&envs, "S3_BUCKET"), dir.path(), &["ship"]).expect(78);
    assert!(run.message().contains("S3_BUCKET"), "{}", run.message());

    let run = pgb_run(
        &with(&envs, "S3_ENDPOINT", "htp:/nope"),
        dir.path(),
        &["ship"],
    )
    .expect(64);
    assert!(run.message().contains("S3_ENDPOINT"), "{}", run.message());

    // The secret from a file works like the variable.
    let secret_file = dir.path().join("s3-secret");
    std::fs::write(&secret_file, format!("{SECRET_KEY}\n")).unwrap();
    let from_file = with(
        &without(&envs, "S3_SECRET_KEY"),
        "S3_SECRET_KEY_FILE",
        secret_file.to_str().unwrap(),
    );
    pgb_run(&from_file, dir.path(), &["list", "--source", "s3"]).expect(0);

    s3.kill();
    let started = Instant::now();
    let run = pgb_run(&envs, dir.path(), &["ship"]).expect(69);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(run.message().contains("S3_ENDPOINT"), "{}", run.message());
    assert!(!run.stdout.contains(SECRET_KEY) && !run.stderr.contains(SECRET_KEY));
}

#[test]
fn the_s3_secret_is_in_no_process_arguments_during_a_ship() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    make_folder(
        dir.path(),
        "20250101_000000",
        &[("postgres_db_big.sql.gz", 96 << 20)],
    );
    let envs = with(&s3.env(BUCKET, ""), "S3_PART_SIZE", "5MiB");
    let child = pgb_spawn(&envs, dir.path(), &["ship"]);
    let mut samples = 0;
    wait_for(60, "the upload to start", || {
        s3.multipart_uploads(BUCKET) > 0
    });
    for _ in 0..5 {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        assert!(!ps.contains(SECRET_KEY), "the S3 secret is visible in ps");
        samples += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = parse_run(child.wait_with_output().unwrap()).expect(0);
    assert!(samples > 0);
    assert!(!run.stdout.contains(SECRET_KEY) && !run.stderr.contains(SECRET_KEY));
}
