//! `verify` and `restore` against real servers: integrity checks that catch every kind of
//! damage, restores that refuse surprises, and the fidelity matrix 15→15, 17→17, 15→17.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::fixture::{self, LONG_NAME, nasty_names};
use common::s3::S3Server;
use common::ssh::SshServer;
use common::*;
use serde_json::Value;

const BUCKET: &str = "pg-backups-test";

/// Dumps of the same data from servers of different versions differ in their headers.
fn normalize_versions(text: &str) -> String {
    text.lines()
        .filter(|l| {
            !l.starts_with("-- Dumped from database version")
                && !l.starts_with("-- Dumped by pg_dump version")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn dumped(version: u32) -> (PgServer, tempfile::TempDir, String) {
    let source = PgServer::start(version);
    fixture::create(&source);
    let dir = tempfile::tempdir().unwrap();
    pgb_run(&source.env(), dir.path(), &["dump"]).expect(0);
    let folder = only_folder(dir.path())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    (source, dir, folder)
}

#[test]
fn verify_passes_a_good_folder_and_names_the_damaged_file() {
    let (_source, dir, folder) = dumped(17);
    let run = pgb_run(&[], dir.path(), &["verify", &folder]).expect(0);
    assert!(
        run.json["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["ok"] == true)
    );
    let latest = pgb_run(&[], dir.path(), &["verify"]).expect(0);
    assert_eq!(latest.json["folder"], folder.as_str());

    // A flipped byte: 65, and the file is named.
    let victim = dir
        .path()
        .join(&folder)
        .join(pg_backups::backup::database_file_name("my db"));
    let good = std::fs::read(&victim).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x10;
    std::fs::write(&victim, &bad).unwrap();
    let run = pgb_run(&[], dir.path(), &["verify", &folder]).expect(65);
    assert!(
        run.message().contains("postgres_db_my%20db.sql.gz"),
        "{}",
        run.message()
    );
    assert_eq!(run.json["error"]["kind"], "checksum_mismatch");
    std::fs::write(&victim, &good).unwrap();

    // Truncated SQL that is still valid gzip, with a manifest that matches it: caught by the
    // completion line.
    truncate_dump_keeping_manifest_consistent(
        &dir.path().join(&folder),
        "postgres_db_Sales-2025.sql.gz",
    );
    let run = pgb_run(&[], dir.path(), &["verify", &folder]).expect(65);
    assert_eq!(
        run.json["error"]["kind"], "dump_truncated",
        "{}",
        run.stdout
    );

    pgb_run(&[], dir.path(), &["verify", "20990101_000000"]).expect(66);
    pgb_run(&[], dir.path(), &["verify", "../x"]).expect(64);
}

/// Re-compresses the first half of a dump's SQL and rewrites the manifest to match, as a
/// dump that was cut short but "succeeded" would look.
fn truncate_dump_keeping_manifest_consistent(folder: &Path, file: &str) {
    use std::io::Write;
    let path = folder.join(file);
    let sql = gunzip_text(&path);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(&sql.as_bytes()[..sql.len() / 2]).unwrap();
    let gz = enc.finish().unwrap();
    std::fs::write(&path, &gz).unwrap();
    let mpath = folder.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["name"] == file {
            f["bytes"] = gz.len().into();
            f["sha256"] = sha256_file(&path).into();
        }
    }
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

#[test]
fn restore_test_restores_every_database_into_scratch_and_drops_it() {
    let (source, dir, folder) = dumped(17);
    let run = pgb_run(
        &source.env(),
        dir.path(),
        &["verify", &folder, "--restore-test"],
    )
    .expect(0);
    let tests = run.json["restore_test"].as_array().unwrap();
    assert_eq!(tests.len(), nasty_names().len() + 1);
    let my_db = tests.iter().find(|t| t["database"] == "my db").unwrap();
    assert_eq!(my_db["tables"], 1);
    assert_eq!(my_db["rows"], 500);
    assert_eq!(my_db["errors"], 0, "{}", run.stdout);
    let sales = tests
        .iter()
        .find(|t| t["database"] == "Sales-2025")
        .unwrap();
    assert_eq!(sales["rows"], 4);
    let left = source.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'pgb_verify_%'",
    );
    assert_eq!(left.trim(), "0", "scratch databases are dropped");
}

#[test]
fn verify_streams_from_s3_without_staging() {
    let (source, dir, folder) = dumped(17);
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let mut envs = source.env();
    envs.extend(s3.env(BUCKET, "x"));
    pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    let run = pgb_run(&envs, dir.path(), &["verify", "latest", "--source", "s3"]).expect(0);
    assert_eq!(run.json["folder"], folder.as_str());
    // Damage the copy at S3 only: verify of S3 fails, local still passes.
    let key = format!("x/{folder}/postgres_globals.sql.gz");
    let mut body = s3.get(BUCKET, &key);
    body[20] ^= 1;
    s3.put(BUCKET, &key, &body);
    pgb_run(&envs, dir.path(), &["verify", &folder, "--source", "s3"]).expect(65);
    pgb_run(&envs, dir.path(), &["verify", &folder]).expect(0);
}

#[test]
fn database_restore_under_another_name_keeps_its_properties() {
    let (source, dir, _folder) = dumped(17);
    let envs = restore_env(
        &source.env(),
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", "latest"),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "my db"),
            ("RESTORE_TARGET_DATABASE", "my db (restored)"),
        ],
    );
    let run = pgb_run(&envs, dir.path(), &["restore"]).expect(0);
    assert_eq!(run.json["errors"], 0, "{}", run.stdout);
    assert_eq!(run.json["target_database"], "my db (restored)");
    let props = |db: &str| {
        source.psql(
            "postgres",
            &format!(
                "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype,
                        shobj_description(oid, 'pg_database'), has_database_privilege('readers', oid, 'CONNECT')
                 FROM pg_database WHERE datname = '{}'",
                db.replace('\'', "''")
            ),
        )
    };
    assert_eq!(props("my db"), props("my db (restored)"));
    assert_eq!(
        fixture::row_count(&source, "my db (restored)", "app.items"),
        500
    );
    let original = source.dump_normalized("my db");
    let copy = source.dump_normalized("my db (restored)");
    assert_same(
        &original.replace("my db", "NAME"),
        &copy.replace("my db (restored)", "NAME"),
        "the renamed copy differs from the original beyond its name",
    );
    // Settings and per-role settings follow the new name too.
    let settings = restore_env(
        &envs,
        &[
            ("RESTORE_DATABASE", "Sales-2025"),
            ("RESTORE_TARGET_DATABASE", "sales_copy"),
        ],
    );
    pgb_run(&settings, dir.path(), &["restore"]).expect(0);
    let config = source.psql(
        "postgres",
        "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = 'sales_copy' ORDER BY 1",
    );
    assert!(config.contains("work_mem=16MB"), "{config}");
    assert!(config.contains("search_path=sales, public"), "{config}");
}

#[test]
fn restore_never_overwrites_without_consent() {
    let (source, dir, _folder) = dumped(17);
    source.psql(
        "O'Brien",
        "INSERT INTO public.people VALUES ('added after the backup')",
    );
    let envs = restore_env(
        &source.env(),
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", "latest"),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "O'Brien"),
        ],
    );
    let run = pgb_run(&envs, dir.path(), &["restore"]).expect(73);
    assert!(
        run.message().contains("RESTORE_DROP_EXISTING=true"),
        "{}",
        run.message()
    );
    assert_eq!(
        fixture::row_count(&source, "O'Brien", "public.people"),
        3,
        "untouched"
    );

    let run = pgb_run(
        &with(&envs, "RESTORE_DROP_EXISTING", "true"),
        dir.path(),
        &["restore"],
    )
    .expect(0);
    assert_eq!(run.json["dropped"], serde_json::json!(["O'Brien"]));
    assert_eq!(
        fixture::row_count(&source, "O'Brien", "public.people"),
        2,
        "replaced"
    );

    // A cluster restore onto a server that holds the backup's databases needs the same consent.
    let cluster = restore_env(
        &envs,
        &[
            ("RESTORE_TYPE", "cluster"),
            ("RESTORE_DROP_EXISTING", "false"),
        ],
    );
    let run = pgb_run(&cluster, dir.path(), &["restore"]).expect(73);
    assert!(run.message().contains("my db"), "{}", run.message());
}

#[test]
fn bad_restore_inputs_have_their_exit_codes() {
    let (source, dir, folder) = dumped(17);
    let base = restore_env(
        &source.env(),
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", &folder),
            ("RESTORE_TYPE", "database"),
        ],
    );
    let run = pgb_run(
        &with(&base, "RESTORE_DATABASE", "nope"),
        dir.path(),
        &["restore"],
    )
    .expect(66);
    assert!(
        run.message().contains("\"my db\""),
        "lists what is there: {}",
        run.message()
    );
    pgb_run(
        &restore_env(
            &base,
            &[
                ("RESTORE_FOLDER", "20990101_000000"),
                ("RESTORE_DATABASE", "my db"),
            ],
        ),
        dir.path(),
        &["restore"],
    )
    .expect(66);
    for bad in ["../x", "latest;rm"] {
        let run = pgb_run(
            &restore_env(
                &base,
                &[("RESTORE_FOLDER", bad), ("RESTORE_DATABASE", "my db")],
            ),
            dir.path(),
            &["restore"],
        )
        .expect(64);
        assert!(run.message().contains("RESTORE_FOLDER"));
    }
    let run = pgb_run(
        &with(&base, "RESTORE_TYPE", "everything"),
        dir.path(),
        &["restore"],
    )
    .expect(64);
    assert!(run.message().contains("RESTORE_TYPE"));
    // No terminal: a missing input is 64 naming the variable.
    let run = pgb_run(
        &without(&base, "RESTORE_DATABASE"),
        dir.path(),
        &["restore"],
    )
    .expect(64);
    assert!(
        run.message().contains("RESTORE_DATABASE"),
        "{}",
        run.message()
    );
    let run = pgb_run(&without(&base, "RESTORE_SOURCE"), dir.path(), &["restore"]).expect(64);
    assert!(run.message().contains("RESTORE_SOURCE"));

    let with_db = with(&base, "RESTORE_DATABASE", "my db");
    let run = pgb_run(
        &with(&with_db, "PGPORT", &free_port().to_string()),
        dir.path(),
        &["restore"],
    )
    .expect(69);
    assert!(run.message().contains("PGHOST"));
    pgb_run(
        &with(&with_db, "PGPASSWORD", "wrong"),
        dir.path(),
        &["restore"],
    )
    .expect(77);
}

