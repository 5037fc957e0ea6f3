//! Settings, resolved once from flags, the environment and `--env-file` into a validated
//! [`Config`]. Commands never read the environment themselves.
//!
//! A value that is present but wrong is a usage error (64) naming the variable; a destination
//! that is enabled but lacks a required value is "configuration incomplete" (78), raised only
//! by commands that use that destination, so a broken S3 setting never stops a `dump`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use std::sync::Arc;

use crate::backup::codec::{Compression, Decryption, Encryption, Format, Layout};
use crate::cli::{GlobalArgs, RestoreArgs};
use crate::schedule::Schedule;
use crate::secret::Secret;

/// Secrets are looked up here: the process environment first, then `--env-file`. Secrets
/// from the file never enter the environment, so no child process can inherit them.
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    from_file: std::collections::BTreeMap<String, String>,
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

/// How logs on stderr are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Connection settings for the PostgreSQL tools.
#[derive(Debug, Clone)]
pub struct PgConfig {
    pub host: String,
    /// PGHOST was not given (the original system's default host is used).
    pub host_defaulted: bool,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub passfile: Option<PathBuf>,
    pub sslmode: Option<String>,
    /// Directories of client tools (`PG_BIN_DIR`, `:`-separated); empty: look for them.
    pub bin_dirs: Vec<PathBuf>,
}

/// Which databases `dump` takes.
#[derive(Debug, Clone, Default)]
pub struct DatabaseFilter {
    /// Empty means every database but the templates.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// Retention rules of one destination (DESIGN.md guarantee 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionRules {
    /// Keep every complete backup younger than this, plus the youngest older one. Never 0.
    pub days: u32,
    /// Keep the N newest complete backups whatever their age.
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
}

/// A destination that may be off, on, or switched on without what it needs.
#[derive(Debug)]
pub enum Destination<T> {
    Disabled,
    Enabled(T),
    /// Enabled but incomplete: the error is raised by the commands that use it.
    Incomplete(ConfigError),
}

impl<T> Destination<T> {
    /// The settings when enabled; the stored 78 error when enabled but incomplete.
    pub fn get(&self) -> Result<Option<&T>, ConfigError> {
        match self {
            Destination::Disabled => Ok(None),
            Destination::Enabled(t) => Ok(Some(t)),
            Destination::Incomplete(e) => Err(ConfigError::Incomplete(e.to_string())),
        }
    }

    pub fn is_enabled(&self) -> bool {
        !matches!(self, Destination::Disabled)
    }
}

#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    pub endpoint: Option<String>,
    /// Without leading or trailing slashes; empty for the bucket root.
    pub prefix: String,
    pub force_path_style: bool,
    /// Static keys; `None` uses the SDK's default chain (IAM roles, profiles, web identity).
    pub credentials: Option<S3Credentials>,
    pub part_size: Option<u64>,
    pub max_parts: u64,
    pub retention: RetentionRules,
    pub sse: Option<S3Sse>,
    pub storage_class: Option<String>,
}

/// Static S3 credentials: `S3_ACCESS_KEY`/`S3_SECRET_KEY`, else `AWS_ACCESS_KEY_ID`/
/// `AWS_SECRET_ACCESS_KEY` (with `AWS_SESSION_TOKEN`).
#[derive(Debug, Clone)]
pub struct S3Credentials {
    pub access_key: Secret,
    pub secret_key: Secret,
    pub session_token: Option<Secret>,
}

impl S3Credentials {
    pub fn new(access_key: &str, secret_key: &str) -> S3Credentials {
        S3Credentials {
            access_key: Secret::new(access_key.to_string()),
            secret_key: Secret::new(secret_key.to_string()),
            session_token: None,
        }
    }
}

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

