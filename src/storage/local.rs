//! The local backup root (`BACKUP_DIR`): where `dump` writes and what `ship` copies from.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{FolderEntry, PutStats, Storage, StorageError, sort_newest_first};
use crate::backup::{
    BackupError, FolderName, MANIFEST_FILE, Manifest, PIN_FILE, is_safe_file_name,
    manifest_fsync_dir,
};
use crate::config::SourceKind;

/// The name of a `dump` work folder: hidden until it is complete.
pub fn work_folder_name(folder: &FolderName) -> String {
    format!(".{folder}.partial")
}

/// The folder a work-folder name belongs to, if `name` is one.
pub fn parse_work_folder(name: &str) -> Option<FolderName> {
    name.strip_prefix('.')?
        .strip_suffix(".partial")
        .and_then(FolderName::parse)
}

/// A folder under `BACKUP_DIR`, as a source for shipping and verifying.
#[derive(Debug, Clone)]
pub struct LocalFolder {
    pub dir: PathBuf,
    pub folder: FolderName,
}

impl LocalFolder {
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(root: &Path) -> LocalStorage {
        LocalStorage {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn folder(&self, folder: &FolderName) -> LocalFolder {
        LocalFolder {
            dir: self.root.join(folder.as_str()),
            folder: folder.clone(),
        }
    }

    fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
        move |source| StorageError::Io {
            context: format!("reading {}", path.display()),
            source,
        }
    }

    fn entry_for(&self, name: String, path: &Path) -> Result<FolderEntry, StorageError> {
        let (mut entry, dir_stats) = if let Some(folder) = FolderName::parse(&name) {
            let manifest = match std::fs::read(path.join(MANIFEST_FILE)) {
                Ok(bytes) => Some(Manifest::parse(&bytes, &folder)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => Some(Err(BackupError::Read {
                    path: path.join(MANIFEST_FILE),
                    source: e,
                })),
            };
            (FolderEntry::from_manifest(name, folder, manifest), true)
        } else if let Some(folder) = parse_work_folder(&name) {
            let mut e = FolderEntry::from_manifest(name, folder, None);
            e.work_folder = true;
            e.note = Some("work folder of a dump that is running or was killed".into());
            (e, true)
        } else {
            (
                FolderEntry::invalid(name, "not a backup folder name (YYYYMMDD_HHMMSS)"),
                true,
            )
        };
        if dir_stats {
            let (bytes, modified, files) = dir_usage(path).map_err(Self::read_err(path))?;
            entry.bytes = bytes;
            entry.modified = modified;
            entry = entry.with_files(files);
        }
        if entry.folder.is_some() && !entry.work_folder {
            entry.pinned = path.join(PIN_FILE).exists();
        }
        Ok(entry)
    }
}

/// Files and their sizes in a folder.
type FileList = Vec<(String, u64)>;

/// Total size, newest modification time and the files directly in `dir`.
fn dir_usage(dir: &Path) -> std::io::Result<(u64, Option<DateTime<Utc>>, FileList)> {
    let mut bytes = 0;
    let mut newest: Option<DateTime<Utc>> = None;
    let mut files = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let meta = item.metadata()?;
        if meta.is_file() {
            bytes += meta.len();
            files.push((item.file_name().to_string_lossy().into_owned(), meta.len()));
        }
        if let Ok(m) = meta.modified() {
            let t: DateTime<Utc> = m.into();
            newest = Some(newest.map_or(t, |n| n.max(t)));
        }
    }
    files.sort();
    Ok((bytes, newest, files))
}

impl Storage for LocalStorage {
    fn kind(&self) -> SourceKind {
        SourceKind::Local
    }

