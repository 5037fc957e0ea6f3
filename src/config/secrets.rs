//! Where secrets come from: the environment, the `--env-file` (kept out of the environment),
//! or a `*_FILE` variable naming a file that holds the secret. Never a flag: every user of
//! the machine can read a process's arguments.

use std::collections::BTreeMap;
use std::path::Path;

use super::ConfigError;
use crate::secret::Secret;

/// Secrets are looked up here: the process environment first, then `--env-file`. Secrets
/// from the file never enter the environment, so no child process can inherit them.
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    from_file: BTreeMap<String, String>,
}

impl Secrets {
    /// The variables that hold secrets: never flags, never in a child's environment.
    pub const NAMES: &'static [&'static str] = &[
        "PGPASSWORD",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "NOTIFY_URL",
        "HEALTHCHECK_URL",
        "NOTIFY_URLS",
    ];

    pub fn is_secret(name: &str) -> bool {
        Self::NAMES.contains(&name)
    }

    /// Keeps a secret read from an env file.
    pub fn insert_from_file(&mut self, name: &str, value: &str) {
        self.from_file.insert(name.to_string(), value.to_string());
    }

    /// The value, when set and not empty.
    pub fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.from_file.get(name).cloned().filter(|v| !v.is_empty()))
    }
}

/// Reads a secret from its variable or its `_FILE` variant; both set is a usage error.
pub(crate) fn secret_with_file(
    var: &'static str,
    value: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    let file = file.filter(|f| !f.as_os_str().is_empty());
    let value = value.filter(|v| !v.is_empty());
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::Conflict(format!(
            "both {var} and {var}_FILE are set: keep only one"
        ))),
        (Some(v), None) => Ok(Some(Secret::new(v.to_string()))),
        (None, Some(path)) => read_secret_file(file_variable(var), path).map(Some),
        (None, None) => Ok(None),
    }
}

/// The `_FILE` variable of a secret, for messages (`&'static str` like every other name).
fn file_variable(var: &str) -> &'static str {
    match var {
        "PGPASSWORD" => "PGPASSWORD_FILE",
        "S3_ACCESS_KEY" => "S3_ACCESS_KEY_FILE",
        "S3_SECRET_KEY" => "S3_SECRET_KEY_FILE",
        "NOTIFY_URL" => "NOTIFY_URL_FILE",
        "HEALTHCHECK_URL" => "HEALTHCHECK_URL_FILE",
        "NOTIFY_URLS" => "NOTIFY_URLS_FILE",
        _ => "secret file",
    }
}

fn read_secret_file(file_var: &'static str, path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
        var: file_var,
        path: path.to_path_buf(),
        source,
    })?;
    // Docker secrets and `echo pw > file` leave a trailing newline.
    let text = text.trim_end_matches(['\n', '\r']).to_string();
    if text.is_empty() {
        return Err(ConfigError::Invalid {
            var: file_var,
            value: path.display().to_string(),
            reason: "the file is empty".into(),
        });
    }
    Ok(Secret::new(text))
}
