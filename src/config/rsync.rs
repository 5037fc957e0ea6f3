//! The remote destination over rsync/ssh: `RSYNC_ENABLED`, `RSYNC_HOST`, `RSYNC_USER`,
//! `RSYNC_PORT`, `RSYNC_PATH`, `RSYNC_SSH_KEY`, `RSYNC_KNOWN_HOSTS`,
//! `RSYNC_ACCEPT_NEW_HOST_KEYS`. Host, user and path end up in ssh's and rsync's arguments:
//! each is checked so that none can be read as an option.

use std::path::PathBuf;

use super::parse::{is_host, parse_bool, parse_port, path_setting};
use super::retention::RetentionRules;
use super::{ConfigError, Destination};
use crate::cli::GlobalArgs;

#[derive(Debug, Clone)]
pub struct RsyncConfig {
    pub host: String,
    pub user: String,
    pub port: u16,
    /// Absolute path of the remote backup root, without a trailing slash.
    pub path: String,
    /// `None`: ssh's own default identities.
    pub ssh_key: Option<PathBuf>,
    pub host_keys: HostKeys,
    pub retention: RetentionRules,
}

/// How the remote host's key is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeys {
    /// Only keys in this file are trusted.
    Known(PathBuf),
    /// `RSYNC_ACCEPT_NEW_HOST_KEYS=true`: a new host is trusted on first contact and remembered
    /// in this file; a changed key is still refused.
    AcceptNew(PathBuf),
}

/// The rsync destination: disabled, enabled, or enabled without what it needs.
pub(super) fn from_args(args: &GlobalArgs) -> Result<Destination<RsyncConfig>, ConfigError> {
    let enabled = parse_bool("RSYNC_ENABLED", &args.rsync_enabled)?;
    let retention = RetentionRules::rsync(args)?;
    let port = parse_port("RSYNC_PORT", &args.rsync_port)?;
    let user = user(&args.rsync_user)?;
    let host = host(args.rsync_host.as_deref())?;
    let path = path(args.rsync_path.as_deref())?;
    if !enabled {
        return Ok(Destination::Disabled);
    }
    let (Some(host), Some(path)) = (host, path) else {
        return Ok(Destination::Incomplete(ConfigError::Incomplete(
            "RSYNC_ENABLED=true but RSYNC_HOST or RSYNC_PATH is not set: set both".into(),
        )));
    };
    let path = match path.trim_end_matches('/') {
        "" => "/".to_string(),
        p => p.to_string(),
    };
    let accept_new = parse_bool(
        "RSYNC_ACCEPT_NEW_HOST_KEYS",
        &args.rsync_accept_new_host_keys,
    )?;
    let ssh_key = path_setting(&args.rsync_ssh_key).or_else(default_ssh_key);
    let known = path_setting(&args.rsync_known_hosts).or_else(default_known_hosts);
    let host_keys = match host_keys(known, accept_new, &host, port) {
        Ok(keys) => keys,
        Err(incomplete) => return Ok(Destination::Incomplete(incomplete)),
    };
    Ok(Destination::Enabled(RsyncConfig {
        host,
        user,
        port,
        path,
        ssh_key,
        host_keys,
        retention,
    }))
}

fn user(value: &str) -> Result<String, ConfigError> {
    if is_plain_word(value) {
        Ok(value.to_string())
    } else {
        Err(ConfigError::invalid(
            "RSYNC_USER",
            value,
            "use letters, digits, '.', '_' or '-' (not first)",
        ))
    }
}

fn host(value: Option<&str>) -> Result<Option<String>, ConfigError> {
    match value.filter(|h| !h.is_empty()) {
        Some(h) if !is_host(h) => Err(ConfigError::invalid(
            "RSYNC_HOST",
            h,
            "expected a host name or IP address",
        )),
        h => Ok(h.map(str::to_string)),
    }
}

fn path(value: Option<&str>) -> Result<Option<String>, ConfigError> {
    match value.filter(|p| !p.is_empty()) {
        Some(p)
            if !p.starts_with('/')
                || p.contains(['\n', '\0'])
                || p.split('/').any(|s| s == "..") =>
        {
            Err(ConfigError::invalid(
                "RSYNC_PATH",
                p,
                "expected an absolute path without '..'",
            ))
        }
        p => Ok(p.map(str::to_string)),
    }
}

/// Each deployment's default key: systemd credentials, Docker/Kubernetes secrets.
fn default_ssh_key() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = credentials_dir()
        .map(|d| d.join("rsync_ssh_key"))
        .into_iter()
        .collect();
    candidates.push(PathBuf::from("/run/secrets/pg_backups_ssh_key"));
    first_existing(candidates)
}

/// Each deployment's default known_hosts: systemd credentials, Docker/Kubernetes secrets,
/// `~/.ssh`.
fn default_known_hosts() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = credentials_dir()
        .map(|d| d.join("rsync_known_hosts"))
        .into_iter()
        .collect();
    candidates.push(PathBuf::from("/run/secrets/pg_backups_known_hosts"));
    candidates.push(home_ssh("known_hosts"));
    first_existing(candidates)
}

/// A host key is never trusted on first sight unless asked: without a known_hosts file and
/// without `RSYNC_ACCEPT_NEW_HOST_KEYS=true` the destination is incomplete.
fn host_keys(
    known: Option<PathBuf>,
    accept_new: bool,
    host: &str,
    port: u16,
) -> Result<HostKeys, ConfigError> {
    match (known, accept_new) {
        (Some(file), false) => Ok(HostKeys::Known(file)),
        (Some(file), true) => Ok(HostKeys::AcceptNew(file)),
        (None, true) => Ok(HostKeys::AcceptNew(home_ssh("known_hosts"))),
        (None, false) => Err(ConfigError::Incomplete(format!(
            "RSYNC_ENABLED=true but no known_hosts file holds the key of {host}: set \
             RSYNC_KNOWN_HOSTS to one (ssh-keyscan -p {port} {host} > known_hosts, then check \
             the key), or RSYNC_ACCEPT_NEW_HOST_KEYS=true to trust it on first contact (only \
             with a persistent ~/.ssh)"
        ))),
    }
}

/// The first of `candidates` that exists.
fn first_existing(candidates: Vec<PathBuf>) -> Option<PathBuf> {
    candidates.into_iter().find(|p| p.is_file())
}

fn credentials_dir() -> Option<PathBuf> {
    std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

fn home_ssh(file: &str) -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".ssh")
        .join(file)
}

fn is_plain_word(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
