//! Checking a backup file end to end in one pass: byte count and SHA-256 of the stored bytes
//! against the manifest; then, through the reading stack (age with `AGE_IDENTITY_FILE`, then
//! gzip or zstd), the content to its last byte: the SQL ending with the completion line pg_dump
//! or pg_dumpall writes (a dump cut short that is still valid gzip is caught) and read the way
//! psql will read it, so that a file holding a psql meta-command pg_dump never writes (`\!`
//! runs a shell) is refused before any of it is replayed. A custom-format archive is read
//! through `pg_restore -f -`, whose SQL is checked the same way. For an encrypted file the
//! manifest also holds the SHA-256 of the content, checked too. Reading and hashing run on one
//! thread, decoding and scanning on another, so memory stays bounded whatever the file size.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use sha2::{Digest, Sha256};

use super::codec::{CipherError, Decryption, FileCodec, Format, PlainHash, open_content_tapped};
use super::psql_scan::{ConnectTargets, Meta, Scanner};
use super::{BackupError, FileEntry, FileKind};

const CHUNK: usize = 256 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;
const TAIL: usize = 1024;
/// The first bytes of the SQL, where pg_dump says which versions made it.
const HEAD: usize = 4096;

/// How far a file's content was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// Decrypted (when encrypted), decompressed and read to its end.
    Checked,
    /// Encrypted, and no AGE_IDENTITY_FILE: only the stored bytes were checked.
    NotDecrypted,
    /// A custom-format archive, and no pg_restore to read it with.
    NoPgRestore,
}

/// What a checked file held.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    pub bytes: u64,
    pub sql_bytes: u64,
    pub content: Content,
}

/// What reading a file's content needs besides its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readers<'a> {
    /// `AGE_IDENTITY_FILE`'s keys; without them an encrypted file is checked as stored only.
    pub keys: Option<&'a Decryption>,
    /// A pg_restore (at least as new as the pg_dump that made the archive).
    pub pg_restore: Option<&'a Path>,
    /// Custom archives: `pg_restore --list` reads the table of contents (a restore, where
    /// pg_restore itself then reads every block, and the SHA-256 already proves the bytes
    /// are pg_dump's) instead of `pg_restore -f -` reading every block (`verify`).
    pub archive_list_only: bool,
    /// The databases of the backup (its manifest's list): when given, every `\connect` must
    /// go where a restore may write (guarantee 11), and an archive must be of its own
    /// database. `None` (adopt, which learns the database from the file) checks no target.
    pub databases: Option<&'a [String]>,
}

impl Readers<'_> {
    /// Where a file of this kind may `\connect`, when targets are checked.
    fn targets(&self, kind: FileKind, database: Option<&str>) -> Option<ConnectTargets> {
        let databases = self.databases?;
        Some(match (kind, database) {
            (FileKind::Database, Some(db)) => ConnectTargets::only(db),
            // A database file without its name in the manifest may connect nowhere.
            (FileKind::Database, None) => ConnectTargets::only(""),
            (FileKind::Cluster, _) => ConnectTargets::cluster(databases.iter().map(String::as_str)),
            (FileKind::Globals, _) => ConnectTargets::none(),
        })
    }
}

/// The line a complete dump of this kind of file ends with.
pub fn completion_line(kind: FileKind) -> &'static [u8] {
    match kind {
        FileKind::Database => b"-- PostgreSQL database dump complete",
        FileKind::Cluster | FileKind::Globals => b"-- PostgreSQL database cluster dump complete",
    }
}

/// What the SQL of a file says about where it came from (the first lines pg_dump and
/// pg_dumpall write), for `adopt`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpHeader {
    /// `-- Dumped from database version 15.4`
    pub server_version: Option<String>,
    /// `-- Dumped by pg_dump version 17.10` (or pg_dumpall)
    pub dump_version: Option<String>,
    /// The database of the first `\connect` (a `--create` dump's own database).
    pub connect: Option<String>,
    /// Every database the SQL connects to, in order, each once (a cluster file's databases).
    pub connects: Vec<String>,
}

