//! `BACKUP_LOCAL_COPY=false`: `dump` streams every file straight into S3 (SeaweedFS, keys
//! checked) and writes the manifest last; nothing is written under `BACKUP_DIR` but the
//! lock, and the folder restores from S3 like a shipped one.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::fixture::{self, nasty_names};
use common::s3::S3Server;
use common::*;
use serde_json::Value;

const BUCKET: &str = "pg-backups-direct";

fn direct(envs: &[(String, String)]) -> Vec<(String, String)> {
    with(envs, "BACKUP_LOCAL_COPY", "false")
}

/// What `BACKUP_DIR` holds: nothing but these (the lock, and the drill log once a drill ran).
fn assert_only(dir: &Path, allowed: &[&str]) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| allowed.contains(&n.as_str())),
        "BACKUP_DIR holds backup data: {names:?}"
    );
}

fn assert_only_the_lock(dir: &Path) {
    assert_only(dir, &[".pg-backups.lock"]);
}

/// The keys of one folder at S3 (without the prefix).
fn folder_keys(s3: &S3Server, prefix: &str, folder: &str) -> Vec<String> {
    let root = format!("{prefix}/{folder}/");
    s3.keys(BUCKET, &root)
        .into_iter()
        .map(|(k, _)| k.trim_start_matches(&root).to_string())
        .collect()
}

/// The stored bytes of each file are the manifest's (size and SHA-256), read back from S3.
fn assert_files_match_the_manifest(s3: &S3Server, prefix: &str, folder: &str) -> Value {
    let manifest: Value =
        serde_json::from_slice(&s3.get(BUCKET, &format!("{prefix}/{folder}/manifest.json")))
            .unwrap();
    let mut names: Vec<String> = vec!["manifest.json".into()];
    for f in manifest["files"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        let body = s3.get(BUCKET, &format!("{prefix}/{folder}/{name}"));
        assert_eq!(body.len() as u64, f["bytes"].as_u64().unwrap(), "{name}");
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&body))
        };
        assert_eq!(sha, f["sha256"].as_str().unwrap(), "{name}");
        names.push(name.to_string());
    }
    let mut keys = folder_keys(s3, prefix, folder);
    keys.sort();
    names.sort();
    assert_eq!(keys, names, "the folder holds its files and nothing else");
    manifest
}

struct Case {
    prefix: &'static str,
    settings: &'static [(&'static str, &'static str)],
    encrypted: bool,
}

