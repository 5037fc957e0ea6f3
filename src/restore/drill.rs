//! The restore drill of `verify --restore-test`: each database file of a backup restored into
//! a scratch database on the server (through the same replay as a real restore), its tables
//! and rows counted, and the scratch database dropped again whatever happens (a signal too).

use std::time::Instant;

use serde::Serialize;

use crate::backup::codec::FileCodec;
use crate::backup::{FileEntry, FolderName};
use crate::error::{Error, ErrorInfo, Result};
use crate::pg::PgTools;
use crate::storage::Storage;

use super::replay::{Destination, Replayer};
use super::server::ScratchDatabase;
use super::sql_errors::{Expected, SqlErrors};

/// What the drill found for one database.
#[derive(Debug, Serialize)]
pub struct RestoreTest {
    pub database: String,
    pub scratch_database: String,
    pub tables: u64,
    pub rows: u64,
    pub errors: usize,
    /// The tables compared with the rows the dump carried (guarantee 10).
    pub row_check: super::rows::RowCheck,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub first_errors: Vec<String>,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

/// The tools and settings every database of one drill shares.
pub struct Drill<'a> {
    pub tools: &'a PgTools,
    pub storage: &'a dyn Storage,
    pub folder: &'a FolderName,
    pub keys: Option<&'a crate::backup::codec::Decryption>,
    pub server_major: u32,
    pub jobs: u32,
}

impl Drill<'_> {
    /// Restores one database file into a scratch database and counts what arrived.
    pub fn database(&self, entry: &FileEntry) -> RestoreTest {
        let database = entry.database.clone().unwrap_or_default();
        let scratch = scratch_name(&database);
        let started = Instant::now();
        let mut test = RestoreTest {
            database: database.clone(),
            scratch_database: scratch.clone(),
            tables: 0,
            rows: 0,
            errors: 0,
            row_check: super::rows::RowCheck::not_recorded(),
            first_errors: Vec::new(),
            seconds: 0.0,
            error: None,
        };
        // Dropped when this function returns, whatever happened (a signal included).
        let guard = ScratchDatabase::new(self.tools, &scratch, self.server_major);
        match self.replay(entry, &database, &scratch) {
            Ok(errors) => self.judge(&mut test, entry, errors),
            Err(e) => test.error = Some(e.info()),
        }
        drop(guard);
        test.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        test
    }

    fn replay(&self, entry: &FileEntry, database: &str, scratch: &str) -> Result<SqlErrors> {
        let work = super::source::private_dir(None, "pg-backups-verify-")?;
        let file =
            super::source::open_as_file(self.storage, self.folder, &entry.name, work.path())?;
        let codec = FileCodec::of_name(&entry.name)
            .ok_or_else(|| Error::Internal(format!("{} is not a backup file", entry.name)))?;
        let replayer = Replayer {
            tools: self.tools,
            keys: self.keys,
            expected: Expected {
                existing_roles: false,
                server_major: self.server_major,
            },
            work: work.path(),
            jobs: self.jobs,
        };
        replayer.database_file(
            file,
            codec,
            database,
            Destination::Rename(scratch),
            &crate::progress::Bar::default(),
        )
    }

    /// Counts the scratch database and turns SQL errors into the test's error.
    fn judge(&self, test: &mut RestoreTest, entry: &FileEntry, errors: SqlErrors) {
        test.errors = errors.count;
        test.first_errors = errors.first.clone();
        match count_tables_and_rows(self.tools, &test.scratch_database) {
            Ok((tables, rows)) => {
                test.tables = tables;
                test.rows = rows;
            }
            Err(e) => test.error = Some(e.info()),
        }
        if errors.count == 0 {
            match super::rows::prove(self.tools, &test.scratch_database, entry.tables.as_deref()) {
                Ok(check) => test.row_check = check,
                Err(e) => test.error = test.error.take().or(Some(e.info())),
            }
        }
        if errors.count > 0 && test.error.is_none() {
            test.error = Some(
                Error::Data(format!(
                    "restoring {} into {} gave {} SQL errors; first: {}",
                    entry.name,
                    test.scratch_database,
                    errors.count,
                    errors.first.first().cloned().unwrap_or_default()
                ))
                .info(),
            );
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
    format!(
        "pgb_verify_{clean}_{}",
        crate::random::token(8).to_ascii_lowercase()
    )
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

/// The last drills, kept beside the backups (`BACKUP_DIR/.pg-backups-drill.json`) so that
/// `check` can say when the last good one ran (`DRILL_MAX_AGE`).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, Serialize)]
pub struct DrillLog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<DrillRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<DrillRun>,
}

/// One drill: when it finished, what it restored and whether everything arrived.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
pub struct DrillRun {
    pub finished_at: chrono::DateTime<chrono::Utc>,
    pub folder: String,
    pub source: String,
    pub ok: bool,
    pub databases: usize,
    pub tables: u64,
    pub rows: u64,
}

const DRILL_LOG: &str = ".pg-backups-drill.json";

impl DrillLog {
    /// The log under `root`; an absent or unreadable one is empty (no drill known).
    pub fn read(root: &std::path::Path) -> DrillLog {
        std::fs::read(root.join(DRILL_LOG))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Records `run` (and, when it passed, as the last success), atomically, readable by
    /// the owner only.
    pub fn record(root: &std::path::Path, run: DrillRun) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut log = DrillLog::read(root);
        if run.ok {
            log.last_success = Some(run.clone());
        }
        log.last_run = Some(run);
        let tmp = root.join(format!("{DRILL_LOG}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&log).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, root.join(DRILL_LOG))
    }
}
