//! S3 Object Lock (DESIGN.md guarantee 12): the mode and retain-until date every object of a
//! folder is written with, the preflight that the bucket has Object Lock enabled, and reading
//! back how long a folder's objects are still held, so `prune` plans around them.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockLegalHoldStatus, ObjectLockMode};
use chrono::{DateTime, Duration, Utc};

use super::S3Storage;
use crate::backup::{FolderName, MANIFEST_FILE, PIN_FILE};
use crate::config::ConfigError;
use crate::storage::{FolderEntry, ObjectLock, StorageError};

/// The lock of one object: its mode and the date it ends.
pub(super) struct LockHeaders {
    pub mode: ObjectLockMode,
    pub until: aws_sdk_s3::primitives::DateTime,
}

impl S3Storage {
    /// The lock an object at `key` is written with: the folder's time (its UTC name) plus
    /// `S3_OBJECT_LOCK_DAYS`, so a folder shipped late or again ends on the same date.
    /// `None` when the lock is off, and for keys that are not data of a backup folder:
    /// - a key without a folder name has no time to count from; a lock with an end we
    ///   cannot justify would make an object nobody can delete, so we lock none;
    /// - the pin marker is a switch, not backup data: `pin --remove` must be able to take
    ///   it away, and locking it would protect nothing; the scratch files of a direct dump
    ///   are removed once the cluster file is assembled;
    /// - a date already past: S3 refuses a retain-until date in the past, and the lock
    ///   would be over anyway (an old folder shipped after the lock was switched on).
    pub(super) fn lock_for(&self, key: &str, now: DateTime<Utc>) -> Option<LockHeaders> {
        let lock = self.object_lock?;
        let until = self.folder_of_key(key)?.time() + Duration::days(i64::from(lock.days));
        if until <= now {
            return None;
        }
        Some(LockHeaders {
            mode: ObjectLockMode::from(lock.mode.as_str()),
            until: aws_sdk_s3::primitives::DateTime::from_secs(until.timestamp()),
        })
    }

    /// The folder of `<prefix><folder>/<file>`, when the file is one a lock applies to.
    fn folder_of_key(&self, key: &str) -> Option<FolderName> {
        let (folder, file) = key.strip_prefix(&self.root())?.split_once('/')?;
        if file.is_empty()
            || file.contains('/')
            || file == PIN_FILE
            || crate::backup::is_scratch_file_name(file)
        {
            return None;
        }
        FolderName::parse(folder)
    }

    /// With `S3_OBJECT_LOCK_MODE` set, the bucket must have Object Lock enabled (it can only
    /// be switched on for a bucket made with it, or on AWS afterwards with versioning):
    /// otherwise the run stops before writing anything, with what to do (78). Asked once per
    /// run. The direct `dump` to S3 calls this too (from async code inside this module:
    /// [`S3Storage::ensure_object_lock`], since this one blocks on the runtime).
    pub fn check_object_lock(&self) -> Result<(), StorageError> {
        self.rt.block_on(self.ensure_object_lock())
    }