#[test]
fn a_damaged_file_is_refused_before_any_sql_reaches_the_server() {
    let (source, dir, folder) = dumped(17);
    let target = PgServer::start(17);
    let file = dir
        .path()
        .join(&folder)
        .join(pg_backups::backup::database_file_name("données"));
    let mut bytes = std::fs::read(&file).unwrap();
    let len = bytes.len();
    bytes[len - 12] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let envs = restore_env(
        &target.env(),
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", &folder),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "données"),
        ],
    );
    let run = pgb_run(&envs, dir.path(), &["restore"]).expect(65);
    assert!(run.message().contains("SHA-256"), "{}", run.message());
    let exists = target.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = 'données'",
    );
    assert_eq!(exists.trim(), "0", "nothing was sent to the server");

    truncate_dump_keeping_manifest_consistent(
        &dir.path().join(&folder),
        "postgres_db_O%27Brien.sql.gz",
    );
    let run = pgb_run(
        &with(&envs, "RESTORE_DATABASE", "O'Brien"),
        dir.path(),
        &["restore"],
    )
    .expect(65);
    assert_eq!(run.json["error"]["kind"], "dump_truncated");
    drop(source);
}

#[test]
fn sql_errors_fail_the_restore_with_65_and_are_listed() {
    let (source, dir, folder) = dumped(17);
    let target = PgServer::start(17);
    // Without the globals, the owners and grantees do not exist: real SQL errors.
    let envs = restore_env(
        &target.env(),
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", &folder),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "my db"),
        ],
    );
    let run = pgb_run(&envs, dir.path(), &["restore"]).expect(65);
    assert!(run.json["errors"].as_u64().unwrap() > 0);
    assert!(
        run.json["first_errors"][0]
            .as_str()
            .unwrap()
            .contains("app_owner"),
        "{}",
        run.stdout
    );
    drop(source);
}

