//! Uploads: one PUT for a small file, equal parts for a large one (a bounded number in
//! flight, each read from the file by offset and carrying its Content-MD5), the file's
//! SHA-256 checked before the upload becomes visible, SSE, storage class and Object Lock on
//! every object; and the clean-up of multipart uploads that a killed run left behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::S3Storage;
use super::client::{join_error, root_cause};
use crate::backup::{BackupError, FolderName, MANIFEST_FILE, Manifest};
use crate::storage::local::LocalFolder;
use crate::storage::{PutStats, StorageError};

pub(super) const MIB: u64 = 1024 * 1024;
/// Files up to this size go in one PUT (unless S3_PART_SIZE is smaller).
const MULTIPART_THRESHOLD: u64 = 64 * MIB;
/// Smallest part we choose ourselves (S3's minimum is 5 MiB).
const MIN_PART: u64 = 16 * MIB;
pub(super) const MAX_PART: u64 = 5 * 1024 * MIB;
/// Parts uploaded at once: bounded, so memory is too (bodies stream from the file).
const PARTS_IN_FLIGHT: usize = 8;
const READ_BUFFER: usize = 1024 * 1024;

impl S3Storage {
    /// Every file of the manifest that is not already there whole, then the manifest, last.
    pub(super) async fn upload_folder(
        &self,
        source: &LocalFolder,
        manifest: &Manifest,
        progress: &crate::progress::Counter,
    ) -> Result<PutStats, StorageError> {
        let mut stats = PutStats::default();
        for file in &manifest.files {
            if crate::signals::interrupted() {
                return Err(StorageError::Failed {
                    destination: self.location.clone(),
                    detail: "interrupted by a signal".into(),
                });
            }
            let key = self.key(source.folder.as_str(), &file.name);
            progress.set_label(&format!("{}/{}", source.folder.as_str(), file.name));
            // Already there whole (an earlier, interrupted ship): not sent again.
            if let Some((size, Some(sha))) = self.head(&key).await?
                && size == file.bytes
                && sha == file.sha256
            {
                progress.inc(file.bytes);
                continue;
            }
            let bytes = self
                .put_file(&source.path(&file.name), &key, &file.sha256, progress)
                .await?;
            stats.files += 1;
            stats.bytes += bytes;
        }
        let size = self.upload_manifest(&source.folder, manifest).await?;
        stats.files += 1;
        stats.bytes += size;
        Ok(stats)
    }

    /// The manifest, checked by HEAD like every file: it is what makes the folder complete.
    /// Returns its size.
    pub(super) async fn upload_manifest(
        &self,
        folder: &FolderName,
        manifest: &Manifest,
    ) -> Result<u64, StorageError> {
        let json = manifest.to_json();
        let sha = hex::encode(Sha256::digest(&json));
        let size = json.len() as u64;
        let key = self.key(folder.as_str(), MANIFEST_FILE);
        self.put_bytes(&key, json, &sha).await?;
        match self.head(&key).await? {
            Some((s, Some(h))) if s == size && h == sha => Ok(size),
            _ => Err(StorageError::Failed {
                destination: self.location.clone(),
                detail: format!("{key} did not arrive whole"),
            }),
        }
    }

