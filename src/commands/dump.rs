//! `pg-backups dump`: one new backup folder, complete and checked, or nothing that looks like
//! one.
//!
//! Each database is read from the server once: its `pg_dump --create` stream is compressed
//! into `postgres_db_<name>.sql.gz`, and the cluster file is assembled afterwards from the
//! globals and those same compressed files as a multi-member gzip (see `backup::cluster`).
//! Everything is written into a hidden work folder that is renamed into place when every
//! file is on disk; `manifest.json` comes last.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use crate::backup::cluster::{
    CLUSTER_TRAILER, DATABASES_HEADER, cluster_order, create_filter, database_header,
    missing_database_note, restored_in_place,
};
use crate::backup::codec::{Compression, Encryption, Format, Layout};
use crate::backup::writer::{AssembledFile, FileWriter, WrittenFile};
use crate::backup::{
    BackupError, EncryptionInfo, FailedDatabase, FileEntry, FileKind, FolderName, Manifest,
    ManifestStatus, ServerInfo, manifest_fsync_dir,
};
use crate::config::{Config, DatabaseFilter};
use crate::error::{Error, ErrorInfo, Result};
use crate::lock::RunLock;
use crate::pg::{PgError, PgTools, conninfo};
use crate::process::{Running, Tail, describe_status, enlarge_pipe};
use crate::report::Outcome;
use crate::storage::local::work_folder_name;

const READ_CHUNK: usize = 256 * 1024;
const PIPE_SIZE: i32 = 1024 * 1024;

#[derive(Debug, Serialize)]
struct DumpedDatabase {
    database: String,
    file: String,
    bytes: u64,
    sql_bytes: u64,
    seconds: f64,
}

#[derive(Debug, Serialize)]
struct DatabaseFailure {
    database: String,
    error: ErrorInfo,
}

#[derive(Debug, Serialize, Default)]
struct DumpDetails {
    folder: Option<String>,
    path: Option<String>,
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
    let mut tools = PgTools::new(&cfg.pg)?;
    let server = tools.server_version()?;
    let pg_dump = tools.use_for_dump(&server)?;
    let pg_dump_path = tools.current().map(|t| t.path("pg_dump"));
    let plan = plan(&tools, &cfg.databases, cfg.layout.format)?;
    crate::signals::check()?;

    let (folder, work) = create_work_folder(&cfg.backup_dir)?;
    let mut guard = WorkFolderGuard(Some(work.clone()));
    tracing::info!(folder = %folder, databases = plan.jobs.len(), "dump started");

    let mut details = DumpDetails {
        server_version: server.text.clone(),
        pg_dump_version: pg_dump.text.clone(),
        pg_dump_path: pg_dump_path.clone(),
        jobs: cfg.jobs,
        format: cfg.layout.format,
        compression: compression_name(&cfg.layout),
        compression_level: cfg.compression_level,
        encryption: encryption_info(cfg.encryption.as_deref()),
        ..DumpDetails::default()
    };
    let ctx = JobContext {
        tools: &tools,
        work: &work,
        layout: cfg.layout,
        level: cfg.compression_level,
        enc: cfg.encryption.as_deref(),
        pg_dump: pg_dump.clone(),
        stop: AtomicBool::new(false),
    };

    let globals = match dump_globals(&ctx) {
        Ok(g) => g,
        Err(e) => return Ok(Outcome::failed(e.info(), details)),
    };
    let results = run_jobs(&ctx, plan.jobs.clone(), cfg.jobs);

    // A fatal failure (server gone, disk full, signal) or a failed cluster-only part fails the
    // whole run; a database that failed on its own makes it partial.
    let mut fatal: Option<ErrorInfo> = None;
    let mut done: BTreeMap<String, JobDone> = BTreeMap::new();
    for (job, result) in plan.jobs.iter().zip(results) {
        match result {
            Ok(d) => {
                done.insert(job.database.clone(), d);
            }
            Err(f) => {
                if (f.fatal || !job.per_database) && fatal.is_none() {
                    fatal = Some(f.error.clone());
                }
                details.databases_failed.push(DatabaseFailure {
                    database: job.database.clone(),
                    error: f.error,
                });
            }
        }
    }
    let per_db_total = plan.jobs.iter().filter(|j| j.per_database).count();
    let per_db_done = done.values().filter(|d| d.file.is_some()).count();
    if fatal.is_none() && per_db_total > 0 && per_db_done == 0 {
        fatal = details.databases_failed.first().map(|f| f.error.clone());
    }
    if let Some(first) = fatal {
        tracing::error!(folder = %folder, "dump failed: {}", first.message);
        return Ok(Outcome::failed(first, details));
    }

