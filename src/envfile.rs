//! `--env-file PATH` (or `PG_BACKUPS_ENV_FILE`): `KEY=value` lines loaded before the flags are
//! parsed, so the file works like compose `env_file:` or systemd `EnvironmentFile=`, except
//! that variables already set in the environment win over the file (so a systemd unit's own
//! `Environment=` settings beat the shared env file). Secrets from the file are kept aside in
//! [`Secrets`] and never enter the environment, where a child process could inherit them.
//!
//! This is also where "an empty variable means not set" (DESIGN.md, Configuration) is made
//! true, once for every setting: compose's `${VAR}`, `.env` templates and `docker run -e VAR=`
//! all write unset settings as empty, and clap's `env` fallback would take the empty string as
//! the value (so `BACKUP_JOBS=` was exit 64), and hide the env file's value. So the file fills
//! a variable that is unset *or empty*, and then every empty variable that is a setting (one
//! a flag falls back to, a secret, libpq's `PG*`, the AWS tools' `AWS_*`) is removed from the
//! environment before clap, the AWS SDK or any child process can read it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, Secrets};

/// Parses the lines of an env file: `KEY=value`, `#` comments, blank lines, an optional
/// `export ` prefix, and values in matching single or double quotes.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=value", n + 1));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {}: {key:?} is not a variable name", n + 1));
        }
        let value = value.trim();
        let value = match (value.chars().next(), value.chars().last()) {
            (Some('"'), Some('"')) | (Some('\''), Some('\'')) if value.len() >= 2 => {
                &value[1..value.len() - 1]
            }
            _ => value,
        };
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

/// Prepares the environment for clap: loads the env file named by `--env-file` or
/// `PG_BACKUPS_ENV_FILE` (settings into the environment, secrets into the returned value),
/// then unsets every empty setting. Called once, before any thread is started.
pub fn prepare(args: &[OsString]) -> Result<Secrets, ConfigError> {
    let path = crate::cli::env_file_from_args(args).or_else(|| {
        std::env::var_os("PG_BACKUPS_ENV_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let (pairs, secrets) = match path {
        Some(path) => read(&path)?,
        None => (Vec::new(), Secrets::default()),
    };
    let settings = crate::cli::env_names();
    let changes = changes(std::env::vars_os(), pairs, |name| {
        is_setting(name, &settings)
    });
    apply(changes);
    Ok(secrets)
}

/// Reads the file: the settings' pairs, and the secrets kept apart.
fn read(path: &Path) -> Result<(Vec<(String, String)>, Secrets), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
        var: "--env-file",
        path: path.to_path_buf(),
        source,
    })?;
    let pairs = parse(&text).map_err(|reason| ConfigError::Invalid {
        var: "--env-file",
        value: path.display().to_string(),
        reason,
    })?;
    let mut secrets = Secrets::default();
    let mut settings = Vec::new();
    for (key, value) in pairs {
        if Secrets::is_secret(&key) {
            secrets.insert_from_file(&key, &value);
        } else {
            settings.push((key, value));
        }
    }
    Ok((settings, secrets))
}

/// Whether an empty `name` must read as unset: a variable some flag falls back to
/// (`settings`, from clap itself, so no list is kept by hand), a secret, or one of libpq's
/// (`PGSSLMODE=` must not reach it) or the AWS tools' (the SDK reads `AWS_PROFILE=` as a
/// profile named ""). Other programs' variables are left as they are: `TZ=` is not unset `TZ`.
pub(crate) fn is_setting(name: &str, settings: &BTreeSet<String>) -> bool {
    settings.contains(name)
        || Secrets::is_secret(name)
        || name.starts_with("PG")
        || name.starts_with("AWS_")
}

/// What preparing does to an environment: each change once, computed without touching the
/// process, so that it can be tested for every variable.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub set: Vec<(OsString, OsString)>,
    pub remove: Vec<OsString>,
}

