//! Where the files of a new backup go while `dump` writes them: the hidden work folder under
//! `BACKUP_DIR`, or (with `BACKUP_LOCAL_COPY=false`) the folder at S3, each file a streaming
//! upload. The file pipeline (`writer`) and the dump only see these two traits, so every
//! format, compression and encryption is written the same way to either.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::BackupError;

const WRITE_BUFFER: usize = 256 * 1024;

/// Where the stored bytes of one file go.
pub trait StoredSink: Write + Send {
    /// The last byte was written (`sha256`, `bytes`: of everything written): make the file
    /// durable (fsync) or the upload whole and visible. A sink dropped without `commit`
    /// leaves nothing behind (an upload is aborted).
    fn commit(self: Box<Self>, sha256: &str, bytes: u64) -> std::io::Result<()>;
}

/// The folder a dump writes into.
pub trait FileStore: Sync {
    /// A new file. `size_hint`: about how large it may grow (an upload plans its parts
    /// from it; a local file ignores it).
    fn create(&self, name: &str, size_hint: u64) -> Result<Box<dyn StoredSink + '_>, BackupError>;

    /// A file this run finished, read back (the cluster file is assembled from them).
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, BackupError>;

    /// Removes a file of this run (a failed database's, a scratch section); best effort.
    fn remove(&self, name: &str);

    /// Where `name` is, for messages: a path, or an `s3://` address.
    fn display(&self, name: &str) -> PathBuf;
}

/// Why a sink that is not a local file failed, carried inside the `io::Error` the writer
/// sees, so that the run's error keeps the destination's exit code (69, 77, …) instead of
/// the local disk's 74.
#[derive(Debug, Error)]
#[error("{message}")]
pub struct SinkFailed {
    pub message: String,
    pub exit_code: i32,
    /// The file outgrew what its upload could hold: this file fails, the run goes on.
    pub only_this_file: bool,
}

impl SinkFailed {
    /// The failure inside `e`, if `e` carries one.
    pub fn of(e: &std::io::Error) -> Option<&SinkFailed> {
        e.get_ref().and_then(|i| i.downcast_ref::<SinkFailed>())
    }
}

/// Creates a backup file readable by its owner only; an existing file is an error.
pub fn create_private(path: &Path) -> Result<File, BackupError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| BackupError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// The hidden work folder of a local dump.
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    pub fn new(dir: &Path) -> LocalStore {
        LocalStore {
            dir: dir.to_path_buf(),
        }
    }
}

struct LocalSink(BufWriter<File>);

impl Write for LocalSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl StoredSink for LocalSink {
    fn commit(self: Box<Self>, _sha256: &str, _bytes: u64) -> std::io::Result<()> {
        let file = self.0.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    }
}

impl FileStore for LocalStore {
    fn create(&self, name: &str, _size_hint: u64) -> Result<Box<dyn StoredSink + '_>, BackupError> {
        let file = create_private(&self.dir.join(name))?;
        Ok(Box::new(LocalSink(BufWriter::with_capacity(
            WRITE_BUFFER,
            file,
        ))))
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, BackupError> {
        let path = self.dir.join(name);
        File::open(&path)
            .map(|f| Box::new(f) as Box<dyn Read + Send>)
            .map_err(|source| BackupError::Read { path, source })
    }

    fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    fn display(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
