//! `pg-backups prune`: retention at local, S3 and remote, planned first (see `retention`),
//! then carried out, or only printed with `--dry-run`. A destination that cannot be reached
//! is left untouched while the others are pruned; local folders are kept while a destination
//! lacks them, or while it cannot be asked.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::cli::PruneArgs;
use crate::config::{Config, RetentionRules, SourceKind};
use crate::error::{Error, ErrorInfo, Result};
use crate::lock::RunLock;
use crate::report::{Outcome, Status};
use crate::retention::{self, Decision};
use crate::storage::local::{DeleteHold, LocalStorage};
use crate::storage::{FolderEntry, Storage, StorageError};

#[derive(Debug, Serialize)]
struct Deleted {
    folder: String,
    status: crate::storage::FolderStatus,
    bytes: u64,
    reason: String,
}

#[derive(Debug, Serialize)]
struct Kept {
    folder: String,
    status: crate::storage::FolderStatus,
    bytes: u64,
    reasons: Vec<String>,
    /// S3 Object Lock still holds it: retention would delete it, the provider would refuse.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    locked: bool,
    /// The date the lock ends (none for a legal hold).
    #[serde(skip_serializing_if = "Option::is_none")]
    locked_until: Option<String>,
}

#[derive(Debug, Serialize)]
struct Failed {
    folder: String,
    error: ErrorInfo,
}

#[derive(Debug, Serialize)]
struct RetentionView {
    days: u32,
    keep_last: u32,
    keep_daily: u32,
    keep_weekly: u32,
    keep_monthly: u32,
}

#[derive(Debug, Serialize)]
struct DestinationPrune {
    destination: SourceKind,
    location: String,
    status: Status,
    retention: RetentionView,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted: Option<Vec<Deleted>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    would_delete: Option<Vec<Deleted>>,
    kept: Vec<Kept>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed: Vec<Failed>,
    bytes_freed: u64,
    /// `--dry-run`: what the deletions would free (the sizes `list` shows).
    #[serde(skip_serializing_if = "Option::is_none")]
    would_free: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    aborted_uploads: Vec<String>,
    /// The newest complete backup left at this destination, for monitoring.
    #[serde(skip_serializing_if = "Option::is_none")]
    newest_complete: Option<String>,
    /// Folders whose deletion the provider refused under Object Lock (kept, not failed).
    #[serde(skip)]
    locked_on_delete: Vec<Kept>,
}

#[derive(Debug, Serialize)]
struct PruneDetails {
    dry_run: bool,
    destinations: Vec<DestinationPrune>,
}

pub fn run(cfg: &Config, args: &PruneArgs) -> Result<Outcome> {
    cfg.s3.get()?;
    cfg.rsync.get()?;
    // Without BACKUP_DIR there is no local lock to take (and nothing local to prune): S3 and
    // the remote host are still pruned, and local is reported as missing.
    let _lock = if cfg.backup_dir.is_dir() {
        Some(RunLock::acquire(&cfg.backup_dir, "prune")?)
    } else {
        tracing::warn!(
            "BACKUP_DIR {} does not exist: pruning the other destinations only",
            cfg.backup_dir.display()
        );
        None
    };
    run_at(cfg, args.dry_run, Utc::now())
}

/// The run with "now" given, so that tests and the plan never depend on the clock.
pub fn run_at(cfg: &Config, dry_run: bool, now: DateTime<Utc>) -> Result<Outcome> {
    let destinations = open_destinations(cfg)?;
    // List everything first: local retention depends on what the others hold.
    let listings = list_all(&destinations);
    let shipped = shipped_sets(&destinations, &listings);
    let not_shipped = |e: &FolderEntry| not_shipped_reason(&shipped, e);
    let run = Run {
        cfg,
        dry_run,
        now,
        not_shipped: &not_shipped,
    };

    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut any_ok = false;
    for (destination, listing) in destinations.iter().zip(listings) {
        let d = prune_destination(&run, destination, listing);
        // A destination counts as done when nothing failed there, or when something was
        // deleted all the same.
        match &d.error {
            None => any_ok = true,
            Some(e) => {
                errors.push(e.clone());
                if d.status != Status::Failed {
                    any_ok = true;
                }
            }
        }
        out.push(d);
    }
    Ok(Outcome::from_parts(
        errors,
        any_ok,
        PruneDetails {
            dry_run,
            destinations: out,
        },
    ))
}

