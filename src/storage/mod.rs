//! Destinations behind one interface: the local `BACKUP_DIR`, an S3-compatible bucket, and a
//! remote host over rsync/ssh. `list`, `ship`, `prune`, `check`, `pin`, `verify` and
//! `restore` see the same folders and statuses at each of them.

mod hash;
pub mod local;
pub mod remote;
pub mod s3;

use std::io::Read;

use chrono::{DateTime, Utc};
use serde::Serialize;
use thiserror::Error;

use crate::backup::{BackupError, FolderName, Manifest, ManifestStatus};
use crate::config::SourceKind;

/// The state of a folder at a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FolderStatus {
    /// Manifest present, every database dumped.
    Complete,
    /// Manifest present, some databases failed.
    Partial,
    /// No manifest: a run in progress, or one that died.
    Incomplete,
    /// Not a backup folder name, or an unreadable manifest: listed, never touched.
    Invalid,
}

impl FolderStatus {
    /// A backup that can be restored (fully or in part).
    pub fn has_manifest(self) -> bool {
        matches!(self, FolderStatus::Complete | FolderStatus::Partial)
    }
}

/// One folder-like entry at a destination.
#[derive(Debug, Clone)]
pub struct FolderEntry {
    /// The name as found at the destination.
    pub name: String,
    /// Present only when the name is a valid backup folder name.
    pub folder: Option<FolderName>,
    pub status: FolderStatus,
    pub manifest: Option<Manifest>,
    pub pinned: bool,
    /// Bytes stored for this folder at the destination.
    pub bytes: u64,
    /// Newest modification time seen, to age leftovers of interrupted runs.
    pub modified: Option<DateTime<Utc>>,
    /// Why it is invalid or incomplete, when there is something to say.
    pub note: Option<String>,
    /// A hidden work folder of a local `dump` that did not finish.
    pub work_folder: bool,
    /// The files directly in the folder, with their sizes.
    pub files: Vec<(String, u64)>,
}

impl FolderEntry {
    /// The folder's size wherever it is shown (`list`, `prune`, the restore prompt): the
    /// bytes stored, or the manifest's files when the listing could not size them.
    pub fn size(&self) -> u64 {
        self.manifest
            .as_ref()
            .map_or(self.bytes, |m| m.total_bytes().max(self.bytes))
    }

    pub fn from_manifest(
        name: String,
        folder: FolderName,
        manifest: Option<Result<Manifest, BackupError>>,
    ) -> FolderEntry {
        let (status, manifest, note) = match manifest {
            None => (
                FolderStatus::Incomplete,
                None,
                Some("no manifest.json".to_string()),
            ),
            Some(Ok(m)) => (
                match m.status {
                    ManifestStatus::Complete => FolderStatus::Complete,
                    ManifestStatus::Partial => FolderStatus::Partial,
                },
                Some(m),
                None,
            ),
            Some(Err(e)) => (FolderStatus::Invalid, None, Some(e.to_string())),
        };
        FolderEntry {
            name,
            folder: Some(folder),
            status,
            manifest,
            pinned: false,
            bytes: 0,
            modified: None,
            note,
            work_folder: false,
            files: Vec::new(),
        }
    }

    /// A folder without manifest whose files are named the way the original backup scripts
    /// named theirs (`postgres_cluster.sql.gz`, `postgres_globals.sql.gz`,
    /// `postgres_db_<name>.sql.gz`): a backup of theirs, never a leftover to prune, until
    /// `pg-backups adopt` checks it and gives it a manifest.
    pub fn made_by_scripts(&self) -> bool {
        self.status == FolderStatus::Incomplete
            && !self.work_folder
            && self.folder.is_some()
            && !self.files.is_empty()
            && self.files.iter().all(|(f, _)| is_scripts_file_name(f))
    }

    pub fn invalid(name: String, note: &str) -> FolderEntry {
        FolderEntry {
            name,
            folder: None,
            status: FolderStatus::Invalid,
            manifest: None,
            pinned: false,
            bytes: 0,
            modified: None,
            note: Some(note.to_string()),
            work_folder: false,
            files: Vec::new(),
        }
    }

    /// Sets the file list, and says so in the note when the backup scripts made the folder.
    pub fn with_files(mut self, files: Vec<(String, u64)>) -> FolderEntry {
        self.files = files;
        if self.made_by_scripts() {
            self.note = Some(
                "made by the backup scripts (no manifest): `pg-backups adopt` checks it and \
                 makes it a backup; until then it is never pruned"
                    .into(),
            );
        }
        self
    }
}

