//! The files of one dump, written from the server's streams: each database is read once,
//! its `pg_dump` stream compressed, encrypted and hashed into its file (and, for the cluster
//! file, into a scratch section when the file itself cannot serve), the globals likewise;
//! then the cluster file is assembled from those finished files (see `backup::cluster`).
//! Databases are dumped a bounded number at once; a failure that dooms the run stops the
//! others early.
//!
//! Everything here writes into the folder it is given (a [`FileStore`]: the local work
//! folder, or the folder at S3 for a dump without local copy); naming, publishing and the
//! run's report are the `dump` command's.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use thiserror::Error;

mod screen;
use screen::Screen;

use crate::backup::cluster::{
    CLUSTER_TRAILER, DATABASES_HEADER, create_filter, database_header, missing_database_note,
};
use crate::backup::codec::{Compression, Encryption, Format, Layout};
use crate::backup::store::{FileStore, SinkFailed};
use crate::backup::writer::{AssembledFile, FileWriter, WrittenFile};
use crate::backup::{BackupError, SCRATCH_PREFIXES};
use crate::pg::{PgError, PgTools, ToolVersion, conninfo};
use crate::process::{Running, Tail, describe_status, enlarge_pipe};

const READ_CHUNK: usize = 256 * 1024;
const PIPE_SIZE: i32 = 1024 * 1024;

/// Why writing a file of the dump failed. Its text and meaning are those of the crate's
/// `Error` variant of the same name, which the `dump` command converts it into (this layer
/// stays below the one that knows every error).
#[derive(Debug, Error)]
pub enum DumpError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// A database this run cannot dump (a name pg_dump refuses).
    #[error("{0}")]
    Data(String),
    #[error("interrupted by a signal; child processes were stopped")]
    Interrupted,
    /// Stopped early because another part of the run failed.
    #[error("internal error: cancelled")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}

/// Cluster sections and the globals head live beside the files until assembly (encrypted
/// like them: no plaintext byte reaches the disk).
fn scratch_name(i: usize, layout: &Layout) -> String {
    format!("{}{i}{}", SCRATCH_PREFIXES[0], layout.sql().suffix())
}

fn cluster_head_name(layout: &Layout) -> String {
    format!("{}{}", SCRATCH_PREFIXES[1], layout.sql().suffix())
}

/// The globals are small; this only sizes an upload's parts.
const GLOBALS_SIZE_HINT: u64 = 64 * 1024 * 1024;

/// Removes the scratch files the cluster file was assembled from (`jobs`: every job of the
/// run), wherever the store keeps them.
pub fn remove_scratch(store: &dyn FileStore, layout: &Layout, jobs: &[Job]) {
    store.remove(&cluster_head_name(layout));
    for job in jobs {
        if matches!(job.section, Section::Filtered | Section::PlainOnly) {
            store.remove(&scratch_name(job.index, layout));
        }
    }
}

/// The published folder holds backup files only: sections and heads were this run's own.
pub fn remove_scratch_files(work: &Path) -> Result<(), BackupError> {
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
pub enum Section {
    /// Not in the cluster file.
    None,
    /// The cluster holds the database's own `--create` file as it is.
    SameAsFile,
    /// `postgres`/`template1`: the `--create` stream filtered to a plain one.
    Filtered,
    /// Only in the cluster (template1 when not dumped on its own): plain `pg_dump`.
    PlainOnly,
}

/// One database to dump: into its own file, into a cluster section, or both.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its place in the job list, where its result comes back.
    pub index: usize,
    pub database: String,
    /// `pg_database.datdba`, to recognise the database's own entries in its dump.
    pub owner: String,
    pub per_database: bool,
    pub section: Section,
    /// `pg_database_size`: plans the parts of an upload.
    pub size: u64,
}

/// What every part of one dump shares: the tools, the work folder and the file layout.
pub struct JobContext<'a> {
    tools: &'a PgTools,
    store: &'a dyn FileStore,
    layout: Layout,
    level: u32,
    enc: Option<&'a Encryption>,
    pg_dump: ToolVersion,
    /// Set when a part failed in a way that dooms the run; other parts stop early.
    stop: AtomicBool,
}

