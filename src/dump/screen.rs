//! What a restore would refuse, dump refuses first (guarantee 9): every database's stream is
//! read as the restore will read it while it is written. A plain dump goes through the same
//! scanner as a restore's check (psql meta-commands, `\connect` only to its own database, a
//! file that ends where pg_dump ends it); a custom archive through `pg_restore --create
//! --file=-` as it streams by, whose SQL is read the same way (its `\connect`, to the
//! archive's own database, must be to this one). Both give each table's rows as the stream
//! carried them (guarantee 10). A database that fails the
//! screening is reported as failed (the run is `partial`, with the reason), never written
//! into a `complete` folder that cannot be restored.

use std::io::Write;
use std::process::{ChildStdin, Stdio};
use std::thread::JoinHandle;

use crate::backup::BackupError;
use crate::backup::psql_scan::{ConnectTargets, Scanner, TableRows};
use crate::pg::PgTools;
use crate::process::{Running, Tail};

use super::DumpError;

/// The screening of one stream.
pub enum Screen {
    /// Plain SQL, read as psql reads it.
    Sql { scanner: Box<Scanner>, what: String },
    /// A custom archive, read by pg_restore as it streams by.
    Archive(Listing),
}

impl Screen {
    /// For a plain dump of `database`: `--create` for its own file (which must connect to
    /// it), or without for a section of the cluster file only (which connects nowhere).
    pub fn sql(database: &str, own_file: bool) -> Screen {
        let targets = match own_file {
            true => ConnectTargets::only(database),
            false => ConnectTargets::none(),
        };
        Screen::Sql {
            scanner: Box::new(Scanner::new().with_targets(Some(targets))),
            what: format!("the pg_dump output of database {database:?}"),
        }
    }

    /// For the globals: they may connect only where pg_dumpall does.
    pub fn globals() -> Screen {
        Screen::Sql {
            scanner: Box::new(Scanner::new().with_targets(Some(ConnectTargets::none()))),
            what: "the pg_dumpall output of the globals".into(),
        }
    }

    /// For a custom archive of `database`.
    pub fn archive(tools: &PgTools, database: &str) -> Result<Screen, DumpError> {
        Ok(Screen::Archive(Listing::start(tools, database)?))
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), DumpError> {
        match self {
            Screen::Sql { scanner, what } => scanner.feed(chunk).map_err(|violation| {
                BackupError::Unsafe {
                    file: what.clone(),
                    violation,
                }
                .into()
            }),
            Screen::Archive(listing) => {
                listing.feed(chunk);
                Ok(())
            }
        }
    }

    /// The stream ended: the last checks; each table's rows as the stream carried them.
    pub fn finish(self) -> Result<Option<Vec<TableRows>>, DumpError> {
        match self {
            Screen::Sql { mut scanner, what } => match scanner.finish() {
                Ok(()) => Ok(Some(scanner.take_copies())),
                Err(violation) => Err(BackupError::Unsafe {
                    file: what,
                    violation,
                }
                .into()),
            },
            Screen::Archive(listing) => listing.finish().map(Some),
        }
    }
}

/// `pg_restore --create --file=-` reading the archive from its stdin as pg_dump writes it,
/// its SQL scanned on a thread of its own.
pub struct Listing {
    child: Running<Tail>,
    stdin: Option<ChildStdin>,
    reader: Option<JoinHandle<Result<Vec<TableRows>, BackupError>>>,
    database: String,
}

impl Listing {
    fn start(tools: &PgTools, database: &str) -> Result<Listing, DumpError> {
        let mut cmd = tools.command("pg_restore");
        cmd.args(["--create", "--file=-"]);
        let mut child = Running::spawn(cmd, "pg_restore", Stdio::piped(), true, Tail::default())
            .map_err(|e| tools.spawn_error("pg_restore", e))?;
        let stdin = child.take_stdin();
        let stdout = child
            .take_stdout()
            .ok_or_else(|| DumpError::Internal("pg_restore has no stdout".into()))?;
        let (name, db) = (
            format!("the archive of database {database:?}"),
            database.to_string(),
        );
        let reader = std::thread::spawn(move || {
            crate::backup::verify::scan_archive_sql(Box::new(stdout), &name, &db)
        });
        Ok(Listing {
            child,
            stdin,
            reader: Some(reader),
            database: database.to_string(),
        })
    }

    /// A pg_restore that stopped reading has failed: its exit status says so at the end.
    fn feed(&mut self, chunk: &[u8]) {
        if let Some(stdin) = self.stdin.as_mut()
            && stdin.write_all(chunk).is_err()
        {
            self.stdin = None;
        }
    }

    fn finish(mut self) -> Result<Vec<TableRows>, DumpError> {
        drop(self.stdin.take());
        let listed = match self.reader.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(BackupError::Archive {
                file: self.database.clone(),
                detail: "the reading thread failed".into(),
            }),
        };
        let finished = self
            .child
            .finish()
            .map_err(|e| DumpError::Internal(format!("waiting for pg_restore: {e}")))?;
        if !finished.status.success() {
            return Err(BackupError::Archive {
                file: format!("the archive of database {:?}", self.database),
                detail: format!(
                    "pg_restore cannot read it: {}",
                    finished.stderr.text().trim()
                ),
            }
            .into());
        }
        Ok(listed?)
    }
}