/// A file name the original backup scripts wrote (database names were not encoded then).
pub fn is_scripts_file_name(name: &str) -> bool {
    name == "postgres_cluster.sql.gz"
        || name == "postgres_globals.sql.gz"
        || name
            .strip_prefix("postgres_db_")
            .and_then(|r| r.strip_suffix(".sql.gz"))
            .is_some_and(|db| !db.is_empty() && !db.contains('/'))
}

/// What holds a folder's objects at a destination with S3 Object Lock: a retention date
/// still to come, or a legal hold (which has no date).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub until: Option<DateTime<Utc>>,
    pub legal_hold: bool,
}

impl ObjectLock {
    /// For reports: why the folder stays.
    pub fn reason(&self) -> String {
        match (self.until, self.legal_hold) {
            (_, true) => {
                "under an S3 Object Lock legal hold: kept until the hold is removed".into()
            }
            (Some(d), false) => format!(
                "locked until {} (S3 Object Lock): deleted by a prune after that",
                d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            (None, false) => "locked (S3 Object Lock)".into(),
        }
    }
}

/// What a copy of one folder to a destination did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PutStats {
    pub files: u32,
    pub bytes: u64,
}

/// A destination.
pub trait Storage: Send + Sync {
    fn kind(&self) -> SourceKind;

    /// The local backup root, when this is it (its files can be opened in place).
    fn as_local(&self) -> Option<&local::LocalStorage> {
        None
    }

    /// Where it is, for messages and JSON (never with credentials).
    fn location(&self) -> String;

    /// Every folder-like entry, newest first, with its manifest read and checked.
    fn list(&self) -> Result<Vec<FolderEntry>, StorageError>;

    /// The manifest of one folder, `None` when the folder has none.
    fn manifest(&self, folder: &FolderName) -> Result<Option<Manifest>, StorageError>;

    /// Streams one file of a folder.
    fn open(&self, folder: &FolderName, file: &str) -> Result<Box<dyn Read + Send>, StorageError>;

    /// Copies a complete local folder here: every data file, each checked on arrival, and
    /// the manifest last, so the copy is complete or invisible. `progress` counts the data
    /// bytes as they arrive (a bar on a terminal).
    fn put_folder(
        &self,
        source: &local::LocalFolder,
        manifest: &Manifest,
        progress: &crate::progress::Counter,
    ) -> Result<PutStats, StorageError>;

    /// Removes a folder, manifest first, so an interrupted delete leaves an incomplete
    /// folder, never a "complete" one with files missing. Returns the bytes freed.
    fn delete(&self, entry: &FolderEntry) -> Result<u64, StorageError>;

    /// Adds or removes the pin marker of a folder.
    fn set_pin(&self, folder: &FolderName, pinned: bool) -> Result<(), StorageError>;

    /// Writes the manifest of a folder whose files are already there (`adopt`), checked on
    /// arrival like any manifest.
    fn put_manifest(&self, folder: &FolderName, manifest: &Manifest) -> Result<(), StorageError>;

    /// Removes several folders: every manifest first, then the data, so an interrupted prune
    /// never leaves a "complete" folder with files missing. Destinations that can delete in
    /// batches do so. One result per entry, in order.
    fn delete_many(&self, entries: &[&FolderEntry]) -> Vec<Result<u64, StorageError>> {
        entries.iter().map(|e| self.delete(e)).collect()
    }