/// Pipes `from`'s stdout into `to`'s stdin and checks both succeeded.
fn pipe(mut from: std::process::Command, mut to: std::process::Command) {
    let mut producer = from.stdout(Stdio::piped()).spawn().unwrap();
    let out = to.stdin(producer.stdout.take().unwrap()).output().unwrap();
    assert!(producer.wait().unwrap().success());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the manual upgrade path gives: the source's own pg_dumpall -g and pg_dump --create
/// of each database, piped into psql of a fresh server of the target version. A restore
/// across versions is compared with this, because each server version deparses some
/// definitions (views) in its own way.
fn manual_upgrade(source: &PgServer, to: u32) -> PgServer {
    let reference = PgServer::start(to);
    let psql = || {
        let mut c = reference.client("psql");
        c.args(["-X", "-q", "-d", "postgres"]);
        c
    };
    let mut globals = source.client("pg_dumpall");
    globals.arg("--globals-only");
    pipe(globals, psql());
    for db in nasty_names() {
        let mut dump = source.client("pg_dump");
        dump.arg("--create")
            .arg(format!("--dbname={}", conninfo(db)));
        pipe(dump, psql());
    }
    let mut dump = source.client("pg_dump");
    dump.arg("--dbname=postgres");
    pipe(dump, psql());
    reference
}

fn fidelity(from: u32, to: u32) {
    let (source, dir, folder) = dumped(from);
    let reference = (from != to).then(|| manual_upgrade(&source, to));
    let expected = |db: &str| {
        normalize_versions(
            &reference
                .as_ref()
                .unwrap_or(&source)
                .dump_normalized_by(to, db),
        )
    };
    let target = PgServer::start(to);
    let base = restore_env(
        &target.env(),
        &[("RESTORE_SOURCE", "local"), ("RESTORE_FOLDER", &folder)],
    );
    // Globals, then every database by its real name, one of them renamed.
    let run = pgb_run(
        &with(&base, "RESTORE_TYPE", "globals"),
        dir.path(),
        &["restore"],
    )
    .expect(0);
    assert_eq!(
        run.json["tolerated"], 1,
        "role postgres already exists: {}",
        run.stdout
    );
    for db in nasty_names() {
        let envs = restore_env(
            &base,
            &[("RESTORE_TYPE", "database"), ("RESTORE_DATABASE", db)],
        );
        pgb_run(&envs, dir.path(), &["restore"]).expect(0);
        // One pg_dump (the newer) reads both servers, so only the data can differ.
        assert_same(
            &expected(db),
            &normalize_versions(&target.dump_normalized_by(to, db)),
            &format!("{db}: {from} -> {to}"),
        );
    }
    let envs = restore_env(
        &base,
        &[
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", LONG_NAME),
            ("RESTORE_TARGET_DATABASE", "renamed"),
        ],
    );
    pgb_run(&envs, dir.path(), &["restore"]).expect(0);
    assert_eq!(fixture::row_count(&target, "renamed", "public.t"), 100);

    // The whole cluster onto a fresh server.
    let fresh = PgServer::start(to);
    let envs = restore_env(
        &fresh.env(),
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", "latest"),
            ("RESTORE_TYPE", "cluster"),
        ],
    );
    let run = pgb_run(&envs, dir.path(), &["restore"]).expect(0);
    assert!(run.json["tolerated"].as_u64().unwrap() >= 1);
    for db in nasty_names().into_iter().chain(["postgres"]) {
        assert_same(
            &expected(db),
            &normalize_versions(&fresh.dump_normalized_by(to, db)),
            &format!("{db} after a cluster restore {from} -> {to}"),
        );
    }
    assert_eq!(
        fixture::row_count(&fresh, "template1", "public.in_template1"),
        1
    );
    if from == to {
        assert_same(
            &source.dumpall_normalized(),
            &fresh.dumpall_normalized(),
            "pg_dumpall after a cluster restore",
        );
    }
}

