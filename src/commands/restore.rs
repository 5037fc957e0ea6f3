//! `pg-backups restore`: one restore of the cluster, the globals or one database, from local,
//! S3 or remote. Inputs come from flags, else `RESTORE_*`, else (only on a terminal) prompts.
//!
//! Steps: resolve the folder → refuse a surprise overwrite (exit 73 unless consent) → stage
//! the file from S3/remote (streamed, checked while it downloads) or read it in place → check
//! size, SHA-256, gzip and completion line **before** any SQL reaches the server → drop what
//! was consented to → restore through psql → report errors (expected ones tolerated).

use std::io::IsTerminal;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::backup::codec::{FileCodec, Format};
use crate::backup::verify::{Readers, check_stream};
use crate::backup::{FileEntry, FileKind, FolderName, Manifest};
use crate::cli::RestoreArgs;
use crate::config::{Config, ConfigError, RestoreInputs, RestoreType, SourceKind};
use crate::error::{Error, Result};
use crate::pg::PgTools;
use crate::prompt;
use crate::report::Outcome;
use crate::restore::{
    Destination, SqlErrors, database_exists, drop_database, restore_database_file, restore_file,
    user_databases,
};
use crate::storage::Storage;

#[derive(Debug, Serialize)]
struct RestoreDetails {
    folder: String,
    source: SourceKind,
    location: String,
    #[serde(rename = "type")]
    restore_type: RestoreType,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_database: Option<String>,
    file: String,
    /// Every file replayed, when there are several (a cluster restore of a custom backup).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<String>,
    bytes: u64,
    sql_bytes: u64,
    /// pg_restore jobs for custom-format files.
    jobs: u32,
    staged: bool,
    dropped: Vec<String>,
    verify_seconds: f64,
    restore_seconds: f64,
    seconds: f64,
    errors: usize,
    tolerated: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    first_errors: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tolerated_examples: Vec<String>,
    server: String,
    /// Which psql replayed the file.
    psql_version: String,
    psql_path: String,
}

fn missing(var: &str, what: &str) -> Error {
    ConfigError::Missing(format!(
        "{var} is not set and there is no terminal to ask: set {var} ({what})"
    ))
    .into()
}