/// One format end to end: dump straight to S3, then everything a user does with it.
fn round_trip(source: &PgServer, s3: &S3Server, case: &Case) {
    let keys = tempfile::tempdir().unwrap();
    let mut envs = direct(&source.env());
    envs.extend(s3.env(BUCKET, case.prefix));
    // Parts of 5 MiB: the `bulk` database's file goes up in several.
    envs = with(&envs, "S3_PART_SIZE", "5MiB");
    for (k, v) in case.settings {
        envs = with(&envs, k, v);
    }
    if case.encrypted {
        let (key, recipient) = age_keygen(keys.path(), "key.txt");
        envs = with(&envs, "AGE_RECIPIENTS", &recipient);
        envs = with(&envs, "AGE_IDENTITY_FILE", key.to_str().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let metrics = keys.path().join("pg_backups.prom");
    envs = with(&envs, "METRICS_FILE", metrics.to_str().unwrap());
    let run = pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    assert_eq!(run.json["destination"], "s3", "{}", run.stdout);
    let exported = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        exported.contains("pg_backups_newest_complete_timestamp_seconds{destination=\"s3\"}"),
        "{exported}"
    );
    assert!(!exported.contains("destination=\"local\""), "{exported}");
    let folder = run.json["folder"].as_str().unwrap().to_string();
    assert_eq!(
        run.json["path"],
        format!("s3://{BUCKET}/{}/{folder}/", case.prefix)
    );
    assert_only_the_lock(dir.path());
    assert_eq!(s3.multipart_uploads(BUCKET), 0, "no upload left open");
    let manifest = assert_files_match_the_manifest(s3, case.prefix, &folder);
    assert_eq!(manifest["status"], "complete");

    // ship has nothing to do; list, verify and check look at S3.
    let shipped = pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    assert!(
        shipped.json["note"]
            .as_str()
            .is_some_and(|n| n.contains("BACKUP_LOCAL_COPY=false")),
        "{}",
        shipped.stdout
    );
    assert_eq!(shipped.json["local_folders"], 0, "{}", shipped.stdout);
    let listed = pgb_run(&envs, dir.path(), &["list"]).expect(0);
    let dests = listed.json["sources"].as_array().unwrap();
    assert_eq!(dests.len(), 1, "only S3 is listed: {}", listed.stdout);
    assert_eq!(dests[0]["source"], "s3");
    assert_eq!(dests[0]["folders"][0]["folder"], folder.as_str());
    pgb_run(&envs, dir.path(), &["check"]).expect(0);
    let verified = pgb_run(&envs, dir.path(), &["verify", "--restore-test"]).expect(0);
    assert_eq!(
        verified.json["folder"],
        folder.as_str(),
        "{}",
        verified.stdout
    );
    assert_only(dir.path(), &[".pg-backups.lock", ".pg-backups-drill.json"]);
    // pin and prune work at S3 (locally there is nothing to prune).
    pgb_run(&envs, dir.path(), &["pin", &folder]).expect(0);
    let pruned = pgb_run(&envs, dir.path(), &["prune"]).expect(0);
    let pruned_at: Vec<&str> = pruned.json["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["destination"].as_str().unwrap())
        .collect();
    assert_eq!(pruned_at, ["local", "s3"], "{}", pruned.stdout);
    assert!(s3.keys(BUCKET, &format!("{}/{folder}/", case.prefix)).len() > 2);

    let target = PgServer::start(source.version);
    let base = restore_env(
        &with(&envs, "PGPORT", &target.port.to_string()),
        &[("RESTORE_FOLDER", "latest"), ("RESTORE_SOURCE", "s3")],
    );
    let run = pgb_run(
        &restore_env(&base, &[("RESTORE_TYPE", "cluster")]),
        dir.path(),
        &["restore"],
    )
    .expect(0);
    assert_eq!(run.json["errors"], 0, "{}", run.stdout);
    for db in nasty_names().into_iter().chain(["bulk"]) {
        assert_same(
            &source.dump_normalized(db),
            &target.dump_normalized(db),
            &format!("{db} restored from a folder dump wrote straight to S3"),
        );
    }
}

fn source_with_bulk(version: u32) -> PgServer {
    let source = PgServer::start(version);
    fixture::create(&source);
    // About 12 MB that does not compress: more than two 5 MiB parts.
    source.psql("postgres", "CREATE DATABASE bulk");
    source.psql(
        "bulk",
        "CREATE TABLE blobs(id int PRIMARY KEY, b bytea);
         INSERT INTO blobs SELECT g, decode(string_agg(lpad(to_hex((random()*255)::int), 2, '0'), ''), 'hex')
           FROM generate_series(1, 12) g, generate_series(1, 1000000) x GROUP BY g;",
    );
    source
}

#[test]
fn a_dump_without_local_copy_round_trips_in_every_format() {
    let source = source_with_bulk(17);
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let cases = [
        Case {
            prefix: "plain-gzip",
            settings: &[],
            encrypted: false,
        },
        Case {
            prefix: "plain-zstd-age",
            settings: &[("BACKUP_COMPRESSION", "zstd")],
            encrypted: true,
        },
        Case {
            prefix: "custom-age",
            settings: &[("BACKUP_FORMAT", "custom"), ("BACKUP_JOBS", "3")],
            encrypted: true,
        },
    ];
    for case in &cases {
        round_trip(&source, &s3, case);
    }
}

/// `BACKUP_LOCAL_COPY=false` needs S3, and leaves rsync nothing to copy: each is 78 naming
/// both settings, before any work.
#[test]
fn a_dump_without_local_copy_needs_s3_and_refuses_rsync() {
    let dir = tempfile::tempdir().unwrap();
    let envs = direct(&[("PGHOST".to_string(), "127.0.0.1".to_string())]);
    let run = pgb_run(&envs, dir.path(), &["dump"]).expect(78);
    assert!(
        run.message().contains("BACKUP_LOCAL_COPY=false"),
        "{}",
        run.stdout
    );
    assert!(run.message().contains("S3_ENABLED"), "{}", run.stdout);

    let s3 = S3Server::start();
    let mut envs = envs;
    envs.extend(s3.env(BUCKET, ""));
    let envs = with(&envs, "RSYNC_ENABLED", "true");
    let run = pgb_run(&envs, dir.path(), &["dump"]).expect(78);
    assert!(
        run.message().contains("BACKUP_LOCAL_COPY=false"),
        "{}",
        run.stdout
    );
    assert!(run.message().contains("RSYNC_ENABLED"), "{}", run.stdout);
    let run = pgb_run(
        &with(&envs, "BACKUP_LOCAL_COPY", "maybe"),
        dir.path(),
        &["dump"],
    )
    .expect(64);
    assert!(
        run.message().contains("BACKUP_LOCAL_COPY"),
        "{}",
        run.stdout
    );
}

/// A `pg_dump` that writes its whole output, then keeps its pipe open (its last line is
/// written when the run is killed): the dump is stopped mid-stream with parts at S3.
fn slow_pg_dump(real: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for tool in ["pg_dumpall", "psql", "pg_restore"] {
        std::os::unix::fs::symlink(real.join(tool), dir.join(tool)).unwrap();
    }
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in\n  *\"dbname='bulk'\"*) \"{}/pg_dump\" \"$@\" | head -c 16000000; exec sleep 120 ;;\n  *) exec \"{}/pg_dump\" \"$@\" ;;\nesac\n",
        real.display(),
        real.display()
    );
    let path = dir.join("pg_dump");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_dump_killed_mid_stream_leaves_no_manifest_and_no_upload() {
    let source = source_with_bulk(15);
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let bin = tempfile::tempdir().unwrap();
    slow_pg_dump(&source.bin(), &bin.path().join("bin"));
    let mut envs = direct(&source.env());
    envs.extend(s3.env(BUCKET, "killed"));
    envs = with(&envs, "S3_PART_SIZE", "5MiB");
    envs = with(&envs, "BACKUP_COMPRESSION_LEVEL", "1");
    let slow = with(
        &envs,
        "PG_BIN_DIR",
        &bin.path().join("bin").display().to_string(),
    );
    let dir = tempfile::tempdir().unwrap();
    let child = pgb_spawn(&slow, dir.path(), &["dump"]);
    wait_for(60, "a multipart upload of the bulk database", || {
        s3.multipart_uploads(BUCKET) > 0
    });
    // Let a part or two arrive before the signal.
    std::thread::sleep(std::time::Duration::from_millis(500));
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let run = parse_run(child.wait_with_output().unwrap());
    assert_eq!(run.code, 75, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.json["status"], "failed");
    assert_eq!(s3.multipart_uploads(BUCKET), 0, "the upload was aborted");
    assert!(
        s3.keys(BUCKET, "killed/").is_empty(),
        "nothing of the killed run is left at S3: {:?}",
        s3.keys(BUCKET, "killed/")
    );
    assert_only_the_lock(dir.path());

    // The next run makes a complete folder.
    let run = pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    let folder = run.json["folder"].as_str().unwrap();
    assert_files_match_the_manifest(&s3, "killed", folder);
    assert_eq!(s3.multipart_uploads(BUCKET), 0);
}

/// A relay to S3 that answers one kind of request with an error of its own: HTTP/1.1, one
/// request per connection (`Connection: close` both ways), everything else passed on.
struct FaultRelay {
    port: u16,
}

impl FaultRelay {
    /// Requests whose first line contains `needle` get `status` and an S3 error `code`.
    fn start(upstream: u16, needle: &'static str, status: u16, code: &'static str) -> FaultRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                std::thread::spawn(move || relay_one(client, upstream, needle, status, code));
            }
        });
        FaultRelay { port }
    }
}

