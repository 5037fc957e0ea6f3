//! A dump without local copy (`BACKUP_LOCAL_COPY=false`): every file of the new folder is
//! streamed into S3 as `dump` writes it, and read back from there to assemble the cluster
//! file.
//!
//! A stream cannot be rewound, so a part lives in memory until S3 has it (the SDK retries it
//! from there): memory is the part size times the buffers of each open file, one filling and
//! up to [`PARTS_IN_FLIGHT`] on their way. An upload cannot change its part size once begun
//! (and R2 wants equal parts), so the size is planned up front from what the database holds
//! (`pg_database_size`): [`stream_part_size`]. A file that still outgrows `S3_MAX_PARTS`
//! parts fails alone, its upload aborted, never a truncated object. A file that fits in one
//! part goes up in one PUT with its SHA-256 in its metadata; every upload is checked by a
//! HEAD (size, and SHA-256 where the object carries it) before the file counts as written.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::PathBuf;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::upload_part::UploadPartError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use chrono::Utc;
use sha2::Digest;
use tokio::task::JoinHandle;

use super::S3Storage;
use super::upload::{MAX_PART, MIB};
use crate::backup::store::{FileStore, SinkFailed, StoredSink};
use crate::backup::{BackupError, FolderName};
use crate::storage::StorageError;

/// The smallest part we plan (S3's minimum is 5 MiB): fewer requests for small files.
const MIN_STREAM_PART: u64 = 16 * MIB;
/// How much larger than the database its file may turn out: a dump is usually far smaller
/// (no indexes, compressed), but hex `bytea` or already-compressed data can come close to
/// the size on disk, and the plan cannot be changed once the upload has begun.
const SIZE_MARGIN: u64 = 3;
/// Parts of one file on their way to S3 while the next one fills.
pub const PARTS_IN_FLIGHT: usize = 2;

/// The part size for a file of about `size_hint` bytes: `S3_PART_SIZE` when set, else the
/// smallest multiple of 1 MiB (at least 16 MiB, at most 5 GiB) with which
/// [`SIZE_MARGIN`] × `size_hint` fits in `max_parts` parts.
pub fn stream_part_size(size_hint: u64, configured: Option<u64>, max_parts: u64) -> u64 {
    if let Some(p) = configured {
        return p;
    }
    let needed = size_hint
        .saturating_mul(SIZE_MARGIN)
        .div_ceil(max_parts.max(1))
        .div_ceil(MIB)
        .saturating_mul(MIB);
    needed.clamp(MIN_STREAM_PART, MAX_PART)
}

/// One folder at S3, as the place a dump writes to.
pub struct S3FolderStore<'a> {
    storage: &'a S3Storage,
    folder: FolderName,
}

impl S3Storage {
    pub fn folder_store(&self, folder: &FolderName) -> S3FolderStore<'_> {
        S3FolderStore {
            storage: self,
            folder: folder.clone(),
        }
    }

    /// Whether any object of `folder` is there (complete or not): a new dump picks
    /// another name rather than mixing its files into it.
    pub fn holds_folder(&self, folder: &FolderName) -> Result<bool, StorageError> {
        let prefix = format!("{}{}/", self.root(), folder.as_str());
        Ok(!self.rt.block_on(self.list_objects(&prefix))?.is_empty())
    }

    /// Makes `folder` this run's: a marker object is written, then the folder is listed;
    /// anything there but the marker means another run (another pod or host writing to
    /// this prefix, whose lock is not ours) got there first, and the marker is taken back.
    /// S3 lists what was written before (strong read-after-write), so of two runs that
    /// race for a name at most one sees only its own marker. Returns the marker's name.
    pub fn claim_folder(&self, folder: &FolderName) -> Result<Option<String>, StorageError> {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let name = format!(
            "{}{:x}_{:x}",
            crate::backup::SCRATCH_PREFIXES[2],
            std::process::id(),
            nanos
        );
        let key = self.key(folder.as_str(), &name);
        let prefix = format!("{}{}/", self.root(), folder.as_str());
        self.rt.block_on(async {
            let empty_sha = hex::encode(sha2::Sha256::digest(b""));
            self.put_bytes(&key, Vec::new(), &empty_sha).await?;
            let taken = self
                .list_objects(&prefix)
                .await?
                .iter()
                .any(|o| o.key != key);
            if taken {
                self.remove_key(&key).await?;
                return Ok(None);
            }
            Ok(Some(name))
        })
    }

    /// Removes every object of a folder a failed dump left (its manifest was never
    /// written, so nothing of it counts as a backup); what cannot be removed now, `prune`
    /// removes as an incomplete folder.
    pub fn discard_folder(&self, folder: &FolderName) -> Result<(), StorageError> {
        let prefix = format!("{}{}/", self.root(), folder.as_str());
        self.rt.block_on(async {
            // On a versioned bucket a plain delete would leave every version billed.
            if self.is_versioned().await {
                return self.delete_folder_versions(folder).await.map(|_freed| ());
            }
            let keys: Vec<String> = self
                .list_objects(&prefix)
                .await?
                .into_iter()
                .map(|o| o.key)
                .collect();
            self.delete_keys(&keys).await
        })
    }
}

