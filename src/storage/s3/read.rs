//! Reading objects: a small one whole (a manifest), a backup file as a stream, and a HEAD for
//! the size and SHA-256 an object carries.

use std::io::Read;

use aws_sdk_s3::error::SdkError;

use super::S3Storage;
use crate::backup::FolderName;
use crate::storage::StorageError;

impl S3Storage {
    pub(super) async fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let bytes = out.body.collect().await.map_err(|e| StorageError::Failed {
                    destination: self.location.clone(),
                    detail: format!("reading {key}: {e}"),
                })?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(SdkError::ServiceError(se)) if se.err().is_no_such_key() => Ok(None),
            Err(e) => match self.error(&format!("reading {key}"), e) {
                StorageError::NotFound(m) if !m.contains("bucket") => Ok(None),
                other => Err(other),
            },
        }
    }

    /// HEAD: the object's size and the SHA-256 it carries.
    pub(super) async fn head(
        &self,
        key: &str,
    ) -> Result<Option<(u64, Option<String>)>, StorageError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(h) => Ok(Some((
                h.content_length().unwrap_or(0).max(0) as u64,
                h.metadata().and_then(|m| m.get("sha256").cloned()),
            ))),
            Err(SdkError::ServiceError(se)) if se.err().is_not_found() => Ok(None),
            Err(e) => Err(self.error(&format!("checking {key}"), e)),
        }
    }

    /// A backup file as a stream; a read that breaks off says the source was lost (69).
    pub(super) fn open_file(
        &self,
        folder: &FolderName,
        file: &str,
    ) -> Result<Box<dyn Read + Send>, StorageError> {
        if !crate::backup::is_safe_file_name(file) {
            return Err(StorageError::Invalid(format!(
                "{file:?} is not a backup file name"
            )));
        }
        self.open_key(&self.key(folder.as_str(), file))
    }

    /// An object of ours as a stream.
    pub(super) fn open_key(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        let out = self
            .rt
            .block_on(
                self.client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send(),
            )
            .map_err(|e| match e {
                SdkError::ServiceError(se) if se.err().is_no_such_key() => {
                    StorageError::NotFound(format!("{key} does not exist at {}", self.location))
                }
                other => self.error(&format!("reading {key}"), other),
            })?;
        let reader = out.body.into_async_read();
        Ok(Box::new(MarkLost {
            inner: tokio_util::io::SyncIoBridge::new_with_handle(reader, self.rt.handle().clone()),
            what: format!(
                "reading {key} from {}; check S3_ENDPOINT and that the server is up",
                self.location
            ),
        }))
    }
}

/// A stream from S3 whose read errors say the source broke off (69), not the local disk.
struct MarkLost<R> {
    inner: R,
    what: String,
}

impl<R: Read> Read for MarkLost<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            std::io::Error::other(crate::backup::SourceLost(format!("{}: {e}", self.what)))
        })
    }
}
