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