    let mut files = Vec::new();
    // A custom-format backup has no cluster file: a cluster restore replays the globals and
    // every database.
    if cfg.layout.format == Format::Plain {
        let cluster = match assemble_cluster(&ctx, &globals, &plan.cluster, &done) {
            Ok(c) => c,
            Err(e) => return Ok(Outcome::failed(e.info(), details)),
        };
        files.push(entry(
            &cfg.layout.cluster_file(),
            FileKind::Cluster,
            None,
            &cluster,
        ));
    }
    files.push(entry(
        &cfg.layout.globals_file(),
        FileKind::Globals,
        None,
        &globals.file,
    ));
    for (name, d) in &done {
        if let Some(f) = &d.file {
            files.push(entry(
                &cfg.layout.database_file(name),
                FileKind::Database,
                Some(name.clone()),
                f,
            ));
            details.databases_dumped.push(DumpedDatabase {
                database: name.clone(),
                file: cfg.layout.database_file(name),
                bytes: f.bytes,
                sql_bytes: f.sql_bytes,
                seconds: d.seconds,
            });
        }
    }
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
    let manifest = Manifest {
        format: crate::backup::MANIFEST_FORMAT,
        tool: "pg-backups".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        folder: folder.to_string(),
        status,
        started_at,
        finished_at: Utc::now(),
        server: ServerInfo {
            host: cfg.pg.host.clone(),
            port: cfg.pg.port,
            version: server.text.clone(),
            version_num: server.num,
        },
        pg_dump_version: pg_dump.text.clone(),
        pg_dump_path,
        backup_format: cfg.layout.format,
        compression: compression_name(&cfg.layout).into(),
        compression_level: cfg.compression_level,
        encryption: encryption_info(cfg.encryption.as_deref()),
        databases: cluster_dbs,
        files: files.clone(),
        failed: details
            .databases_failed
            .iter()
            .map(|f| FailedDatabase {
                database: f.database.clone(),
                error: f.error.message.clone(),
            })
            .collect(),
        adopted: None,
    };

    let final_dir = cfg.backup_dir.join(folder.as_str());
    let publish = || -> std::result::Result<(), BackupError> {
        remove_scratch_files(&work)?;
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BackupError::Write { path, source }
        };
        std::fs::rename(&work, &final_dir).map_err(werr(&final_dir))?;
        manifest_fsync_dir(&cfg.backup_dir).map_err(werr(&cfg.backup_dir))?;
        manifest.write_atomic(&final_dir)
    };
    if let Err(e) = publish() {
        let _ = std::fs::remove_dir_all(&final_dir);
        return Ok(Outcome::failed(Error::from(e).info(), details));
    }
    guard.disarm();

    details.total_bytes = files.iter().map(|f| f.bytes).sum();
    details.sql_bytes = files
        .iter()
        .filter(|f| f.kind != FileKind::Cluster)
        .map(|f| f.sql_bytes)
        .sum();
    details.files = files;
    details.folder = Some(folder.to_string());
    details.path = Some(final_dir.display().to_string());
    details.backup_status = Some(status);
    tracing::info!(folder = %folder, bytes = details.total_bytes, ?status, "dump finished");
    Ok(match details.databases_failed.first() {
        None => Outcome::ok(details),
        Some(f) => Outcome::partial(f.error.clone(), details),
    })
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