/// A file read to its end: size and SHA-256 of its bytes, and its SQL checked.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub bytes: u64,
    pub sha256: String,
    pub sql_bytes: u64,
    pub header: DumpHeader,
}

/// Reads a file that has no manifest entry (a folder made by the backup scripts): gzip, the
/// completion line of a file of `kind` and its content are checked, size and SHA-256 measured.
pub fn scan_stream(
    source: Box<dyn Read + Send>,
    name: &str,
    kind: FileKind,
) -> Result<Scanned, BackupError> {
    let (bytes, sha256, decoded) =
        read_through(source, name, kind, None, None, Readers::default())?;
    let decoded = decoded?.ok_or_else(|| BackupError::Manifest {
        folder: name.to_string(),
        reason: "the content could not be read".into(),
    })?;
    Ok(Scanned {
        bytes,
        sha256,
        sql_bytes: decoded.sql_bytes,
        header: decoded.header,
    })
}

/// Checks `source` against its manifest entry, to its last byte.
pub fn check_stream(
    source: Box<dyn Read + Send>,
    entry: &FileEntry,
    readers: Readers<'_>,
) -> Result<Checked, BackupError> {
    let (bytes, sha256, decoded) = read_through(
        source,
        &entry.name,
        entry.kind,
        entry.database.as_deref(),
        entry.content_sha256.as_deref(),
        readers,
    )?;
    // Size and checksum first: they say most precisely what is wrong with a damaged file.
    if bytes != entry.bytes {
        return Err(BackupError::Size {
            file: entry.name.clone(),
            expected: entry.bytes,
            actual: bytes,
        });
    }
    if sha256 != entry.sha256 {
        return Err(BackupError::Checksum {
            file: entry.name.clone(),
            expected: entry.sha256.clone(),
            actual: sha256,
        });
    }
    Ok(match decoded? {
        Some(d) => Checked {
            bytes,
            sql_bytes: d.sql_bytes,
            content: Content::Checked,
        },
        None => Checked {
            bytes,
            sql_bytes: entry.sql_bytes,
            content: if FileCodec::of_name(&entry.name).is_some_and(|c| c.encrypted)
                && readers.keys.is_none()
            {
                Content::NotDecrypted
            } else {
                Content::NoPgRestore
            },
        },
    })
}

struct Decoded {
    sql_bytes: u64,
    header: DumpHeader,
    /// Each table's rows as the COPY blocks carried them.
    tables: Vec<super::psql_scan::TableRows>,
}

/// Reads `source` to its end, hashing it on one thread and decoding and scanning on this one.
/// The outer error is the source failing; the inner one what the content is wrong about
/// (`None`: the content could not be read: encrypted without a key, or no pg_restore).
#[allow(clippy::type_complexity)]
fn read_through(
    source: Box<dyn Read + Send>,
    name: &str,
    kind: FileKind,
    database: Option<&str>,
    content_sha256: Option<&str>,
    readers: Readers<'_>,
) -> Result<(u64, String, Result<Option<Decoded>, BackupError>), BackupError> {
    let codec = FileCodec::of_name(name).ok_or_else(|| BackupError::Manifest {
        folder: name.to_string(),
        reason: "not a backup file name".into(),
    })?;
    let (tx, rx) = sync_channel::<std::io::Result<Vec<u8>>>(CHUNKS_IN_FLIGHT);
    let hasher = std::thread::spawn(move || read_and_hash(source, tx));
    let input = ChannelReader::new(rx);
    let readable = (!codec.encrypted || readers.keys.is_some())
        && (codec.format == Format::Plain || readers.pg_restore.is_some());
    let decoded = if readable {
        let targets = readers.targets(kind, database);
        let file = FileRef { name, kind, codec };
        decode(input, file, targets, content_sha256, readers).map(Some)
    } else {
        // The stored bytes are still read to their end (and hashed on the other thread).
        let mut sink = input;
        let _ = std::io::copy(&mut sink, &mut std::io::sink());
        Ok(None)
    };
    // The reader thread ends once the channel is drained or dropped.
    let (bytes, sha256, read_error) = hasher.join().map_err(|_| BackupError::Decompress {
        file: name.to_string(),
        method: "read",
        reason: "the reading thread panicked".into(),
    })?;
    if let Some(e) = read_error {
        if let Some(lost) = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<super::SourceLost>())
        {
            return Err(BackupError::SourceLost {
                file: name.to_string(),
                detail: lost.0.clone(),
            });
        }
        return Err(BackupError::Read {
            path: name.into(),
            source: e,
        });
    }
    Ok((bytes, sha256, decoded))
}

