//! `pg-backups pin FOLDER [--unpin]`: protect a folder (say, the one taken before a migration)
//! from every retention rule, at each destination that holds it. The pin is a small marker
//! beside the manifest; the manifest itself is never rewritten.

use serde::Serialize;

use crate::backup::FolderName;
use crate::cli::PinArgs;
use crate::config::{Config, ConfigError, SourceKind, parse_sources};
use crate::error::{Error, ErrorInfo, Result};
use crate::lock::RunLock;
use crate::report::Outcome;
use crate::storage::StorageError;

#[derive(Debug, Serialize)]
struct PinResult {
    destination: SourceKind,
    location: String,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorInfo>,
}

#[derive(Debug, Serialize)]
struct PinDetails {
    folder: String,
    pinned: bool,
    destinations: Vec<PinResult>,
}

pub fn run(cfg: &Config, args: &PinArgs) -> Result<Outcome> {
    let folder = FolderName::parse(&args.folder).ok_or_else(|| ConfigError::Invalid {
        var: "FOLDER",
        value: args.folder.clone(),
        reason: "expected a folder name like 20251005_120000 (UTC, YYYYMMDD_HHMMSS)".into(),
    })?;
    let only = parse_sources(&args.source)?;
    let destinations = crate::storage::open_all(cfg, only)?;
    // Pinning races with prune otherwise: take the same lock.
    let _lock = RunLock::acquire(
        &cfg.backup_dir,
        if args.unpin { "pin --unpin" } else { "pin" },
    )?;
    let pinned = !args.unpin;
    let mut results = Vec::new();
    let mut errors = Vec::new();
    let mut done = 0;
    for dest in &destinations {
        let (result, error) = match dest.set_pin(&folder, pinned) {
            Ok(()) => {
                done += 1;
                (if pinned { "pinned" } else { "unpinned" }, None)
            }
            Err(StorageError::NotFound(_)) => ("not there", None),
            Err(e) => {
                let info = Error::from(e).info();
                errors.push(info.clone());
                ("failed", Some(info))
            }
        };
        results.push(PinResult {
            destination: dest.kind(),
            location: dest.location(),
            result,
            error,
        });
    }
    if done == 0 && errors.is_empty() {
        return Err(Error::NotFound(format!(
            "no destination holds a backup {folder} (looked at {})",
            results
                .iter()
                .map(|r| r.destination.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(Outcome::from_parts(
        errors,
        done > 0,
        PinDetails {
            folder: folder.to_string(),
            pinned,
            destinations: results,
        },
    ))
}