fn relay_one(mut client: TcpStream, upstream: u16, needle: &str, status: u16, code: &str) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let length: usize = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    if client.read_exact(&mut body).is_err() {
        return;
    }
    if text.lines().next().unwrap_or("").contains(needle) {
        let xml =
            format!("<Error><Code>{code}</Code><Message>refused by the test</Message></Error>");
        let _ = write!(
            client,
            "HTTP/1.1 {status} Refused\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
            xml.len()
        );
        return;
    }
    let head: String = text
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let head = head.trim_end().to_string() + "\r\nConnection: close\r\n\r\n";
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    if server.write_all(head.as_bytes()).is_err() || server.write_all(&body).is_err() {
        return;
    }
    let _ = std::io::copy(&mut server, &mut client);
}

#[test]
fn s3_refusing_parts_fails_the_dump_with_no_manifest_and_no_upload() {
    let source = source_with_bulk(15);
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let relay = FaultRelay::start(s3.s3_port(), "partNumber=2", 403, "AccessDenied");
    let mut envs = direct(&source.env());
    envs.extend(s3.env(BUCKET, "refused"));
    envs = with(
        &envs,
        "S3_ENDPOINT",
        &format!("http://127.0.0.1:{}", relay.port),
    );
    envs = with(&envs, "S3_PART_SIZE", "5MiB");
    let dir = tempfile::tempdir().unwrap();
    let run = pgb_run(&envs, dir.path(), &["dump"]).expect(77);
    assert_eq!(run.json["status"], "failed");
    let failed = run.json["databases_failed"].to_string();
    assert!(failed.contains("bulk"), "the file is named: {}", run.stdout);
    assert!(failed.contains("part 2"), "{}", run.stdout);
    assert_eq!(s3.multipart_uploads(BUCKET), 0, "the upload was aborted");
    assert!(s3.keys(BUCKET, "refused/").is_empty());
    assert_only_the_lock(dir.path());
}