    fn as_local(&self) -> Option<&LocalStorage> {
        Some(self)
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self) -> Result<Vec<FolderEntry>, StorageError> {
        let read = match std::fs::read_dir(&self.root) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound(format!(
                    "BACKUP_DIR {} does not exist",
                    self.root.display()
                )));
            }
            Err(e) => return Err(Self::read_err(&self.root)(e)),
        };
        let mut entries = Vec::new();
        for item in read {
            // One entry that cannot be read (a folder another user made unreadable, a stat
            // that fails) is listed as invalid; it never stops the run.
            let item = match item {
                Ok(i) => i,
                Err(e) => {
                    entries.push(FolderEntry::invalid(
                        "(unreadable entry)".into(),
                        &format!("cannot read an entry of {}: {e}", self.root.display()),
                    ));
                    continue;
                }
            };
            let name = item.file_name().to_string_lossy().into_owned();
            let is_dir = match item.file_type() {
                Ok(t) => t.is_dir(),
                Err(e) => {
                    entries.push(FolderEntry::invalid(name, &format!("cannot stat it: {e}")));
                    continue;
                }
            };
            if !is_dir || name == "lost+found" {
                continue;
            }
            match self.entry_for(name.clone(), &item.path()) {
                Ok(e) => entries.push(e),
                Err(e) => entries.push(FolderEntry::invalid(name, &format!("cannot read it: {e}"))),
            }
        }
        sort_newest_first(&mut entries);
        Ok(entries)
    }

    fn manifest(&self, folder: &FolderName) -> Result<Option<Manifest>, StorageError> {
        let path = self.root.join(folder.as_str()).join(MANIFEST_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(Manifest::parse(&bytes, folder)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::read_err(&path)(e)),
        }
    }

    fn open(&self, folder: &FolderName, file: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        Ok(Box::new(self.open_file(folder, file)?))
    }

    fn put_folder(
        &self,
        source: &LocalFolder,
        manifest: &Manifest,
        progress: &crate::progress::Counter,
    ) -> Result<PutStats, StorageError> {
        let final_dir = self.root.join(source.folder.as_str());
        let work = self.root.join(work_folder_name(&source.folder));
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source: std::io::Error| StorageError::Backup(BackupError::Write { path, source })
        };
        if work.exists() {
            std::fs::remove_dir_all(&work).map_err(werr(&work))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&work)
            .map_err(werr(&work))?;
        let mut stats = PutStats::default();
        for entry in &manifest.files {
            progress.set_label(&format!("{}/{}", source.folder.as_str(), entry.name));
            let from = source.path(&entry.name);
            let to = work.join(&entry.name);
            let mut input = std::fs::File::open(&from).map_err(Self::read_err(&from))?;
            let mut output = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&to)
                .map_err(werr(&to))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut bytes = 0u64;
            loop {
                let n = input.read(&mut buf).map_err(Self::read_err(&from))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                output.write_all(&buf[..n]).map_err(werr(&to))?;
                bytes += n as u64;
            }
            output.sync_all().map_err(werr(&to))?;
            let sha = hex::encode(hasher.finalize());
            if sha != entry.sha256 {
                return Err(BackupError::Checksum {
                    file: entry.name.clone(),
                    expected: entry.sha256.clone(),
                    actual: sha,
                }
                .into());
            }
            stats.files += 1;
            stats.bytes += bytes;
            progress.inc(bytes);
        }
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(werr(&final_dir))?;
        }
        std::fs::rename(&work, &final_dir).map_err(werr(&final_dir))?;
        manifest.write_atomic(&final_dir)?;
        manifest_fsync_dir(&self.root).map_err(werr(&self.root))?;
        Ok(stats)
    }

    fn delete(&self, entry: &FolderEntry) -> Result<u64, StorageError> {
        // Only names we made ourselves are ever turned into a path to delete.
        let valid =
            FolderName::parse(&entry.name).is_some() || parse_work_folder(&entry.name).is_some();
        if !valid {
            return Err(StorageError::Invalid(format!(
                "refusing to delete {:?}: not a backup folder name",
                entry.name
            )));
        }
        let dir = self.root.join(&entry.name);
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source: std::io::Error| StorageError::Backup(BackupError::Write { path, source })
        };
        let (bytes, _, _) = dir_usage(&dir).map_err(Self::read_err(&dir))?;
        let manifest = dir.join(MANIFEST_FILE);
        match std::fs::remove_file(&manifest) {
            Ok(()) => manifest_fsync_dir(&dir).map_err(werr(&dir))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(werr(&manifest)(e)),
        }
        std::fs::remove_dir_all(&dir).map_err(werr(&dir))?;
        Ok(bytes)
    }

    fn put_manifest(&self, folder: &FolderName, manifest: &Manifest) -> Result<(), StorageError> {
        manifest.write_atomic(&self.root.join(folder.as_str()))?;
        Ok(())
    }

    fn set_pin(&self, folder: &FolderName, pinned: bool) -> Result<(), StorageError> {
        let dir = self.root.join(folder.as_str());
        if !dir.join(MANIFEST_FILE).exists() {
            return Err(StorageError::NotFound(format!(
                "{} has no complete backup {folder}",
                self.root.display()
            )));
        }
        let path = dir.join(PIN_FILE);
        let werr = |source| {
            StorageError::Backup(BackupError::Write {
                path: path.clone(),
                source,
            })
        };
        if pinned {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(werr)?;
            f.write_all(pin_marker().as_bytes()).map_err(werr)?;
            f.sync_all().map_err(werr)?;
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(werr(e)),
            }
        }
        Ok(())
    }
}

