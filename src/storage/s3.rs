//! S3-compatible storage with the official SDK (AWS, DigitalOcean Spaces, R2, B2, MinIO,
//! Wasabi, SeaweedFS).
//!
//! The SDK's default CRC checksum headers are rejected by several S3-compatible providers, so
//! checksums are calculated only when an operation requires them; integrity comes from us
//! instead: every PUT and every part carries `Content-MD5`, every object carries the file's
//! SHA-256 as user metadata (`x-amz-meta-sha256`), and a HEAD confirms size and SHA-256 of each
//! file before the manifest goes up. Payloads are not SigV4-signed (over plain HTTP the SDK
//! would hash every body once more): Content-MD5, itself a signed header, protects each
//! request's bytes, and the SHA-256 check protects the file. Large files go multipart with equal part sizes (R2
//! requires it), parts read from the file by offset and length so a retried part is re-read
//! rather than buffered, a bounded number in flight, and `AbortMultipartUpload` on failure.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;

use super::local::LocalFolder;
use super::{FolderEntry, PutStats, Storage, StorageError, sort_newest_first};
use crate::backup::{BackupError, FolderName, MANIFEST_FILE, Manifest, PIN_FILE};
use crate::config::{S3Config, S3Sse, SourceKind};

const MIB: u64 = 1024 * 1024;
/// Files up to this size go in one PUT (unless S3_PART_SIZE is smaller).
const MULTIPART_THRESHOLD: u64 = 64 * MIB;
/// What went wrong, in one line: the innermost cause of an SDK error ("Connection
/// refused"), not the debug dump of every layer around it.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !t.trim().is_empty() {
            text = t;
        }
        cause = c.source();
    }
    // "Connection refused (os error 111)" → "connection refused".
    let text = match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "unknown error".to_string(),
    }
}

/// Smallest part we choose ourselves (S3's minimum is 5 MiB).
const MIN_PART: u64 = 16 * MIB;
const MAX_PART: u64 = 5 * 1024 * MIB;
/// Parts uploaded at once: bounded, so memory is too (bodies stream from the file).
const PARTS_IN_FLIGHT: usize = 8;
/// Manifests fetched at once when listing.
const MANIFESTS_IN_FLIGHT: usize = 16;
const READ_BUFFER: usize = 1024 * 1024;

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
}

/// Keys per `DeleteObjects` request (the S3 maximum).
const DELETE_BATCH: usize = 1000;
/// Single deletes at once when batches are refused.
const DELETES_IN_FLIGHT: usize = 16;

/// One object under the prefix.
#[derive(Debug, Clone)]
struct Object {
    key: String,
    size: u64,
    modified: Option<DateTime<Utc>>,
}

