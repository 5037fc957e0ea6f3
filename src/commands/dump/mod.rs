//! `pg-backups dump`: one new backup folder, complete and checked, or nothing that looks like
//! one.
//!
//! Each database is read from the server once: its `pg_dump --create` stream is compressed
//! into `postgres_db_<name>.sql.gz`, and the cluster file is assembled afterwards from the
//! globals and those same compressed files as a multi-member gzip (see `backup::cluster`).
//! Everything is written into a hidden work folder that is renamed into place when every
//! file is on disk, or with `BACKUP_LOCAL_COPY=false` straight into the folder at S3
//! (`target`); `manifest.json` comes last.
//!
//! The files themselves are written by `crate::dump`; this command picks the
//! databases, names and publishes the folder, and reports.

mod target;

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backup::cluster::{cluster_order, restored_in_place};
use crate::backup::codec::{Encryption, Format, Layout};
use crate::backup::writer::WrittenFile;
use crate::backup::{
    BackupError, EncryptionInfo, FailedDatabase, FileEntry, FileKind, FolderName, Manifest,
    ManifestStatus, ServerInfo,
};
use crate::config::{Config, DatabaseFilter};
use crate::dump::{
    DumpError, Job, JobContext, JobDone, JobFailure, Section, assemble_cluster, dump_globals,
    remove_scratch, run_jobs,
};
use crate::error::{Error, ErrorInfo, Result};
use crate::lock::RunLock;
use crate::pg::{PgTools, ServerVersion, ToolVersion};
use crate::report::Outcome;
use target::Target;

#[derive(Debug, Serialize)]
struct DumpedDatabase {
    database: String,
    file: String,
    bytes: u64,
    sql_bytes: u64,
    seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
struct DatabaseFailure {
    database: String,
    error: ErrorInfo,
}

#[derive(Debug, Serialize, Default)]
struct DumpDetails {
    folder: Option<String>,
    path: Option<String>,
    /// `local`, or `s3` when the folder was written straight to S3 (no local copy).
    destination: &'static str,
    backup_status: Option<ManifestStatus>,
    server_version: String,
    pg_dump_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pg_dump_path: Option<String>,
    jobs: usize,
    format: Format,
    compression: &'static str,
    compression_level: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption: Option<EncryptionInfo>,
    files: Vec<FileEntry>,
    total_bytes: u64,
    sql_bytes: u64,
    databases_dumped: Vec<DumpedDatabase>,
    databases_failed: Vec<DatabaseFailure>,
}

pub fn run(cfg: &Config) -> Result<Outcome> {
    let started_at = Utc::now();
    create_root(&cfg.backup_dir)?;
    let _lock = RunLock::acquire(&cfg.backup_dir, "dump")?;
    // Without local copy the folder is made at S3: reachable, and these keys may write,
    // before any database is read.
    let s3 = match cfg.local_copy {
        true => None,
        false => Some(open_s3(cfg)?),
    };
    let mut tools = PgTools::new(&cfg.pg)?;
    let server = tools.server_version()?;
    let pg_dump = tools.use_for_dump(&server)?;
    let pg_dump_path = tools.current().map(|t| t.path("pg_dump"));
    let plan = plan(&tools, &cfg.databases, cfg.layout.format)?;
    crate::signals::check()?;

    let mut target = match s3 {
        None => Target::local(&cfg.backup_dir)?,
        Some(storage) => Target::s3(storage)?,
    };
    let folder = target.folder.clone();
    tracing::info!(folder = %folder, destination = target.destination(), databases = plan.jobs.len(), "dump started");

    let facts = RunFacts {
        folder,
        started_at,
        server,
        pg_dump,
        pg_dump_path,
    };
    let mut details = DumpDetails::new(cfg, &facts);
    details.destination = target.destination();
    details.databases_failed.extend(plan.unnamable.clone());
    let store = target.store();
    let ctx = JobContext::new(
        &tools,
        store.as_ref(),
        cfg.layout,
        cfg.compression_level,
        cfg.encryption.as_deref(),
        facts.pg_dump.clone(),
    );

    let globals = match dump_globals(&ctx) {
        Ok(g) => g,
        Err(e) => return Ok(Outcome::failed(Error::from(e).info(), details)),
    };
    let results = run_jobs(&ctx, plan.jobs.clone(), cfg.jobs);
    let (done, fatal) = sort_results(&plan.jobs, results, &mut details);
    if let Some(first) = fatal {
        tracing::error!(folder = %facts.folder, "dump failed: {}", first.message);
        return Ok(Outcome::failed(first, details));
    }

    // A custom-format backup has no cluster file: a cluster restore replays the globals and
    // every database.
    let cluster = match cfg.layout.format {
        Format::Plain => match assemble_cluster(&ctx, &globals, &plan.cluster, &done) {
            Ok(c) => Some(c),
            Err(e) => return Ok(Outcome::failed(Error::from(e).info(), details)),
        },
        Format::Custom => None,
    };
    remove_scratch(store.as_ref(), &cfg.layout, &plan.jobs);
    drop(store);
    let files = file_entries(cfg, cluster.as_ref(), &globals.file, &done, &mut details);
    let status = if details.databases_failed.is_empty() {
        ManifestStatus::Complete
    } else {
        ManifestStatus::Partial
    };
    let mut cluster_dbs: Vec<String> = plan
        .cluster
        .iter()
        .filter(|d| done.contains_key(*d))
        .cloned()
        .collect();
    cluster_order(&mut cluster_dbs);
    let manifest = build_manifest(cfg, &facts, status, cluster_dbs, &files, &details);

    if let Err(e) = target.publish(&manifest) {
        return Ok(Outcome::failed(e.info(), details));
    }
    details.finish(files, &facts.folder, target.shown(), status);
    tracing::info!(folder = %facts.folder, bytes = details.total_bytes, ?status, "dump finished");
    Ok(match details.databases_failed.first() {
        None => Outcome::ok(details),
        Some(f) => Outcome::partial(f.error.clone(), details),
    })
}

/// What the run learnt before the first file, for the report and the manifest.
struct RunFacts {
    folder: FolderName,
    started_at: DateTime<Utc>,
    server: ServerVersion,
    pg_dump: ToolVersion,
    pg_dump_path: Option<String>,
}

impl DumpDetails {
    fn new(cfg: &Config, facts: &RunFacts) -> DumpDetails {
        DumpDetails {
            server_version: facts.server.text.clone(),
            pg_dump_version: facts.pg_dump.text.clone(),
            pg_dump_path: facts.pg_dump_path.clone(),
            jobs: cfg.jobs,
            format: cfg.layout.format,
            compression: compression_name(&cfg.layout),
            compression_level: cfg.compression_level,
            encryption: encryption_info(cfg.encryption.as_deref()),
            ..DumpDetails::default()
        }
    }

