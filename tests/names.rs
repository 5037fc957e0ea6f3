//! Every name PostgreSQL allows is a name pg-backups handles (guarantees 7, 9 and 11): the
//! shared name corpus (`common::names`) is created on PostgreSQL 15, 17 and 18 (one cluster
//! per version), dumped in every format, verified with a restore drill (each database
//! restored under a scratch name), restored by name and under another name, and restored as
//! part of the cluster, each time read back.

mod common;

use std::time::Instant;

use common::names::{self, CORPUS, assert_holds};
use common::*;

/// A format as the settings select it.
struct Format {
    label: &'static str,
    settings: &'static [(&'static str, &'static str)],
    encrypted: bool,
}

const FORMATS: &[Format] = &[
    Format {
        label: "plain gzip",
        settings: &[],
        encrypted: false,
    },
    Format {
        label: "plain zstd",
        settings: &[("BACKUP_COMPRESSION", "zstd")],
        encrypted: false,
    },
    Format {
        label: "custom",
        settings: &[("BACKUP_FORMAT", "custom")],
        encrypted: false,
    },
    Format {
        label: "plain gzip + age",
        settings: &[],
        encrypted: true,
    },
    Format {
        label: "plain zstd + age",
        settings: &[("BACKUP_COMPRESSION", "zstd")],
        encrypted: true,
    },
    Format {
        label: "custom + age",
        settings: &[("BACKUP_FORMAT", "custom")],
        encrypted: true,
    },
];

fn restore(envs: &[(String, String)], dir: &std::path::Path, pairs: &[(&str, &str)]) -> Run {
    let mut all = vec![
        ("RESTORE_SOURCE", "local"),
        ("RESTORE_DROP_EXISTING", "true"),
    ];
    all.extend_from_slice(pairs);
    pgb_run(&restore_env(envs, &all), dir, &["restore"])
}

/// One more row in every corpus database, so a restore that did nothing is seen.
fn disturb(server: &PgServer) {
    for name in CORPUS {
        server.psql(
            name,
            "INSERT INTO public.t VALUES (99, 'added after the dump')",
        );
    }
}

fn corpus_round_trip(version: u32) {
    let server = PgServer::start(version);
    names::create(&server);
    let keys = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(keys.path(), "key.txt");
    // Which share of the by-name and renamed restores this version does.
    let slot = match version {
        15 => 0,
        17 => 1,
        _ => 2,
    };
    for (i, format) in FORMATS.iter().enumerate() {
        let started = Instant::now();
        let what = format!("PostgreSQL {version}, {}", format.label);
        let mut envs = server.env();
        for (k, v) in format.settings {
            envs = with(&envs, k, v);
        }
        if format.encrypted {
            envs = with(&envs, "AGE_RECIPIENTS", &recipient);
            envs = with(&envs, "AGE_IDENTITY_FILE", key.to_str().unwrap());
        }
        let dir = tempfile::tempdir().unwrap();
        let dump = pgb_run(&envs, dir.path(), &["dump"]).expect(0);
        assert_eq!(dump.json["status"], "ok", "{what}: {}", dump.stdout);
        let folder = folder_of(dir.path());

        // The drill restores every database under a scratch name.
        let drill = pgb_run(&envs, dir.path(), &["verify", &folder, "--restore-test"]).expect(0);
        let tests = drill.json["restore_test"].as_array().unwrap();
        for name in CORPUS {
            let t = tests
                .iter()
                .find(|t| t["database"] == *name)
                .unwrap_or_else(|| panic!("{what}: no restore test of {name:?}: {}", drill.stdout));
            assert_eq!(t["rows"], 3, "{what}: {name:?}: {t}");
        }

        // By name, over the database as it is now (consent given): two formats per version,
        // so that across the three versions every format is restored by name.
        if i % 3 == slot {
            disturb(&server);
            for name in CORPUS {
                restore(
                    &envs,
                    dir.path(),
                    &[
                        ("RESTORE_FOLDER", &folder),
                        ("RESTORE_TYPE", "database"),
                        ("RESTORE_DATABASE", name),
                    ],
                )
                .expect(0);
                assert_holds(&server, name, name, &format!("{what}, restored by name"));
            }
        }

        // Under another name: the drill above restored every database under a scratch name;
        // here each is restored under a name of the corpus's own kinds (another corpus name
        // plus " copy"), in one format per version so that the suite stays short.
        let renamed_here = i == 2 * slot;
        let shift = 1 + (version as usize) % (CORPUS.len() - 1);
        for (n, name) in CORPUS.iter().enumerate().filter(|_| renamed_here) {
            let target = format!("{}{}", CORPUS[(n + shift) % CORPUS.len()], " copy");
            let target: String = target
                .chars()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            restore(
                &envs,
                dir.path(),
                &[
                    ("RESTORE_FOLDER", &folder),
                    ("RESTORE_TYPE", "database"),
                    ("RESTORE_DATABASE", name),
                    ("RESTORE_TARGET_DATABASE", &target),
                ],
            )
            .expect(0);
            assert_holds(
                &server,
                &target,
                name,
                &format!("{what}, restored as {target:?}"),
            );
            server.psql(
                "postgres",
                &format!("DROP DATABASE \"{}\"", target.replace('"', "\"\"")),
            );
        }

        // The whole cluster, over the databases as they are now: not without consent.
        disturb(&server);
        let refused = pgb_run(
            &restore_env(
                &envs,
                &[
                    ("RESTORE_SOURCE", "local"),
                    ("RESTORE_FOLDER", &folder),
                    ("RESTORE_TYPE", "cluster"),
                ],
            ),
            dir.path(),
            &["restore"],
        )
        .expect(73);
        assert!(
            refused.message().contains("\"MyApp\""),
            "{what}: {}",
            refused.stdout
        );
        restore(
            &envs,
            dir.path(),
            &[("RESTORE_FOLDER", &folder), ("RESTORE_TYPE", "cluster")],
        )
        .expect(0);
        for name in CORPUS {
            assert_holds(
                &server,
                name,
                name,
                &format!("{what}, restored with the cluster"),
            );
        }
        eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
    }
}

#[test]
fn every_name_round_trips_on_15() {
    corpus_round_trip(15);
}

#[test]
fn every_name_round_trips_on_17() {
    corpus_round_trip(17);
}

#[test]
fn every_name_round_trips_on_18() {
    corpus_round_trip(18);
}
