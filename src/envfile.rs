//! `--env-file PATH` (or `PG_BACKUPS_ENV_FILE`): `KEY=value` lines loaded before the flags are
//! parsed, so the file works like compose `env_file:` or systemd `EnvironmentFile=`, except
//! that variables already set in the environment win over the file (so a systemd unit's own
//! `Environment=` settings beat the shared env file). Secrets from the file are kept aside in
//! [`Secrets`] and never enter the environment, where a child process could inherit them.

use std::path::Path;

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

/// Loads the file: settings into the process environment, secrets into the returned value.
pub fn load(path: &Path) -> Result<Secrets, ConfigError> {
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
    for (key, value) in pairs {
        if Secrets::is_secret(&key) {
            secrets.insert_from_file(&key, &value);
        } else if std::env::var_os(&key).is_none() {
            // SAFETY: called from `run` before any thread is started (logging, signals and
            // the S3 runtime come later), so nothing reads the environment concurrently.
            unsafe { std::env::set_var(&key, &value) };
        }
    }
    Ok(secrets)
}

/// An empty variable means "not set" (env files write unset settings that way); the AWS SDK
/// would read `AWS_PROFILE=` as a profile named "". Removes empty `AWS_*` variables.
pub fn drop_empty_aws_variables() {
    let empty: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(k, v)| v.is_empty() && k.to_str().is_some_and(|k| k.starts_with("AWS_")))
        .map(|(k, _)| k)
        .collect();
    for key in empty {
        // SAFETY: as in `load`: before any thread is started.
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
}
