//! `pg-backups verify [FOLDER|latest] [--source …] [--restore-test]`: is this backup intact?
//! Every file's size and SHA-256 against the manifest, every gzip stream decoded to its end,
//! every dump ending with its completion line; files stream from S3 and remote without
//! staging. `--restore-test` also restores each database file into a scratch database on the
//! server, counts its tables and rows, and drops it again (also on failure or Ctrl-C): the
//! monthly restore test the old README asked operators to do by hand.

use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::backup::codec::FileCodec;
use crate::backup::verify::{Content, Readers, check_stream};
use crate::backup::{FileEntry, FileKind, FolderName, Manifest};
use crate::cli::VerifyArgs;
use crate::config::{Config, SourceKind, validate_folder_arg};
use crate::error::{Error, ErrorInfo, Result};
use crate::pg::PgTools;
use crate::report::Outcome;
use crate::restore::drill::{Drill, RestoreTest};
use crate::restore::plan::archive_major;
use crate::restore::source::resolve;
use crate::storage::Storage;

#[derive(Debug, Serialize)]
struct FileCheck {
    file: String,
    kind: FileKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    bytes: u64,
    sql_bytes: u64,
    ok: bool,
    /// How far the content was checked: `checked`, `not_decrypted`, `no_pg_restore`.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Content>,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorInfo>,
}

#[derive(Debug, Serialize)]
struct VerifyDetails {
    folder: String,
    source: SourceKind,
    location: String,
    backup_status: crate::backup::ManifestStatus,
    files: Vec<FileCheck>,
    bytes: u64,
    /// Whether every file's content was read (false: encrypted without AGE_IDENTITY_FILE).
    content_checked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_test: Option<Vec<RestoreTest>>,
    /// Which psql ran the restore test.
    #[serde(skip_serializing_if = "Option::is_none")]
    psql: Option<String>,
}

pub fn run(cfg: &Config, args: &VerifyArgs) -> Result<Outcome> {
    let source = source_name(cfg, args);
    let outcome = check_and_drill(cfg, args, source);
    if args.restore_test {
        record_drill(cfg, source, &outcome);
    }
    outcome
}

/// `--source`, else where the backups are: local, or S3 when dump keeps no local copy.
fn source_name<'a>(cfg: &Config, args: &'a VerifyArgs) -> &'a str {
    match args.source.as_deref() {
        Some(s) => s,
        None if !cfg.local_copy => "s3",
        None => "local",
    }
}

/// A drill's result goes into `BACKUP_DIR/.pg-backups-drill.json` for `check` (a log that
/// cannot be written is a warning: the drill's own result stands).
fn record_drill(cfg: &Config, source: &str, outcome: &Result<Outcome>) {
    let (ok, details) = match outcome {
        Ok(o) => (o.exit_code == 0, Some(&o.details)),
        Err(_) => (false, None),
    };
    let tests = details
        .and_then(|d| d.get("restore_test"))
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let sum = |key: &str| tests.iter().filter_map(|t| t[key].as_u64()).sum::<u64>();
    let run = crate::restore::drill::DrillRun {
        finished_at: chrono::Utc::now(),
        folder: details
            .and_then(|d| d.get("folder"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string(),
        source: source.to_string(),
        ok,
        databases: tests.len(),
        tables: sum("tables"),
        rows: sum("rows"),
    };
    if let Err(e) = crate::restore::drill::DrillLog::record(&cfg.backup_dir, run) {
        tracing::warn!(
            "could not record the drill in {}: {e}; `check` with DRILL_MAX_AGE will not see it",
            cfg.backup_dir.display()
        );
    }
}

fn check_and_drill(cfg: &Config, args: &VerifyArgs, source: &str) -> Result<Outcome> {
    let jobs = crate::config::parse_jobs("RESTORE_JOBS", &args.jobs)?;
    let folder_arg = validate_folder_arg("FOLDER", &args.folder)?;
    let source = SourceKind::parse("--source", source)?;
    let storage = crate::storage::open(cfg, source, true)?
        .ok_or_else(|| Error::Internal("source did not open".into()))?;
    let (folder, manifest) = resolve(storage.as_ref(), &folder_arg)?;
    tracing::info!(folder = %folder, source = %source, files = manifest.files.len(), "verifying");
    consistent_encryption(&manifest)?;
    // A custom archive is read through pg_restore: the newest one reads every older archive.
    let toolsets = crate::pg::toolset::discover(&cfg.pg.bin_dirs);
    let pg_restore = crate::pg::toolset::newest(&toolsets).map(|t| match &t.dir {
        Some(d) => d.join("pg_restore"),
        None => std::path::PathBuf::from("pg_restore"),
    });
    let readers = Readers {
        keys: cfg.decryption.as_deref(),
        pg_restore: pg_restore.as_deref(),
        archive_list_only: false,
        databases: Some(&manifest.databases),
    };

    // Two files at a time, largest first: the cluster file and the rest of the folder.
    let mut order: Vec<&FileEntry> = manifest.files.iter().collect();
    order.sort_by_key(|f| std::cmp::Reverse(f.bytes));
    let queue = Mutex::new(order.into_iter().collect::<std::collections::VecDeque<_>>());
    let results: Mutex<Vec<FileCheck>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                    let Some(entry) = next else { break };
                    let check = check_file(storage.as_ref(), &folder, entry, readers);
                    if let Ok(mut r) = results.lock() {
                        r.push(check);
                    }
                }
            });
        }
    });
    let mut files = results.into_inner().unwrap_or_default();
    let order_of = |name: &str| manifest.files.iter().position(|f| f.name == name);
    files.sort_by_key(|f| order_of(&f.file));
    let errors: Vec<ErrorInfo> = files.iter().filter_map(|f| f.error.clone()).collect();
    crate::signals::check()?;

    let not_decrypted = files
        .iter()
        .any(|f| f.content == Some(Content::NotDecrypted));
    let mut details = VerifyDetails {
        folder: folder.to_string(),
        source,
        location: storage.location(),
        backup_status: manifest.status,
        bytes: files.iter().map(|f| f.bytes).sum(),
        content_checked: files.iter().all(|f| f.content == Some(Content::Checked)),
        note: not_decrypted.then(|| {
            "the backup is encrypted and AGE_IDENTITY_FILE is not set: the stored bytes were \
             checked (sizes, SHA-256), the content was not decrypted"
                .to_string()
        }),
        files,
        restore_test: None,
        psql: None,
    };
    if !errors.is_empty() {
        return Ok(Outcome::failed(errors[0].clone(), details));
    }
    if !args.restore_test {
        return Ok(Outcome::ok(details));
    }
    let (psql, tests) = drill(cfg, storage.as_ref(), &folder, &manifest, jobs)?;
    details.psql = Some(psql);
    let test_errors: Vec<ErrorInfo> = tests.iter().filter_map(|t| t.error.clone()).collect();
    details.restore_test = Some(tests);
    let ok = test_errors.is_empty();
    Ok(Outcome::from_parts(test_errors, ok, details))
}