    /// [`S3Storage::check_object_lock`], for async code of the S3 module.
    pub(super) async fn ensure_object_lock(&self) -> Result<(), StorageError> {
        let Some(lock) = self.object_lock else {
            return Ok(());
        };
        if self.lock_checked.get().is_some() {
            return Ok(());
        }
        if lock.days < self.retention_days {
            tracing::warn!(
                "S3_OBJECT_LOCK_DAYS={} is shorter than S3_RETENTION_DAYS={}: backups stay \
                 deletable for their last {} days at {}",
                lock.days,
                self.retention_days,
                self.retention_days - lock.days,
                self.location
            );
        }
        let asked = self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await;
        let said = match asked {
            Ok(out) => {
                let enabled = out
                    .object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled());
                if enabled == Some(&ObjectLockEnabled::Enabled) {
                    let _ = self.lock_checked.set(());
                    return Ok(());
                }
                "Object Lock is not enabled".to_string()
            }
            Err(SdkError::ServiceError(se))
                if matches!(
                    se.err().code(),
                    Some(
                        "ObjectLockConfigurationNotFoundError"
                            | "NotImplemented"
                            | "InvalidRequest"
                            | "InvalidBucketState"
                    )
                ) =>
            {
                se.err().code().unwrap_or_default().to_string()
            }
            Err(e) => {
                return Err(self.error("reading the bucket's Object Lock configuration", e));
            }
        };
        Err(StorageError::Config(ConfigError::Incomplete(format!(
            "S3_OBJECT_LOCK_MODE={} is set but bucket {} has no Object Lock ({said}): create a \
             bucket with Object Lock enabled (aws s3api create-bucket \
             --object-lock-enabled-for-bucket …) and point S3_BUCKET at it, or unset \
             S3_OBJECT_LOCK_MODE and S3_OBJECT_LOCK_DAYS",
            lock.mode.as_str(),
            self.bucket
        ))))
    }

    /// How long a folder is still held, read from one object's HEAD: the manifest (written
    /// with the same date as every file), else the first file of a folder without one.
    pub(super) async fn folder_lock(
        &self,
        entry: &FolderEntry,
        now: DateTime<Utc>,
    ) -> Result<Option<ObjectLock>, StorageError> {
        let Some(folder) = &entry.folder else {
            return Ok(None);
        };
        // Only a bucket that keeps versions can lock objects: elsewhere no HEAD per folder.
        if !self.is_versioned().await {
            return Ok(None);
        }
        let file = if entry.status.has_manifest() {
            MANIFEST_FILE
        } else {
            match entry.files.first() {
                Some((f, _)) => f.as_str(),
                None => return Ok(None),
            }
        };
        self.lock_of(&self.key(folder.as_str(), file), None, now)
            .await
    }

    /// The lock still holding one object (one version of it, when `version` is given).
    pub(super) async fn lock_of(
        &self,
        key: &str,
        version: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<ObjectLock>, StorageError> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await;
        let head = match head {
            Ok(h) => h,
            Err(SdkError::ServiceError(se)) if se.err().is_not_found() => return Ok(None),
            Err(e) => return Err(self.error(&format!("checking {key}"), e)),
        };
        let legal_hold =
            head.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On);
        let until = head
            .object_lock_retain_until_date()
            .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
            .filter(|t| *t > now);
        Ok((legal_hold || until.is_some()).then_some(ObjectLock { until, legal_hold }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{S3LockMode, S3ObjectLock};

    fn storage(prefix: &str, lock: Option<S3ObjectLock>) -> S3Storage {
        let cfg = crate::config::S3Config {
            bucket: "b".into(),
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            prefix: prefix.into(),
            force_path_style: true,
            credentials: Some(crate::config::S3Credentials::new("a", "s")),
            part_size: None,
            max_parts: 10_000,
            retention: crate::config::RetentionRules {
                days: 7,
                keep_last: 3,
                keep_daily: 0,
                keep_weekly: 0,
                keep_monthly: 0,
            },
            sse: None,
            storage_class: None,
            object_lock: lock,
        };
        S3Storage::new(&cfg).unwrap()
    }

    #[test]
    fn the_lock_ends_days_after_the_folder_time() {
        let lock = S3ObjectLock {
            mode: S3LockMode::Compliance,
            days: 30,
        };
        let s = storage("site/a", Some(lock));
        let now = "2025-10-06T00:00:00Z".parse().unwrap();
        let expected: DateTime<Utc> = "2025-11-04T12:00:00Z".parse().unwrap();
        for file in ["postgres_globals.sql.gz", "manifest.json", "x.dump.age"] {
            let h = s
                .lock_for(&format!("site/a/20251005_120000/{file}"), now)
                .unwrap();
            assert_eq!(h.mode, ObjectLockMode::Compliance);
            assert_eq!(h.until.secs(), expected.timestamp(), "{file}");
        }
        // No lock: outside the prefix, no folder name, the pin marker, a date gone by.
        for key in [
            "other/20251005_120000/manifest.json",
            "site/a/manifest.json",
            "site/a/notafolder/manifest.json",
            "site/a/20251005_120000/pinned",
            "site/a/20251005_120000/.section_0.sql.gz",
            "site/a/20251005_120000/",
        ] {
            assert!(s.lock_for(key, now).is_none(), "{key}");
        }
        let later = "2025-11-04T12:00:00Z".parse().unwrap();
        assert!(
            s.lock_for("site/a/20251005_120000/manifest.json", later)
                .is_none()
        );
        assert!(
            storage("", None)
                .lock_for("20251005_120000/manifest.json", now)
                .is_none()
        );
        assert!(
            storage("", Some(lock))
                .lock_for("20251005_120000/manifest.json", now)
                .is_some()
        );
    }
}