/// What every destination's prune shares.
struct Run<'a> {
    cfg: &'a Config,
    dry_run: bool,
    now: DateTime<Utc>,
    /// For local folders: why a folder must stay because a destination lacks it.
    not_shipped: &'a dyn Fn(&FolderEntry) -> Option<String>,
}

/// Local first, then each enabled destination; one that does not open is still listed, with
/// why, so the others are pruned all the same.
fn open_destinations(cfg: &Config) -> Result<Vec<Destination>> {
    let local: Box<dyn Storage> = Box::new(LocalStorage::new(&cfg.backup_dir));
    // Local too without local copy: folders from before the switch still age out there
    // (and are kept until S3 has them).
    let mut destinations: Vec<Destination> =
        vec![(SourceKind::Local, Ok(local), cfg.local_retention)];
    if let Some(s3) = cfg.s3.get()? {
        destinations.push((
            SourceKind::S3,
            crate::storage::open(cfg, SourceKind::S3, true)
                .map_err(Error::from)
                .and_then(required),
            s3.retention,
        ));
    }
    if let Some(r) = cfg.rsync.get()? {
        destinations.push((
            SourceKind::Remote,
            crate::storage::open(cfg, SourceKind::Remote, true)
                .map_err(Error::from)
                .and_then(required),
            r.retention,
        ));
    }
    Ok(destinations)
}

fn list_all(destinations: &[Destination]) -> Vec<Result<Vec<FolderEntry>, Error>> {
    destinations
        .iter()
        .map(|(_, d, _)| match d {
            Ok(d) => d.list().map_err(Error::from),
            Err(e) => Err(Error::Internal(e.to_string())),
        })
        .collect()
}

/// For each destination but local, the backups it holds, or `None` when it could not be
/// listed (then nothing local may go on its account).
fn shipped_sets(
    destinations: &[Destination],
    listings: &[Result<Vec<FolderEntry>, Error>],
) -> Vec<(SourceKind, Option<HashSet<String>>)> {
    destinations
        .iter()
        .zip(listings)
        .skip(1)
        .map(|((kind, _, _), listing)| {
            let set = match listing {
                Ok(entries) => Some(
                    entries
                        .iter()
                        .filter(|e| e.status.has_manifest())
                        .map(|e| e.name.clone())
                        .collect(),
                ),
                // A remote root that does not exist yet holds nothing.
                Err(Error::Storage(StorageError::NotFound(_))) if *kind == SourceKind::Remote => {
                    Some(HashSet::new())
                }
                Err(_) => None,
            };
            (*kind, set)
        })
        .collect()
}

fn not_shipped_reason(
    shipped: &[(SourceKind, Option<HashSet<String>>)],
    e: &FolderEntry,
) -> Option<String> {
    let missing: Vec<String> = shipped
        .iter()
        .filter_map(|(kind, set)| match set {
            Some(s) if s.contains(&e.name) => None,
            Some(_) => Some(format!("not shipped to {kind}")),
            None => Some(format!("cannot check {kind}: it could not be listed")),
        })
        .collect();
    (!missing.is_empty()).then(|| missing.join("; "))
}