/// Picks the folder name (UTC now; a later second if a folder of this second exists) and
/// creates its hidden work folder.
fn create_work_folder(root: &Path) -> Result<(FolderName, PathBuf)> {
    for _ in 0..5 {
        let folder = FolderName::from_time(Utc::now());
        let work = root.join(work_folder_name(&folder));
        if root.join(folder.as_str()).exists() {
            std::thread::sleep(std::time::Duration::from_millis(1000));
            continue;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&work) {
            Ok(()) => return Ok((folder, work)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Left by a killed run of the same second; we hold the lock, so it is dead.
                std::fs::remove_dir_all(&work).map_err(|source| BackupError::CreateFolder {
                    path: work.clone(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(BackupError::CreateFolder { path: work, source }.into());
            }
        }
    }
    Err(Error::Internal(
        "could not find a free folder name after 5 attempts".into(),
    ))
}

/// Removes the work folder unless the run published it.
struct WorkFolderGuard(Option<PathBuf>);

impl WorkFolderGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for WorkFolderGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!("could not remove the work folder {}: {e}", dir.display());
        }
    }
}

/// Cluster sections and the globals head live beside the files until assembly (encrypted
/// like them: no plaintext byte reaches the disk).
fn scratch_name(i: usize, layout: &Layout) -> String {
    format!(".section_{i}{}", layout.sql().suffix())
}

fn cluster_head_name(layout: &Layout) -> String {
    format!(".cluster_head{}", layout.sql().suffix())
}

fn remove_scratch_files(work: &Path) -> std::result::Result<(), BackupError> {
    let read = std::fs::read_dir(work).map_err(|source| BackupError::Read {
        path: work.to_path_buf(),
        source,
    })?;
    for item in read.flatten() {
        if item.file_name().to_string_lossy().starts_with('.') {
            let _ = std::fs::remove_file(item.path());
        }
    }
    Ok(())
}

/// What the cluster file needs from a database besides (or instead of) its own file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// Not in the cluster file.
    None,
    /// The cluster holds the database's own `--create` file as it is.
    SameAsFile,
    /// `postgres`/`template1`: the `--create` stream filtered to a plain one.
    Filtered,
    /// Only in the cluster (template1 when not dumped on its own): plain `pg_dump`.
    PlainOnly,
}

#[derive(Debug, Clone)]
struct Job {
    index: usize,
    database: String,
    /// `pg_database.datdba`, to recognise the database's own entries in its dump.
    owner: String,
    per_database: bool,
    section: Section,
}

struct Plan {
    /// Largest first, so parallel jobs finish together.
    jobs: Vec<Job>,
    /// Databases in the cluster file.
    cluster: Vec<String>,
}

/// Lists databases, applies BACKUP_DATABASES / BACKUP_EXCLUDE_DATABASES, and decides what
/// each contributes. A named database that does not exist stops the run before any dump.
fn plan(tools: &PgTools, filter: &DatabaseFilter, format: Format) -> Result<Plan> {
    let rows = tools.query(
        "postgres",
        "SELECT datname, CASE WHEN has_database_privilege(oid, 'CONNECT') \
         THEN pg_database_size(oid) ELSE 0 END, pg_get_userbyid(datdba) \
         FROM pg_database WHERE datallowconn AND datconnlimit <> -2 ORDER BY datname",
        3,
    )?;
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
    for (name, _) in sized {
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
        });
    }
    cluster_order(&mut cluster);
    Ok(Plan { jobs, cluster })
}

struct JobContext<'a> {
    tools: &'a PgTools,
    work: &'a Path,
    layout: Layout,
    level: u32,
    enc: Option<&'a Encryption>,
    pg_dump: crate::pg::ToolVersion,
    /// Set when a part failed in a way that dooms the run; other parts stop early.
    stop: AtomicBool,
}

struct JobDone {
    file: Option<WrittenFile>,
    section: Option<WrittenFile>,
    seconds: f64,
}

struct JobFailure {
    error: ErrorInfo,
    fatal: bool,
}

struct Globals {
    file: WrittenFile,
    /// The globals without pg_dumpall's completion trailer, to open the cluster file.
    head: Option<WrittenFile>,
}

