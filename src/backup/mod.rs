//! The backup folder: its name, its files and its manifest, the same at every destination.
//!
//! ```text
//! <root>/20251005_120000/          # UTC, YYYYMMDD_HHMMSS
//!     postgres_cluster.sql.gz      # roles, tablespaces, every database (pg_dumpall format)
//!     postgres_globals.sql.gz      # pg_dumpall --globals-only
//!     postgres_db_<name>.sql.gz    # pg_dump --create of one database
//!     manifest.json                # written last: the folder is complete only with it
//! ```

pub mod cluster;
pub mod codec;
mod manifest;
pub mod psql_scan;
pub mod sql_lines;
pub mod store;
pub mod verify;
pub mod writer;

pub use manifest::{
    Adopted, EncryptionInfo, FORMAT as MANIFEST_FORMAT, FailedDatabase, FileEntry, FileKind,
    Manifest, ManifestStatus, ServerInfo, fsync_dir as manifest_fsync_dir,
};

use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDateTime, Utc};
use thiserror::Error;

pub const CLUSTER_FILE: &str = "postgres_cluster.sql.gz";
pub const GLOBALS_FILE: &str = "postgres_globals.sql.gz";
pub const MANIFEST_FILE: &str = "manifest.json";
/// Marker beside the manifest that protects a folder from retention (the manifest itself is
/// never rewritten).
pub const PIN_FILE: &str = "pinned";
const DB_PREFIX: &str = "postgres_db_";
const SQL_GZ: &str = ".sql.gz";

/// A validated folder name: `YYYYMMDD_HHMMSS`, a real UTC date and time. Only these reach a
/// path, an S3 key or a remote command (DESIGN.md guarantee 7).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FolderName(String);

impl FolderName {
    pub fn parse(name: &str) -> Option<FolderName> {
        let b = name.as_bytes();
        let shape = b.len() == 15
            && b[8] == b'_'
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[9..].iter().all(u8::is_ascii_digit);
        if !shape {
            return None;
        }
        NaiveDateTime::parse_from_str(name, "%Y%m%d_%H%M%S").ok()?;
        Some(FolderName(name.to_string()))
    }

    pub fn from_time(t: DateTime<Utc>) -> FolderName {
        FolderName(t.format("%Y%m%d_%H%M%S").to_string())
    }

    /// The backup's time, from its name (not from file times, which copies change).
    pub fn time(&self) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(&self.0, "%Y%m%d_%H%M%S")
            .map(|t| t.and_utc())
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FolderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The file of one database in the default layout: `postgres_db_<name>.sql.gz`, with every
/// byte outside `[A-Za-z0-9_.-]` percent-encoded so any database name makes a safe file name.
pub fn database_file_name(database: &str) -> String {
    database_file_name_with(database, SQL_GZ)
}

/// `postgres_db_<encoded name><suffix>` (see [`codec::Layout`]).
pub fn database_file_name_with(database: &str, suffix: &str) -> String {
    format!("{DB_PREFIX}{}{suffix}", percent_encode(database))
}

/// The database name a `postgres_db_*` file stands for (the manifest is authoritative).
pub fn database_from_file_name(file: &str) -> Option<String> {
    let codec = codec::FileCodec::of_name(file)?;
    let encoded = file
        .strip_prefix(DB_PREFIX)?
        .strip_suffix(&codec.suffix())?;
    percent_decode(encoded)
}

pub fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // "." and ".." alone would be path components; a leading dot would hide the file.
    if out.starts_with('.') {
        out.replace_range(0..1, "%2E");
    }
    out
}

pub fn percent_decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A file name from a manifest or a listing is used in paths and keys only if it is one of
/// ours: no separators, no traversal, no hidden names.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'%'))
}

/// The scratch files a dump keeps beside its files until the cluster file is assembled
/// (`.section_<n><suffix>`, `.cluster_head<suffix>`): in the work folder, or at S3 for a dump
/// without local copy, where a killed run's uploads of them are cleared like any of ours,
/// and where the run also marks the folder as its own (`.claim_<run>`).
pub const SCRATCH_PREFIXES: [&str; 3] = [".section_", ".cluster_head", ".claim_"];

pub fn is_scratch_file_name(name: &str) -> bool {
    SCRATCH_PREFIXES.iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|rest| is_safe_file_name(&format!("x{rest}")))
    })
}

