//! Encryption at rest: every file encrypted to age public keys while it streams, never a
//! plaintext byte on disk or at a destination, verifiable without the private key, restored
//! with it from local, S3 and remote; interoperable with the stock `age` tools; S3
//! server-side encryption and storage class on every upload.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::fixture::{self, nasty_names};
use common::s3::S3Server;
use common::ssh::SshServer;
use common::*;
use serde_json::Value;

const BUCKET: &str = "pg-backups-enc";

fn manifest(dir: &Path, folder: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(folder).join("manifest.json")).unwrap()).unwrap()
}

/// Dumps the fixture encrypted to `recipients` and ships it to S3 and the remote host.
struct Encrypted {
    source: PgServer,
    /// Kept running for the restores from S3 and the remote host.
    _s3: S3Server,
    _ssh: SshServer,
    dir: tempfile::TempDir,
    keys: tempfile::TempDir,
    folder: String,
    key: PathBuf,
    envs: Vec<(String, String)>,
}

fn encrypted_backup(version: u32) -> Encrypted {
    let source = PgServer::start(version);
    fixture::create(&source);
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let ssh = SshServer::start();
    let keys = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(keys.path(), "key.txt");
    let dir = tempfile::tempdir().unwrap();
    let mut envs = source.env();
    envs.extend(s3.env(BUCKET, "enc"));
    envs.extend(ssh.env());
    envs.push(("AGE_RECIPIENTS".into(), recipient));
    pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    // Without the private key: ship, list, check and a checksum verify all work.
    pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    let folder = folder_of(dir.path());
    Encrypted {
        source,
        _s3: s3,
        _ssh: ssh,
        dir,
        keys,
        folder,
        key,
        envs,
    }
}

fn round_trip(version: u32) {
    let e = encrypted_backup(version);
    let m = manifest(e.dir.path(), &e.folder);
    assert_eq!(m["encryption"]["scheme"], "age");
    assert_eq!(m["encryption"]["recipients"][0]["kind"], "x25519");
    for f in m["files"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        assert!(name.ends_with(".sql.gz.age"), "{f}");
        // content_sha256 is what the stock `age -d` writes, the cluster file's too.
        let out = Command::new("age")
            .args(["-d", "-i"])
            .arg(&e.key)
            .arg(e.dir.path().join(&e.folder).join(name))
            .output()
            .expect("age is not installed: run scripts/test.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let digest = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&out.stdout))
        };
        assert_eq!(f["content_sha256"].as_str(), Some(digest.as_str()), "{f}");
    }
    let run = pgb_run(&e.envs, e.dir.path(), &["verify", &e.folder]).expect(0);
    assert_eq!(run.json["content_checked"], false);
    assert!(
        run.json["note"]
            .as_str()
            .unwrap()
            .contains("AGE_IDENTITY_FILE")
    );
    pgb_run(&e.envs, e.dir.path(), &["list"]).expect(0);
    pgb_run(&e.envs, e.dir.path(), &["check"]).expect(0);
    let keyed = with(&e.envs, "AGE_IDENTITY_FILE", e.key.to_str().unwrap());
    for source in ["local", "s3", "remote"] {
        let run = pgb_run(
            &keyed,
            e.dir.path(),
            &["verify", &e.folder, "--source", source],
        )
        .expect(0);
        assert_eq!(run.json["content_checked"], true, "{source}");
    }

    // One database from each source, under its own name on a fresh server.
    let target = PgServer::start(version);
    let base = restore_env(
        &with(&keyed, "PGPORT", &target.port.to_string()),
        &[("RESTORE_FOLDER", &e.folder)],
    );
    pgb_run(
        &restore_env(
            &base,
            &[("RESTORE_SOURCE", "local"), ("RESTORE_TYPE", "globals")],
        ),
        e.dir.path(),
        &["restore"],
    )
    .expect(0);
    for (source, db) in [
        ("local", "my db"),
        ("s3", "Sales-2025"),
        ("remote", "O'Brien"),
    ] {
        let envs = restore_env(
            &base,
            &[
                ("RESTORE_SOURCE", source),
                ("RESTORE_TYPE", "database"),
                ("RESTORE_DATABASE", db),
            ],
        );
        let run = pgb_run(&envs, e.dir.path(), &["restore"]).expect(0);
        assert_eq!(run.json["errors"], 0, "{}", run.stdout);
        assert_same(
            &e.source.dump_normalized(db),
            &target.dump_normalized(db),
            &format!("{db} from {source}"),
        );
    }
    // The whole cluster, from S3, onto a fresh server.
    let fresh = PgServer::start(version);
    let envs = restore_env(
        &with(&keyed, "PGPORT", &fresh.port.to_string()),
        &[
            ("RESTORE_SOURCE", "s3"),
            ("RESTORE_FOLDER", &e.folder),
            ("RESTORE_TYPE", "cluster"),
        ],
    );
    pgb_run(&envs, e.dir.path(), &["restore"]).expect(0);
    assert_same(
        &e.source.dumpall_normalized(),
        &fresh.dumpall_normalized(),
        "an encrypted cluster file restored from S3",
    );
    drop(e.keys);
}

