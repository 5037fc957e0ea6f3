//! S3-compatible storage with the official SDK (AWS, DigitalOcean Spaces, R2, B2, MinIO,
//! Wasabi, SeaweedFS).
//!
//! The SDK's default CRC checksum headers are rejected by several S3-compatible providers, so
//! checksums are calculated only when an operation requires them; integrity comes from us
//! instead: every PUT and every part carries `Content-MD5`, every object carries the file's
//! SHA-256 as user metadata (`x-amz-meta-sha256`), and a HEAD confirms size and SHA-256 of each
//! file before the manifest goes up. Payloads are not SigV4-signed (over plain HTTP the SDK
//! would hash every body once more): Content-MD5, itself a signed header, protects each
//! request's bytes, and the SHA-256 check protects the file. Large files go multipart with
//! equal part sizes (R2 requires it), parts read from the file by offset and length so a
//! retried part is re-read rather than buffered, a bounded number in flight, and
//! `AbortMultipartUpload` on failure.
//!
//! The work is split by job: `client` builds the SDK client (credentials, endpoint, path
//! style) and maps its errors to ours, `read` fetches objects, `upload` puts files and
//! manifests (single PUT or multipart) and clears stale uploads, `listing` lists folders and
//! deletes them, `lock` writes and reads S3 Object Lock (the retain-until date of each
//! object, the bucket's preflight), `versions` deletes every version of a folder on a
//! versioned bucket (Object Lock buckets are). This file holds the type and its `Storage` face.

mod client;
mod listing;
mod lock;
mod read;
mod stream;
mod upload;
mod versions;

pub use client::root_cause;
pub use stream::{S3FolderStore, stream_part_size};
pub use upload::choose_part_size;

use std::collections::BTreeMap;
use std::io::Read;

use aws_sdk_s3::Client;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;

use super::local::LocalFolder;
use super::{FolderEntry, PutStats, Storage, StorageError};
use crate::backup::{FolderName, MANIFEST_FILE, Manifest, PIN_FILE};
use crate::config::SourceKind;

/// One bucket and prefix. It owns a small runtime so that the `Storage` trait (and every
/// command) stays synchronous while the SDK runs async.
pub struct S3Storage {
    rt: Runtime,
    client: Client,
    bucket: String,
    prefix: String,
    part_size: Option<u64>,
    max_parts: u64,
    location: String,
    /// Where requests go, for messages: the endpoint, or AWS in the region.
    endpoint_shown: String,
    /// Which key was refused, for messages: `AKIA…` (the id's first characters), or the
    /// SDK's chain.
    key_shown: String,
    /// Objects per folder from the last listing, so `prune` deletes without listing again.
    listed: std::sync::Mutex<BTreeMap<String, Vec<Object>>>,
    /// Set once the provider refused a batched `DeleteObjects`: single deletes from then on.
    no_batch_delete: std::sync::atomic::AtomicBool,
    /// `S3_SSE`, `S3_SSE_KMS_KEY_ID`, `S3_STORAGE_CLASS`: sent with every upload. Integrity
    /// never rests on the ETag (with SSE-KMS it is not an MD5): Content-MD5 on each request
    /// and the SHA-256 in the object's metadata, checked by HEAD, do.
    sse: Option<aws_sdk_s3::types::ServerSideEncryption>,
    kms_key: Option<String>,
    storage_class: Option<aws_sdk_s3::types::StorageClass>,
    /// `S3_OBJECT_LOCK_MODE`/`_DAYS`: every object of a folder is locked until the folder's
    /// time plus the days.
    object_lock: Option<crate::config::S3ObjectLock>,
    /// `S3_RETENTION_DAYS`, to warn when the lock ends before retention would delete.
    retention_days: u32,
    /// Whether the bucket keeps versions (asked once): then `prune` deletes versions, since
    /// a plain delete only hides an object behind a delete marker and frees nothing.
    versioned: std::sync::OnceLock<bool>,
    /// Set once the bucket said it has Object Lock: asked once per run.
    lock_checked: std::sync::OnceLock<()>,
}

