//! The top-level error: one variant per layer, each layer's error knowing its exit code.
//! `main` turns it into the JSON `error` object and the process exit code; nothing else exits.

use serde::Serialize;
use thiserror::Error;

use crate::backup::BackupError;
use crate::config::ConfigError;
use crate::lock::LockError;
use crate::pg::PgError;
use crate::storage::StorageError;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The asked-for backup, folder, file or database does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The operation would overwrite something without consent.
    #[error("{0}")]
    Refused(String),
    /// A data error that is not a checksum: SQL errors during a restore, a bad manifest.
    #[error("{0}")]
    Data(String),
    /// SIGINT or SIGTERM arrived; children were stopped.
    #[error("interrupted by a signal; child processes were stopped")]
    Interrupted,
    /// A bug: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(e) => e.exit_code(),
            Error::Lock(e) => e.exit_code(),
            Error::Pg(e) => e.exit_code(),
            Error::Backup(e) => e.exit_code(),
            Error::Storage(e) => e.exit_code(),
            Error::NotFound(_) => exitcode::NOINPUT,
            Error::Refused(_) => exitcode::CANTCREAT,
            Error::Data(_) => exitcode::DATAERR,
            // sysexits' "temporary failure, try again": like a held lock, the run did not
            // happen and the next one may. `error.kind` tells the two apart.
            Error::Interrupted => exitcode::TEMPFAIL,
            Error::Internal(_) => exitcode::SOFTWARE,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config(e) => e.kind(),
            Error::Lock(e) => e.kind(),
            Error::Pg(e) => e.kind(),
            Error::Backup(e) => e.kind(),
            Error::Storage(e) => e.kind(),
            Error::NotFound(_) => "not_found",
            Error::Refused(_) => "refused",
            Error::Data(_) => "data_error",
            Error::Interrupted => "interrupted",
            Error::Internal(_) => "internal",
        }
    }

    pub fn info(&self) -> ErrorInfo {
        ErrorInfo {
            kind: self.kind().to_string(),
            message: self.to_string(),
            exit_code: self.exit_code(),
        }
    }
}

/// The JSON form of an error: what kind, what happened and what to do.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorInfo {
    pub kind: String,
    pub message: String,
    pub exit_code: i32,
}

impl From<crate::signals::Interrupted> for Error {
    fn from(_: crate::signals::Interrupted) -> Error {
        Error::Interrupted
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
