//! Listing folders (one paginated listing, manifests fetched a bounded number at once) and
//! deleting them (batched `DeleteObjects`, or one key at a time where a provider refuses
//! batches; on a versioned bucket, every version: see `versions`).

use std::collections::BTreeMap;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use chrono::DateTime;

use super::client::{join_error, root_cause};
use super::{Object, S3Storage};
use crate::backup::{BackupError, FolderName, MANIFEST_FILE, Manifest, PIN_FILE};
use crate::storage::{FolderEntry, StorageError, sort_newest_first};

/// Manifests fetched at once when listing.
const MANIFESTS_IN_FLIGHT: usize = 16;
/// Keys per `DeleteObjects` request (the S3 maximum).
const DELETE_BATCH: usize = 1000;
/// Single deletes at once when batches are refused.
const DELETES_IN_FLIGHT: usize = 16;

impl S3Storage {
    /// Every object under `prefix`, 1,000 keys per request.
    pub(super) async fn list_objects(&self, prefix: &str) -> Result<Vec<Object>, StorageError> {
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

    pub(super) async fn entries(&self) -> Result<Vec<FolderEntry>, StorageError> {
        let groups = self.group_by_folder(self.list_objects(&self.root()).await?);
        if let Ok(mut cache) = self.listed.lock() {
            cache.clone_from(&groups);
        }
        let mut entries = Vec::with_capacity(groups.len());
        let mut manifest_keys = Vec::new();
        for (name, objects) in &groups {
            let (entry, manifest) = self.entry_of(name, objects);
            if let Some(folder) = manifest {
                manifest_keys.push((entries.len(), folder));
            }
            entries.push(entry);
        }
        for (index, folder, bytes) in self.fetch_manifests(manifest_keys).await? {
            let parsed = match bytes {
                Ok(b) => Manifest::parse(&b, &folder),
                Err(e) => Err(BackupError::Manifest {
                    folder: folder.to_string(),
                    reason: format!("cannot be read: {e}"),
                }),
            };
            with_manifest(&mut entries[index], folder, parsed);
        }
        sort_newest_first(&mut entries);
        Ok(entries)
    }

    /// Keys grouped by their first path segment under the prefix.
    fn group_by_folder(&self, objects: Vec<Object>) -> BTreeMap<String, Vec<Object>> {
        let root = self.root();
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
        groups
    }

    /// A folder as the listing shows it, before its manifest is read; with the folder's
    /// name when it has a manifest to read.
    fn entry_of(&self, name: &str, objects: &[Object]) -> (FolderEntry, Option<FolderName>) {
        let bytes = objects.iter().map(|o| o.size).sum();
        let modified = objects.iter().filter_map(|o| o.modified).max();
        let has = |file: &str| {
            let key = self.key(name, file);
            objects.iter().any(|o| o.key == key)
        };
        let mut manifest = None;
        let mut entry = match FolderName::parse(name) {
            Some(folder) => {
                if has(MANIFEST_FILE) {
                    manifest = Some(folder.clone());
                }
                let mut e = FolderEntry::from_manifest(name.to_string(), folder, None);
                e.pinned = has(PIN_FILE);
                e
            }
            None => FolderEntry::invalid(
                name.to_string(),
                "not a backup folder name (YYYYMMDD_HHMMSS)",
            ),
        };
        entry.bytes = bytes;
        entry.modified = modified;
        let root_len = self.key(name, "").len();
        let files = objects
            .iter()
            .filter_map(|o| o.key.get(root_len..).map(|f| (f.to_string(), o.size)))
            .filter(|(f, _)| !f.contains('/'))
            .collect();
        (entry.with_files(files), manifest)
    }

    /// Manifests are read concurrently: one request each, a bounded number at once. Each
    /// comes back with the index of its entry, its bytes or why they could not be read.
    async fn fetch_manifests(
        &self,
        manifest_keys: Vec<(usize, FolderName)>,
    ) -> Result<Vec<(usize, FolderName, Result<Vec<u8>, String>)>, StorageError> {
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
        Ok(fetched)
    }

    /// Every manifest first, then the data: a prune killed half-way leaves no folder that
    /// looks complete with files missing.
    pub(super) fn delete_folders(
        &self,
        entries: &[&FolderEntry],
    ) -> Vec<Result<u64, StorageError>> {
        if self.rt.block_on(self.is_versioned()) {
            return entries
                .iter()
                .map(|entry| match &entry.folder {
                    Some(folder) => self.rt.block_on(self.delete_folder_versions(folder)),
                    None => Err(StorageError::Invalid(format!(
                        "refusing to delete {:?}: not a backup folder name",
                        entry.name
                    ))),
                })
                .collect();
        }
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

    /// Deletes keys (current versions: on a versioned bucket, this adds delete markers).
    /// A refusal is an error (77).
    pub(super) async fn delete_keys(&self, keys: &[String]) -> Result<(), StorageError> {
        let ids: Vec<(String, Option<String>)> = keys.iter().map(|k| (k.clone(), None)).collect();
        match self.delete_ids(&ids).await?.first() {
            None => Ok(()),
            Some((key, _)) => Err(StorageError::Denied {
                destination: self.location.clone(),
                detail: format!("deleting {key}: AccessDenied"),
            }),
        }
    }

    /// Deletes keys, or versions of keys, in batches of 1,000. Some S3-compatible servers
    /// refuse `DeleteObjects` without `Content-MD5` (which the SDK no longer sends): then one
    /// request per key, a bounded number at once. Returns what was refused with
    /// `AccessDenied` (a missing permission, or a version that Object Lock holds), for the
    /// caller to tell which; any other failure is an error.
    pub(super) async fn delete_ids(
        &self,
        ids: &[(String, Option<String>)],
    ) -> Result<Vec<(String, Option<String>)>, StorageError> {
        use std::sync::atomic::Ordering;
        let mut refused = Vec::new();
        for batch in ids.chunks(DELETE_BATCH) {
            if batch.len() > 1 && !self.no_batch_delete.load(Ordering::Relaxed) {
                if let Some(r) = self.delete_batch(batch).await? {
                    refused.extend(r);
                    continue;
                }
                self.no_batch_delete.store(true, Ordering::Relaxed);
            }
            refused.extend(self.delete_singly(batch).await?);
        }
        Ok(refused)
    }

    /// One `DeleteObjects`; `None` when the provider refuses batches.
    async fn delete_batch(
        &self,
        batch: &[(String, Option<String>)],
    ) -> Result<Option<Vec<(String, Option<String>)>>, StorageError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let objects: Result<Vec<ObjectIdentifier>, _> = batch
            .iter()
            .map(|(k, v)| {
                ObjectIdentifier::builder()
                    .key(k)
                    .set_version_id(v.clone())
                    .build()
            })
            .collect();
        let delete =
            objects.and_then(|o| Delete::builder().set_objects(Some(o)).quiet(true).build());
        let delete = delete.map_err(|e| StorageError::Failed {
            destination: self.location.clone(),
            detail: format!("building a delete request: {e}"),
        })?;
        let sent = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await;
        match sent {
            Ok(out) => {
                let mut refused = Vec::new();
                for err in out.errors() {
                    let key = err.key().unwrap_or("").to_string();
                    match err.code().unwrap_or("") {
                        "AccessDenied" => {
                            refused.push((key, err.version_id().map(str::to_string)));
                        }
                        code => {
                            return Err(StorageError::Failed {
                                destination: self.location.clone(),
                                detail: format!(
                                    "deleting {key}: {code} {}",
                                    err.message().unwrap_or("")
                                ),
                            });
                        }
                    }
                }
                Ok(Some(refused))
            }
            Err(SdkError::ServiceError(se))
                if matches!(
                    se.err().code(),
                    Some(
                        "MissingContentMD5" | "NotImplemented" | "InvalidRequest" | "InvalidDigest"
                    )
                ) =>
            {
                tracing::info!(
                    "{} refused a batched delete ({}); deleting one key at a time",
                    self.location,
                    se.err().code().unwrap_or("")
                );
                Ok(None)
            }
            Err(e) => Err(self.error("deleting objects", e)),
        }
    }

    /// One `DeleteObject` per key (or version), a bounded number at once.
    async fn delete_singly(
        &self,
        batch: &[(String, Option<String>)],
    ) -> Result<Vec<(String, Option<String>)>, StorageError> {
        let mut refused = Vec::new();
        let mut set = tokio::task::JoinSet::new();
        let mut pending = batch.iter().cloned();
        loop {
            while set.len() < DELETES_IN_FLIGHT {
                let Some((key, version)) = pending.next() else {
                    break;
                };
                let client = self.client.clone();
                let bucket = self.bucket.clone();
                set.spawn(async move {
                    let r = client
                        .delete_object()
                        .bucket(bucket)
                        .key(&key)
                        .set_version_id(version.clone())
                        .send()
                        .await;
                    (key, version, r)
                });
            }
            let Some(joined) = set.join_next().await else {
                break;
            };
            let (key, version, r) = joined.map_err(|e| join_error(&e))?;
            match r {
                Ok(_) => {}
                Err(SdkError::ServiceError(se)) if se.err().code() == Some("AccessDenied") => {
                    refused.push((key, version));
                }
                Err(e) => return Err(self.error(&format!("deleting {key}"), e)),
            }
        }
        Ok(refused)
    }
}

/// The entry with its manifest read (or why it could not be), keeping what the listing saw.
fn with_manifest(
    entry: &mut FolderEntry,
    folder: FolderName,
    parsed: Result<Manifest, BackupError>,
) {
    let files = std::mem::take(&mut entry.files);
    let mut e = FolderEntry::from_manifest(entry.name.clone(), folder, Some(parsed));
    e.pinned = entry.pinned;
    e.bytes = entry.bytes;
    e.modified = entry.modified;
    e.files = files;
    *entry = e;
}