#[test]
fn an_encrypted_backup_round_trips_on_15() {
    round_trip(15);
}

#[test]
fn an_encrypted_backup_round_trips_on_17() {
    round_trip(17);
}

#[test]
fn keys_missing_wrong_or_files_damaged_are_refused_before_any_sql() {
    let source = PgServer::start(17);
    source.psql("postgres", "CREATE DATABASE app");
    source.psql("app", "CREATE TABLE t(x int); INSERT INTO t VALUES (1);");
    let keys = tempfile::tempdir().unwrap();
    let (_key, recipient) = age_keygen(keys.path(), "key.txt");
    let (other, _) = age_keygen(keys.path(), "other.txt");
    let dir = tempfile::tempdir().unwrap();
    let envs = with(&source.env(), "AGE_RECIPIENTS", &recipient);
    pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    let folder = folder_of(dir.path());
    source.psql("postgres", "DROP DATABASE app");
    let restore = restore_env(
        &envs,
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", &folder),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "app"),
        ],
    );
    let nothing_sent = || {
        source
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname = 'app'",
            )
            .trim()
            .to_string()
    };
    // No key: 78, naming the variable.
    let run = pgb_run(&restore, dir.path(), &["restore"]).expect(78);
    assert!(
        run.message().contains("AGE_IDENTITY_FILE"),
        "{}",
        run.message()
    );
    assert_eq!(nothing_sent(), "0");
    // The wrong key: 77, nothing sent.
    let wrong = with(&restore, "AGE_IDENTITY_FILE", other.to_str().unwrap());
    let run = pgb_run(&wrong, dir.path(), &["restore"]).expect(77);
    assert_eq!(run.json["error"]["kind"], "wrong_key");
    assert_eq!(nothing_sent(), "0");
    // A key file that is not one: 64, and its content never in the message.
    let junk = keys.path().join("junk.txt");
    std::fs::write(
        &junk,
        "AGE-SECRET-KEY-1NOTAKEYATALLBUTLONGENOUGHTOLOOKLIKEONE\n",
    )
    .unwrap();
    let run = pgb_run(
        &with(&restore, "AGE_IDENTITY_FILE", junk.to_str().unwrap()),
        dir.path(),
        &["restore"],
    )
    .expect(64);
    assert!(!run.stdout.contains("NOTAKEY") && !run.stderr.contains("NOTAKEY"));
    // A truncated .age file whose manifest matches it: 65, nothing sent.
    let file = dir.path().join(&folder).join("postgres_db_app.sql.gz.age");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 40]).unwrap();
    let mpath = dir.path().join(&folder).join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["name"] == "postgres_db_app.sql.gz.age" {
            f["bytes"] = (bytes.len() - 40).into();
            f["sha256"] = sha256_file(&file).into();
        }
    }
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let key = keys.path().join("key.txt");
    let keyed = with(&restore, "AGE_IDENTITY_FILE", key.to_str().unwrap());
    let run = pgb_run(&keyed, dir.path(), &["restore"]).expect(65);
    assert_eq!(
        run.json["error"]["kind"], "encryption_damaged",
        "{}",
        run.stdout
    );
    assert_eq!(nothing_sent(), "0");
    pgb_run(&keyed, dir.path(), &["verify", &folder]).expect(65);
    // A folder mixing encrypted and clear files was altered: 65, even without the key.
    let clear = dir.path().join(&folder).join("postgres_globals.sql.gz");
    let age = dir.path().join(&folder).join("postgres_globals.sql.gz.age");
    let out = Command::new("age")
        .args(["-d", "-i"])
        .arg(&key)
        .arg(&age)
        .output()
        .unwrap();
    std::fs::write(&clear, &out.stdout).unwrap();
    std::fs::remove_file(&age).unwrap();
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["name"] == "postgres_globals.sql.gz.age" {
            f["name"] = "postgres_globals.sql.gz".into();
            f["bytes"] = out.stdout.len().into();
            f["sha256"] = sha256_file(&clear).into();
        }
    }
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let run = pgb_run(&envs, dir.path(), &["verify", &folder]).expect(65);
    assert!(run.message().contains("encrypted"), "{}", run.message());
}