/// One destination: plan, hold, delete, clean up stale uploads, and say how it went.
fn prune_destination(
    run: &Run<'_>,
    (kind, storage, rules): &Destination,
    listing: Result<Vec<FolderEntry>, Error>,
) -> DestinationPrune {
    let mut d = DestinationPrune::new(*kind, storage, rules);
    let (storage, entries) = match (storage, listing) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) => {
            d.status = Status::Failed;
            d.error = Some(e.info());
            return d;
        }
        (Ok(_), Err(Error::Storage(StorageError::NotFound(_)))) if *kind == SourceKind::Remote => {
            // Nothing shipped there yet: nothing to prune.
            d.deleted = (!run.dry_run).then(Vec::new);
            d.would_delete = run.dry_run.then(Vec::new);
            return d;
        }
        (Ok(_), Err(e)) => {
            tracing::error!(destination = %kind, "{e}; nothing is deleted there");
            d.status = Status::Failed;
            d.error = Some(e.info());
            return d;
        }
    };
    let no_check = |_: &FolderEntry| -> Option<String> { None };
    let ctx = retention::Context {
        rules: *rules,
        now: run.now,
        not_shipped: if *kind == SourceKind::Local {
            run.not_shipped
        } else {
            &no_check
        },
        work_folders_are_leftovers: *kind == SourceKind::Local,
    };
    let mut plan = retention::plan(&entries, &ctx);
    let locked = keep_locked(storage.as_ref(), &mut plan, &entries, run.now);
    let holds = if *kind == SourceKind::Local && !run.dry_run {
        hold_local_deletions(&run.cfg.backup_dir, &mut plan)
    } else {
        Vec::new()
    };
    let deleted = carry_out(
        storage.as_ref(),
        *kind,
        &plan,
        &entries,
        run.dry_run,
        &mut d,
    );
    // Holds of folders that stayed are kept until this destination is done.
    let _still_held = release_holds(holds, &deleted);
    d.kept = kept(&plan, &locked);
    d.kept.append(&mut d.locked_on_delete);
    d.newest_complete = crate::storage::newest_complete(&entries, run.now).map(|e| e.name.clone());
    match storage.abort_stale_uploads(run.now - Duration::days(1), run.dry_run) {
        Ok(keys) => d.aborted_uploads = keys,
        Err(e) => {
            let info = Error::from(e).info();
            d.error.get_or_insert(info);
        }
    }
    settle(&mut d, deleted, run.dry_run);
    d
}

/// Folders the plan would delete whose objects S3 Object Lock still holds (the date read by
/// HEAD) stay, with the date: the provider would refuse. One that cannot be asked is left to
/// the deletion, which copes with a refusal all the same.
fn keep_locked(
    storage: &dyn Storage,
    plan: &mut retention::Plan,
    entries: &[FolderEntry],
    now: DateTime<Utc>,
) -> Vec<(String, crate::storage::ObjectLock)> {
    let mut locked = Vec::new();
    for item in plan
        .items
        .iter_mut()
        .filter(|i| i.decision == Decision::Delete)
    {
        let Some(entry) = entries.iter().find(|e| e.name == item.folder) else {
            continue;
        };
        match storage.object_lock(entry, now) {
            Ok(Some(lock)) => {
                item.decision = Decision::Keep;
                item.reasons = vec![lock.reason()];
                locked.push((item.folder.clone(), lock));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                folder = %item.folder,
                "cannot read its Object Lock ({e}); trying to delete it all the same"
            ),
        }
    }
    locked
}

/// A local folder that a restore is reading stays (its hold is released when the restore
/// ends); the others are held until they are gone, so no restore starts on one.
fn hold_local_deletions(
    backup_dir: &std::path::Path,
    plan: &mut retention::Plan,
) -> Vec<(String, DeleteHold)> {
    let local = LocalStorage::new(backup_dir);
    let mut holds = Vec::new();
    for item in plan
        .items
        .iter_mut()
        .filter(|i| i.decision == Decision::Delete)
    {
        let Some(folder) = crate::backup::FolderName::parse(&item.folder) else {
            continue;
        };
        match local.hold_for_delete(&folder) {
            Ok(Some(hold)) => holds.push((item.folder.clone(), hold)),
            Ok(None) => {
                item.decision = Decision::Keep;
                item.reasons = vec!["a restore is reading it".into()];
            }
            Err(e) => {
                item.decision = Decision::Keep;
                item.reasons = vec![format!("cannot take it from restores: {e}")];
            }
        }
    }
    holds
}

