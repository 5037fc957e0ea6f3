//! Files written in one streaming pass: gzip, SHA-256 and sizes computed while writing, so a
//! backup file is never read back to be checked.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::BackupError;
use super::codec::{Encryption, FileCodec, Packed, Sealed, compress_member, open_for_assembly};
use super::store::{FileStore, StoredSink};

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
    /// Its name in the folder, and where it is (for messages).
    pub name: String,
    pub path: PathBuf,
    /// Size and SHA-256 of the stored bytes.
    pub bytes: u64,
    pub sha256: String,
    /// Size of the content (SQL or archive) before compression and encryption.
    pub sql_bytes: u64,
    /// SHA-256 of the file once decrypted (what `age -d` writes: the compressed SQL or the
    /// archive), recorded for encrypted files so that a decrypting verify can check what is
    /// inside too, as cheaply as the stored bytes.
    pub content_sha256: Option<String>,
    pub codec: FileCodec,
}

type Stored<'s> = HashingWriter<Box<dyn StoredSink + 's>>;

/// Ends the stored layer: the sink commits what the hash counted.
fn commit(stored: Stored<'_>) -> std::io::Result<(String, u64)> {
    let (sink, sha256, bytes) = stored.finish();
    sink.commit(&sha256, bytes)?;
    Ok((sha256, bytes))
}

/// Hashes what passes on to the encryption, when there is encryption: the decrypted file's
/// bytes, for `content_sha256`.
pub struct PlainTap<W: Write> {
    inner: W,
    hasher: Option<Sha256>,
}

impl<W: Write> PlainTap<W> {
    fn new(inner: W, hash: bool) -> Self {
        PlainTap {
            inner,
            hasher: hash.then(Sha256::new),
        }
    }

    fn finish(self) -> (W, Option<String>) {
        (self.inner, self.hasher.map(|h| hex::encode(h.finalize())))
    }
}

impl<W: Write> Write for PlainTap<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A backup file being written from its content (SQL, or a custom archive): compressed,
/// encrypted and hashed as stored, in one pass (see [`codec`](super::codec)).
pub struct FileWriter<'s> {
    name: String,
    path: PathBuf,
    stack: Packed<PlainTap<Sealed<Stored<'s>>>>,
    sql_bytes: u64,
    codec: FileCodec,
}