#[test]
fn ssh_keys_and_two_recipients_each_open_the_backup() {
    let source = PgServer::start(15);
    source.psql("postgres", "CREATE DATABASE app");
    source.psql(
        "app",
        "CREATE TABLE t(x int); INSERT INTO t SELECT generate_series(1, 50);",
    );
    let keys = tempfile::tempdir().unwrap();
    let (age_key, age_recipient) = age_keygen(keys.path(), "key.txt");
    let ssh_key = keys.path().join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&ssh_key)
        .status()
        .unwrap();
    assert!(status.success());
    let ssh_public = std::fs::read_to_string(ssh_key.with_extension("pub")).unwrap();
    // Both, in a recipients file as age writes one (comments, one per line).
    let recipients = keys.path().join("recipients.txt");
    std::fs::write(
        &recipients,
        format!("# ops\n{age_recipient}\n# break-glass\n{ssh_public}"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let envs = with(
        &source.env(),
        "AGE_RECIPIENTS_FILE",
        recipients.to_str().unwrap(),
    );
    pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    let folder = folder_of(dir.path());
    // A bad entry is blamed on the setting that holds it, before any work.
    let bad = keys.path().join("bad-recipients.txt");
    std::fs::write(&bad, "age1notakey\n").unwrap();
    let both = with(
        &with(&envs, "AGE_RECIPIENTS_FILE", bad.to_str().unwrap()),
        "AGE_RECIPIENTS",
        &age_recipient,
    );
    let run = pgb_run(&both, dir.path(), &["dump"]).expect(64);
    assert!(
        run.stderr.contains("AGE_RECIPIENTS_FILE: \"age1notakey\""),
        "{}",
        run.stderr
    );
    let m = manifest(dir.path(), &folder);
    let kinds: Vec<&str> = m["encryption"]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["x25519", "ssh-ed25519"]);
    // The fingerprint of the ssh key is what ssh-keygen -l says.
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(ssh_key.with_extension("pub"))
        .output()
        .unwrap();
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(
        listed.contains(
            m["encryption"]["recipients"][1]["fingerprint"]
                .as_str()
                .unwrap()
        ),
        "{listed}"
    );
    for key in [&age_key, &ssh_key] {
        source.psql("postgres", "DROP DATABASE IF EXISTS app");
        let restore = restore_env(
            &envs,
            &[
                ("RESTORE_SOURCE", "local"),
                ("RESTORE_FOLDER", &folder),
                ("RESTORE_TYPE", "database"),
                ("RESTORE_DATABASE", "app"),
                ("AGE_IDENTITY_FILE", key.to_str().unwrap()),
            ],
        );
        pgb_run(&restore, dir.path(), &["restore"]).expect(0);
        assert_eq!(source.psql("app", "SELECT count(*) FROM t").trim(), "50");
    }
}