impl S3FolderStore<'_> {
    fn key(&self, name: &str) -> String {
        self.storage.key(self.folder.as_str(), name)
    }
}

impl FileStore for S3FolderStore<'_> {
    fn create(&self, name: &str, size_hint: u64) -> Result<Box<dyn StoredSink + '_>, BackupError> {
        let part_size = stream_part_size(size_hint, self.storage.part_size, self.storage.max_parts);
        let part_size = usize::try_from(part_size).unwrap_or(usize::MAX);
        Ok(Box::new(S3Sink {
            storage: self.storage,
            key: self.key(name),
            part_size,
            buf: Vec::new(),
            upload_id: None,
            next_part: 1,
            in_flight: VecDeque::new(),
            done: Vec::new(),
            finished: false,
        }))
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, BackupError> {
        self.storage
            .open_key(&self.key(name))
            .map_err(|e| BackupError::Read {
                path: self.display(name),
                source: std::io::Error::other(crate::backup::SourceLost(e.to_string())),
            })
    }

    fn remove(&self, name: &str) {
        let key = self.key(name);
        if let Err(e) = self.storage.rt.block_on(self.storage.remove_key(&key)) {
            tracing::warn!("could not remove {}: {e}", self.display(name).display());
        }
    }

    fn display(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("s3://{}/{}", self.storage.bucket, self.key(name)))
    }
}

type PartResult =
    Result<CompletedPart, SdkError<UploadPartError, aws_sdk_s3::config::http::HttpResponse>>;

/// One file on its way into S3.
struct S3Sink<'a> {
    storage: &'a S3Storage,
    key: String,
    part_size: usize,
    /// The part being filled.
    buf: Vec<u8>,
    /// Set once the file outgrew one part.
    upload_id: Option<String>,
    next_part: i32,
    in_flight: VecDeque<(i32, JoinHandle<PartResult>)>,
    done: Vec<CompletedPart>,
    finished: bool,
}

fn sink_error(e: &StorageError, only_this_file: bool) -> std::io::Error {
    std::io::Error::other(SinkFailed {
        message: e.to_string(),
        exit_code: e.exit_code(),
        only_this_file,
    })
}