impl<'a> JobContext<'a> {
    /// `pg_dump`: the version chosen for this server, which decides its compression flags.
    pub fn new(
        tools: &'a PgTools,
        store: &'a dyn FileStore,
        layout: Layout,
        level: u32,
        enc: Option<&'a Encryption>,
        pg_dump: ToolVersion,
    ) -> JobContext<'a> {
        JobContext {
            tools,
            store,
            layout,
            level,
            enc,
            pg_dump,
            stop: AtomicBool::new(false),
        }
    }
}

/// A database dumped: what the manifest and the cluster file need from it.
pub struct JobDone {
    /// The database's own file (absent when it is dumped only for the cluster file).
    pub file: Option<WrittenFile>,
    /// Its scratch section of the cluster file, when its own file cannot serve.
    section: Option<WrittenFile>,
    pub seconds: f64,
    /// Each table's rows as the dump stream carried them (plain files).
    pub tables: Option<Vec<crate::backup::psql_scan::TableRows>>,
}

/// A database that was not dumped, and whether the run can go on without it.
pub struct JobFailure {
    pub error: DumpError,
    /// The failure dooms the run (server gone, disk full, signal), not only this database.
    pub fatal: bool,
}

/// The globals, dumped once for two uses: their own file and the cluster file's head.
pub struct Globals {
    pub file: WrittenFile,
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
    sink: &mut dyn FnMut(&[u8]) -> Result<(), DumpError>,
) -> Result<(), DumpError> {
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
        .ok_or_else(|| DumpError::Internal(format!("{tool} has no stdout")))?;
    enlarge_pipe(&stdout, PIPE_SIZE);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut tail: Vec<u8> = Vec::with_capacity(512);
    loop {
        if crate::signals::interrupted() {
            return Err(DumpError::Interrupted);
        }
        if ctx.stop.load(Ordering::SeqCst) {
            return Err(DumpError::Cancelled);
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
        return Err(DumpError::Interrupted);
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

/// `pg_dumpall --globals-only` into the globals file and, for plain backups, into the head
/// of the cluster file (without its completion trailer).
pub fn dump_globals(ctx: &JobContext<'_>) -> Result<Globals, DumpError> {
    let sql = ctx.layout.sql();
    let mut file = FileWriter::create(
        ctx.store,
        &ctx.layout.globals_file(),
        sql,
        ctx.level,
        ctx.enc,
        false,
        GLOBALS_SIZE_HINT,
    )?;
    let mut head = match ctx.layout.format {
        Format::Plain => Some(FileWriter::create(
            ctx.store,
            &cluster_head_name(&ctx.layout),
            sql,
            ctx.level,
            ctx.enc,
            true,
            GLOBALS_SIZE_HINT,
        )?),
        Format::Custom => None,
    };
    let mut held = TrailerHold::new(CLUSTER_TRAILER.as_bytes());
    let mut screen = Screen::globals();
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
            screen.feed(chunk)?;
            file.write(chunk)?;
            if let Some(head) = head.as_mut() {
                let ready = held.push(chunk);
                head.write(&ready)?;
            }
            Ok(())
        },
    )?;
    screen.finish()?;
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

/// Runs the database jobs `parallel` at a time; results come back in job order.
pub fn run_jobs(
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
                    error: DumpError::Internal("a dump job did not report back".into()),
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
                ctx.store.remove(&name);
            }
            let fatal = match &e {
                DumpError::Pg(p) => p.is_unreachable() || matches!(p, PgError::Spawn { .. }),
                // A file that outgrew its upload fails alone; a destination that fails, or
                // a full disk, fails every file.
                DumpError::Backup(BackupError::Write { source, .. }) => {
                    !SinkFailed::of(source).is_some_and(|f| f.only_this_file)
                }
                DumpError::Interrupted | DumpError::Cancelled | DumpError::Internal(_) => true,
                DumpError::Backup(_) | DumpError::Data(_) => false,
            };
            // A part stopped because another failed says so in the report, not in the log.
            if !matches!(e, DumpError::Cancelled) {
                tracing::error!(database = ?job.database, "{e}");
            }
            Err(JobFailure { error: e, fatal })
        }
    }
}