/// Runs `tool` and hands its stdout to `sink` chunk by chunk. The child is killed if the
/// sink fails, a signal arrives or another part failed; its stderr becomes the error.
fn stream_tool(
    ctx: &JobContext<'_>,
    tool: &str,
    args: &[String],
    context: &str,
    label: &str,
    completion: Option<&[u8]>,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    // On a terminal: what pg_dump has written so far, and how fast.
    let progress = crate::progress::Bar::bytes(label, None).with_prefix("dumping");
    let mut cmd = ctx.tools.command(tool);
    cmd.args(args);
    let mut child = Running::spawn(
        cmd,
        tool,
        std::process::Stdio::null(),
        true,
        Tail::default(),
    )
    .map_err(|e| ctx.tools.spawn_error(tool, e))?;
    let mut stdout = child
        .take_stdout()
        .ok_or_else(|| Error::Internal(format!("{tool} has no stdout")))?;
    enlarge_pipe(&stdout, PIPE_SIZE);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut tail: Vec<u8> = Vec::with_capacity(512);
    loop {
        if crate::signals::interrupted() {
            return Err(Error::Interrupted);
        }
        if ctx.stop.load(Ordering::SeqCst) {
            return Err(Error::Internal("cancelled".into()));
        }
        let n = match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(PgError::Io {
                    context: format!("reading the output of {tool}"),
                    source: e,
                }
                .into());
            }
        };
        let chunk = &buf[..n];
        sink(chunk)?;
        progress.inc(n as u64);
        if chunk.len() >= 512 {
            tail.clear();
            tail.extend_from_slice(&chunk[chunk.len() - 512..]);
        } else {
            tail.extend_from_slice(chunk);
            if tail.len() > 512 {
                tail.drain(..tail.len() - 512);
            }
        }
    }
    drop(stdout);
    let finished = child.finish().map_err(|e| PgError::Io {
        context: format!("waiting for {tool}"),
        source: e,
    })?;
    if crate::signals::interrupted() {
        return Err(Error::Interrupted);
    }
    if !finished.status.success() {
        return Err(ctx
            .tools
            .failure(
                tool,
                context,
                &describe_status(&finished.status),
                &finished.stderr.text(),
            )
            .into());
    }
    // Exit status 0 is not enough for a backup: the stream must end the way pg_dump ends it
    // (a custom archive has no such line: pg_dump's exit status says it is whole).
    if let Some(completion) = completion
        && !tail.windows(completion.len()).any(|w| w == completion)
    {
        return Err(PgError::Unexpected(format!(
            "{tool} exited 0 while {context}, but its output does not end with its completion line"
        ))
        .into());
    }
    Ok(())
}

const DUMP_COMPLETE: &[u8] = b"-- PostgreSQL database dump complete";
const CLUSTER_COMPLETE: &[u8] = b"-- PostgreSQL database cluster dump complete";

fn dump_globals(ctx: &JobContext<'_>) -> Result<Globals> {
    let sql = ctx.layout.sql();
    let mut file = FileWriter::create(
        &ctx.work.join(ctx.layout.globals_file()),
        sql,
        ctx.level,
        ctx.enc,
        false,
    )?;
    let mut head = match ctx.layout.format {
        Format::Plain => Some(FileWriter::create(
            &ctx.work.join(cluster_head_name(&ctx.layout)),
            sql,
            ctx.level,
            ctx.enc,
            true,
        )?),
        Format::Custom => None,
    };
    let mut held = TrailerHold::new(CLUSTER_TRAILER.as_bytes());
    let args = vec![
        "-w".to_string(),
        "--globals-only".to_string(),
        format!("--dbname={}", conninfo("postgres")),
    ];
    let started = Instant::now();
    stream_tool(
        ctx,
        "pg_dumpall",
        &args,
        "dumping roles and tablespaces (globals)",
        "(globals)",
        Some(CLUSTER_COMPLETE),
        &mut |chunk| {
            file.write(chunk)?;
            if let Some(head) = head.as_mut() {
                let ready = held.push(chunk);
                head.write(&ready)?;
            }
            Ok(())
        },
    )?;
    if let Some(head) = head.as_mut() {
        head.write(&held.finish_without_trailer())?;
    }
    let globals = Globals {
        file: file.finish()?,
        head: head.map(FileWriter::finish).transpose()?,
    };
    tracing::info!(
        bytes = globals.file.bytes,
        seconds = started.elapsed().as_secs_f64(),
        "globals dumped"
    );
    Ok(globals)
}

/// Passes a stream on, holding back its last bytes so that a known trailer can be left off.
struct TrailerHold {
    trailer: &'static [u8],
    held: Vec<u8>,
}