fn read_and_hash(
    mut source: Box<dyn Read + Send>,
    tx: SyncSender<std::io::Result<Vec<u8>>>,
) -> (u64, String, Option<std::io::Error>) {
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut receiver_gone = false;
    loop {
        let mut buf = vec![0u8; CHUNK];
        match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                buf.truncate(n);
                hasher.update(&buf);
                bytes += n as u64;
                // The decoder may stop early (a damaged stream); keep hashing to the end so
                // the checksum can still be reported.
                if !receiver_gone && tx.send(Ok(buf)).is_err() {
                    receiver_gone = true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let copy = std::io::Error::new(e.kind(), e.to_string());
                let _ = tx.send(Err(copy));
                // The original goes back to the caller: it may mark a broken remote stream.
                return (bytes, hex::encode(hasher.finalize()), Some(e));
            }
        }
        if crate::signals::interrupted() {
            let e = std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted by a signal");
            return (bytes, hex::encode(hasher.finalize()), Some(e));
        }
    }
    (bytes, hex::encode(hasher.finalize()), None)
}

/// Maps an error of the reading stack to what it says about the file.
fn content_error(name: &str, codec: FileCodec, e: std::io::Error) -> BackupError {
    match e.get_ref().and_then(|i| i.downcast_ref::<CipherError>()) {
        Some(CipherError::WrongKey) => BackupError::WrongKey {
            file: name.to_string(),
        },
        Some(CipherError::Damaged(reason)) => BackupError::Damaged {
            file: name.to_string(),
            reason: reason.clone(),
        },
        None => BackupError::Decompress {
            file: name.to_string(),
            method: codec.compression.name(),
            reason: e.to_string(),
        },
    }
}

fn decode(
    input: ChannelReader,
    file: FileRef<'_>,
    targets: Option<ConnectTargets>,
    content_sha256: Option<&str>,
    readers: Readers<'_>,
) -> Result<Decoded, BackupError> {
    let FileRef { name, codec, .. } = file;
    // Plain files: the decrypted bytes are hashed as they are decompressed. Custom
    // archives are not compressed by us: scan_archive hashes what it feeds pg_restore.
    let tap: Option<PlainHash> =
        (codec.format == Format::Plain && content_sha256.is_some()).then(PlainHash::default);
    let content = open_content_tapped(Box::new(input), codec, readers.keys, tap.clone())
        .map_err(|e| content_error(name, codec, e))?;
    match (codec.format, readers.pg_restore) {
        (Format::Plain, _) => {
            let decoded = scan_sql(content, file, targets)?;
            let hash = tap.and_then(|t| t.lock().ok().map(|h| h.clone()));
            check_content(name, content_sha256, hash)?;
            Ok(decoded)
        }
        (Format::Custom, Some(pg_restore)) => scan_archive(
            content,
            file,
            targets,
            content_sha256,
            pg_restore,
            readers.archive_list_only,
        ),
        (Format::Custom, None) => Err(BackupError::Archive {
            file: name.to_string(),
            detail: "no pg_restore to read it with".into(),
        }),
    }
}

/// The file being read: its name (for messages), kind (which completion line) and codec.
#[derive(Debug, Clone, Copy)]
struct FileRef<'a> {
    name: &'a str,
    kind: FileKind,
    codec: FileCodec,
}

