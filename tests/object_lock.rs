//! S3 Object Lock (DESIGN.md guarantee 12, issue 22): what `ship` writes, what `prune` does
//! with folders the provider still holds, and the preflight on a bucket without it.
//!
//! Why moto and not SeaweedFS (the S3 server of the other tests): SeaweedFS accepts the lock
//! calls but does not enforce them (its issues #7194 and #11333), so a test there would pass
//! whether or not the lock protected anything. moto's S3 (`moto_server`, already used for STS
//! in tests/people.rs) refuses to delete a version whose retain-until date is still to come
//! (AccessDenied, as AWS does), answers GetObjectLockConfiguration, keeps versions and lists
//! them. What moto lacks: it ignores the lock headers of CreateMultipartUpload (an object
//! completed from parts is not locked there), so multipart uploads are checked on the wire
//! only, and enforcement with single PUTs.

mod common;

use std::process::{Child, Command, Stdio};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use common::*;
use serde_json::Value;

const BUCKET: &str = "pgb-lock";

/// moto's S3 on loopback; stopped when dropped.
struct Moto {
    child: Child,
    port: u16,
    rt: tokio::runtime::Runtime,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "moto_server is not installed: run scripts/test.sh (pip install 'moto[server]')",
            );
        wait_for(30, "moto_server", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Moto { child, port, rt }
    }

    /// A client of our own, to set the scene and look at what arrived (moto takes any key).
    fn client(&self) -> Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{}", self.port))
            .force_path_style(true)
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .build();
        Client::from_conf(conf)
    }

    /// A bucket, with Object Lock (moto then keeps versions, as AWS does) or without.
    fn create_bucket(&self, object_lock: bool) {
        let c = self.client();
        self.rt
            .block_on(
                c.create_bucket()
                    .bucket(BUCKET)
                    .object_lock_enabled_for_bucket(object_lock)
                    .send(),
            )
            .unwrap();
    }

    fn enable_versioning(&self) {
        use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
        let c = self.client();
        self.rt
            .block_on(
                c.put_bucket_versioning()
                    .bucket(BUCKET)
                    .versioning_configuration(
                        VersioningConfiguration::builder()
                            .status(BucketVersioningStatus::Enabled)
                            .build(),
                    )
                    .send(),
            )
            .unwrap();
    }

    /// Every version and delete marker under `prefix`: (key, is a delete marker).
    fn versions(&self, prefix: &str) -> Vec<(String, bool)> {
        let c = self.client();
        let out = self
            .rt
            .block_on(
                c.list_object_versions()
                    .bucket(BUCKET)
                    .prefix(prefix)
                    .send(),
            )
            .unwrap();
        let mut v: Vec<(String, bool)> = out
            .versions()
            .iter()
            .map(|v| (v.key().unwrap().to_string(), false))
            .chain(
                out.delete_markers()
                    .iter()
                    .map(|m| (m.key().unwrap().to_string(), true)),
            )
            .collect();
        v.sort();
        v
    }

    fn put(&self, key: &str, body: Vec<u8>) {
        let c = self.client();
        self.rt
            .block_on(
                c.put_object()
                    .bucket(BUCKET)
                    .key(key)
                    .body(body.into())
                    .send(),
            )
            .unwrap();
    }

    fn get(&self, key: &str) -> Vec<u8> {
        let c = self.client();
        self.rt.block_on(async {
            let out = c.get_object().bucket(BUCKET).key(key).send().await.unwrap();
            out.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    /// A legal hold on the current version of `key` (what a bucket admin sets).
    fn hold(&self, key: &str) {
        use aws_sdk_s3::types::{ObjectLockLegalHold, ObjectLockLegalHoldStatus};
        let c = self.client();
        self.rt
            .block_on(
                c.put_object_legal_hold()
                    .bucket(BUCKET)
                    .key(key)
                    .legal_hold(
                        ObjectLockLegalHold::builder()
                            .status(ObjectLockLegalHoldStatus::On)
                            .build(),
                    )
                    .send(),
            )
            .unwrap();
    }

    /// A plain delete: on a versioned bucket, a delete marker.
    fn delete(&self, key: &str) {
        let c = self.client();
        self.rt
            .block_on(c.delete_object().bucket(BUCKET).key(key).send())
            .unwrap();
    }

    /// The retain-until date moto keeps for the current version of `key`.
    fn retain_until(&self, key: &str) -> Option<i64> {
        let c = self.client();
        let h = self
            .rt
            .block_on(c.head_object().bucket(BUCKET).key(key).send())
            .unwrap();
        h.object_lock_retain_until_date().map(|d| d.secs())
    }

    /// The variables that point `pg-backups` at `endpoint` (moto, or a relay before it).
    fn env(&self, endpoint: &str) -> Vec<(String, String)> {
        [
            ("S3_ENABLED", "true"),
            ("S3_BUCKET", BUCKET),
            ("S3_ENDPOINT", endpoint),
            ("S3_FORCE_PATH_STYLE", "true"),
            ("S3_ACCESS_KEY", "AKIDTEST"),
            ("S3_SECRET_KEY", "secret"),
            ("LOCAL_KEEP_LAST", "10"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_lock(envs: &[(String, String)], mode: &str, days: &str) -> Vec<(String, String)> {
    with(
        &with(envs, "S3_OBJECT_LOCK_MODE", mode),
        "S3_OBJECT_LOCK_DAYS",
        days,
    )
}

/// The folder name `secs` seconds before now.
fn folder_secs_ago(secs: i64) -> String {
    (Utc::now() - Duration::seconds(secs))
        .format("%Y%m%d_%H%M%S")
        .to_string()
}

fn folder_time(name: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(name, "%Y%m%d_%H%M%S")
        .unwrap()
        .and_utc()
}

/// The heads of the requests a relay saw that start with `start` (`PUT /pgb-lock/`).
fn request_heads(seen: &str, start: &str) -> Vec<String> {
    seen.match_indices(start)
        .map(|(i, _)| {
            let rest = &seen[i..];
            let end = rest.find("\r\n\r\n").unwrap_or(rest.len());
            rest[..end].to_ascii_lowercase()
        })
        .collect()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

fn s3_of(run: &Run) -> Value {
    run.json["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == "s3")
        .cloned()
        .unwrap()
}

fn kept_entry(dest: &Value, folder: &str) -> Value {
    dest["kept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["folder"] == folder)
        .cloned()
        .unwrap_or_else(|| panic!("{folder} is not among the kept: {dest}"))
}

fn deleted_names(dest: &Value) -> Vec<String> {
    dest["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["folder"].as_str().unwrap().to_string())
        .collect()
}

/// Every PUT and CreateMultipartUpload of a folder carries the mode and the folder's time
/// plus N days; every PUT and every part carries Content-MD5 (which S3 requires of locked
/// writes); the pin marker is written without a lock, so `pin --remove` can take it away.
/// This one runs on SeaweedFS: what is checked is what we send, and moto cannot complete a
/// multipart upload for the Rust SDK (moto 5.2.1 answers CompleteMultipartUpload with a
/// `CompleteMultipartUploadResponse` root element, which the SDK refuses).
#[test]
fn every_upload_carries_the_lock_of_its_folder_and_content_md5() {
    let s3 = common::s3::S3Server::start();
    s3.rt
        .block_on(
            s3.client()
                .create_bucket()
                .bucket(BUCKET)
                .object_lock_enabled_for_bucket(true)
                .send(),
        )
        .unwrap();
    let proxy = CaptureProxy::start(s3.s3_port());
    let dir = tempfile::tempdir().unwrap();
    let name = folder_hours_ago(5);
    make_folder(
        dir.path(),
        &name,
        &[
            ("postgres_globals.sql.gz", 2_000),
            ("postgres_db_big.sql.gz", 6 * 1024 * 1024 + 17),
        ],
    );
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let e = with(
        &with_lock(&s3.env(BUCKET, ""), "governance", "3"),
        "S3_PART_SIZE",
        "5MiB",
    );
    let e = with(&e, "S3_ENDPOINT", &endpoint);
    pgb_run(&e, dir.path(), &["ship"]).expect(0);
    pgb_run(&e, dir.path(), &["pin", &name]).expect(0);
    let seen = proxy.text();
    let until = (folder_time(&name) + Duration::days(3))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
        .to_ascii_lowercase();

    let puts = request_heads(&seen, &format!("PUT /{BUCKET}/"));
    let posts = request_heads(&seen, &format!("POST /{BUCKET}/"));
    let creates: Vec<&String> = posts.iter().filter(|h| h.contains("?uploads")).collect();
    let parts: Vec<&String> = puts.iter().filter(|h| h.contains("partnumber=")).collect();
    let objects: Vec<&String> = puts
        .iter()
        .filter(|h| !h.contains("partnumber=") && !h.contains("/pinned"))
        .collect();
    let pins: Vec<&String> = puts.iter().filter(|h| h.contains("/pinned")).collect();
    // The small file and the manifest in one PUT each, the large one in two parts.
    assert_eq!(
        (objects.len(), creates.len(), parts.len()),
        (2, 1, 2),
        "{puts:#?}\n{posts:#?}"
    );
    for head in objects.iter().chain(&creates) {
        assert_eq!(
            header(head, "x-amz-object-lock-mode"),
            Some("governance"),
            "{head}"
        );
        assert_eq!(
            header(head, "x-amz-object-lock-retain-until-date"),
            Some(until.as_str()),
            "{head}"
        );
    }
    for head in objects.iter().chain(&parts) {
        assert!(
            header(head, "content-md5").is_some(),
            "no Content-MD5: {head}"
        );
    }
    assert_eq!(pins.len(), 1);
    assert!(
        header(pins[0], "x-amz-object-lock-mode").is_none(),
        "{}",
        pins[0]
    );
    // The pin marker goes (a delete marker hides it) although the folder is locked.
    pgb_run(&e, dir.path(), &["pin", &name, "--unpin"]).expect(0);
    let list = pgb_run(&e, dir.path(), &["list", "--source", "s3"]).expect(0);
    assert_eq!(
        list.json["sources"][0]["folders"][0]["pinned"], false,
        "{}",
        list.stdout
    );
}

/// A COMPLIANCE folder that retention would delete stays while locked (kept, with the date,
/// exit 0), and goes with every version once the date has passed. Folders are named almost
/// S3_OBJECT_LOCK_DAYS ago so that their lock ends within a minute: the dates are the real
/// ones ship writes, nothing is shortened for the test.
#[test]
fn a_locked_folder_survives_prune_and_goes_after_its_date() {
    let moto = Moto::start();
    moto.create_bucket(true);
    let dir = tempfile::tempdir().unwrap();
    let two_days = 2 * 24 * 3600;
    // newest (kept), newest before the 1-day window (kept), then two that retention deletes.
    let newest = folder_hours_ago(1);
    let window = folder_hours_ago(36);
    let planned = folder_secs_ago(two_days - 40);
    let refused = folder_secs_ago(two_days - 35);
    for name in [&newest, &window, &planned, &refused] {
        make_folder(dir.path(), name, &[("postgres_globals.sql.gz", 3_000)]);
    }
    let e = with(
        &with(
            &with_lock(&moto.env(&moto.endpoint()), "COMPLIANCE", "2"),
            "S3_RETENTION_DAYS",
            "1",
        ),
        "S3_KEEP_LAST",
        "1",
    );
    let ship = pgb_run(&e, dir.path(), &["ship"]).expect(0);
    assert_eq!(
        ship.json["destinations"][0]["shipped"], 4,
        "{}",
        ship.stdout
    );
    // `refused`: its manifest written again without a lock (as by another tool), so the HEAD
    // that plans the prune sees none; the locked version below it is refused on delete.
    let manifest = format!("{refused}/manifest.json");
    moto.put(&manifest, moto.get(&manifest));
    assert_eq!(moto.retain_until(&manifest), None);

    let run = pgb_run(&e, dir.path(), &["prune"]).expect(0);
    assert_eq!(run.json["status"], "ok", "{}", run.stdout);
    let s3 = s3_of(&run);
    assert_eq!(deleted_names(&s3), Vec::<String>::new(), "{s3}");
    for (name, why) in [(&planned, "planned"), (&refused, "refused on delete")] {
        let k = kept_entry(&s3, name);
        let until = (folder_time(name) + Duration::days(2))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        assert_eq!(k["locked"], true, "{why}: {k}");
        assert_eq!(k["locked_until"], until.as_str(), "{why}: {k}");
        assert!(
            k["reasons"][0]
                .as_str()
                .unwrap()
                .contains(&format!("locked until {until}")),
            "{why}: {k}"
        );
    }
    // The folder whose date the HEAD showed was not even tried: every version is there.
    assert_eq!(
        moto.versions(&format!("{planned}/")),
        vec![
            (format!("{planned}/manifest.json"), false),
            (format!("{planned}/postgres_globals.sql.gz"), false)
        ]
    );
    // A locked folder stays complete: the refusal of its manifest left its files alone.
    let list = pgb_run(&e, dir.path(), &["list", "--source", "s3"]).expect(0);
    assert_eq!(
        listed_status(&list, &refused),
        "complete",
        "{}",
        list.stdout
    );
    assert!(
        moto.versions(&format!("{refused}/"))
            .contains(&(format!("{refused}/postgres_globals.sql.gz"), false))
    );
    // The text output says it too.
    let text = pgb_run_text(&e, dir.path(), &["prune", "--dry-run"]);
    assert!(text.contains("locked until"), "{text}");

    // After the date, both go, with every version and delete marker.
    let last =
        folder_time(&planned).max(folder_time(&refused)) + Duration::days(2) + Duration::seconds(2);
    while Utc::now() < last {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let run = pgb_run(&e, dir.path(), &["prune"]).expect(0);
    let s3 = s3_of(&run);
    let mut gone = deleted_names(&s3);
    gone.sort();
    let mut expected = vec![planned.clone(), refused.clone()];
    expected.sort();
    assert_eq!(gone, expected, "{s3}");
    assert!(s3["bytes_freed"].as_u64().unwrap() > 6_000, "{s3}");
    for name in [&planned, &refused] {
        assert_eq!(moto.versions(&format!("{name}/")), vec![], "{name}");
    }
    assert_eq!(moto.versions(&format!("{newest}/")).len(), 2);
}

/// `pg-backups ARGS --output text`: what a person sees.
fn pgb_run_text(envs: &[(String, String)], backup_dir: &std::path::Path, args: &[&str]) -> String {
    let out = pgb(envs)
        .env("BACKUP_DIR", backup_dir)
        .args(args)
        .args(["--output", "text"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// With the lock asked for, a bucket without Object Lock stops `ship` before anything is
/// written (78), with what to do; the settings themselves are checked first (64).
#[test]
fn ship_stops_with_78_on_a_bucket_without_object_lock() {
    let moto = Moto::start();
    moto.create_bucket(false);
    let dir = tempfile::tempdir().unwrap();
    make_folder(
        dir.path(),
        &folder_hours_ago(1),
        &[("postgres_globals.sql.gz", 100)],
    );
    let e = with_lock(&moto.env(&moto.endpoint()), "COMPLIANCE", "30");
    let run = pgb_run(&e, dir.path(), &["ship"]).expect(78);
    let m = run.message();
    assert!(m.contains("has no Object Lock"), "{m}");
    assert!(m.contains("--object-lock-enabled-for-bucket"), "{m}");
    assert!(
        m.contains("unset S3_OBJECT_LOCK_MODE and S3_OBJECT_LOCK_DAYS"),
        "{m}"
    );
    assert_eq!(moto.versions(""), vec![]);

    // Half the settings, or a wrong value: a usage error naming the variables.
    for (mode, days) in [
        ("COMPLIANCE", ""),
        ("", "30"),
        ("FOREVER", "30"),
        ("GOVERNANCE", "0"),
    ] {
        let e = with_lock(&moto.env(&moto.endpoint()), mode, days);
        let m = pgb_run(&e, dir.path(), &["ship"]).expect(64).message();
        assert!(m.contains("S3_OBJECT_LOCK_"), "{mode}/{days}: {m}");
    }
    let e = with_lock(&moto.env(&moto.endpoint()), "COMPLIANCE", "");
    let m = pgb_run(&e, dir.path(), &["ship"]).expect(64).message();
    assert!(
        m.contains("S3_OBJECT_LOCK_MODE") && m.contains("S3_OBJECT_LOCK_DAYS"),
        "{m}"
    );
}

/// On a versioned bucket (no lock asked for), `prune` deletes versions, not objects: a plain
/// delete would only add delete markers and free nothing. Old versions and delete markers
/// under the folder go too. A folder whose manifest has only a delete marker left is
/// incomplete for `list`.
#[test]
fn prune_on_a_versioned_bucket_frees_every_version() {
    let moto = Moto::start();
    moto.create_bucket(false);
    moto.enable_versioning();
    let dir = tempfile::tempdir().unwrap();
    let newest = folder_hours_ago(1);
    let window = folder_hours_ago(36);
    let old = folder_hours_ago(24 * 5);
    for name in [&newest, &window, &old] {
        make_folder(
            dir.path(),
            name,
            &[
                ("postgres_globals.sql.gz", 3_000),
                ("postgres_db_a.sql.gz", 5_000),
            ],
        );
    }
    let e = with(
        &with(&moto.env(&moto.endpoint()), "S3_RETENTION_DAYS", "1"),
        "S3_KEEP_LAST",
        "1",
    );
    pgb_run(&e, dir.path(), &["ship"]).expect(0);
    // Older versions and a delete marker under the old folder.
    let globals = format!("{old}/postgres_globals.sql.gz");
    moto.put(&globals, moto.get(&globals));
    moto.delete(&format!("{old}/postgres_db_a.sql.gz"));
    assert_eq!(moto.versions(&format!("{old}/")).len(), 5);

    let run = pgb_run(&e, dir.path(), &["prune"]).expect(0);
    let s3 = s3_of(&run);
    assert_eq!(deleted_names(&s3), vec![old.clone()], "{s3}");
    assert_eq!(moto.versions(&format!("{old}/")), vec![]);
    assert_eq!(moto.versions(&format!("{newest}/")).len(), 3);
    assert_eq!(moto.versions(&format!("{window}/")).len(), 3);

    // A manifest behind a delete marker is no manifest.
    moto.delete(&format!("{window}/manifest.json"));
    let list = pgb_run(&e, dir.path(), &["list", "--source", "s3"]).expect(0);
    assert_eq!(
        listed_status(&list, &window),
        "incomplete",
        "{}",
        list.stdout
    );
    assert_eq!(listed_status(&list, &newest), "complete", "{}", list.stdout);
}

/// A dump without local copy (`BACKUP_LOCAL_COPY=false`) writes through the same two
/// builders: every file and the manifest carry the folder's lock, the scratch files it
/// assembles the cluster file from are not locked and leave no version behind; a bucket
/// without Object Lock stops it (78) before any database is read.
#[test]
fn a_direct_dump_locks_every_file_and_leaves_no_scratch_version() {
    let pg = PgServer::start(17);
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    let moto = Moto::start();
    moto.create_bucket(true);
    let proxy = CaptureProxy::start(moto.port);
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let mut e = with_lock(&moto.env(&endpoint), "GOVERNANCE", "2");
    e.extend(pg.env());
    let e = with(&e, "BACKUP_LOCAL_COPY", "false");
    let run = pgb_run(&e, dir.path(), &["dump"]).expect(0);
    let folder = run.json["folder"].as_str().unwrap().to_string();
    // The scratch files went up, without a lock.
    let scratch = request_heads(&proxy.text(), &format!("PUT /{BUCKET}/{folder}/."));
    assert!(!scratch.is_empty(), "no scratch file was written");
    for head in &scratch {
        assert!(header(head, "x-amz-object-lock-mode").is_none(), "{head}");
    }
    let until = (folder_time(&folder) + Duration::days(2)).timestamp();
    let versions = moto.versions(&format!("{folder}/"));
    assert!(versions.len() >= 4, "{versions:?}");
    for (key, marker) in &versions {
        assert!(!marker, "a delete marker is left: {key}");
        assert!(!key.contains("/."), "a scratch file is left: {key}");
        assert_eq!(moto.retain_until(key), Some(until), "{key}");
    }

    // A bucket without Object Lock: 78, and nothing written there.
    let moto = Moto::start();
    moto.create_bucket(false);
    let mut e = with_lock(&moto.env(&moto.endpoint()), "GOVERNANCE", "2");
    e.extend(pg.env());
    let e = with(&e, "BACKUP_LOCAL_COPY", "false");
    let m = pgb_run(&e, dir.path(), &["dump"]).expect(78).message();
    assert!(m.contains("has no Object Lock"), "{m}");
    assert_eq!(moto.versions(""), vec![]);
}

/// A legal hold on one data file (not the manifest) keeps the whole folder: prune deletes
/// nothing of it, so it stays a complete backup, and says why.
#[test]
fn a_legal_hold_on_one_file_keeps_the_whole_folder_complete() {
    let moto = Moto::start();
    moto.create_bucket(true);
    let dir = tempfile::tempdir().unwrap();
    // newest, and the youngest older than the 1-day window, are kept by retention.
    let newest = folder_hours_ago(1);
    let window = folder_hours_ago(48);
    let old = folder_hours_ago(24 * 20);
    let older = folder_hours_ago(24 * 21);
    let files = [
        ("postgres_globals.sql.gz", 3_000),
        ("postgres_db_app.sql.gz", 5_000),
    ];
    for name in [&newest, &window, &old, &older] {
        make_folder(dir.path(), name, &files);
    }
    // Shipped without a lock of ours: the hold is the bucket admin's.
    let e = with(
        &with(&moto.env(&moto.endpoint()), "S3_RETENTION_DAYS", "1"),
        "S3_KEEP_LAST",
        "1",
    );
    pgb_run(&e, dir.path(), &["ship"]).expect(0);
    moto.hold(&format!("{older}/postgres_db_app.sql.gz"));

    let run = pgb_run(&e, dir.path(), &["prune"]).expect(0);
    let s3 = s3_of(&run);
    let k = kept_entry(&s3, &older);
    assert_eq!(k["locked"], true, "{k}");
    assert!(
        k["reasons"][0].as_str().unwrap().contains("legal hold"),
        "{k}"
    );
    let left: Vec<String> = moto
        .versions(&format!("{older}/"))
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(
        left.len(),
        3,
        "manifest and both files are still there: {left:?}"
    );
    let listed = pgb_run(&e, dir.path(), &["list", "--source", "s3"]).expect(0);
    let folder = listed.json["sources"][0]["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["folder"] == older.as_str())
        .cloned()
        .unwrap();
    assert_eq!(folder["status"], "complete", "{folder}");
    // The folder without a hold went.
    assert!(deleted_names(&s3).contains(&old), "{s3}");
}

/// A key of the backup host can still write a newer version over a locked one (Object Lock
/// keeps the original, it does not stop a new version): `verify` and `restore` refuse a
/// folder whose files were written more than once, rather than read what hides the original.
#[test]
fn a_folder_whose_files_were_written_again_is_refused_by_verify_and_restore() {
    let moto = Moto::start();
    moto.create_bucket(true);
    let dir = tempfile::tempdir().unwrap();
    let folder = folder_hours_ago(1);
    make_folder(dir.path(), &folder, &[("postgres_globals.sql.gz", 3_000)]);
    let e = with_lock(&moto.env(&moto.endpoint()), "GOVERNANCE", "2");
    pgb_run(&e, dir.path(), &["ship"]).expect(0);
    // (make_folder's bytes are noise: verify reads them and finds no gzip, but no rewrite.)
    let before = pgb_run(&e, dir.path(), &["verify", &folder, "--source", "s3"]);
    assert!(
        !before.message().contains("written more than once"),
        "{}",
        before.stdout
    );
    // The same bytes again: a second version, as a forger's would be.
    let manifest = format!("{folder}/manifest.json");
    moto.put(&manifest, moto.get(&manifest));
    let run = pgb_run(&e, dir.path(), &["verify", &folder, "--source", "s3"]).expect(65);
    assert!(run.message().contains("manifest.json"), "{}", run.stdout);
    assert!(
        run.message().contains("written more than once"),
        "{}",
        run.stdout
    );
    let restore = restore_env(
        &e,
        &[
            ("RESTORE_SOURCE", "s3"),
            ("RESTORE_FOLDER", folder.as_str()),
            ("RESTORE_TYPE", "globals"),
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", "9"),
        ],
    );
    let run = pgb_run(&restore, dir.path(), &["restore"]);
    assert_eq!(run.code, 65, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.message().contains("written more than once"),
        "{}",
        run.stdout
    );
}
