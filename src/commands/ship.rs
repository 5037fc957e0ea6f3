//! `pg-backups ship`: copy every local folder that has a manifest to each enabled destination
//! that lacks it (or holds it incomplete). Destinations are independent: one failing does not
//! stop the other, and the run is then `partial`. A second run transfers nothing.

use std::time::Instant;

use serde::Serialize;

use crate::backup::{FolderName, Manifest};
use crate::config::Config;
use crate::error::{Error, ErrorInfo, Result};
use crate::lock::RunLock;
use crate::report::Outcome;
use crate::storage::local::LocalStorage;
use crate::storage::{FolderEntry, Storage, StorageError};

#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ShipResult {
    Shipped,
    Skipped,
    Failed,
}

#[derive(Debug, Serialize)]
pub struct FolderShip {
    pub folder: String,
    pub result: ShipResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub files: u32,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

#[derive(Debug, Serialize)]
pub struct DestinationShip {
    pub destination: String,
    pub location: String,
    pub status: crate::report::Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    pub shipped: usize,
    pub skipped: usize,
    pub failed: usize,
    pub bytes: u64,
    pub folders: Vec<FolderShip>,
}

#[derive(Debug, Serialize)]
struct ShipDetails {
    local_folders: usize,
    destinations: Vec<DestinationShip>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

pub fn run(cfg: &Config) -> Result<Outcome> {
    // An enabled destination without what it needs stops the run before any work (78).
    cfg.s3.get()?;
    cfg.rsync.get()?;
    let local = LocalStorage::new(&cfg.backup_dir);
    let _lock = RunLock::acquire(&cfg.backup_dir, "ship")?;
    let mut folders: Vec<FolderEntry> = local
        .list()?
        .into_iter()
        .filter(|e| e.status.has_manifest() && !e.work_folder)
        .collect();
    // Newest first: the most recent backup leaves the machine first.
    folders.sort_by(|a, b| b.folder.cmp(&a.folder));

    let mut details = ShipDetails {
        local_folders: folders.len(),
        destinations: Vec::new(),
        note: None,
    };
    if !cfg.local_copy {
        // dump writes straight to S3 (and settings refuse rsync); what ship still does is
        // send the local folders made before the switch, so none is left behind.
        details.note = Some(format!(
            "BACKUP_LOCAL_COPY=false: dump writes every backup straight to S3; {} local \
             folder(s) from before are shipped",
            details.local_folders
        ));
    }
    let kinds = [
        crate::config::SourceKind::S3,
        crate::config::SourceKind::Remote,
    ];
    let mut errors = Vec::new();
    let mut any_ok = false;
    for kind in kinds {
        let dest = match crate::storage::open(cfg, kind, false) {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                let info = Error::from(e).info();
                errors.push(info.clone());
                details
                    .destinations
                    .push(failed_destination(kind.as_str(), "", info));
                continue;
            }
        };
        let d = ship_to(dest.as_ref(), &local, &folders);
        match &d.error {
            Some(e) => errors.push(e.clone()),
            None => any_ok = true,
        }
        if d.error.is_some() && d.shipped + d.skipped > 0 {
            any_ok = true;
        }
        details.destinations.push(d);
    }
    if details.destinations.is_empty() {
        details.note = Some("no destination is enabled: set S3_ENABLED or RSYNC_ENABLED".into());
    }
    Ok(Outcome::from_parts(errors, any_ok, details))
}

fn failed_destination(kind: &str, location: &str, error: ErrorInfo) -> DestinationShip {
    DestinationShip {
        status: crate::report::Status::Failed,
        error: Some(error),
        ..DestinationShip::empty(kind, location)
    }
}

impl DestinationShip {
    fn empty(kind: &str, location: &str) -> DestinationShip {
        DestinationShip {
            destination: kind.to_string(),
            location: location.to_string(),
            status: crate::report::Status::Ok,
            error: None,
            shipped: 0,
            skipped: 0,
            failed: 0,
            bytes: 0,
            folders: Vec::new(),
        }
    }
}

/// Ships the folders one destination lacks. An unreachable or refusing destination stops
/// after the first such error instead of timing out once per folder.
pub fn ship_to(
    dest: &dyn Storage,
    local: &LocalStorage,
    folders: &[FolderEntry],
) -> DestinationShip {
    let kind = dest.kind().to_string();
    let location = dest.location();
    // Nothing is written where the settings' promises cannot be kept (S3 Object Lock).
    if let Err(e) = dest.check_before_write() {
        return failed_destination(&kind, &location, Error::from(e).info());
    }
    let existing = match dest.list() {
        Ok(e) => e,
        // A remote root that does not exist yet simply holds nothing.
        Err(StorageError::NotFound(m)) if dest.kind() == crate::config::SourceKind::Remote => {
            tracing::info!("{m}; it will be created");
            Vec::new()
        }
        Err(e) => return failed_destination(&kind, &location, Error::from(e).info()),
    };
    let mut out = DestinationShip::empty(&kind, &location);
    for entry in folders {
        let Some(folder) = &entry.folder else {
            continue;
        };
        let Some(manifest) = &entry.manifest else {
            continue;
        };
        let there = existing.iter().find(|e| e.folder.as_ref() == Some(folder));
        if let Some(t) = there
            && t.status.has_manifest()
        {
            out.skipped += 1;
            out.folders.push(FolderShip {
                folder: folder.to_string(),
                result: ShipResult::Skipped,
                reason: Some(format!("already {}", status_word(t))),
                files: 0,
                bytes: 0,
                seconds: 0.0,
                mb_per_s: 0.0,
                error: None,
            });
            continue;
        }
        if crate::signals::interrupted() {
            let info = Error::Interrupted.info();
            out.error.get_or_insert(info);
            break;
        }
        let (shipped, stop) = ship_folder(dest, local, folder, manifest, there.is_some());
        match shipped.result {
            ShipResult::Shipped => {
                out.shipped += 1;
                out.bytes += shipped.bytes;
            }
            ShipResult::Failed => {
                out.failed += 1;
                if let Some(info) = &shipped.error {
                    out.error.get_or_insert(info.clone());
                }
            }
            ShipResult::Skipped => {}
        }
        out.folders.push(shipped);
        if stop {
            break;
        }
    }
    out.status = match (&out.error, out.shipped + out.skipped) {
        (None, _) => crate::report::Status::Ok,
        (Some(_), 0) => crate::report::Status::Failed,
        (Some(_), _) => crate::report::Status::Partial,
    };
    out
}

/// One folder to one destination, `completing` a copy that is there without its manifest.
/// Also says whether to give up on the destination (unreachable, or refusing us).
fn ship_folder(
    dest: &dyn Storage,
    local: &LocalStorage,
    folder: &FolderName,
    manifest: &Manifest,
    completing: bool,
) -> (FolderShip, bool) {
    let kind = dest.kind().to_string();
    let started = Instant::now();
    tracing::info!(destination = %kind, folder = %folder, "shipping");
    let bar =
        crate::progress::Bar::bytes(&format!("{folder} to {kind}"), Some(manifest.total_bytes()))
            .with_prefix("shipping");
    let result = dest.put_folder(&local.folder(folder), manifest, &bar.counter());
    drop(bar);
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(stats) => {
            let mb_per_s = if seconds > 0.0 {
                (stats.bytes as f64 / 1_000_000.0 / seconds * 10.0).round() / 10.0
            } else {
                0.0
            };
            tracing::info!(destination = %kind, folder = %folder, bytes = stats.bytes, seconds, "shipped");
            let shipped = FolderShip {
                folder: folder.to_string(),
                result: ShipResult::Shipped,
                reason: completing.then(|| "completing an incomplete copy".to_string()),
                files: stats.files,
                bytes: stats.bytes,
                seconds: (seconds * 1000.0).round() / 1000.0,
                mb_per_s,
                error: None,
            };
            (shipped, false)
        }
        Err(e) => {
            let stop = matches!(
                e,
                StorageError::Unreachable { .. } | StorageError::Denied { .. }
            );
            let info = Error::from(e).info();
            tracing::error!(destination = %kind, folder = %folder, "{}", info.message);
            let failed = FolderShip {
                folder: folder.to_string(),
                result: ShipResult::Failed,
                reason: None,
                files: 0,
                bytes: 0,
                seconds: (seconds * 1000.0).round() / 1000.0,
                mb_per_s: 0.0,
                error: Some(info),
            };
            (failed, stop)
        }
    }
}

fn status_word(e: &FolderEntry) -> &'static str {
    match e.status {
        crate::storage::FolderStatus::Complete => "complete there",
        crate::storage::FolderStatus::Partial => "there (partial backup)",
        _ => "there",
    }
}
