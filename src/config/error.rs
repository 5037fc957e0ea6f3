//! The one error type of the settings layer, and the redaction every message about a setting
//! goes through (an endpoint or a URL may carry `user:password@`).

use std::path::PathBuf;

use thiserror::Error;

/// A setting that cannot be used as given.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The value is present but malformed or out of range (an empty `value` is one not
    /// worth repeating, such as a list of keys: the reason names the bad entry).
    #[error("{var}{}: {reason}", shown_value(.value))]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
    /// A required value is missing for something that is enabled or asked for.
    #[error("{0}")]
    Incomplete(String),
    /// Two settings that exclude each other are both set.
    #[error("{0}")]
    Conflict(String),
    /// A value is missing and there is no terminal to ask for it.
    #[error("{0}")]
    Missing(String),
    /// A `_FILE` secret or the `--env-file` could not be read.
    #[error("{var}: cannot read {path}: {source}")]
    File {
        var: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn shown_value(value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!("={value}")
    }
}

impl ConfigError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Invalid { .. } | ConfigError::Conflict(_) | ConfigError::Missing(_) => {
                exitcode::USAGE
            }
            ConfigError::Incomplete(_) => exitcode::CONFIG,
            // A local file we cannot read is an I/O error (77 is for PostgreSQL, S3 and ssh
            // refusing us).
            ConfigError::File { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => exitcode::NOINPUT,
                _ => exitcode::IOERR,
            },
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ConfigError::Invalid { .. } => "invalid_value",
            ConfigError::Incomplete(_) => "config_incomplete",
            ConfigError::Conflict(_) => "conflicting_values",
            ConfigError::Missing(_) => "missing_value",
            ConfigError::File { .. } => "config_file",
        }
    }

    pub(crate) fn invalid(var: &'static str, value: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            var,
            value: redact_userinfo(value),
            reason: reason.into(),
        }
    }
}

/// Hides the `user:password@` of URLs in text shown to the operator.
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***@");
                out.push_str(&authority[at + 1..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_lose_their_credentials() {
        assert_eq!(
            redact_userinfo("https://AKIA:s3cr3t@host:9000/x and http://h/p"),
            "https://***@host:9000/x and http://h/p"
        );
        let e = ConfigError::invalid("S3_ENDPOINT", "https://KEY:SECRET@host", "bad");
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }
}
