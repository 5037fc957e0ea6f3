//! What a restore is asked for: `RESTORE_SOURCE`, `RESTORE_FOLDER`, `RESTORE_TYPE`,
//! `RESTORE_DATABASE`, `RESTORE_TARGET_DATABASE`, `RESTORE_DROP_EXISTING`, `RESTORE_DIR`,
//! `RESTORE_JOBS`, and the checks on folder and database names that every command shares.

use std::fmt;
use std::path::PathBuf;

use super::ConfigError;
use super::parse::{parse_bool, parse_jobs, path_setting};
use crate::cli::RestoreArgs;

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

#[cfg(test)]
mod tests {
    use super::*;

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
