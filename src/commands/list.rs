//! `pg-backups list`: every folder at each destination, with the same statuses everywhere.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cli::ListArgs;
use crate::config::{Config, parse_sources};
use crate::error::{ErrorInfo, Result};
use crate::report::Outcome;
use crate::storage::{FolderEntry, FolderStatus};
use crate::time::format_time;

#[derive(Debug, Serialize)]
pub struct FolderView {
    pub folder: String,
    pub status: FolderStatus,
    pub pinned: bool,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_databases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl FolderView {
    pub fn new(e: &FolderEntry, now: DateTime<Utc>) -> FolderView {
        let created = e.folder.as_ref().map(|f| f.time());
        FolderView {
            folder: e.name.clone(),
            status: e.status,
            pinned: e.pinned,
            bytes: e.size(),
            created_at: created.map(|t| format_time(&t)),
            age_seconds: created.map(|t| (now - t).num_seconds()),
            databases: e
                .manifest
                .as_ref()
                .map(|m| m.files.iter().filter_map(|f| f.database.clone()).collect())
                .unwrap_or_default(),
            failed_databases: e
                .manifest
                .as_ref()
                .map(|m| m.failed.iter().map(|f| f.database.clone()).collect())
                .unwrap_or_default(),
            note: e.note.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
struct SourceListing {
    source: String,
    location: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorInfo>,
    folders: Vec<FolderView>,
    complete: usize,
    total_bytes: u64,
}

#[derive(Debug, Serialize)]
struct ListDetails {
    sources: Vec<SourceListing>,
}

pub fn run(cfg: &Config, args: &ListArgs) -> Result<Outcome> {
    let only = parse_sources(&args.source)?;
    let destinations = crate::storage::open_all(cfg, only)?;
    let now = Utc::now();
    let mut listings = Vec::new();
    let mut errors = Vec::new();
    let mut any_ok = false;
    for dest in &destinations {
        match dest.list() {
            Ok(entries) => {
                any_ok = true;
                let folders: Vec<FolderView> =
                    entries.iter().map(|e| FolderView::new(e, now)).collect();
                listings.push(SourceListing {
                    source: dest.kind().to_string(),
                    location: dest.location(),
                    error: None,
                    complete: folders
                        .iter()
                        .filter(|f| f.status == FolderStatus::Complete)
                        .count(),
                    total_bytes: folders.iter().map(|f| f.bytes).sum(),
                    folders,
                });
            }
            Err(e) => {
                let info = crate::error::Error::from(e).info();
                errors.push(info.clone());
                listings.push(SourceListing {
                    source: dest.kind().to_string(),
                    location: dest.location(),
                    error: Some(info),
                    folders: Vec::new(),
                    complete: 0,
                    total_bytes: 0,
                });
            }
        }
    }
    Ok(Outcome::from_parts(
        errors,
        any_ok,
        ListDetails { sources: listings },
    ))
}
