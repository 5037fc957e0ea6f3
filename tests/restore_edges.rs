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
    replace_backup_file(&dir.path().join(&folder), "postgres_db_app.dump", &bytes);
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

/// Guarantee 11 as the issue reproduced it: a database's file that `\connect`s to another
/// database, restored under its own name with consent for that name only; a cluster file
/// that connects to a database its manifest does not list; a genuine archive of `victim`
/// listed as `app3`. Each is refused (65) and `victim` is untouched.
#[test]
fn a_restore_writes_only_where_it_was_allowed_to() {
    let server = PgServer::start(15);
    for db in ["app", "victim"] {
        server.psql("postgres", &format!("CREATE DATABASE {db}"));
        server.psql(db, "CREATE TABLE t(x int); INSERT INTO t VALUES (1);");
    }
    let dir = tempfile::tempdir().unwrap();
    let envs = server.env();
    pgb_run(&envs, dir.path(), &["dump"]).expect(0);
    let folder = folder_of(dir.path());
    let path = dir.path().join(&folder);
    let victim_untouched = |what: &str| {
        assert_eq!(
            server.psql("victim", "SELECT count(*) FROM t").trim(),
            "1",
            "{what}"
        );
        let listed = server.psql(
            "victim",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'pwned'",
        );
        assert_eq!(listed.trim(), "0", "{what}");
    };
    // A database's file connecting elsewhere, after its own connect.
    rewrite_backup_file(&path, "postgres_db_app.sql.gz", |sql| {
        sql.replace(
            "-- PostgreSQL database dump complete",
            "\\connect victim\nCREATE TABLE public.pwned(x int);\n-- PostgreSQL database dump complete",
        )
    });
    let run = restore_one(
        &envs,
        dir.path(),
        &[
            ("RESTORE_FOLDER", &folder),
            ("RESTORE_DATABASE", "app"),
            ("RESTORE_DROP_EXISTING", "true"),
        ],
    )
    .expect(65);
    assert!(run.message().contains("may not write"), "{}", run.stdout);
    victim_untouched("a database's file");
    assert_eq!(
        server.psql("app", "SELECT count(*) FROM t").trim(),
        "1",
        "app was not dropped"
    );

    // A cluster file reaching a database its manifest does not list.
    let manifest = path.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["databases"] = serde_json::json!(["template1", "app", "postgres"]);
    m["files"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["database"] != "victim");
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let run = pgb_run(
        &restore_env(
            &envs,
            &[
                ("RESTORE_SOURCE", "local"),
                ("RESTORE_FOLDER", &folder),
                ("RESTORE_TYPE", "cluster"),
                ("RESTORE_DROP_EXISTING", "true"),
            ],
        ),
        dir.path(),
        &["restore"],
    )
    .expect(65);
    assert!(run.message().contains("victim"), "{}", run.stdout);
    victim_untouched("a cluster file");

    // A genuine archive of victim, listed as app3.
    let custom = tempfile::tempdir().unwrap();
    let cenvs = with(&envs, "BACKUP_FORMAT", "custom");
    server.psql("postgres", "CREATE DATABASE app3");
    pgb_run(
        &with(&cenvs, "BACKUP_DATABASES", "app3"),
        custom.path(),
        &["dump"],
    )
    .expect(0);
    let cfolder = folder_of(custom.path());
    let out = server
        .client("pg_dump")
        .args(["-Fc", "--dbname=victim"])
        .output()
        .unwrap();
    replace_backup_file(
        &custom.path().join(&cfolder),
        "postgres_db_app3.dump",
        &out.stdout,
    );
    server.psql("postgres", "DROP DATABASE app3");
    restore_one(&cenvs, custom.path(), &[("RESTORE_DATABASE", "app3")]).expect(65);
    victim_untouched("an archive of another database");
}

/// A psql without `\restrict` (older than 17.6, 16.10, 15.14, 14.19, 13.22) is refused before
/// any replay (78), naming what to install. The wrapper says it is 15.13 and is otherwise the
/// real psql.
#[test]
fn a_psql_without_restrict_is_refused_with_78() {
    use std::os::unix::fs::PermissionsExt;
    let server = PgServer::start(15);
    server.psql("postgres", "CREATE DATABASE app");
    let dir = tempfile::tempdir().unwrap();
    pgb_run(&server.env(), dir.path(), &["dump"]).expect(0);
    let bin = tempfile::tempdir().unwrap();
    for tool in ["pg_dump", "pg_dumpall", "pg_restore"] {
        std::os::unix::fs::symlink(server.bin().join(tool), bin.path().join(tool)).unwrap();
    }
    let psql = bin.path().join("psql");
    std::fs::write(
        &psql,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'psql (PostgreSQL) 15.13'; exit 0; fi\nexec '{}' \"$@\"\n",
            server.bin().join("psql").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&psql, std::fs::Permissions::from_mode(0o755)).unwrap();
    let envs = with(&server.env(), "PG_BIN_DIR", bin.path().to_str().unwrap());
    let run = restore_one(
        &envs,
        dir.path(),
        &[
            ("RESTORE_DATABASE", "app"),
            ("RESTORE_TARGET_DATABASE", "app2"),
        ],
    )
    .expect(78);
    assert!(
        run.message().contains("15.14") && run.message().contains("PG_BIN_DIR"),
        "{}",
        run.stdout
    );
    pgb_run(&envs, dir.path(), &["verify", "latest", "--restore-test"]).expect(78);
}