fn check_content(
    name: &str,
    expected: Option<&str>,
    hash: Option<Sha256>,
) -> Result<(), BackupError> {
    if let (Some(expected), Some(hash)) = (expected, hash) {
        let actual = hex::encode(hash.finalize());
        if actual != expected {
            return Err(BackupError::ContentChecksum {
                file: name.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
    }
    Ok(())
}

/// A custom archive through `pg_restore -f -`: pg_restore reads every block (decompressing
/// pg_dump's own compression) and writes the SQL it would run, which is checked like a plain
/// dump. With `list_only`, `pg_restore --list` reads the header and table of contents only,
/// and the listing must name entries. Either way the archive bytes are hashed to their end on
/// their way in.
fn scan_archive(
    mut content: Box<dyn Read + Send>,
    file: FileRef<'_>,
    targets: Option<ConnectTargets>,
    content_sha256: Option<&str>,
    pg_restore: &Path,
    list_only: bool,
) -> Result<Decoded, BackupError> {
    let FileRef { name, codec, .. } = file;
    let archive_error = |detail: String| BackupError::Archive {
        file: name.to_string(),
        detail,
    };
    let mut cmd = crate::process::ChildEnv::base().command(pg_restore);
    if list_only {
        // `--create` lists the database-level entries too: an empty database has no others.
        cmd.args(["--list", "--create"]);
    } else {
        // `--create`: the SQL then holds the archive's CREATE DATABASE and its `\connect`,
        // which must go to the archive's own database.
        cmd.args(["--create", "--file=-"]);
    }
    let mut child = crate::process::Running::spawn(
        cmd,
        "pg_restore",
        Stdio::piped(),
        true,
        crate::process::Tail::default(),
    )
    .map_err(|e| archive_error(format!("cannot run {}: {e}", pg_restore.display())))?;
    let mut stdin = child
        .take_stdin()
        .ok_or_else(|| archive_error("pg_restore has no stdin".into()))?;
    let stdout = child
        .take_stdout()
        .ok_or_else(|| archive_error("pg_restore has no stdout".into()))?;
    let want_hash = content_sha256.is_some();
    let feeder = std::thread::spawn(move || -> (Option<Sha256>, Option<std::io::Error>, u64) {
        let mut hash = want_hash.then(Sha256::new);
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return (hash, Some(e), total),
            };
            total += n as u64;
            if let Some(h) = hash.as_mut() {
                h.update(&buf[..n]);
            }
            if stdin.write_all(&buf[..n]).is_err() {
                // pg_restore stopped reading: its stderr says why. Read on to hash the rest.
                let mut rest = std::io::sink();
                let mut tee = HashingRead {
                    inner: &mut content,
                    hash: hash.as_mut(),
                };
                if let Err(e) = std::io::copy(&mut tee, &mut rest) {
                    return (hash, Some(e), total);
                }
                break;
            }
        }
        (hash, None, total)
    });
    let decoded = if list_only {
        read_listing(stdout, name)
    } else {
        let sql = FileRef {
            kind: FileKind::Database,
            ..file
        };
        scan_sql(Box::new(stdout), sql, targets.clone())
    };
    let (hash, read_error, archive_bytes) = feeder
        .join()
        .map_err(|_| archive_error("the feeding thread panicked".into()))?;
    let finished = child
        .finish()
        .map_err(|e| archive_error(format!("waiting for pg_restore: {e}")))?;
    if let Some(e) = read_error {
        return Err(content_error(name, codec, e));
    }
    if !finished.status.success() {
        return Err(archive_error(
            finished
                .stderr
                .text()
                .lines()
                .last()
                .unwrap_or("pg_restore failed")
                .to_string(),
        ));
    }
    check_content(name, content_sha256, hash)?;
    let mut decoded = decoded?;
    decoded.sql_bytes = archive_bytes;
    archive_of_its_database(name, &decoded, targets.as_ref())?;
    Ok(decoded)
}

/// The archive's own database (its header, and its `\connect` with `--create`) must be one
/// the file may write to: a genuine archive of another database listed under this name
/// would otherwise be restored into that other database.
fn archive_of_its_database(
    name: &str,
    decoded: &Decoded,
    targets: Option<&ConnectTargets>,
) -> Result<(), BackupError> {
    let (Some(targets), Some(db)) = (targets, decoded.header.connect.as_deref()) else {
        return Ok(());
    };
    if targets.allows(db) {
        return Ok(());
    }
    Err(BackupError::Archive {
        file: name.to_string(),
        detail: format!(
            "it is an archive of database {db:?}, not of the database the manifest lists it \
             for; it is not restored"
        ),
    })
}

/// Reads the SQL that `pg_restore --create --file=-` writes for the archive of `database`
/// the way a restore's check does (the scanner, its `\connect` only to that database, the
/// completion line), for `dump`, which reads the archive it writes; returns each table's rows
/// as the archive carries them.
pub fn scan_archive_sql(
    sql: Box<dyn Read + Send>,
    name: &str,
    database: &str,
) -> Result<Vec<super::psql_scan::TableRows>, BackupError> {
    let file = FileRef {
        name,
        kind: FileKind::Database,
        codec: FileCodec {
            format: Format::Custom,
            compression: super::codec::Compression::Gzip,
            encrypted: false,
        },
    };
    let decoded = scan_sql(sql, file, Some(ConnectTargets::only(database)))?;
    Ok(decoded.tables)
}

/// `pg_restore --list` output: a header naming the database, then at least one entry.
fn read_listing(mut stdout: impl Read, name: &str) -> Result<Decoded, BackupError> {
    let mut text = String::new();
    // A listing is small (a line per object); bounded all the same.
    let _ = (&mut stdout)
        .take(64 * 1024 * 1024)
        .read_to_string(&mut text);
    let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    let header = |key: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(';')
                .and_then(|l| l.trim().strip_prefix(key))
                .map(|v| v.trim().to_string())
        })
    };
    let entries = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .count();
    if header("Format:").as_deref() != Some("CUSTOM") || entries == 0 {
        return Err(BackupError::Archive {
            file: name.to_string(),
            detail: "pg_restore --list found no table of contents".into(),
        });
    }
    Ok(Decoded {
        tables: Vec::new(),
        sql_bytes: 0,
        header: DumpHeader {
            server_version: header("Dumped from database version:"),
            dump_version: header("Dumped by pg_dump version:"),
            connect: text
                .lines()
                .find_map(|l| {
                    // The name as pg_restore prints it, trailing spaces included.
                    l.strip_prefix(';')
                        .map(str::trim_start)
                        .and_then(|l| l.strip_prefix("dbname: "))
                })
                .map(str::to_string),
            connects: Vec::new(),
        },
    })
}