#[test]
fn fidelity_15_to_15() {
    fidelity(15, 15);
}

#[test]
fn fidelity_17_to_17() {
    fidelity(17, 17);
}

/// The upgrade path: a backup of an older server restored into the newer image's server.
#[test]
fn fidelity_15_to_17() {
    fidelity(15, 17);
}

#[test]
fn fidelity_18_to_18() {
    fidelity(18, 18);
}

#[test]
fn fidelity_15_to_18() {
    fidelity(15, 18);
}

#[test]
fn fidelity_17_to_18() {
    fidelity(17, 18);
}

/// Exactly what the 17 image does against a PostgreSQL 15 server: pg_dump 17 dumps it (its
/// files start with `SET transaction_timeout = 0;`, which 15 does not know), and psql 17
/// restores into a fresh 15: the cluster, one database under another name, a restore test.
#[test]
fn fidelity_15_with_the_17_tools() {
    let source = PgServer::start(15);
    fixture::create(&source);
    let tools17 = pg_bin(17).display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let run = pgb_run(
        &with(&source.env(), "PG_BIN_DIR", &tools17),
        dir.path(),
        &["dump"],
    )
    .expect(0);
    assert!(
        run.json["pg_dump_version"]
            .as_str()
            .unwrap()
            .starts_with("17")
    );
    let folder = only_folder(dir.path())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let cluster = gunzip_text(&dir.path().join(&folder).join("postgres_cluster.sql.gz"));
    assert!(cluster.contains("SET transaction_timeout = 0;"));

    let fresh = PgServer::start(15);
    let envs = restore_env(
        &with(&fresh.env(), "PG_BIN_DIR", &tools17),
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", &folder),
            ("RESTORE_TYPE", "cluster"),
        ],
    );
    let run = pgb_run(&envs, dir.path(), &["restore"]).expect(0);
    assert_eq!(run.json["errors"], 0, "{}", run.stdout);
    assert!(run.json["psql_version"].as_str().unwrap().starts_with("17"));
    assert!(
        run.json["tolerated_examples"]
            .to_string()
            .contains("transaction_timeout"),
        "{}",
        run.stdout
    );
    assert_same(
        &source.dumpall_normalized(),
        &fresh.dumpall_normalized(),
        "pg_dumpall of the source and of the cluster restored with the 17 tools",
    );
    // One database under another name.
    let envs = restore_env(
        &envs,
        &[
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "my db"),
            ("RESTORE_TARGET_DATABASE", "my db copy"),
        ],
    );
    let run = pgb_run(&envs, dir.path(), &["restore"]).expect(0);
    assert_eq!(run.json["errors"], 0, "{}", run.stdout);
    assert_same(
        &source.dump_normalized("my db").replace("my db", "NAME"),
        &fresh
            .dump_normalized("my db copy")
            .replace("my db copy", "NAME"),
        "a database restored under another name by the 17 tools",
    );
    // And the restore test, as monitoring would run it with the 17 image.
    let run = pgb_run(
        &with(&fresh.env(), "PG_BIN_DIR", &tools17),
        dir.path(),
        &["verify", &folder, "--restore-test"],
    )
    .expect(0);
    for t in run.json["restore_test"].as_array().unwrap() {
        assert_eq!(t["errors"], 0, "{t}");
    }
}