/// One object under the prefix.
#[derive(Debug, Clone)]
struct Object {
    key: String,
    size: u64,
    modified: Option<DateTime<Utc>>,
}

impl S3Storage {
    /// `S3_PREFIX/` (or nothing): where folders start.
    fn root(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    fn key(&self, folder: &str, file: &str) -> String {
        format!("{}{folder}/{file}", self.root())
    }

    /// Whether `key` is shaped like one of ours: `<prefix><folder>/<backup file name>`.
    fn is_our_key(&self, key: &str) -> bool {
        let Some(rest) = key.strip_prefix(&self.root()) else {
            return false;
        };
        match rest.split_once('/') {
            Some((folder, file)) => {
                FolderName::parse(folder).is_some()
                    && (crate::backup::is_backup_file_name(file)
                        || crate::backup::is_scratch_file_name(file))
            }
            None => false,
        }
    }
}

impl Storage for S3Storage {
    fn kind(&self) -> SourceKind {
        SourceKind::S3
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn list(&self) -> Result<Vec<FolderEntry>, StorageError> {
        self.rt.block_on(self.entries())
    }

    fn manifest(&self, folder: &FolderName) -> Result<Option<Manifest>, StorageError> {
        let key = self.key(folder.as_str(), MANIFEST_FILE);
        match self.rt.block_on(self.get_small(&key))? {
            Some(bytes) => Ok(Some(Manifest::parse(&bytes, folder)?)),
            None => Ok(None),
        }
    }

    fn open(&self, folder: &FolderName, file: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        self.open_file(folder, file)
    }

    fn put_folder(
        &self,
        source: &LocalFolder,
        manifest: &Manifest,
        progress: &crate::progress::Counter,
    ) -> Result<PutStats, StorageError> {
        self.rt
            .block_on(self.upload_folder(source, manifest, progress))
    }

    fn delete(&self, entry: &FolderEntry) -> Result<u64, StorageError> {
        self.delete_many(&[entry])
            .pop()
            .unwrap_or_else(|| Err(StorageError::Invalid("nothing to delete".into())))
    }

    fn delete_many(&self, entries: &[&FolderEntry]) -> Vec<Result<u64, StorageError>> {
        self.delete_folders(entries)
    }

    fn abort_stale_uploads(
        &self,
        before: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Vec<String>, StorageError> {
        self.rt.block_on(self.abort_uploads_before(before, dry_run))
    }

    fn put_manifest(&self, folder: &FolderName, manifest: &Manifest) -> Result<(), StorageError> {
        // `adopt` writes here without `ship`'s preflight.
        self.check_object_lock()?;
        self.rt
            .block_on(self.upload_manifest(folder, manifest))
            .map(|_size| ())
    }

    fn check_before_write(&self) -> Result<(), StorageError> {
        self.check_object_lock()
    }

    fn object_lock(
        &self,
        entry: &FolderEntry,
        now: DateTime<Utc>,
    ) -> Result<Option<super::ObjectLock>, StorageError> {
        self.rt.block_on(self.folder_lock(entry, now))
    }

    fn rewritten(&self, folder: &FolderName) -> Result<Vec<String>, StorageError> {
        self.rt.block_on(self.rewritten_files(folder))
    }

    fn set_pin(&self, folder: &FolderName, pinned: bool) -> Result<(), StorageError> {
        self.rt.block_on(async {
            let manifest = self.key(folder.as_str(), MANIFEST_FILE);
            if self.head(&manifest).await?.is_none() {
                return Err(StorageError::NotFound(format!(
                    "{} has no complete backup {folder}",
                    self.location
                )));
            }
            let key = self.key(folder.as_str(), PIN_FILE);
            if pinned {
                let body = super::local::pin_marker().into_bytes();
                let sha = hex::encode(Sha256::digest(&body));
                self.put_bytes(&key, body, &sha).await
            } else {
                self.delete_keys(&[key]).await
            }
        })
    }
}