#[test]
fn the_stock_age_tools_decrypt_what_pg_backups_wrote() {
    let source = PgServer::start(17);
    source.psql("postgres", "CREATE DATABASE app");
    source.psql(
        "app",
        "CREATE TABLE t(x text); INSERT INTO t VALUES ('from age');",
    );
    let keys = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(keys.path(), "key.txt");
    let dir = tempfile::tempdir().unwrap();
    let envs = with(&source.env(), "AGE_RECIPIENTS", &recipient);
    pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    let folder = dir.path().join(folder_of(dir.path()));
    source.psql("postgres", "DROP DATABASE app");
    // README: age -d -i key.txt postgres_db_app.sql.gz.age | gunzip -c | psql
    let mut age = Command::new("age")
        .args(["-d", "-i"])
        .arg(&key)
        .arg(folder.join("postgres_db_app.sql.gz.age"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut gunzip = Command::new("gunzip")
        .arg("-c")
        .stdin(age.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = source
        .client("psql")
        .args(["-X", "-q", "-d", "postgres"])
        .stdin(gunzip.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(age.wait().unwrap().success() && gunzip.wait().unwrap().success());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(source.psql("app", "SELECT x FROM t").trim(), "from age");
    // The cluster file is one age stream of one (multi-member) gzip stream.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i '{}' '{}' | gunzip -c | tail -c 200",
            key.display(),
            folder.join("postgres_cluster.sql.gz.age").display()
        ))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("cluster dump complete"));
}

/// Every file under `root` whose bytes, raw or decompressed, hold `marker`.
fn files_holding(root: &Path, marker: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(raw) = std::fs::read(&path) else {
                continue;
            };
            let mut texts = vec![raw.clone()];
            for (tool, args) in [("gzip", ["-dc"]), ("zstd", ["-dc"])] {
                let mut child = Command::new(tool)
                    .args(args)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let mut stdin = child.stdin.take().unwrap();
                let data = raw.clone();
                let writer = std::thread::spawn(move || {
                    use std::io::Write;
                    let _ = stdin.write_all(&data);
                });
                let out = child.wait_with_output().unwrap();
                let _ = writer.join();
                texts.push(out.stdout);
            }
            if texts
                .iter()
                .any(|t| t.windows(marker.len()).any(|w| w == marker.as_bytes()))
            {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn no_plaintext_byte_ever_reaches_the_disk() {
    let source = PgServer::start(17);
    let marker = "MARKER-7f3a9c-plaintext-never-on-disk";
    source.psql("postgres", "CREATE DATABASE marked");
    source.psql(
        "marked",
        &format!("CREATE TABLE t(x text); INSERT INTO t SELECT '{marker}' || g FROM generate_series(1, 20000) g;"),
    );
    source.psql(
        "postgres",
        &format!("CREATE TABLE public.also(x text); INSERT INTO public.also VALUES ('{marker}')"),
    );
    source.psql("postgres", "CREATE DATABASE blocked");
    source.psql("blocked", "CREATE TABLE t(x int)");
    let keys = tempfile::tempdir().unwrap();
    let (_key, recipient) = age_keygen(keys.path(), "key.txt");
    let tmp = tempfile::tempdir().unwrap();
    for (encrypted, expect_plaintext) in [(false, true), (true, false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut envs = with(&source.env(), "BACKUP_JOBS", "1");
        envs = with(&envs, "TMPDIR", tmp.path().to_str().unwrap());
        if encrypted {
            envs = with(&envs, "AGE_RECIPIENTS", &recipient);
        }
        // `marked` (the largest) is dumped first; `blocked` then waits on a lock, with the work
        // folder full of what the run wrote so far.
        let lock = TableLock::hold(&source, "blocked", "t");
        let child = pgb_spawn(&envs, dir.path(), &["dump"]);
        wait_for(60, "the dump to wait on the lock", || {
            source
                .psql(
                    "postgres",
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = 'blocked' AND application_name = 'pg-backups' AND wait_event_type = 'Lock'",
                )
                .trim()
                == "1"
        });
        let during = [
            files_holding(dir.path(), marker),
            files_holding(tmp.path(), marker),
        ]
        .concat();
        drop(lock);
        parse_run(child.wait_with_output().unwrap()).expect(0);
        let after = [
            files_holding(dir.path(), marker),
            files_holding(tmp.path(), marker),
        ]
        .concat();
        if expect_plaintext {
            assert!(
                !during.is_empty() && !after.is_empty(),
                "the check finds plaintext when there is some"
            );
        } else {
            assert!(during.is_empty(), "plaintext during the dump: {during:?}");
            assert!(after.is_empty(), "plaintext after the dump: {after:?}");
        }
    }
}

/// Request heads that create objects (single PUTs and CreateMultipartUpload), lowercased.
fn creating_requests(seen: &str) -> Vec<String> {
    seen.to_ascii_lowercase()
        .split("\r\n\r\n")
        .filter(|head| {
            let first = head
                .lines()
                .find(|l| l.starts_with("put ") || l.starts_with("post "))
                .unwrap_or("");
            (first.starts_with("put ") && !first.contains("partnumber="))
                || (first.starts_with("post ") && first.contains("?uploads"))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn s3_uploads_carry_the_storage_class_and_server_side_encryption() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let proxy = CaptureProxy::start(s3.s3_port());
    let through_proxy = with(
        &s3.env(BUCKET, ""),
        "S3_ENDPOINT",
        &format!("http://127.0.0.1:{}", proxy.port),
    );
    let envs = with(&through_proxy, "S3_PART_SIZE", "5MiB");

    // The storage class: SeaweedFS keeps it. Every object-creating request carries it (the
    // single PUTs and CreateMultipartUpload, whose parts inherit it) and the ship's own
    // checks (Content-MD5, the SHA-256 HEAD) hold.
    let dir = tempfile::tempdir().unwrap();
    make_folder(
        dir.path(),
        "20250101_000000",
        &[
            ("postgres_globals.sql.gz", 1000),
            ("postgres_db_big.sql.gz", 12 << 20),
        ],
    );
    let classed = with(&envs, "S3_STORAGE_CLASS", "STANDARD_IA");
    pgb_run(&classed, dir.path(), &["ship"]).expect(0);
    let creating = creating_requests(&proxy.text());
    assert!(
        creating.len() >= 3 && creating.iter().any(|h| h.contains("?uploads")),
        "{creating:?}"
    );
    for head in &creating {
        assert!(head.contains("x-amz-storage-class: standard_ia"), "{head}");
    }
    let class = s3
        .rt
        .block_on(
            s3.client()
                .head_object()
                .bucket(BUCKET)
                .key("20250101_000000/postgres_db_big.sql.gz")
                .send(),
        )
        .unwrap();
    assert_eq!(
        class.storage_class().map(|c| c.as_str()),
        Some("STANDARD_IA")
    );

    // SSE-S3 (AES256): SeaweedFS encrypts under the key the harness gives it
    // (WEED_S3_SSE_KEK) and says so on HEAD. A multipart upload and a single PUT both carry
    // the header, the ship's own checks hold (they never rest on the ETag), and the bytes
    // read back are the bytes shipped.
    for (folder, files) in [
        (
            "20250102_000000",
            vec![("postgres_db_big.sql.gz", 12 << 20)],
        ),
        // Longer than the first folder's file of the same seed: its tail is its own.
        ("20250103_000000", vec![("postgres_globals.sql.gz", 2000)]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        make_folder(dir.path(), folder, &files);
        let before = proxy.text().len();
        pgb_run(&with(&envs, "S3_SSE", "AES256"), dir.path(), &["ship"]).expect(0);
        let heads = creating_requests(&proxy.text()[before..]);
        assert!(!heads.is_empty());
        for head in &heads {
            assert!(
                head.contains("x-amz-server-side-encryption: aes256"),
                "{head}"
            );
        }
        let (name, _) = files[0];
        let key = format!("{folder}/{name}");
        let stored = s3
            .rt
            .block_on(s3.client().head_object().bucket(BUCKET).key(&key).send())
            .unwrap();
        assert_eq!(
            stored.server_side_encryption().map(|e| e.as_str()),
            Some("AES256"),
            "{key}"
        );
        let shipped = std::fs::read(dir.path().join(folder).join(name)).unwrap();
        assert!(
            s3.get(BUCKET, &key) == shipped,
            "{key} reads back as shipped"
        );
        assert!(
            !s3.keeps_in_clear(&shipped[shipped.len() - 64..]),
            "{key} is stored encrypted"
        );
    }
    // The search above can find what is kept in clear: the first folder, shipped without S3_SSE.
    let clear = std::fs::read(dir.path().join("20250101_000000/postgres_globals.sql.gz")).unwrap();
    assert!(s3.keeps_in_clear(&clear[clear.len() - 64..]));
    // SSE-KMS with a key id: both headers.
    let dir = tempfile::tempdir().unwrap();
    make_folder(
        dir.path(),
        "20250104_000000",
        &[("postgres_globals.sql.gz", 1000)],
    );
    let kms = with(
        &with(&envs, "S3_SSE", "aws:kms"),
        "S3_SSE_KMS_KEY_ID",
        "arn:aws:kms:eu-west-1:111122223333:key/test",
    );
    let before = proxy.text().len();
    // SeaweedFS has no KMS provider here: it refuses, and the refusal is reported, never
    // ignored; what reached it is checked through the capture proxy.
    let run = pgb_run(&kms, dir.path(), &["ship"]);
    assert_eq!(run.code, 69, "SeaweedFS has no KMS here: {}", run.stdout);
    let heads = creating_requests(&proxy.text()[before..]);
    assert!(heads.iter().all(|h| h.contains("x-amz-server-side-encryption: aws:kms")
        && h.contains("x-amz-server-side-encryption-aws-kms-key-id: arn:aws:kms:eu-west-1:111122223333:key/test")));
    // A KMS key without aws:kms is a conflict; an unknown scheme is refused.
    pgb_run(
        &with(&envs, "S3_SSE_KMS_KEY_ID", "k"),
        dir.path(),
        &["ship"],
    )
    .expect(64);
    pgb_run(&with(&envs, "S3_SSE", "rot13"), dir.path(), &["ship"]).expect(64);
}

#[test]
fn encrypted_backups_need_no_key_to_ship_prune_or_check() {
    let keys = tempfile::tempdir().unwrap();
    let (_key, recipient) = age_keygen(keys.path(), "key.txt");
    let source = PgServer::start(15);
    source.psql("postgres", "CREATE DATABASE app");
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let mut envs = with(&source.env(), "AGE_RECIPIENTS", &recipient);
    envs.extend(s3.env(BUCKET, ""));
    pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    pgb_run(&envs, dir.path(), &["prune"]).expect(0);
    pgb_run(&envs, dir.path(), &["check"]).expect(0);
    let list = pgb_run(&envs, dir.path(), &["list", "--source", "s3"]).expect(0);
    assert_eq!(list.json["sources"][0]["complete"], 1);
    for key in s3.keys(BUCKET, "") {
        let name = key.0.rsplit('/').next().unwrap();
        assert!(
            name == "manifest.json" || name.ends_with(".age"),
            "{name} is not encrypted"
        );
    }
    let _ = nasty_names();
}