impl<'s> FileWriter<'s> {
    /// `assembly`: the file will be read back by this run to build the cluster file.
    /// `size_hint`: about how large it may grow (see [`FileStore::create`]).
    pub fn create(
        store: &'s dyn FileStore,
        name: &str,
        codec: FileCodec,
        level: u32,
        enc: Option<&Encryption>,
        assembly: bool,
        size_hint: u64,
    ) -> Result<FileWriter<'s>, BackupError> {
        let path = store.display(name);
        let werr = |source| BackupError::Write {
            path: path.clone(),
            source,
        };
        let stored = HashingWriter::new(store.create(name, size_hint)?);
        let enc = enc.filter(|_| codec.encrypted);
        let sealed = Sealed::new(stored, enc, assembly).map_err(werr)?;
        let tap = PlainTap::new(sealed, enc.is_some());
        let stack = Packed::new(tap, codec.compression, level).map_err(werr)?;
        Ok(FileWriter {
            name: name.to_string(),
            path,
            stack,
            sql_bytes: 0,
            codec,
        })
    }

    pub fn write(&mut self, content: &[u8]) -> Result<(), BackupError> {
        self.sql_bytes += content.len() as u64;
        self.stack
            .write_all(content)
            .map_err(|source| BackupError::Write {
                path: self.path.clone(),
                source,
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ends every layer and makes the file durable.
    pub fn finish(self) -> Result<WrittenFile, BackupError> {
        let werr = |source| BackupError::Write {
            path: self.path.clone(),
            source,
        };
        let (sealed, content_sha256) = self.stack.finish().map_err(werr)?.finish();
        let stored = sealed.finish().map_err(werr)?;
        let (sha256, bytes) = commit(stored).map_err(werr)?;
        Ok(WrittenFile {
            name: self.name.clone(),
            path: self.path.clone(),
            bytes,
            sha256,
            sql_bytes: self.sql_bytes,
            content_sha256,
            codec: self.codec,
        })
    }
}

/// A file assembled from whole compressed members (gzip) or frames (zstd): small ones
/// compressed here, finished files appended as they are stored (decrypted with the run's
/// in-process key when they are encrypted), the whole encrypted again as one stream.
/// Concatenated members are one valid stream for `gunzip -c` and `zstd -dc`.
pub struct AssembledFile<'s> {
    name: String,
    path: PathBuf,
    out: PlainTap<Sealed<Stored<'s>>>,
    codec: FileCodec,
    level: u32,
    sql_bytes: u64,
}

impl<'s> AssembledFile<'s> {
    pub fn create(
        store: &'s dyn FileStore,
        name: &str,
        codec: FileCodec,
        level: u32,
        enc: Option<&Encryption>,
        size_hint: u64,
    ) -> Result<AssembledFile<'s>, BackupError> {
        let path = store.display(name);
        let stored = HashingWriter::new(store.create(name, size_hint)?);
        let enc = enc.filter(|_| codec.encrypted);
        let out = Sealed::new(stored, enc, false).map_err(|source| BackupError::Write {
            path: path.clone(),
            source,
        })?;
        let out = PlainTap::new(out, enc.is_some());
        Ok(AssembledFile {
            name: name.to_string(),
            path,
            out,
            codec,
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

    /// Appends `text` as its own member.
    pub fn append_text(&mut self, text: &str) -> Result<(), BackupError> {
        let member = compress_member(text.as_bytes(), self.codec.compression, self.level)
            .map_err(|e| self.werr(e))?;
        self.out.write_all(&member).map_err(|e| self.werr(e))?;
        self.sql_bytes += text.len() as u64;
        Ok(())
    }

    /// Appends a finished file of this run, byte for byte once decrypted (read back from
    /// `store`: the page cache, or the upload it became).
    pub fn append_file(
        &mut self,
        store: &dyn FileStore,
        part: &WrittenFile,
        enc: Option<&Encryption>,
    ) -> Result<(), BackupError> {
        let rerr = |e: std::io::Error| BackupError::Read {
            path: part.path.clone(),
            source: e,
        };
        let file = store.open(&part.name)?;
        let mut input: Box<dyn Read + Send> = match enc.filter(|_| part.codec.encrypted) {
            Some(e) => open_for_assembly(Box::new(file), e).map_err(rerr)?,
            None => file,
        };
        let mut buf = vec![0u8; WRITE_BUFFER];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(rerr(e)),
            };
            self.out.write_all(&buf[..n]).map_err(|e| self.werr(e))?;
        }
        self.sql_bytes += part.sql_bytes;
        Ok(())
    }

    pub fn finish(self) -> Result<WrittenFile, BackupError> {
        let path = self.path.clone();
        let werr = |source| BackupError::Write {
            path: path.clone(),
            source,
        };
        let (sealed, content_sha256) = self.out.finish();
        let stored = sealed.finish().map_err(werr)?;
        let (sha256, bytes) = commit(stored).map_err(werr)?;
        Ok(WrittenFile {
            name: self.name,
            path: self.path,
            bytes,
            sha256,
            sql_bytes: self.sql_bytes,
            content_sha256,
            codec: self.codec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::codec::{Compression, Format};
    use crate::backup::store::LocalStore;
    use flate2::read::MultiGzDecoder;
    use std::fs::File;
    use std::os::unix::fs::PermissionsExt;

    fn gzip() -> FileCodec {
        FileCodec {
            format: Format::Plain,
            compression: Compression::Gzip,
            encrypted: false,
        }
    }

    #[test]
    fn a_file_records_the_sha256_of_the_bytes_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sql.gz");
        let store = LocalStore::new(dir.path());
        let mut f = FileWriter::create(&store, "a.sql.gz", gzip(), 6, None, false, 0).unwrap();
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
    fn an_assembled_file_concatenates_into_one_readable_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let mut f = FileWriter::create(&store, "part.gz", gzip(), 1, None, true, 0).unwrap();
        f.write(b"middle\n").unwrap();
        let part_written = f.finish().unwrap();
        let whole = dir.path().join("whole.gz");
        let mut m = AssembledFile::create(&store, "whole.gz", gzip(), 6, None, 0).unwrap();
        m.append_text("first\n").unwrap();
        m.append_file(&store, &part_written, None).unwrap();
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