impl TrailerHold {
    fn new(trailer: &'static [u8]) -> TrailerHold {
        TrailerHold {
            trailer,
            held: Vec::new(),
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(chunk);
        let keep = self.trailer.len();
        if self.held.len() > keep {
            self.held.drain(..self.held.len() - keep).collect()
        } else {
            Vec::new()
        }
    }

    fn finish_without_trailer(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        if held.ends_with(self.trailer) {
            held[..held.len() - self.trailer.len()].to_vec()
        } else {
            held
        }
    }
}

/// Runs the database jobs `jobs` at a time; results come back in job order.
fn run_jobs(
    ctx: &JobContext<'_>,
    jobs: Vec<Job>,
    parallel: usize,
) -> Vec<Result<JobDone, JobFailure>> {
    let count = jobs.len();
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<Job>>());
    let results: Mutex<Vec<Option<Result<JobDone, JobFailure>>>> =
        Mutex::new((0..count).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..parallel.min(count.max(1)) {
            scope.spawn(|| {
                loop {
                    let job = match queue.lock() {
                        Ok(mut q) => q.pop_front(),
                        Err(_) => None,
                    };
                    let Some(job) = job else { break };
                    let outcome = dump_database(ctx, &job);
                    if let Err(f) = &outcome
                        && f.fatal
                    {
                        ctx.stop.store(true, Ordering::SeqCst);
                    }
                    if let Ok(mut r) = results.lock() {
                        r[job.index] = Some(outcome);
                    }
                }
            });
        }
    });
    let results = match results.into_inner() {
        Ok(r) => r,
        Err(poisoned) => poisoned.into_inner(),
    };
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(JobFailure {
                    error: Error::Internal("a dump job did not report back".into()).info(),
                    fatal: true,
                })
            })
        })
        .collect()
}

fn dump_database(ctx: &JobContext<'_>, job: &Job) -> Result<JobDone, JobFailure> {
    let started = Instant::now();
    tracing::info!(database = ?job.database, "dumping database");
    let result = dump_database_inner(ctx, job);
    match result {
        Ok(mut done) => {
            done.seconds = started.elapsed().as_secs_f64();
            tracing::info!(
                database = ?job.database,
                bytes = done.file.as_ref().map(|f| f.bytes).unwrap_or(0),
                seconds = done.seconds,
                "database dumped"
            );
            Ok(done)
        }
        Err(e) => {
            // A failed database leaves no half-written file behind.
            for name in [
                ctx.layout.database_file(&job.database),
                scratch_name(job.index, &ctx.layout),
            ] {
                let _ = std::fs::remove_file(ctx.work.join(name));
            }
            let cancelled = matches!(&e, Error::Internal(m) if m == "cancelled");
            let fatal = match &e {
                Error::Pg(p) => p.is_unreachable() || matches!(p, PgError::Spawn { .. }),
                Error::Backup(BackupError::Write { .. }) => true,
                Error::Interrupted => true,
                Error::Internal(_) => true,
                _ => false,
            };
            let mut info = e.info();
            if cancelled {
                info.kind = "cancelled".into();
                info.message = format!(
                    "dump of \"{}\" stopped because another part of the run failed",
                    job.database
                );
            } else {
                tracing::error!(database = ?job.database, "{}", info.message);
            }
            Err(JobFailure { error: info, fatal })
        }
    }
}

