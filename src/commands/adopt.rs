//! `pg-backups adopt [FOLDER|--all] [--source …]`: folders made by the original backup
//! scripts (`pg_dumpall | gzip`, `pg_dump --create | gzip`, no manifest) become backups.
//!
//! Every file of the folder is read to its end where it lies (local, S3 or remote): gzip
//! decodes, the SQL ends with pg_dump's or pg_dumpall's completion line, and it holds nothing
//! pg_dump never writes. Only then is a manifest written for it (marked `adopted`; status
//! `complete`, or `partial` without its cluster file), after which list, verify, ship, prune
//! and restore treat the folder like any backup. A folder with one bad file is not adopted,
//! and says which file.

use chrono::Utc;
use serde::Serialize;

use crate::backup::verify::{DumpHeader, scan_stream};
use crate::backup::{
    Adopted, CLUSTER_FILE, FileEntry, FileKind, FolderName, GLOBALS_FILE, MANIFEST_FORMAT,
    Manifest, ManifestStatus, ServerInfo, is_safe_file_name,
};
use crate::cli::AdoptArgs;
use crate::config::{Config, ConfigError, SourceKind, parse_sources};
use crate::error::{Error, ErrorInfo, Result};
use crate::lock::RunLock;
use crate::report::Outcome;
use crate::storage::{FolderEntry, Storage, StorageError};

#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum AdoptResult {
    Adopted,
    /// It has a manifest already.
    AlreadyABackup,
    Refused,
}

#[derive(Debug, Serialize)]
struct FolderAdoption {
    folder: String,
    result: AdoptResult,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    databases: Vec<String>,
    files: usize,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorInfo>,
}

#[derive(Debug, Serialize)]
struct DestinationAdoption {
    destination: SourceKind,
    location: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorInfo>,
    folders: Vec<FolderAdoption>,
}

#[derive(Debug, Serialize)]
struct AdoptDetails {
    destinations: Vec<DestinationAdoption>,
    adopted: usize,
}

