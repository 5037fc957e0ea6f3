//! What psql and pg_restore said while replaying: SQL errors counted, the ones a restore
//! expects (`role "postgres" already exists` on a cluster restore, a newer pg_dump's session
//! setting on an older server) tolerated, the first ones kept for the report with their line
//! in the backup file.

use std::sync::Arc;

use crate::backup::sql_lines::LineMap;
use crate::process::LineSink;

const KEEP_ERRORS: usize = 20;

/// SQL errors psql (or pg_restore) reported.
#[derive(Debug, Default, Clone)]
pub struct SqlErrors {
    pub count: usize,
    pub tolerated: usize,
    /// The first errors, with their line in the SQL stream.
    pub first: Vec<String>,
    pub tolerated_examples: Vec<String>,
    /// Anything else psql said (connection failures), for the error report.
    pub(super) other: Vec<String>,
}

/// The errors a restore expects, which are counted as tolerated rather than failures.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    /// `role "postgres" already exists`: a cluster or globals restore onto an initialised
    /// server meets the roles initdb (or an earlier restore) made.
    pub existing_roles: bool,
    /// The target server's major: session settings of newer pg_dump versions that it lacks
    /// (`SET transaction_timeout = 0` from pg_dump 17 on a 15 server) are expected.
    pub server_major: u32,
}

/// Session settings that newer pg_dump versions write at the top of every dump, with the major
/// that introduced them. Only these, and only on older servers, are tolerated: any other
/// statement an older server rejects still fails the restore.
const NEWER_SESSION_SETTINGS: &[(&str, u32)] = &[("transaction_timeout", 17)];

/// Parses psql's stderr as it comes.
pub struct PsqlErrors {
    pub(super) errors: SqlErrors,
    expected: Expected,
    /// Maps the lines psql read back to the lines of the backup file.
    pub(super) lines: Arc<std::sync::Mutex<LineMap>>,
}

impl PsqlErrors {
    pub fn new(expected: Expected) -> PsqlErrors {
        PsqlErrors {
            errors: SqlErrors::default(),
            expected,
            lines: Arc::default(),
        }
    }

    /// `psql:<stdin>:LINE: …` with LINE as the backup file numbers it.
    fn with_file_line(&self, line: &str) -> String {
        let Some(rest) = line.strip_prefix("psql:<stdin>:") else {
            return line.to_string();
        };
        let Some((number, message)) = rest.split_once(':') else {
            return line.to_string();
        };
        match (number.parse::<u64>(), self.lines.lock()) {
            (Ok(n), Ok(map)) => format!("psql:<stdin>:{}:{message}", map.input_line(n)),
            _ => line.to_string(),
        }
    }
}

/// Whether an error is one the restore expects (see [`Expected`]). Everything else counts.
fn tolerated(message: &str, expected: Expected) -> bool {
    if expected.existing_roles
        && message.contains("role \"")
        && message.contains("\" already exists")
    {
        return true;
    }
    NEWER_SESSION_SETTINGS.iter().any(|(setting, since)| {
        expected.server_major < *since
            && message.contains(&format!(
                "unrecognized configuration parameter \"{setting}\""
            ))
    })
}

impl LineSink for PsqlErrors {
    fn line(&mut self, line: &str) {
        let line = &self.with_file_line(line);
        // `error:` is psql's own (a refused meta-command), `ERROR:` the server's.
        let is_error = line.contains("ERROR:")
            || line.contains("FATAL:")
            || (line.starts_with("psql:") && line.contains(": error: "));
        if !is_error {
            if line.starts_with("psql:") && !line.contains("WARNING:") && !line.contains("NOTICE:")
            {
                self.errors.other.push(line.to_string());
            }
            return;
        }
        if tolerated(line, self.expected) {
            self.errors.tolerated += 1;
            if self.errors.tolerated_examples.len() < 5 {
                self.errors.tolerated_examples.push(line.to_string());
            }
            return;
        }
        self.errors.count += 1;
        if self.errors.first.len() < KEEP_ERRORS {
            let mut l = line.to_string();
            l.truncate(500);
            self.errors.first.push(l);
        }
    }
}

impl SqlErrors {
    /// Adds what another file's replay reported.
    pub fn absorb(&mut self, from: SqlErrors) {
        merge(self, from);
    }
}

fn merge(into: &mut SqlErrors, from: SqlErrors) {
    into.count += from.count;
    into.tolerated += from.tolerated;
    for e in from.first {
        if into.first.len() < KEEP_ERRORS {
            into.first.push(e);
        }
    }
    for e in from.tolerated_examples {
        if into.tolerated_examples.len() < 5 {
            into.tolerated_examples.push(e);
        }
    }
    into.other.extend(from.other);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_errors_are_counted_and_expected_ones_tolerated() {
        let mut p = PsqlErrors::new(Expected {
            existing_roles: true,
            server_major: 17,
        });
        for line in [
            "psql:<stdin>:14: ERROR:  role \"postgres\" already exists",
            "psql:<stdin>:90: ERROR:  relation \"t\" does not exist",
            "LINE 1: INSERT INTO t VALUES (1);",
            "psql:<stdin>:91: WARNING:  something harmless",
            "psql:<stdin>:95: FATAL:  terminating connection due to administrator command",
        ] {
            p.line(line);
        }
        assert_eq!(p.errors.tolerated, 1);
        assert_eq!(p.errors.count, 2);
        assert!(p.errors.first[0].contains(":90:"));
        let mut strict = PsqlErrors::new(Expected {
            existing_roles: false,
            server_major: 17,
        });
        strict.line("psql:<stdin>:14: ERROR:  role \"postgres\" already exists");
        assert_eq!(strict.errors.count, 1);
        strict.line(
            "psql:<stdin>:9: ERROR:  unrecognized configuration parameter \"transaction_timeout\"",
        );
        assert_eq!(
            strict.errors.count, 2,
            "a 17 server knows transaction_timeout"
        );
        let mut old = PsqlErrors::new(Expected {
            existing_roles: false,
            server_major: 15,
        });
        old.line(
            "psql:<stdin>:9: ERROR:  unrecognized configuration parameter \"transaction_timeout\"",
        );
        old.line("psql:<stdin>:10: ERROR:  unrecognized configuration parameter \"made_up\"");
        assert_eq!((old.errors.tolerated, old.errors.count), (1, 1));
    }
}
