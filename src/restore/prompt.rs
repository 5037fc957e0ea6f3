//! The prompts of an interactive restore (`docker run -it … pg-backups-restore`), shown on
//! stderr only when stdin and stderr are terminals and an input is missing. Without a
//! terminal, a missing input is exit 64 naming the variable instead.

use chrono::Utc;
use inquire::{Confirm, Select, Text};

use crate::backup::{FileKind, Manifest};
use crate::config::{Config, RestoreType, SourceKind};
use crate::error::{Error, Result};
use crate::storage::{FolderStatus, Storage};

fn cancelled(e: inquire::InquireError) -> Error {
    match e {
        inquire::InquireError::OperationCanceled | inquire::InquireError::OperationInterrupted => {
            Error::Refused("restore cancelled at the prompt; nothing was changed".into())
        }
        other => Error::Internal(format!("the prompt failed: {other}")),
    }
}

pub fn source(cfg: &Config) -> Result<SourceKind> {
    // First what dump writes to: S3 when it keeps no local copy.
    let mut options = Vec::new();
    if cfg.s3.is_enabled() && !cfg.local_copy {
        options.push("s3");
    }
    options.push("local");
    if cfg.s3.is_enabled() && cfg.local_copy {
        options.push("s3");
    }
    if cfg.rsync.is_enabled() {
        options.push("remote");
    }
    let choice = Select::new("Restore from", options)
        .prompt()
        .map_err(cancelled)?;
    Ok(SourceKind::parse("RESTORE_SOURCE", choice)?)
}

pub fn folder(storage: &dyn Storage) -> Result<String> {
    let now = Utc::now();
    let entries = storage.list()?;
    let usable: Vec<_> = entries
        .iter()
        .filter(|e| e.status.has_manifest() && e.folder.is_some() && !e.work_folder)
        .collect();
    if usable.is_empty() {
        return Err(Error::NotFound(format!(
            "there is no backup at {} ({})",
            storage.kind(),
            storage.location()
        )));
    }
    let labels: Vec<String> = usable
        .iter()
        .map(|e| {
            let t = e.folder.as_ref().map(|f| f.time()).unwrap_or(now);
            let bytes = e.size();
            format!(
                "{}  {}  {:>9}  {}{}",
                e.name,
                t.format("%Y-%m-%d %H:%M UTC"),
                crate::human::age((now - t).num_seconds()) + " ago",
                crate::human::bytes(bytes),
                match (e.status, e.pinned) {
                    (FolderStatus::Partial, _) => "  (partial)",
                    (_, true) => "  (pinned)",
                    _ => "",
                }
            )
        })
        .collect();
    let choice = Select::new("Backup folder (newest first)", labels.clone())
        .with_page_size(12)
        .prompt()
        .map_err(cancelled)?;
    let index = labels.iter().position(|l| *l == choice).unwrap_or(0);
    Ok(usable[index].name.clone())
}

pub fn restore_type() -> Result<RestoreType> {
    let choice = Select::new(
        "What to restore",
        vec![
            "database  (one database)",
            "cluster   (roles, tablespaces and every database)",
            "globals   (roles and tablespaces only)",
        ],
    )
    .prompt()
    .map_err(cancelled)?;
    Ok(RestoreType::parse(
        choice.split_whitespace().next().unwrap_or(""),
    )?)
}

pub fn database(manifest: &Manifest) -> Result<String> {
    let names: Vec<String> = manifest
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Database)
        .filter_map(|f| f.database.clone())
        .collect();
    if names.is_empty() {
        return Err(Error::NotFound(format!(
            "backup {} holds no database files",
            manifest.folder
        )));
    }
    Select::new("Database", names).prompt().map_err(cancelled)
}

/// Consent to replace existing databases: the operator types the name (or `yes` for several).
pub fn confirm_drop(names: &[String], server: &str) -> Result<bool> {
    let expected = if names.len() == 1 {
        names[0].clone()
    } else {
        "yes".to_string()
    };
    let message = format!(
        "{} already exist{} on {server}. Type {} to DROP and replace {}",
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", "),
        if names.len() == 1 { "s" } else { "" },
        if names.len() == 1 {
            format!("the database name \"{expected}\"")
        } else {
            "yes".to_string()
        },
        if names.len() == 1 { "it" } else { "them" },
    );
    let answer = Text::new(&message).prompt().map_err(cancelled)?;
    // A name may itself start or end with spaces: typed exactly, it counts too.
    Ok(answer == expected || answer.trim() == expected)
}

pub fn proceed(summary: &str) -> Result<bool> {
    Confirm::new(summary)
        .with_default(false)
        .prompt()
        .map_err(cancelled)
}
