//! Where a restore's bytes come from: the folder found at its source, and each file opened,
//! checked and (from S3 or a remote host) staged in a private folder. The bytes that were
//! checked are the bytes replayed: the handle that read them for the check is rewound and
//! kept, so nothing that happens to the path afterwards (a prune, a replaced file, a symlink)
//! changes what reaches psql or pg_restore.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::backup::verify::{Readers, check_stream};
use crate::backup::{BackupError, FileEntry, FolderName, Manifest};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// Finds the folder (`latest` = the newest complete one) and its manifest at a source.
pub fn resolve(storage: &dyn Storage, folder: &str) -> Result<(FolderName, Manifest)> {
    let folder = if folder == "latest" {
        let entries = storage.list()?;
        crate::storage::newest_complete(&entries, chrono::Utc::now())
            .and_then(|e| e.folder.clone())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "there is no complete backup at {} ({})",
                    storage.kind(),
                    storage.location()
                ))
            })?
    } else {
        FolderName::parse(folder)
            .ok_or_else(|| Error::Internal(format!("unvalidated folder {folder}")))?
    };
    let manifest = storage.manifest(&folder)?.ok_or_else(|| {
        Error::NotFound(format!(
            "{} holds no backup {folder} (no manifest.json there); `pg-backups list --source {}` shows what it has",
            storage.location(),
            storage.kind()
        ))
    })?;
    // On a bucket that keeps versions, a file written twice means a newer version hides
    // the one the backup wrote (with Object Lock, the locked original): never read it.
    let rewritten = storage.rewritten(&folder)?;
    if !rewritten.is_empty() {
        return Err(Error::Data(format!(
            "{} of {folder} at {} {} written more than once ({}): a newer version hides the one \
             the backup wrote, which pg-backups never does; find out who wrote it, and read the \
             first version by its id (aws s3api list-object-versions --prefix …; get-object \
             --version-id …)",
            match rewritten.len() {
                1 => "a file".to_string(),
                n => format!("{n} files"),
            },
            storage.location(),
            if rewritten.len() == 1 { "was" } else { "were" },
            rewritten.join(", ")
        )));
    }
    Ok((folder, manifest))
}

/// A new directory with a random name, created 0700 by us inside `RESTORE_DIR` (or TMPDIR):
/// downloads are staged there, never in one that someone prepared at a predictable path.
pub fn private_dir(base: Option<&Path>, prefix: &str) -> Result<tempfile::TempDir> {
    let base = match base {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir(),
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .map_err(|e| {
            BackupError::CreateFolder {
                path: base.clone(),
                source: e,
            }
            .into()
        })
}

/// A file to restore, already open and checked: the local file itself, or a copy downloaded
/// into the restore's private folder.
pub struct Staged {
    pub file: std::fs::File,
}

impl Staged {
    /// Opens `entry` of `folder` at `storage`, checks it to its last byte (with `readers`)
    /// and rewinds it; a remote file is downloaded into `work` while it is checked.
    pub fn prepare(
        storage: &dyn Storage,
        folder: &FolderName,
        entry: &FileEntry,
        readers: Readers<'_>,
        work: &Path,
    ) -> Result<Staged> {
        if let Some(local) = storage.as_local() {
            let mut file = local.open_file(folder, &entry.name)?;
            tracing::info!(file = ?entry.name, "checking the file before restoring it");
            let reader = file.try_clone().map_err(|e| read_error(&entry.name, e))?;
            check_stream(Box::new(reader), entry, readers)?;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| read_error(&entry.name, e))?;
            return Ok(Staged { file });
        }
        let path = work.join(&entry.name);
        let write_error = |source| BackupError::Write {
            path: path.clone(),
            source,
        };
        let mut file = new_private_file(&path).map_err(write_error)?;
        tracing::info!(file = ?entry.name, "downloading and checking");
        let reader = storage.open(folder, &entry.name)?;
        let shared = std::sync::Arc::new(std::sync::Mutex::new(None));
        let writer = file.try_clone().map_err(write_error)?;
        let tee = Tee {
            inner: reader,
            out: std::io::BufWriter::with_capacity(256 * 1024, writer),
            error: shared.clone(),
        };
        let checked = check_stream(Box::new(tee), entry, readers);
        if let Some(e) = shared.lock().ok().and_then(|mut g| g.take()) {
            return Err(write_error(e).into());
        }
        checked?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| read_error(&entry.name, e))?;
        Ok(Staged { file })
    }
}

fn new_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// A file of the folder as a local file, not checked here (a restore test checks what it
/// replays as it goes): the local one itself, or a private copy in `work`.
pub fn open_as_file(
    storage: &dyn Storage,
    folder: &FolderName,
    name: &str,
    work: &Path,
) -> Result<std::fs::File> {
    if let Some(local) = storage.as_local() {
        return Ok(local.open_file(folder, name)?);
    }
    let path = work.join(name);
    let werr = |e| BackupError::Write {
        path: path.clone(),
        source: e,
    };
    let mut out = new_private_file(&path).map_err(werr)?;
    let mut input = storage.open(folder, name)?;
    std::io::copy(&mut input, &mut out).map_err(werr)?;
    out.seek(SeekFrom::Start(0)).map_err(werr)?;
    Ok(out)
}

fn read_error(file: &str, e: std::io::Error) -> Error {
    BackupError::Read {
        path: file.into(),
        source: e,
    }
    .into()
}

/// Copies what is read into the staging file, so download and check are one pass. A write
/// error is handed back through `error` (the checker reads on its own thread) so that a full
/// staging disk is reported as such (74), not as a broken download.
struct Tee {
    inner: Box<dyn Read + Send>,
    out: std::io::BufWriter<std::fs::File>,
    error: std::sync::Arc<std::sync::Mutex<Option<std::io::Error>>>,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let written = if n == 0 {
            self.out.flush()
        } else {
            self.out.write_all(&buf[..n])
        };
        if let Err(e) = written {
            let message = format!("writing the staging file: {e}");
            if let Ok(mut slot) = self.error.lock() {
                *slot = Some(e);
            }
            return Err(std::io::Error::other(message));
        }
        Ok(n)
    }
}