impl S3Sink<'_> {
    /// Sends the full part and waits until at most [`PARTS_IN_FLIGHT`] are on their way.
    fn send_part(&mut self) -> std::io::Result<()> {
        let number = self.next_part;
        if u64::try_from(number).unwrap_or(u64::MAX) > self.storage.max_parts {
            let e = StorageError::Failed {
                destination: self.storage.location.clone(),
                detail: format!(
                    "{} outgrew {} parts of {} MiB, the most its upload can hold (the part size \
                     is planned from the database's size): set S3_PART_SIZE larger, or raise \
                     S3_MAX_PARTS if the provider allows",
                    self.key,
                    self.storage.max_parts,
                    self.part_size as u64 / MIB
                ),
            };
            return Err(sink_error(&e, true));
        }
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => self.start()?,
        };
        let body = std::mem::replace(&mut self.buf, Vec::with_capacity(self.part_size));
        let md5 = crate::storage::hash::md5_bytes(&body);
        let len = body.len() as i64;
        let request = self
            .storage
            .client
            .upload_part()
            .bucket(&self.storage.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .part_number(number)
            .content_md5(md5)
            .content_length(len)
            .body(ByteStream::from(body))
            .customize()
            .disable_payload_signing();
        let task = self.storage.rt.spawn(async move {
            let out = request.send().await?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build())
        });
        self.in_flight.push_back((number, task));
        self.next_part += 1;
        while self.in_flight.len() > PARTS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn start(&mut self) -> std::io::Result<String> {
        let created = self
            .storage
            .rt
            .block_on(self.storage.create_multipart(&self.key).send())
            .map_err(|e| {
                let e = self
                    .storage
                    .error(&format!("starting the upload of {}", self.key), e);
                sink_error(&e, false)
            })?;
        let id = created.upload_id().unwrap_or_default().to_string();
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    fn wait_oldest(&mut self) -> std::io::Result<()> {
        let Some((number, task)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let what = format!("uploading part {number} of {}", self.key);
        match self.storage.rt.block_on(task) {
            Ok(Ok(part)) => {
                self.done.push(part);
                Ok(())
            }
            Ok(Err(e)) => Err(sink_error(&self.storage.error(&what, e), false)),
            Err(e) => Err(sink_error(&super::client::join_error(&e), false)),
        }
    }

    /// The whole file in one PUT, with its SHA-256 in the metadata.
    fn put_whole(&mut self, sha256: &str) -> std::io::Result<()> {
        let body = std::mem::take(&mut self.buf);
        let md5 = crate::storage::hash::md5_bytes(&body);
        let len = body.len() as i64;
        let request = self
            .storage
            .put_object(&self.key)
            .content_md5(md5)
            .content_length(len)
            .metadata("sha256", sha256)
            .body(ByteStream::from(body))
            .customize()
            .disable_payload_signing();
        self.storage
            .rt
            .block_on(request.send())
            .map(|_| ())
            .map_err(|e| {
                let e = self.storage.error(&format!("uploading {}", self.key), e);
                sink_error(&e, false)
            })
    }

    fn complete(&mut self, upload_id: &str) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        let request = self
            .storage
            .client
            .complete_multipart_upload()
            .bucket(&self.storage.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        self.storage
            .rt
            .block_on(request.send())
            .map(|_| ())
            .map_err(|e| {
                let e = self
                    .storage
                    .error(&format!("completing the upload of {}", self.key), e);
                sink_error(&e, false)
            })
    }

    /// A HEAD: the object is there with every byte (and the SHA-256 it carries, if any).
    fn confirm(&self, sha256: &str, bytes: u64) -> std::io::Result<()> {
        let found = self
            .storage
            .rt
            .block_on(self.storage.head(&self.key))
            .map_err(|e| sink_error(&e, false))?;
        let problem = match found {
            Some((size, sha)) if size == bytes && sha.as_deref().is_none_or(|s| s == sha256) => {
                return Ok(());
            }
            Some((size, sha)) => format!(
                "{} arrived with {size} bytes and SHA-256 {} instead of {bytes} bytes and {sha256}",
                self.key,
                sha.unwrap_or_else(|| "(not recorded)".into())
            ),
            None => format!("{} is missing right after its upload", self.key),
        };
        let e = StorageError::Failed {
            destination: self.storage.location.clone(),
            detail: problem,
        };
        Err(sink_error(&e, false))
    }
}

impl Write for S3Sink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full part goes only once more bytes come: a file that fits in one part is
        // sent whole, with its SHA-256, by `commit`.
        if self.buf.len() >= self.part_size {
            self.send_part()?;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.part_size);
        }
        let n = (self.part_size - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl StoredSink for S3Sink<'_> {
    fn commit(mut self: Box<Self>, sha256: &str, bytes: u64) -> std::io::Result<()> {
        match self.upload_id.clone() {
            None => self.put_whole(sha256)?,
            Some(id) => self.complete(&id)?,
        }
        self.finished = true;
        self.confirm(sha256, bytes)
    }
}

impl Drop for S3Sink<'_> {
    /// A file that was not committed leaves no upload behind (the provider would bill for
    /// its parts): parts on their way are dropped and the upload aborted.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        for (_, task) in self.in_flight.drain(..) {
            task.abort();
        }
        if let Some(id) = self.upload_id.take() {
            self.storage.rt.block_on(self.storage.abort(&self.key, &id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_planned_from_the_database_size_with_a_wide_margin() {
        let gib = 1024 * MIB;
        // Small databases: the 16 MiB floor.
        assert_eq!(stream_part_size(0, None, 10_000), 16 * MIB);
        assert_eq!(stream_part_size(10 * gib, None, 10_000), 16 * MIB);
        // 100 GiB with the default 10,000 parts: 31 MiB parts hold 300 GiB.
        let p = stream_part_size(100 * gib, None, 10_000);
        assert_eq!(p, 31 * MIB);
        assert!(p * 10_000 >= 3 * 100 * gib);
        // A provider with 1,000 parts gets larger parts; 5 GiB at most.
        assert_eq!(stream_part_size(100 * gib, None, 1_000), 308 * MIB);
        assert_eq!(stream_part_size(100_000 * gib, None, 1_000), MAX_PART);
        // S3_PART_SIZE wins.
        assert_eq!(stream_part_size(100 * gib, Some(8 * MIB), 10_000), 8 * MIB);
    }
}
