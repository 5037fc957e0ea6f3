//! "An empty variable means 'not set', for ours and for libpq's" (DESIGN.md, Configuration),
//! for every variable a flag falls back to: the names come from the parser itself, so a
//! setting added tomorrow is covered by these tests the day it is added. Compose `${VAR}`
//! interpolation, `.env` templates and `docker run -e VAR=` all write unset settings this way.
//!
//! No server is needed: `list --source local` resolves every global setting and reads only
//! `BACKUP_DIR`; `restore` and `verify` resolve their own variables before connecting.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// Every variable a flag of `command` (or a global flag) falls back to, with the command
/// that reads it: globals by `list --source local`, a command's own by that command.
fn variables() -> Vec<(String, Vec<&'static str>)> {
    let cmd = pg_backups::cli::command();
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        if let Some(env) = arg.get_env() {
            out.push((
                env.to_string_lossy().into_owned(),
                vec!["list", "--source", "local"],
            ));
        }
    }
    for sub in cmd.get_subcommands() {
        let own: Vec<String> = sub
            .get_arguments()
            .filter(|a| !a.is_global_set())
            .filter_map(|a| a.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .collect();
        let args: Vec<&'static str> = match sub.get_name() {
            _ if own.is_empty() => continue,
            "restore" => vec!["restore"],
            "verify" => vec!["verify", "--source", "local"],
            "check" => vec!["check"],
            other => panic!("{other} has a setting of its own: say how to run it here"),
        };
        out.extend(own.into_iter().map(|name| (name, args.clone())));
    }
    // Every name clap knows is here, and no other.
    let mut names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    names.dedup();
    let known = pg_backups::cli::env_names();
    assert_eq!(names, known.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(names.len() > 60, "{names:?}");
    out
}

/// The binary with exactly these variables (not even the harness's `LOG_FORMAT`).
fn pgb_with(envs: &[(String, String)], args: &[&str]) -> Command {
    let mut cmd = pgb(&[]);
    cmd.env_remove("LOG_FORMAT")
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(args);
    cmd
}

/// What a run said, without what differs between two runs of the same thing.
fn result(cmd: Command) -> (i32, Value) {
    let run = run(cmd);
    let mut json = run.json;
    strip_times(&mut json);
    (run.code, json)
}

fn strip_times(json: &mut Value) {
    match json {
        Value::Object(map) => {
            for key in [
                "started_at",
                "finished_at",
                "duration_ms",
                "age_seconds",
                "seconds",
            ] {
                map.remove(key);
            }
            map.values_mut().for_each(strip_times);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_times),
        _ => {}
    }
}

fn backups() -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("pgb-empty-")
        .tempdir()
        .unwrap();
    make_folder(
        dir.path(),
        "20251005_120000",
        &[("postgres_globals.sql.gz", 100)],
    );
    let path = dir.path().display().to_string();
    (dir, path)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_empty_variable_runs_as_if_it_were_absent() {
    let (_dir, root) = backups();
    for (name, args) in variables() {
        // A real BACKUP_DIR makes `list` succeed, so a changed result shows; BACKUP_DIR itself
        // is compared with its own default.
        let base = if name == "BACKUP_DIR" {
            vec![]
        } else {
            pairs(&[("BACKUP_DIR", &root)])
        };
        let absent = result(pgb_with(&base, &args));
        let mut empty = base.clone();
        empty.push((name.clone(), String::new()));
        let given = result(pgb_with(&empty, &args));
        assert_eq!(
            given,
            absent,
            "{name}= (empty) must run `pg-backups {}` as if {name} were not set",
            args.join(" ")
        );
        assert_ne!(
            given.1["error"]["kind"], "invalid_value",
            "{name}= is refused as a value: {}",
            given.1
        );
    }
}

