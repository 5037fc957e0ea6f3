//! Deleting a folder on a versioned bucket (every Object Lock bucket is one): a plain delete
//! only puts a delete marker in front of an object, which hides it and frees nothing, so
//! `prune` lists the folder's versions and deletes each by its version id, delete markers
//! last. A version that Object Lock still holds is refused (AccessDenied); the folder is then
//! reported as locked, never as a failure, and a later prune takes it once the date passed.
//!
//! Manifest first, as everywhere (guarantee 3): when a manifest version is refused nothing
//! else of the folder is touched, so a locked folder stays complete.

use aws_sdk_s3::types::BucketVersioningStatus;
use chrono::Utc;

use super::S3Storage;
use crate::backup::{FolderName, MANIFEST_FILE};
use crate::storage::{ObjectLock, StorageError};

/// One version of an object, or a delete marker.
#[derive(Debug, Clone)]
struct Version {
    key: String,
    id: String,
    size: u64,
    marker: bool,
}

impl S3Storage {
    /// Whether the bucket keeps versions, asked once per run. With Object Lock set it does
    /// (S3 requires versioning for it). Else `GetBucketVersioning` says; a provider whose
    /// answer cannot be read (or a key without that permission) is asked for a version
    /// under the prefix instead; one that cannot say either gets plain deletes, as before.
    pub(super) async fn is_versioned(&self) -> bool {
        if let Some(v) = self.versioned.get() {
            return *v;
        }
        let versioned = if self.object_lock.is_some() {
            true
        } else {
            match self
                .client
                .get_bucket_versioning()
                .bucket(&self.bucket)
                .send()
                .await
            {
                Ok(out) => matches!(
                    out.status(),
                    Some(BucketVersioningStatus::Enabled | BucketVersioningStatus::Suspended)
                ),
                Err(e) => {
                    tracing::debug!(
                        "{}: GetBucketVersioning: {}; looking for versions instead",
                        self.location,
                        super::client::root_cause(&e)
                    );
                    self.has_versions().await
                }
            }
        };
        *self.versioned.get_or_init(|| versioned)
    }

    /// Whether any object under the prefix has a real version id or a delete marker (an
    /// unversioned bucket lists every object with the version id `null`).
    async fn has_versions(&self) -> bool {
        let listed = self
            .client
            .list_object_versions()
            .bucket(&self.bucket)
            .prefix(self.root())
            .max_keys(100)
            .send()
            .await;
        match listed {
            Ok(page) => {
                !page.delete_markers().is_empty()
                    || page
                        .versions()
                        .iter()
                        .any(|v| v.version_id().is_some_and(|id| id != "null"))
            }
            Err(e) => {
                tracing::info!(
                    "{}: cannot tell whether the bucket keeps versions ({}); deleting objects, \
                     not versions",
                    self.location,
                    super::client::root_cause(&e)
                );
                false
            }
        }
    }