/// Every setting a run may need, validated.
#[derive(Debug)]
pub struct Config {
    pub pg: PgConfig,
    pub backup_dir: PathBuf,
    pub schedule: Schedule,
    pub databases: DatabaseFilter,
    pub jobs: usize,
    /// How the files of a new backup are stored.
    pub layout: Layout,
    pub compression_level: u32,
    /// `AGE_RECIPIENTS`: every file of a new backup is encrypted to them.
    pub encryption: Option<Arc<Encryption>>,
    /// `AGE_IDENTITY_FILE`: what verify and restore decrypt with.
    pub decryption: Option<Arc<Decryption>>,
    pub local_retention: RetentionRules,
    pub s3: Destination<S3Config>,
    pub rsync: Destination<RsyncConfig>,
    pub metrics_file: Option<PathBuf>,
    pub log_format: LogFormat,
}

impl Config {
    /// Validates every global setting. Errors name the variable.
    pub fn from_args(args: &GlobalArgs, secrets: &Secrets) -> Result<Config, ConfigError> {
        let password = secret_with_file(
            "PGPASSWORD",
            secrets.get("PGPASSWORD").as_deref(),
            path_setting(&args.pgpassword_file).as_deref(),
        )?;
        let pg = PgConfig {
            host: non_empty("PGHOST", &args.pghost)?,
            host_defaulted: args.pghost_defaulted,
            port: parse_port("PGPORT", &args.pgport)?,
            user: non_empty("PGUSER", &args.pguser)?,
            password,
            passfile: path_setting(&args.pgpassfile),
            sslmode: match args.pgsslmode.as_deref() {
                None | Some("") => None,
                Some(
                    m @ ("disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full"),
                ) => Some(m.to_string()),
                Some(other) => {
                    return Err(ConfigError::invalid(
                        "PGSSLMODE",
                        other,
                        "expected disable, allow, prefer, require, verify-ca or verify-full",
                    ));
                }
            },
            bin_dirs: args
                .pg_bin_dir
                .as_deref()
                .unwrap_or("")
                .split(':')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect(),
        };

        let databases = DatabaseFilter {
            include: comma_list(args.backup_databases.as_deref()),
            exclude: comma_list(args.backup_exclude_databases.as_deref()),
        };
        let jobs = parse_range("BACKUP_JOBS", &args.backup_jobs, 1, 64)? as usize;
        let format = Format::parse(&args.backup_format).ok_or_else(|| {
            ConfigError::invalid(
                "BACKUP_FORMAT",
                &args.backup_format,
                "expected plain or custom",
            )
        })?;
        let compression = Compression::parse(&args.backup_compression).ok_or_else(|| {
            ConfigError::invalid(
                "BACKUP_COMPRESSION",
                &args.backup_compression,
                "expected gzip or zstd",
            )
        })?;
        let compression_level = match args.backup_compression_level.as_deref() {
            None | Some("") => compression.default_level(),
            Some(v) => {
                let (min, max) = compression.levels();
                parse_range("BACKUP_COMPRESSION_LEVEL", v, min.into(), max.into())? as u32
            }
        };
        let encryption = encryption(args)?;
        let decryption = match path_setting(&args.age_identity_file) {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::File {
                    var: "AGE_IDENTITY_FILE",
                    path: path.clone(),
                    source,
                })?;
                Some(Arc::new(Decryption::parse(&text).map_err(|e| {
                    ConfigError::Invalid {
                        var: "AGE_IDENTITY_FILE",
                        value: path.display().to_string(),
                        reason: e.to_string(),
                    }
                })?))
            }
        };
        let layout = Layout {
            format,
            compression,
            encrypted: encryption.is_some(),
        };
        if args.backup_dir.trim().is_empty() {
            return Err(ConfigError::invalid("BACKUP_DIR", "", "must not be empty"));
        }

        let local_retention = retention(
            ("LOCAL_RETENTION_DAYS", &args.local_retention_days),
            ("LOCAL_KEEP_LAST", &args.local_keep_last),
            ("LOCAL_KEEP_DAILY", &args.local_keep_daily),
            ("LOCAL_KEEP_WEEKLY", &args.local_keep_weekly),
            ("LOCAL_KEEP_MONTHLY", &args.local_keep_monthly),
        )?;

        let s3 = s3_config(args, secrets)?;
        let rsync = rsync_config(args)?;
        let schedule = Schedule::parse(&args.backup_schedule).map_err(|reason| {
            ConfigError::invalid("BACKUP_SCHEDULE", &args.backup_schedule, reason)
        })?;

        let log_format = match args.log_format.to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                return Err(ConfigError::invalid(
                    "LOG_FORMAT",
                    &args.log_format,
                    "expected text or json",
                ));
            }
        };
        Ok(Config {
            pg,
            backup_dir: PathBuf::from(&args.backup_dir),
            schedule,
            databases,
            jobs,
            layout,
            compression_level,
            encryption,
            decryption,
            local_retention,
            s3,
            rsync,
            metrics_file: path_setting(&args.metrics_file),
            log_format,
        })
    }
}

