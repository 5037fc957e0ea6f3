//! Sending a backup file to `psql`, shared by `restore` and `verify --restore-test`.
//!
//! psql runs with `ON_ERROR_STOP=0` so that every error is seen: its stderr is parsed line by
//! line (`psql:<stdin>:LINE: ERROR: …`), errors that a cluster or globals restore expects
//! (`role "postgres" already exists`) are tolerated and counted, the others are counted and
//! the first ones kept for the report. A signal stops psql; scratch databases are dropped by
//! their guard whatever happens.

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::Arc;

use crate::progress::Bar;

use crate::backup::codec::{Decryption, FileCodec, Format, open_content};
use crate::backup::replay::replay_filter;
use crate::backup::sql_lines::LineMap;
use crate::error::{Error, Result};
use crate::pg::{PgError, PgTools, quote_ident, quote_literal};
use crate::process::{LineSink, Running, describe_status};

const CHUNK: usize = 256 * 1024;
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
    other: Vec<String>,
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
    errors: SqlErrors,
    expected: Expected,
    /// Maps the lines psql read back to the lines of the backup file.
    lines: Arc<std::sync::Mutex<LineMap>>,
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

/// Restores a plain SQL file (as stored: compressed, maybe encrypted) through psql connected to
/// the `postgres` database. `rename` restores a `--create` dump of `source_db` under another
/// name. The file must have been checked first (`backup::verify::check_stream`); what psql
/// receives goes through the replay filter all the same, so a file that changed since is
/// stopped at its first bad line.
#[allow(clippy::too_many_arguments)]
pub fn restore_file(
    tools: &PgTools,
    stored: Box<dyn Read + Send>,
    codec: FileCodec,
    keys: Option<&Decryption>,
    rename: Option<(&str, &str)>,
    expected: Expected,
    progress: &Bar,
) -> Result<SqlErrors> {
    let counted: Box<dyn Read + Send> = Box::new(progress.reader(stored));
    let content = open_content(counted, codec, keys).map_err(|e| {
        Error::Data(format!(
            "the backup file could not be opened for restoring: {e}"
        ))
    })?;
    replay_sql(tools, content, rename, expected)
}

