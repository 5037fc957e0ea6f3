//! Files written in one streaming pass: gzip, SHA-256 and sizes computed while writing, so a
//! backup file is never read back to be checked.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use super::BackupError;

const WRITE_BUFFER: usize = 256 * 1024;

/// Counts and hashes the bytes that pass through to `inner`.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What was written: the numbers that go into the manifest.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub sql_bytes: u64,
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

/// A `.sql.gz` file being written from a stream of SQL.
pub struct GzFile {
    path: PathBuf,
    encoder: GzEncoder<HashingWriter<BufWriter<File>>>,
    sql_bytes: u64,
}

impl GzFile {
    pub fn create(path: &Path, level: u32) -> Result<GzFile, BackupError> {
        let file = create_private(path)?;
        let inner = HashingWriter::new(BufWriter::with_capacity(WRITE_BUFFER, file));
        Ok(GzFile {
            path: path.to_path_buf(),
            encoder: GzEncoder::new(inner, Compression::new(level)),
            sql_bytes: 0,
        })
    }

    pub fn write(&mut self, sql: &[u8]) -> Result<(), BackupError> {
        self.sql_bytes += sql.len() as u64;
        self.encoder
            .write_all(sql)
            .map_err(|source| BackupError::Write {
                path: self.path.clone(),
                source,
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ends the gzip stream and makes the file durable.
    pub fn finish(self) -> Result<WrittenFile, BackupError> {
        let werr = |source| BackupError::Write {
            path: self.path.clone(),
            source,
        };
        let hashing = self.encoder.finish().map_err(werr)?;
        let (buffered, sha256, bytes) = hashing.finish();
        let file = buffered.into_inner().map_err(|e| werr(e.into_error()))?;
        file.sync_all().map_err(werr)?;
        Ok(WrittenFile {
            path: self.path.clone(),
            bytes,
            sha256,
            sql_bytes: self.sql_bytes,
        })
    }
}

/// A file assembled from whole gzip members: small ones compressed here and existing `.gz`
/// files appended as they are (concatenated members are one valid gzip stream).
pub struct MemberFile {
    path: PathBuf,
    out: HashingWriter<BufWriter<File>>,
    level: u32,
    sql_bytes: u64,
}

impl MemberFile {
    pub fn create(path: &Path, level: u32) -> Result<MemberFile, BackupError> {
        let file = create_private(path)?;
        Ok(MemberFile {
            path: path.to_path_buf(),
            out: HashingWriter::new(BufWriter::with_capacity(WRITE_BUFFER, file)),
            level,
            sql_bytes: 0,
        })
    }

    fn werr(&self, source: std::io::Error) -> BackupError {
        BackupError::Write {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends `text` as its own gzip member.
    pub fn append_text(&mut self, text: &str) -> Result<(), BackupError> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::new(self.level));
        enc.write_all(text.as_bytes()).map_err(|e| self.werr(e))?;
        let member = enc.finish().map_err(|e| self.werr(e))?;
        self.out.write_all(&member).map_err(|e| self.werr(e))?;
        self.sql_bytes += text.len() as u64;
        Ok(())
    }

    /// Appends a finished `.gz` file byte for byte (it is read from the page cache).
    pub fn append_gz(&mut self, source: &Path, sql_bytes: u64) -> Result<(), BackupError> {
        let mut input = File::open(source).map_err(|e| BackupError::Read {
            path: source.to_path_buf(),
            source: e,
        })?;
        let mut buf = vec![0u8; WRITE_BUFFER];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(BackupError::Read {
                        path: source.to_path_buf(),
                        source: e,
                    });
                }
            };
            self.out.write_all(&buf[..n]).map_err(|e| self.werr(e))?;
        }
        self.sql_bytes += sql_bytes;
        Ok(())
    }

    pub fn finish(self) -> Result<WrittenFile, BackupError> {
        let path = self.path.clone();
        let werr = |source| BackupError::Write {
            path: path.clone(),
            source,
        };
        let (buffered, sha256, bytes) = self.out.finish();
        let file = buffered.into_inner().map_err(|e| werr(e.into_error()))?;
        file.sync_all().map_err(werr)?;
        Ok(WrittenFile {
            path: self.path,
            bytes,
            sha256,
            sql_bytes: self.sql_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn gz_file_records_the_sha256_of_the_bytes_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sql.gz");
        let mut f = GzFile::create(&path, 6).unwrap();
        f.write(b"SELECT 1;\n").unwrap();
        let written = f.finish().unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(written.bytes, on_disk.len() as u64);
        assert_eq!(written.sha256, hex::encode(Sha256::digest(&on_disk)));
        assert_eq!(written.sql_bytes, 10);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn member_file_concatenates_into_one_readable_stream() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("part.gz");
        let mut f = GzFile::create(&part, 1).unwrap();
        f.write(b"middle\n").unwrap();
        let part_written = f.finish().unwrap();
        let whole = dir.path().join("whole.gz");
        let mut m = MemberFile::create(&whole, 6).unwrap();
        m.append_text("first\n").unwrap();
        m.append_gz(&part, part_written.sql_bytes).unwrap();
        m.append_text("last\n").unwrap();
        let written = m.finish().unwrap();
        let mut text = String::new();
        MultiGzDecoder::new(File::open(&whole).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "first\nmiddle\nlast\n");
        assert_eq!(written.sql_bytes, text.len() as u64);
    }
}
