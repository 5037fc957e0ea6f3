//! One run at a time (DESIGN.md guarantee 4): `dump`, `ship` and `prune` hold an exclusive
//! lock on `BACKUP_DIR/.pg-backups.lock` for their whole run.
//!
//! The lock is an advisory `flock`, so the kernel releases it when the process dies, even by
//! `kill -9`: a crashed run never blocks the next one. The file is never unlinked (unlinking
//! would let two runs lock two different files). It needs a local filesystem: `flock` on NFS
//! is not reliable.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::Utc;
use thiserror::Error;

pub const LOCK_FILE: &str = ".pg-backups.lock";

#[derive(Debug, Error)]
pub enum LockError {
    #[error(
        "another pg-backups run holds the lock {path}: {holder}; wait for it to finish \
         (the lock is released automatically when that process exits)"
    )]
    Held { path: PathBuf, holder: String },
    #[error(
        "cannot open the lock file {path}: {source}; check that BACKUP_DIR exists and is writable"
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl LockError {
    pub fn exit_code(&self) -> i32 {
        match self {
            LockError::Held { .. } => exitcode::TEMPFAIL,
            LockError::Open { source, .. } => match source.kind() {
                std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::ReadOnlyFilesystem
                | std::io::ErrorKind::NotFound => exitcode::CANTCREAT,
                _ => exitcode::IOERR,
            },
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            LockError::Held { .. } => "locked",
            LockError::Open { .. } => "lock_file",
        }
    }
}

/// Held for as long as the value lives; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock without waiting, and records who holds it.
    pub fn acquire(dir: &Path, command: &str) -> Result<RunLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let open_err = |source| LockError::Open {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(open_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Held {
                    path,
                    holder: if holder.is_empty() {
                        "unknown holder (it is still starting)".to_string()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(open_err(e)),
        }
        let host = hostname();
        let holder = format!(
            "pid {} on {} running `{}` since {}",
            std::process::id(),
            host,
            command,
            crate::time::format_time(&Utc::now())
        );
        // Recording the holder is a courtesy for the next run's message; the lock itself
        // is what matters, so a failure here is not fatal.
        let _ = file
            .set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(holder.as_bytes()));
        Ok(RunLock { _file: file })
    }
}

/// The host name, for lock holders and metrics.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates when it fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_in_the_same_dir_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), "dump").unwrap();
        let err = RunLock::acquire(dir.path(), "prune").unwrap_err();
        assert_eq!(err.exit_code(), 75);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("`dump`"), "{msg}");
        drop(first);
        RunLock::acquire(dir.path(), "prune").unwrap();
    }
}
