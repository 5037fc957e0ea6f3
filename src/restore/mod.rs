//! Restores, in three steps that each have their file:
//!
//! - [`plan`]: what goes where, with whose consent (pure but for asking the server which
//!   databases exist);
//! - [`source`]: find the folder, open each file, check it to its last byte and stage it
//!   (from S3 or a remote host) in a private folder: the bytes that are checked are the bytes
//!   that are replayed;
//! - [`replay`]: plain files through psql, custom archives through pg_restore, both behind the
//!   same screening (`backup::psql_scan`: meta-commands and `\connect` targets) and psql's
//!   `\restrict` mode ([`filter`], with [`rename`] for a database restored under another
//!   name); what psql and pg_restore say is counted in [`sql_errors`].
//!
//! `restore` runs them once for the operator ([`execute`]); `verify --restore-test` runs the
//! replay into scratch databases ([`drill`]). The commands only resolve settings, call these
//! and report. [`prompt`] asks what is missing when a person runs a restore on a terminal.

pub mod drill;
mod filter;
pub mod plan;
pub mod prompt;
mod rename;
pub mod replay;
pub mod rows;
pub mod server;
pub mod source;
pub mod sql_errors;

use std::time::Instant;

use crate::backup::FileKind;
use crate::backup::codec::Decryption;
use crate::backup::verify::Readers;
use crate::error::Result;
use crate::pg::PgTools;
use crate::storage::Storage;

use plan::{Plan, codec_of, connect_targets};
use replay::Replayer;
use source::Staged;
use sql_errors::{Expected, SqlErrors};

/// What the operator's settings add to a plan.
pub struct Settings<'a> {
    pub keys: Option<&'a Decryption>,
    /// `RESTORE_DIR`: where files from S3 or a remote host are staged.
    pub restore_dir: Option<&'a std::path::Path>,
    /// pg_restore jobs for custom-format files.
    pub jobs: u32,
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct Executed {
    pub dropped: Vec<String>,
    pub errors: SqlErrors,
    /// The restored tables compared with the rows the dump carried (guarantee 10).
    pub rows: rows::RowCheck,
    pub verify_seconds: f64,
    pub restore_seconds: f64,
}

/// Carries out a plan whose consent is settled: every file is staged and checked before
/// anything reaches the server, then the databases in the way are dropped, then the files
/// are replayed in order.
pub fn execute(
    plan: &Plan,
    storage: &dyn Storage,
    tools: &PgTools,
    server_major: u32,
    settings: &Settings<'_>,
    drop: &[String],
) -> Result<Executed> {
    let verify_started = Instant::now();
    let prefix = format!("pg-backups-restore-{}-", plan.folder);
    let work = source::private_dir(settings.restore_dir, &prefix)?;
    let staged = stage_all(plan, storage, tools, settings, work.path())?;
    screen_archives(plan, &staged, tools, settings, work.path(), server_major)?;
    let verify_seconds = verify_started.elapsed().as_secs_f64();

    let mut done = Executed {
        verify_seconds,
        ..Executed::default()
    };
    for name in drop {
        tracing::warn!(database = ?name, "dropping the existing database (consent given)");
        server::drop_database(tools, name, server_major)?;
        done.dropped.push(name.clone());
    }

    let restore_started = Instant::now();
    let databases = plan.databases();
    for (entry, file) in plan.entries.iter().zip(staged) {
        let progress =
            crate::progress::Bar::bytes(&entry.name, Some(entry.bytes)).with_prefix("restoring");
        let replayer = Replayer {
            tools,
            keys: settings.keys,
            expected: Expected {
                existing_roles: entry.kind != FileKind::Database,
                server_major,
            },
            work: work.path(),
            jobs: settings.jobs,
        };
        tracing::info!(file = ?entry.name, "restoring");
        let codec = codec_of(entry);
        let found = match (entry.kind, entry.database.as_deref()) {
            (FileKind::Database, Some(name)) => {
                // Only a cluster restore fills a database that exists (`postgres`).
                let exists = plan.restore_type == crate::config::RestoreType::Cluster
                    && server::database_exists(tools, name)?;
                let into = plan.destination(name, exists);
                let found = replayer.database_file(file.file, codec, name, into, &progress)?;
                let restored_as = match into {
                    replay::Destination::Rename(target) => target,
                    _ => name,
                };
                // After SQL errors the restore has failed already (65): they say why.
                if found.count == 0 {
                    let check = rows::prove(tools, restored_as, entry.tables.as_deref())?;
                    done.rows.absorb(check);
                }
                found
            }
            (kind, database) => {
                let targets = connect_targets(kind, database, &databases);
                let found =
                    replayer.cluster_file(Box::new(file.file), codec, targets, &progress)?;
                if kind == FileKind::Cluster && found.count == 0 {
                    done.rows.absorb(prove_cluster(plan, tools)?);
                }
                found
            }
        };
        done.errors.absorb(found);
    }
    drop_work(work);
    done.restore_seconds = restore_started.elapsed().as_secs_f64();
    Ok(done)
}

/// Custom archives: their own database entries are screened before anything is dropped.
fn screen_archives(
    plan: &Plan,
    staged: &[Staged],
    tools: &PgTools,
    settings: &Settings<'_>,
    work: &std::path::Path,
    server_major: u32,
) -> Result<()> {
    let replayer = Replayer {
        tools,
        keys: settings.keys,
        expected: Expected {
            existing_roles: false,
            server_major,
        },
        work,
        jobs: settings.jobs,
    };
    for (entry, file) in plan.entries.iter().zip(staged) {
        let codec = codec_of(entry);
        if let (FileKind::Database, Some(name), crate::backup::codec::Format::Custom) =
            (entry.kind, entry.database.as_deref(), codec.format)
        {
            replayer.screen_archive(&file.file, codec, name)?;
        }
    }
    Ok(())
}

/// After a cluster file: every database with a file of its own holds what that file (the
/// same dump) carried.
fn prove_cluster(plan: &Plan, tools: &PgTools) -> Result<rows::RowCheck> {
    let mut all = rows::RowCheck::default();
    for f in plan
        .manifest
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Database)
    {
        if let Some(db) = f.database.as_deref() {
            all.absorb(rows::prove(tools, db, f.tables.as_deref())?);
        }
    }
    if all.status.is_empty() {
        all = rows::RowCheck::not_recorded();
    }
    Ok(all)
}

/// Stages and checks every file of the plan, before anything reaches the server.
fn stage_all(
    plan: &Plan,
    storage: &dyn Storage,
    tools: &PgTools,
    settings: &Settings<'_>,
    work: &std::path::Path,
) -> Result<Vec<Staged>> {
    // pg_restore reads every block of an archive as it restores it; before that, the
    // SHA-256 and the table of contents are checked.
    let pg_restore = tools.program("pg_restore");
    let databases = plan.databases();
    let readers = Readers {
        keys: settings.keys,
        pg_restore: Some(&pg_restore),
        archive_list_only: true,
        databases: Some(&databases),
    };
    let mut staged = Vec::new();
    for entry in &plan.entries {
        staged.push(Staged::prepare(
            storage,
            &plan.folder,
            entry,
            readers,
            work,
        )?);
        crate::signals::check()?;
    }
    Ok(staged)
}

/// The staging folder goes as soon as the replay ends (its files may be large).
fn drop_work(work: tempfile::TempDir) {
    if let Err(e) = work.close() {
        tracing::warn!("could not remove the restore's staging folder: {e}");
    }
}