/// The file fills a variable that is unset or empty (a set, non-empty variable wins); then
/// every setting whose value is empty is removed.
pub(crate) fn changes(
    current: impl IntoIterator<Item = (OsString, OsString)>,
    file: Vec<(String, String)>,
    is_setting: impl Fn(&str) -> bool,
) -> Changes {
    let before: BTreeMap<OsString, OsString> = current.into_iter().collect();
    let mut after = before.clone();
    for (key, value) in file {
        let key = OsString::from(key);
        if after.get(&key).is_none_or(|v| v.is_empty()) {
            after.insert(key, OsString::from(value));
        }
    }
    let empty_setting = |k: &OsStr, v: &OsStr| v.is_empty() && k.to_str().is_some_and(&is_setting);
    let mut changes = Changes::default();
    for (key, value) in after {
        if empty_setting(&key, &value) {
            if before.contains_key(&key) {
                changes.remove.push(key);
            }
        } else if before.get(&key) != Some(&value) {
            changes.set.push((key, value));
        }
    }
    changes
}

fn apply(changes: Changes) {
    for (key, value) in changes.set {
        // SAFETY: called from `run` before any thread is started (logging, signals and
        // the S3 runtime come later), so nothing reads the environment concurrently.
        unsafe { std::env::set_var(&key, &value) };
    }
    for key in changes.remove {
        // SAFETY: as above.
        unsafe { std::env::remove_var(&key) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_parse_like_compose_and_systemd() {
        let text = "# comment\n\nPGHOST=db\nexport PGPORT=5433\nS3_PREFIX=\"a b\"\nX='y'\nSCHEDULE=0 */6 * * *\n";
        let pairs = parse(text).unwrap();
        assert_eq!(
            pairs,
            vec![
                ("PGHOST".into(), "db".into()),
                ("PGPORT".into(), "5433".into()),
                ("S3_PREFIX".into(), "a b".into()),
                ("X".into(), "y".into()),
                ("SCHEDULE".into(), "0 */6 * * *".into()),
            ]
        );
        assert!(parse("not a line").is_err());
        assert!(parse("BAD KEY=1").is_err());
    }

    fn settings() -> BTreeSet<String> {
        crate::cli::env_names()
    }

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn every_empty_setting_is_unset() {
        let settings = settings();
        for name in &settings {
            let c = changes(os(&[(name, "")]), vec![], |n| is_setting(n, &settings));
            assert_eq!(c.remove, vec![OsString::from(name)], "{name}");
            assert!(c.set.is_empty(), "{name}: {c:?}");
        }
    }

    #[test]
    fn the_env_file_fills_every_setting_that_is_empty_in_the_environment() {
        let settings = settings();
        for name in &settings {
            let file = vec![(name.clone(), "from-file".to_string())];
            let c = changes(os(&[(name, "")]), file, |n| is_setting(n, &settings));
            assert_eq!(c.set, os(&[(name, "from-file")]), "{name}");
            assert!(c.remove.is_empty(), "{name}: {c:?}");
        }
    }

    #[test]
    fn a_set_variable_wins_over_the_env_file() {
        let settings = settings();
        let file = vec![("BACKUP_JOBS".to_string(), "4".to_string())];
        let c = changes(os(&[("BACKUP_JOBS", "3")]), file, |n| {
            is_setting(n, &settings)
        });
        assert_eq!(c, Changes::default());
    }

    #[test]
    fn an_empty_value_in_the_env_file_is_unset_too() {
        let settings = settings();
        let file = vec![
            ("PGSSLMODE".to_string(), String::new()),
            ("BACKUP_JOBS".to_string(), String::new()),
        ];
        let c = changes(os(&[]), file, |n| is_setting(n, &settings));
        assert_eq!(c, Changes::default());
    }

    #[test]
    fn libpq_and_aws_variables_count_as_settings() {
        let settings = settings();
        let env = os(&[
            ("PGSSLROOTCERT", ""),
            ("AWS_PROFILE", ""),
            ("PGAPPNAME", "x"),
        ]);
        let c = changes(env, vec![], |n| is_setting(n, &settings));
        assert_eq!(
            c.remove,
            vec![OsString::from("AWS_PROFILE"), "PGSSLROOTCERT".into()]
        );
    }

    #[test]
    fn other_programs_empty_variables_are_left_alone() {
        let settings = settings();
        let file = vec![("FOO".to_string(), String::new())];
        let c = changes(os(&[("TZ", "")]), file, |n| is_setting(n, &settings));
        assert_eq!(
            c,
            Changes {
                set: os(&[("FOO", "")]),
                remove: vec![]
            }
        );
    }

    #[test]
    fn secrets_are_settings_even_without_a_flag() {
        let settings = settings();
        for name in Secrets::NAMES {
            assert!(!settings.contains(*name), "{name} must have no flag");
            assert!(is_setting(name, &settings), "{name}");
        }
    }
}