/// Anything else an older server rejects is still an error: a 17 dump of a table with a
/// 17-only feature fails on 15.
#[test]
fn only_newer_session_settings_are_tolerated_on_an_older_server() {
    let source = PgServer::start(17);
    source.psql("postgres", "CREATE DATABASE app");
    // MAINTAIN is a privilege PostgreSQL 17 introduced.
    source.psql(
        "app",
        "CREATE TABLE t(x int); CREATE ROLE maint; GRANT MAINTAIN ON t TO maint;",
    );
    let dir = tempfile::tempdir().unwrap();
    pgb_run(&source.env(), dir.path(), &["dump"]).expect(0);
    let older = PgServer::start(15);
    older.psql("postgres", "CREATE ROLE maint");
    let envs = restore_env(
        &with(
            &older.env(),
            "PG_BIN_DIR",
            &pg_bin(17).display().to_string(),
        ),
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", "latest"),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "app"),
        ],
    );
    let run = pgb_run(&envs, dir.path(), &["restore"]).expect(65);
    // Both session headers of a --create dump (before and after its \connect) set it.
    assert_eq!(
        run.json["tolerated"], 2,
        "transaction_timeout: {}",
        run.stdout
    );
    assert_eq!(run.json["errors"], 1, "{}", run.stdout);
    assert!(
        run.json["first_errors"].to_string().contains("maintain"),
        "{}",
        run.stdout
    );
}