#[test]
fn every_variable_empty_at_once_runs_as_if_none_were_set() {
    let all_empty: Vec<(String, String)> = pg_backups::cli::env_names()
        .into_iter()
        .map(|n| (n, String::new()))
        .collect();
    for args in [
        vec!["list", "--source", "local"],
        vec!["check"],
        vec!["restore"],
        vec!["verify", "--source", "local"],
    ] {
        let absent = result(pgb_with(&[], &args));
        let given = result(pgb_with(&all_empty, &args));
        assert_eq!(given, absent, "pg-backups {}", args.join(" "));
    }
    // The defaults are the documented ones: BACKUP_DIR=/backups, and local is all there is.
    let (code, json) = result(pgb_with(&all_empty, &["list", "--source", "local"]));
    assert_ne!(code, 64, "{json}");
    assert_eq!(json["sources"][0]["location"], "/backups", "{json}");
}

#[test]
fn an_empty_variable_does_not_hide_the_env_files_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg-backups.env");
    let names: Vec<String> = pg_backups::cli::env_names()
        .into_iter()
        .filter(|n| n != "PG_BACKUPS_ENV_FILE")
        .collect();
    let text: String = names.iter().map(|n| format!("{n}=file-{n}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let all_empty: Vec<(String, String)> =
        names.iter().map(|n| (n.clone(), String::new())).collect();
    // clap shows the value each flag fell back to in the help: `[env: NAME=value]`.
    let mut shown = String::new();
    for command in [None, Some("restore"), Some("verify"), Some("check")] {
        let mut cmd = pgb_with(&all_empty, &["--env-file", file.to_str().unwrap()]);
        cmd.args(command).arg("--help");
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        shown.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    let shown = shown.split_whitespace().collect::<Vec<_>>().join(" ");
    for name in &names {
        assert!(
            shown.contains(&format!("[env: {name}=file-{name}]")),
            "{name}= in the environment hid {name}=file-{name} of the env file:\n{shown}"
        );
    }
}

#[test]
fn the_env_files_values_are_used_when_the_environment_has_them_empty() {
    let (_dir, root) = backups();
    let file_dir = tempfile::tempdir().unwrap();
    let file = file_dir.path().join("pg-backups.env");
    let path = file.to_str().unwrap();

    // The file's BACKUP_DIR is listed, not the default /backups.
    std::fs::write(&file, format!("BACKUP_DIR={root}\n")).unwrap();
    let env = pairs(&[("BACKUP_DIR", ""), ("PG_BACKUPS_ENV_FILE", path)]);
    let (code, json) = result(pgb_with(&env, &["list", "--source", "local"]));
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["sources"][0]["location"], root.as_str(), "{json}");
    assert_eq!(json["sources"][0]["complete"], 1, "{json}");

    // The file's wrong value is found and named, not replaced by the default.
    std::fs::write(&file, format!("BACKUP_DIR={root}\nBACKUP_JOBS=0\n")).unwrap();
    let env = pairs(&[("BACKUP_JOBS", ""), ("BACKUP_DIR", "")]);
    let mut cmd = pgb_with(&env, &["--env-file", path, "list", "--source", "local"]);
    cmd.env("PG_BACKUPS_ENV_FILE", "");
    let run = run(cmd).expect(64);
    assert!(run.message().contains("BACKUP_JOBS"), "{}", run.message());
}

#[test]
fn an_empty_libpq_variable_in_the_env_file_is_not_set() {
    let (_dir, root) = backups();
    let file_dir = tempfile::tempdir().unwrap();
    let file = file_dir.path().join("pg-backups.env");
    std::fs::write(&file, "PGSSLMODE=\nPGPORT=\nPGHOST=\nRSYNC_USER=\n").unwrap();
    let env = pairs(&[("BACKUP_DIR", &root)]);
    let mut cmd = pgb_with(&env, &["list", "--source", "local"]);
    cmd.arg("--env-file").arg(&file);
    let (code, json) = result(cmd);
    assert_eq!(code, 0, "{json}");
}
