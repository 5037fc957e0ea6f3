//! Settings, resolved once from flags, the environment and `--env-file` into a validated
//! [`Config`]. Commands never read the environment themselves.
//!
//! A value that is present but wrong is a usage error (64) naming the variable; a destination
//! that is enabled but lacks a required value is "configuration incomplete" (78), raised only
//! by commands that use that destination, so a broken S3 setting never stops a `dump`.
//!
//! One file per group of settings, each resolving and checking its own variables: `pg`,
//! `backup`, `retention`, `s3`, `rsync`, `restore`, `notify`; `parse` and `secrets` hold what
//! they share. An empty variable means "not set" before any of them runs: see
//! `crate::envfile`.

mod backup;
mod error;
pub(crate) mod notify;
mod notify_mail;
pub(crate) mod notify_urls;
mod parse;
mod pg;
mod restore;
mod retention;
mod rsync;
mod s3;
mod secrets;
mod service_url;

use std::path::PathBuf;
use std::sync::Arc;

use crate::backup::codec::{Decryption, Encryption, Layout};
use crate::cli::GlobalArgs;
use crate::schedule::Schedule;

pub use backup::DatabaseFilter;
pub use error::{ConfigError, redact_userinfo};
pub(crate) use parse::path_setting;
pub use parse::{parse_bool, parse_duration, parse_jobs, parse_size};
pub use pg::PgConfig;
pub use restore::{
    RestoreInputs, RestoreType, SourceKind, parse_sources, validate_database_name,
    validate_folder_arg,
};
pub use retention::RetentionRules;
pub use rsync::{HostKeys, RsyncConfig};
pub use s3::{S3Config, S3Credentials, S3LockMode, S3ObjectLock, S3Sse};
pub use secrets::Secrets;

/// How logs on stderr are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub(crate) fn parse(value: &str) -> Result<LogFormat, ConfigError> {
        match value.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(ConfigError::invalid(
                "LOG_FORMAT",
                value,
                "expected text or json",
            )),
        }
    }
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

/// `BACKUP_LOCAL_COPY=false` needs S3 to write to, and leaves rsync nothing to ship (it
/// copies the local folder): both are configuration errors (78) that name the two settings.
fn direct_to_s3_needs(
    s3: &Destination<S3Config>,
    rsync: &Destination<RsyncConfig>,
) -> Result<(), ConfigError> {
    if !s3.is_enabled() {
        return Err(ConfigError::Incomplete(
            "BACKUP_LOCAL_COPY=false streams every backup straight into S3, but S3_ENABLED is \
             not true: set S3_ENABLED=true and its settings, or BACKUP_LOCAL_COPY=true"
                .into(),
        ));
    }
    if rsync.is_enabled() {
        return Err(ConfigError::Incomplete(
            "BACKUP_LOCAL_COPY=false keeps no local copy, which RSYNC_ENABLED=true needs (rsync \
             ships the local folders): set RSYNC_ENABLED=false, or BACKUP_LOCAL_COPY=true"
                .into(),
        ));
    }
    Ok(())
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
    /// `BACKUP_LOCAL_COPY`: false when `dump` writes straight into S3 and keeps nothing here.
    pub local_copy: bool,
    pub local_retention: RetentionRules,
    pub s3: Destination<S3Config>,
    pub rsync: Destination<RsyncConfig>,
    pub metrics_file: Option<PathBuf>,
    pub log_format: LogFormat,
}

impl Config {
    /// Validates every global setting, group by group (the first wrong value is the one
    /// reported). Errors name the variable.
    pub fn from_args(args: &GlobalArgs, secrets: &Secrets) -> Result<Config, ConfigError> {
        let pg = PgConfig::from_args(args, secrets)?;
        let backup = backup::BackupSettings::from_args(args)?;
        let local_retention = RetentionRules::local(args)?;
        let s3 = s3::from_args(args, secrets)?;
        let rsync = rsync::from_args(args)?;
        let schedule = Schedule::parse(&args.backup_schedule).map_err(|reason| {
            ConfigError::invalid("BACKUP_SCHEDULE", &args.backup_schedule, reason)
        })?;
        // Used by the drill units only; a wrong one is refused here all the same.
        Schedule::parse(&args.drill_schedule).map_err(|reason| {
            ConfigError::invalid("DRILL_SCHEDULE", &args.drill_schedule, reason)
        })?;
        let log_format = LogFormat::parse(&args.log_format)?;
        if !backup.local_copy {
            direct_to_s3_needs(&s3, &rsync)?;
        }
        Ok(Config {
            pg,
            backup_dir: backup.backup_dir,
            schedule,
            databases: backup.databases,
            jobs: backup.jobs,
            layout: backup.layout,
            compression_level: backup.compression_level,
            encryption: backup.encryption,
            decryption: backup.decryption,
            local_copy: backup.local_copy,
            local_retention,
            s3,
            rsync,
            metrics_file: path_setting(&args.metrics_file),
            log_format,
        })
    }
}
