//! Where a new backup folder is made: a hidden work folder under `BACKUP_DIR`, renamed into
//! place when every file is on disk (the default), or, with `BACKUP_LOCAL_COPY=false`, the
//! folder at S3, each file streamed there as it is written. Either way the manifest goes
//! last, and a run that does not publish leaves nothing that counts as a backup.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::backup::store::{FileStore, LocalStore};
use crate::backup::{BackupError, FolderName, Manifest, manifest_fsync_dir};
use crate::dump::remove_scratch_files;
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::storage::local::work_folder_name;
use crate::storage::s3::S3Storage;

enum Place {
    Local {
        root: PathBuf,
        work_dir: PathBuf,
    },
    /// The bucket, and the marker that makes the folder this run's.
    S3 {
        storage: Box<S3Storage>,
        claim: String,
    },
}

/// The folder a dump writes, until it is published or discarded.
pub struct Target {
    pub folder: FolderName,
    place: Place,
    published: bool,
}

impl Target {
    /// A new work folder under `root`, named after the time now.
    pub fn local(root: &Path) -> Result<Target> {
        let (folder, work_dir) = create_work_folder(root)?;
        Ok(Target {
            folder,
            place: Place::Local {
                root: root.to_path_buf(),
                work_dir,
            },
            published: false,
        })
    }

    /// A new folder at S3, named after the time now (a later second if S3 already holds
    /// objects under that name). Listing it is also the run's first check that S3 can be
    /// reached with these keys, before any database is read.
    pub fn s3(storage: S3Storage) -> Result<Target> {
        // With S3_OBJECT_LOCK_MODE, the bucket must keep the promise before a byte is read.
        storage.check_object_lock()?;
        for attempt in 0..10u64 {
            let folder = FolderName::from_time(Utc::now());
            // Our lock is local: another pod or host may be writing to this prefix, so the
            // folder is claimed at S3 itself before anything is written into it.
            let claim = match storage.holds_folder(&folder)? {
                true => None,
                false => storage.claim_folder(&folder)?,
            };
            match claim {
                Some(claim) => {
                    return Ok(Target {
                        folder,
                        place: Place::S3 {
                            storage: Box::new(storage),
                            claim,
                        },
                        published: false,
                    });
                }
                // A later second, after a pause of this run's own (two runs that both saw
                // the other's marker must not meet again at the same moment).
                None => std::thread::sleep(std::time::Duration::from_millis(
                    1000 + 100 * attempt + jitter_ms(),
                )),
            }
        }
        Err(Error::Internal(
            "could not claim a free folder name at S3 after 10 attempts (other runs keep \
             writing to this S3_PREFIX)"
                .into(),
        ))
    }

    /// Where the files go.
    pub fn store(&self) -> Box<dyn FileStore + '_> {
        match &self.place {
            Place::Local { work_dir, .. } => Box::new(LocalStore::new(work_dir)),
            Place::S3 { storage, .. } => Box::new(storage.folder_store(&self.folder)),
        }
    }

    /// `local` or `s3`, for the report.
    pub fn destination(&self) -> &'static str {
        match &self.place {
            Place::Local { .. } => "local",
            Place::S3 { .. } => "s3",
        }
    }

    /// Where the published folder is: its path, or its `s3://` address.
    pub fn shown(&self) -> String {
        match &self.place {
            Place::Local { root, .. } => root.join(self.folder.as_str()).display().to_string(),
            Place::S3 { storage, .. } => storage
                .folder_store(&self.folder)
                .display("")
                .display()
                .to_string(),
        }
    }

    /// Makes the folder a backup: the work folder renamed into place, then the manifest;
    /// at S3 the manifest after every file (each already checked on arrival).
    pub fn publish(&mut self, manifest: &Manifest) -> Result<()> {
        match &self.place {
            Place::Local { root, work_dir, .. } => {
                let final_dir = root.join(self.folder.as_str());
                if let Err(e) = publish_local(root, work_dir, &final_dir, manifest) {
                    let _ = std::fs::remove_dir_all(&final_dir);
                    return Err(e.into());
                }
            }
            Place::S3 { storage, claim } => {
                // The marker goes before the manifest: a complete folder holds backup files
                // only. No other run writes here meanwhile: they saw the files and chose
                // another name.
                storage.folder_store(&self.folder).remove(claim);
                storage.put_manifest(&self.folder, manifest)?;
            }
        }
        self.published = true;
        Ok(())
    }
}

impl Drop for Target {
    /// A folder that was not published is removed: the work folder, or what reached S3.
    fn drop(&mut self) {
        if self.published {
            return;
        }
        match &self.place {
            Place::Local { work_dir, .. } => {
                if let Err(e) = std::fs::remove_dir_all(work_dir) {
                    tracing::warn!(
                        "could not remove the work folder {}: {e}",
                        work_dir.display()
                    );
                }
            }
            Place::S3 { storage, .. } => {
                if let Err(e) = storage.discard_folder(&self.folder) {
                    tracing::warn!(
                        "could not remove what this run wrote to {}/{} ({e}); `prune` removes \
                         it as an incomplete folder",
                        storage.location(),
                        self.folder
                    );
                }
            }
        }
    }
}

/// The work folder becomes the backup folder, and only then gets its manifest: a folder
/// under its real name is complete only once the manifest is there.
fn publish_local(
    root: &Path,
    work: &Path,
    final_dir: &Path,
    manifest: &Manifest,
) -> std::result::Result<(), BackupError> {
    remove_scratch_files(work)?;
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Write { path, source }
    };
    std::fs::rename(work, final_dir).map_err(werr(final_dir))?;
    manifest_fsync_dir(root).map_err(werr(root))?;
    manifest.write_atomic(final_dir)
}

/// Picks the folder name (UTC now; a later second if a folder of this second exists) and
/// creates its hidden work folder.
fn create_work_folder(root: &Path) -> Result<(FolderName, PathBuf)> {
    for _ in 0..5 {
        let folder = FolderName::from_time(Utc::now());
        let work = root.join(work_folder_name(&folder));
        if root.join(folder.as_str()).exists() {
            std::thread::sleep(std::time::Duration::from_millis(1000));
            continue;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&work) {
            Ok(()) => return Ok((folder, work)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Left by a killed run of the same second; we hold the lock, so it is dead.
                std::fs::remove_dir_all(&work).map_err(|source| BackupError::CreateFolder {
                    path: work.clone(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(BackupError::CreateFolder { path: work, source }.into());
            }
        }
    }
    Err(Error::Internal(
        "could not find a free folder name after 5 attempts".into(),
    ))
}

/// 0–999 ms that differ between two runs started at once (process id and clock).
fn jitter_ms() -> u64 {
    let nanos = u64::from(Utc::now().timestamp_subsec_nanos());
    (nanos ^ u64::from(std::process::id()).wrapping_mul(2_654_435_761)) % 1000
}
