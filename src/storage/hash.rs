//! Hashes of files that are about to leave the machine, read in one streaming pass each.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use base64::Engine;
use md5::Md5;
use sha2::{Digest, Sha256};

use super::StorageError;

const READ_BUFFER: usize = 1024 * 1024;

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        context: format!("reading {}", path.display()),
        source,
    }
}

/// Feeds `len` bytes of `path` from `offset` (or all of it) to `sink`.
fn stream(
    path: &Path,
    offset: u64,
    len: Option<u64>,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<(), StorageError> {
    let io = io_error(path);
    let mut f = std::fs::File::open(path).map_err(&io)?;
    if offset > 0 {
        f.seek(SeekFrom::Start(offset)).map_err(&io)?;
    }
    let mut buf = vec![0u8; READ_BUFFER];
    let mut left = len.unwrap_or(u64::MAX);
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f.read(&mut buf[..want]).map_err(&io)?;
        if n == 0 {
            if len.is_some() {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was being sent",
                )));
            }
            break;
        }
        sink(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// SHA-256 (hex) of a whole file.
pub fn sha256_file(path: &Path) -> Result<String, StorageError> {
    let mut sha = Sha256::new();
    stream(path, 0, None, &mut |b| sha.update(b))?;
    Ok(hex::encode(sha.finalize()))
}

/// Content-MD5 (base64) and SHA-256 (hex) of a whole file, in one pass.
pub fn md5_and_sha256_file(path: &Path) -> Result<(String, String), StorageError> {
    let mut md5 = Md5::new();
    let mut sha = Sha256::new();
    stream(path, 0, None, &mut |b| {
        md5.update(b);
        sha.update(b);
    })?;
    Ok((
        base64::engine::general_purpose::STANDARD.encode(md5.finalize()),
        hex::encode(sha.finalize()),
    ))
}

/// Content-MD5 (base64) of `len` bytes at `offset`: one multipart part.
pub fn md5_range(path: &Path, offset: u64, len: u64) -> Result<String, StorageError> {
    let mut md5 = Md5::new();
    stream(path, offset, Some(len), &mut |b| md5.update(b))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(md5.finalize()))
}

/// Content-MD5 (base64) of bytes in memory.
pub fn md5_bytes(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_known_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world").unwrap();
        let (md5, sha) = md5_and_sha256_file(&path).unwrap();
        assert_eq!(md5, "XrY7u+Ae7tCTyyK7j1rNww==");
        assert_eq!(
            sha,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(sha256_file(&path).unwrap(), sha);
        assert_eq!(md5_range(&path, 6, 5).unwrap(), md5_bytes(b"world"));
        assert!(md5_range(&path, 6, 50).is_err(), "a short file is an error");
    }
}