/// A file that outgrows its upload (`S3_MAX_PARTS` parts of the planned size) fails alone
/// and cleanly: its upload aborted, named in the JSON, the rest of the folder complete.
#[test]
fn a_file_that_outgrows_its_parts_fails_alone() {
    let source = source_with_bulk(15);
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let mut envs = direct(&source.env());
    envs.extend(s3.env(BUCKET, "outgrown"));
    envs = with(&envs, "S3_PART_SIZE", "5MiB");
    envs = with(&envs, "S3_MAX_PARTS", "2");
    let dir = tempfile::tempdir().unwrap();
    let run = pgb_run(&envs, dir.path(), &["dump"]);
    assert_eq!(run.json["status"], "partial", "{}", run.stdout);
    let failed = &run.json["databases_failed"];
    assert_eq!(failed[0]["database"], "bulk", "{}", run.stdout);
    assert!(
        failed[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("S3_PART_SIZE"),
        "{}",
        run.stdout
    );
    assert_eq!(s3.multipart_uploads(BUCKET), 0, "the upload was aborted");
    let folder = run.json["folder"].as_str().unwrap();
    let manifest = assert_files_match_the_manifest(&s3, "outgrown", folder);
    assert_eq!(manifest["status"], "partial");
    assert!(
        manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["database"] != "bulk")
    );
}

/// Two dumps without local copy that start together (two pods, two hosts: their locks are
/// not shared) never write into one folder: each complete folder is whole and verifies, and
/// neither run's clean-up removes the other's backup.
#[test]
fn two_direct_dumps_at_once_never_share_a_folder() {
    let source = PgServer::start(15);
    source.psql("postgres", "CREATE DATABASE \"MyApp\"");
    source.psql(
        "MyApp",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 20000) g",
    );
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let mut envs = direct(&source.env());
    envs.extend(s3.env(BUCKET, "race"));
    for round in 0..3 {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = pgb_spawn(&envs, a.path(), &["dump"]);
        let second = pgb_spawn(&envs, b.path(), &["dump"]);
        let runs = [
            parse_run(first.wait_with_output().unwrap()),
            parse_run(second.wait_with_output().unwrap()),
        ];
        let folders: Vec<String> = runs
            .iter()
            .map(|r| {
                assert_eq!(r.code, 0, "round {round}: {}\n{}", r.stdout, r.stderr);
                r.json["folder"].as_str().unwrap().to_string()
            })
            .collect();
        assert_ne!(folders[0], folders[1], "round {round}");
        for folder in &folders {
            let manifest = assert_files_match_the_manifest(&s3, "race", folder);
            assert_eq!(manifest["status"], "complete");
            pgb_run(&envs, a.path(), &["verify", folder]).expect(0);
        }
    }
}

/// Switching to `BACKUP_LOCAL_COPY=false` leaves no local backup behind: `ship` still sends
/// the local folders made before the switch.
#[test]
fn a_local_backup_from_before_the_switch_is_still_shipped() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let folder = folder_hours_ago(2);
    make_folder(dir.path(), &folder, &[("postgres_globals.sql.gz", 2_000)]);
    let mut envs = direct(&[]);
    envs.extend(s3.env(BUCKET, "switched"));
    let run = pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    assert!(
        run.json["note"]
            .as_str()
            .unwrap()
            .contains("1 local folder"),
        "{}",
        run.stdout
    );
    assert_eq!(run.json["destinations"][0]["shipped"], 1, "{}", run.stdout);
    assert_files_match_the_manifest(&s3, "switched", &folder);
}
