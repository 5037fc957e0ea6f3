use std::path::PathBuf;

use thiserror::Error;

/// What a failed tool's stderr says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The server cannot be reached or went away (69).
    Unreachable,
    /// Authentication refused (77).
    Auth,
    /// Authenticated but not allowed (77).
    Permission,
    /// The database does not exist (66).
    NoDatabase,
    /// Anything else the server or tool reported (69).
    Other,
}

impl FailureClass {
    pub fn from_stderr(stderr: &str) -> FailureClass {
        let s = stderr.to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| s.contains(n));
        if has(&[
            "password authentication failed",
            "no password supplied",
            "pg_hba.conf",
            "authentication failed",
            "peer authentication",
            "role \"",
        ]) && !has(&["permission denied"])
            && (s.contains("fatal") || s.contains("authentication") || s.contains("password"))
        {
            return FailureClass::Auth;
        }
        if has(&[
            "permission denied",
            "must be superuser",
            "must be owner",
            "must have privileges",
            "insufficient privilege",
        ]) {
            return FailureClass::Permission;
        }
        if s.contains("database \"") && s.contains("\" does not exist") {
            return FailureClass::NoDatabase;
        }
        if has(&[
            "could not connect",
            "connection refused",
            "could not translate host name",
            "timeout expired",
            "no route to host",
            "server closed the connection",
            "terminating connection",
            "connection to server",
            "the database system is",
            "network is unreachable",
            "lost synchronization with server",
            "could not receive data from server",
            "could not send data to server",
            "ssl",
        ]) {
            return FailureClass::Unreachable;
        }
        FailureClass::Other
    }
}

#[derive(Debug, Error)]
pub enum PgError {
    #[error("cannot run {tool}{}: {source}; install the PostgreSQL client tools or set PG_BIN_DIR",
        bin_dir.as_ref().map(|d| format!(" from {}", d.display())).unwrap_or_default())]
    Spawn {
        tool: String,
        bin_dir: Option<PathBuf>,
        source: std::io::Error,
    },
    #[error("{tool} failed while {context} on {host}: {detail}{}", class_hint(*class))]
    Failed {
        tool: String,
        context: String,
        class: FailureClass,
        detail: String,
        host: String,
    },
    #[error(
        "{tool} {tool_version} ({tool_path}) is older than the server ({server_version}), and no \
         newer one was found: use the client tools of PostgreSQL {server_major} or newer: set \
         PG_BIN_DIR to their directory (e.g. /usr/lib/postgresql/{server_major}/bin), or use the \
         image ghcr.io/user/pg-backups:{server_major}-alpine"
    )]
    ToolTooOld {
        tool: String,
        tool_version: String,
        tool_path: String,
        server_version: String,
        server_major: u32,
    },
    /// Replays need psql's `\restrict` mode: without it a backup file could run a shell
    /// command on this host through a meta-command that slipped past the screening.
    #[error(
        "{psql_path} is psql {version}, which lacks \\restrict: restores and restore tests need          psql 17.6, 16.10, 15.14, 14.19, 13.22 or newer (any 18): upgrade the client tools, or          set PG_BIN_DIR to the directory of newer ones"
    )]
    PsqlWithoutRestrict { version: String, psql_path: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("unexpected answer from PostgreSQL: {0}")]
    Unexpected(String),
}

fn class_hint(class: FailureClass) -> &'static str {
    match class {
        FailureClass::Unreachable => {
            " (check PGHOST/PGPORT, that the server is running, and the network between them)"
        }
        FailureClass::Auth => " (check PGUSER and PGPASSWORD / PGPASSWORD_FILE, and pg_hba.conf)",
        FailureClass::Permission => {
            " (PGUSER needs superuser rights, or at least read access to every object dumped)"
        }
        FailureClass::NoDatabase => "",
        FailureClass::Other => "",
    }
}

impl PgError {
    pub fn exit_code(&self) -> i32 {
        match self {
            PgError::Spawn { .. }
            | PgError::ToolTooOld { .. }
            | PgError::PsqlWithoutRestrict { .. } => exitcode::CONFIG,
            PgError::Failed { class, .. } => match class {
                FailureClass::Unreachable | FailureClass::Other => exitcode::UNAVAILABLE,
                FailureClass::Auth | FailureClass::Permission => exitcode::NOPERM,
                FailureClass::NoDatabase => exitcode::NOINPUT,
            },
            PgError::Io { source, .. } => crate::exit::io_exit_code(source),
            PgError::Unexpected(_) => exitcode::SOFTWARE,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            PgError::Spawn { .. } => "pg_tool_missing",
            PgError::ToolTooOld { .. } => "pg_tool_too_old",
            PgError::PsqlWithoutRestrict { .. } => "psql_without_restrict",
            PgError::Failed { class, .. } => match class {
                FailureClass::Unreachable => "pg_unreachable",
                FailureClass::Auth => "pg_auth",
                FailureClass::Permission => "pg_permission",
                FailureClass::NoDatabase => "pg_no_database",
                FailureClass::Other => "pg_failed",
            },
            PgError::Io { .. } => "io",
            PgError::Unexpected(_) => "pg_unexpected",
        }
    }

    /// True when the server itself is gone: the rest of the run cannot succeed either.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            PgError::Failed {
                class: FailureClass::Unreachable,
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_classified_into_exit_codes() {
        let cases = [
            (
                "pg_dump: error: connection to server at \"127.0.0.1\", port 1 failed: Connection refused",
                FailureClass::Unreachable,
            ),
            (
                "psql: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password authentication failed for user \"postgres\"",
                FailureClass::Auth,
            ),
            (
                "pg_dumpall: error: query failed: ERROR:  permission denied for table pg_authid",
                FailureClass::Permission,
            ),
            (
                "pg_dump: error: connection to server at \"127.0.0.1\" failed: FATAL:  database \"nope\" does not exist",
                FailureClass::NoDatabase,
            ),
            (
                "pg_dump: error: Dumping the contents of table \"t\" failed: PQgetCopyData() failed.\npg_dump: detail: server closed the connection unexpectedly",
                FailureClass::Unreachable,
            ),
            ("pg_dump: error: something new", FailureClass::Other),
        ];
        for (stderr, class) in cases {
            assert_eq!(FailureClass::from_stderr(stderr), class, "{stderr}");
        }
    }
}