    /// Checks, before anything is written, that the destination can keep what the settings
    /// promise (S3: Object Lock enabled on the bucket when `S3_OBJECT_LOCK_MODE` is set).
    /// `ship` calls it, and so must any other writer.
    fn check_before_write(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Whether a folder's objects are still locked at `now` (S3 Object Lock), so retention
    /// does not even try to delete it. Destinations without locks have none.
    fn object_lock(
        &self,
        _entry: &FolderEntry,
        _now: DateTime<Utc>,
    ) -> Result<Option<ObjectLock>, StorageError> {
        Ok(None)
    }

    /// The files of a folder that were written more than once (a bucket that keeps
    /// versions holds several of them); destinations without versions have none.
    fn rewritten(&self, _folder: &FolderName) -> Result<Vec<String>, StorageError> {
        Ok(Vec::new())
    }

    /// Aborts multipart uploads started before `before` (leftovers of failed ships), returning
    /// their keys; destinations without such a thing have none. `dry_run` only lists them.
    fn abort_stale_uploads(
        &self,
        _before: DateTime<Utc>,
        _dry_run: bool,
    ) -> Result<Vec<String>, StorageError> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("{destination} cannot be reached: {detail}")]
    Unreachable { destination: String, detail: String },
    #[error("{destination} refused the credentials or the operation: {detail}")]
    Denied { destination: String, detail: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{destination}: {detail}")]
    CannotCreate { destination: String, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{destination}: {detail}")]
    Failed { destination: String, detail: String },
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// A destination asked for that is not enabled or not fully set.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Invalid(String),
    /// The provider refused to delete object versions that S3 Object Lock still holds.
    #[error("{destination}: {}", .lock.reason())]
    Locked {
        destination: String,
        lock: ObjectLock,
    },
}

impl StorageError {
    pub fn exit_code(&self) -> i32 {
        match self {
            StorageError::Unreachable { .. } | StorageError::Failed { .. } => exitcode::UNAVAILABLE,
            StorageError::Denied { .. } => exitcode::NOPERM,
            StorageError::NotFound(_) => exitcode::NOINPUT,
            StorageError::CannotCreate { .. } => exitcode::CANTCREAT,
            StorageError::Io { source, .. } => crate::exit::io_exit_code(source),
            StorageError::Backup(e) => e.exit_code(),
            StorageError::Config(e) => e.exit_code(),
            StorageError::Invalid(_) => exitcode::USAGE,
            StorageError::Locked { .. } => exitcode::NOPERM,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            StorageError::Unreachable { .. } => "unreachable",
            StorageError::Denied { .. } => "denied",
            StorageError::NotFound(_) => "not_found",
            StorageError::CannotCreate { .. } => "cannot_create",
            StorageError::Io { .. } => "io",
            StorageError::Failed { .. } => "storage_failed",
            StorageError::Backup(e) => e.kind(),
            StorageError::Config(e) => e.kind(),
            StorageError::Invalid(_) => "invalid_name",
            StorageError::Locked { .. } => "locked",
        }
    }
}

/// Sorts entries newest first: valid names by time, then the invalid ones by name.
pub fn sort_newest_first(entries: &mut [FolderEntry]) {
    entries.sort_by(|a, b| match (&a.folder, &b.folder) {
        (Some(x), Some(y)) => y.cmp(x).then(a.work_folder.cmp(&b.work_folder)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.name.cmp(&b.name),
    });
}

/// The newest complete backup that is not from the future: a folder named after a time to
/// come was made by a clock that ran ahead, and is never "the latest" (retention and `check`
/// judge it the same way).
pub fn newest_complete(entries: &[FolderEntry], now: DateTime<Utc>) -> Option<&FolderEntry> {
    entries
        .iter()
        .filter(|e| e.status == FolderStatus::Complete && !e.work_folder)
        .filter(|e| e.folder.as_ref().is_some_and(|f| f.time() <= now))
        .max_by(|a, b| a.folder.cmp(&b.folder))
}

/// Opens the destinations a command works on: `only` one of them, or local (unless dump
/// keeps no local copy) plus every enabled one. Asking for a destination that is not
/// enabled is a configuration error (78).
pub fn open_all(
    cfg: &crate::config::Config,
    only: Option<SourceKind>,
) -> Result<Vec<Box<dyn Storage>>, StorageError> {
    let mut out: Vec<Box<dyn Storage>> = Vec::new();
    if only == Some(SourceKind::Local) || (only.is_none() && cfg.local_copy) {
        out.push(Box::new(local::LocalStorage::new(&cfg.backup_dir)));
    }
    for kind in [SourceKind::S3, SourceKind::Remote] {
        if only.is_some() && only != Some(kind) {
            continue;
        }
        if let Some(d) = open(cfg, kind, only.is_some())? {
            out.push(d);
        }
    }
    Ok(out)
}

/// Opens one destination; `None` when it is disabled and not `required`.
pub fn open(
    cfg: &crate::config::Config,
    kind: SourceKind,
    required: bool,
) -> Result<Option<Box<dyn Storage>>, StorageError> {
    use crate::config::ConfigError;
    let not_enabled = |var: &str| {
        ConfigError::Incomplete(format!(
            "{kind} was asked for but {var} is not true: set {var}=true and its settings"
        ))
    };
    match kind {
        SourceKind::Local => Ok(Some(Box::new(local::LocalStorage::new(&cfg.backup_dir)))),
        SourceKind::S3 => match cfg.s3.get()? {
            None if required => Err(not_enabled("S3_ENABLED").into()),
            None => Ok(None),
            Some(s3) => Ok(Some(Box::new(s3::S3Storage::new(s3)?))),
        },
        SourceKind::Remote => match cfg.rsync.get()? {
            None if required => Err(not_enabled("RSYNC_ENABLED").into()),
            None => Ok(None),
            Some(r) => Ok(Some(Box::new(remote::RemoteStorage::new(r)?))),
        },
    }
}