#[test]
fn restore_from_s3_stages_checks_and_cleans_up() {
    let (source, dir, folder) = dumped(17);
    let mut s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let target = PgServer::start(17);
    let mut envs = source.env();
    envs.extend(s3.env(BUCKET, ""));
    pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    let staging = tempfile::tempdir().unwrap();
    let mut tenvs = target.env();
    tenvs.extend(s3.env(BUCKET, ""));
    let tenvs = restore_env(
        &tenvs,
        &[
            ("RESTORE_SOURCE", "s3"),
            ("RESTORE_FOLDER", &folder),
            ("RESTORE_TYPE", "globals"),
            ("RESTORE_DIR", staging.path().to_str().unwrap()),
        ],
    );
    let empty = tempfile::tempdir().unwrap();
    let run = pgb_run(&tenvs, empty.path(), &["restore"]).expect(0);
    assert_eq!(run.json["staged"], true);
    assert_eq!(
        std::fs::read_dir(staging.path()).unwrap().count(),
        0,
        "staging removed"
    );
    let roles = target.psql(
        "postgres",
        "SELECT count(*) FROM pg_roles WHERE rolname = 'app_owner'",
    );
    assert_eq!(roles.trim(), "1");

    // A staging folder on a full disk: 74, and nothing left behind.
    let small = staging.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8k", "tmpfs"])
        .arg(&small)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let full = restore_env(
        &tenvs,
        &[
            ("RESTORE_TYPE", "cluster"),
            ("RESTORE_DIR", small.to_str().unwrap()),
        ],
    );
    let mut cmd = pgb(&full);
    cmd.env("BACKUP_DIR", empty.path()).arg("restore");
    if !mounted {
        // No tmpfs here: a file-size limit makes the staging write fail the same way.
        eprintln!("cannot mount a tmpfs here: using a file-size limit instead");
        limit_file_size(&mut cmd, 8192);
    }
    let run = common::run(cmd).expect(74);
    assert!(
        run.message().contains("No space left") || run.message().contains("File too large"),
        "{}",
        run.message()
    );
    assert_eq!(std::fs::read_dir(&small).unwrap().count(), 0);
    if mounted {
        let _ = std::process::Command::new("umount").arg(&small).status();
    }

    // S3 down: 69, staging cleaned.
    s3.kill();
    let run = pgb_run(
        &with(&tenvs, "RESTORE_TYPE", "cluster"),
        empty.path(),
        &["restore"],
    )
    .expect(69);
    assert!(run.message().contains("S3_ENDPOINT"), "{}", run.message());
    assert_eq!(
        std::fs::read_dir(staging.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "small")
            .count(),
        0
    );
}