fn dump_database_inner(ctx: &JobContext<'_>, job: &Job) -> Result<JobDone, DumpError> {
    if job.database.contains(['\n', '\r']) {
        // pg_dump and pg_dumpall refuse these names too (they cannot be written safely
        // into a `\connect`); say so instead of letting pg_dump fail half-way.
        return Err(DumpError::Data(format!(
            "database {:?} has a line break in its name, which pg_dump cannot dump: \
             rename it (ALTER DATABASE … RENAME TO …) to back it up",
            job.database
        )));
    }
    let custom = ctx.layout.format == Format::Custom && job.per_database;
    let mut file = match job.per_database {
        true => Some(FileWriter::create(
            ctx.store,
            &ctx.layout.database_file(&job.database),
            ctx.layout.database(),
            ctx.level,
            ctx.enc,
            job.section == Section::SameAsFile,
            job.size,
        )?),
        false => None,
    };
    let mut section = match job.section {
        Section::Filtered | Section::PlainOnly => Some(FileWriter::create(
            ctx.store,
            &scratch_name(job.index, &ctx.layout),
            ctx.layout.sql(),
            ctx.level,
            ctx.enc,
            true,
            job.size,
        )?),
        Section::None | Section::SameAsFile => None,
    };
    let mut filter =
        (job.section == Section::Filtered).then(|| create_filter(&job.database, &job.owner));
    let unexpected = |violation| -> DumpError {
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
    // The restore's checks, on the stream as it is written (guarantee 9).
    let mut screen = match custom {
        true => Screen::archive(ctx.tools, &job.database)?,
        false => Screen::sql(&job.database, job.per_database),
    };
    let mut scratch = Vec::with_capacity(READ_CHUNK + 1024);
    stream_tool(
        ctx,
        "pg_dump",
        &args,
        &format!("dumping database \"{}\"", job.database),
        &job.database,
        (!custom).then_some(DUMP_COMPLETE),
        &mut |chunk| {
            screen.feed(chunk)?;
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
    let tables = screen.finish()?.filter(|_| job.per_database);
    if let (Some(filter), Some(s)) = (filter.as_mut(), section.as_mut()) {
        scratch.clear();
        filter.finish(&mut scratch).map_err(unexpected)?;
        s.write(&scratch)?;
    }
    Ok(JobDone {
        file: file.map(FileWriter::finish).transpose()?,
        section: section.map(FileWriter::finish).transpose()?,
        seconds: 0.0,
        tables,
    })
}

/// Builds the cluster file the way `pg_dumpall` lays it out, from finished files.
pub fn assemble_cluster(
    ctx: &JobContext<'_>,
    globals: &Globals,
    cluster: &[String],
    done: &BTreeMap<String, JobDone>,
) -> Result<WrittenFile, DumpError> {
    let head = globals
        .head
        .as_ref()
        .ok_or_else(|| DumpError::Internal("no globals head for the cluster file".into()))?;
    let parts = |db: &String| {
        done.get(db)
            .and_then(|d| d.section.as_ref().or(d.file.as_ref()))
    };
    let size: u64 = head.bytes
        + cluster
            .iter()
            .filter_map(parts)
            .map(|p| p.bytes)
            .sum::<u64>();
    let mut out = AssembledFile::create(
        ctx.store,
        &ctx.layout.cluster_file(),
        ctx.layout.sql(),
        ctx.level,
        ctx.enc,
        size,
    )?;
    out.append_file(ctx.store, head, ctx.enc)?;
    out.append_text(DATABASES_HEADER)?;
    for db in cluster {
        if crate::signals::interrupted() {
            return Err(DumpError::Interrupted);
        }
        let Some(d) = done.get(db) else {
            out.append_text(&missing_database_note(db))?;
            continue;
        };
        out.append_text(&database_header(db))?;
        let part = d.section.as_ref().or(d.file.as_ref()).ok_or_else(|| {
            DumpError::Internal(format!("no cluster section for database \"{db}\""))
        })?;
        out.append_file(ctx.store, part, ctx.enc)?;
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