    /// The published folder and its totals (the cluster file repeats the SQL of the others,
    /// so it is left out of `sql_bytes`).
    fn finish(
        &mut self,
        files: Vec<FileEntry>,
        folder: &FolderName,
        shown: String,
        status: ManifestStatus,
    ) {
        self.total_bytes = files.iter().map(|f| f.bytes).sum();
        self.sql_bytes = files
            .iter()
            .filter(|f| f.kind != FileKind::Cluster)
            .map(|f| f.sql_bytes)
            .sum();
        self.files = files;
        self.folder = Some(folder.to_string());
        self.path = Some(shown);
        self.backup_status = Some(status);
    }
}

/// The finished databases by name, and the error that fails the whole run, if any: a fatal
/// failure (server gone, disk full, signal), a failed cluster-only part, or every database
/// failing. A database that failed on its own makes the run partial; each failure goes to
/// `details`.
fn sort_results(
    jobs: &[Job],
    results: Vec<std::result::Result<JobDone, JobFailure>>,
    details: &mut DumpDetails,
) -> (BTreeMap<String, JobDone>, Option<ErrorInfo>) {
    let mut fatal: Option<ErrorInfo> = None;
    let mut done: BTreeMap<String, JobDone> = BTreeMap::new();
    for (job, result) in jobs.iter().zip(results) {
        match result {
            Ok(d) => {
                done.insert(job.database.clone(), d);
            }
            Err(f) => {
                let is_fatal = f.fatal;
                let error = failure_info(&job.database, f);
                if (is_fatal || !job.per_database) && fatal.is_none() {
                    fatal = Some(error.clone());
                }
                details.databases_failed.push(DatabaseFailure {
                    database: job.database.clone(),
                    error,
                });
            }
        }
    }
    let per_db_total = jobs.iter().filter(|j| j.per_database).count();
    let per_db_done = done.values().filter(|d| d.file.is_some()).count();
    if fatal.is_none() && per_db_total > 0 && per_db_done == 0 {
        fatal = details.databases_failed.first().map(|f| f.error.clone());
    }
    (done, fatal)
}

/// The manifest's file list, in the order the manifest has always had (cluster, globals,
/// databases by name); each dumped database also goes to `details`.
fn file_entries(
    cfg: &Config,
    cluster: Option<&WrittenFile>,
    globals: &WrittenFile,
    done: &BTreeMap<String, JobDone>,
    details: &mut DumpDetails,
) -> Vec<FileEntry> {
    let mut files = Vec::new();
    if let Some(cluster) = cluster {
        files.push(entry(
            &cfg.layout.cluster_file(),
            FileKind::Cluster,
            None,
            cluster,
        ));
    }
    files.push(entry(
        &cfg.layout.globals_file(),
        FileKind::Globals,
        None,
        globals,
    ));
    for (name, d) in done {
        if let Some(f) = &d.file {
            let mut e = entry(
                &cfg.layout.database_file(name),
                FileKind::Database,
                Some(name.clone()),
                f,
            );
            e.tables = d.tables.clone();
            files.push(e);
            details.databases_dumped.push(DumpedDatabase {
                database: name.clone(),
                file: cfg.layout.database_file(name),
                bytes: f.bytes,
                sql_bytes: f.sql_bytes,
                seconds: d.seconds,
            });
        }
    }
    files
}

fn build_manifest(
    cfg: &Config,
    facts: &RunFacts,
    status: ManifestStatus,
    databases: Vec<String>,
    files: &[FileEntry],
    details: &DumpDetails,
) -> Manifest {
    Manifest {
        format: crate::backup::MANIFEST_FORMAT,
        tool: "pg-backups".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        folder: facts.folder.to_string(),
        status,
        started_at: facts.started_at,
        finished_at: Utc::now(),
        server: ServerInfo {
            host: cfg.pg.host.clone(),
            port: cfg.pg.port,
            version: facts.server.text.clone(),
            version_num: facts.server.num,
        },
        pg_dump_version: facts.pg_dump.text.clone(),
        pg_dump_path: facts.pg_dump_path.clone(),
        backup_format: cfg.layout.format,
        compression: compression_name(&cfg.layout).into(),
        compression_level: cfg.compression_level,
        encryption: encryption_info(cfg.encryption.as_deref()),
        databases,
        files: files.to_vec(),
        failed: details
            .databases_failed
            .iter()
            .map(|f| FailedDatabase {
                database: f.database.clone(),
                error: f.error.message.clone(),
            })
            .collect(),
        adopted: None,
    }
}

fn entry(name: &str, kind: FileKind, database: Option<String>, w: &WrittenFile) -> FileEntry {
    FileEntry {
        name: name.to_string(),
        kind,
        database,
        bytes: w.bytes,
        sha256: w.sha256.clone(),
        sql_bytes: w.sql_bytes,
        content_sha256: w.content_sha256.clone(),
        tables: None,
    }
}

/// The manifest's `compression`: the SQL files' (a custom archive's is pg_dump's own).
fn compression_name(layout: &Layout) -> &'static str {
    layout.compression.name()
}

