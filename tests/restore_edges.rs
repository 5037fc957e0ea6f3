//! Restores at the edges a new user meets: the `postgres` database itself, a template as the
//! target, and a database whose CREATE DATABASE fails on the new server.

mod common;

use common::*;

fn restore_one(envs: &[(String, String)], dir: &std::path::Path, pairs: &[(&str, &str)]) -> Run {
    let mut all = vec![
        ("RESTORE_SOURCE", "local"),
        ("RESTORE_FOLDER", "latest"),
        ("RESTORE_TYPE", "database"),
    ];
    all.extend_from_slice(pairs);
    pgb_run(&restore_env(envs, &all), dir, &["restore"])
}

#[test]
fn the_postgres_database_restores_by_name_and_templates_are_never_targets() {
    let server = PgServer::start(15);
    server.psql(
        "postgres",
        "CREATE TABLE public.kept(x int); INSERT INTO public.kept VALUES (1), (2);",
    );
    let dir = tempfile::tempdir().unwrap();
    let envs = server.env();
    pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    server.psql("postgres", "INSERT INTO public.kept VALUES (3)");
    let run = restore_one(
        &envs,
        dir.path(),
        &[
            ("RESTORE_DATABASE", "postgres"),
            ("RESTORE_DROP_EXISTING", "true"),
        ],
    )
    .expect(0);
    assert_eq!(run.json["dropped"][0], "postgres", "{}", run.stdout);
    assert_eq!(
        server
            .psql("postgres", "SELECT count(*) FROM public.kept")
            .trim(),
        "2"
    );
    for target in ["template1", "template0"] {
        let refused = restore_one(
            &envs,
            dir.path(),
            &[
                ("RESTORE_DATABASE", "postgres"),
                ("RESTORE_TARGET_DATABASE", target),
                ("RESTORE_DROP_EXISTING", "true"),
            ],
        )
        .expect(64);
        assert!(
            refused.message().contains("RESTORE_TARGET_DATABASE"),
            "{}",
            refused.stdout
        );
    }
}

#[test]
fn a_create_database_that_fails_on_the_new_server_is_65_with_its_error() {
    let source = PgServer::start(15);
    let space = tempfile::tempdir().unwrap();
    let location = space.path().join("ts");
    std::fs::create_dir(&location).unwrap();
    // The server runs as `postgres` when the tests run as root: it must own the directory.
    let _ = std::process::Command::new("chown")
        .args(["-R", "postgres", space.path().to_str().unwrap()])
        .status();
    source.psql(
        "postgres",
        &format!(
            "CREATE TABLESPACE fastdisk LOCATION '{}'",
            location.display()
        ),
    );
    source.psql("postgres", "CREATE DATABASE tsdb TABLESPACE fastdisk");
    source.psql("tsdb", "CREATE TABLE t(x int); INSERT INTO t VALUES (1);");
    let dir = tempfile::tempdir().unwrap();
    pgb_run(
        &with(&source.env(), "BACKUP_DATABASES", "tsdb"),
        dir.path(),
        &["dump"],
    )
    .expect(0);
    // A new server without that tablespace.
    let target = PgServer::start(15);
    let run = restore_one(&target.env(), dir.path(), &[("RESTORE_DATABASE", "tsdb")]).expect(65);
    assert!(run.stdout.contains("fastdisk"), "{}", run.stdout);
    assert!(run.json["errors"].as_u64().unwrap() >= 1, "{}", run.stdout);
}

/// An archive of another database whose header was patched to name the one it is listed
/// for: refused (65) while nothing on the server has changed, the database in its way
/// included (guarantee 11: before any SQL).
#[test]
fn an_archive_of_another_database_is_refused_before_anything_is_dropped() {
    let server = PgServer::start(17);
    for db in ["app", "vic"] {
        server.psql("postgres", &format!("CREATE DATABASE {db}"));
        server.psql(
            db,
            &format!("CREATE TABLE t(x text); INSERT INTO t VALUES ('{db}');"),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let envs = with(&server.env(), "BACKUP_FORMAT", "custom");
    pgb_run(
        &with(&envs, "BACKUP_DATABASES", "app"),
        dir.path(),
        &["dump"],
    )
    .expect(0);
    let folder = folder_of(dir.path());
    let archive = dir.path().join(&folder).join("postgres_db_app.dump");
    // `pg_dump -Fc` of vic, its header's database name patched to app.
    let out = server
        .client("pg_dump")
        .args(["-Fc", "--dbname=vic"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut bytes = out.stdout;
    let at = bytes.windows(3).position(|w| w == b"vic").unwrap();
    bytes[at..at + 3].copy_from_slice(b"app");
    std::fs::write(&archive, &bytes).unwrap();
    let manifest = dir.path().join(&folder).join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["name"] == "postgres_db_app.dump" {
            f["bytes"] = bytes.len().into();
            f["sha256"] = sha256_file(&archive).into();
        }
    }
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let run = restore_one(
        &envs,
        dir.path(),
        &[
            ("RESTORE_DATABASE", "app"),
            ("RESTORE_DROP_EXISTING", "true"),
        ],
    )
    .expect(65);
    assert!(
        run.message().contains("nothing was changed"),
        "{}",
        run.stdout
    );
    assert_eq!(server.psql("app", "SELECT x FROM t").trim(), "app");
    assert_eq!(server.psql("vic", "SELECT x FROM t").trim(), "vic");
}