#[test]
fn sigterm_during_a_restore_stops_psql_and_reports_failed() {
    let source = PgServer::start(17);
    source.psql("postgres", "CREATE DATABASE big");
    source.psql(
        "big",
        "CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 1500000) g",
    );
    let dir = tempfile::tempdir().unwrap();
    pgb_run(&source.env(), dir.path(), &["dump"]).expect(0);
    let target = PgServer::start(17);
    let envs = restore_env(
        &target.env(),
        &[
            ("RESTORE_SOURCE", "local"),
            ("RESTORE_FOLDER", "latest"),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "big"),
        ],
    );
    let child = pgb_spawn(&envs, dir.path(), &["restore"]);
    let pid = child.id();
    let psql_children = || {
        let out = std::process::Command::new("pgrep")
            .args(["-P", &pid.to_string(), "psql"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    wait_for(60, "psql to start restoring", || {
        !psql_children().is_empty()
            && target
                .psql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = 'big' AND query ILIKE 'COPY%'")
                .trim()
                == "1"
    });
    let psql_pid = psql_children();
    // SAFETY: signalling a child we spawned.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let run = parse_run(child.wait_with_output().unwrap());
    assert_eq!(run.json["status"], "failed", "{}", run.stdout);
    assert_eq!(run.json["error"]["kind"], "interrupted");
    assert_ne!(run.code, 0);
    assert!(
        !Path::new(&format!("/proc/{psql_pid}")).exists(),
        "psql ({psql_pid}) was left running"
    );
}

#[test]
fn the_prompts_walk_through_a_restore_on_a_terminal() {
    let (source, dir, folder) = dumped(17);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pg-backups"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .env("BACKUP_DIR", dir.path())
        .envs(source.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .arg("restore");
    let mut p = rexpect::session::spawn_command(cmd, Some(30_000)).unwrap();
    p.exp_string("Restore from").unwrap();
    p.send_line("").unwrap(); // local
    p.exp_string("Backup folder").unwrap();
    p.exp_string(&folder).unwrap();
    p.send_line("").unwrap(); // newest
    p.exp_string("What to restore").unwrap();
    p.send_line("").unwrap(); // database
    p.exp_string("Database").unwrap();
    p.send("O'Br").unwrap(); // filter the list
    p.send_line("").unwrap();
    p.exp_string("already exists").unwrap();
    p.send_line("O'Brien").unwrap(); // consent by typing the name
    p.exp_string("Restore database").unwrap();
    p.send_line("y").unwrap();
    let out = p.exp_eof().unwrap();
    // A person at a terminal: the result as text, with a progress bar while it restored.
    assert!(
        out.contains("restoring postgres_db_O%27Brien.sql.gz"),
        "no progress:\n{out}"
    );
    assert!(out.contains("restored database O'Brien from"), "{out}");
    assert!(out.contains("replaced: O'Brien"), "{out}");
    assert!(out.contains("restore ok in"), "{out}");
    assert!(!out.contains("{\"command\""), "JSON on a terminal:\n{out}");
}

/// A big, valid database file (gzip of SQL ending with pg_dump's completion line) in a
/// hand-made folder, for cases that need a download to take a while.
fn big_valid_folder(root: &Path, name: &str, sql_mb: usize) {
    use std::io::Write;
    let dir = root.join(name);
    let file = "postgres_db_big.sql.gz";
    make_folder(root, name, &[("postgres_globals.sql.gz", 100), (file, 10)]);
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(dir.join(file)).unwrap(),
        flate2::Compression::new(1),
    );
    let chunk = noise(1 << 20, 7);
    for _ in 0..sql_mb {
        enc.write_all(hex::encode(&chunk[..512 * 1024]).as_bytes())
            .unwrap();
    }
    enc.write_all(b"\n--\n-- PostgreSQL database dump complete\n--\n\n")
        .unwrap();
    enc.finish().unwrap();
    let mpath = dir.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["name"] == file {
            f["bytes"] = std::fs::metadata(dir.join(file)).unwrap().len().into();
            f["sha256"] = sha256_file(&dir.join(file)).into();
            f["database"] = "big".into();
        }
    }
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// Restores the big database of a shipped folder from `source`, cuts the source off once the
/// download is under way, and checks: 69, the staging folder removed, nothing sent to the server.
fn restore_cut_off_during_staging(
    source_envs: &[(String, String)],
    source: &str,
    cut: impl FnOnce(),
) -> Run {
    let target = PgServer::start(17);
    let staging = tempfile::tempdir().unwrap();
    let mut envs = target.env();
    envs.extend(source_envs.iter().cloned());
    let envs = restore_env(
        &envs,
        &[
            ("RESTORE_SOURCE", source),
            ("RESTORE_FOLDER", "20250101_000000"),
            ("RESTORE_TYPE", "database"),
            ("RESTORE_DATABASE", "big"),
            ("RESTORE_DIR", staging.path().to_str().unwrap()),
        ],
    );
    let empty = tempfile::tempdir().unwrap();
    let child = pgb_spawn(&envs, empty.path(), &["restore"]);
    wait_for(60, "the download to start", || {
        walk_sizes(staging.path()) > 1 << 20
    });
    cut();
    let run = parse_run(child.wait_with_output().unwrap());
    assert_eq!(run.code, 69, "{}", run.stdout);
    assert_eq!(
        std::fs::read_dir(staging.path()).unwrap().count(),
        0,
        "the staging folder is removed"
    );
    let exists = target.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = 'big'",
    );
    assert_eq!(exists.trim(), "0", "nothing reached the server");
    run
}

#[test]
fn s3_going_down_during_staging_is_69_and_the_staging_folder_is_removed() {
    let mut s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    big_valid_folder(dir.path(), "20250101_000000", 400);
    let envs = s3.env(BUCKET, "");
    pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    let run = restore_cut_off_during_staging(&envs, "s3", || s3.kill());
    assert!(run.message().contains("S3_ENDPOINT"), "{}", run.message());
}

#[test]
fn the_remote_host_going_away_during_staging_is_69_and_the_staging_folder_is_removed() {
    let ssh = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    big_valid_folder(dir.path(), "20250101_000000", 500);
    pgb_run(&ssh.env(), dir.path(), &["ship"]).expect(0);
    let run = restore_cut_off_during_staging(&ssh.env(), "remote", || ssh.cut_sessions());
    assert!(run.message().contains("RSYNC_HOST"), "{}", run.message());
}

fn walk_sizes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk_sizes(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
