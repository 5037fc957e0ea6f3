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
use crate::restore::{SqlErrors, restore_database_file};
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
struct RestoreTest {
    database: String,
    scratch_database: String,
    tables: u64,
    rows: u64,
    errors: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    first_errors: Vec<String>,
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

/// Finds the folder (`latest` = the newest complete one) and its manifest at a source.
pub fn resolve(storage: &dyn Storage, folder: &str) -> Result<(FolderName, Manifest)> {
    let folder = if folder == "latest" {
        let entries = storage.list()?;
        crate::storage::newest_complete(&entries, chrono::Utc::now())
            .and_then(|e| e.folder.clone())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "there is no complete backup at {} ({})",
                    storage.kind(),
                    storage.location()
                ))
            })?
    } else {
        FolderName::parse(folder)
            .ok_or_else(|| Error::Internal(format!("unvalidated folder {folder}")))?
    };
    let manifest = storage.manifest(&folder)?.ok_or_else(|| {
        Error::NotFound(format!(
            "{} holds no backup {folder} (no manifest.json there); `pg-backups list --source {}` shows what it has",
            storage.location(),
            storage.kind()
        ))
    })?;
    Ok((folder, manifest))
}

pub fn run(cfg: &Config, args: &VerifyArgs) -> Result<Outcome> {
    let jobs = crate::config::parse_jobs("RESTORE_JOBS", &args.jobs)?;
    let folder_arg = validate_folder_arg("FOLDER", &args.folder)?;
    let source = SourceKind::parse("--source", &args.source)?;
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
    if manifest.encryption.is_some() && cfg.decryption.is_none() {
        return Err(crate::backup::BackupError::KeyMissing {
            file: manifest.folder.clone(),
        }
        .into());
    }
    let archive_major = if manifest.backup_format == crate::backup::codec::Format::Custom {
        crate::pg::ToolVersion::parse(&format!(
            "pg_dump (PostgreSQL) {}",
            manifest.pg_dump_version
        ))
        .map(|v| v.major)
        .unwrap_or(0)
    } else {
        0
    };
    let mut tools = PgTools::new(&cfg.pg)?;
    let server = tools.server_version()?;
    let psql = tools.use_for_restore(&server, archive_major)?;
    details.psql = Some(format!(
        "{} ({})",
        psql.text,
        tools.current().map(|t| t.path("psql")).unwrap_or_default()
    ));
    let mut tests = Vec::new();
    let mut test_errors = Vec::new();
    for entry in manifest
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Database)
    {
        crate::signals::check()?;
        let t = restore_test(
            storage.as_ref(),
            &tools,
            &folder,
            entry,
            server.major(),
            cfg,
            jobs,
        );
        if let Some(e) = &t.error {
            test_errors.push(e.clone());
        }
        tests.push(t);
    }
    details.restore_test = Some(tests);
    let ok = test_errors.is_empty();
    Ok(Outcome::from_parts(test_errors, ok, details))
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

/// A scratch name for a restore test: recognisable, unique, and within 63 bytes.
fn scratch_name(database: &str) -> String {
    let mut clean: String = database
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    clean.truncate(30);
    let random: u32 = {
        let mut bytes = [0u8; 4];
        let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| {
            use std::io::Read;
            f.read_exact(&mut bytes)
        });
        u32::from_le_bytes(bytes) ^ std::process::id()
    };
    format!("pgb_verify_{clean}_{random:08x}")
}

fn restore_test(
    storage: &dyn Storage,
    tools: &PgTools,
    folder: &FolderName,
    entry: &FileEntry,
    server_major: u32,
    cfg: &Config,
    jobs: u32,
) -> RestoreTest {
    let database = entry.database.clone().unwrap_or_default();
    let scratch = scratch_name(&database);
    let started = Instant::now();
    let mut test = RestoreTest {
        database: database.clone(),
        scratch_database: scratch.clone(),
        tables: 0,
        rows: 0,
        errors: 0,
        first_errors: Vec::new(),
        seconds: 0.0,
        error: None,
    };
    // Dropped when this function returns, whatever happened (a signal included).
    let guard = crate::restore::ScratchDatabase::new(tools, &scratch, server_major);
    let result = (|| -> Result<SqlErrors> {
        let work = tempfile::Builder::new()
            .prefix("pg-backups-verify-")
            .tempdir()
            .map_err(|e| crate::backup::BackupError::CreateFolder {
                path: std::env::temp_dir(),
                source: e,
            })?;
        let file = open_as_file(storage, folder, &entry.name, work.path())?;
        let codec = FileCodec::of_name(&entry.name)
            .ok_or_else(|| Error::Internal(format!("{} is not a backup file", entry.name)))?;
        let expected = crate::restore::Expected {
            existing_roles: false,
            server_major,
        };
        restore_database_file(
            tools,
            file,
            codec,
            cfg.decryption.as_deref(),
            &database,
            crate::restore::Destination::Rename(&scratch),
            jobs,
            expected,
            work.path(),
            &crate::progress::Bar::default(),
        )
    })();
    match result {
        Ok(errors) => {
            test.errors = errors.count;
            test.first_errors = errors.first.clone();
            match count_tables_and_rows(tools, &scratch) {
                Ok((tables, rows)) => {
                    test.tables = tables;
                    test.rows = rows;
                }
                Err(e) => test.error = Some(e.info()),
            }
            if errors.count > 0 && test.error.is_none() {
                test.error = Some(
                    Error::Data(format!(
                        "restoring {} into {scratch} gave {} SQL errors; first: {}",
                        entry.name,
                        errors.count,
                        errors.first.first().cloned().unwrap_or_default()
                    ))
                    .info(),
                );
            }
        }
        Err(e) => test.error = Some(e.info()),
    }
    drop(guard);
    test.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    test
}

/// A file of the folder as a local file: the local one itself, or a private copy.
fn open_as_file(
    storage: &dyn Storage,
    folder: &FolderName,
    name: &str,
    work: &std::path::Path,
) -> Result<std::fs::File> {
    if let Some(local) = storage.as_local() {
        return Ok(local.open_file(folder, name)?);
    }
    let path = work.join(name);
    let werr = |e| crate::backup::BackupError::Write {
        path: path.clone(),
        source: e,
    };
    let mut out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(werr)?;
    let mut input = storage.open(folder, name)?;
    std::io::copy(&mut input, &mut out).map_err(werr)?;
    use std::io::Seek;
    out.seek(std::io::SeekFrom::Start(0)).map_err(werr)?;
    Ok(out)
}

/// Tables and exact row counts of every user table, in one query.
fn count_tables_and_rows(tools: &PgTools, database: &str) -> Result<(u64, u64)> {
    let sql = "SELECT count(*), coalesce(sum((xpath('/row/c/text()', \
               query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint), 0) \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg_toast%'";
    let rows = tools.query(database, sql, 2)?;
    let row = rows
        .first()
        .ok_or_else(|| Error::Internal("no answer to the table count".into()))?;
    Ok((row[0].parse().unwrap_or(0), row[1].parse().unwrap_or(0)))
}
