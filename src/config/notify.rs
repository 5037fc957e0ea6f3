//! Who is told how a run went: `NOTIFY_URL(_FILE)`, `NOTIFY_URLS(_FILE)` (parsed in
//! `notify_urls.rs`), `NOTIFY_ON`, `HEALTHCHECK_URL(_FILE)`, `NOTIFY_TIMEOUT`. Resolved apart from [`super::Config`] (and first) so that a run whose
//! other settings are wrong still reports its failure. Sending lives in `crate::notify`.
//!
//! Both URLs carry tokens: they are secrets (environment or `*_FILE` only), and messages
//! show `scheme://host/…` only.

use std::time::Duration;

use super::ConfigError;
use super::notify_urls::{self, Target};
use super::parse::{parse_duration, path_setting};
use super::secrets::{Secrets, secret_with_file};
use crate::cli::GlobalArgs;
use crate::secret::Secret;

/// When `NOTIFY_URL` is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOn {
    Failure,
    Always,
}

/// A URL that holds a token.
#[derive(Clone)]
pub struct SecretUrl {
    url: Secret,
    /// `https://hc-ping.com/…`: what messages may show.
    shown: String,
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl SecretUrl {
    pub(crate) fn parse(var: &'static str, value: Secret) -> Result<SecretUrl, ConfigError> {
        let text = value.expose().trim();
        let uri: http::Uri = text
            .parse()
            .map_err(|_| invalid(var, "is not a URL (expected http://… or https://…)"))?;
        let scheme = uri.scheme_str().unwrap_or_default();
        if scheme != "http" && scheme != "https" {
            return Err(invalid(var, "must start with http:// or https://"));
        }
        let Some(authority) = uri.authority() else {
            return Err(invalid(var, "has no host"));
        };
        // The host without any user:password@.
        let host = authority.as_str().rsplit('@').next().unwrap_or_default();
        Ok(SecretUrl {
            url: Secret::new(text.trim_end_matches('/').to_string()),
            shown: format!("{scheme}://{host}/…"),
        })
    }

    /// The URL with `/start` or `/fail` added to its path (before any `?query`).
    pub(crate) fn with_suffix(&self, suffix: &str) -> String {
        let url = self.url.expose();
        match url.split_once('?') {
            Some((path, query)) => format!("{}{suffix}?{query}", path.trim_end_matches('/')),
            None => format!("{url}{suffix}"),
        }
    }

    /// What messages show.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// The value is not echoed back: it is a secret.
fn invalid(var: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: "(hidden)".into(),
        reason: reason.to_string(),
    }
}

/// The notification settings, resolved apart from the rest so that a run whose other
/// settings are wrong still reports its failure.
#[derive(Debug, Clone)]
pub struct Settings {
    pub notify_url: Option<SecretUrl>,
    pub notify_on: NotifyOn,
    pub healthcheck_url: Option<SecretUrl>,
    /// `NOTIFY_URLS`: the services that get a message a person reads.
    pub targets: Vec<Target>,
    /// The machine named in those messages (`HOSTNAME`, else the kernel's host name).
    pub host: String,
    /// TEST ONLY: `PG_BACKUPS_NOTIFY_API_BASE` replaces the public API of Slack, Discord,
    /// Telegram and Teams (`https://hooks.slack.com`…), whose URLs carry only tokens, so that
    /// tests can point them at a loopback server. Never needed in production.
    pub api_base: Option<String>,
    pub timeout: Duration,
    /// A wrong `NOTIFY_URLS` entry: the run still refuses to start (64), but the other
    /// channels, already resolved, report that refusal (a typo in one chat URL must not
    /// also silence the healthcheck and `NOTIFY_URL`).
    pub targets_error: Option<std::sync::Arc<ConfigError>>,
}

impl Settings {
    pub fn from_args(args: &GlobalArgs, secrets: &Secrets) -> Result<Settings, ConfigError> {
        let notify_on = notify_on(&args.notify_on)?;
        let timeout = timeout(&args.notify_timeout)?;
        let (targets, targets_error) = match targets(secrets, &args.notify_urls_file) {
            Ok(t) => (t, None),
            Err(e) => (Vec::new(), Some(std::sync::Arc::new(e))),
        };
        Ok(Settings {
            notify_url: url(secrets, "NOTIFY_URL", &args.notify_url_file)?,
            notify_on,
            healthcheck_url: url(secrets, "HEALTHCHECK_URL", &args.healthcheck_url_file)?,
            targets,
            targets_error,
            host: host_name(),
            api_base: std::env::var("PG_BACKUPS_NOTIFY_API_BASE")
                .ok()
                .map(|b| b.trim().trim_end_matches('/').to_string())
                .filter(|b| !b.is_empty()),
            timeout,
        })
    }

    /// Nothing to tell anyone.
    pub fn is_empty(&self) -> bool {
        self.notify_url.is_none() && self.healthcheck_url.is_none() && self.targets.is_empty()
    }
}

/// `NOTIFY_URLS` from its variable or its `_FILE`.
fn targets(secrets: &Secrets, file: &Option<String>) -> Result<Vec<Target>, ConfigError> {
    let list = secret_with_file(
        "NOTIFY_URLS",
        secrets.get("NOTIFY_URLS").as_deref(),
        path_setting(file).as_deref(),
    )?;
    match list {
        Some(list) => notify_urls::parse_list(&list),
        None => Ok(Vec::new()),
    }
}

/// `HOSTNAME` (set by shells and by Docker), else the kernel's host name.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".to_string())
}

/// A URL secret from its variable or its `_FILE`.
fn url(
    secrets: &Secrets,
    var: &'static str,
    file: &Option<String>,
) -> Result<Option<SecretUrl>, ConfigError> {
    secret_with_file(
        var,
        secrets.get(var).as_deref(),
        path_setting(file).as_deref(),
    )?
    .map(|s| SecretUrl::parse(var, s))
    .transpose()
}

fn notify_on(value: &str) -> Result<NotifyOn, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "failure" | "" => Ok(NotifyOn::Failure),
        "always" => Ok(NotifyOn::Always),
        _ => Err(ConfigError::invalid(
            "NOTIFY_ON",
            value,
            "expected failure or always",
        )),
    }
}

/// Bounded: a dead endpoint must never hold up a backup for long.
fn timeout(value: &str) -> Result<Duration, ConfigError> {
    let timeout = parse_duration("NOTIFY_TIMEOUT", value)?;
    if timeout.is_zero() || timeout > Duration::from_secs(120) {
        return Err(ConfigError::invalid(
            "NOTIFY_TIMEOUT",
            value,
            "expected between 1s and 2m",
        ));
    }
    Ok(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_their_token() {
        let u = SecretUrl::parse(
            "HEALTHCHECK_URL",
            Secret::new("https://hc-ping.com/5f1e-token/".into()),
        )
        .unwrap();
        assert_eq!(u.shown(), "https://hc-ping.com/…");
        assert_eq!(
            u.with_suffix("/start"),
            "https://hc-ping.com/5f1e-token/start"
        );
        assert!(!format!("{u:?}").contains("token"));
        let e = SecretUrl::parse("NOTIFY_URL", Secret::new("ftp://x/secret".into())).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        let q =
            SecretUrl::parse("HEALTHCHECK_URL", Secret::new("https://h/p/?k=v".into())).unwrap();
        assert_eq!(q.with_suffix("/fail"), "https://h/p/fail?k=v");
        let u = SecretUrl::parse("NOTIFY_URL", Secret::new("http://u:pw@h:8080/x".into())).unwrap();
        assert_eq!(u.shown(), "http://h:8080/…");
    }
}