    /// Aborts the multipart uploads of ours started before `before` (a killed run's
    /// leftovers, which the provider bills for); with `dry_run`, only names them.
    pub(super) async fn abort_uploads_before(
        &self,
        before: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Vec<String>, StorageError> {
        let mut stale = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(self.root())
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.error("listing unfinished uploads", e))?;
            for u in out.uploads() {
                let started = u
                    .initiated()
                    .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
                // Only uploads of ours: `<prefix><folder>/<one of our file names>`. Another
                // application's uploads in the same bucket are none of our business.
                if let (Some(key), Some(id), Some(t)) = (u.key(), u.upload_id(), started)
                    && t < before
                    && self.is_our_key(key)
                {
                    stale.push((key.to_string(), id.to_string()));
                }
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_string);
            id_marker = out.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        if !dry_run {
            for (key, id) in &stale {
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| self.error(&format!("aborting the upload of {key}"), e))?;
            }
        }
        Ok(stale.into_iter().map(|(k, _)| k).collect())
    }

    pub(super) async fn put_bytes(
        &self,
        key: &str,
        bytes: Vec<u8>,
        sha256: &str,
    ) -> Result<(), StorageError> {
        let md5 = crate::storage::hash::md5_bytes(&bytes);
        let len = bytes.len() as i64;
        self.put_object(key)
            .content_md5(md5)
            .content_length(len)
            .metadata("sha256", sha256)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.error(&format!("uploading {key}"), e))?;
        Ok(())
    }

    /// A PUT of `key` with what every object of ours carries (server-side encryption, KMS
    /// key, storage class, Object Lock mode and date): one place for the per-object headers.
    /// The caller adds Content-MD5, which S3 requires of every PUT with a lock.
    pub(super) fn put_object(
        &self,
        key: &str,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        let lock = self.lock_for(key, Utc::now());
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key.clone())
            .set_storage_class(self.storage_class.clone())
            .set_object_lock_mode(lock.as_ref().map(|l| l.mode.clone()))
            .set_object_lock_retain_until_date(lock.map(|l| l.until))
    }

    /// The start of a multipart upload of `key`, with the same per-object headers as
    /// [`S3Storage::put_object`]: the object that the upload completes carries them. Each
    /// part carries its own Content-MD5.
    pub(super) fn create_multipart(
        &self,
        key: &str,
    ) -> aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder
    {
        let lock = self.lock_for(key, Utc::now());
        self.client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key.clone())
            .set_storage_class(self.storage_class.clone())
            .set_object_lock_mode(lock.as_ref().map(|l| l.mode.clone()))
            .set_object_lock_retain_until_date(lock.map(|l| l.until))
    }

    /// Uploads one file whose SHA-256 must be `sha256` (from the manifest). A file that no
    /// longer matches is never made visible: the PUT is not sent, or the multipart upload is
    /// aborted before it completes.
    async fn put_file(
        &self,
        path: &Path,
        key: &str,
        sha256: &str,
        progress: &crate::progress::Counter,
    ) -> Result<u64, StorageError> {
        let size = std::fs::metadata(path)
            .map_err(|e| StorageError::Io {
                context: format!("reading {}", path.display()),
                source: e,
            })?
            .len();
        // With S3_PART_SIZE set, anything larger than one part goes multipart.
        let threshold = self.part_size.unwrap_or(MULTIPART_THRESHOLD);
        if size <= threshold {
            let p = path.to_path_buf();
            let (md5, sha) =
                tokio::task::spawn_blocking(move || crate::storage::hash::md5_and_sha256_file(&p))
                    .await
                    .map_err(|e| join_error(&e))??;
            check_sha(path, &sha, sha256)?;
            let body = ByteStream::read_from()
                .path(path)
                .buffer_size(READ_BUFFER)
                .build()
                .await
                .map_err(|e| StorageError::Io {
                    context: format!("reading {}", path.display()),
                    source: std::io::Error::other(e.to_string()),
                })?;
            self.put_object(key)
                .content_md5(md5)
                .content_length(size as i64)
                .metadata("sha256", sha256)
                .body(body)
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| self.error(&format!("uploading {key}"), e))?;
            progress.inc(size);
        } else {
            self.put_multipart(path, key, sha256, size, progress)
                .await?;
        }
        match self.head(key).await? {
            Some((s, Some(sha))) if s == size && sha == sha256 => Ok(size),
            Some((s, sha)) => Err(StorageError::Failed {
                destination: self.location.clone(),
                detail: format!(
                    "{key} arrived with {s} bytes and SHA-256 {} instead of {size} bytes and {sha256}",
                    sha.unwrap_or_else(|| "none".into())
                ),
            }),
            None => Err(StorageError::Failed {
                destination: self.location.clone(),
                detail: format!("{key} is missing right after its upload"),
            }),
        }
    }

    /// Equal parts (the last one shorter) sized so the provider's part limit covers the file.
    pub fn part_size_for(&self, size: u64) -> Result<u64, StorageError> {
        choose_part_size(size, self.part_size, self.max_parts)
    }

    async fn put_multipart(
        &self,
        path: &Path,
        key: &str,
        sha256: &str,
        size: u64,
        progress: &crate::progress::Counter,
    ) -> Result<(), StorageError> {
        let part_size = self.part_size_for(size)?;
        let parts = size.div_ceil(part_size);
        let created = self
            .create_multipart(key)
            .metadata("sha256", sha256)
            .send()
            .await
            .map_err(|e| self.error(&format!("starting the upload of {key}"), e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = self
            .upload_parts(
                path, key, &upload_id, sha256, size, part_size, parts, progress,
            )
            .await;
        match result {
            Ok(completed) => {
                let done = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(completed))
                            .build(),
                    )
                    .send()
                    .await;
                if let Err(e) = done {
                    self.abort(key, &upload_id).await;
                    return Err(self.error(&format!("completing the upload of {key}"), e));
                }
                Ok(())
            }
            Err(e) => {
                self.abort(key, &upload_id).await;
                Err(e)
            }
        }
    }

    pub(super) async fn abort(&self, key: &str, upload_id: &str) {
        let r = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = r {
            tracing::warn!(
                "could not abort the multipart upload of {key} ({}); `prune` removes leftovers older than a day",
                root_cause(&e)
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_parts(
        &self,
        path: &Path,
        key: &str,
        upload_id: &str,
        sha256: &str,
        size: u64,
        part_size: u64,
        parts: u64,
        progress: &crate::progress::Counter,
    ) -> Result<Vec<CompletedPart>, StorageError> {
        // The whole file's SHA-256 is checked while the parts go up; a mismatch aborts the
        // upload before it becomes visible.
        let sha_path = path.to_path_buf();
        let sha_task =
            tokio::task::spawn_blocking(move || crate::storage::hash::sha256_file(&sha_path));
        let mut set = tokio::task::JoinSet::new();
        let mut next = 1u64;
        let mut completed = Vec::with_capacity(parts as usize);
        let shared = Arc::new(PartContext {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            path: path.to_path_buf(),
        });
        let mut failure: Option<StorageError> = None;
        loop {
            while failure.is_none() && next <= parts && set.len() < PARTS_IN_FLIGHT {
                if crate::signals::interrupted() {
                    failure = Some(StorageError::Failed {
                        destination: self.location.clone(),
                        detail: "interrupted by a signal".into(),
                    });
                    break;
                }
                let offset = (next - 1) * part_size;
                let len = part_size.min(size - offset);
                let ctx = shared.clone();
                let number = next as i32;
                set.spawn(async move { ctx.upload(number, offset, len).await });
                next += 1;
            }
            let joined = tokio::select! {
                joined = set.join_next() => joined,
                () = crate::signals::wait_interrupted(), if failure.is_none() => {
                    // Parts in flight are dropped now, not waited for: the upload is aborted
                    // within moments of the signal.
                    failure = Some(StorageError::Failed {
                        destination: self.location.clone(),
                        detail: "interrupted by a signal".into(),
                    });
                    set.abort_all();
                    continue;
                }
            };
            let Some(joined) = joined else {
                break;
            };
            match joined {
                Ok(Ok(part)) => {
                    let number = u64::try_from(part.part_number().unwrap_or(1)).unwrap_or(1);
                    let offset = (number.max(1) - 1) * part_size;
                    progress.inc(part_size.min(size.saturating_sub(offset)));
                    completed.push(part);
                }
                Ok(Err(e)) => {
                    if failure.is_none() {
                        failure = Some(match e {
                            PartError::Io(e) => e,
                            PartError::Sdk(op, e) => self.error(&op, *e),
                        });
                    }
                    set.abort_all();
                }
                Err(e) if e.is_cancelled() => {}
                Err(e) => {
                    failure.get_or_insert(join_error(&e));
                    set.abort_all();
                }
            }
        }
        if let Some(e) = failure {
            sha_task.abort();
            return Err(e);
        }
        let actual = sha_task.await.map_err(|e| join_error(&e))??;
        check_sha(path, &actual, sha256)?;
        completed.sort_by_key(|p| p.part_number());
        Ok(completed)
    }
}

struct PartContext {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    path: PathBuf,
}

enum PartError {
    Io(StorageError),
    Sdk(
        String,
        Box<
            SdkError<
                aws_sdk_s3::operation::upload_part::UploadPartError,
                aws_sdk_s3::config::http::HttpResponse,
            >,
        >,
    ),
}

impl PartContext {
    async fn upload(&self, number: i32, offset: u64, len: u64) -> Result<CompletedPart, PartError> {
        let path = self.path.clone();
        let md5 = tokio::task::spawn_blocking(move || {
            crate::storage::hash::md5_range(&path, offset, len)
        })
        .await
        .map_err(|e| PartError::Io(join_error(&e)))?
        .map_err(PartError::Io)?;
        let body = ByteStream::read_from()
            .path(&self.path)
            .offset(offset)
            .length(Length::Exact(len))
            .buffer_size(READ_BUFFER)
            .build()
            .await
            .map_err(|e| {
                PartError::Io(StorageError::Io {
                    context: format!("reading {}", self.path.display()),
                    source: std::io::Error::other(e.to_string()),
                })
            })?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .content_md5(md5)
            .content_length(len as i64)
            .body(body)
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| {
                PartError::Sdk(
                    format!("uploading part {number} of {}", self.key),
                    Box::new(e),
                )
            })?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .build())
    }
}