/// Sends SQL to psql through the replay filter (see [`restore_file`]).
fn replay_sql(
    tools: &PgTools,
    content: Box<dyn Read + Send>,
    rename: Option<(&str, &str)>,
    expected: Expected,
) -> Result<SqlErrors> {
    let restrict = tools.psql_has_restrict()?;
    let mut cmd = tools.command("psql");
    cmd.args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=0", "-f", "-", "-d"])
        .arg(crate::pg::conninfo("postgres"));
    let sink = PsqlErrors::new(expected);
    let lines = sink.lines.clone();
    let mut child = Running::spawn(cmd, "psql", Stdio::piped(), false, sink)
        .map_err(|e| tools.spawn_error("psql", e))?;
    let mut stdin = child
        .take_stdin()
        .ok_or_else(|| Error::Internal("psql has no stdin".into()))?;
    let mut decoder = content;
    let mut filter = replay_filter(rename, restrict).with_line_map(lines);
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK + 4096);
    let mut write_failed = None;
    let refused = |v: crate::backup::psql_scan::Violation| {
        Error::Data(format!(
            "the backup file changed since it was checked and is no longer safe to replay: {v}"
        ))
    };
    loop {
        crate::signals::check()?;
        let n = match decoder.read(&mut buf) {
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
        if let Err(e) = stdin.write_all(&out) {
            write_failed = Some(e);
        }
    }
    drop(stdin);
    crate::signals::check()?;
    let finished = child.finish().map_err(|e| PgError::Io {
        context: "waiting for psql".into(),
        source: e,
    })?;
    let errors = finished.stderr.errors;
    if !finished.status.success() || write_failed.is_some() {
        // psql stopped on its own: a connection that failed or was lost.
        let mut text = errors.other.join("\n");
        if text.is_empty() {
            text = errors.first.join("\n");
        }
        return Err(tools
            .failure(
                "psql",
                "restoring",
                &describe_status(&finished.status),
                &text,
            )
            .into());
    }
    Ok(errors)
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

/// Restores a custom-format archive of `database` with pg_restore (`jobs` at once). Under
/// another name, the target is created from the archive's own database-level entries
/// (pg_restore writes them as SQL; only their name is changed, as for a plain file) and
/// pg_restore fills it. `work` is a private folder for pg_restore's entry list.
#[allow(clippy::too_many_arguments)]
pub fn restore_archive(
    tools: &PgTools,
    archive: &Archive,
    database: &str,
    into: Destination<'_>,
    jobs: u32,
    expected: Expected,
    work: &std::path::Path,
) -> Result<SqlErrors> {
    let mut errors = SqlErrors::default();
    let mut cmd = tools.command("pg_restore");
    cmd.args(["-w", "--jobs", &jobs.to_string()]);
    match into {
        Destination::Create => {
            cmd.arg("--create")
                .arg(format!("--dbname={}", crate::pg::conninfo("postgres")));
        }
        Destination::Existing => {
            cmd.arg(format!("--dbname={}", crate::pg::conninfo(database)));
        }
        Destination::Rename(target) => {
            // 1. The database itself, renamed: pg_restore prints its entries as SQL.
            // `--create`: without it pg_restore leaves the database-level entries out.
            let list = pg_restore_output(tools, archive, &["--list", "--create"])?;
            let wanted: Vec<&str> = list.lines().filter(|l| is_database_level(l)).collect();
            if !wanted.iter().any(|l| is_database_entry(l)) {
                return Err(Error::Data(format!(
                    "the archive of {database:?} has no DATABASE entry (not made by pg_dump \
                     --create), so it cannot be restored under another name; restore it \
                     without RESTORE_TARGET_DATABASE"
                )));
            }
            let list_file = work.join("database-entries.list");
            std::fs::write(&list_file, format!("{}\n", wanted.join("\n"))).map_err(|e| {
                Error::Backup(crate::backup::BackupError::Write {
                    path: list_file.clone(),
                    source: e,
                })
            })?;
            let sql = pg_restore_output(
                tools,
                archive,
                &[
                    "--create",
                    "--file=-",
                    &format!("--use-list={}", list_file.display()),
                ],
            )?;
            let created = replay_sql(
                tools,
                Box::new(std::io::Cursor::new(sql.into_bytes())),
                Some((database, target)),
                expected,
            )?;
            merge(&mut errors, created);
            // 2. Everything else into it.
            cmd.arg(format!("--dbname={}", crate::pg::conninfo(target)));
        }
    }
    cmd.arg(archive.path());
    let sink = PsqlErrors::new(expected);
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
        return Err(tools
            .failure(
                "pg_restore",
                "restoring",
                &describe_status(&finished.status),
                &text,
            )
            .into());
    }
    merge(&mut errors, found);
    Ok(errors)
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

/// Restores one database file (plain or custom, as stored), optionally under `target`.
#[allow(clippy::too_many_arguments)]
pub fn restore_database_file(
    tools: &PgTools,
    stored: std::fs::File,
    codec: FileCodec,
    keys: Option<&Decryption>,
    database: &str,
    into: Destination<'_>,
    jobs: u32,
    expected: Expected,
    work: &std::path::Path,
    progress: &Bar,
) -> Result<SqlErrors> {
    match codec.format {
        Format::Plain => {
            // Plain database files are restored only one at a time (a cluster restore of
            // plain backups replays the cluster file), so `Existing` never reaches here.
            let rename = match into {
                Destination::Rename(t) => Some((database, t)),
                Destination::Create | Destination::Existing => None,
            };
            restore_file(
                tools,
                Box::new(stored),
                codec,
                keys,
                rename,
                expected,
                progress,
            )
        }
        Format::Custom => {
            let archive = plain_archive(stored, codec, keys, work)?;
            restore_archive(tools, &archive, database, into, jobs, expected, work)
        }
    }
}

/// The archive as pg_restore needs it: a file it can open and seek. An encrypted archive is
/// decrypted into the private folder `work` (pg_restore cannot read age).
pub fn plain_archive(
    stored: std::fs::File,
    codec: FileCodec,
    keys: Option<&Decryption>,
    work: &std::path::Path,
) -> Result<Archive> {
    let io = |path: &std::path::Path| {
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
    let path = work.to_path_buf();
    let mut out = tempfile::tempfile_in(work).map_err(io(&path))?;
    let mut content = open_content(Box::new(stored), codec, keys)
        .map_err(|e| Error::Data(format!("the archive could not be decrypted: {e}")))?;
    std::io::copy(&mut content, &mut out).map_err(io(&path))?;
    out.sync_all().map_err(io(&path))?;
    use std::io::Seek;
    out.seek(std::io::SeekFrom::Start(0)).map_err(io(&path))?;
    Archive::new(out).map_err(io(&path))
}

/// Whether a database exists on the server.
pub fn database_exists(tools: &PgTools, name: &str) -> Result<bool> {
    let sql = format!(
        "SELECT count(*) FROM pg_database WHERE datname = {}",
        quote_literal(name)
    );
    Ok(tools.query_value("postgres", &sql)?.trim() == "1")
}

/// User databases on the server (all but postgres and the templates).
pub fn user_databases(tools: &PgTools) -> Result<Vec<String>> {
    let rows = tools.query(
        "postgres",
        "SELECT datname FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1') ORDER BY datname",
        1,
    )?;
    Ok(rows.into_iter().map(|mut r| r.remove(0)).collect())
}

/// Drops a database, disconnecting its sessions first.
pub fn drop_database(tools: &PgTools, name: &str, server_major: u32) -> Result<()> {
    let ident = quote_ident(name);
    if server_major >= 13 {
        tools.query(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {ident} WITH (FORCE)"),
            1,
        )?;
    } else {
        tools.query(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {}",
                quote_literal(name)
            ),
            1,
        )?;
        tools.query("postgres", &format!("DROP DATABASE IF EXISTS {ident}"), 1)?;
    }
    Ok(())
}

/// A scratch database that is dropped when the guard goes, on every path.
pub struct ScratchDatabase<'a> {
    tools: &'a PgTools,
    name: String,
    server_major: u32,
}

impl<'a> ScratchDatabase<'a> {
    pub fn new(tools: &'a PgTools, name: &str, server_major: u32) -> ScratchDatabase<'a> {
        ScratchDatabase {
            tools,
            name: name.to_string(),
            server_major,
        }
    }
}

impl Drop for ScratchDatabase<'_> {
    fn drop(&mut self) {
        if let Err(e) = drop_database(self.tools, &self.name, self.server_major) {
            tracing::error!(
                "could not drop the scratch database {}: {e}; drop it by hand",
                self.name
            );
        }
    }
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