/// `AGE_RECIPIENTS` and `AGE_RECIPIENTS_FILE` (both may be given: every key in either).
fn encryption(args: &GlobalArgs) -> Result<Option<Arc<Encryption>>, ConfigError> {
    let list = args.age_recipients.clone().unwrap_or_default();
    let file_lines = match path_setting(&args.age_recipients_file) {
        None => String::new(),
        Some(path) => std::fs::read_to_string(&path).map_err(|source| ConfigError::File {
            var: "AGE_RECIPIENTS_FILE",
            path,
            source,
        })?,
    };
    let invalid = |var, e: crate::backup::codec::KeyError| ConfigError::Invalid {
        var,
        value: String::new(),
        reason: e.to_string(),
    };
    // The list on its own first: once it is good, a bad key can only be in the file, and
    // each is blamed on the setting that holds it.
    Encryption::parse(&list, "").map_err(|e| invalid("AGE_RECIPIENTS", e))?;
    Encryption::parse(&list, &file_lines)
        .map(|e| e.map(Arc::new))
        .map_err(|e| invalid("AGE_RECIPIENTS_FILE", e))
}

/// Server-side encryption of S3 objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Sse {
    Aes256,
    Kms { key_id: Option<String> },
}

fn s3_config(args: &GlobalArgs, secrets: &Secrets) -> Result<Destination<S3Config>, ConfigError> {
    let enabled = parse_bool("S3_ENABLED", &args.s3_enabled)?;
    let retention = retention(
        ("S3_RETENTION_DAYS", &args.s3_retention_days),
        ("S3_KEEP_LAST", &args.s3_keep_last),
        ("S3_KEEP_DAILY", &args.s3_keep_daily),
        ("S3_KEEP_WEEKLY", &args.s3_keep_weekly),
        ("S3_KEEP_MONTHLY", &args.s3_keep_monthly),
    )?;
    let force_path_style = parse_bool("S3_FORCE_PATH_STYLE", &args.s3_force_path_style)?;
    let max_parts = parse_range("S3_MAX_PARTS", &args.s3_max_parts, 1, 10_000)?;
    let part_size = match args.s3_part_size.as_deref() {
        None | Some("") => None,
        Some(v) => {
            let size = parse_size("S3_PART_SIZE", v)?;
            if !(5 * MIB..=5 * 1024 * MIB).contains(&size) {
                return Err(ConfigError::invalid(
                    "S3_PART_SIZE",
                    v,
                    "S3 parts must be between 5MiB and 5GiB",
                ));
            }
            Some(size)
        }
    };
    // The AWS tools' variables count whenever ours are not set.
    let endpoint = match non_empty_env(
        args.s3_endpoint.as_deref(),
        &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
    ) {
        None => None,
        Some((var, e)) => Some(validate_endpoint(var, &e)?),
    };
    let access = secret_with_file(
        "S3_ACCESS_KEY",
        secrets.get("S3_ACCESS_KEY").as_deref(),
        path_setting(&args.s3_access_key_file).as_deref(),
    )?;
    let secret = secret_with_file(
        "S3_SECRET_KEY",
        secrets.get("S3_SECRET_KEY").as_deref(),
        path_setting(&args.s3_secret_key_file).as_deref(),
    )?;
    let bucket = args.s3_bucket.clone().filter(|b| !b.is_empty());
    if let Some(b) = &bucket {
        validate_bucket(b)?;
    }
    let kms_key = args
        .s3_sse_kms_key_id
        .clone()
        .filter(|k| !k.trim().is_empty());
    let sse = match args.s3_sse.as_deref().map(str::trim) {
        None | Some("") => None,
        Some("AES256") => Some(S3Sse::Aes256),
        Some("aws:kms") => Some(S3Sse::Kms {
            key_id: kms_key.clone(),
        }),
        Some(other) => {
            return Err(ConfigError::invalid(
                "S3_SSE",
                other,
                "expected AES256 or aws:kms",
            ));
        }
    };
    if kms_key.is_some() && !matches!(sse, Some(S3Sse::Kms { .. })) {
        return Err(ConfigError::Conflict(
            "S3_SSE_KMS_KEY_ID is set but S3_SSE is not aws:kms: set S3_SSE=aws:kms, or unset the key".into(),
        ));
    }
    let storage_class = match args.s3_storage_class.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(c) if !c.is_empty() && c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') => {
            Some(c.to_string())
        }
        Some(c) => {
            return Err(ConfigError::invalid(
                "S3_STORAGE_CLASS",
                c,
                "expected a storage class like STANDARD_IA or GLACIER_IR",
            ));
        }
    };
    let prefix = args.s3_prefix.trim_matches('/').to_string();
    if prefix.split('/').any(|p| p == ".." || p == ".") {
        return Err(ConfigError::invalid(
            "S3_PREFIX",
            &args.s3_prefix,
            "must not contain . or .. segments",
        ));
    }
    if !enabled {
        return Ok(Destination::Disabled);
    }
    let credentials = match (access, secret) {
        (Some(a), Some(s)) => Some(S3Credentials {
            access_key: a,
            secret_key: s,
            session_token: None,
        }),
        (None, None) => match (
            secrets.get("AWS_ACCESS_KEY_ID"),
            secrets.get("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(a), Some(s)) => Some(S3Credentials {
                access_key: Secret::new(a),
                secret_key: Secret::new(s),
                session_token: secrets.get("AWS_SESSION_TOKEN").map(Secret::new),
            }),
            // Profiles, web identity, instance roles: the SDK's own chain.
            _ => None,
        },
        (Some(_), None) => {
            return Ok(Destination::Incomplete(ConfigError::Incomplete(
                "S3_ACCESS_KEY is set but S3_SECRET_KEY is not: set both, or neither to use \
                 the SDK's default credential chain"
                    .into(),
            )));
        }
        (None, Some(_)) => {
            return Ok(Destination::Incomplete(ConfigError::Incomplete(
                "S3_SECRET_KEY is set but S3_ACCESS_KEY is not: set both, or neither to use \
                 the SDK's default credential chain"
                    .into(),
            )));
        }
    };
    let Some(bucket) = bucket else {
        return Ok(Destination::Incomplete(ConfigError::Incomplete(
            "S3_ENABLED=true but S3_BUCKET is not set: set S3_BUCKET (and S3_ENDPOINT for \
             providers other than AWS)"
                .into(),
        )));
    };
    let region = match non_empty_env(
        args.s3_region.as_deref(),
        &["AWS_REGION", "AWS_DEFAULT_REGION"],
    ) {
        Some((_, r)) => r,
        None if endpoint.is_some() => "us-east-1".to_string(),
        None => {
            return Ok(Destination::Incomplete(ConfigError::Incomplete(
                "S3_ENABLED=true but S3_REGION is not set: set S3_REGION (or AWS_REGION, or \
                 S3_ENDPOINT for an S3-compatible provider)"
                    .into(),
            )));
        }
    };
    Ok(Destination::Enabled(S3Config {
        bucket,
        region,
        endpoint,
        prefix,
        force_path_style,
        credentials,
        part_size,
        max_parts,
        retention,
        sse,
        storage_class,
    }))
}