struct HashingRead<'a, R> {
    inner: &'a mut R,
    hash: Option<&'a mut Sha256>,
}

impl<R: Read> Read for HashingRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hash.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Reads SQL to its end: the scan, the completion line, the header; hashes it when asked.
fn scan_sql(
    mut content: Box<dyn Read + Send>,
    file: FileRef<'_>,
    targets: Option<ConnectTargets>,
) -> Result<Decoded, BackupError> {
    let FileRef { name, kind, codec } = file;
    let mut head: Vec<u8> = Vec::new();
    let mut connects: Vec<String> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut tail: Vec<u8> = Vec::with_capacity(2 * TAIL);
    let mut total = 0u64;
    let mut scanner = Scanner::new().with_targets(targets);
    // The first thing pg_dump would never write; decoding goes on to the end so that a
    // file cut off in the middle of a line is reported as cut off, which is what it is.
    let mut violation = None;
    loop {
        let n = match content.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(content_error(name, codec, e)),
        };
        total += n as u64;
        if head.len() < HEAD {
            let take = (HEAD - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
        }
        if violation.is_none()
            && let Err(v) = scanner.feed(&buf[..n])
        {
            violation = Some(v);
        }
        note_connects(&mut connects, scanner.take_metas());
        // Keep the last TAIL bytes of SQL.
        if n >= TAIL {
            tail.clear();
            tail.extend_from_slice(&buf[n - TAIL..n]);
        } else {
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > TAIL {
                tail.drain(..tail.len() - TAIL);
            }
        }
    }
    if violation.is_none()
        && let Err(v) = scanner.finish()
    {
        violation = Some(v);
    }
    if total == 0 {
        return Err(BackupError::Decompress {
            file: name.to_string(),
            method: codec.compression.name(),
            reason: "no data".into(),
        });
    }
    let line = completion_line(kind);
    if !tail.windows(line.len()).any(|w| w == line) {
        return Err(BackupError::Truncated {
            file: name.to_string(),
        });
    }
    if let Some(violation) = violation {
        return Err(BackupError::Unsafe {
            file: name.to_string(),
            violation,
        });
    }
    note_connects(&mut connects, scanner.take_metas());
    let text = String::from_utf8_lossy(&head);
    let after = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
    };
    Ok(Decoded {
        tables: scanner.take_copies(),
        sql_bytes: total,
        header: DumpHeader {
            server_version: after("-- Dumped from database version "),
            dump_version: after("-- Dumped by pg_dump version ")
                .or_else(|| after("-- Dumped by pg_dumpall version ")),
            connect: connects.first().cloned(),
            connects,
        },
    })
}

