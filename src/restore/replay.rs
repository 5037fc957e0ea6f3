//! The last step of a restore: the checked file replayed into the server. Plain SQL goes
//! through psql, custom archives through pg_restore, and both behind the same screening:
//! every line psql reads passes the scanner (meta-commands, `\connect` targets) and the replay
//! filter (psql's `\restrict` mode under a key of this run), and a database's own entries
//! (`CREATE DATABASE`, its settings, grants, comment) are always replayed by psql under the
//! name the operator chose, so pg_restore itself only ever fills that one database.
//!
//! psql runs with `ON_ERROR_STOP=0` so that every error is seen (see [`super::sql_errors`]).
//! A signal stops psql or pg_restore; scratch databases are dropped by their guard whatever
//! happens.

use std::io::{Read, Seek, Write};
use std::path::Path;
use std::process::Stdio;

use crate::backup::codec::{Decryption, FileCodec, Format, open_content};
use crate::backup::psql_scan::{ConnectTargets, Violation};
use crate::error::{Error, Result};
use crate::pg::{PgError, PgTools};
use crate::process::{Running, describe_status};
use crate::progress::Bar;

use super::filter::replay_filter;
use super::sql_errors::{Expected, PsqlErrors, SqlErrors};

const CHUNK: usize = 256 * 1024;

/// Where a database file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    /// Created under its own name (the file's `CREATE DATABASE`).
    Create,
    /// Created under another name.
    Rename(&'a str),
    /// Into the database of that name that every server has (`postgres`), as pg_dumpall's
    /// own files do: its objects and data, not its database-level settings.
    Existing,
}

impl<'a> Destination<'a> {
    /// `target` as the operator gave it (absent or the same name: no rename).
    pub fn named(database: &str, target: Option<&'a str>) -> Destination<'a> {
        match target {
            Some(t) if t != database => Destination::Rename(t),
            _ => Destination::Create,
        }
    }
}

/// What every replay of one restore shares: the tools, the keys, the errors it expects, a
/// private folder, and how many jobs pg_restore may run.
#[derive(Clone, Copy)]
pub struct Replayer<'a> {
    pub tools: &'a PgTools,
    pub keys: Option<&'a Decryption>,
    pub expected: Expected,
    /// A private (0700) folder for pg_restore's entry list and decrypted archives.
    pub work: &'a Path,
    pub jobs: u32,
}