fn rsync_config(args: &GlobalArgs) -> Result<Destination<RsyncConfig>, ConfigError> {
    let enabled = parse_bool("RSYNC_ENABLED", &args.rsync_enabled)?;
    let retention = retention(
        ("RSYNC_RETENTION_DAYS", &args.rsync_retention_days),
        ("RSYNC_KEEP_LAST", &args.rsync_keep_last),
        ("RSYNC_KEEP_DAILY", &args.rsync_keep_daily),
        ("RSYNC_KEEP_WEEKLY", &args.rsync_keep_weekly),
        ("RSYNC_KEEP_MONTHLY", &args.rsync_keep_monthly),
    )?;
    let port = parse_port("RSYNC_PORT", &args.rsync_port)?;
    let user = args.rsync_user.clone();
    if !is_plain_word(&user) {
        return Err(ConfigError::invalid(
            "RSYNC_USER",
            &user,
            "use letters, digits, '.', '_' or '-' (not first)",
        ));
    }
    let host = args.rsync_host.clone().filter(|h| !h.is_empty());
    if let Some(h) = &host
        && !is_host(h)
    {
        return Err(ConfigError::invalid(
            "RSYNC_HOST",
            h,
            "expected a host name or IP address",
        ));
    }
    let path = args.rsync_path.clone().filter(|p| !p.is_empty());
    if let Some(p) = &path
        && (!p.starts_with('/') || p.contains(['\n', '\0']) || p.split('/').any(|s| s == ".."))
    {
        return Err(ConfigError::invalid(
            "RSYNC_PATH",
            p,
            "expected an absolute path without '..'",
        ));
    }
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
    // Each deployment's default: systemd credentials, Docker/Kubernetes secrets, ~/.ssh.
    let ssh_key = path_setting(&args.rsync_ssh_key).or_else(|| {
        let mut candidates: Vec<PathBuf> = credentials_dir()
            .map(|d| d.join("rsync_ssh_key"))
            .into_iter()
            .collect();
        candidates.push(PathBuf::from("/run/secrets/pg_backups_ssh_key"));
        first_existing(candidates)
    });
    let known = path_setting(&args.rsync_known_hosts).or_else(|| {
        let mut candidates: Vec<PathBuf> = credentials_dir()
            .map(|d| d.join("rsync_known_hosts"))
            .into_iter()
            .collect();
        candidates.push(PathBuf::from("/run/secrets/pg_backups_known_hosts"));
        candidates.push(home_ssh("known_hosts"));
        first_existing(candidates)
    });
    let host_keys = match (known, accept_new) {
        (Some(file), false) => HostKeys::Known(file),
        (Some(file), true) => HostKeys::AcceptNew(file),
        (None, true) => HostKeys::AcceptNew(home_ssh("known_hosts")),
        (None, false) => {
            return Ok(Destination::Incomplete(ConfigError::Incomplete(format!(
                "RSYNC_ENABLED=true but no known_hosts file holds the key of {host}: set \
                 RSYNC_KNOWN_HOSTS to one (ssh-keyscan -p {port} {host} > known_hosts, then check \
                 the key), or RSYNC_ACCEPT_NEW_HOST_KEYS=true to trust it on first contact (only \
                 with a persistent ~/.ssh)"
            ))));
        }
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

/// How the remote host's key is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeys {
    /// Only keys in this file are trusted.
    Known(PathBuf),
    /// `RSYNC_ACCEPT_NEW_HOST_KEYS=true`: a new host is trusted on first contact and remembered
    /// in this file; a changed key is still refused.
    AcceptNew(PathBuf),
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

/// Where a restore or verify reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Local,
    S3,
    Remote,
}

impl SourceKind {
    pub fn parse(var: &'static str, value: &str) -> Result<SourceKind, ConfigError> {
        match value.to_ascii_lowercase().as_str() {
            "local" => Ok(SourceKind::Local),
            "s3" => Ok(SourceKind::S3),
            "remote" | "rsync" => Ok(SourceKind::Remote),
            _ => Err(ConfigError::invalid(
                var,
                value,
                "expected local, s3 or remote",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Local => "local",
            SourceKind::S3 => "s3",
            SourceKind::Remote => "remote",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `--source` of list, prune and pin: one destination, or every enabled one.
pub fn parse_sources(value: &str) -> Result<Option<SourceKind>, ConfigError> {
    if value.eq_ignore_ascii_case("all") {
        Ok(None)
    } else {
        SourceKind::parse("--source", value).map(Some).map_err(|_| {
            ConfigError::invalid("--source", value, "expected local, s3, remote or all")
        })
    }
}

/// What kind of restore is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreType {
    Cluster,
    Globals,
    Database,
}

impl RestoreType {
    pub fn parse(value: &str) -> Result<RestoreType, ConfigError> {
        match value.to_ascii_lowercase().as_str() {
            "cluster" => Ok(RestoreType::Cluster),
            "globals" => Ok(RestoreType::Globals),
            "database" => Ok(RestoreType::Database),
            _ => Err(ConfigError::invalid(
                "RESTORE_TYPE",
                value,
                "expected cluster, globals or database",
            )),
        }
    }
}

/// The restore inputs that were given; the missing ones are prompted for or are exit 64.
#[derive(Debug, Clone, Default)]
pub struct RestoreInputs {
    pub source: Option<SourceKind>,
    /// A validated folder name or `latest`.
    pub folder: Option<String>,
    pub restore_type: Option<RestoreType>,
    pub database: Option<String>,
    pub target_database: Option<String>,
    pub drop_existing: bool,
    pub restore_dir: Option<PathBuf>,
    /// pg_restore -j for custom-format files.
    pub jobs: u32,
}

impl RestoreInputs {
    pub fn from_args(args: &RestoreArgs) -> Result<RestoreInputs, ConfigError> {
        let present = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let source = present(&args.source)
            .map(|s| SourceKind::parse("RESTORE_SOURCE", &s))
            .transpose()?;
        let folder = present(&args.folder)
            .map(|f| validate_folder_arg("RESTORE_FOLDER", &f))
            .transpose()?;
        let restore_type = present(&args.restore_type)
            .map(|t| RestoreType::parse(&t))
            .transpose()?;
        let drop_existing = match present(&args.drop_existing) {
            None => false,
            Some(v) => parse_bool("RESTORE_DROP_EXISTING", &v)?,
        };
        let database = present(&args.database);
        let target_database = present(&args.target_database);
        for (var, name) in [
            ("RESTORE_DATABASE", &database),
            ("RESTORE_TARGET_DATABASE", &target_database),
        ] {
            if let Some(n) = name {
                validate_database_name(var, n)?;
            }
        }
        if restore_type.is_some_and(|t| t != RestoreType::Database) && target_database.is_some() {
            return Err(ConfigError::Conflict(
                "RESTORE_TARGET_DATABASE only applies to RESTORE_TYPE=database".into(),
            ));
        }
        Ok(RestoreInputs {
            source,
            folder,
            restore_type,
            database,
            target_database,
            drop_existing,
            restore_dir: path_setting(&args.restore_dir),
            jobs: parse_jobs("RESTORE_JOBS", &args.jobs)?,
        })
    }
}

/// A folder argument is `latest` or a valid folder name; anything else never reaches a path.
pub fn validate_folder_arg(var: &'static str, value: &str) -> Result<String, ConfigError> {
    if value == "latest" || crate::backup::FolderName::parse(value).is_some() {
        Ok(value.to_string())
    } else {
        Err(ConfigError::invalid(
            var,
            value,
            "expected a folder name like 20251005_120000 (UTC, YYYYMMDD_HHMMSS) or latest",
        ))
    }
}

/// PostgreSQL accepts almost any name; we refuse only what cannot be one, and line breaks,
/// which no backup can hold (pg_dump refuses them) and which could end a comment or start a
/// psql command in what we write.
pub fn validate_database_name(var: &'static str, name: &str) -> Result<(), ConfigError> {
    if name.len() > 63 {
        return Err(ConfigError::invalid(
            var,
            name,
            "PostgreSQL names are at most 63 bytes",
        ));
    }
    if name.contains('\0') {
        return Err(ConfigError::invalid(
            var,
            &name.replace('\0', "\\0"),
            "contains a NUL byte",
        ));
    }
    if name.contains(['\n', '\r']) {
        return Err(ConfigError::invalid(
            var,
            &name.escape_debug().to_string(),
            "contains a line break, which pg_dump refuses and no backup holds",
        ));
    }
    Ok(())
}

/// Our variable when set (not empty), else the first of the AWS tools' ones that is.
fn non_empty_env(ours: Option<&str>, aws: &[&'static str]) -> Option<(&'static str, String)> {
    if let Some(v) = ours.filter(|v| !v.trim().is_empty()) {
        return Some(("", v.to_string()));
    }
    aws.iter().find_map(|var| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*var, v))
    })
}

/// Parses `26h`, `90m`, `2d`, `1h30m`, `3600s`: a number without a unit is refused (is it
/// hours? seconds?).
pub fn parse_duration(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let bad = || {
        ConfigError::invalid(
            var,
            value,
            "expected a duration with a unit, like 26h, 90m, 2d or 1h30m",
        )
    };
    let v = value.trim();
    if v.is_empty() || v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

const MIB: u64 = 1024 * 1024;

/// Parses `64MiB`, `64MB`, `64M`, `1GiB` or a byte count. Powers of 1024 throughout:
/// operators write `64MB` and mean the same thing.
pub fn parse_size(var: &'static str, value: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::invalid(var, value, "expected a size like 64MiB, 512MB or 1GiB");
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => 1024 * MIB,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

fn retention(
    days: (&'static str, &str),
    last: (&'static str, &str),
    daily: (&'static str, &str),
    weekly: (&'static str, &str),
    monthly: (&'static str, &str),
) -> Result<RetentionRules, ConfigError> {
    let d = parse_range(days.0, days.1, 0, 100_000)?;
    if d == 0 {
        return Err(ConfigError::invalid(
            days.0,
            days.1,
            "0 would mean \"delete everything\" and is refused; use 1 or more days",
        ));
    }
    Ok(RetentionRules {
        days: d as u32,
        keep_last: parse_range(last.0, last.1, 0, 100_000)? as u32,
        keep_daily: parse_range(daily.0, daily.1, 0, 100_000)? as u32,
        keep_weekly: parse_range(weekly.0, weekly.1, 0, 100_000)? as u32,
        keep_monthly: parse_range(monthly.0, monthly.1, 0, 100_000)? as u32,
    })
}

/// `RESTORE_JOBS`: 1 to 64, empty meaning 1.
pub fn parse_jobs(var: &'static str, value: &str) -> Result<u32, ConfigError> {
    if value.trim().is_empty() {
        return Ok(1);
    }
    Ok(parse_range(var, value, 1, 64)? as u32)
}

fn parse_range(var: &'static str, value: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n: u64 = value.trim().parse().map_err(|_| {
        ConfigError::invalid(
            var,
            value,
            format!("expected a whole number from {min} to {max}"),
        )
    })?;
    if n < min || n > max {
        return Err(ConfigError::invalid(
            var,
            value,
            format!("must be from {min} to {max}"),
        ));
    }
    Ok(n)
}

fn parse_port(var: &'static str, value: &str) -> Result<u16, ConfigError> {
    parse_range(var, value, 1, 65_535)
        .map(|p| p as u16)
        .map_err(|_| ConfigError::invalid(var, value, "expected a port number from 1 to 65535"))
}

/// Accepts the spellings operators use in `.env` files.
pub fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::invalid(var, value, "expected true or false")),
    }
}

fn non_empty(var: &'static str, value: &str) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        Err(ConfigError::invalid(var, value, "must not be empty"))
    } else {
        Ok(value.to_string())
    }
}

/// A path setting; empty means unset.
pub(crate) fn path_setting(value: &Option<String>) -> Option<PathBuf> {
    value
        .as_deref()
        .filter(|v| !v.trim().is_empty())
        .map(PathBuf::from)
}

fn comma_list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
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
        (None, Some(path)) => {
            let file_var: &'static str = match var {
                "PGPASSWORD" => "PGPASSWORD_FILE",
                "S3_ACCESS_KEY" => "S3_ACCESS_KEY_FILE",
                "S3_SECRET_KEY" => "S3_SECRET_KEY_FILE",
                "NOTIFY_URL" => "NOTIFY_URL_FILE",
                "HEALTHCHECK_URL" => "HEALTHCHECK_URL_FILE",
                _ => "secret file",
            };
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
            Ok(Some(Secret::new(text)))
        }
        (None, None) => Ok(None),
    }
}

fn validate_endpoint(var: &'static str, value: &str) -> Result<String, ConfigError> {
    let var = if var.is_empty() { "S3_ENDPOINT" } else { var };
    let bad = |why: &str| ConfigError::invalid(var, value, why);
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| bad("expected a URL starting with https:// or http://"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) || rest.contains(' ') {
        return Err(bad(
            "expected a URL like https://fra1.digitaloceanspaces.com",
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') && !h.contains(':') => (h, Some(p)),
        Some((h, p)) if h.starts_with('[') => (h, Some(p)),
        _ => (authority, None),
    };
    if host.is_empty() || !(host.starts_with('[') || is_host(host)) {
        return Err(bad("the host name is not valid"));
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(bad("the port is not a number from 1 to 65535"));
    }
    Ok(value.trim_end_matches('/').to_string())
}

fn validate_bucket(bucket: &str) -> Result<(), ConfigError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'))
        && bucket
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            "S3_BUCKET",
            bucket,
            "expected 3-63 lowercase letters, digits, '.', '-' (a bucket name, not a URL)",
        ))
    }
}