pub fn run(cfg: &Config, args: &RestoreArgs) -> Result<Outcome> {
    let started = Instant::now();
    let inputs = RestoreInputs::from_args(args)?;
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();

    if !interactive {
        inputs.all_given()?;
    }
    let source = match inputs.source {
        Some(s) => s,
        None if interactive => prompt::source(cfg)?,
        None => return Err(missing("RESTORE_SOURCE", "local, s3 or remote")),
    };
    let storage = crate::storage::open(cfg, source, true)?
        .ok_or_else(|| Error::Internal("source did not open".into()))?;
    let folder_arg = match &inputs.folder {
        Some(f) => f.clone(),
        None if interactive => prompt::folder(storage.as_ref())?,
        None => {
            return Err(missing(
                "RESTORE_FOLDER",
                "a folder name such as 20251005_120000, or latest",
            ));
        }
    };
    let (folder, manifest) = super::verify::resolve(storage.as_ref(), &folder_arg)?;
    // A local folder being restored is held against `prune` until the restore ends.
    let _hold = (source == SourceKind::Local).then(|| {
        crate::storage::local::LocalStorage::new(&cfg.backup_dir).hold_for_restore(&folder)
    });
    let restore_type = match inputs.restore_type {
        Some(t) => t,
        None if interactive => prompt::restore_type()?,
        None => return Err(missing("RESTORE_TYPE", "cluster, globals or database")),
    };
    let database = match restore_type {
        RestoreType::Database => Some(match &inputs.database {
            Some(d) => d.clone(),
            None if interactive => prompt::database(&manifest)?,
            None => return Err(missing("RESTORE_DATABASE", "the database to restore")),
        }),
        _ => None,
    };
    let entries = files_for(&manifest, restore_type, database.as_deref())?;
    let target = match restore_type {
        RestoreType::Database => inputs.target_database.clone().or_else(|| database.clone()),
        _ => None,
    };
    // An encrypted backup needs its key before anything else happens.
    if let Some(e) = entries.iter().find(|e| codec_of(e).encrypted)
        && cfg.decryption.is_none()
    {
        return Err(crate::backup::BackupError::KeyMissing {
            file: e.name.clone(),
        }
        .into());
    }
    // A custom archive needs a pg_restore at least as new as the pg_dump that made it.
    let archive_major = if entries.iter().any(|e| codec_of(e).format == Format::Custom) {
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
    let psql_path = tools.current().map(|t| t.path("psql")).unwrap_or_default();
    let pg_restore = tools
        .current()
        .and_then(|t| t.dir.clone())
        .map(|d| d.join("pg_restore"))
        .unwrap_or_else(|| "pg_restore".into());

    // No surprise overwrites.
    let in_the_way = match restore_type {
        RestoreType::Database => {
            let t = target.clone().unwrap_or_default();
            if database_exists(&tools, &t)? {
                vec![t]
            } else {
                Vec::new()
            }
        }
        RestoreType::Cluster => {
            let existing = user_databases(&tools)?;
            manifest
                .databases
                .iter()
                .filter(|d| existing.contains(d))
                .cloned()
                .collect()
        }
        RestoreType::Globals => Vec::new(),
    };
    let mut drop_consent = inputs.drop_existing;
    if !in_the_way.is_empty() && !drop_consent {
        if interactive {
            drop_consent =
                prompt::confirm_drop(&in_the_way, &format!("{}:{}", cfg.pg.host, cfg.pg.port))?;
        }
        if !drop_consent {
            return Err(Error::Refused(format!(
                "{} already exist{} on {}:{}; nothing was changed. To replace {}, set \
                 RESTORE_DROP_EXISTING=true (or type the name at the prompt){}",
                in_the_way
                    .iter()
                    .map(|d| format!("database \"{d}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                if in_the_way.len() == 1 { "s" } else { "" },
                cfg.pg.host,
                cfg.pg.port,
                if in_the_way.len() == 1 { "it" } else { "them" },
                if restore_type == RestoreType::Database {
                    ", or restore under another name with RESTORE_TARGET_DATABASE"
                } else {
                    ""
                }
            )));
        }
    }
    if interactive && inputs.missing_any() {
        let summary = format!(
            "Restore {} from {source} folder {folder}{} onto {}:{} (PostgreSQL {})?",
            match restore_type {
                RestoreType::Cluster => "the whole cluster".to_string(),
                RestoreType::Globals => "roles and tablespaces (globals)".to_string(),
                RestoreType::Database =>
                    format!("database \"{}\"", database.as_deref().unwrap_or_default()),
            },
            match (&database, &target) {
                (Some(d), Some(t)) if d != t => format!(" as \"{t}\""),
                _ => String::new(),
            },
            cfg.pg.host,
            cfg.pg.port,
            server.text
        );
        if !prompt::proceed(&summary)? {
            return Err(Error::Refused(
                "restore cancelled at the prompt; nothing was changed".into(),
            ));
        }
    }

    // Stage and check every file before anything reaches the server.
    let verify_started = Instant::now();
    let work = private_dir(inputs.restore_dir.as_deref(), &folder)?;
    // pg_restore reads every block of an archive as it restores it; before that, the
    // SHA-256 and the table of contents are checked.
    let readers = Readers {
        keys: cfg.decryption.as_deref(),
        pg_restore: Some(&pg_restore),
        archive_list_only: true,
    };
    let mut staged = Vec::new();
    for entry in &entries {
        staged.push(Staged::prepare(
            storage.as_ref(),
            &folder,
            entry,
            readers,
            work.path(),
            &cfg.backup_dir,
        )?);
        crate::signals::check()?;
    }
    let verify_seconds = verify_started.elapsed().as_secs_f64();

    let mut dropped = Vec::new();
    for name in &in_the_way {
        tracing::warn!(database = ?name, "dropping the existing database (consent given)");
        drop_database(&tools, name, server.major())?;
        dropped.push(name.clone());
    }

    let restore_started = Instant::now();
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    tracing::debug!(bytes = total, "restoring");
    let mut errors = SqlErrors::default();
    for (entry, file) in entries.iter().zip(staged) {
        let progress =
            crate::progress::Bar::bytes(&entry.name, Some(entry.bytes)).with_prefix("restoring");
        let codec = codec_of(entry);
        let expected = crate::restore::Expected {
            existing_roles: entry.kind != FileKind::Database,
            server_major: server.major(),
        };
        tracing::info!(file = ?entry.name, psql = %psql_path, "restoring");
        let found = match entry.kind {
            FileKind::Database => {
                let name = entry.database.as_deref().unwrap_or_default();
                // A cluster restore of custom archives: the databases every server has
                // (`postgres`; user databases in the way were dropped above) are filled, not
                // created, as a pg_dumpall file does.
                let into = if restore_type == RestoreType::Cluster && database_exists(&tools, name)?
                {
                    Destination::Existing
                } else {
                    Destination::named(name, target.as_deref())
                };
                restore_database_file(
                    &tools,
                    file.file,
                    codec,
                    cfg.decryption.as_deref(),
                    name,
                    into,
                    inputs.jobs,
                    expected,
                    work.path(),
                    &progress,
                )?
            }
            FileKind::Cluster | FileKind::Globals => restore_file(
                &tools,
                Box::new(file.file),
                codec,
                cfg.decryption.as_deref(),
                None,
                expected,
                &progress,
            )?,
        };
        errors.absorb(found);
    }
    drop(work);
    let restore_seconds = restore_started.elapsed().as_secs_f64();
    let entry = &entries[0];

    let details = RestoreDetails {
        folder: folder.to_string(),
        source,
        location: storage.location(),
        restore_type,
        database: database.clone(),
        target_database: target.clone(),
        file: entry.name.clone(),
        files: if entries.len() > 1 {
            entries.iter().map(|e| e.name.clone()).collect()
        } else {
            Vec::new()
        },
        bytes: total,
        sql_bytes: entries.iter().map(|e| e.sql_bytes).sum(),
        jobs: inputs.jobs,
        staged: source != SourceKind::Local,
        dropped,
        verify_seconds: round(verify_seconds),
        restore_seconds: round(restore_seconds),
        seconds: round(started.elapsed().as_secs_f64()),
        errors: errors.count,
        tolerated: errors.tolerated,
        first_errors: errors.first.clone(),
        tolerated_examples: errors.tolerated_examples.clone(),
        server: format!(
            "{}:{} (PostgreSQL {})",
            cfg.pg.host, cfg.pg.port, server.text
        ),
        psql_version: psql.text.clone(),
        psql_path,
    };
    if errors.count > 0 {
        let e = Error::Data(format!(
            "the restore ended with {} SQL error{}; first: {}",
            errors.count,
            if errors.count == 1 { "" } else { "s" },
            errors.first.first().cloned().unwrap_or_default()
        ));
        return Ok(Outcome::failed(e.info(), details));
    }
    tracing::info!(seconds = details.seconds, "restore finished");
    Ok(Outcome::ok(details))
}

fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

impl RestoreInputs {
    /// Without a terminal every input must be given: names every one that is missing at once.
    fn all_given(&self) -> Result<()> {
        let mut missing = Vec::new();
        if self.source.is_none() {
            missing.push("RESTORE_SOURCE (local, s3 or remote)");
        }
        if self.folder.is_none() {
            missing.push("RESTORE_FOLDER (a folder name such as 20251005_120000, or latest)");
        }
        match self.restore_type {
            None => missing.push("RESTORE_TYPE (cluster, globals or database)"),
            Some(RestoreType::Database) if self.database.is_none() => {
                missing.push("RESTORE_DATABASE (the database to restore)")
            }
            _ => {}
        }
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing
            .iter()
            .map(|m| m.split_whitespace().next().unwrap_or(m))
            .collect();
        Err(ConfigError::Missing(format!(
            "{} {} not set and there is no terminal to ask: set {}",
            names.join(", "),
            if names.len() == 1 { "is" } else { "are" },
            missing.join(", ")
        ))
        .into())
    }

    /// Whether anything was asked at the prompt (then the summary is confirmed too).
    fn missing_any(&self) -> bool {
        self.source.is_none() || self.folder.is_none() || self.restore_type.is_none()
    }
}

fn codec_of(entry: &FileEntry) -> FileCodec {
    FileCodec::of_name(&entry.name).unwrap_or(FileCodec {
        format: Format::Plain,
        compression: crate::backup::codec::Compression::Gzip,
        encrypted: false,
    })
}

/// The files a restore replays, in order. A custom-format backup has no cluster file: its
/// cluster restore is the globals, then every database.
fn files_for(
    manifest: &Manifest,
    restore_type: RestoreType,
    database: Option<&str>,
) -> Result<Vec<FileEntry>> {
    let of_kind = |kind: FileKind| manifest.files.iter().find(|f| f.kind == kind).cloned();
    let found = match restore_type {
        RestoreType::Cluster => match of_kind(FileKind::Cluster) {
            Some(f) => Some(vec![f]),
            None if manifest.backup_format == Format::Custom => {
                let mut files: Vec<FileEntry> = of_kind(FileKind::Globals).into_iter().collect();
                let mut dbs: Vec<FileEntry> = manifest
                    .files
                    .iter()
                    .filter(|f| f.kind == FileKind::Database)
                    .cloned()
                    .collect();
                dbs.sort_by(|a, b| a.database.cmp(&b.database));
                files.extend(dbs);
                (!files.is_empty()).then_some(files)
            }
            None => None,
        },
        RestoreType::Globals => of_kind(FileKind::Globals).map(|f| vec![f]),
        RestoreType::Database => manifest
            .database_file(database.unwrap_or_default())
            .cloned()
            .map(|f| vec![f]),
    };
    found.ok_or_else(|| match restore_type {
        RestoreType::Database => {
            let there: Vec<String> = manifest
                .files
                .iter()
                .filter(|f| f.kind == FileKind::Database)
                .filter_map(|f| f.database.clone())
                .map(|d| format!("\"{d}\""))
                .collect();
            Error::NotFound(format!(
                "backup {} has no database \"{}\"; it has: {}",
                manifest.folder,
                database.unwrap_or_default(),
                there.join(", ")
            ))
        }
        _ => Error::NotFound(format!(
            "backup {} has no {:?} file",
            manifest.folder, restore_type
        )),
    })
}

/// A new directory with a random name, created 0700 by us inside `RESTORE_DIR` (or TMPDIR):
/// downloads are staged there, never in one that someone prepared at a predictable path.
fn private_dir(restore_dir: Option<&Path>, folder: &FolderName) -> Result<tempfile::TempDir> {
    let base = match restore_dir {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir(),
    };
    tempfile::Builder::new()
        .prefix(&format!("pg-backups-restore-{folder}-"))
        .tempdir_in(&base)
        .map_err(|e| {
            crate::backup::BackupError::CreateFolder {
                path: base.clone(),
                source: e,
            }
            .into()
        })
}

/// A file to restore, already open and checked: the local file itself, or a copy downloaded
/// into the restore's private folder. Either way the bytes that were checked are the bytes
/// that are replayed: the handle that read them for the check is rewound and kept, so nothing
/// that happens to the path afterwards (a prune, a replaced file, a symlink) changes what
/// reaches psql or pg_restore.
struct Staged {
    file: std::fs::File,
}

impl Staged {
    fn prepare(
        storage: &dyn Storage,
        folder: &FolderName,
        entry: &FileEntry,
        readers: Readers<'_>,
        work: &Path,
        local_root: &Path,
    ) -> Result<Staged> {
        if storage.kind() == SourceKind::Local {
            let local = crate::storage::local::LocalStorage::new(local_root);
            let mut file = local.open_file(folder, &entry.name)?;
            tracing::info!(file = ?entry.name, "checking the file before restoring it");
            let reader = file.try_clone().map_err(|e| read_error(&entry.name, e))?;
            check_stream(Box::new(reader), entry, readers)?;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| read_error(&entry.name, e))?;
            return Ok(Staged { file });
        }
        let path = work.join(&entry.name);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| crate::backup::BackupError::Write {
                path: path.clone(),
                source: e,
            })?;
        tracing::info!(file = ?entry.name, "downloading and checking");
        let reader = storage.open(folder, &entry.name)?;
        let shared = std::sync::Arc::new(std::sync::Mutex::new(None));
        let writer = file
            .try_clone()
            .map_err(|e| crate::backup::BackupError::Write {
                path: path.clone(),
                source: e,
            })?;
        let tee = Tee {
            inner: reader,
            out: std::io::BufWriter::with_capacity(256 * 1024, writer),
            error: shared.clone(),
        };
        let checked = check_stream(Box::new(tee), entry, readers);
        if let Some(e) = shared.lock().ok().and_then(|mut g| g.take()) {
            return Err(crate::backup::BackupError::Write { path, source: e }.into());
        }
        checked?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| read_error(&entry.name, e))?;
        Ok(Staged { file })
    }
}

fn read_error(file: &str, e: std::io::Error) -> Error {
    crate::backup::BackupError::Read {
        path: file.into(),
        source: e,
    }
    .into()
}

/// Copies what is read into the staging file, so download and check are one pass. A write
/// error is handed back through `error` (the checker reads on its own thread) so that a full
/// staging disk is reported as such (74), not as a broken download.
struct Tee {
    inner: Box<dyn Read + Send>,
    out: std::io::BufWriter<std::fs::File>,
    error: std::sync::Arc<std::sync::Mutex<Option<std::io::Error>>>,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let written = if n == 0 {
            self.out.flush()
        } else {
            self.out.write_all(&buf[..n])
        };
        if let Err(e) = written {
            let message = format!("writing the staging file: {e}");
            if let Ok(mut slot) = self.error.lock() {
                *slot = Some(e);
            }
            return Err(std::io::Error::other(message));
        }
        Ok(n)
    }
}