/// The part size for a file: `S3_PART_SIZE` when set (refused if the file would need more
/// than `S3_MAX_PARTS` parts), else the smallest multiple of 1 MiB, at least 16 MiB, that
/// keeps the file within the limit.
pub fn choose_part_size(
    size: u64,
    configured: Option<u64>,
    max_parts: u64,
) -> Result<u64, StorageError> {
    let max_parts = max_parts.max(1);
    if let Some(p) = configured {
        if size.div_ceil(p) > max_parts {
            return Err(StorageError::Invalid(format!(
                "S3_PART_SIZE={p} is too small for a {size}-byte file with S3_MAX_PARTS={max_parts}: \
                 raise S3_PART_SIZE or unset it"
            )));
        }
        return Ok(p);
    }
    let needed = size.div_ceil(max_parts).div_ceil(MIB) * MIB;
    let part = needed.max(MIN_PART);
    if part > MAX_PART {
        return Err(StorageError::Invalid(format!(
            "a {size}-byte file needs parts above 5 GiB with S3_MAX_PARTS={max_parts}"
        )));
    }
    Ok(part)
}

fn check_sha(path: &Path, actual: &str, expected: &str) -> Result<(), StorageError> {
    if actual == expected {
        Ok(())
    } else {
        Err(BackupError::Checksum {
            file: path.display().to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_keeps_files_within_the_part_limit() {
        let gib = 1024 * MIB;
        let cases = [
            (100 * MIB, None, 10_000, 16 * MIB),
            (200 * gib, None, 10_000, 21 * MIB),
            (100 * gib, None, 1_000, 103 * MIB),
            (1024 * gib, None, 10_000, 105 * MIB),
            (100 * MIB, Some(8 * MIB), 10_000, 8 * MIB),
        ];
        for (size, configured, max, expected) in cases {
            let part = choose_part_size(size, configured, max).unwrap();
            assert_eq!(part, expected, "size {size} max {max}");
            assert!(size.div_ceil(part) <= max);
        }
        assert!(choose_part_size(100 * gib, Some(8 * MIB), 1_000).is_err());
    }
}