/// Adds the databases of the `\connect`s in `metas` that are not in `connects` yet.
fn note_connects(connects: &mut Vec<String>, metas: Vec<Meta>) {
    for meta in metas {
        if let Meta::Connect(db) = meta
            && !connects.contains(&db)
        {
            connects.push(db);
        }
    }
}

/// Reads the chunks the hashing thread sends.
struct ChannelReader {
    rx: Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: Receiver<std::io::Result<Vec<u8>>>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.current.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn entry_for(bytes: &[u8], kind: FileKind) -> FileEntry {
        FileEntry {
            name: "postgres_db_x.sql.gz".into(),
            kind,
            database: Some("x".into()),
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            sql_bytes: 0,
            content_sha256: None,
            tables: None,
        }
    }

    fn gz(text: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::new(6));
        e.write_all(text).unwrap();
        e.finish().unwrap()
    }

    fn check(bytes: Vec<u8>, entry: &FileEntry) -> Result<Checked, BackupError> {
        check_stream(
            Box::new(std::io::Cursor::new(bytes)),
            entry,
            Readers::default(),
        )
    }

    const DUMP: &[u8] =
        b"SELECT 1;\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n\n";

    #[test]
    fn a_good_file_passes() {
        let data = gz(DUMP);
        let c = check(data.clone(), &entry_for(&data, FileKind::Database)).unwrap();
        assert_eq!(c.sql_bytes, DUMP.len() as u64);
    }

    #[test]
    fn a_flipped_byte_is_a_checksum_error() {
        let data = gz(DUMP);
        let entry = entry_for(&data, FileKind::Database);
        let mut bad = data.clone();
        bad[12] ^= 1;
        assert!(matches!(
            check(bad, &entry),
            Err(BackupError::Checksum { .. })
        ));
    }

    #[test]
    fn a_truncated_dump_in_valid_gzip_is_caught() {
        let data = gz(b"SELECT 1;\nCOPY t FROM stdin;\n1\n");
        let entry = entry_for(&data, FileKind::Database);
        assert!(matches!(
            check(data, &entry),
            Err(BackupError::Truncated { .. })
        ));
    }

    #[test]
    fn a_damaged_gzip_with_a_matching_manifest_is_a_gzip_error() {
        let mut data = gz(DUMP);
        let len = data.len();
        data[len - 6] ^= 0xff; // the CRC
        let entry = entry_for(&data, FileKind::Database);
        assert!(matches!(
            check(data, &entry),
            Err(BackupError::Decompress { .. })
        ));
    }

    #[test]
    fn a_short_file_is_a_size_error() {
        let data = gz(DUMP);
        let entry = entry_for(&data, FileKind::Database);
        let short = data[..data.len() - 3].to_vec();
        assert!(matches!(
            check(short, &entry),
            Err(BackupError::Size { .. })
        ));
    }

    #[test]
    fn a_shell_escape_with_a_matching_manifest_is_refused() {
        let data =
            gz(b"SELECT 1;\n\\! touch /tmp/pwned\n--\n-- PostgreSQL database dump complete\n--\n");
        let entry = entry_for(&data, FileKind::Database);
        match check(data, &entry) {
            Err(BackupError::Unsafe { violation, .. }) => assert_eq!(violation.line, 2),
            other => panic!("{other:?}"),
        }
    }
}