impl S3Storage {
    pub fn new(cfg: &S3Config) -> Result<S3Storage, StorageError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("s3")
            .build()
            .map_err(|e| StorageError::Io {
                context: "starting the S3 client runtime".into(),
                source: e,
            })?;
        let region = Region::new(cfg.region.clone());
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build();
        let retry = RetryConfig::standard()
            .with_max_attempts(5)
            .with_initial_backoff(Duration::from_millis(200));
        let mut builder = match &cfg.credentials {
            Some(c) => aws_sdk_s3::config::Builder::new()
                .behavior_version(BehaviorVersion::latest())
                .credentials_provider(Credentials::new(
                    c.access_key.expose(),
                    c.secret_key.expose(),
                    c.session_token.as_ref().map(|t| t.expose().to_string()),
                    None,
                    "pg-backups",
                )),
            None => {
                // No keys: the SDK's default chain (environment, profile, IAM role).
                let shared = rt.block_on(
                    aws_config::defaults(BehaviorVersion::latest())
                        .region(region.clone())
                        .load(),
                );
                aws_sdk_s3::config::Builder::from(&shared)
            }
        };
        builder = builder
            .region(region)
            .force_path_style(cfg.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(timeouts)
            .retry_config(retry);
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let client = Client::from_conf(builder.build());
        let location = match cfg.prefix.as_str() {
            "" => format!("s3://{}", cfg.bucket),
            p => format!("s3://{}/{p}", cfg.bucket),
        } + &cfg
            .endpoint
            .as_ref()
            .map(|e| format!(" at {e}"))
            .unwrap_or_default();
        let endpoint_shown = match &cfg.endpoint {
            Some(e) => e.clone(),
            None => format!("AWS S3 in {}", cfg.region),
        };
        let key_shown = match &cfg.credentials {
            Some(c) => {
                let id: String = c.access_key.expose().chars().take(4).collect();
                format!("key {id}…")
            }
            None => {
                "the key of the SDK's chain (AWS_PROFILE, web identity, instance role)".to_string()
            }
        };
        Ok(S3Storage {
            rt,
            client,
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
            part_size: cfg.part_size,
            max_parts: cfg.max_parts,
            location,
            endpoint_shown,
            key_shown,
            listed: std::sync::Mutex::new(BTreeMap::new()),
            no_batch_delete: std::sync::atomic::AtomicBool::new(false),
            sse: cfg.sse.as_ref().map(|s| match s {
                S3Sse::Aes256 => aws_sdk_s3::types::ServerSideEncryption::Aes256,
                S3Sse::Kms { .. } => aws_sdk_s3::types::ServerSideEncryption::AwsKms,
            }),
            kms_key: match &cfg.sse {
                Some(S3Sse::Kms { key_id }) => key_id.clone(),
                _ => None,
            },
            storage_class: cfg
                .storage_class
                .as_deref()
                .map(aws_sdk_s3::types::StorageClass::from),
        })
    }

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
                FolderName::parse(folder).is_some() && crate::backup::is_backup_file_name(file)
            }
            None => false,
        }
    }

    /// Maps an SDK error to ours: unreachable (69), refused (77), missing (66), other (69).
    fn error<E>(
        &self,
        op: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let destination = self.location.clone();
        let endpoint = &self.endpoint_shown;
        match &err {
            SdkError::DispatchFailure(_) => StorageError::Unreachable {
                destination,
                detail: format!(
                    "{op}: {} at {endpoint}; check S3_ENDPOINT and that the server is reachable",
                    root_cause(&err)
                ),
            },
            SdkError::TimeoutError(_) => StorageError::Unreachable {
                destination,
                detail: format!(
                    "{op}: no answer from {endpoint} in time; check S3_ENDPOINT and the network"
                ),
            },
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("");
                let message = se.err().message().unwrap_or("");
                let said = match (code, message) {
                    ("", "") => format!("HTTP {status}"),
                    (c, "") | ("", c) => format!("{c} (HTTP {status})"),
                    (c, m) => format!("{c}: {m} (HTTP {status})"),
                };
                match (code, status) {
                    ("NoSuchBucket", _) => StorageError::NotFound(format!(
                        "bucket {} does not exist at {endpoint}: create it, or fix S3_BUCKET / \
                         S3_ENDPOINT",
                        self.bucket
                    )),
                    (
                        "InvalidAccessKeyId"
                        | "SignatureDoesNotMatch"
                        | "AccessDenied"
                        | "InvalidToken"
                        | "ExpiredToken"
                        | "AuthorizationHeaderMalformed"
                        | "InvalidSecurity"
                        | "AllAccessDisabled",
                        _,
                    )
                    | (_, 401 | 403) => StorageError::Denied {
                        destination,
                        detail: format!(
                            "{op}: access denied for {} ({said}); check S3_ACCESS_KEY / \
                             S3_SECRET_KEY and the bucket policy",
                            self.key_shown
                        ),
                    },
                    (_, 404) => StorageError::NotFound(format!("{op}: not found at {destination}")),
                    _ => StorageError::Failed {
                        destination,
                        detail: format!("{op}: {said}"),
                    },
                }
            }
            SdkError::ResponseError(_) => StorageError::Failed {
                destination,
                detail: format!(
                    "{op}: {endpoint} answered something that is not S3 ({}); check S3_ENDPOINT",
                    root_cause(&err)
                ),
            },
            _ => StorageError::Failed {
                destination,
                detail: format!("{op}: {}", root_cause(&err)),
            },
        }
    }

    /// Every object under `prefix`, 1,000 keys per request.
    async fn list_objects(&self, prefix: &str) -> Result<Vec<Object>, StorageError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("listing objects", e))?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                out.push(Object {
                    key: key.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: o
                        .last_modified()
                        .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
                });
            }
        }
        Ok(out)
    }

    async fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
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

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>, sha256: &str) -> Result<(), StorageError> {
        let md5 = super::hash::md5_bytes(&bytes);
        let len = bytes.len() as i64;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key.clone())
            .set_storage_class(self.storage_class.clone())
            .content_md5(md5)
            .content_length(len)
            .metadata("sha256", sha256)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.error(&format!("uploading {key}"), e))?;
        Ok(())
    }

    /// HEAD: the object's size and the SHA-256 it carries.
    async fn head(&self, key: &str) -> Result<Option<(u64, Option<String>)>, StorageError> {
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
                tokio::task::spawn_blocking(move || super::hash::md5_and_sha256_file(&p))
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
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .set_server_side_encryption(self.sse.clone())
                .set_ssekms_key_id(self.kms_key.clone())
                .set_storage_class(self.storage_class.clone())
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
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key.clone())
            .set_storage_class(self.storage_class.clone())
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

    async fn abort(&self, key: &str, upload_id: &str) {
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
        let sha_task = tokio::task::spawn_blocking(move || super::hash::sha256_file(&sha_path));
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

    /// Deletes keys in batches of 1,000. Some S3-compatible servers refuse `DeleteObjects`
    /// without `Content-MD5` (which the SDK no longer sends): then one request per key,
    /// a bounded number at once.
    async fn delete_keys(&self, keys: &[String]) -> Result<(), StorageError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        use std::sync::atomic::Ordering;
        for batch in keys.chunks(DELETE_BATCH) {
            if batch.len() > 1 && !self.no_batch_delete.load(Ordering::Relaxed) {
                let objects: Result<Vec<ObjectIdentifier>, _> = batch
                    .iter()
                    .map(|k| ObjectIdentifier::builder().key(k).build())
                    .collect();
                let delete = objects
                    .and_then(|o| Delete::builder().set_objects(Some(o)).quiet(true).build());
                let delete = delete.map_err(|e| StorageError::Failed {
                    destination: self.location.clone(),
                    detail: format!("building a delete request: {e}"),
                })?;
                match self
                    .client
                    .delete_objects()
                    .bucket(&self.bucket)
                    .delete(delete)
                    .send()
                    .await
                {
                    Ok(out) => {
                        if let Some(err) = out.errors().first() {
                            let code = err.code().unwrap_or("");
                            let detail = format!(
                                "deleting {}: {code} {}",
                                err.key().unwrap_or(""),
                                err.message().unwrap_or("")
                            );
                            return Err(if code == "AccessDenied" {
                                StorageError::Denied {
                                    destination: self.location.clone(),
                                    detail,
                                }
                            } else {
                                StorageError::Failed {
                                    destination: self.location.clone(),
                                    detail,
                                }
                            });
                        }
                        continue;
                    }
                    Err(SdkError::ServiceError(se))
                        if matches!(
                            se.err().code(),
                            Some(
                                "MissingContentMD5"
                                    | "NotImplemented"
                                    | "InvalidRequest"
                                    | "InvalidDigest"
                            )
                        ) =>
                    {
                        tracing::info!(
                            "{} refused a batched delete ({}); deleting one key at a time",
                            self.location,
                            se.err().code().unwrap_or("")
                        );
                        self.no_batch_delete.store(true, Ordering::Relaxed);
                    }
                    Err(e) => return Err(self.error("deleting objects", e)),
                }
            }
            let mut set = tokio::task::JoinSet::new();
            let mut pending = batch.iter().cloned();
            loop {
                while set.len() < DELETES_IN_FLIGHT {
                    let Some(key) = pending.next() else { break };
                    let client = self.client.clone();
                    let bucket = self.bucket.clone();
                    set.spawn(async move {
                        let r = client.delete_object().bucket(bucket).key(&key).send().await;
                        (key, r)
                    });
                }
                let Some(joined) = set.join_next().await else {
                    break;
                };
                let (key, r) = joined.map_err(|e| join_error(&e))?;
                r.map_err(|e| self.error(&format!("deleting {key}"), e))?;
            }
        }
        Ok(())
    }

    /// The objects of a folder: from the last listing, else listed now.
    async fn folder_objects(&self, folder: &FolderName) -> Result<Vec<Object>, StorageError> {
        let cached = self
            .listed
            .lock()
            .ok()
            .and_then(|l| l.get(folder.as_str()).cloned());
        match cached {
            Some(objects) => Ok(objects),
            None => {
                self.list_objects(&format!("{}{}/", self.root(), folder.as_str()))
                    .await
            }
        }
    }

    async fn entries(&self) -> Result<Vec<FolderEntry>, StorageError> {
        let root = self.root();
        let objects = self.list_objects(&root).await?;
        // Group keys by their first path segment under the prefix.
        let mut groups: BTreeMap<String, Vec<Object>> = BTreeMap::new();
        for o in objects {
            let Some(rest) = o.key.strip_prefix(&root) else {
                continue;
            };
            let Some((folder, file)) = rest.split_once('/') else {
                continue;
            };
            if file.is_empty() {
                continue;
            }
            groups.entry(folder.to_string()).or_default().push(o);
        }
        if let Ok(mut cache) = self.listed.lock() {
            cache.clone_from(&groups);
        }
        let mut entries = Vec::with_capacity(groups.len());
        let mut manifest_keys = Vec::new();
        for (name, objects) in &groups {
            let bytes = objects.iter().map(|o| o.size).sum();
            let modified = objects.iter().filter_map(|o| o.modified).max();
            let has = |file: &str| {
                let key = self.key(name, file);
                objects.iter().any(|o| o.key == key)
            };
            let mut entry = match FolderName::parse(name) {
                Some(folder) => {
                    if has(MANIFEST_FILE) {
                        manifest_keys.push((entries.len(), folder.clone()));
                    }
                    let mut e = FolderEntry::from_manifest(name.clone(), folder, None);
                    e.pinned = has(PIN_FILE);
                    e
                }
                None => {
                    FolderEntry::invalid(name.clone(), "not a backup folder name (YYYYMMDD_HHMMSS)")
                }
            };
            entry.bytes = bytes;
            entry.modified = modified;
            let root_len = self.key(name, "").len();
            let files = objects
                .iter()
                .filter_map(|o| o.key.get(root_len..).map(|f| (f.to_string(), o.size)))
                .filter(|(f, _)| !f.contains('/'))
                .collect();
            entries.push(entry.with_files(files));
        }
        // Manifests are read concurrently: one request each, a bounded number at once.
        let mut set = tokio::task::JoinSet::new();
        let mut pending = manifest_keys.into_iter();
        let mut fetched = Vec::new();
        loop {
            while set.len() < MANIFESTS_IN_FLIGHT {
                let Some((index, folder)) = pending.next() else {
                    break;
                };
                let client = self.client.clone();
                let bucket = self.bucket.clone();
                let key = self.key(folder.as_str(), MANIFEST_FILE);
                set.spawn(async move {
                    let r = client.get_object().bucket(bucket).key(&key).send().await;
                    let bytes = match r {
                        Ok(out) => out
                            .body
                            .collect()
                            .await
                            .map(|b| b.into_bytes().to_vec())
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(root_cause(&e)),
                    };
                    (index, folder, bytes)
                });
            }
            let Some(joined) = set.join_next().await else {
                break;
            };
            fetched.push(joined.map_err(|e| join_error(&e))?);
        }
        for (index, folder, bytes) in fetched {
            let parsed = match bytes {
                Ok(b) => Manifest::parse(&b, &folder),
                Err(e) => Err(BackupError::Manifest {
                    folder: folder.to_string(),
                    reason: format!("cannot be read: {e}"),
                }),
            };
            let pinned = entries[index].pinned;
            let (bytes, modified) = (entries[index].bytes, entries[index].modified);
            let files = std::mem::take(&mut entries[index].files);
            let mut e =
                FolderEntry::from_manifest(entries[index].name.clone(), folder, Some(parsed));
            e.pinned = pinned;
            e.bytes = bytes;
            e.modified = modified;
            e.files = files;
            entries[index] = e;
        }
        sort_newest_first(&mut entries);
        Ok(entries)
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
        let md5 = tokio::task::spawn_blocking(move || super::hash::md5_range(&path, offset, len))
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

fn join_error(e: &tokio::task::JoinError) -> StorageError {
    StorageError::Io {
        context: "an upload task".into(),
        source: std::io::Error::other(e.to_string()),
    }
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
        if !crate::backup::is_safe_file_name(file) {
            return Err(StorageError::Invalid(format!(
                "{file:?} is not a backup file name"
            )));
        }
        let key = self.key(folder.as_str(), file);
        let out = self
            .rt
            .block_on(
                self.client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
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

    fn put_folder(
        &self,
        source: &LocalFolder,
        manifest: &Manifest,
        progress: &crate::progress::Counter,
    ) -> Result<PutStats, StorageError> {
        self.rt.block_on(async {
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
            let json = manifest.to_json();
            let sha = hex::encode(Sha256::digest(&json));
            let size = json.len() as u64;
            let key = self.key(source.folder.as_str(), MANIFEST_FILE);
            self.put_bytes(&key, json, &sha).await?;
            match self.head(&key).await? {
                Some((s, Some(h))) if s == size && h == sha => {}
                _ => {
                    return Err(StorageError::Failed {
                        destination: self.location.clone(),
                        detail: format!("{key} did not arrive whole"),
                    });
                }
            }
            stats.files += 1;
            stats.bytes += size;
            Ok(stats)
        })
    }

    fn delete(&self, entry: &FolderEntry) -> Result<u64, StorageError> {
        self.delete_many(&[entry])
            .pop()
            .unwrap_or_else(|| Err(StorageError::Invalid("nothing to delete".into())))
    }

    fn delete_many(&self, entries: &[&FolderEntry]) -> Vec<Result<u64, StorageError>> {
        let result = self.rt.block_on(async {
            let mut per_folder = Vec::with_capacity(entries.len());
            for entry in entries {
                let Some(folder) = &entry.folder else {
                    per_folder.push(Err(StorageError::Invalid(format!(
                        "refusing to delete {:?}: not a backup folder name",
                        entry.name
                    ))));
                    continue;
                };
                per_folder.push(
                    self.folder_objects(folder)
                        .await
                        .map(|o| (folder.clone(), o)),
                );
            }
            // Every manifest first, then the data.
            let mut manifests = Vec::new();
            let mut data = Vec::new();
            for (folder, objects) in per_folder.iter().flatten() {
                let manifest = self.key(folder.as_str(), MANIFEST_FILE);
                for o in objects {
                    if o.key == manifest {
                        manifests.push(o.key.clone());
                    } else {
                        data.push(o.key.clone());
                    }
                }
            }
            self.delete_keys(&manifests).await?;
            self.delete_keys(&data).await?;
            Ok::<_, StorageError>(per_folder)
        });
        match result {
            Ok(per_folder) => per_folder
                .into_iter()
                .map(|r| r.map(|(_, objects)| objects.iter().map(|o| o.size).sum()))
                .collect(),
            Err(e) => {
                let message = e.to_string();
                let code = e.exit_code();
                entries
                    .iter()
                    .map(|_| {
                        Err(match code {
                            77 => StorageError::Denied {
                                destination: self.location.clone(),
                                detail: message.clone(),
                            },
                            69 => StorageError::Unreachable {
                                destination: self.location.clone(),
                                detail: message.clone(),
                            },
                            _ => StorageError::Failed {
                                destination: self.location.clone(),
                                detail: message.clone(),
                            },
                        })
                    })
                    .collect()
            }
        }
    }

    fn abort_stale_uploads(
        &self,
        before: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Vec<String>, StorageError> {
        self.rt.block_on(async {
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
        })
    }

    fn put_manifest(&self, folder: &FolderName, manifest: &Manifest) -> Result<(), StorageError> {
        self.rt.block_on(async {
            let json = manifest.to_json();
            let sha = hex::encode(Sha256::digest(&json));
            let size = json.len() as u64;
            let key = self.key(folder.as_str(), MANIFEST_FILE);
            self.put_bytes(&key, json, &sha).await?;
            match self.head(&key).await? {
                Some((s, Some(h))) if s == size && h == sha => Ok(()),
                _ => Err(StorageError::Failed {
                    destination: self.location.clone(),
                    detail: format!("{key} did not arrive whole"),
                }),
            }
        })
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