impl Replayer<'_> {
    /// Replays a cluster or globals file (as stored: compressed, maybe encrypted), which may
    /// `\connect` only to `targets`.
    pub fn cluster_file(
        &self,
        stored: Box<dyn Read + Send>,
        codec: FileCodec,
        targets: ConnectTargets,
        progress: &Bar,
    ) -> Result<SqlErrors> {
        let content = self.open(stored, codec, progress)?;
        self.psql(content, None, targets, "postgres")
    }

    /// Restores one database's file (plain or custom, as stored) of `database` into `into`.
    pub fn database_file(
        &self,
        stored: std::fs::File,
        codec: FileCodec,
        database: &str,
        into: Destination<'_>,
        progress: &Bar,
    ) -> Result<SqlErrors> {
        match codec.format {
            Format::Plain => {
                // Plain database files are restored one at a time (a cluster restore of plain
                // backups replays the cluster file), so `Existing` never reaches here.
                let rename = match into {
                    Destination::Rename(t) => Some((database, t)),
                    Destination::Create | Destination::Existing => None,
                };
                let content = self.open(Box::new(stored), codec, progress)?;
                let start = match into {
                    Destination::Rename(t) => super::server::maintenance_database(t),
                    _ => super::server::maintenance_database(database),
                };
                self.psql(content, rename, ConnectTargets::only(database), start)
            }
            Format::Custom => {
                let archive = plain_archive(stored, codec, self.keys, self.work)?;
                self.archive(&archive, database, into)
            }
        }
    }

    /// The file's content, counted for the progress bar as its stored bytes are read.
    fn open(
        &self,
        stored: Box<dyn Read + Send>,
        codec: FileCodec,
        progress: &Bar,
    ) -> Result<Box<dyn Read + Send>> {
        let counted: Box<dyn Read + Send> = Box::new(progress.reader(stored));
        open_content(counted, codec, self.keys).map_err(|e| {
            Error::Data(format!(
                "the backup file could not be opened for restoring: {e}"
            ))
        })
    }

    /// Sends SQL to psql (connected to `postgres`) through the scanner and the replay filter:
    /// `rename` is `(old, new)` for a database restored under another name, `targets` where
    /// the SQL may `\connect` (before the rename). The file was checked before; a file that
    /// changed since is stopped at its first bad line.
    fn psql(
        &self,
        mut content: Box<dyn Read + Send>,
        rename: Option<(&str, &str)>,
        targets: ConnectTargets,
        start: &str,
    ) -> Result<SqlErrors> {
        let tools = self.tools;
        tools.require_restrict()?;
        let mut cmd = tools.command("psql");
        cmd.args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=0", "-f", "-", "-d"])
            .arg(crate::pg::conninfo(start));
        let sink = PsqlErrors::new(self.expected);
        let lines = sink.lines.clone();
        let mut child = Running::spawn(cmd, "psql", Stdio::piped(), false, sink)
            .map_err(|e| tools.spawn_error("psql", e))?;
        let mut stdin = child
            .take_stdin()
            .ok_or_else(|| Error::Internal("psql has no stdin".into()))?;
        let mut filter = replay_filter(rename)
            .with_targets(Some(targets))
            .with_line_map(lines);
        let refused = |v: Violation| {
            Error::Data(format!(
                "the backup file is not safe to replay (nothing after line {} was sent): {v}",
                v.line.saturating_sub(1)
            ))
        };
        let mut buf = vec![0u8; CHUNK];
        let mut out = Vec::with_capacity(CHUNK + 4096);
        let mut write_failed = None;
        loop {
            crate::signals::check()?;
            let n = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Data(format!(
                        "the backup file could not be read while restoring: {e}"
                    )));
                }
            };
            out.clear();
            filter.push(&buf[..n], &mut out).map_err(refused)?;
            if let Err(e) = stdin.write_all(&out) {
                // psql is gone: its stderr says why.
                write_failed = Some(e);
                break;
            }
        }
        if write_failed.is_none() {
            out.clear();
            filter.finish(&mut out).map_err(refused)?;
            write_failed = stdin.write_all(&out).err();
        }
        drop(stdin);
        crate::signals::check()?;
        let finished = child.finish().map_err(|e| PgError::Io {
            context: "waiting for psql".into(),
            source: e,
        })?;
        let errors = finished.stderr.errors;
        if errors.count > 0 && (!finished.status.success() || write_failed.is_some()) {
            // SQL failed, then psql stopped (a `\connect` to a database whose CREATE DATABASE
            // failed): the SQL errors are what went wrong (65), not the connection.
            let mut errors = errors;
            let said: Vec<String> = errors.other.iter().take(3).cloned().collect();
            errors.first.extend(said);
            return Ok(errors);
        }
        if !finished.status.success() || write_failed.is_some() {
            // psql stopped on its own: a connection that failed or was lost.
            let mut text = errors.other.join("\n");
            if text.is_empty() {
                text = errors.first.join("\n");
            }
            let status = describe_status(&finished.status);
            return Err(tools.failure("psql", "restoring", &status, &text).into());
        }
        Ok(errors)
    }

    /// Restores a custom-format archive of `database` with pg_restore (`jobs` at once). The
    /// database itself is made from the archive's own database-level entries, which
    /// pg_restore writes as SQL and psql replays like a plain file (renamed when asked, its
    /// `\connect` checked); pg_restore then fills that database and no other.
    fn archive(
        &self,
        archive: &Archive,
        database: &str,
        into: Destination<'_>,
    ) -> Result<SqlErrors> {
        let mut errors = SqlErrors::default();
        let target = match into {
            Destination::Existing => database,
            Destination::Create => {
                errors.absorb(self.archive_database(archive, database, database)?);
                database
            }
            Destination::Rename(target) => {
                errors.absorb(self.archive_database(archive, database, target)?);
                target
            }
        };
        let mut cmd = self.tools.command("pg_restore");
        cmd.args(["-w", "--jobs", &self.jobs.to_string()])
            .arg(format!("--dbname={}", crate::pg::conninfo(target)))
            .arg(archive.path());
        errors.absorb(self.run_pg_restore(cmd)?);
        Ok(errors)
    }

    /// The archive's database-level entries (the database, its settings, comment, grants),
    /// replayed by psql under `target`.
    fn archive_database(
        &self,
        archive: &Archive,
        database: &str,
        target: &str,
    ) -> Result<SqlErrors> {
        let sql = self.database_entries(archive, database)?;
        self.psql(
            Box::new(std::io::Cursor::new(sql.into_bytes())),
            Some((database, target)),
            ConnectTargets::only(database),
            super::server::maintenance_database(target),
        )
    }

    /// Reads a custom archive's own database entries and screens them as a replay would
    /// (its `CREATE DATABASE` and `\connect` must be of `database`): run before anything on
    /// the server is dropped, so an archive of another database is refused while nothing has
    /// changed yet.
    pub fn screen_archive(
        &self,
        stored: &std::fs::File,
        codec: FileCodec,
        database: &str,
    ) -> Result<()> {
        let dup = stored.try_clone().map_err(|e| {
            Error::Backup(crate::backup::BackupError::Read {
                path: database.into(),
                source: e,
            })
        })?;
        let archive = plain_archive(dup, codec, self.keys, self.work)?;
        let sql = self.database_entries(&archive, database)?;
        // The descriptor was shared: the replay reads the file from its start again.
        let mut rewind = stored;
        rewind.seek(std::io::SeekFrom::Start(0)).map_err(|e| {
            Error::Backup(crate::backup::BackupError::Read {
                path: database.into(),
                source: e,
            })
        })?;
        let mut scanner = crate::backup::psql_scan::Scanner::new()
            .with_targets(Some(ConnectTargets::only(database)));
        scanner
            .feed(sql.as_bytes())
            .and_then(|()| scanner.finish())
            .map_err(|v| {
                Error::Data(format!(
                    "the archive of {database:?} is not safe to restore (nothing was changed): {v}"
                ))
            })
    }

    /// The SQL pg_restore writes for the archive's database-level entries.
    fn database_entries(&self, archive: &Archive, database: &str) -> Result<String> {
        // `--create`: without it pg_restore leaves the database-level entries out.
        let list = pg_restore_output(self.tools, archive, &["--list", "--create"])?;
        let wanted: Vec<&str> = list.lines().filter(|l| is_database_level(l)).collect();
        if !wanted.iter().any(|l| is_database_entry(l)) {
            return Err(Error::Data(format!(
                "the archive of {database:?} has no DATABASE entry (it was not made by pg_dump \
                 --create), so pg-backups cannot tell which database it would write to"
            )));
        }
        let list_file = self.work.join("database-entries.list");
        std::fs::write(&list_file, format!("{}\n", wanted.join("\n"))).map_err(|e| {
            Error::Backup(crate::backup::BackupError::Write {
                path: list_file.clone(),
                source: e,
            })
        })?;
        let use_list = format!("--use-list={}", list_file.display());
        pg_restore_output(
            self.tools,
            archive,
            &["--create", "--file=-", use_list.as_str()],
        )
    }

    /// Runs pg_restore to its end, its stderr parsed like psql's.
    fn run_pg_restore(&self, cmd: std::process::Command) -> Result<SqlErrors> {
        let tools = self.tools;
        let sink = PsqlErrors::new(self.expected);
        let child = Running::spawn(cmd, "pg_restore", Stdio::null(), false, sink)
            .map_err(|e| tools.spawn_error("pg_restore", e))?;
        crate::signals::check()?;
        let finished = child.finish().map_err(|e| PgError::Io {
            context: "waiting for pg_restore".into(),
            source: e,
        })?;
        crate::signals::check()?;
        let found = finished.stderr.errors;
        // pg_restore exits 1 when it ignored SQL errors; without any, it failed on its own (a
        // connection lost, an archive it cannot read).
        if !finished.status.success() && found.count == 0 && found.tolerated == 0 {
            let text = found.other.join("\n");
            let status = describe_status(&finished.status);
            return Err(tools
                .failure("pg_restore", "restoring", &status, &text)
                .into());
        }
        Ok(found)
    }
}