/// Whether `name` is a file that pg-backups writes into a folder (a data file of any format,
/// the manifest, the pin marker): what a cleanup may touch.
pub fn is_backup_file_name(name: &str) -> bool {
    if name == MANIFEST_FILE || name == PIN_FILE {
        return true;
    }
    if !is_safe_file_name(name) {
        return false;
    }
    let base = name.strip_suffix(".age").unwrap_or(name);
    let stem = [".sql.gz", ".sql.zst", ".dump"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext));
    match stem {
        Some("postgres_cluster" | "postgres_globals") => true,
        Some(s) => s.strip_prefix(DB_PREFIX).is_some_and(|db| !db.is_empty()),
        None => false,
    }
}

/// Marks a read error of a stream from S3 or a remote host: the source went away mid-file
/// (exit 69), which is not a local disk problem (74).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct SourceLost(pub String);

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("{file}: the stream from the source broke off: {detail}")]
    SourceLost { file: String, detail: String },
    #[error(
        "cannot create {path}: {source}; check that BACKUP_DIR exists, is writable by this user \
         and is on a local disk"
    )]
    CreateFolder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}{}", space_hint(source))]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the manifest of {folder} is not valid: {reason}")]
    Manifest { folder: String, reason: String },
    #[error(
        "{file}: SHA-256 is {actual} but the manifest says {expected}; the file was changed or \
         damaged after the backup was taken"
    )]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{file}: {actual} bytes but the manifest says {expected}; the file is truncated or damaged"
    )]
    Size {
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error("{file}: the {method} stream is damaged: {reason}")]
    Decompress {
        file: String,
        method: &'static str,
        reason: String,
    },
    #[error(
        "{file}: none of the keys in AGE_IDENTITY_FILE can decrypt it (it is encrypted to other \
         recipients: see the manifest's fingerprints); nothing was sent to the server"
    )]
    WrongKey { file: String },
    #[error("{file} is encrypted: set AGE_IDENTITY_FILE to the private key it was encrypted to")]
    KeyMissing { file: String },
    #[error("{file}: the encrypted stream is damaged or cut short: {reason}")]
    Damaged { file: String, reason: String },
    #[error("{file}: the custom-format archive cannot be read: {detail}")]
    Archive { file: String, detail: String },
    #[error("{file}: its decrypted content has SHA-256 {actual} but the manifest says {expected}")]
    ContentChecksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{file}: the SQL ends before pg_dump's completion line; the dump was cut short")]
    Truncated { file: String },
    #[error(
        "{file}: {violation}; pg_dump never writes this, so the file was altered or is not a \
         pg_dump file: nothing of it is restored"
    )]
    Unsafe {
        file: String,
        violation: psql_scan::Violation,
    },
}

fn space_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            "; free disk space or lower LOCAL_RETENTION_DAYS"
        }
        Some(libc::EFBIG) => "; the file exceeds the file-size limit of this process or filesystem",
        _ => "",
    }
}