fn encryption_info(enc: Option<&Encryption>) -> Option<EncryptionInfo> {
    enc.map(|e| EncryptionInfo {
        scheme: "age".into(),
        recipients: e.recipients().to_vec(),
    })
}

/// The bucket a dump without local copy writes to (`BACKUP_LOCAL_COPY=false` is refused
/// at start-up unless S3 is enabled).
fn open_s3(cfg: &Config) -> Result<crate::storage::s3::S3Storage> {
    let s3 = cfg.s3.get()?.ok_or_else(|| {
        Error::Internal("BACKUP_LOCAL_COPY=false without S3 passed the settings check".into())
    })?;
    Ok(crate::storage::s3::S3Storage::new(s3)?)
}

/// Creates `BACKUP_DIR` (mode 0700) when it is missing.
fn create_root(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(source) => Err(BackupError::CreateFolder {
            path: dir.to_path_buf(),
            source,
        }
        .into()),
    }
}

struct Plan {
    /// Largest first, so parallel jobs finish together.
    jobs: Vec<Job>,
    /// Databases in the cluster file.
    cluster: Vec<String>,
    /// Databases whose name is not UTF-8 (an SQL_ASCII or LATIN1 server's bytes): they are
    /// reported failed by name, never dumped under a name that is not theirs.
    unnamable: Vec<DatabaseFailure>,
}

