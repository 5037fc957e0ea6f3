//! The PostgreSQL server: `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD(_FILE)`, `PGPASSFILE`,
//! `PGSSLMODE` (libpq's own names, which the client tools are given) and `PG_BIN_DIR`.

use std::path::PathBuf;

use super::ConfigError;
use super::parse::{non_empty, parse_port, path_setting};
use super::secrets::{Secrets, secret_with_file};
use crate::cli::GlobalArgs;
use crate::secret::Secret;

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

impl PgConfig {
    pub(crate) fn from_args(args: &GlobalArgs, secrets: &Secrets) -> Result<PgConfig, ConfigError> {
        let password = secret_with_file(
            "PGPASSWORD",
            secrets.get("PGPASSWORD").as_deref(),
            path_setting(&args.pgpassword_file).as_deref(),
        )?;
        Ok(PgConfig {
            host: non_empty("PGHOST", &args.pghost)?,
            host_defaulted: args.pghost_defaulted,
            port: parse_port("PGPORT", &args.pgport)?,
            user: non_empty("PGUSER", &args.pguser)?,
            password,
            passfile: path_setting(&args.pgpassfile),
            sslmode: sslmode(args.pgsslmode.as_deref())?,
            bin_dirs: bin_dirs(args.pg_bin_dir.as_deref()),
        })
    }
}

/// libpq's modes only: anything else would fail in every client tool, later and less clearly.
fn sslmode(value: Option<&str>) -> Result<Option<String>, ConfigError> {
    match value {
        None | Some("") => Ok(None),
        Some(m @ ("disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full")) => {
            Ok(Some(m.to_string()))
        }
        Some(other) => Err(ConfigError::invalid(
            "PGSSLMODE",
            other,
            "expected disable, allow, prefer, require, verify-ca or verify-full",
        )),
    }
}

fn bin_dirs(value: Option<&str>) -> Vec<PathBuf> {
    value
        .unwrap_or("")
        .split(':')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect()
}