/// Deletes what the plan says (with `dry_run`, only lists it); failures go to `d.failed`.
fn carry_out(
    storage: &dyn Storage,
    kind: SourceKind,
    plan: &retention::Plan,
    entries: &[FolderEntry],
    dry_run: bool,
    d: &mut DestinationPrune,
) -> Vec<Deleted> {
    let mut deleted = Vec::new();
    let to_delete: Vec<&FolderEntry> = plan
        .deletions()
        .filter_map(|item| entries.iter().find(|e| e.name == item.folder))
        .collect();
    let results = if dry_run {
        Vec::new()
    } else {
        storage.delete_many(&to_delete)
    };
    for (i, item) in plan.deletions().enumerate() {
        let reason = item.reasons.join("; ");
        match results.get(i) {
            None if dry_run => deleted.push(Deleted {
                folder: item.folder.clone(),
                status: item.status,
                bytes: item.bytes,
                reason,
            }),
            Some(Ok(bytes)) => {
                tracing::info!(destination = %kind, folder = %item.folder, bytes, "deleted: {reason}");
                d.bytes_freed += bytes;
                deleted.push(Deleted {
                    folder: item.folder.clone(),
                    status: item.status,
                    bytes: *bytes,
                    reason,
                });
            }
            Some(Err(StorageError::Locked { lock, .. })) => {
                tracing::info!(destination = %kind, folder = %item.folder, "kept: {}", lock.reason());
                d.locked_on_delete.push(Kept {
                    folder: item.folder.clone(),
                    status: item.status,
                    bytes: item.bytes,
                    reasons: vec![lock.reason()],
                    locked: true,
                    locked_until: lock_date(*lock),
                });
            }
            Some(Err(e)) => {
                // The storage error as it is (not "internal error: …": it is not a bug).
                let info = ErrorInfo {
                    kind: e.kind().to_string(),
                    message: e.to_string(),
                    exit_code: e.exit_code(),
                };
                d.failed.push(Failed {
                    folder: item.folder.clone(),
                    error: info,
                });
            }
            None => {}
        }
    }
    deleted
}

/// Releases the holds of deleted folders; returns the others, still held.
fn release_holds(holds: Vec<(String, DeleteHold)>, deleted: &[Deleted]) -> Vec<DeleteHold> {
    let mut still_held = Vec::new();
    for (folder, hold) in holds {
        if deleted.iter().any(|d| d.folder == folder) {
            hold.release_deleted();
        } else {
            still_held.push(hold);
        }
    }
    still_held
}

fn kept(plan: &retention::Plan, locked: &[(String, crate::storage::ObjectLock)]) -> Vec<Kept> {
    plan.items
        .iter()
        .filter(|i| i.decision == Decision::Keep)
        .map(|item| {
            let lock = locked
                .iter()
                .find(|(f, _)| *f == item.folder)
                .map(|(_, l)| l);
            Kept {
                folder: item.folder.clone(),
                status: item.status,
                bytes: item.bytes,
                reasons: item.reasons.clone(),
                locked: lock.is_some(),
                locked_until: lock.and_then(|l| lock_date(*l)),
            }
        })
        .collect()
}

fn lock_date(lock: crate::storage::ObjectLock) -> Option<String> {
    lock.until
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The destination's status and first error, and what was (or would be) deleted.
fn settle(d: &mut DestinationPrune, deleted: Vec<Deleted>, dry_run: bool) {
    if let Some(first) = d.failed.first() {
        d.error.get_or_insert(first.error.clone());
    }
    if d.error.is_some() {
        d.status = if deleted.is_empty() {
            Status::Failed
        } else {
            Status::Partial
        };
    }
    if dry_run {
        d.would_free = Some(deleted.iter().map(|x| x.bytes).sum());
        d.would_delete = Some(deleted);
    } else {
        d.deleted = Some(deleted);
    }
}

impl DestinationPrune {
    /// Nothing done yet: ok, with the rules that apply there.
    fn new(
        kind: SourceKind,
        storage: &Result<Box<dyn Storage>, Error>,
        rules: &RetentionRules,
    ) -> DestinationPrune {
        DestinationPrune {
            destination: kind,
            location: storage.as_ref().map(|s| s.location()).unwrap_or_default(),
            status: Status::Ok,
            retention: RetentionView {
                days: rules.days,
                keep_last: rules.keep_last,
                keep_daily: rules.keep_daily,
                keep_weekly: rules.keep_weekly,
                keep_monthly: rules.keep_monthly,
            },
            error: None,
            deleted: None,
            would_delete: None,
            kept: Vec::new(),
            failed: Vec::new(),
            bytes_freed: 0,
            would_free: None,
            aborted_uploads: Vec::new(),
            newest_complete: None,
            locked_on_delete: Vec::new(),
        }
    }
}

/// A destination to prune: its kind, the opened storage (or why not), its rules.
type Destination = (SourceKind, Result<Box<dyn Storage>, Error>, RetentionRules);

fn required(d: Option<Box<dyn Storage>>) -> Result<Box<dyn Storage>, Error> {
    d.ok_or_else(|| Error::Internal("an enabled destination did not open".into()))
}