/// Lists databases, applies BACKUP_DATABASES / BACKUP_EXCLUDE_DATABASES, and decides what
/// each contributes. A named database that does not exist stops the run before any dump.
fn plan(tools: &PgTools, filter: &DatabaseFilter, format: Format) -> Result<Plan> {
    let rows = tools.query(
        "postgres",
        "SELECT datname, CASE WHEN has_database_privilege(oid, 'CONNECT') \
         THEN pg_database_size(oid) ELSE 0 END, pg_get_userbyid(datdba), \
         encode(textsend(datname::text), 'hex') \
         FROM pg_database WHERE datallowconn AND datconnlimit <> -2 ORDER BY datname",
        4,
    )?;
    let (rows, unnamable) = named_as_they_are(rows);
    let owners: BTreeMap<String, String> =
        rows.iter().map(|r| (r[0].clone(), r[2].clone())).collect();
    let all: Vec<(String, u64)> = rows
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap_or(0)))
        .collect();
    let exists = |name: &str| all.iter().any(|(n, _)| n == name);
    let missing: Vec<&String> = filter.include.iter().filter(|n| !exists(n)).collect();
    if !missing.is_empty() {
        let available: Vec<&str> = all
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| *n != "template1")
            .collect();
        return Err(Error::NotFound(format!(
            "BACKUP_DATABASES names {} that the server does not have; it has: {}",
            missing
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", "),
            available.join(", ")
        )));
    }
    for name in &filter.exclude {
        if !exists(name) {
            tracing::warn!("BACKUP_EXCLUDE_DATABASES names {name:?}, which does not exist");
        }
    }
    let excluded = |name: &str| filter.exclude.iter().any(|e| e == name);
    let selected = |name: &str| {
        if filter.include.is_empty() {
            name != "template0" && name != "template1"
        } else {
            filter.include.iter().any(|i| i == name)
        }
    };
    let mut jobs = Vec::new();
    let mut cluster = Vec::new();
    let mut sized: Vec<&(String, u64)> = all.iter().collect();
    sized.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (name, size) in sized {
        if excluded(name) {
            continue;
        }
        let per_database = selected(name);
        // The cluster file (plain format only) also holds template1, as pg_dumpall does.
        let in_cluster = format == Format::Plain && (per_database || name == "template1");
        let section = match (per_database, in_cluster) {
            (true, true) if restored_in_place(name) => Section::Filtered,
            (true, true) => Section::SameAsFile,
            (false, true) => Section::PlainOnly,
            _ => Section::None,
        };
        if section == Section::None && !per_database {
            continue;
        }
        if in_cluster {
            cluster.push(name.clone());
        }
        jobs.push(Job {
            index: jobs.len(),
            database: name.clone(),
            owner: owners.get(name).cloned().unwrap_or_default(),
            per_database,
            section,
            size: *size,
        });
    }
    cluster_order(&mut cluster);
    Ok(Plan {
        jobs,
        cluster,
        unnamable,
    })
}

/// Keeps the databases whose name, as the server stores it, is the name psql printed (UTF-8);
/// the others become failures that name their bytes.
fn named_as_they_are(rows: Vec<Vec<String>>) -> (Vec<Vec<String>>, Vec<DatabaseFailure>) {
    let mut kept = Vec::new();
    let mut failed = Vec::new();
    for row in rows {
        let raw = hex::decode(&row[3]).unwrap_or_default();
        if String::from_utf8(raw).is_ok_and(|name| name == row[0]) {
            kept.push(row);
            continue;
        }
        let error = Error::Data(format!(
            "a database whose name is not UTF-8 (bytes {}) cannot be dumped by pg-backups: \
             rename it (ALTER DATABASE … RENAME TO …) to back it up",
            row[3]
        ));
        tracing::error!("{error}");
        failed.push(DatabaseFailure {
            database: row[0].clone(),
            error: error.info(),
        });
    }
    (kept, failed)
}

/// A database's failure as the report shows it; one stopped because another part failed
/// says so instead of repeating that part's error.
fn failure_info(database: &str, failure: JobFailure) -> ErrorInfo {
    let cancelled = matches!(failure.error, DumpError::Cancelled);
    let mut info = Error::from(failure.error).info();
    if cancelled {
        info.kind = "cancelled".into();
        info.message =
            format!("dump of \"{database}\" stopped because another part of the run failed");
    }
    info
}

/// The crate's error for a failed part of the dump: same text, kind and exit code.
impl From<DumpError> for Error {
    fn from(e: DumpError) -> Error {
        match e {
            DumpError::Pg(e) => Error::Pg(e),
            DumpError::Backup(e) => Error::Backup(e),
            DumpError::Data(m) => Error::Data(m),
            DumpError::Interrupted => Error::Interrupted,
            DumpError::Cancelled => Error::Internal("cancelled".into()),
            DumpError::Internal(m) => Error::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_errors_keep_their_text_when_they_become_the_crates() {
        let cases = [
            DumpError::Data("database \"a\" cannot be dumped".into()),
            DumpError::Interrupted,
            DumpError::Cancelled,
            DumpError::Internal("a dump job did not report back".into()),
            DumpError::Pg(crate::pg::PgError::Unexpected(
                "pg_dump said nothing".into(),
            )),
        ];
        for e in cases {
            let text = e.to_string();
            assert_eq!(Error::from(e).to_string(), text);
        }
    }
}