/// `--restore-test`: every database file restored into a scratch database; returns which
/// psql ran it and what each database gave.
fn drill(
    cfg: &Config,
    storage: &dyn Storage,
    folder: &FolderName,
    manifest: &Manifest,
    jobs: u32,
) -> Result<(String, Vec<RestoreTest>)> {
    if manifest.encryption.is_some() && cfg.decryption.is_none() {
        return Err(crate::backup::BackupError::KeyMissing {
            file: manifest.folder.clone(),
        }
        .into());
    }
    let mut tools = PgTools::new(&cfg.pg)?;
    let server = tools.server_version()?;
    // A custom archive needs a pg_restore at least as new as the pg_dump that made it.
    let archive_major = match manifest.backup_format {
        crate::backup::codec::Format::Custom => archive_major(manifest),
        crate::backup::codec::Format::Plain => 0,
    };
    let psql = tools.use_for_restore(&server, archive_major)?;
    tools.require_restrict()?;
    let drill = Drill {
        tools: &tools,
        storage,
        folder,
        keys: cfg.decryption.as_deref(),
        server_major: server.major(),
        jobs,
    };
    let mut tests = Vec::new();
    for entry in manifest
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Database)
    {
        crate::signals::check()?;
        tests.push(drill.database(entry));
    }
    let psql = format!("{} ({})", psql.text, tools.program("psql").display());
    Ok((psql, tests))
}

/// Every file of a backup is encrypted, or none is, as its manifest says: a folder that mixes
/// them was altered.
fn consistent_encryption(manifest: &Manifest) -> Result<()> {
    let expected = manifest.encryption.is_some();
    for f in &manifest.files {
        let encrypted = FileCodec::of_name(&f.name).is_some_and(|c| c.encrypted);
        if encrypted != expected {
            return Err(Error::Data(format!(
                "backup {}: {} is {}encrypted but the backup {}: encrypted and clear files are \
                 never mixed by pg-backups, so the folder was altered",
                manifest.folder,
                f.name,
                if encrypted { "" } else { "not " },
                if expected { "is encrypted" } else { "is not" }
            )));
        }
    }
    Ok(())
}

fn check_file(
    storage: &dyn Storage,
    folder: &FolderName,
    entry: &FileEntry,
    readers: Readers<'_>,
) -> FileCheck {
    let started = Instant::now();
    let result = storage
        .open(folder, &entry.name)
        .map_err(Error::from)
        .and_then(|r| check_stream(r, entry, readers).map_err(Error::from));
    let seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    match result {
        Ok(c) => FileCheck {
            file: entry.name.clone(),
            kind: entry.kind,
            database: entry.database.clone(),
            bytes: c.bytes,
            sql_bytes: c.sql_bytes,
            ok: true,
            content: Some(c.content),
            seconds,
            error: None,
        },
        Err(e) => {
            tracing::error!(file = ?entry.name, "{e}");
            FileCheck {
                file: entry.name.clone(),
                kind: entry.kind,
                database: entry.database.clone(),
                bytes: entry.bytes,
                sql_bytes: 0,
                ok: false,
                content: None,
                seconds,
                error: Some(e.info()),
            }
        }
    }
}