fn is_plain_word(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn is_host(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        let cases = [
            ("26h", 26 * 3600),
            ("90m", 5400),
            ("2d", 172_800),
            ("1h30m", 5400),
            ("45s", 45),
        ];
        for (text, secs) in cases {
            assert_eq!(
                parse_duration("X", text).unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
        for bad in ["", "h", "26x", "0h", "-1h", "1.5h", "3600", "26"] {
            assert!(parse_duration("X", bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn sizes_accept_operator_spellings() {
        assert_eq!(parse_size("X", "64MiB").unwrap(), 64 * MIB);
        assert_eq!(parse_size("X", "64MB").unwrap(), 64 * MIB);
        assert_eq!(parse_size("X", "1g").unwrap(), 1024 * MIB);
        assert_eq!(parse_size("X", "1048576").unwrap(), MIB);
        assert!(parse_size("X", "lots").is_err());
    }

    #[test]
    fn booleans_accept_env_file_spellings() {
        for t in ["true", "TRUE", "1", "yes", "on"] {
            assert!(parse_bool("X", t).unwrap());
        }
        for f in ["false", "0", "no", "off", ""] {
            assert!(!parse_bool("X", f).unwrap());
        }
        assert!(parse_bool("X", "maybe").is_err());
    }

    #[test]
    fn endpoints_must_be_urls() {
        assert!(validate_endpoint("", "https://fra1.digitaloceanspaces.com").is_ok());
        assert!(validate_endpoint("", "http://127.0.0.1:8333").is_ok());
        assert!(validate_endpoint("", "http://[::1]:8333").is_ok());
        for bad in [
            "fra1.digitaloceanspaces.com",
            "ftp://x",
            "http://",
            "http://host:port",
            "http://a b",
            "http://user@host",
        ] {
            assert!(
                validate_endpoint("", bad).is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn urls_in_messages_lose_their_credentials() {
        assert_eq!(
            redact_userinfo("https://AKIA:s3cr3t@host:9000/x and http://h/p"),
            "https://***@host:9000/x and http://h/p"
        );
        let e = ConfigError::invalid("S3_ENDPOINT", "https://KEY:SECRET@host", "bad");
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }

    #[test]
    fn database_names_with_line_breaks_or_nul_are_refused() {
        for bad in ["a\nb", "a\rb", "a\0b"] {
            let e = validate_database_name("RESTORE_TARGET_DATABASE", bad).unwrap_err();
            assert_eq!(e.exit_code(), 64, "{bad:?}");
        }
        assert!(validate_database_name("X", "my db \"x\"").is_ok());
    }

    #[test]
    fn folder_arguments_are_latest_or_a_timestamp() {
        assert!(validate_folder_arg("RESTORE_FOLDER", "latest").is_ok());
        assert!(validate_folder_arg("RESTORE_FOLDER", "20251005_120000").is_ok());
        for bad in ["../x", "latest;rm", "20251005_12000", "2025100a_120000", ""] {
            assert!(validate_folder_arg("RESTORE_FOLDER", bad).is_err(), "{bad}");
        }
    }
}