/// The lock file that a restore holds (shared) while it reads a folder, and that `prune`
/// takes (exclusive, without waiting) before it deletes that folder.
fn hold_path(root: &Path, folder: &FolderName) -> PathBuf {
    root.join(format!(".restore-{folder}.lock"))
}

/// Held by a restore: `prune` leaves the folder alone while this lives.
#[derive(Debug)]
pub struct RestoreHold {
    _file: std::fs::File,
}

/// Held by `prune` while it deletes a folder: no restore starts reading it meanwhile.
#[derive(Debug)]
pub struct DeleteHold {
    _file: std::fs::File,
    path: PathBuf,
}

impl DeleteHold {
    /// The folder is gone: its lock file goes too (no restore can hold it: we do).
    pub fn release_deleted(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl LocalStorage {
    /// Holds `folder` against `prune` for as long as the value lives. `None` (with a warning)
    /// when the lock file cannot be made, e.g. a read-only `BACKUP_DIR`: the restore still
    /// reads the very bytes it checked (through its open handle), only a prune may then
    /// remove the folder under it.
    pub fn hold_for_restore(&self, folder: &FolderName) -> Option<RestoreHold> {
        let path = hold_path(&self.root, folder);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .or_else(|_| std::fs::File::open(&path));
        match file.and_then(|f| f.lock_shared().map(|()| f)) {
            Ok(f) => Some(RestoreHold { _file: f }),
            Err(e) => {
                tracing::warn!(
                    "cannot hold {folder} against prune ({}: {e}); restoring all the same",
                    path.display()
                );
                None
            }
        }
    }

    /// Takes `folder` for deletion, or `Ok(None)` when a restore is reading it.
    pub fn hold_for_delete(&self, folder: &FolderName) -> Result<Option<DeleteHold>, StorageError> {
        let path = hold_path(&self.root, folder);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| {
                StorageError::Backup(BackupError::Write {
                    path: path.clone(),
                    source,
                })
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DeleteHold { _file: file, path })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => {
                Err(StorageError::Backup(BackupError::Write { path, source }))
            }
        }
    }

    /// Opens one file of a folder for reading.
    pub fn open_file(
        &self,
        folder: &FolderName,
        file: &str,
    ) -> Result<std::fs::File, StorageError> {
        if !is_safe_file_name(file) {
            return Err(StorageError::Invalid(format!(
                "{file:?} is not a backup file name"
            )));
        }
        let path = self.root.join(folder.as_str()).join(file);
        match std::fs::File::open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::NotFound(
                format!("{} does not exist", path.display()),
            )),
            Err(e) => Err(Self::read_err(&path)(e)),
        }
    }
}

/// The content of a pin marker: when and where it was set, for the operator who finds it.
pub fn pin_marker() -> String {
    format!(
        "{{\"pinned_at\":\"{}\",\"host\":{}}}\n",
        crate::time::format_time(&Utc::now()),
        serde_json::Value::String(crate::lock::hostname())
    )
}