pub fn run(cfg: &Config, args: &AdoptArgs) -> Result<Outcome> {
    let wanted = wanted_folder(args)?;
    let only = parse_sources(&args.source)?;
    let destinations = crate::storage::open_all(cfg, only)?;
    // Manifests appear: no prune or ship may run meanwhile.
    let _lock = if cfg.backup_dir.is_dir() {
        Some(RunLock::acquire(&cfg.backup_dir, "adopt")?)
    } else {
        None
    };
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut adopted = 0;
    let mut any_ok = false;
    for dest in &destinations {
        let mut d = DestinationAdoption {
            destination: dest.kind(),
            location: dest.location(),
            error: None,
            folders: Vec::new(),
        };
        let entries = match dest.list() {
            Ok(e) => e,
            // Nothing there (no BACKUP_DIR, no remote root yet): nothing to adopt.
            Err(StorageError::NotFound(_)) => Vec::new(),
            Err(e) => {
                let info = Error::from(e).info();
                errors.push(info.clone());
                d.error = Some(info);
                out.push(d);
                continue;
            }
        };
        any_ok = true;
        for entry in &entries {
            let Some(adoption) = consider(dest.as_ref(), entry, wanted.as_ref()) else {
                continue;
            };
            if adoption.result == AdoptResult::Adopted {
                adopted += 1;
            }
            if let Some(e) = &adoption.error {
                errors.push(e.clone());
            }
            d.folders.push(adoption);
        }
        out.push(d);
    }
    if let Some(w) = &wanted
        && out.iter().all(|d| d.folders.is_empty())
        && errors.is_empty()
    {
        return Err(Error::NotFound(format!(
            "no destination holds a folder {w} (looked at {})",
            out.iter()
                .map(|d| d.destination.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(Outcome::from_parts(
        errors,
        any_ok || adopted > 0,
        AdoptDetails {
            destinations: out,
            adopted,
        },
    ))
}

/// The one folder asked for, or `None` for `--all`; exactly one of the two is required.
fn wanted_folder(args: &AdoptArgs) -> Result<Option<FolderName>> {
    match (&args.folder, args.all) {
        (Some(f), false) => Ok(Some(FolderName::parse(f).ok_or_else(|| {
            ConfigError::Invalid {
                var: "FOLDER",
                value: f.clone(),
                reason: "expected a folder name like 20251005_120000 (UTC, YYYYMMDD_HHMMSS)".into(),
            }
        })?)),
        (None, true) => Ok(None),
        _ => Err(ConfigError::Conflict(
            "name one FOLDER to adopt, or --all for every folder the scripts made".into(),
        )
        .into()),
    }
}

/// What becomes of one folder at a destination, or `None` when it is none of this run's
/// business (not the one asked for, a work folder, or with `--all` a backup already or a
/// folder the scripts did not make).
fn consider(
    dest: &dyn Storage,
    entry: &FolderEntry,
    wanted: Option<&FolderName>,
) -> Option<FolderAdoption> {
    let folder = entry.folder.as_ref()?;
    if wanted.is_some_and(|w| w != folder) || entry.work_folder {
        return None;
    }
    if entry.status.has_manifest() {
        return wanted.is_some().then(|| FolderAdoption {
            folder: folder.to_string(),
            result: AdoptResult::AlreadyABackup,
            databases: Vec::new(),
            files: 0,
            bytes: 0,
            error: None,
        });
    }
    if !entry.made_by_scripts() {
        return wanted.is_some().then(|| {
            refused(
                folder,
                Error::Data(format!(
                    "{folder} at {} holds files the backup scripts never wrote ({}): not adopted",
                    dest.kind(),
                    entry
                        .files
                        .iter()
                        .map(|(f, _)| f.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            )
        });
    }
    tracing::info!(destination = %dest.kind(), folder = %folder, "checking a folder the backup scripts made");
    Some(match adopt_folder(dest, folder, entry) {
        Ok(manifest) => FolderAdoption {
            folder: folder.to_string(),
            result: AdoptResult::Adopted,
            databases: manifest.databases.clone(),
            files: manifest.files.len(),
            bytes: manifest.total_bytes(),
            error: None,
        },
        Err(e) => {
            tracing::error!(destination = %dest.kind(), folder = %folder, "{e}");
            refused(folder, e)
        }
    })
}

fn refused(folder: &FolderName, e: Error) -> FolderAdoption {
    FolderAdoption {
        folder: folder.to_string(),
        result: AdoptResult::Refused,
        databases: Vec::new(),
        files: 0,
        bytes: 0,
        error: Some(e.info()),
    }
}

fn kind_of(file: &str) -> FileKind {
    match file {
        CLUSTER_FILE => FileKind::Cluster,
        GLOBALS_FILE => FileKind::Globals,
        _ => FileKind::Database,
    }
}

/// Checks every file of a scripts-made folder where it lies and writes its manifest.
fn adopt_folder(dest: &dyn Storage, folder: &FolderName, entry: &FolderEntry) -> Result<Manifest> {
    let mut files = Vec::new();
    let mut databases: Vec<String> = Vec::new();
    let mut header = DumpHeader::default();
    let mut names: Vec<&str> = entry.files.iter().map(|(f, _)| f.as_str()).collect();
    // The cluster and globals first: their headers say which server made the backup.
    names.sort_by_key(|n| (kind_of(n) == FileKind::Database, n.to_string()));
    for name in names {
        if !is_safe_file_name(name) {
            return Err(Error::Data(format!(
                "{folder}/{name}: pg-backups cannot use this file name (only letters, digits, \
                 '_', '.', '-' and '%'): rename it to postgres_db_<name with other bytes as %XX>.sql.gz \
                 (see README, \"Coming from the backup scripts\"), then adopt again"
            )));
        }
        let kind = kind_of(name);
        let reader = dest.open(folder, name)?;
        let scanned = scan_stream(reader, name, kind)?;
        let database = match kind {
            FileKind::Database => {
                let Some(db) = scanned.header.connect.clone() else {
                    return Err(Error::Data(format!(
                        "{folder}/{name}: not made by pg_dump --create (it never connects to \
                         its database), so a restore could not tell where it goes: not adopted"
                    )));
                };
                if !databases.contains(&db) {
                    databases.push(db.clone());
                }
                Some(db)
            }
            _ => None,
        };
        if kind == FileKind::Cluster {
            // The cluster file's databases: a cluster restore may connect to these.
            for db in &scanned.header.connects {
                if !databases.contains(db) {
                    databases.push(db.clone());
                }
            }
        }
        if header.server_version.is_none() {
            header.server_version = scanned.header.server_version.clone();
        }
        if header.dump_version.is_none() && kind == FileKind::Database {
            header.dump_version = scanned.header.dump_version.clone();
        }
        files.push(FileEntry {
            name: name.to_string(),
            kind,
            database,
            bytes: scanned.bytes,
            sha256: scanned.sha256,
            sql_bytes: scanned.sql_bytes,
            content_sha256: None,
            tables: None,
        });
    }
    crate::backup::cluster::cluster_order(&mut databases);
    let manifest = scripts_manifest(folder, files, databases, header);
    dest.put_manifest(folder, &manifest)?;
    Ok(manifest)
}

/// The manifest of a scripts-made folder whose files were all read to their end.
fn scripts_manifest(
    folder: &FolderName,
    files: Vec<FileEntry>,
    databases: Vec<String>,
    header: DumpHeader,
) -> Manifest {
    // Without its cluster file a folder cannot restore the whole cluster: it is a backup,
    // but not a complete one (KEEP_LAST, check and `restore latest` count complete ones).
    let has_cluster = files.iter().any(|f| f.kind == FileKind::Cluster);
    let status = match has_cluster {
        true => ManifestStatus::Complete,
        false => ManifestStatus::Partial,
    };
    let note = match has_cluster {
        true => {
            "made by the backup scripts; every file was read to its end (gzip, completion \
                 line, content) before this manifest was written"
        }
        false => {
            "made by the backup scripts, without its cluster file (postgres_cluster.sql.gz), \
                  so adopted partial: its globals and database files were read to their end \
                  and restore one by one"
        }
    };
    let server_version = header.server_version.unwrap_or_default();
    Manifest {
        format: MANIFEST_FORMAT,
        tool: "pg-backups".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        folder: folder.to_string(),
        status,
        started_at: folder.time(),
        finished_at: folder.time(),
        server: ServerInfo {
            host: "unknown (made by the backup scripts)".into(),
            port: 0,
            version_num: version_num(&server_version),
            version: server_version,
        },
        pg_dump_version: header.dump_version.unwrap_or_default(),
        pg_dump_path: None,
        backup_format: Default::default(),
        compression: "gzip".into(),
        compression_level: 0,
        encryption: None,
        databases,
        files,
        failed: Vec::new(),
        adopted: Some(Adopted {
            adopted_at: Utc::now(),
            note: note.into(),
        }),
    }
}

/// `15.4` → 150004, as `server_version_num` says it (0 when unknown).
fn version_num(version: &str) -> u32 {
    let mut parts = version.split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts
        .next()
        .and_then(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap_or(0);
    major * 10_000 + minor
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_numbers_follow_server_version_num() {
        assert_eq!(super::version_num("15.4"), 150004);
        assert_eq!(super::version_num("17.10"), 170010);
        assert_eq!(super::version_num(""), 0);
    }
}