fn dump_database_inner(ctx: &JobContext<'_>, job: &Job) -> Result<JobDone> {
    if job.database.contains(['\n', '\r']) {
        // pg_dump and pg_dumpall refuse these names too (they cannot be written safely
        // into a `\connect`); say so instead of letting pg_dump fail half-way.
        return Err(Error::Data(format!(
            "database {:?} has a line break in its name, which pg_dump cannot dump: \
             rename it (ALTER DATABASE … RENAME TO …) to back it up",
            job.database
        )));
    }
    let custom = ctx.layout.format == Format::Custom && job.per_database;
    let mut file = match job.per_database {
        true => Some(FileWriter::create(
            &ctx.work.join(ctx.layout.database_file(&job.database)),
            ctx.layout.database(),
            ctx.level,
            ctx.enc,
            job.section == Section::SameAsFile,
        )?),
        false => None,
    };
    let mut section = match job.section {
        Section::Filtered | Section::PlainOnly => Some(FileWriter::create(
            &ctx.work.join(scratch_name(job.index, &ctx.layout)),
            ctx.layout.sql(),
            ctx.level,
            ctx.enc,
            true,
        )?),
        Section::None | Section::SameAsFile => None,
    };
    let mut filter =
        (job.section == Section::Filtered).then(|| create_filter(&job.database, &job.owner));
    let unexpected = |violation| -> Error {
        BackupError::Unsafe {
            file: format!("the pg_dump output of database {:?}", job.database),
            violation,
        }
        .into()
    };
    let mut args = vec!["-w".to_string()];
    if custom {
        // pg_dump's own compression; zstd where this pg_dump has it (16 and later).
        args.push("--format=custom".into());
        args.push(match (ctx.layout.compression, ctx.pg_dump.major >= 16) {
            (Compression::Zstd, true) => format!("--compress=zstd:{}", ctx.level),
            (_, true) => format!("--compress=gzip:{}", ctx.level.min(9)),
            (_, false) => format!("--compress={}", ctx.level.min(9)),
        });
    } else if job.per_database {
        args.push("--create".into());
    }
    args.push(format!("--dbname={}", conninfo(&job.database)));
    let mut scratch = Vec::with_capacity(READ_CHUNK + 1024);
    stream_tool(
        ctx,
        "pg_dump",
        &args,
        &format!("dumping database \"{}\"", job.database),
        &job.database,
        (!custom).then_some(DUMP_COMPLETE),
        &mut |chunk| {
            if let Some(f) = file.as_mut() {
                f.write(chunk)?;
            }
            if let Some(s) = section.as_mut() {
                match filter.as_mut() {
                    Some(filter) => {
                        scratch.clear();
                        filter.push(chunk, &mut scratch).map_err(unexpected)?;
                        s.write(&scratch)?;
                    }
                    None => s.write(chunk)?,
                }
            }
            Ok(())
        },
    )?;
    if let (Some(filter), Some(s)) = (filter.as_mut(), section.as_mut()) {
        scratch.clear();
        filter.finish(&mut scratch).map_err(unexpected)?;
        s.write(&scratch)?;
    }
    Ok(JobDone {
        file: file.map(FileWriter::finish).transpose()?,
        section: section.map(FileWriter::finish).transpose()?,
        seconds: 0.0,
    })
}

/// Builds the cluster file the way `pg_dumpall` lays it out, from finished files.
fn assemble_cluster(
    ctx: &JobContext<'_>,
    globals: &Globals,
    cluster: &[String],
    done: &BTreeMap<String, JobDone>,
) -> Result<WrittenFile> {
    let head = globals
        .head
        .as_ref()
        .ok_or_else(|| Error::Internal("no globals head for the cluster file".into()))?;
    let mut out = AssembledFile::create(
        &ctx.work.join(ctx.layout.cluster_file()),
        ctx.layout.sql(),
        ctx.level,
        ctx.enc,
    )?;
    out.append_file(head, ctx.enc)?;
    out.append_text(DATABASES_HEADER)?;
    for db in cluster {
        crate::signals::check()?;
        let Some(d) = done.get(db) else {
            out.append_text(&missing_database_note(db))?;
            continue;
        };
        out.append_text(&database_header(db))?;
        let part =
            d.section.as_ref().or(d.file.as_ref()).ok_or_else(|| {
                Error::Internal(format!("no cluster section for database \"{db}\""))
            })?;
        out.append_file(part, ctx.enc)?;
    }
    out.append_text(CLUSTER_TRAILER)?;
    Ok(out.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_hold_leaves_off_a_trailer_split_across_chunks() {
        let trailer: &'static [u8] = b"--\n-- done\n--\n\n";
        let mut h = TrailerHold::new(trailer);
        let input = b"SELECT 1;\n--\n-- done\n--\n\n";
        let mut out = Vec::new();
        for c in input.chunks(3) {
            out.extend(h.push(c));
        }
        out.extend(h.finish_without_trailer());
        assert_eq!(out, b"SELECT 1;\n");
    }

    #[test]
    fn trailer_hold_keeps_a_stream_without_the_trailer() {
        let mut h = TrailerHold::new(b"END\n");
        let mut out = h.push(b"abc\n");
        out.extend(h.finish_without_trailer());
        assert_eq!(out, b"abc\n");
    }
}
