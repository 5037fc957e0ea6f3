//! What `dump` makes and where: `BACKUP_DIR`, `BACKUP_DATABASES`, `BACKUP_EXCLUDE_DATABASES`,
//! `BACKUP_JOBS`, `BACKUP_FORMAT`, `BACKUP_COMPRESSION(_LEVEL)`, and the age keys
//! (`AGE_RECIPIENTS(_FILE)` to encrypt, `AGE_IDENTITY_FILE` to decrypt).

use std::path::PathBuf;
use std::sync::Arc;

use super::ConfigError;
use super::parse::{comma_list, parse_range, path_setting};
use crate::backup::codec::{Compression, Decryption, Encryption, Format, KeyError, Layout};
use crate::cli::GlobalArgs;

/// Which databases `dump` takes.
#[derive(Debug, Clone, Default)]
pub struct DatabaseFilter {
    /// Empty means every database but the templates.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// The backup group, resolved; [`super::Config`] spreads it into its own fields.
pub(super) struct BackupSettings {
    pub backup_dir: PathBuf,
    pub databases: DatabaseFilter,
    pub jobs: usize,
    pub layout: Layout,
    pub compression_level: u32,
    pub encryption: Option<Arc<Encryption>>,
    pub decryption: Option<Arc<Decryption>>,
    pub local_copy: bool,
}

impl BackupSettings {
    pub(super) fn from_args(args: &GlobalArgs) -> Result<BackupSettings, ConfigError> {
        let databases = DatabaseFilter {
            include: comma_list(args.backup_databases.as_deref()),
            exclude: comma_list(args.backup_exclude_databases.as_deref()),
        };
        let jobs = parse_range("BACKUP_JOBS", &args.backup_jobs, 1, 64)? as usize;
        let format = format(&args.backup_format)?;
        let compression = compression(&args.backup_compression)?;
        let compression_level = compression_level(compression, &args.backup_compression_level)?;
        let encryption = encryption(args)?;
        let decryption = decryption(&args.age_identity_file)?;
        let layout = Layout {
            format,
            compression,
            encrypted: encryption.is_some(),
        };
        if args.backup_dir.trim().is_empty() {
            return Err(ConfigError::invalid("BACKUP_DIR", "", "must not be empty"));
        }
        let local_copy = super::parse_bool("BACKUP_LOCAL_COPY", &args.backup_local_copy)?;
        Ok(BackupSettings {
            local_copy,
            backup_dir: PathBuf::from(&args.backup_dir),
            databases,
            jobs,
            layout,
            compression_level,
            encryption,
            decryption,
        })
    }
}

fn format(value: &str) -> Result<Format, ConfigError> {
    Format::parse(value)
        .ok_or_else(|| ConfigError::invalid("BACKUP_FORMAT", value, "expected plain or custom"))
}

fn compression(value: &str) -> Result<Compression, ConfigError> {
    Compression::parse(value)
        .ok_or_else(|| ConfigError::invalid("BACKUP_COMPRESSION", value, "expected gzip or zstd"))
}

/// The range depends on the compression: gzip 1-9, zstd 1-19.
fn compression_level(compression: Compression, value: &Option<String>) -> Result<u32, ConfigError> {
    match value.as_deref() {
        None | Some("") => Ok(compression.default_level()),
        Some(v) => {
            let (min, max) = compression.levels();
            Ok(parse_range("BACKUP_COMPRESSION_LEVEL", v, min.into(), max.into())? as u32)
        }
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
    let invalid = |var, e: KeyError| ConfigError::Invalid {
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

/// `AGE_IDENTITY_FILE`, read and checked now so that a verify or restore fails before any
/// download, not at its first file.
fn decryption(value: &Option<String>) -> Result<Option<Arc<Decryption>>, ConfigError> {
    let Some(path) = path_setting(value) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::File {
        var: "AGE_IDENTITY_FILE",
        path: path.clone(),
        source,
    })?;
    let parsed = Decryption::parse(&text).map_err(|e| ConfigError::Invalid {
        var: "AGE_IDENTITY_FILE",
        value: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Some(Arc::new(parsed)))
}