impl BackupError {
    pub fn exit_code(&self) -> i32 {
        match self {
            BackupError::SourceLost { .. } => exitcode::UNAVAILABLE,
            BackupError::CreateFolder { .. } => exitcode::CANTCREAT,
            BackupError::Write { source, .. } if store::SinkFailed::of(source).is_some() => {
                store::SinkFailed::of(source).map_or(exitcode::IOERR, |f| f.exit_code)
            }
            BackupError::Write { source, .. } => match source.kind() {
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                    exitcode::CANTCREAT
                }
                _ => exitcode::IOERR,
            },
            BackupError::Read { source, .. } => crate::exit::io_exit_code(source),
            BackupError::WrongKey { .. } => exitcode::NOPERM,
            BackupError::KeyMissing { .. } => exitcode::CONFIG,
            BackupError::Manifest { .. }
            | BackupError::Checksum { .. }
            | BackupError::Size { .. }
            | BackupError::Decompress { .. }
            | BackupError::Damaged { .. }
            | BackupError::Archive { .. }
            | BackupError::ContentChecksum { .. }
            | BackupError::Truncated { .. }
            | BackupError::Unsafe { .. } => exitcode::DATAERR,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            BackupError::SourceLost { .. } => "unreachable",
            BackupError::CreateFolder { .. } => "cannot_create",
            BackupError::Write { source, .. } if store::SinkFailed::of(source).is_some() => {
                "upload_failed"
            }
            BackupError::Write { .. } => "io_write",
            BackupError::Read { .. } => "io_read",
            BackupError::Manifest { .. } => "bad_manifest",
            BackupError::Checksum { .. } => "checksum_mismatch",
            BackupError::Size { .. } => "size_mismatch",
            BackupError::Decompress { method, .. } => match *method {
                "zstd" => "zstd_damaged",
                _ => "gzip_damaged",
            },
            BackupError::WrongKey { .. } => "wrong_key",
            BackupError::KeyMissing { .. } => "key_missing",
            BackupError::Damaged { .. } => "encryption_damaged",
            BackupError::Archive { .. } => "archive_damaged",
            BackupError::ContentChecksum { .. } => "content_checksum_mismatch",
            BackupError::Truncated { .. } => "dump_truncated",
            BackupError::Unsafe { .. } => "unsafe_content",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dumps_scratch_files_are_recognised_and_nothing_else() {
        for name in [
            ".section_0.sql.gz",
            ".section_12.sql.zst.age",
            ".cluster_head.sql.gz",
        ] {
            assert!(is_scratch_file_name(name), "{name}");
        }
        for name in [
            ".section_0/../x",
            ".cluster_head/a",
            ".other",
            "postgres_db_a.sql.gz",
        ] {
            assert!(!is_scratch_file_name(name), "{name}");
        }
    }

    #[test]
    fn folder_names_must_be_real_utc_timestamps() {
        let good = ["20251005_120000", "20240229_235959", "19991231_000000"];
        for g in good {
            assert!(FolderName::parse(g).is_some(), "{g}");
        }
        let bad = [
            "",
            "latest",
            "../../etc",
            "20250101_000000;rm -rf ~",
            "20251005_1200000",
            "2025100_120000",
            "20251305_120000",
            "20250230_120000",
            "20251005_250000",
            ".20251005_120000.partial",
            "20251005-120000",
            "２0251005_120000",
        ];
        for b in bad {
            assert!(FolderName::parse(b).is_none(), "{b} should be invalid");
        }
    }

    #[test]
    fn folder_time_round_trips() {
        let t = DateTime::parse_from_rfc3339("2025-10-05T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let name = FolderName::from_time(t);
        assert_eq!(name.as_str(), "20251005_120000");
        assert_eq!(name.time(), t);
    }

    #[test]
    fn database_names_are_percent_encoded_in_file_names() {
        let cases = [
            ("mydb", "postgres_db_mydb.sql.gz"),
            ("my db", "postgres_db_my%20db.sql.gz"),
            ("Sales-2025", "postgres_db_Sales-2025.sql.gz"),
            ("O'Brien", "postgres_db_O%27Brien.sql.gz"),
            ("données", "postgres_db_donn%C3%A9es.sql.gz"),
            ("50%", "postgres_db_50%25.sql.gz"),
            ("../etc", "postgres_db_%2E.%2Fetc.sql.gz"),
            ("a/b", "postgres_db_a%2Fb.sql.gz"),
        ];
        for (db, file) in cases {
            assert_eq!(database_file_name(db), file, "{db}");
            assert!(is_safe_file_name(file), "{file}");
            assert_eq!(database_from_file_name(file).as_deref(), Some(db), "{file}");
        }
    }

    #[test]
    fn long_names_stay_within_file_name_limits() {
        let name = "é".repeat(31); // 62 bytes, every one encoded
        let file = database_file_name(&name);
        assert!(file.len() <= 255, "{}", file.len());
    }

    #[test]
    fn backup_file_names_are_recognised() {
        for ours in [
            "manifest.json",
            "pinned",
            "postgres_cluster.sql.gz",
            "postgres_globals.sql.zst.age",
            "postgres_db_my%20db.dump",
            "postgres_db_x.sql.gz.age",
        ] {
            assert!(is_backup_file_name(ours), "{ours}");
        }
        for theirs in [
            "video.mp4",
            "postgres_db_.sql.gz",
            "../manifest.json",
            "postgres_db_x.tar",
        ] {
            assert!(!is_backup_file_name(theirs), "{theirs}");
        }
    }

    #[test]
    fn unsafe_file_names_are_refused() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "a b", "x\n"] {
            assert!(!is_safe_file_name(bad), "{bad:?}");
        }
    }
}