    /// Every version and delete marker under `prefix`.
    async fn list_versions(&self, prefix: &str) -> Result<Vec<Version>, StorageError> {
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.error("listing object versions", e))?;
            for v in page.versions() {
                if let (Some(key), Some(id)) = (v.key(), v.version_id()) {
                    out.push(Version {
                        key: key.to_string(),
                        id: id.to_string(),
                        size: v.size().unwrap_or(0).max(0) as u64,
                        marker: false,
                    });
                }
            }
            for m in page.delete_markers() {
                if let (Some(key), Some(id)) = (m.key(), m.version_id()) {
                    out.push(Version {
                        key: key.to_string(),
                        id: id.to_string(),
                        size: 0,
                        marker: true,
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes every version of a folder: the manifest's, then the data's, then the delete
    /// markers. Returns the bytes freed.
    pub(super) async fn delete_folder_versions(
        &self,
        folder: &FolderName,
    ) -> Result<u64, StorageError> {
        let versions = self
            .list_versions(&format!("{}{}/", self.root(), folder.as_str()))
            .await?;
        let manifest = self.key(folder.as_str(), MANIFEST_FILE);
        let (markers, objects): (Vec<&Version>, Vec<&Version>) =
            versions.iter().partition(|v| v.marker);
        // Every version's lock and legal hold first: a folder of which any part must stay
        // is kept whole (deleting its manifest would leave neither a backup nor a clean
        // slate). A refusal this did not foresee is still handled below.
        if let Some(lock) = self.lock_of_any(&objects).await? {
            return Err(StorageError::Locked {
                destination: self.location.clone(),
                lock,
            });
        }
        let (manifests, data): (Vec<&Version>, Vec<&Version>) =
            objects.into_iter().partition(|v| v.key == manifest);
        let mut freed = 0;
        for (step, group) in [("manifest", manifests), ("files", data)] {
            let refused = self.delete_versions(&group).await?;
            freed += group
                .iter()
                .filter(|v| !refused.iter().any(|(k, id)| *k == v.key && *id == v.id))
                .map(|v| v.size)
                .sum::<u64>();
            if !refused.is_empty() {
                return Err(self.refusal(folder, step, &refused).await);
            }
        }
        let refused = self.delete_versions(&markers).await?;
        if let Some((key, _)) = refused.first() {
            return Err(StorageError::Denied {
                destination: self.location.clone(),
                detail: format!(
                    "deleting the delete marker of {key}: AccessDenied; prune needs \
                     s3:DeleteObjectVersion"
                ),
            });
        }
        Ok(freed)
    }

    /// The files of a folder with more than one version (the pin marker aside, which `pin`
    /// writes and removes at will): none on a bucket that keeps no versions.
    pub(super) async fn rewritten_files(
        &self,
        folder: &FolderName,
    ) -> Result<Vec<String>, StorageError> {
        if !self.is_versioned().await {
            return Ok(Vec::new());
        }
        let prefix = format!("{}{}/", self.root(), folder.as_str());
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for v in self.list_versions(&prefix).await? {
            let name = v.key.strip_prefix(&prefix).unwrap_or(&v.key).to_string();
            if !v.marker && name != crate::backup::PIN_FILE {
                *counts.entry(name).or_default() += 1;
            }
        }
        Ok(counts
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(name, _)| name)
            .collect())
    }

    /// The strongest lock among these versions (the latest date, any legal hold), read
    /// by HEAD, a bounded number at once.
    async fn lock_of_any(&self, versions: &[&Version]) -> Result<Option<ObjectLock>, StorageError> {
        let now = Utc::now();
        let mut strongest: Option<ObjectLock> = None;
        for batch in versions.chunks(16) {
            let heads = futures_util::future::join_all(
                batch
                    .iter()
                    .map(|v| self.lock_of(&v.key, Some(v.id.as_str()), now)),
            )
            .await;
            for lock in heads {
                if let Some(l) = lock? {
                    strongest = Some(match strongest {
                        None => l,
                        Some(seen) => ObjectLock {
                            until: seen.until.max(l.until),
                            legal_hold: seen.legal_hold || l.legal_hold,
                        },
                    });
                }
            }
        }
        Ok(strongest)
    }

    /// Removes one key for good (a dump's scratch file): on a versioned bucket every version
    /// of it, since a plain delete would leave it billed behind a delete marker.
    pub(super) async fn remove_key(&self, key: &str) -> Result<(), StorageError> {
        if !self.is_versioned().await {
            return self.delete_keys(&[key.to_string()]).await;
        }
        let versions: Vec<Version> = self
            .list_versions(key)
            .await?
            .into_iter()
            .filter(|v| v.key == key)
            .collect();
        let refs: Vec<&Version> = versions.iter().collect();
        match self.delete_versions(&refs).await?.first() {
            None => Ok(()),
            Some((key, _)) => Err(StorageError::Denied {
                destination: self.location.clone(),
                detail: format!("deleting the versions of {key}: AccessDenied"),
            }),
        }
    }

    /// Deletes these versions; returns the ones refused, as (key, version id).
    async fn delete_versions(
        &self,
        versions: &[&Version],
    ) -> Result<Vec<(String, String)>, StorageError> {
        let ids: Vec<(String, Option<String>)> = versions
            .iter()
            .map(|v| (v.key.clone(), Some(v.id.clone())))
            .collect();
        let refused = self.delete_ids(&ids).await?;
        Ok(refused
            .into_iter()
            .flat_map(|(key, id)| match id {
                Some(id) => vec![(key, id)],
                // A provider that leaves the version id out of its error: every version of
                // the key that was asked for.
                None => versions
                    .iter()
                    .filter(|v| v.key == key)
                    .map(|v| (key.clone(), v.id.clone()))
                    .collect(),
            })
            .collect())
    }

    /// Why versions were refused: Object Lock (the latest date among them, read by HEAD),
    /// else a missing permission.
    async fn refusal(
        &self,
        folder: &FolderName,
        step: &str,
        refused: &[(String, String)],
    ) -> StorageError {
        let now = Utc::now();
        let mut lock: Option<ObjectLock> = None;
        for (key, id) in refused {
            let version = (!id.is_empty()).then_some(id.as_str());
            if let Ok(Some(l)) = self.lock_of(key, version, now).await {
                lock = Some(match lock {
                    None => l,
                    Some(seen) => ObjectLock {
                        until: seen.until.max(l.until),
                        legal_hold: seen.legal_hold || l.legal_hold,
                    },
                });
            }
        }
        match lock {
            Some(lock) => {
                if step == "files" {
                    tracing::warn!(
                        "{}: {folder} lost its manifest but some of its files are still \
                         locked; it shows as incomplete until a prune after the lock removes \
                         the rest",
                        self.location
                    );
                }
                StorageError::Locked {
                    destination: self.location.clone(),
                    lock,
                }
            }
            None => StorageError::Denied {
                destination: self.location.clone(),
                detail: format!(
                    "deleting {} of {folder} ({} versions, e.g. {}): AccessDenied, and no Object \
                     Lock date or legal hold could be read for them; prune needs \
                     s3:DeleteObjectVersion, s3:ListBucketVersions and s3:GetObjectRetention",
                    step,
                    refused.len(),
                    refused.first().map_or("", |r| r.0.as_str())
                ),
            },
        }
    }
}