/// A custom-format archive to restore, as pg_restore opens it: by path, more than once for
/// parallel jobs. The path names a descriptor this process holds open (`/proc/self/fd/N`,
/// inherited by pg_restore and its workers), so pg_restore reads the very file that was checked.
pub struct Archive {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl Archive {
    /// Wraps an open, checked file (rewound).
    pub fn new(file: std::fs::File) -> std::io::Result<Archive> {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: clearing FD_CLOEXEC on a descriptor we own, so children inherit it.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let path = std::path::PathBuf::from(format!("/proc/self/fd/{fd}"));
        Ok(Archive { file, path })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The file, for reading it from the start.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }
}

/// The TOC entries of a custom archive that are about the database itself: pg_restore runs
/// them only with `--create`.
fn is_database_level(list_line: &str) -> bool {
    // `3447; 1262 16384 DATABASE - app postgres`, `3449; 0 0 COMMENT - DATABASE app postgres`
    let mut fields = list_line.split_whitespace().skip(3);
    let desc: Vec<&str> = fields.by_ref().take(4).collect();
    matches!(
        desc.as_slice(),
        ["DATABASE", ..]
            | ["COMMENT", "-", "DATABASE", ..]
            | ["ACL", "-", "DATABASE", ..]
            | ["SECURITY", "LABEL", "-", "DATABASE", ..]
    )
}

fn is_database_entry(list_line: &str) -> bool {
    list_line.split_whitespace().nth(3) == Some("DATABASE")
}

/// pg_restore run on the archive with `args`, its stdout (a listing or SQL: small).
fn pg_restore_output(tools: &PgTools, archive: &Archive, args: &[&str]) -> Result<String> {
    let mut cmd = tools.command("pg_restore");
    cmd.args(args).arg(archive.path());
    let mut child = Running::spawn(
        cmd,
        "pg_restore",
        Stdio::null(),
        true,
        crate::process::Tail::default(),
    )
    .map_err(|e| tools.spawn_error("pg_restore", e))?;
    let mut out = String::new();
    if let Some(mut stdout) = child.take_stdout() {
        stdout.read_to_string(&mut out).map_err(|e| PgError::Io {
            context: "reading pg_restore's output".into(),
            source: e,
        })?;
    }
    let finished = child.finish().map_err(|e| PgError::Io {
        context: "waiting for pg_restore".into(),
        source: e,
    })?;
    if !finished.status.success() {
        return Err(Error::Data(format!(
            "pg_restore cannot read the archive: {}",
            finished.stderr.text().trim()
        )));
    }
    Ok(out)
}

/// The archive as pg_restore needs it: a file it can open and seek. An encrypted archive is
/// decrypted into the private folder `work` (pg_restore cannot read age).
pub fn plain_archive(
    stored: std::fs::File,
    codec: FileCodec,
    keys: Option<&Decryption>,
    work: &Path,
) -> Result<Archive> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| {
            Error::Backup(crate::backup::BackupError::Write { path, source })
        }
    };
    if !codec.encrypted {
        return Archive::new(stored).map_err(io(work));
    }
    // Unnamed (unlinked at once): pg_restore opens it through our descriptor, and the
    // plaintext is gone from the disk when the handle is dropped, whatever happens.
    let mut out = tempfile::tempfile_in(work).map_err(io(work))?;
    let mut content = open_content(Box::new(stored), codec, keys)
        .map_err(|e| Error::Data(format!("the archive could not be decrypted: {e}")))?;
    std::io::copy(&mut content, &mut out).map_err(io(work))?;
    out.sync_all().map_err(io(work))?;
    out.seek(std::io::SeekFrom::Start(0)).map_err(io(work))?;
    Archive::new(out).map_err(io(work))
}
